/**
 * A fake OpenAI server on 127.0.0.1 (`POST /v1/chat/completions` and `POST /v1/responses`) that speaks the official
 * wire format, with switchable faults.
 */
import { validateSchema } from "./spec.ts"

export type FaultKind = "ok" | "429" | "quota" | "500" | "503" | "hang" | "reset" | "garbage"

export interface Faults {
  /** Share of requests that get a fault, decided per (seed, input, how often the input was seen). */
  rate: number
  kinds: FaultKind[]
  seed?: number
  /** The Retry-After header of 429s: seconds or an HTTP-date. */
  retryAfter?: string
}

/**
 * A provider-side rate limit, per server, as token buckets (the model both providers document: capacity that
 * replenishes continuously, not a window that resets at fixed times). A bucket holds `burstSeconds` worth of the
 * per-minute limit (default 60: a whole minute's worth, so R requests pass at once and the R+1th is refused) and
 * refills at limit/60 per second. The OpenAI and Anthropic docs both say the per-minute limits may be enforced over
 * shorter spans ("60,000 requests/minute may be enforced as 1,000 requests/second"): `burstSeconds: 1` models that.
 */
export interface RateLimit {
  /** Requests per minute. */
  rpm: number
  /**
   * Tokens per minute, off when undefined (and then no token headers are sent). A request costs its estimated input
   * tokens — the fake's own `tokens()` of the messages (or input and instructions), as its usage reports them — plus
   * the output it may ask for: `max_tokens` / `max_completion_tokens` / `max_output_tokens`, 0 when it sets none.
   */
  tpm?: number
  /** How many seconds' worth of the per-minute limits a bucket holds (default 60). */
  burstSeconds?: number
}

/** A request's cost against the token limits. */
export interface Cost {
  input: number
  output: number
}

/** A token bucket: `perMinute` per minute, holding at most `capacity`. */
export class Bucket {
  level: number
  constructor(
    readonly perMinute: number,
    readonly capacity: number,
    private at: number,
  ) {
    this.level = capacity
  }
  refill(now: number): void {
    if (now > this.at) {
      this.level = Math.min(this.capacity, this.level + ((now - this.at) * this.perMinute) / 60_000)
      this.at = now
    }
  }
  /** Milliseconds until `need` is available (0 if it is now; Infinity if the bucket can never hold it). */
  waitMs(need: number): number {
    if (need <= this.level) return 0
    if (need > this.capacity) return Infinity
    return ((need - this.level) * 60_000) / this.perMinute
  }
  /** Milliseconds until the bucket is full again: what the providers' reset headers say. */
  fullInMs(): number {
    return ((this.capacity - this.level) * 60_000) / this.perMinute
  }
}

export type Verdict =
  | { ok: true }
  | { ok: false; limit: "requests" | "tokens"; waitMs: number; bucket: Bucket; requested: number }

/**
 * The buckets of a RateLimit: requests, and with `tpm` the tokens (input + output cost, the one that is enforced),
 * plus input-only and output-only buckets of the same size that only report (Anthropic's input-/output-tokens
 * headers; the combined one is never fuller than either, so it is the most restrictive, as the docs say of
 * `anthropic-ratelimit-tokens-*`). A refused request takes nothing.
 */
export class RateLimiter {
  readonly requests: Bucket
  readonly tokens: Bucket | undefined
  readonly input: Bucket | undefined
  readonly output: Bucket | undefined
  constructor(
    readonly limits: RateLimit,
    now: number,
  ) {
    const share = (limits.burstSeconds ?? 60) / 60
    const bucket = (perMinute: number) => new Bucket(perMinute, Math.max(1, perMinute * share), now)
    this.requests = bucket(limits.rpm)
    this.tokens = limits.tpm !== undefined ? bucket(limits.tpm) : undefined
    this.input = limits.tpm !== undefined ? bucket(limits.tpm) : undefined
    this.output = limits.tpm !== undefined ? bucket(limits.tpm) : undefined
  }
  private all(): Bucket[] {
    return [this.requests, this.tokens, this.input, this.output].filter((b) => b !== undefined)
  }
  /** Brings every bucket up to `now`. */
  refill(now: number): void {
    for (const b of this.all()) b.refill(now)
  }
  /** Takes one request and `cost` tokens if they are there, else says which limit refused and for how long. */
  admit(cost: Cost, now: number): Verdict {
    this.refill(now)
    const need = cost.input + cost.output
    const requests = this.requests.waitMs(1)
    const tokens = this.tokens ? this.tokens.waitMs(need) : 0
    if (requests > 0 || tokens > 0) {
      return tokens > requests
        ? { ok: false, limit: "tokens", waitMs: tokens, bucket: this.tokens!, requested: need }
        : { ok: false, limit: "requests", waitMs: requests, bucket: this.requests, requested: 1 }
    }
    this.requests.level -= 1
    if (this.tokens) this.tokens.level -= need
    if (this.input) this.input.level -= cost.input
    if (this.output) this.output.level -= cost.output
    return { ok: true }
  }
}

