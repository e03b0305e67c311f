import { describe, expect, test } from "bun:test"
import openai, { classify } from "../../src/plugins/providers/openai.ts"
import mock from "../../src/plugins/providers/mock.ts"
import { ProviderError } from "../../src/core/errors.ts"
import type { Request } from "../../src/plugins/define.ts"
import { startFake } from "../lib/fake-openai.ts"

const h = (init: Record<string, string> = {}) => new Headers(init)
const body = (code: string, type = code) =>
  JSON.stringify({ error: { message: "m", type, param: null, code } })

describe("the openai provider", () => {
  test("every request shape it sends is valid against the official spec", async () => {
    await using fake = await startFake({ apiKey: "k" })
    const client = openai.create(
      {},
      { model: "gpt-4.1-mini", baseUrl: fake.url, apiKey: "k", timeoutMs: 5000 },
    )
    const shapes: Request[] = [
      { prompt: "plain" },
      { system: "sys", prompt: "with system" },
      { prompt: "limits", max_tokens: 50, temperature: 0.2 },
      { prompt: "params", params: { top_p: 0.5, seed: 3, user: "u1", stop: ["\n"] } },
    ]
    for (const shape of shapes) {
      const reply = await client.call(shape, new AbortController().signal)
      expect(reply.text).toBe(`echo: ${shape.prompt}`)
      expect(reply.usage.input_tokens).toBeGreaterThan(0)
    }
    expect(fake.requests).toBe(4)
    expect(fake.invalid).toEqual([])
  })

  test("classifies errors: what to retry, what to fail, and what pauses the run", () => {
    const cases: [number, string, Headers, string, boolean, boolean, number | undefined][] = [
      [429, body("rate_limit_exceeded"), h({ "retry-after": "3" }), "rate_limit", true, false, 3000],
      [429, body("rate_limit_exceeded"), h({ "retry-after-ms": "250" }), "rate_limit", true, false, 250],
      [429, body("insufficient_quota"), h(), "quota", false, true, undefined],
      [401, body("invalid_api_key"), h(), "auth", false, true, undefined],
      [403, body("unsupported_country"), h(), "auth", false, true, undefined],
      [408, "", h(), "timeout", true, false, undefined],
      [500, body("server_error"), h(), "server", true, false, undefined],
      [503, "<html>", h(), "server", true, false, undefined],
      [400, body("invalid_value"), h(), "bad_request", false, false, undefined],
      [404, body("model_not_found"), h(), "not_found", false, false, undefined],
      [422, body("x"), h(), "bad_request", false, false, undefined],
    ]
    for (const [status, text, headers, cls, retryable, pause, after] of cases) {
      const e = classify(status, text, headers)
      expect<unknown[]>([status, e.errorClass, e.retryable, e.pause, e.retryAfterMs]).toEqual([
        status,
        cls,
        retryable,
        pause,
        after,
      ])
      expect(e).toBeInstanceOf(ProviderError)
    }
  })

  test("a timeout, a reset and a garbage body are retryable errors of their own class", async () => {
    await using fake = await startFake({ apiKey: "k" })
    fake.script.set("t", ["hang"]).set("r", ["reset"]).set("g", ["garbage"])
    const client = openai.create({}, { model: "m", baseUrl: fake.url, apiKey: "k", timeoutMs: 200 })
    const classOf = (prompt: string) =>
      client.call({ prompt }, new AbortController().signal).then(
        () => "ok",
        (e: ProviderError) => `${e.errorClass}:${e.retryable}`,
      )
    expect(await classOf("t")).toBe("timeout:true")
    expect(await classOf("r")).toBe("network:true")
    expect(await classOf("g")).toBe("bad_response:true")
  })
})

describe("the mock provider", () => {
  test("replies deterministically with simulated usage", async () => {
    const client = mock.create(
      { latency_ms: 0, reply: "L: {{prompt}}" },
      { model: "m", baseUrl: undefined, apiKey: undefined, timeoutMs: 1000 },
    )
    const reply = await client.call({ system: "abcd", prompt: "hello" }, new AbortController().signal)
    expect(reply).toEqual({ text: "L: hello", usage: { input_tokens: 3, output_tokens: 2 } })
  })
})
