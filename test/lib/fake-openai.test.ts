import { describe, expect, test } from "bun:test"
import { goDuration, startFake, type Fake } from "./fake-openai.ts"
import { SKIP_SPEC_CHECKS, validateSchema } from "./spec.ts"

function post(
  fake: Fake,
  body: unknown,
  key = "k",
  timeoutMs = 2000,
  endpoint: "chat/completions" | "responses" = "chat/completions",
) {
  return fetch(`${fake.url}/${endpoint}`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  })
}

const ask = (content: string) => ({ model: "gpt-4.1-mini", messages: [{ role: "user", content }] })

describe("the fake OpenAI server", () => {
  test("serves a completion that conforms to CreateChatCompletionResponse and echoes the input", async () => {
    await using fake = await startFake({ apiKey: "k" })
    const res = await post(fake, {
      ...ask("hello"),
      messages: [
        { role: "system", content: "be brief" },
        { role: "user", content: [{ type: "text", text: "hello" }] },
      ],
    })
    expect(res.status).toBe(200)
    const body = (await res.json()) as { model: string; choices: { message: { content: string } }[] }
    expect(validateSchema("CreateChatCompletionResponse", body)).toEqual([])
    expect(body.choices[0]!.message.content).toBe("echo: hello")
    expect(body.model).toBe("gpt-4.1-mini")
    expect(fake.paid.get("hello")).toBe(1)
    expect(fake.invalid).toEqual([])
  })

  test("serves a response that conforms to Response and echoes the input, for a string or a message list", async () => {
    await using fake = await startFake({ apiKey: "k" })
    const plain = await post(
      fake,
      { model: "gpt-4.1-mini", input: "hello", instructions: "be brief" },
      "k",
      2000,
      "responses",
    )
    expect(plain.status).toBe(200)
    const body = (await plain.json()) as Record<string, unknown> & {
      output: { content: unknown[] }[]
      usage: { input_tokens: number; output_tokens: number; total_tokens: number }
    }
    expect(validateSchema("Response", body)).toEqual([])
    expect([body.object, body.status, body.model, body.instructions]).toEqual([
      "response",
      "completed",
      "gpt-4.1-mini",
      "be brief",
    ])
    expect(String(body.id)).toStartWith("resp_")
    expect(body.output[0]!.content).toEqual([
      { type: "output_text", text: "echo: hello", annotations: [], logprobs: [] },
    ])
    expect(body.usage.total_tokens).toBe(body.usage.input_tokens + body.usage.output_tokens)
    const listed = await post(
      fake,
      { model: "gpt-4.1-mini", input: [{ role: "user", content: "hello" }] },
      "k",
      2000,
      "responses",
    )
    const second = (await listed.json()) as { output: { content: { text: string }[] }[] }
    expect(validateSchema("Response", second)).toEqual([])
    expect(second.output[0]!.content[0]!.text).toBe("echo: hello")
    expect(fake.paid.get("hello")).toBe(2)
    expect(fake.invalid).toEqual([])
  })

  test("the responses endpoint has the same faults and accounting", async () => {
    await using fake = await startFake({ apiKey: "k" })
    fake.script.set("r", ["429", "500", "ok"])
    const statuses: number[] = []
    for (let i = 0; i < 3; i++) {
      const res = await post(fake, { model: "m", input: "r" }, "k", 2000, "responses")
      statuses.push(res.status)
      if (res.status !== 200) expect(validateSchema("ErrorResponse", await res.json())).toEqual([])
      else await res.arrayBuffer()
    }
    expect(statuses).toEqual([429, 500, 200])
    expect([fake.seen.get("r"), fake.paid.get("r")]).toEqual([3, 1])
    expect((await post(fake, { model: "m", input: "r" }, "nope", 2000, "responses")).status).toBe(401)
  })

  test("every error it serves conforms to ErrorResponse, and 429 carries Retry-After", async () => {
    await using fake = await startFake({ apiKey: "k" })
    fake.faults = { rate: 0, kinds: [], retryAfter: "Tue, 24 Nov 2026 12:00:30 GMT" }
    fake.script.set("e", ["429", "quota", "500", "503"])
    const statuses: number[] = []
    for (let i = 0; i < 4; i++) {
      const res = await post(fake, ask("e"))
      statuses.push(res.status)
      expect(validateSchema("ErrorResponse", await res.json())).toEqual([])
      if (i === 0) expect(res.headers.get("retry-after")).toBe("Tue, 24 Nov 2026 12:00:30 GMT")
    }
    expect(statuses).toEqual([429, 429, 500, 503])
    const wrongKey = await post(fake, ask("x"), "nope")
    expect(wrongKey.status).toBe(401)
    const body = (await wrongKey.json()) as { error: { code: string } }
    expect(validateSchema("ErrorResponse", body)).toEqual([])
    expect(body.error.code).toBe("invalid_api_key")
    expect(fake.paid.size).toBe(0)
  })

  test("reset kills the connection, hang never answers, garbage is not JSON; scripted faults run in order, then stop", async () => {
    await using fake = await startFake({ apiKey: "k" })
    fake.script.set("f", ["reset", "hang", "garbage", "ok"])
    const reset = await post(fake, ask("f"))
      .then((r) => r.text())
      .catch((e: Error) => e)
    expect(reset).toBeInstanceOf(Error)
    const hang = await post(fake, ask("f"), "k", 300).catch((e: Error) => e.name)
    expect(hang).toBe("TimeoutError")
    const garbage = await post(fake, ask("f"))
    expect(garbage.status).toBe(200)
    expect(await garbage.text()).toBe("<html>oops</html>")
    for (let i = 0; i < 2; i++) expect((await post(fake, ask("f"))).status).toBe(200)
    expect(fake.seen.get("f")).toBe(5)
    expect(fake.paid.get("f")).toBe(2)
  })

  test("rate-based faults are the same for the same seed and inputs, whatever the order", async () => {
    const kinds = ["429", "500"] as const
    const run = async (order: number[]) => {
      await using fake = await startFake({ faults: { rate: 0.5, kinds: [...kinds], seed: 11 } })
      const out = new Map<number, number>()
      for (const i of order) out.set(i, (await post(fake, ask(`q${i}`))).status)
      return [...out.entries()].sort((a, b) => a[0] - b[0])
    }
    const forward = await run([...Array(40).keys()])
    const backward = await run([...Array(40).keys()].reverse())
    expect(forward).toEqual(backward)
    const faulted = forward.filter(([, s]) => s !== 200).length
    expect(faulted).toBeGreaterThan(5)
    expect(faulted).toBeLessThan(35)
  })

  test.skipIf(SKIP_SPEC_CHECKS)(
    "records request bodies that break the spec, and not valid ones",
    async () => {
      await using fake = await startFake()
      await post(fake, ask("fine"))
      await post(fake, { model: "m", max_tokens: "x" })
      expect(fake.invalid.length).toBe(1)
      expect(fake.invalid[0]!.body).toEqual({ model: "m", max_tokens: "x" })
      expect(fake.invalid[0]!.errors).toContain("/ must have required property 'messages'")
      await post(fake, { model: "m", input: "fine", max_output_tokens: 16 }, "k", 2000, "responses")
      await post(fake, { model: "m", input: 3 }, "k", 2000, "responses")
      expect(fake.invalid.length).toBe(2)
      expect(fake.invalid[1]!.body).toEqual({ model: "m", input: 3 })
    },
  )
})