/** A duration as OpenAI's x-ratelimit-reset-* headers write it (Go's format, to the millisecond): 120ms, 1.5s, 6m0s. */
export function goDuration(ms: number): string {
  const whole = Math.ceil(ms)
  if (whole <= 0) return "0s"
  if (whole < 1000) return `${whole}ms`
  const h = Math.floor(whole / 3_600_000)
  const m = Math.floor((whole % 3_600_000) / 60_000)
  const s = `${(whole % 60_000) / 1000}s`
  return h ? `${h}h${m}m${s}` : m ? `${m}m${s}` : s
}

/** Seconds for a retry-after header: whole seconds, rounded up, at least 1. */
export const retryAfterSeconds = (ms: number) => String(Math.max(1, Math.ceil(ms / 1000)))

/** What `GET /_stats` answers: the counters, for a contender in another process. */
export interface Stats {
  requests: number
  limited: number
  served: number
  firstServedAt: number | null
  lastServedAt: number | null
  rateLimit: RateLimit | null
}

export interface FakeOptions {
  apiKey?: string
  latencyMs?: number
  /** Check every request body against CreateChatCompletionRequest or CreateResponse (default on). */
  validate?: boolean
  faults?: Faults
  reply?: (input: string, body: Record<string, unknown>) => string
  /** A rate limit like the API's (off by default): x-ratelimit-* headers on every response, 429s past it. */
  rateLimit?: RateLimit
  /** The clock of the rate limit and of `served`, in ms (default Date.now). */
  now?: () => number
}

export interface Fake extends AsyncDisposable {
  url: string
  port: number
  latencyMs: number
  faults: Faults | undefined
  /** input → the faults its 1st, 2nd, … requests get ("ok" for none); wins over `faults`. */
  script: Map<string, FaultKind[]>
  /** input → 200 completions (or responses) served: what the provider would bill. */
  paid: Map<string, number>
  /** input → requests received, faulted or not. */
  seen: Map<string, number>
  requests: number
  /** 429s sent because the rate limit refused the request (not scripted or random 429 faults). */
  limited: number
  /** When (by `now`) each 200 completion or response went out: `paid`, in time. */
  served: number[]
  invalid: { body: unknown; errors: string[] }[]
  stats(): Stats
  stop(): Promise<void>
}

const tokens = (text: string) => Math.max(1, Math.ceil(text.length / 4))

function errorBody(
  status: number,
  message: string,
  type: string,
  code: string | null,
  init: ResponseInit = {},
) {
  return Response.json({ error: { message, type, param: null, code } }, { status, ...init })
}

/** The text of the last user message: content may be a string or a list of text parts. */
function userText(messages: unknown): string {
  const list = Array.isArray(messages) ? (messages as { role?: string; content?: unknown }[]) : []
  const user = list.findLast((m) => m?.role === "user")
  if (typeof user?.content === "string") return user.content
  if (Array.isArray(user?.content)) {
    return (user.content as { text?: string }[]).map((p) => p.text ?? "").join("")
  }
  return ""
}

/** One endpoint the fake serves: its request schema, where its input text is, and its success body. */
interface Api {
  schema: string
  input(body: Record<string, unknown>): string
  /** What the request costs against a token limit: its input tokens as usage reports them, plus its max output. */
  cost(body: Record<string, unknown>): Cost
  answer(body: Record<string, unknown>, content: string, n: number): Record<string, unknown>
}

const model = (body: Record<string, unknown>) => (typeof body.model === "string" ? body.model : "unknown")
const count = (value: unknown) => (typeof value === "number" && value > 0 ? value : 0)

const CHAT: Api = {
  schema: "CreateChatCompletionRequest",
  input: (body) => userText(body.messages),
  cost: (body) => ({
    input: tokens(JSON.stringify(body.messages ?? "")),
    output: count(body.max_completion_tokens ?? body.max_tokens),
  }),
  answer(body, content, n) {
    const prompt = tokens(JSON.stringify(body.messages ?? ""))
    const completion = tokens(content)
    return {
      id: `chatcmpl-${n}`,
      object: "chat.completion",
      created: Math.floor(Date.now() / 1000),
      model: model(body),
      choices: [
        {
          index: 0,
          message: { role: "assistant", content, refusal: null },
          logprobs: null,
          finish_reason: "stop",
        },
      ],
      usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion },
    }
  },
}

