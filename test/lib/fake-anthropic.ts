/** A fake Anthropic Messages server on 127.0.0.1 that speaks the official wire format, with switchable faults. */
import { RateLimiter, retryAfterSeconds, type RateLimit, type Stats, type Verdict } from "./fake-openai.ts"
import { validateSchema } from "./spec.ts"

export type { RateLimit, Stats } from "./fake-openai.ts"

/**
 * What one request gets. Besides the faults: "max_tokens" answers with the reply cut at the request's
 * max_tokens and `stop_reason: "max_tokens"`; "empty" answers with no content block at all.
 */
export type FaultKind =
  "ok" | "429" | "529" | "500" | "credit" | "hang" | "reset" | "garbage" | "max_tokens" | "empty"

export interface Faults {
  /** Share of requests that get a fault, decided per (seed, input, how often the input was seen). */
  rate: number
  kinds: FaultKind[]
  seed?: number
  /** The retry-after header of 429s: seconds or an HTTP-date. */
  retryAfter?: string
}

export interface FakeOptions {
  /** The key `x-api-key` must carry; any key (but one) is taken when undefined. */
  apiKey?: string
  latencyMs?: number
  /** Check every request body against CreateMessageParams (default on). */
  validate?: boolean
  faults?: Faults
  reply?: (input: string, body: Record<string, unknown>) => string
  /**
   * A rate limit like the API's (off by default; the token buckets of fake-openai.ts's RateLimit): the
   * anthropic-ratelimit-* headers on every response, 429 rate_limit_error with retry-after past it. A request costs
   * one request and, against `tpm`, its input tokens as usage reports them plus its max_tokens.
   */
  rateLimit?: RateLimit
  /** The clock of the rate limit and of `served`, in ms (default Date.now). */
  now?: () => number
}

export interface Fake extends AsyncDisposable {
  /** The base URL, as ANTHROPIC_BASE_URL takes it: the SDK appends /v1/messages. */
  url: string
  port: number
  latencyMs: number
  faults: Faults | undefined
  /** input → the kinds its 1st, 2nd, … requests get ("ok" for none); wins over `faults`. */
  script: Map<string, FaultKind[]>
  /** input → 200 messages served: what the provider would bill. */
  paid: Map<string, number>
  /** input → requests received, faulted or not. */
  seen: Map<string, number>
  requests: number
  /** The headers of the last request to /v1/messages. */
  headers: Headers | undefined
  /** Every JSON body received, in order. */
  bodies: Record<string, unknown>[]
  /** 429s sent because the rate limit refused the request (not scripted or random 429 faults). */
  limited: number
  /** When (by `now`) each 200 message went out: `paid`, in time. */
  served: number[]
  invalid: { body: unknown; errors: string[] }[]
  stats(): Stats
  stop(): Promise<void>
}

export const CREDIT_MESSAGE =
  "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."

const tokens = (text: string) => Math.max(1, Math.ceil(text.length / 4))

const ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

/** An id as the API makes them: a prefix and 24 base62 characters, here derived from a counter. */
function id(prefix: string, n: number): string {
  let h = Bun.hash(`${prefix}${n}`)
  let out = ""
  for (let i = 0; i < 24; i++) {
    out += ALPHABET[Number(h % 62n)]
    h = h / 62n || Bun.hash(`${out}${n}`)
  }
  return `${prefix}${out}`
}

/** The text of the last user message: content may be a string or a list of blocks. */
function inputOf(body: Record<string, unknown>): string {
  const messages = Array.isArray(body.messages)
    ? (body.messages as { role?: string; content?: unknown }[])
    : []
  const user = messages.findLast((m) => m.role === "user")
  if (typeof user?.content === "string") return user.content
  if (Array.isArray(user?.content)) {
    return (user.content as { type?: string; text?: string }[])
      .filter((b) => b.type === "text")
      .map((b) => b.text ?? "")
      .join("")
  }
  return ""
}

function pick(faults: Faults, input: string, nth: number): FaultKind {
  const h = Number(Bun.hash(`${faults.seed ?? 0}|${input}|${nth}`) % 1_000_000n) / 1_000_000
  if (h >= faults.rate || faults.kinds.length === 0) return "ok"
  const which = Number(Bun.hash(`kind|${faults.seed ?? 0}|${input}|${nth}`) % BigInt(faults.kinds.length))
  return faults.kinds[which] ?? "ok"
}

/** RFC 3339, to the second (rounded up), as the anthropic-ratelimit-*-reset headers write it. */
const rfc3339 = (ms: number) => new Date(Math.ceil(ms / 1000) * 1000).toISOString().replace(".000Z", "Z")

