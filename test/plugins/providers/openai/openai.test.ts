import { describe, expect, test } from "bun:test"
import * as v from "valibot"
import openai from "../../../../src/plugins/providers/openai/openai.ts"
import { classify, responsesReply } from "../../../../src/plugins/providers/openai/wire.ts"
import mock from "../../../../src/plugins/providers/mock/mock.ts"
import { ProviderError } from "../../../../src/plugins/api/errors.ts"
import type { Request } from "../../../../src/plugins/api/define.ts"
import { startFake } from "../../../lib/fake-openai.ts"

const h = (init: Record<string, string> = {}) => new Headers(init)
const body = (code: string, type = code) =>
  JSON.stringify({ error: { message: "m", type, param: null, code } })

describe("the openai provider", () => {
  test("every request shape it sends is valid against the official spec", async () => {
    await using fake = await startFake({ apiKey: "k" })
    const client = openai.create(
      { endpoint: "chat" },
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
    const client = openai.create(
      { endpoint: "chat" },
      { model: "m", baseUrl: fake.url, apiKey: "k", timeoutMs: 200 },
    )
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

describe('the openai provider with endpoint = "responses"', () => {
  const signal = () => new AbortController().signal

  test("the option defaults to chat and takes only chat or responses", () => {
    expect(v.parse(openai.options, {})).toEqual({ endpoint: "chat" })
    expect(v.parse(openai.options, { endpoint: "responses" })).toEqual({ endpoint: "responses" })
    expect(v.safeParse(openai.options, { endpoint: "batch" }).success).toBe(false)
    expect(v.safeParse(openai.options, { endpoint: "responses", extra: 1 }).success).toBe(false)
  })

  test("posts the Responses API body for every shape, valid against the spec, and reads text and usage", async () => {
    const bodies: Record<string, unknown>[] = []
    await using fake = await startFake({
      apiKey: "k",
      reply: (input, body) => {
        bodies.push(body)
        return `echo: ${input}`
      },
    })
    const client = openai.create(
      { endpoint: "responses" },
      { model: "gpt-4.1-mini", baseUrl: `${fake.url}/`, apiKey: "k", timeoutMs: 5000 },
    )
    const model = "gpt-4.1-mini"
    const cases: [Request, Record<string, unknown>, [number, number]][] = [
      [{ prompt: "plain" }, { model, input: "plain" }, [2, 3]],
      [
        { system: "sys", prompt: "with system" },
        { model, input: "with system", instructions: "sys" },
        [5, 5],
      ],
      [
        { prompt: "limits", max_tokens: 50, temperature: 0.2 },
        { model, input: "limits", max_output_tokens: 50, temperature: 0.2 },
        [2, 3],
      ],
      // the Responses API refuses a limit below 16
      [{ prompt: "tiny", max_tokens: 1 }, { model, input: "tiny", max_output_tokens: 16 }, [2, 3]],
      [
        {
          prompt: "params",
          temperature: 1,
          params: { top_p: 0.5, temperature: 0, metadata: { run: "r1" }, store: false },
        },
        { model, input: "params", temperature: 0, top_p: 0.5, metadata: { run: "r1" }, store: false },
        [2, 3],
      ],
    ]
    for (const [request, , usage] of cases) {
      const reply = await client.call(request, signal())
      expect(reply).toEqual({
        text: `echo: ${request.prompt}`,
        usage: { input_tokens: usage[0], output_tokens: usage[1] },
      })
    }
    expect(bodies).toEqual(cases.map(([, body]) => body))
    expect(fake.paid.size).toBe(cases.length)
    expect(fake.invalid).toEqual([])
  })

  test("errors are mapped as for chat completions", async () => {
    await using fake = await startFake({ apiKey: "k" })
    fake.script.set("q", ["quota"]).set("s", ["503"]).set("g", ["garbage"])
    const context = { model: "m", baseUrl: fake.url, apiKey: "k", timeoutMs: 2000 }
    const classOf = (prompt: string, apiKey = "k") =>
      openai
        .create({ endpoint: "responses" }, { ...context, apiKey })
        .call({ prompt }, signal())
        .then(
          () => "ok",
          (e: ProviderError) => `${e.errorClass}:${e.retryable}:${e.pause}:${e.status}`,
        )
    expect(await classOf("q")).toBe("quota:false:true:429")
    expect(await classOf("s")).toBe("server:true:false:503")
    expect(await classOf("g")).toBe("bad_response:true:false:200")
    expect(await classOf("x", "wrong")).toBe("auth:false:true:401")
    expect(fake.paid.size).toBe(0)
  })

  test("reads message text parts and skips other items; an incomplete response without text is not retried", () => {
    const text = (response: Record<string, unknown>) => JSON.stringify(response)
    const message = (...parts: unknown[]) => ({ type: "message", role: "assistant", content: parts })
    const out = (t: string) => ({ type: "output_text", text: t, annotations: [] })
    expect(
      responsesReply(
        200,
        text({
          status: "completed",
          output: [
            { type: "reasoning", id: "rs_1", summary: [] },
            message(out("a"), { type: "refusal", refusal: "no" }, out("b")),
            message(out("c")),
          ],
          usage: { input_tokens: 7, output_tokens: 9 },
        }),
      ),
    ).toEqual({ text: "abc", usage: { input_tokens: 7, output_tokens: 9 } })

    const incomplete = { status: "incomplete", incomplete_details: { reason: "max_output_tokens" } }
    expect(responsesReply(200, text({ ...incomplete, output: [message(out("cut"))] })).text).toBe("cut")
    const fail = (response: Record<string, unknown>) => {
      try {
        responsesReply(200, text(response))
        return "reply"
      } catch (e) {
        const err = e as ProviderError
        return `${err.errorClass}:${err.retryable}`
      }
    }
    expect(fail({ ...incomplete, output: [{ type: "reasoning", id: "rs_1", summary: [] }] })).toBe(
      "bad_response:false",
    )
    expect(fail({ ...incomplete, output: [message(out(""))] })).toBe("bad_response:false")
    expect(fail({ status: "completed", output: [] })).toBe("bad_response:true")
    expect(fail({ status: "completed" })).toBe("bad_response:true")
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