/** `input` is a string or a list of input items; `instructions` counts toward the input tokens. */
const RESPONSES: Api = {
  schema: "CreateResponse",
  input: (body) => (typeof body.input === "string" ? body.input : userText(body.input)),
  cost: (body) => ({
    input:
      tokens(JSON.stringify(body.input ?? "")) +
      (typeof body.instructions === "string" ? tokens(body.instructions) : 0),
    output: count(body.max_output_tokens),
  }),
  answer(body, content, n) {
    const instructions = typeof body.instructions === "string" ? body.instructions : null
    const input = tokens(JSON.stringify(body.input ?? "")) + (instructions ? tokens(instructions) : 0)
    const output = tokens(content)
    const now = Math.floor(Date.now() / 1000)
    const hex = n.toString(16).padStart(8, "0")
    return {
      id: `resp_${hex}`,
      object: "response",
      created_at: now,
      status: "completed",
      completed_at: now,
      error: null,
      incomplete_details: null,
      instructions,
      max_output_tokens: typeof body.max_output_tokens === "number" ? body.max_output_tokens : null,
      model: model(body),
      output: [
        {
          type: "message",
          id: `msg_${hex}`,
          status: "completed",
          role: "assistant",
          content: [{ type: "output_text", text: content, annotations: [], logprobs: [] }],
        },
      ],
      parallel_tool_calls: true,
      previous_response_id: null,
      reasoning: { effort: null, summary: null },
      store: true,
      temperature: typeof body.temperature === "number" ? body.temperature : 1,
      text: { format: { type: "text" } },
      tool_choice: "auto",
      tools: [],
      top_p: typeof body.top_p === "number" ? body.top_p : 1,
      truncation: "disabled",
      usage: {
        input_tokens: input,
        input_tokens_details: { cached_tokens: 0, cache_write_tokens: 0 },
        output_tokens: output,
        output_tokens_details: { reasoning_tokens: 0 },
        total_tokens: input + output,
      },
      ...(typeof body.user === "string" ? { user: body.user } : {}),
      metadata: body.metadata ?? {},
    }
  },
}

function pick(faults: Faults, input: string, nth: number): FaultKind {
  const h = Number(Bun.hash(`${faults.seed ?? 0}|${input}|${nth}`) % 1_000_000n) / 1_000_000
  if (h >= faults.rate || faults.kinds.length === 0) return "ok"
  const which = Number(Bun.hash(`kind|${faults.seed ?? 0}|${input}|${nth}`) % BigInt(faults.kinds.length))
  return faults.kinds[which] ?? "ok"
}

/** The x-ratelimit-* headers for the limiter's state: limit, what is left, and when the bucket is full again. */
function rateHeaders(limiter: RateLimiter): Record<string, string> {
  const headers: Record<string, string> = {}
  for (const [name, bucket] of [
    ["requests", limiter.requests],
    ["tokens", limiter.tokens],
  ] as const) {
    if (!bucket) continue
    headers[`x-ratelimit-limit-${name}`] = String(bucket.perMinute)
    headers[`x-ratelimit-remaining-${name}`] = String(Math.max(0, Math.floor(bucket.level)))
    headers[`x-ratelimit-reset-${name}`] = goDuration(bucket.fullInMs())
  }
  return headers
}

/** The API's 429 for a refused request: type "requests" or "tokens", code rate_limit_exceeded, and retry-after. */
function rateLimited(verdict: Extract<Verdict, { ok: false }>, modelName: string): Response {
  const { limit, bucket, requested, waitMs } = verdict
  const unit = limit === "requests" ? "requests per min (RPM)" : "tokens per min (TPM)"
  const used = Math.max(0, Math.ceil(bucket.capacity - bucket.level))
  if (waitMs === Infinity) {
    // more tokens than the bucket can ever hold: the API says so and gives no time to wait
    return errorBody(
      429,
      `Request too large for ${modelName} in organization org-fake on ${unit}: Limit ${bucket.perMinute}, Requested ${requested}. The input or output tokens must be reduced in order to run successfully. Visit https://platform.openai.com/account/rate-limits to learn more.`,
      limit,
      "rate_limit_exceeded",
    )
  }
  return errorBody(
    429,
    `Rate limit reached for ${modelName} in organization org-fake on ${unit}: Limit ${bucket.perMinute}, Used ${used}, Requested ${requested}. Please try again in ${goDuration(waitMs)}. Visit https://platform.openai.com/account/rate-limits to learn more.`,
    limit,
    "rate_limit_exceeded",
    { headers: { "retry-after": retryAfterSeconds(waitMs) } },
  )
}

