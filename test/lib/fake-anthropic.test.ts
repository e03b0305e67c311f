import { describe, expect, test } from "bun:test"
import { CREDIT_MESSAGE, startFakeAnthropic, type Fake } from "./fake-anthropic.ts"
import { SKIP_SPEC_CHECKS, validateSchema } from "./spec.ts"

const VERSION = "2023-06-01"

function post(
  fake: Fake,
  body: unknown,
  key = "k",
  timeoutMs = 2000,
  headers: Record<string, string> = { "anthropic-version": VERSION },
) {
  return fetch(`${fake.url}/v1/messages`, {
    method: "POST",
    headers: { "x-api-key": key, "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  })
}

const ask = (content: string, extra: Record<string, unknown> = {}) => ({
  model: "claude-haiku-4-5",
  max_tokens: 64,
  messages: [{ role: "user", content }],
  ...extra,
})

type Message = {
  id: string
  type: string
  role: string
  model: string
  content: { type: string; text: string }[]
  stop_reason: string
  stop_sequence: null
  usage: Record<string, unknown>
}

type ErrorBody = { type: string; error: { type: string; message: string }; request_id: string }

describe("the fake Anthropic server", () => {
  test("serves a Message that conforms to the spec and echoes the last user text", async () => {
    await using fake = await startFakeAnthropic({ apiKey: "k" })
    const res = await post(
      fake,
      ask("ignored", {
        system: "be brief",
        messages: [
          { role: "user", content: "first" },
          { role: "assistant", content: "ok" },
          { role: "user", content: [{ type: "text", text: "hello" }] },
        ],
      }),
    )
    expect(res.status).toBe(200)
    expect(res.headers.get("request-id")).toMatch(/^req_[0-9A-Za-z]{24}$/)
    const body = (await res.json()) as Message
    expect(validateSchema("Message", body, "anthropic")).toEqual([])
    expect(body.id).toMatch(/^msg_[0-9A-Za-z]{24}$/)
    expect(body).toMatchObject({
      type: "message",
      role: "assistant",
      model: "claude-haiku-4-5",
      content: [{ type: "text", text: "echo: hello", citations: null }],
      stop_reason: "end_turn",
      stop_sequence: null,
    })
    expect(body.content.length).toBe(1)
    const input = Math.ceil(
      JSON.stringify([
        "be brief",
        [
          { role: "user", content: "first" },
          { role: "assistant", content: "ok" },
          { role: "user", content: [{ type: "text", text: "hello" }] },
        ],
      ]).length / 4,
    )
    expect(body.usage).toEqual({
      input_tokens: input,
      output_tokens: 3,
      cache_creation_input_tokens: 0,
      cache_read_input_tokens: 0,
      cache_creation: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 0 },
      server_tool_use: null,
      service_tier: "standard",
      inference_geo: null,
    })
    expect(fake.paid.get("hello")).toBe(1)
    expect(fake.invalid).toEqual([])
    expect(fake.headers?.get("x-api-key")).toBe("k")
  })

  test("a scripted max_tokens cuts the reply and says so; a scripted empty has no content block; both conform", async () => {
    await using fake = await startFakeAnthropic()
    fake.script.set("a longer input than two tokens", ["max_tokens", "empty"])
    const cut = (await (
      await post(fake, ask("a longer input than two tokens", { max_tokens: 2 }))
    ).json()) as Message
    expect(validateSchema("Message", cut, "anthropic")).toEqual([])
    expect(cut.content).toEqual([{ type: "text", text: "echo: a ", citations: null } as never])
    expect(cut.stop_reason).toBe("max_tokens")
    expect(cut.usage.output_tokens).toBe(2)
    const empty = (await (await post(fake, ask("a longer input than two tokens"))).json()) as Message
    expect(validateSchema("Message", empty, "anthropic")).toEqual([])
    expect(empty.content).toEqual([])
    expect(empty.stop_reason).toBe("end_turn")
    expect(fake.paid.get("a longer input than two tokens")).toBe(2)
  })

  test("a forced tool call gets a tool_use block with the reply as its input; the request and the answer conform", async () => {
    await using fake = await startFakeAnthropic({ reply: (input) => JSON.stringify({ label: input }) })
    const tools = [
      {
        name: "output",
        input_schema: { type: "object", properties: { label: { type: "string" } }, required: ["label"] },
      },
    ]
    const answer = (await (
      await post(fake, ask("bug", { tools, tool_choice: { type: "tool", name: "output" } }))
    ).json()) as Message
    expect(validateSchema("Message", answer, "anthropic")).toEqual([])
    expect(answer.content).toEqual([
      {
        type: "tool_use",
        id: expect.stringMatching(/^toolu_/),
        name: "output",
        input: { label: "bug" },
        caller: { type: "direct" },
      } as never,
    ])
    expect(answer.stop_reason).toBe("tool_use")
    expect(fake.invalid).toEqual([])
  })

  test("every error it serves conforms to ErrorResponse; 429 carries retry-after", async () => {
    await using fake = await startFakeAnthropic({ apiKey: "k" })
    fake.faults = { rate: 0, kinds: [], retryAfter: "Tue, 24 Nov 2026 12:00:30 GMT" }
    fake.script.set("e", ["429", "529", "500", "credit"])
    const got: [number, string, string][] = []
    for (let i = 0; i < 4; i++) {
      const res = await post(fake, ask("e"))
      const body = (await res.json()) as ErrorBody
      expect(validateSchema("ErrorResponse", body, "anthropic")).toEqual([])
      expect(body.request_id).toBe(res.headers.get("request-id")!)
      got.push([res.status, body.error.type, res.status === 400 ? body.error.message : ""])
      if (i === 0) expect(res.headers.get("retry-after")).toBe("Tue, 24 Nov 2026 12:00:30 GMT")
    }
    expect(got).toEqual([
      [429, "rate_limit_error", ""],
      [529, "overloaded_error", ""],
      [500, "api_error", ""],
      [400, "invalid_request_error", CREDIT_MESSAGE],
    ])
    expect(CREDIT_MESSAGE).toBe(
      "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
    )

    const wrongKey = await post(fake, ask("x"), "nope")
    expect(wrongKey.status).toBe(401)
    const denied = (await wrongKey.json()) as ErrorBody
    expect(validateSchema("ErrorResponse", denied, "anthropic")).toEqual([])
    expect(denied.error).toEqual({ type: "authentication_error", message: "invalid x-api-key" })

    const noVersion = await post(fake, ask("x"), "k", 2000, {})
    expect(noVersion.status).toBe(400)
    const unversioned = (await noVersion.json()) as ErrorBody
    expect(validateSchema("ErrorResponse", unversioned, "anthropic")).toEqual([])
    expect(unversioned.error.message).toBe("anthropic-version: header is required")

    const elsewhere = await fetch(`${fake.url}/v1/complete`, { method: "POST" })
    expect(elsewhere.status).toBe(404)
    expect(validateSchema("ErrorResponse", await elsewhere.json(), "anthropic")).toEqual([])
    expect(fake.paid.size).toBe(0)
  })

  test("a key in Authorization: Bearer instead of x-api-key is refused", async () => {
    await using fake = await startFakeAnthropic({ apiKey: "k" })
    const res = await fetch(`${fake.url}/v1/messages`, {
      method: "POST",
      headers: {
        authorization: "Bearer k",
        "anthropic-version": VERSION,
        "content-type": "application/json",
      },
      body: JSON.stringify(ask("b")),
    })
    expect(res.status).toBe(401)
    expect(fake.seen.size).toBe(0)
  })

  test("reset kills the connection, hang never answers, garbage is not JSON; scripted faults run in order, then stop", async () => {
    await using fake = await startFakeAnthropic({ apiKey: "k" })
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
    const run = async (order: number[]) => {
      await using fake = await startFakeAnthropic({ faults: { rate: 0.5, kinds: ["429", "529"], seed: 11 } })
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
    expect(new Set(forward.map(([, s]) => s))).toEqual(new Set([200, 429, 529]))
  })

  test.skipIf(SKIP_SPEC_CHECKS)(
    "records request bodies that break the spec, and not valid ones",
    async () => {
      await using fake = await startFakeAnthropic()
      await post(fake, ask("fine", { system: "s", temperature: 0.5, top_k: 3, stop_sequences: ["\n"] }))
      await post(fake, { model: "m", messages: [{ role: "user", content: "x" }], max_completion_tokens: 5 })
      expect(fake.invalid.length).toBe(1)
      expect(fake.invalid[0]!.body).toEqual({
        model: "m",
        messages: [{ role: "user", content: "x" }],
        max_completion_tokens: 5,
      })
      expect(fake.invalid[0]!.errors).toEqual([
        "/ must have required property 'max_tokens'",
        "/ must NOT have additional properties",
      ])
    },
  )
})

const rateHeaders = (res: Response) =>
  Object.fromEntries(
    [...res.headers].filter(([k]) => k.startsWith("anthropic-ratelimit-") || k === "retry-after"),
  )

/** RFC 3339 as the reset headers carry it: a UTC time to the second. */
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$/

describe("the fake Anthropic server's rate limit", () => {
  const T0 = Date.UTC(2026, 0, 1)
  const at = (seconds: number) => new Date(T0 + seconds * 1000).toISOString().replace(".000Z", "Z")

  test("is off by default: no anthropic-ratelimit-* headers", async () => {
    await using fake = await startFakeAnthropic()
    const res = await post(fake, ask("a"))
    expect(res.status).toBe(200)
    expect(rateHeaders(res)).toEqual({})
    expect([fake.limited, fake.served.length]).toEqual([0, 1])
  })

  test("a success carries well-formed anthropic-ratelimit-* headers, and remaining counts down", async () => {
    let t = T0
    await using fake = await startFakeAnthropic({ rateLimit: { rpm: 3, tpm: 6000 }, now: () => t })
    const body = ask("hello", { system: "be brief", max_tokens: 40 })
    const input = Math.ceil(JSON.stringify(["be brief", body.messages]).length / 4)
    const first = await post(fake, body)
    expect(first.status).toBe(200)
    const headers = rateHeaders(first)
    expect(Object.keys(headers).length).toBe(12)
    for (const [k, v] of Object.entries(headers)) {
      if (k.endsWith("-reset")) expect(v).toMatch(RFC3339)
      else expect(v).toMatch(/^\d+$/)
    }
    // 3 a minute refill one every 20 s; 6000 tokens a minute refill 100 a second (rounded up to the second)
    expect(headers).toEqual({
      "anthropic-ratelimit-requests-limit": "3",
      "anthropic-ratelimit-requests-remaining": "2",
      "anthropic-ratelimit-requests-reset": at(20),
      "anthropic-ratelimit-tokens-limit": "6000",
      "anthropic-ratelimit-tokens-remaining": String(6000 - input - 40),
      "anthropic-ratelimit-tokens-reset": at(Math.ceil((input + 40) / 100)),
      "anthropic-ratelimit-input-tokens-limit": "6000",
      "anthropic-ratelimit-input-tokens-remaining": String(6000 - input),
      "anthropic-ratelimit-input-tokens-reset": at(Math.ceil(input / 100)),
      "anthropic-ratelimit-output-tokens-limit": "6000",
      "anthropic-ratelimit-output-tokens-remaining": "5960",
      "anthropic-ratelimit-output-tokens-reset": at(1),
    })
    const message = (await first.json()) as Message
    expect(validateSchema("Message", message, "anthropic")).toEqual([])
    expect(message.usage.input_tokens).toBe(input)
    t += 5000
    const second = await post(fake, body)
    expect(rateHeaders(second)).toMatchObject({
      "anthropic-ratelimit-requests-remaining": "1",
      "anthropic-ratelimit-requests-reset": at(40),
    })
    expect(fake.served).toEqual([T0, T0 + 5000])
  })

  test("the (R+1)th request within a minute gets 429 rate_limit_error with retry-after; after the wait it is served", async () => {
    let t = T0
    await using fake = await startFakeAnthropic({ apiKey: "k", rateLimit: { rpm: 3 }, now: () => t })
    for (let i = 0; i < 3; i++) expect((await post(fake, ask("x"))).status).toBe(200)
    t += 1000
    const refused = await post(fake, ask("x"))
    expect(refused.status).toBe(429)
    const body = (await refused.json()) as ErrorBody
    expect(validateSchema("ErrorResponse", body, "anthropic")).toEqual([])
    expect(body.error.type).toBe("rate_limit_error")
    expect(body.error.message).toStartWith(
      "This request would exceed your organization's rate limit of 3 requests per minute.",
    )
    expect(body.request_id).toBe(refused.headers.get("request-id")!)
    expect(rateHeaders(refused)).toEqual({
      "retry-after": "19",
      "anthropic-ratelimit-requests-limit": "3",
      "anthropic-ratelimit-requests-remaining": "0",
      "anthropic-ratelimit-requests-reset": at(60),
    })
    expect([fake.requests, fake.limited, fake.seen.get("x"), fake.paid.get("x")]).toEqual([4, 1, 3, 3])
    const denied = await post(fake, ask("x"), "nope")
    expect(denied.status).toBe(401)
    expect(rateHeaders(denied)["anthropic-ratelimit-requests-remaining"]).toBe("0")
    t += 18_999
    const early = await post(fake, ask("x"))
    expect(early.status).toBe(429)
    expect(early.headers.get("retry-after")).toBe("1")
    t += 1
    const again = await post(fake, ask("x"))
    expect(again.status).toBe(200)
    expect(rateHeaders(again)).toMatchObject({
      "anthropic-ratelimit-requests-remaining": "0",
      "anthropic-ratelimit-requests-reset": at(80),
    })
    expect([fake.limited, fake.served.length, fake.served.at(-1)]).toEqual([2, 4, T0 + 20_000])
  })

  test("a scripted 429 fault is not counted as rate-limited, and carries the limiter's headers", async () => {
    await using fake = await startFakeAnthropic({ rateLimit: { rpm: 50 } })
    fake.script.set("e", ["429"])
    const res = await post(fake, ask("e"))
    expect(res.status).toBe(429)
    expect(validateSchema("ErrorResponse", await res.json(), "anthropic")).toEqual([])
    expect(rateHeaders(res)).toMatchObject({
      "anthropic-ratelimit-requests-limit": "50",
      "anthropic-ratelimit-requests-remaining": "49",
    })
    expect(fake.limited).toBe(0)
  })

  test("a request past the token limit gets 429; GET /_stats reports the counters", async () => {
    let t = T0
    await using fake = await startFakeAnthropic({ rateLimit: { rpm: 100, tpm: 600 }, now: () => t })
    expect((await post(fake, ask("a", { max_tokens: 500 }))).status).toBe(200)
    t += 2000
    const refused = await post(fake, ask("b", { max_tokens: 500 }))
    expect(refused.status).toBe(429)
    expect(validateSchema("ErrorResponse", await refused.json(), "anthropic")).toEqual([])
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(30)
    expect(rateHeaders(refused)["anthropic-ratelimit-output-tokens-remaining"]).toBe("120")
    const stats = await (await fetch(`${fake.url}/_stats`)).json()
    expect(stats).toEqual({
      requests: 2,
      limited: 1,
      served: 1,
      firstServedAt: T0,
      lastServedAt: T0,
      rateLimit: { rpm: 100, tpm: 600 },
    })
  })
})

/** 8,192 characters: a 2,048-token prefix by the fake's count, cacheable on claude-sonnet-4-5 (minimum 1,024). */
const LONG = "x".repeat(8192)
const SONNET = "claude-sonnet-4-5"

/** A request whose system prompt carries a breakpoint (of `ttl`, when given); `row` is its user text. */
const cached = (row: string, extra: Record<string, unknown> = {}, ttl?: "1h") => ({
  model: SONNET,
  max_tokens: 64,
  system: [
    { type: "text", text: LONG, cache_control: ttl ? { type: "ephemeral", ttl } : { type: "ephemeral" } },
  ],
  messages: [{ role: "user", content: row }],
  ...extra,
})

/** The Message usage the fake serves, with the cache's figures. */
const cacheUsage = (input: number, output: number, read: number, write5m: number, write1h = 0) => ({
  input_tokens: input,
  output_tokens: output,
  cache_creation_input_tokens: write5m + write1h,
  cache_read_input_tokens: read,
  cache_creation: { ephemeral_5m_input_tokens: write5m, ephemeral_1h_input_tokens: write1h },
  server_tool_use: null,
  service_tier: "standard",
  inference_geo: null,
})

/** POSTs a Message Batch of `bodies` (custom_ids b_0, b_1, …) and reads its results, ended at once. */
async function batchOf(fake: Fake, bodies: Record<string, unknown>[]) {
  const headers = { "x-api-key": "k", "content-type": "application/json", "anthropic-version": VERSION }
  const requests = bodies.map((params, i) => ({ custom_id: `b_${i}`, params }))
  const created = await fetch(`${fake.url}/v1/messages/batches`, {
    method: "POST",
    headers,
    body: JSON.stringify({ requests }),
  })
  expect(created.status).toBe(200)
  const { id } = (await created.json()) as { id: string }
  const results = await fetch(`${fake.url}/v1/messages/batches/${id}/results`, { headers })
  expect(results.status).toBe(200)
  const lines = (await results.text())
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { custom_id: string; result: { type: string; message: Message } })
  for (const line of lines)
    expect(validateSchema("MessageBatchIndividualResponse", line, "anthropic")).toEqual([])
  return lines.sort((a, b) => Number(a.custom_id.slice(2)) - Number(b.custom_id.slice(2)))
}

describe("the fake Anthropic server's prompt cache", () => {
  // a request of LONG and "p": [LONG, [{role, content: "p"}]] is 8,228 characters, 2,057 tokens, 2,048 of them
  // the prefix; "echo: p" is 2 output tokens
  test("a realtime request writes the prefix, the next within 5 minutes reads it, one after they lapse writes it again", async () => {
    let t = 1_000_000
    await using fake = await startFakeAnthropic({ now: () => t })
    const usage = async (body: unknown) => {
      const res = await post(fake, body)
      expect(res.status).toBe(200)
      const message = (await res.json()) as Message
      expect(validateSchema("Message", message, "anthropic")).toEqual([])
      return message.usage
    }
    expect(await usage(cached("p"))).toEqual(cacheUsage(9, 2, 0, 2048))
    t += 299_999
    expect(await usage(cached("q"))).toEqual(cacheUsage(9, 2, 2048, 0))
    // the read renewed the lifetime: 5 minutes from it, not from the write
    t += 299_999
    expect(await usage(cached("p"))).toEqual(cacheUsage(9, 2, 2048, 0))
    t += 300_000
    expect(await usage(cached("p"))).toEqual(cacheUsage(9, 2, 0, 2048))
    expect(fake.cached()).toEqual({ reads: 2, writes: 2, readTokens: 4096, writeTokens: 4096 })
    expect(fake.invalid).toEqual([])
  })

  test("a 1-hour breakpoint writes ephemeral_1h tokens, and its prefix lives an hour", async () => {
    let t = 1_000_000
    await using fake = await startFakeAnthropic({ now: () => t })
    const usage = async (body: unknown) => ((await (await post(fake, body)).json()) as Message).usage
    expect(await usage(cached("p", {}, "1h"))).toEqual(cacheUsage(9, 2, 0, 0, 2048))
    t += 59 * 60_000
    expect(await usage(cached("p", {}, "1h"))).toEqual(cacheUsage(9, 2, 2048, 0))
    t += 60 * 60_000
    expect(await usage(cached("p", {}, "1h"))).toEqual(cacheUsage(9, 2, 0, 0, 2048))
    expect(fake.invalid).toEqual([])
  })

  test("a prefix ends with the block that carries the breakpoint: a user block's prefix takes in the system prompt and its text", async () => {
    await using fake = await startFakeAnthropic()
    const split = (row: string) => ({
      model: SONNET,
      max_tokens: 64,
      system: "s",
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: LONG, cache_control: { type: "ephemeral" } },
            { type: "text", text: row },
          ],
        },
      ],
    })
    const first = (await (await post(fake, split("p"))).json()) as Message
    // counted as ["s", [{role, content: LONG + "p"}]]: 8,229 characters, 2,058 tokens; the prefix "s" + LONG 2,049;
    // the echo of LONG + "p" is 2,050
    expect(first.usage).toEqual(cacheUsage(9, 2050, 0, 2049))
    expect(first.content[0]!.text).toBe(`echo: ${LONG}p`)
    const second = (await (await post(fake, split("q"))).json()) as Message
    expect(second.usage).toEqual(cacheUsage(9, 2050, 2049, 0))
    // another system prompt is another prefix
    const other = (await (await post(fake, { ...split("q"), system: "t" })).json()) as Message
    expect(other.usage).toEqual(cacheUsage(9, 2050, 0, 2049))
    expect(fake.invalid).toEqual([])
  })

  test("nothing is cached without a breakpoint, nor below the model's minimum (dated snapshots are their model's)", async () => {
    await using fake = await startFakeAnthropic()
    const usage = async (body: unknown) => ((await (await post(fake, body)).json()) as Message).usage
    const plain = { model: SONNET, max_tokens: 64, system: LONG, messages: [{ role: "user", content: "p" }] }
    expect(await usage(plain)).toEqual(cacheUsage(2057, 2, 0, 0))
    expect(await usage(plain)).toEqual(cacheUsage(2057, 2, 0, 0))
    // 2,048 tokens: below claude-haiku-4-5's 4,096 and claude-sonnet-4-6's 2,048 is not
    for (const model of ["claude-haiku-4-5", "claude-haiku-4-5-20251001", "claude-opus-4-6"]) {
      expect(await usage(cached("p", { model }))).toEqual(cacheUsage(2057, 2, 0, 0))
      expect(await usage(cached("p", { model }))).toEqual(cacheUsage(2057, 2, 0, 0))
    }
    expect(fake.cached()).toEqual({ reads: 0, writes: 0, readTokens: 0, writeTokens: 0 })
    expect(await usage(cached("p", { model: "claude-sonnet-4-6" }))).toEqual(cacheUsage(9, 2, 0, 2048))
    expect(await usage(cached("p", { model: "claude-sonnet-4-5-20250929" }))).toEqual(
      cacheUsage(9, 2, 0, 2048),
    )
    // a model is its own cache
    expect(await usage(cached("p", { model: "claude-sonnet-4-6" }))).toEqual(cacheUsage(9, 2, 2048, 0))
    expect(fake.invalid).toEqual([])
  })

  test("a cold batch reads nothing: its 10 lines all write; a later request reads what they wrote", async () => {
    await using fake = await startFakeAnthropic()
    const lines = await batchOf(
      fake,
      Array.from({ length: 10 }, (_, i) => cached(`row ${i}`)),
    )
    // [LONG, [{role, content: "row i"}]] is 8,232 characters: 2,058 tokens; "echo: row i" 3
    expect(lines.map((l) => l.result.message.usage)).toEqual(Array(10).fill(cacheUsage(10, 3, 0, 2048)))
    expect(fake.cached()).toEqual({ reads: 0, writes: 10, readTokens: 0, writeTokens: 20480 })
    const after = (await (await post(fake, cached("p"))).json()) as Message
    expect(after.usage).toEqual(cacheUsage(9, 2, 2048, 0))
    expect(fake.invalid).toEqual([])
  })

  test("a batch after a priming request reads on every line; one after the prefix lapsed writes again", async () => {
    let t = 1_000_000
    await using fake = await startFakeAnthropic({ now: () => t })
    expect(((await (await post(fake, cached("prime"))).json()) as Message).usage).toEqual(
      cacheUsage(10, 3, 0, 2048),
    )
    t += 60_000
    const rows = Array.from({ length: 10 }, (_, i) => cached(`row ${i}`))
    const primed = await batchOf(fake, rows)
    expect(primed.map((l) => l.result.message.usage)).toEqual(Array(10).fill(cacheUsage(10, 3, 2048, 0)))
    expect(fake.cached()).toEqual({ reads: 10, writes: 1, readTokens: 20480, writeTokens: 2048 })
    // the batch's reads renewed the prefix: 5 minutes from when it ran
    t += 300_000
    const lapsed = await batchOf(fake, rows)
    expect(lapsed.map((l) => l.result.message.usage)).toEqual(Array(10).fill(cacheUsage(10, 3, 0, 2048)))
    expect(fake.cached()).toEqual({ reads: 10, writes: 11, readTokens: 20480, writeTokens: 22528 })
    expect(fake.invalid).toEqual([])
  })

  test("a batch is decided as its processing began: a request after its create but before it ran does not count", async () => {
    let t = 1_000_000
    await using fake = await startFakeAnthropic({ now: () => t, batch: { validatingMs: 1000 } })
    const headers = { "x-api-key": "k", "content-type": "application/json", "anthropic-version": VERSION }
    const requests = [0, 1, 2].map((i) => ({ custom_id: `b_${i}`, params: cached(`row ${i}`) }))
    const res = await fetch(`${fake.url}/v1/messages/batches`, {
      method: "POST",
      headers,
      body: JSON.stringify({ requests }),
    })
    const { id } = (await res.json()) as { id: string }
    // the priming request comes in while the batch validates: the batch begins processing after it, and reads
    t += 500
    expect(((await (await post(fake, cached("p"))).json()) as Message).usage).toEqual(
      cacheUsage(9, 2, 0, 2048),
    )
    t += 500
    const text = await (await fetch(`${fake.url}/v1/messages/batches/${id}/results`, { headers })).text()
    const usages = text
      .trim()
      .split("\n")
      .map((l) => (JSON.parse(l) as { result: { message: Message } }).result.message.usage)
    expect(usages).toEqual(Array(3).fill(cacheUsage(10, 3, 2048, 0)))
  })

  test("bills USD as the API does: writes at 1.25× (2× for 1 hour), reads at 0.1×, output at its price; batch lines at half", async () => {
    let t = 1_000_000
    await using fake = await startFakeAnthropic({ now: () => t })
    expect(fake.billed()).toBe(0)
    // write: 9 × $3 + 2,048 × $3.75 + 2 × $15 per million = $0.007737
    await post(fake, cached("p"))
    expect(fake.billed()).toBeCloseTo(0.007737, 12)
    // read: 9 × $3 + 2,048 × $0.30 + 2 × $15 = $0.0006714
    await post(fake, cached("p"))
    expect(fake.billed()).toBeCloseTo(0.007737 + 0.0006714, 12)
    // a 1-hour write, of a prefix of its own: 9 × $3 + 2,048 × $6 + 2 × $15 = $0.012345
    await post(
      fake,
      cached("p", {
        system: [
          { type: "text", text: `${LONG.slice(1)}y`, cache_control: { type: "ephemeral", ttl: "1h" } },
        ],
      }),
    )
    expect(fake.billed()).toBeCloseTo(0.007737 + 0.0006714 + 0.012345, 12)
    // two batch lines, reads, at half: 2 × (10 × $3 + 2,048 × $0.30 + 3 × $15) / 2 = $0.0006894
    await batchOf(fake, [cached("row 0"), cached("row 1")])
    expect(fake.billed()).toBeCloseTo(0.007737 + 0.0006714 + 0.012345 + 0.0006894, 12)
    // without a breakpoint: 2,057 × $3 + 2 × $15 = $0.006201
    const before = fake.billed()
    await post(fake, {
      model: SONNET,
      max_tokens: 64,
      system: LONG,
      messages: [{ role: "user", content: "p" }],
    })
    expect(fake.billed() - before).toBeCloseTo(0.006201, 12)
  })

  test("bills each model at the price it is given, a dated snapshot at its model's, any other at $3 / $15", async () => {
    await using fake = await startFakeAnthropic({ prices: { "claude-haiku-4-5": { input: 1, output: 5 } } })
    const plain = (model: string) => ({ model, max_tokens: 64, messages: [{ role: "user", content: "p" }] })
    // ["", [{role, content: "p"}]] is 36 characters: 9 input tokens; 2 output
    await post(fake, plain("claude-haiku-4-5-20251001"))
    expect(fake.billed()).toBeCloseTo((9 * 1 + 2 * 5) / 1e6, 15)
    await post(fake, plain("claude-opus-4-6"))
    expect(fake.billed()).toBeCloseTo((9 * 1 + 2 * 5 + 9 * 3 + 2 * 15) / 1e6, 15)
  })
})