/** The anthropic-ratelimit-* headers for the limiter's state: limit, what is left, when the bucket is full again. */
function rateHeaders(limiter: RateLimiter, now: number): Record<string, string> {
  const headers: Record<string, string> = {}
  for (const [name, bucket] of [
    ["requests", limiter.requests],
    ["tokens", limiter.tokens],
    ["input-tokens", limiter.input],
    ["output-tokens", limiter.output],
  ] as const) {
    if (!bucket) continue
    headers[`anthropic-ratelimit-${name}-limit`] = String(bucket.perMinute)
    headers[`anthropic-ratelimit-${name}-remaining`] = String(Math.max(0, Math.floor(bucket.level)))
    headers[`anthropic-ratelimit-${name}-reset`] = rfc3339(now + bucket.fullInMs())
  }
  return headers
}

export async function startFakeAnthropic(options: FakeOptions = {}): Promise<Fake> {
  const hung = new Set<() => void>()
  const reply = options.reply ?? ((input: string) => `echo: ${input}`)
  const now = options.now ?? Date.now
  const limiter = options.rateLimit ? new RateLimiter(options.rateLimit, now()) : undefined

  /** The API's 429 for a refused request: rate_limit_error, with retry-after unless waiting cannot help. */
  const rateLimited = (verdict: Extract<Verdict, { ok: false }>) => {
    const { limit, bucket, waitMs } = verdict
    const what = limit === "requests" ? "requests" : "tokens (input and max_tokens)"
    const rate = `${bucket.perMinute.toLocaleString("en-US")} ${what} per minute`
    if (waitMs === Infinity) {
      return error(
        429,
        "rate_limit_error",
        `This request would exceed your organization's rate limit of ${rate} on its own. Please reduce the prompt length or the maximum tokens requested.`,
      )
    }
    return error(
      429,
      "rate_limit_error",
      `This request would exceed your organization's rate limit of ${rate}. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later.`,
      { "retry-after": retryAfterSeconds(waitMs) },
    )
  }

  /** An ErrorResponse, with the request-id header the API sends on every response. */
  const error = (status: number, type: string, message: string, headers: Record<string, string> = {}) => {
    const requestId = id("req_", fake.requests)
    return Response.json(
      { type: "error", error: { type, message }, request_id: requestId },
      { status, headers: { "request-id": requestId, ...headers } },
    )
  }

  const fault = (kind: FaultKind, signal: AbortSignal): Response | Promise<Response> | undefined => {
    switch (kind) {
      case "429":
        return error(
          429,
          "rate_limit_error",
          "This request would exceed your organization's rate limit of 50 requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits.",
          // a fault, not the rate limit (see `rateLimit`): no anthropic-ratelimit-* figures that the fake does not keep
          { "retry-after": fake.faults?.retryAfter ?? "0" },
        )
      case "529":
        return error(529, "overloaded_error", "Overloaded")
      case "500":
        return error(500, "api_error", "Internal server error")
      case "credit":
        return error(400, "invalid_request_error", CREDIT_MESSAGE)
      case "garbage":
        return new Response("<html>oops</html>", {
          status: 200,
          headers: { "content-type": "application/json" },
        })
      case "reset":
        // headers go out, then the connection dies mid-body: the client sees a network error
        return new Response(
          new ReadableStream({
            start(controller) {
              controller.enqueue(new TextEncoder().encode('{"id":'))
              controller.error()
            },
          }),
          { status: 200, headers: { "content-type": "application/json" } },
        )
      case "hang":
        return new Promise<Response>((resolve) => {
          const release = () => {
            hung.delete(release)
            resolve(new Response(null, { status: 499 }))
          }
          hung.add(release)
          signal.addEventListener("abort", release, { once: true })
        })
      case "ok":
      case "max_tokens":
      case "empty":
        return undefined
    }
  }

  /** Every answer of /v1/messages carries the rate-limit headers: as of the request's admission, or of now. */
  const limitedCreate = async (req: Request): Promise<Response> => {
    const state: { headers?: Record<string, string> } = {}
    const res = await create(req, state)
    if (limiter) {
      if (!state.headers) limiter.refill(now())
      for (const [k, v] of Object.entries(state.headers ?? rateHeaders(limiter, now()))) res.headers.set(k, v)
    }
    return res
  }

  const create = async (req: Request, state: { headers?: Record<string, string> }): Promise<Response> => {
    fake.requests++
    fake.headers = req.headers
    const key = req.headers.get("x-api-key")
    if (!key || (options.apiKey !== undefined && key !== options.apiKey)) {
      return error(401, "authentication_error", "invalid x-api-key")
    }
    if (!req.headers.get("anthropic-version")) {
      return error(400, "invalid_request_error", "anthropic-version: header is required")
    }
    let body: Record<string, unknown>
    try {
      body = (await req.json()) as Record<string, unknown>
    } catch {
      return error(400, "invalid_request_error", "There was an issue with the JSON body of your request.")
    }
    fake.bodies.push(body)
    if (options.validate !== false) {
      const errors = validateSchema("CreateMessageParams", body, "anthropic")
      if (errors.length) fake.invalid.push({ body, errors })
    }
    const inputTokens = tokens(JSON.stringify([body.system ?? "", body.messages ?? ""]))
    const limit = typeof body.max_tokens === "number" ? body.max_tokens : 0
    if (limiter) {
      // before anything else is counted: a refused request is not `seen` and does not move the script on
      const at = now()
      const verdict = limiter.admit({ input: inputTokens, output: Math.max(0, limit) }, at)
      state.headers = rateHeaders(limiter, at)
      if (!verdict.ok) {
        fake.limited++
        return rateLimited(verdict)
      }
    }
    const input = inputOf(body)
    const nth = fake.seen.get(input) ?? 0
    fake.seen.set(input, nth + 1)
    const scripted = fake.script.get(input)
    const kind = scripted ? (scripted[nth] ?? "ok") : fake.faults ? pick(fake.faults, input, nth) : "ok"
    if (fake.latencyMs > 0 && kind !== "hang") await Bun.sleep(fake.latencyMs)
    const failed = fault(kind, req.signal)
    if (failed) return failed
    fake.paid.set(input, (fake.paid.get(input) ?? 0) + 1)
    fake.served.push(now())
    const full = reply(input, body)
    const text = kind === "max_tokens" ? full.slice(0, Math.max(1, limit) * 4) : full
    const requestId = id("req_", fake.requests)
    // a forced tool call (how spool asks for structured output): the reply, parsed, is the tool's input
    const forced = body.tool_choice as { type?: string; name?: string } | undefined
    const tool = forced?.type === "tool" && kind !== "empty" && kind !== "max_tokens"
    let toolInput: unknown
    if (tool) {
      try {
        toolInput = JSON.parse(full)
      } catch {
        toolInput = { text: full }
      }
    }
    return Response.json(
      {
        id: id("msg_", fake.requests),
        type: "message",
        role: "assistant",
        model: typeof body.model === "string" ? body.model : "unknown",
        content: tool
          ? [
              {
                type: "tool_use",
                id: id("toolu_", fake.requests),
                name: forced!.name,
                input: toolInput,
                caller: { type: "direct" },
              },
            ]
          : kind === "empty"
            ? []
            : [{ type: "text", text, citations: null }],
        stop_reason: tool ? "tool_use" : kind === "max_tokens" ? "max_tokens" : "end_turn",
        stop_sequence: null,
        stop_details: null,
        container: null,
        usage: {
          input_tokens: inputTokens,
          output_tokens: kind === "empty" ? 0 : tokens(text),
          cache_creation_input_tokens: 0,
          cache_read_input_tokens: 0,
          cache_creation: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 0 },
          server_tool_use: null,
          service_tier: "standard",
          inference_geo: null,
        },
      },
      { headers: { "request-id": requestId } },
    )
  }

  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    idleTimeout: 0,
    fetch(req) {
      const path = new URL(req.url).pathname
      if (req.method === "POST" && path === "/v1/messages") return limitedCreate(req)
      if (req.method === "GET" && path === "/_stats") return Response.json(fake.stats())
      return error(404, "not_found_error", `Not Found: ${req.method} ${path}`)
    },
    error() {
      return new Response(null, { status: 500 })
    },
  })

  const fake: Fake = {
    url: `http://127.0.0.1:${server.port}`,
    port: server.port ?? 0,
    latencyMs: options.latencyMs ?? 0,
    faults: options.faults,
    script: new Map(),
    paid: new Map(),
    seen: new Map(),
    requests: 0,
    headers: undefined,
    bodies: [],
    limited: 0,
    served: [],
    invalid: [],
    stats: () => ({
      requests: fake.requests,
      limited: fake.limited,
      served: fake.served.length,
      firstServedAt: fake.served[0] ?? null,
      lastServedAt: fake.served.at(-1) ?? null,
      rateLimit: options.rateLimit ?? null,
    }),
    async stop() {
      for (const release of [...hung]) release()
      await server.stop(true)
    },
    async [Symbol.asyncDispose]() {
      await fake.stop()
    },
  }
  return fake
}
