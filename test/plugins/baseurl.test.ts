/**
 * Each built-in HTTP provider at a wrong base URL, against the fake servers on 127.0.0.1: the first 404 or 401
 * that is not the API's own says "check base_url (it is …)", realtime and batch; the API's own errors are left as
 * they are. An Anthropic base URL ending in /v1 is used without it.
 */
import { describe, expect, test } from "bun:test"
import anthropic from "../../src/plugins/providers/anthropic/anthropic.ts"
import { rootOf } from "../../src/plugins/providers/anthropic/wire.ts"
import openai from "../../src/plugins/providers/openai/openai.ts"
import compatible from "../../src/plugins/providers/openai-compatible/openai-compatible.ts"
import type { BatchClient, ProviderClient } from "../../src/plugins/api/define.ts"
import { startFakeAnthropic } from "../lib/fake-anthropic.ts"
import { startFake } from "../lib/fake-openai.ts"
import { never, submit, tagOf, thrown } from "../lib/batch-helpers.ts"
import { tmpdir } from "../lib/tmp.ts"

const KEY = "sk-test-0123456789"

/** What a gateway or another API says at a path it does not route: OpenAI's words, not Anthropic's shape. */
const NO_KEY = "You didn't provide an API key. You need to provide your API key in an Authorization header."
const openaiNoKey = () =>
  Response.json(
    { error: { message: NO_KEY, type: "invalid_request_error", param: null, code: null } },
    { status: 401 },
  )

const batchOf = (c: ProviderClient) => c.batch as BatchClient

describe("an Anthropic base URL ending in /v1", () => {
  test("is used without it, and an info line says so once", async () => {
    await using fake = await startFakeAnthropic({ apiKey: KEY })
    await using tmp = await tmpdir()
    for (const given of [`${fake.url}/v1`, `${fake.url}/v1/`]) {
      const said: string[] = []
      const c = anthropic.create(
        {},
        {
          model: "claude-haiku-4-5",
          baseUrl: given,
          apiKey: KEY,
          timeoutMs: 5000,
          info: (m) => said.push(m),
        },
      )
      expect((await c.call({ prompt: "hi", max_tokens: 20 }, never())).text).toBe("echo: hi")
      const batch = await submit(batchOf(c), tmp, tagOf(2))
      expect(batch.counts?.total).toBe(2)
      expect(said).toEqual([
        `the base URL ${given.replace(/\/$/, "")} ends in /v1, which the Anthropic API's paths carry already: using ${fake.url}`,
      ])
    }
    expect(fake.invalid).toEqual([])
  })

  test("only a last path segment of exactly v1 is dropped", () => {
    const said: string[] = []
    const info = (m: string) => said.push(m)
    expect(rootOf("https://gateway.example/anthropic/v1", info)).toBe("https://gateway.example/anthropic")
    expect(rootOf("https://gateway.example/anthropic", info)).toBe("https://gateway.example/anthropic")
    expect(rootOf("https://gateway.example/apiv1", info)).toBe("https://gateway.example/apiv1")
    expect(rootOf("https://gateway.example/v1/x", info)).toBe("https://gateway.example/v1/x")
    expect(rootOf(undefined, info)).toBeUndefined()
    expect(said).toEqual([
      "the base URL https://gateway.example/anthropic/v1 ends in /v1, which the Anthropic API's paths carry already: using https://gateway.example/anthropic",
    ])
  })
})