/** A Go duration to the millisecond, as x-ratelimit-reset-* carries it: 120ms, 1.5s, 6m0s, 1h2m3.004s. */
const DURATION = /^(?:\d+ms|(?:(?:\d+h)?\d+m)?\d+(?:\.\d+)?s)$/

const rateHeaders = (res: Response) =>
  Object.fromEntries([...res.headers].filter(([k]) => k.startsWith("x-ratelimit-") || k === "retry-after"))

describe("the fake OpenAI server's rate limit", () => {
  test("writes reset durations as the API does", () => {
    expect([0, 120, 999.2, 1000, 1500, 17_280, 360_000, 86_400, 3_723_004].map(goDuration)).toEqual([
      "0s",
      "120ms",
      "1s",
      "1s",
      "1.5s",
      "17.28s",
      "6m0s",
      "1m26.4s",
      "1h2m3.004s",
    ])
  })

  test("is off by default: no x-ratelimit-* headers", async () => {
    await using fake = await startFake()
    const res = await post(fake, ask("a"))
    expect(res.status).toBe(200)
    expect(rateHeaders(res)).toEqual({})
    expect([fake.limited, fake.served.length]).toEqual([0, 1])
  })

  test("a success carries well-formed x-ratelimit-* headers, and remaining counts down", async () => {
    let t = 1_000_000
    await using fake = await startFake({ rateLimit: { rpm: 3, tpm: 6000 }, now: () => t })
    const body = { ...ask("hello"), max_completion_tokens: 40 }
    const cost = Math.ceil(JSON.stringify(body.messages).length / 4) + 40
    const first = await post(fake, body)
    expect(first.status).toBe(200)
    const headers = rateHeaders(first)
    expect(Object.keys(headers).sort()).toEqual([
      "x-ratelimit-limit-requests",
      "x-ratelimit-limit-tokens",
      "x-ratelimit-remaining-requests",
      "x-ratelimit-remaining-tokens",
      "x-ratelimit-reset-requests",
      "x-ratelimit-reset-tokens",
    ])
    for (const k of ["reset-requests", "reset-tokens"]) expect(headers[`x-ratelimit-${k}`]).toMatch(DURATION)
    // 3 a minute refill one every 20 s; 6000 tokens a minute refill 100 a second
    expect(headers).toEqual({
      "x-ratelimit-limit-requests": "3",
      "x-ratelimit-remaining-requests": "2",
      "x-ratelimit-reset-requests": "20s",
      "x-ratelimit-limit-tokens": "6000",
      "x-ratelimit-remaining-tokens": String(6000 - cost),
      "x-ratelimit-reset-tokens": goDuration(cost * 10),
    })
    expect(validateSchema("CreateChatCompletionResponse", await first.json())).toEqual([])
    t += 5000
    const second = await post(fake, body)
    expect(second.status).toBe(200)
    expect(rateHeaders(second)).toMatchObject({
      "x-ratelimit-remaining-requests": "1",
      "x-ratelimit-reset-requests": "35s",
      "x-ratelimit-remaining-tokens": String(6000 - cost),
    })
    // the responses endpoint shares the limit and counts max_output_tokens
    const third = await post(fake, { model: "m", input: "hi", max_output_tokens: 10 }, "k", 2000, "responses")
    expect(third.status).toBe(200)
    expect(rateHeaders(third)["x-ratelimit-remaining-requests"]).toBe("0")
    expect(fake.served).toEqual([1_000_000, 1_005_000, 1_005_000])
  })

  test("the (R+1)th request within a minute gets 429 rate_limit_exceeded with retry-after; after the wait it is served", async () => {
    let t = 0
    await using fake = await startFake({ apiKey: "k", rateLimit: { rpm: 3 }, now: () => t })
    for (let i = 0; i < 3; i++) expect((await post(fake, ask("x"))).status).toBe(200)
    t += 1000
    const refused = await post(fake, ask("x"))
    expect(refused.status).toBe(429)
    const body = (await refused.json()) as { error: { type: string; code: string; message: string } }
    expect(validateSchema("ErrorResponse", body)).toEqual([])
    expect(body.error).toMatchObject({ type: "requests", code: "rate_limit_exceeded", param: null })
    expect(body.error.message).toContain("on requests per min (RPM): Limit 3, Used 3, Requested 1")
    expect(body.error.message).toContain("Please try again in 19s.")
    expect(rateHeaders(refused)).toEqual({
      "retry-after": "19",
      "x-ratelimit-limit-requests": "3",
      "x-ratelimit-remaining-requests": "0",
      "x-ratelimit-reset-requests": "59s",
    })
    // a refused request is counted apart: not seen, not paid, and the script does not move on
    expect([fake.requests, fake.limited, fake.seen.get("x"), fake.paid.get("x")]).toEqual([4, 1, 3, 3])
    // every response carries the headers, a 401 too (it takes nothing)
    const denied = await post(fake, ask("x"), "nope")
    expect(denied.status).toBe(401)
    expect(rateHeaders(denied)["x-ratelimit-remaining-requests"]).toBe("0")
    t += 18_999
    const early = await post(fake, ask("x"))
    expect(early.status).toBe(429)
    expect(early.headers.get("retry-after")).toBe("1")
    t += 1
    const again = await post(fake, ask("x"))
    expect(again.status).toBe(200)
    expect(rateHeaders(again)).toMatchObject({
      "x-ratelimit-remaining-requests": "0",
      "x-ratelimit-reset-requests": "1m0s",
    })
    expect([fake.limited, fake.served.length, fake.served.at(-1)]).toEqual([2, 4, 20_000])
  })

  test("a request past the token limit gets 429 of type tokens; one larger than the limit gets no retry-after", async () => {
    let t = 0
    await using fake = await startFake({ rateLimit: { rpm: 100, tpm: 600 }, now: () => t })
    expect((await post(fake, { ...ask("a"), max_tokens: 500 })).status).toBe(200)
    const refused = await post(fake, { ...ask("b"), max_tokens: 500 })
    expect(refused.status).toBe(429)
    const body = (await refused.json()) as { error: { type: string; code: string } }
    expect(validateSchema("ErrorResponse", body)).toEqual([])
    expect(body.error).toMatchObject({ type: "tokens", code: "rate_limit_exceeded" })
    // 600 a minute is 10 a second; about 90 of the 600 are left, and the request needs about 510
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(40)
    const huge = await post(fake, { ...ask("c"), max_tokens: 5000 })
    expect(huge.status).toBe(429)
    expect(huge.headers.get("retry-after")).toBeNull()
    expect(((await huge.json()) as { error: { message: string } }).error.message).toStartWith(
      "Request too large",
    )
    expect(fake.limited).toBe(2)
  })

  test("GET /_stats reports the counters", async () => {
    let t = 7
    await using fake = await startFake({ rateLimit: { rpm: 1, burstSeconds: 60 }, now: () => t })
    await post(fake, ask("a"))
    t = 9
    await post(fake, ask("a"))
    const stats = await (await fetch(`http://127.0.0.1:${fake.port}/_stats`)).json()
    expect(stats).toEqual({
      requests: 2,
      limited: 1,
      served: 1,
      firstServedAt: 7,
      lastServedAt: 7,
      rateLimit: { rpm: 1, burstSeconds: 60 },
    })
  })

  test("burstSeconds makes the bucket hold a share of the minute: 600 rpm at 1 s admits 10 at once, then one per 100 ms", async () => {
    let t = 0
    await using fake = await startFake({ rateLimit: { rpm: 600, burstSeconds: 1 }, now: () => t })
    const statuses: number[] = []
    for (let i = 0; i < 11; i++) statuses.push((await post(fake, ask(`q${i}`))).status)
    expect(statuses).toEqual([...Array(10).fill(200), 429])
    t += 100
    const next = await post(fake, ask("q11"))
    expect(next.status).toBe(200)
    expect(rateHeaders(next)).toMatchObject({
      "x-ratelimit-limit-requests": "600",
      "x-ratelimit-remaining-requests": "0",
      "x-ratelimit-reset-requests": "1s",
    })
  })
})

