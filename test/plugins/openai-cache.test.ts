import { describe, expect, test } from "bun:test"
import openai from "../../src/plugins/providers/openai/openai.ts"
import { classify } from "../../src/plugins/providers/openai/wire.ts"
import { ProviderError, type ErrorClass } from "../../src/plugins/api/errors.ts"
import type { ProviderContext } from "../../src/plugins/api/define.ts"
import { startFake, type Fake } from "../lib/fake-openai.ts"
import { validateSchema } from "../lib/spec.ts"
import { never, submit, tagOf, untilEnded, downloadOutput } from "../lib/batch-helpers.ts"
import { tmpdir } from "../lib/tmp.ts"

const MODEL = "gpt-5-mini"
const KEY = "k"
/** A 3,000-token system prompt, as the fake counts (4 characters a token). */
const SYSTEM = "s".repeat(12_000)
const CACHE = { prefix: 0, ttl: "5m", key: "r1-p0", mark: true } as const

/** The bodies a fake receives, in order (its `reply` sees each answered one). */
async function recording(options: Parameters<typeof startFake>[0] = {}) {
  const bodies: Record<string, unknown>[] = []
  const fake = await startFake({
    apiKey: KEY,
    ...options,
    reply: (input, body) => {
      bodies.push(body)
      return `echo: ${input}`
    },
  })
  return { fake, bodies }
}

const clientOf = (
  fake: Pick<Fake, "url">,
  more: Partial<ProviderContext> = {},
  endpoint: "chat" | "responses" = "chat",
) => openai.create({ endpoint }, { model: MODEL, baseUrl: fake.url, apiKey: KEY, timeoutMs: 5000, ...more })

/** No server: for the lines a batch client writes. */
const NOWHERE = { url: "http://127.0.0.1:9" }

/** What a failed call threw, as the runner reads it. */
async function failure(run: () => Promise<unknown>) {
  const e = await run().then(
    () => undefined,
    (err: unknown) => err,
  )
  expect(e).toBeInstanceOf(ProviderError)
  const p = e as ProviderError
  return {
    class: p.errorClass,
    retryable: p.retryable,
    pause: p.pause,
    after: p.retryAfterMs,
    status: p.status,
  }
}

describe("the openai provider's prompt caching", () => {
  test("sends prompt_cache_key when the request names a shared prefix, and the same body as before when not", async () => {
    const { fake, bodies } = await recording()
    await using _ = fake
    const client = clientOf(fake)
    await client.call({ system: "be brief", prompt: "plain" }, never())
    await client.call({ system: "be brief", prompt: "keyed", cache: CACHE }, never())
    await clientOf(fake, {}, "responses").call({ prompt: "responses", cache: CACHE }, never())
    expect(bodies).toEqual([
      {
        model: MODEL,
        messages: [
          { role: "system", content: "be brief" },
          { role: "user", content: "plain" },
        ],
      },
      {
        model: MODEL,
        messages: [
          { role: "system", content: "be brief" },
          { role: "user", content: "keyed" },
        ],
        prompt_cache_key: "r1-p0",
      },
      { model: MODEL, input: "responses", prompt_cache_key: "r1-p0" },
    ])
    // the fake records the key of every chat request, and checked every body against the spec
    expect(fake.cache.keys).toEqual([null, "r1-p0"])
    expect(fake.invalid).toEqual([])
  })

  test("a params prompt_cache_key wins over spool's, and embeddings never carry one", async () => {
    const { fake, bodies } = await recording()
    await using _ = fake
    await clientOf(fake).call({ prompt: "mine", cache: CACHE, params: { prompt_cache_key: "own" } }, never())
    expect(bodies[0]?.prompt_cache_key).toBe("own")
    const embedder = openai.create(
      { endpoint: "embeddings" },
      { model: "text-embedding-3-small", baseUrl: fake.url, apiKey: KEY, timeoutMs: 5000, kind: "embedding" },
    )
    await embedder.embed!(["one"], {}, never())
    expect(fake.requests).toBe(2)
    expect(fake.cache.keys).toEqual(["own"])
    expect(fake.invalid).toEqual([])
  })

  test("each batch line carries the key, never service_tier, and the lines are spec-valid", () => {
    const batch = clientOf(NOWHERE, { tier: "flex" }).batch!
    const keyed = JSON.parse(batch.line("c1", { system: "sys", prompt: "p", cache: CACHE })) as {
      body: Record<string, unknown>
    }
    const plain = JSON.parse(batch.line("c2", { system: "sys", prompt: "p" })) as {
      body: Record<string, unknown>
    }
    const messages = [
      { role: "system", content: "sys" },
      { role: "user", content: "p" },
    ]
    expect(keyed.body).toEqual({ model: MODEL, messages, prompt_cache_key: "r1-p0" })
    expect(plain.body).toEqual({ model: MODEL, messages })
    expect(validateSchema("CreateChatCompletionRequest", keyed.body)).toEqual([])
    const responses = clientOf(NOWHERE, {}, "responses").batch!
    const line = JSON.parse(responses.line("c3", { prompt: "p", cache: CACHE })) as {
      body: Record<string, unknown>
    }
    expect(line.body).toEqual({ model: MODEL, input: "p", prompt_cache_key: "r1-p0" })
    expect(validateSchema("CreateResponse", line.body)).toEqual([])
  })

  test("batch lines are cached line by line in processing order, and billed at half", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    const batch = clientOf(fake).batch!
    const created = await submit(batch, tmp, tagOf(4), { system: SYSTEM, cache: CACHE })
    const ended = await untilEnded(batch, created)
    const got = await downloadOutput(batch, ended, tmp)
    // the first line processed writes the prefix, the three after it read 2,944 tokens of it
    expect(got.map((l) => l.reply?.usage.cached_input_tokens ?? 0).sort()).toEqual([0, 2944, 2944, 2944])
    expect(fake.cache.keys).toEqual(["r1-p0", "r1-p0", "r1-p0", "r1-p0"])
    expect([fake.cache.hits, fake.cache.cachedTokens]).toEqual([3, 3 * 2944])
    // each prompt: 12,058 shared characters and "item k\"}]" (9) → 3,017 tokens; each answer "echo: item k" → 3
    const full = 3017 * 0.25 + 3 * 2
    const read = (3017 - 2944) * 0.25 + 2944 * 0.025 + 3 * 2
    expect(fake.cache.billed).toBeCloseTo((full + 3 * read) / 2 / 1e6, 15)
    expect(fake.invalid).toEqual([])
  })
})