describe("a wrong base URL, told by the first answers", () => {
  test("anthropic: a 404 naming the path, realtime and batch; a gateway's 401 that is not Anthropic's", async () => {
    await using fake = await startFakeAnthropic({ apiKey: KEY })
    await using tmp = await tmpdir()
    const base = `${fake.url}/api`
    const c = anthropic.create({}, { model: "m", baseUrl: base, apiKey: KEY, timeoutMs: 5000 })
    expect(await thrown(() => c.call({ prompt: "hi" }, never()))).toMatchObject({
      class: "not_found",
      retryable: false,
      pause: true,
      status: 404,
      message: `HTTP 404: Not Found: POST /api/v1/messages; check base_url (it is ${base})`,
    })
    expect(await thrown(() => submit(batchOf(c), tmp, tagOf(2)))).toMatchObject({
      class: "not_found",
      pause: true,
      message: `HTTP 404: Not Found: POST /api/v1/messages/batches; check base_url (it is ${base})`,
    })

    await using gateway = await startFakeAnthropic({ apiKey: KEY, unrouted: openaiNoKey })
    const g = anthropic.create(
      {},
      { model: "m", baseUrl: `${gateway.url}/api`, apiKey: KEY, timeoutMs: 5000 },
    )
    for (const run of [() => submit(batchOf(g), tmp, tagOf(2)), () => g.call({ prompt: "hi" }, never())])
      expect(await thrown(run)).toMatchObject({
        class: "auth",
        pause: true,
        status: 401,
        message: `HTTP 401: ${NO_KEY.slice(0, -1)}; check base_url (it is ${gateway.url}/api)`,
      })
  })

  test("anthropic: its own 401 for a wrong key is left as it is, realtime and batch", async () => {
    await using fake = await startFakeAnthropic({ apiKey: KEY })
    await using tmp = await tmpdir()
    const c = anthropic.create(
      {},
      { model: "m", baseUrl: fake.url, apiKey: "sk-wrong-0000000", timeoutMs: 5000 },
    )
    expect(await thrown(() => c.call({ prompt: "hi" }, never()))).toMatchObject({
      class: "auth",
      pause: true,
      message: "HTTP 401: invalid x-api-key",
    })
    expect((await thrown(() => submit(batchOf(c), tmp, tagOf(2))))?.message).toBe(
      "HTTP 401: invalid x-api-key",
    )
  })

  test("openai: a 404 naming the path, realtime and batch; a 401 that is not OpenAI's; its own 401 left as it is", async () => {
    await using fake = await startFake({ apiKey: KEY })
    await using tmp = await tmpdir()
    // the fake's base URL already ends in /v1: one more makes /v1/v1/…
    const base = `${fake.url}/v1`
    const c = openai.create({ endpoint: "chat" }, { model: "m", baseUrl: base, apiKey: KEY, timeoutMs: 5000 })
    expect(await thrown(() => c.call({ prompt: "hi" }, never()))).toMatchObject({
      class: "not_found",
      pause: true,
      status: 404,
      message: `HTTP 404: Unknown request URL: POST /v1/v1/chat/completions; check base_url (it is ${base})`,
    })
    expect((await thrown(() => submit(batchOf(c), tmp, tagOf(2))))?.message).toBe(
      `HTTP 404: Unknown request URL: POST /v1/v1/files; check base_url (it is ${base})`,
    )

    await using proxy = await startFake({
      apiKey: KEY,
      unrouted: () => new Response("Unauthorized", { status: 401 }),
    })
    const p = openai.create(
      { endpoint: "responses" },
      { model: "m", baseUrl: `${proxy.url}/v1`, apiKey: KEY, timeoutMs: 5000 },
    )
    for (const run of [() => p.call({ prompt: "hi" }, never()), () => submit(batchOf(p), tmp, tagOf(2))])
      expect(await thrown(run)).toMatchObject({
        class: "auth",
        pause: true,
        message: `HTTP 401: Unauthorized; check base_url (it is ${proxy.url}/v1)`,
      })

    const wrong = openai.create(
      { endpoint: "chat" },
      { model: "m", baseUrl: fake.url, apiKey: "sk-wrong-0000000", timeoutMs: 5000 },
    )
    expect((await thrown(() => wrong.call({ prompt: "hi" }, never())))?.message).toBe(
      "HTTP 401: Incorrect API key provided.",
    )
    expect((await thrown(() => submit(batchOf(wrong), tmp, tagOf(2))))?.message).toBe(
      "HTTP 401: Incorrect API key provided.",
    )
  })

  test("openai-compatible: a server's bare 404 for a route it lacks; the base URL is shown without credentials", async () => {
    await using fake = await startFake({
      unrouted: () => Response.json({ detail: "Not Found" }, { status: 404 }),
    })
    const root = fake.url.replace(/\/v1$/, "")
    const c = compatible.create(
      {},
      {
        model: "m",
        baseUrl: `http://user:pw@${root.slice("http://".length)}/api`,
        apiKey: undefined,
        timeoutMs: 5000,
      },
    )
    expect(await thrown(() => c.call({ prompt: "hi" }, never()))).toMatchObject({
      class: "not_found",
      pause: true,
      message: `HTTP 404: Not Found; check base_url (it is ${root}/api)`,
    })
    const right = compatible.create({}, { model: "m", baseUrl: fake.url, apiKey: undefined, timeoutMs: 5000 })
    expect((await right.call({ prompt: "hi" }, never())).text).toBe("echo: hi")
  })
})
