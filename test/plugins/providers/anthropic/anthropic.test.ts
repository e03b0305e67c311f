import { afterEach, describe, expect, test, setSystemTime } from "bun:test"
import anthropic from "../../../../src/plugins/providers/anthropic/anthropic.ts"
import { classify, DEFAULT_MAX_TOKENS, reply } from "../../../../src/plugins/providers/anthropic/wire.ts"
import { ProviderError } from "../../../../src/plugins/api/errors.ts"
import type { ProviderClient, Request } from "../../../../src/plugins/api/define.ts"
import { CREDIT_MESSAGE, startFakeAnthropic, type Fake, type FaultKind } from "../../../lib/fake-anthropic.ts"

const KEY = "sk-ant-test-0123456789"
const MODEL = "claude-haiku-4-5"

const tokens = (text: string) => Math.max(1, Math.ceil(text.length / 4))

function client(fake: Fake, timeoutMs = 5000): ProviderClient {
  return anthropic.create({}, { model: MODEL, baseUrl: fake.url, apiKey: KEY, timeoutMs })
}

const never = () => new AbortController().signal

/** What a call ends in: its reply, or the ProviderError's fields that the runner reads. */
async function outcome(c: ProviderClient, request: Request, signal = never()) {
  try {
    return { reply: await c.call(request, signal) }
  } catch (e) {
    if (!(e instanceof ProviderError)) throw e
    return {
      class: e.errorClass,
      retryable: e.retryable,
      pause: e.pause,
      retryAfterMs: e.retryAfterMs,
      status: e.status,
      message: e.message,
    }
  }
}

const errorBody = (type: string, message = "m", details?: Record<string, unknown>) => ({
  type: "error",
  error: { type, message, ...(details ? { details } : {}) },
  request_id: "req_1",
})

afterEach(() => {
  setSystemTime()
})