describe("the openai provider's flex tier", () => {
  test("a flex call sends service_tier flex, is answered by the flex tier, and billed at half", async () => {
    const { fake, bodies } = await recording()
    await using _ = fake
    const reply = await clientOf(fake, { tier: "flex" }).call({ prompt: "flexed" }, never())
    expect(reply.text).toBe("echo: flexed")
    expect(bodies).toEqual([
      { model: MODEL, messages: [{ role: "user", content: "flexed" }], service_tier: "flex" },
    ])
    // [{"role":"user","content":"flexed"}]: 36 characters → 9 tokens; "echo: flexed" → 3
    expect(reply.usage).toEqual({ input_tokens: 9, output_tokens: 3, cached_input_tokens: undefined })
    expect(fake.cache.billed).toBeCloseTo((9 * 0.25 + 3 * 2) / 2 / 1e6, 15)
    await clientOf(fake, { tier: "flex" }, "responses").call({ prompt: "flexed too" }, never())
    expect(bodies[1]).toEqual({ model: MODEL, input: "flexed too", service_tier: "flex" })
    expect(fake.invalid).toEqual([])
  })

  test("a flex 429 Resource Unavailable is 'unavailable': retried with the wait asked, no pause; a rate limit stays one", async () => {
    await using fake = await startFake({ apiKey: KEY, faults: { rate: 0, kinds: [], retryAfter: "7" } })
    fake.script
      .set("busy", ["flex_unavailable"])
      .set("limited", ["429"])
      .set("standard", ["flex_unavailable"])
    const flex = clientOf(fake, { tier: "flex" })
    expect(await failure(() => flex.call({ prompt: "busy" }, never()))).toEqual({
      class: "unavailable",
      retryable: true,
      pause: false,
      after: 7000,
      status: 429,
    })
    expect(await failure(() => flex.call({ prompt: "limited" }, never()))).toEqual({
      class: "rate_limit",
      retryable: true,
      pause: false,
      after: 7000,
      status: 429,
    })
    // the same answer to a call of the standard tier is no flex capacity: it is read as the rate limit a 429 is
    expect((await failure(() => clientOf(fake).call({ prompt: "standard" }, never()))).class).toBe(
      "rate_limit",
    )
    // nothing answered with an error is billed
    expect(fake.cache.billed).toBe(0)
  })

  test("classify reads a flex 429 by its code or its message, with or without a wait", () => {
    const text = (error: Record<string, unknown>) => JSON.stringify({ error: { param: null, ...error } })
    const cases: [string, Headers, ErrorClass, number | undefined][] = [
      [
        text({ message: "m", type: "x", code: "resource_unavailable" }),
        new Headers(),
        "unavailable",
        undefined,
      ],
      [
        text({ message: "Resource Unavailable", type: "x", code: null }),
        new Headers(),
        "unavailable",
        undefined,
      ],
      [
        text({ message: "Resources are currently unavailable", type: "x", code: null }),
        new Headers({ "retry-after-ms": "1500" }),
        "unavailable",
        1500,
      ],
      [
        text({ message: "Rate limit reached", type: "requests", code: "rate_limit_exceeded" }),
        new Headers(),
        "rate_limit",
        undefined,
      ],
      [
        text({ message: "quota", type: "insufficient_quota", code: "insufficient_quota" }),
        new Headers(),
        "quota",
        undefined,
      ],
    ]
    for (const [body, headers, cls, after] of cases) {
      const e = classify(429, body, headers, undefined, "flex")
      expect<unknown[]>([e.errorClass, e.retryAfterMs]).toEqual([cls, after])
      // the standard tier has no such class
      expect(classify(429, body, headers).errorClass).toBe(cls === "unavailable" ? "rate_limit" : cls)
    }
  })

  test("declares automatic caching from 1,024 tokens, its lifetimes, and the models flex serves", () => {
    const cache = openai.promptCache!
    expect(cache.explicit).toBe(false)
    expect(["gpt-5-mini", "gpt-4.1", "o3"].map((m) => cache.minimumTokens(m))).toEqual([1024, 1024, 1024])
    expect([cache.ttlMs("5m"), cache.ttlMs("1h")]).toEqual([300_000, 3_600_000])
    const served = [
      "gpt-5",
      "gpt-5-mini",
      "gpt-5-nano",
      "gpt-5-mini-2025-08-07",
      "gpt-5.1",
      "gpt-5.4",
      "gpt-5.4-mini",
      "o3",
      "o3-2025-04-16",
      "o4-mini",
    ]
    const not = [
      "gpt-4.1",
      "gpt-4.1-mini",
      "gpt-4o-mini",
      "gpt-5-pro",
      "o3-pro",
      "o1",
      "text-embedding-3-small",
    ]
    expect(served.filter((m) => !openai.flex!(m))).toEqual([])
    expect(not.filter((m) => openai.flex!(m))).toEqual([])
  })
})