export async function startFake(options: FakeOptions = {}): Promise<Fake> {
  const hung = new Set<() => void>()
  const reply = options.reply ?? ((input: string) => `echo: ${input}`)
  const now = options.now ?? Date.now
  const limiter = options.rateLimit ? new RateLimiter(options.rateLimit, now()) : undefined

  const fault = (kind: FaultKind, signal: AbortSignal): Response | Promise<Response> | undefined => {
    switch (kind) {
      case "429":
        return errorBody(429, "Rate limit reached for requests", "requests", "rate_limit_exceeded", {
          headers: { "retry-after": fake.faults?.retryAfter ?? "0" },
        })
      case "quota":
        return errorBody(
          429,
          "You exceeded your current quota, please check your plan and billing details.",
          "insufficient_quota",
          "insufficient_quota",
        )
      case "500":
        return errorBody(500, "The server had an error while processing your request.", "server_error", null)
      case "503":
        return errorBody(
          503,
          "The engine is currently overloaded, please try again later.",
          "server_error",
          null,
        )
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
        return undefined
    }
  }

  /** Every answer of an endpoint carries the rate-limit headers: as of the request's admission, or of now. */
  const limitedEndpoint = async (req: Request, api: Api): Promise<Response> => {
    const state: { headers?: Record<string, string> } = {}
    const res = await complete(req, api, state)
    if (limiter) {
      if (!state.headers) limiter.refill(now())
      for (const [k, v] of Object.entries(state.headers ?? rateHeaders(limiter))) res.headers.set(k, v)
    }
    return res
  }

  const complete = async (
    req: Request,
    api: Api,
    state: { headers?: Record<string, string> },
  ): Promise<Response> => {
    fake.requests++
    if (options.apiKey !== undefined && req.headers.get("authorization") !== `Bearer ${options.apiKey}`) {
      return errorBody(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
    }
    let body: Record<string, unknown>
    try {
      body = (await req.json()) as Record<string, unknown>
    } catch {
      return errorBody(
        400,
        "We could not parse the JSON body of your request.",
        "invalid_request_error",
        null,
      )
    }
    if (options.validate !== false) {
      const errors = validateSchema(api.schema, body)
      if (errors.length) fake.invalid.push({ body, errors })
    }
    if (limiter) {
      // before anything else is counted: a refused request is not `seen` and does not move the script on
      const verdict = limiter.admit(api.cost(body), now())
      state.headers = rateHeaders(limiter)
      if (!verdict.ok) {
        fake.limited++
        return rateLimited(verdict, model(body))
      }
    }
    const input = api.input(body)
    const nth = fake.seen.get(input) ?? 0
    fake.seen.set(input, nth + 1)
    const scripted = fake.script.get(input)
    const kind = scripted ? (scripted[nth] ?? "ok") : fake.faults ? pick(fake.faults, input, nth) : "ok"
    if (fake.latencyMs > 0 && kind !== "hang") await Bun.sleep(fake.latencyMs)
    const failed = fault(kind, req.signal)
    if (failed) return failed
    const content = reply(input, body)
    fake.paid.set(input, (fake.paid.get(input) ?? 0) + 1)
    fake.served.push(now())
    return Response.json(api.answer(body, content, fake.requests))
  }

  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    idleTimeout: 0,
    fetch(req) {
      const path = new URL(req.url).pathname
      if (req.method === "POST" && (path === "/v1/chat/completions" || path === "/chat/completions")) {
        return limitedEndpoint(req, CHAT)
      }
      if (req.method === "POST" && (path === "/v1/responses" || path === "/responses")) {
        return limitedEndpoint(req, RESPONSES)
      }
      if (req.method === "GET" && path === "/_stats") return Response.json(fake.stats())
      return errorBody(
        404,
        `Unknown request URL: ${req.method} ${path}`,
        "invalid_request_error",
        "unknown_url",
      )
    },
    error() {
      return new Response(null, { status: 500 })
    },
  })

  const fake: Fake = {
    url: `http://127.0.0.1:${server.port}/v1`,
    port: server.port ?? 0,
    latencyMs: options.latencyMs ?? 0,
    faults: options.faults,
    script: new Map(),
    paid: new Map(),
    seen: new Map(),
    requests: 0,
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