describe("the fake OpenAI server's prompt cache and bill", () => {
  /** A 3,000-token system prompt (12,000 characters, 4 a token). */
  const SYSTEM = "s".repeat(12_000)
  const MINI = "gpt-5-mini"
  const withSystem = (row: string, more: Record<string, unknown> = {}) => ({
    model: MINI,
    messages: [
      { role: "system", content: SYSTEM },
      { role: "user", content: row },
    ],
    ...more,
  })
  type Completion = {
    usage: {
      prompt_tokens: number
      completion_tokens: number
      total_tokens: number
      prompt_tokens_details: { cached_tokens: number }
    }
    service_tier?: string
  }
  const send = async (fake: Fake, body: unknown) => {
    const res = await post(fake, body)
    expect(res.status).toBe(200)
    const answer = (await res.json()) as Completion
    expect(validateSchema("CreateChatCompletionResponse", answer)).toEqual([])
    return answer
  }
  const cachedOf = async (fake: Fake, body: unknown) =>
    (await send(fake, body)).usage.prompt_tokens_details.cached_tokens
  // a prompt is its messages' JSON: 29 characters, the system prompt, 29 more, the row and 3: "alpha" → 12,066
  // characters, 3,017 tokens; the shared 12,058 are 3,014 whole tokens: 1,024 + 15 × 128 = 2,944 cached
  const FULL = 3017 * 0.25 + 3 * 2
  const READ = (3017 - 2944) * 0.25 + 2944 * 0.25 * 0.1 + 3 * 2

  test("a shared 3,000-token prefix is read as 2,944 cached tokens, and is gone after 5 idle minutes", async () => {
    let t = 0
    await using fake = await startFake({ now: () => t })
    const first = await send(fake, withSystem("alpha", { prompt_cache_key: "r1-p0" }))
    expect(first.usage).toEqual({
      prompt_tokens: 3017,
      completion_tokens: 3,
      total_tokens: 3020,
      prompt_tokens_details: { cached_tokens: 0 },
    })
    t += 60_000
    expect(await cachedOf(fake, withSystem("bravo", { prompt_cache_key: "r1-p0" }))).toBe(2944)
    // each use refreshes the prefix: 4 minutes after the last use it is still there, though 5 after the first
    t += 4 * 60_000
    expect(await cachedOf(fake, withSystem("gamma"))).toBe(2944)
    t += 5 * 60_000
    expect(await cachedOf(fake, withSystem("delta"))).toBe(0)
    // that miss wrote it again
    expect(await cachedOf(fake, withSystem("omega"))).toBe(2944)
    expect(fake.cache.keys).toEqual(["r1-p0", "r1-p0", null, null, null])
    expect([fake.cache.hits, fake.cache.cachedTokens]).toEqual([3, 3 * 2944])
    // every row has 5 letters: each prompt 3,017 tokens, each answer 3
    expect(fake.cache.billed).toBeCloseTo((2 * FULL + 3 * READ) / 1e6, 15)
    expect(fake.invalid).toEqual([])
  })

  test("a prompt under 1,024 tokens is never cached, a prefix is the model's own, and a different start shares nothing", async () => {
    await using fake = await startFake()
    const short = { model: MINI, messages: [{ role: "user", content: "x".repeat(4000) }] }
    expect([await cachedOf(fake, short), await cachedOf(fake, short)]).toEqual([0, 0])
    await cachedOf(fake, withSystem("alpha"))
    expect(await cachedOf(fake, { ...withSystem("alpha"), model: "gpt-5-nano" })).toBe(0)
    const other = withSystem("alpha")
    other.messages[0] = { role: "system", content: `t${SYSTEM.slice(1)}` }
    expect(await cachedOf(fake, other)).toBe(0)
    // 1,149 whole tokens shared: read as 1,024, the last whole block (1,152 is past them)
    const long = (end: string) => ({
      model: MINI,
      messages: [{ role: "user", content: "y".repeat(4570) + end }],
    })
    await cachedOf(fake, long("a"))
    expect(await cachedOf(fake, long("b"))).toBe(1024)
    expect(fake.cache.hits).toBe(1)
  })

  test("bills USD by the usage it reports: the model's prices, the cached ratio, and half for flex", async () => {
    const prices = { "gpt-5": { input: 1.25, output: 10 } }
    await using fake = await startFake({ cache: { prices, cachedRatio: 0.5 } })
    await send(fake, { ...withSystem("alpha"), model: "gpt-5-2025-08-07" })
    await send(fake, { ...withSystem("bravo"), model: "gpt-5" })
    const full = 3017 * 1.25 + 3 * 10
    const read = (3017 - 2944) * 1.25 + 2944 * 1.25 * 0.5 + 3 * 10
    // the dated snapshot is priced as its model, and shares its cache only with itself
    expect(fake.cache.billed).toBeCloseTo((full + full) / 1e6, 15)
    const flexed = await send(fake, { ...withSystem("gamma"), model: "gpt-5", service_tier: "flex" })
    expect(flexed.service_tier).toBe("flex")
    expect(flexed.usage.prompt_tokens_details.cached_tokens).toBe(2944)
    expect(fake.cache.billed).toBeCloseTo((2 * full + read / 2) / 1e6, 15)
    // a model it has no price for is billed as gpt-5-mini
    await send(fake, ask("hi"))
    const hi = 8 * 0.25 + 2 * 2
    expect(fake.cache.billed).toBeCloseTo((2 * full + read / 2 + hi) / 1e6, 15)
    expect(fake.invalid).toEqual([])
  })

  test("flex_unavailable answers 429 with the flex tier's error, retry-after when the faults give one, unbilled", async () => {
    await using fake = await startFake()
    fake.script.set("busy", ["flex_unavailable", "flex_unavailable"])
    const res = await post(fake, { ...ask("busy"), service_tier: "flex" })
    expect(res.status).toBe(429)
    expect(res.headers.get("retry-after")).toBeNull()
    const body = (await res.json()) as { error: Record<string, unknown> }
    expect(validateSchema("ErrorResponse", body)).toEqual([])
    expect(body.error.code).toBe("resource_unavailable")
    expect(String(body.error.message)).toStartWith("Resource Unavailable")
    fake.faults = { rate: 0, kinds: [], retryAfter: "9" }
    expect((await post(fake, { ...ask("busy"), service_tier: "flex" })).headers.get("retry-after")).toBe("9")
    expect([fake.paid.size, fake.cache.billed]).toEqual([0, 0])
  })
})