describe("the anthropic provider", () => {
  test("sends every request shape valid against the official spec, with exactly the expected body, and reads replies and usage exactly", async () => {
    await using fake = await startFakeAnthropic({ apiKey: KEY })
    const c = client(fake)
    const shapes: [Request, Record<string, unknown>][] = [
      [
        { prompt: "plain" },
        { model: MODEL, max_tokens: 4096, messages: [{ role: "user", content: "plain" }] },
      ],
      [
        { system: "sys", prompt: "with system" },
        {
          model: MODEL,
          max_tokens: 4096,
          messages: [{ role: "user", content: "with system" }],
          system: "sys",
        },
      ],
      [
        { prompt: "limits", max_tokens: 50, temperature: 0.2 },
        { model: MODEL, max_tokens: 50, messages: [{ role: "user", content: "limits" }], temperature: 0.2 },
      ],
      [
        {
          system: "s",
          prompt: "params",
          max_tokens: 7,
          params: { top_k: 5, top_p: 0.9, stop_sequences: ["\n\n", "END"], metadata: { user_id: "u-1" } },
        },
        {
          model: MODEL,
          max_tokens: 7,
          messages: [{ role: "user", content: "params" }],
          system: "s",
          top_k: 5,
          top_p: 0.9,
          stop_sequences: ["\n\n", "END"],
          metadata: { user_id: "u-1" },
        },
      ],
      [
        // params are laid over the body as they are, even over what the request set
        { prompt: "override", max_tokens: 10, params: { max_tokens: 20, temperature: 1 } },
        { model: MODEL, max_tokens: 20, messages: [{ role: "user", content: "override" }], temperature: 1 },
      ],
    ]
    for (const [i, [request, expected]] of shapes.entries()) {
      const reply = await c.call(request, never())
      expect(fake.bodies[i]).toEqual(expected)
      const text = `echo: ${request.prompt}`
      expect(reply).toEqual({
        text,
        finish: "stop",
        usage: {
          input_tokens: tokens(JSON.stringify([request.system ?? "", expected.messages])),
          output_tokens: tokens(text),
        },
      })
    }
    expect(DEFAULT_MAX_TOKENS).toBe(4096)
    expect(fake.requests).toBe(shapes.length)
    expect(fake.invalid).toEqual([])
  })

  test("the key goes in x-api-key and nowhere else, with an anthropic-version", async () => {
    await using fake = await startFakeAnthropic({ apiKey: KEY })
    await client(fake).call({ prompt: "h" }, never())
    expect(fake.headers?.get("x-api-key")).toBe(KEY)
    expect(fake.headers?.get("authorization")).toBeNull()
    expect(fake.headers?.get("anthropic-version")).toMatch(/^\d{4}-\d{2}-\d{2}$/)
    const leaked = [...(fake.headers?.entries() ?? [])].filter(
      ([k, v]) => k !== "x-api-key" && v.includes(KEY),
    )
    expect(leaked).toEqual([])
  })

  test("a reply cut at max_tokens is returned marked as cut; a message with no text block is a retryable bad response", async () => {
    await using fake = await startFakeAnthropic({ apiKey: KEY })
    fake.script.set("a prompt long enough to be cut", ["max_tokens"]).set("e", ["empty"])
    const c = client(fake)
    expect(await outcome(c, { prompt: "a prompt long enough to be cut", max_tokens: 3 })).toEqual({
      // cut at max_tokens: returned, and marked so the runner never takes it as complete
      reply: { text: "echo: a prom", finish: "length", usage: { input_tokens: 17, output_tokens: 3 } },
    })
    expect(await outcome(c, { prompt: "e" })).toEqual({
      class: "bad_response",
      retryable: true,
      pause: false,
      retryAfterMs: undefined,
      status: 200,
      message: "the message has no text block",
    })
  })

  test("maps each error the server sends, through the SDK, to its class: what to retry, what to fail, what pauses the run", async () => {
    await using fake = await startFakeAnthropic({ apiKey: KEY })
    const c = client(fake)
    setSystemTime(new Date("2026-11-24T12:00:00Z"))
    const cases: [FaultKind, string | undefined, Record<string, unknown>][] = [
      ["429", "3", { class: "rate_limit", retryable: true, pause: false, retryAfterMs: 3000, status: 429 }],
      [
        "429",
        "Tue, 24 Nov 2026 12:00:30 GMT",
        { class: "rate_limit", retryable: true, pause: false, retryAfterMs: 30_000, status: 429 },
      ],
      [
        "529",
        undefined,
        { class: "server", retryable: true, pause: false, retryAfterMs: undefined, status: 529 },
      ],
      [
        "500",
        undefined,
        { class: "server", retryable: true, pause: false, retryAfterMs: undefined, status: 500 },
      ],
      [
        "credit",
        undefined,
        {
          class: "quota",
          retryable: false,
          pause: true,
          retryAfterMs: undefined,
          status: 400,
          message: `HTTP 400: ${CREDIT_MESSAGE}`,
        },
      ],
    ]
    for (const [i, [kind, after, expected]] of cases.entries()) {
      fake.faults = { rate: 0, kinds: [], retryAfter: after }
      fake.script.set(`c${i}`, [kind])
      expect(await outcome(c, { prompt: `c${i}` })).toMatchObject(expected)
    }
    expect(await outcome(c, { prompt: "c0" })).toEqual({
      reply: { text: "echo: c0", finish: "stop", usage: expect.any(Object) },
    })

    const wrong = anthropic.create(
      {},
      { model: MODEL, baseUrl: fake.url, apiKey: "sk-wrong", timeoutMs: 5000 },
    )
    expect(await outcome(wrong, { prompt: "w" })).toEqual({
      class: "auth",
      retryable: false,
      pause: true,
      retryAfterMs: undefined,
      status: 401,
      message: "HTTP 401: invalid x-api-key",
    })
    const none = anthropic.create({}, { model: MODEL, baseUrl: fake.url, apiKey: undefined, timeoutMs: 5000 })
    expect(await outcome(none, { prompt: "n" })).toMatchObject({ class: "auth", pause: true, status: 401 })
    expect(fake.paid.size).toBe(1)
  })

  test("an error page that is not JSON (a proxy's 502) is classified by its status and quoted", async () => {
    await using proxy = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: () =>
        new Response("<html>bad gateway</html>", { status: 502, headers: { "content-type": "text/html" } }),
    })
    const c = anthropic.create(
      {},
      { model: MODEL, baseUrl: `http://127.0.0.1:${proxy.port}`, apiKey: KEY, timeoutMs: 2000 },
    )
    expect(await outcome(c, { prompt: "p" })).toEqual({
      class: "server",
      retryable: true,
      pause: false,
      retryAfterMs: undefined,
      status: 502,
      message: "HTTP 502: <html>bad gateway</html>",
    })
  })

  test("classifies every status and body: the full table", () => {
    setSystemTime(new Date("2026-11-24T12:00:00Z"))
    const h = (init: Record<string, string> = {}) => new Headers(init)
    const cases: [number, unknown, Headers, string, boolean, boolean, number | undefined][] = [
      [429, errorBody("rate_limit_error"), h({ "retry-after": "3" }), "rate_limit", true, false, 3000],
      [429, errorBody("rate_limit_error"), h({ "retry-after": "0" }), "rate_limit", true, false, 0],
      [
        429,
        errorBody("rate_limit_error"),
        h({ "retry-after": "Tue, 24 Nov 2026 12:01:00 GMT" }),
        "rate_limit",
        true,
        false,
        60_000,
      ],
      [
        429,
        errorBody("rate_limit_error"),
        h({ "retry-after-ms": "250", "retry-after": "9" }),
        "rate_limit",
        true,
        false,
        250,
      ],
      [429, errorBody("rate_limit_error"), h(), "rate_limit", true, false, undefined],
      [
        429,
        errorBody("rate_limit_error", "m", { error_code: "enforced_spend_limit_reached" }),
        h({ "retry-after": "60" }),
        "quota",
        false,
        true,
        undefined,
      ],
      [
        429,
        errorBody("rate_limit_error", "m", { error_code: "contract_spend_limit_reached" }),
        h(),
        "quota",
        false,
        true,
        undefined,
      ],
      [529, errorBody("overloaded_error", "Overloaded"), h(), "server", true, false, undefined],
      [529, errorBody("overloaded_error"), h({ "retry-after": "2" }), "server", true, false, 2000],
      [500, errorBody("api_error"), h(), "server", true, false, undefined],
      [502, "<html>bad gateway</html>", h(), "server", true, false, undefined],
      [503, errorBody("api_error"), h(), "server", true, false, undefined],
      // the API gave up on its side: whether it did the work is unknown, as with a timeout of ours
      [504, errorBody("timeout_error"), h(), "timeout", true, false, undefined],
      [504, "<html>gateway timeout</html>", h(), "server", true, false, undefined],
      [409, errorBody("conflict_error"), h(), "server", true, false, undefined],
      [408, "", h(), "timeout", true, false, undefined],
      [401, errorBody("authentication_error", "invalid x-api-key"), h(), "auth", false, true, undefined],
      [403, errorBody("permission_error"), h(), "auth", false, true, undefined],
      [400, errorBody("invalid_request_error", CREDIT_MESSAGE), h(), "quota", false, true, undefined],
      [
        400,
        errorBody(
          "invalid_request_error",
          "You have reached your specified API usage limits. You will regain access on 2026-12-01 at 00:00 UTC.",
        ),
        h(),
        "quota",
        false,
        true,
        undefined,
      ],
      [400, errorBody("billing_error", "Billing error"), h(), "quota", false, true, undefined],
      [
        400,
        errorBody("invalid_request_error", "billing_policy: Input should be 'standard' or 'priority'"),
        h(),
        "bad_request",
        false,
        false,
        undefined,
      ],
      [402, errorBody("billing_error"), h(), "quota", false, true, undefined],
      [
        402,
        errorBody("billing_error", "m", { error_code: "linked_organization_spend_limit_reached" }),
        h(),
        "quota",
        false,
        true,
        undefined,
      ],
      [
        400,
        errorBody("invalid_request_error", "max_tokens: Field required"),
        h(),
        "bad_request",
        false,
        false,
        undefined,
      ],
      [404, errorBody("not_found_error", "model: claude-nope"), h(), "not_found", false, false, undefined],
      [
        413,
        errorBody("request_too_large", "Request exceeds the maximum size"),
        h(),
        "bad_request",
        false,
        false,
        undefined,
      ],
      [422, errorBody("invalid_request_error"), h(), "bad_request", false, false, undefined],
    ]
    for (const [status, detail, headers, cls, retryable, pause, after] of cases) {
      const e = classify(status, detail, headers)
      expect(e).toBeInstanceOf(ProviderError)
      expect<unknown[]>([status, e.errorClass, e.retryable, e.pause, e.retryAfterMs, e.status]).toEqual([
        status,
        cls,
        retryable,
        pause,
        after,
        status,
      ])
    }
    expect(classify(400, errorBody("invalid_request_error", "bad"), new Headers()).message).toBe(
      "HTTP 400: bad",
    )
    expect(classify(502, "<html>bad gateway</html>", new Headers()).message).toBe(
      "HTTP 502: <html>bad gateway</html>",
    )
    expect(classify(408, "", new Headers()).message).toBe("HTTP 408: no body")
  })

  test("a timeout, a reset, a refused connection and a garbage body are retryable errors of their own class", async () => {
    await using fake = await startFakeAnthropic({ apiKey: KEY })
    fake.script.set("t", ["hang"]).set("r", ["reset"]).set("g", ["garbage"])
    const c = client(fake, 200)
    const started = performance.now()
    expect(await outcome(c, { prompt: "t" })).toEqual({
      class: "timeout",
      retryable: true,
      pause: false,
      retryAfterMs: undefined,
      status: undefined,
      message: "no answer within 0.2 s",
    })
    expect(performance.now() - started).toBeLessThan(2000)
    expect(await outcome(c, { prompt: "r" })).toMatchObject({
      class: "network",
      retryable: true,
      pause: false,
      message: expect.stringMatching(/^connection failed: /),
    })
    expect(await outcome(c, { prompt: "g" })).toMatchObject({
      class: "bad_response",
      retryable: true,
      pause: false,
      status: 200,
      message: expect.stringMatching(/^HTTP 200 with a body that is not JSON: /),
    })
    expect(fake.seen.get("t")).toBe(1)
    expect(fake.paid.size).toBe(0)
    // a 200 that is not even labelled JSON reaches us as text
    expect(() => reply("<html>oops</html>")).toThrow(
      new ProviderError("bad_response", "the message has a body that is not JSON", { retryable: true }),
    )

    const closed = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response() })
    const port = closed.port
    await closed.stop(true)
    const refused = anthropic.create(
      {},
      { model: MODEL, baseUrl: `http://127.0.0.1:${port}`, apiKey: KEY, timeoutMs: 2000 },
    )
    expect(await outcome(refused, { prompt: "x" })).toMatchObject({
      class: "network",
      retryable: true,
      pause: false,
      message: expect.stringMatching(/^connection failed: /),
    })
  })

  test("a timeout that is not a whole number of milliseconds is used, not refused", async () => {
    await using fake = await startFakeAnthropic({ apiKey: KEY })
    fake.script.set("t", ["hang"])
    // timeout_s = 0.07 becomes 70.00000000000001 ms, which the SDK alone would refuse
    const c = client(fake, 0.07 * 1000)
    expect(await outcome(c, { prompt: "t" })).toMatchObject({ class: "timeout", retryable: true })
    expect(await outcome(c, { prompt: "ok" })).toMatchObject({ reply: { text: "echo: ok" } })
  })

  test("an abort by the caller passes through as the caller's own reason, not as a ProviderError", async () => {
    await using fake = await startFakeAnthropic({ apiKey: KEY })
    fake.script.set("a", ["hang"]).set("b", ["hang"])
    const c = client(fake)
    const reason = new Error("shutting down")
    const first = new AbortController()
    const pending = c.call({ prompt: "a" }, first.signal).catch((e: unknown) => e)
    await Bun.sleep(50)
    first.abort(reason)
    const e = await pending
    expect(e).toBe(reason)

    const second = new AbortController()
    const plain = c.call({ prompt: "b" }, second.signal).catch((e: unknown) => e)
    await Bun.sleep(50)
    second.abort()
    const f = await plain
    expect(f).not.toBeInstanceOf(ProviderError)
    expect((f as Error).name).toBe("AbortError")

    const gone = new AbortController()
    gone.abort(reason)
    expect(await c.call({ prompt: "c" }, gone.signal).catch((e: unknown) => e)).toBe(reason)
    expect(fake.seen.has("c")).toBe(false)
  })
})
