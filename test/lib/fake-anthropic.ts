/** A fake Anthropic Messages server on 127.0.0.1 that speaks the official wire format, with switchable faults. */
import {
  counters,
  faultFor,
  RateLimiter,
  retryAfterSeconds,
  serveFake,
  statsOf,
  stopFake,
  wireFault,
  type FakeOf,
  type FakeOptionsOf,
  type FaultsOf,
  type RateLimit,
  type Stats,
  type Verdict,
} from "./fake-openai.ts"
import { BatchEngine, base62, jsonl, mapIter, pageLimit, Validator } from "./fake-batch.ts"
import type { BatchLine, BatchOptions, FakeBatch, LineError, View } from "./fake-batch.ts"
import { validateSchema } from "./spec.ts"
import {
  inputTokens,
  PromptCacheModel,
  tokens,
  usageOf,
  type CacheCounts,
  type CacheUse,
  type Price,
} from "./fake-anthropic-cache.ts"

export type { RateLimit, Stats } from "./fake-openai.ts"
export type { CacheCounts, Price } from "./fake-anthropic-cache.ts"

/**
 * What one request gets. Besides the faults: "max_tokens" answers with the reply cut at the request's
 * max_tokens and `stop_reason: "max_tokens"`; "empty" answers with no content block at all.
 */
export type FaultKind =
  "ok" | "429" | "529" | "500" | "credit" | "hang" | "reset" | "garbage" | "max_tokens" | "empty"

export type Faults = FaultsOf<FaultKind>

export interface FakeOptions extends FakeOptionsOf<Faults> {
  /** The key `x-api-key` must carry; any key (but one) is taken when undefined. */
  apiKey?: string
  /** Check every request body against CreateMessageParams (default on). */
  validate?: boolean
  /**
   * A rate limit like the API's (off by default; the token buckets of fake-openai.ts's RateLimit): the
   * anthropic-ratelimit-* headers on every response, 429 rate_limit_error with retry-after past it. A request costs
   * one request and, against `tpm`, its input tokens as usage reports them plus its max_tokens.
   */
  rateLimit?: RateLimit
  /** The Message Batches API: how long batches take, their faults and limits (fake-batch.ts). */
  batch?: BatchOptions
  /**
   * What a request for a path the fake does not serve gets, as a server or gateway at a wrong base URL answers
   * (default: the API's own 404 not_found_error, `Not Found: POST /path`).
   */
  unrouted?: (req: Request) => Response | Promise<Response>
  /**
   * USD per million input and output tokens, by model (a dated snapshot falls back to its model's entry), for
   * `billed()`; any model not named costs claude-sonnet-4-5's $3 / $15.
   */
  prices?: Record<string, Price>
}

export interface Fake extends FakeOf<FaultKind> {
  /** The base URL, as ANTHROPIC_BASE_URL takes it: the SDK appends /v1/messages. */
  url: string
  /** input → 200 messages served: what the provider would bill. */
  paid: Map<string, number>
  /** The headers of the last request to /v1/messages. */
  headers: Headers | undefined
  /** Every JSON body received, in order. */
  bodies: Record<string, unknown>[]
  /** When (by `now`) each 200 message went out: `paid`, in time. */
  served: number[]
  /** The Message Batches API: its options (change them at any time), faults, and records of every batch. */
  batch: BatchEngine<null>
  /**
   * USD billed so far for the 200 messages and the succeeded batch lines (batches are brought up to date first), as
   * the API bills them: uncached input at the input price, cache writes at 1.25× it (2× for the 1-hour cache), cache
   * reads at 0.1×, output at the output price; batch lines at half.
   */
  billed(): number
  /**
   * The prompt cache's use so far (batches brought up to date first): requests and batch lines that read a prefix
   * or wrote one, and the tokens. A request's cacheable prefix ends with its last `cache_control` block; one seen
   * within its lifetime (5 minutes or 1 hour on the fake's clock, renewed by every read) is read, else written. A
   * batch's lines are decided against the cache as it stood when the batch began processing.
   */
  cached(): CacheCounts
}

export const CREDIT_MESSAGE =
  "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."

/**
 * The message of a create refused for the Message Batches queue limit (`batch.queueLimit`): Anthropic's docs name the
 * limit ("batch requests in processing queue") but not its error's wording, so this is the fake's own.
 */
export const QUEUE_LIMIT_MESSAGE =
  "This batch would exceed your organization's limit on batch requests in the processing queue. Please wait for your current Message Batches to finish processing, or submit fewer requests."

/** An id as the API makes them: a prefix and 24 base62 characters, here derived from a counter (or another seed). */
const id = (prefix: string, n: number | string) => `${prefix}${base62(`${prefix}${n}`, 24)}`

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

/** The text a reply is served with: cut at max_tokens for the "max_tokens" kind. */
function served(body: Record<string, unknown>, full: string, kind: FaultKind): string {
  const limit = typeof body.max_tokens === "number" ? body.max_tokens : 0
  return kind === "max_tokens" ? full.slice(0, Math.max(1, limit) * 4) : full
}

/** The usage of the Message for a request, with what the prompt cache did for it. */
function usage(body: Record<string, unknown>, full: string, kind: FaultKind, use: CacheUse | undefined) {
  return usageOf(inputTokens(body), kind === "empty" ? 0 : tokens(served(body, full, kind)), use)
}

/**
 * The Message for a request: the reply as a text block (cut at max_tokens for the "max_tokens" kind, none for
 * "empty"), or, when the request forces a tool, a tool_use block whose input is the reply parsed. `n` seeds the ids;
 * `use` is what the prompt cache did for the request.
 */
function message(
  body: Record<string, unknown>,
  full: string,
  kind: FaultKind,
  n: number | string,
  use?: CacheUse,
) {
  const text = served(body, full, kind)
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
  return {
    id: id("msg_", n),
    type: "message",
    role: "assistant",
    model: typeof body.model === "string" ? body.model : "unknown",
    content: tool
      ? [
          {
            type: "tool_use",
            id: id("toolu_", n),
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
    usage: usage(body, full, kind, use),
  }
}

/** The error type the API gives each status, and a message for it. */
const ERRORS: Record<number, [type: string, message: string]> = {
  400: ["invalid_request_error", "Invalid request."],
  401: ["authentication_error", "invalid x-api-key"],
  402: ["billing_error", CREDIT_MESSAGE],
  403: ["permission_error", "Your API key does not have permission to use the specified resource."],
  404: ["not_found_error", "Not found"],
  429: ["rate_limit_error", "Rate limited"],
  504: ["timeout_error", "Request timed out"],
  529: ["overloaded_error", "Overloaded"],
}

/** A line error as the API writes it: the type and message of its status (api_error otherwise), unless set. */
function errorOf(e: LineError): { type: string; message: string } {
  const [type, message] = ERRORS[e.status] ?? ["api_error", "Internal server error"]
  return { type: e.type ?? type, message: e.message ?? message }
}

const CUSTOM_ID = /^[a-zA-Z0-9_-]{1,64}$/

type ErrorFn = (status: number, type: string, message: string, headers?: Record<string, string>) => Response

/**
 * The Message Batches API on the fake's server: `POST /v1/messages/batches`, `GET /v1/messages/batches`,
 * `GET /v1/messages/batches/{id}`, `POST /v1/messages/batches/{id}/cancel`, `GET /v1/messages/batches/{id}/results`.
 * Returns undefined for any other request.
 */
function messageBatchApi(
  fake: Fake,
  options: FakeOptions,
  now: () => number,
  error: ErrorFn,
  denied: (req: Request) => Response | undefined,
  cache: PromptCacheModel,
) {
  const validator = new Validator("CreateMessageParams", "anthropic")
  const iso = (ms: number) => new Date(ms).toISOString()
  const noBatch = (batchId: string) =>
    error(404, "not_found_error", `No Message Batch found with id '${batchId}'.`)

  const batchJson = (b: FakeBatch<null>, view: View) => {
    const ended = view.phase === "ended"
    const lost = (outcome: string) => (view.ending === outcome ? view.unprocessed : 0)
    return {
      id: b.id,
      type: "message_batch",
      processing_status: fake.batch.host.status(view),
      request_counts: {
        processing: ended ? 0 : view.total - view.processed,
        succeeded: view.succeeded,
        errored: view.errored + lost("failed"),
        canceled: lost("cancelled"),
        expired: lost("expired"),
      },
      ended_at: ended ? iso(view.at.ended!) : null,
      created_at: iso(b.createdAt),
      expires_at: iso(b.createdAt + 86_400_000),
      archived_at: null,
      cancel_initiated_at: view.at.cancelling !== undefined ? iso(view.at.cancelling) : null,
      results_url: ended ? `${fake.url}/v1/messages/batches/${b.id}/results` : null,
    }
  }

  const create = async (req: Request): Promise<Response> => {
    const at = now()
    const refuse = (status: number, type: string, message: string, requests = 0) => {
      fake.batch.creates.push({ at, status, requests, error: message })
      return error(status, type, message)
    }
    const size = Number(req.headers.get("content-length") ?? 0)
    if (size > fake.batch.maxBytes) {
      return refuse(413, "request_too_large", "Request exceeds the maximum allowed number of bytes.")
    }
    let body: Record<string, unknown>
    try {
      body = (await req.json()) as Record<string, unknown>
    } catch {
      return refuse(400, "invalid_request_error", "There was an issue with the JSON body of your request.")
    }
    const requests =
      body && typeof body === "object" && Array.isArray(body.requests)
        ? (body.requests as unknown[])
        : undefined
    if (!requests) {
      if (options.validate !== false) {
        fake.invalid.push({ body, errors: validateSchema("CreateMessageBatchParams", body, "anthropic") })
      }
      return refuse(400, "invalid_request_error", "requests: Field required")
    }
    const n = requests.length
    if (n === 0 || n > fake.batch.maxRequests) {
      const message =
        n === 0
          ? "requests: List should have at least 1 item after validation, not 0"
          : `requests: List should have at most ${fake.batch.maxRequests} items after validation, not ${n}`
      fake.invalid.push({ body: { requests: n }, errors: [message] })
      return refuse(400, "invalid_request_error", message, n)
    }
    const check = options.validate !== false
    if (check) {
      // the envelope (its keys) here, its requests one by one below
      const errors = validateSchema(
        "CreateMessageBatchParams",
        { ...body, requests: [] },
        "anthropic",
      ).filter((e) => !e.startsWith("/requests "))
      if (errors.length) fake.invalid.push({ body: { ...body, requests: `(${n} requests)` }, errors })
    }
    const lines: BatchLine[] = []
    const seen = new Set<string>()
    let refusal: string | undefined
    for (let i = 0; i < n; i++) {
      const r = requests[i] as Record<string, unknown> | null
      const wrong: string[] = []
      const customId = r && typeof r === "object" ? r.custom_id : undefined
      const params = r && typeof r === "object" ? (r.params as Record<string, unknown>) : undefined
      if (typeof customId !== "string" || !CUSTOM_ID.test(customId)) {
        wrong.push(`requests.${i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'`)
      } else if (seen.has(customId)) {
        wrong.push(
          `requests.${i}.custom_id: Duplicate custom_id '${customId}'; custom_ids must be unique within a Message Batch.`,
        )
      }
      if (typeof customId === "string") seen.add(customId)
      if (!params || typeof params !== "object" || Array.isArray(params)) {
        wrong.push(`requests.${i}.params: Field required`)
      }
      if (wrong.length) {
        refusal ??= wrong[0]
        fake.invalid.push({ body: r, errors: wrong })
        continue
      }
      const extra = Object.keys(r!).filter((k) => k !== "custom_id" && k !== "params")
      const errors = check ? validator.errors(params!) : []
      if (extra.length || errors.length) {
        fake.invalid.push({
          body: r,
          errors: [
            ...extra.map((k) => `requests.${i}: must NOT have additional property '${k}'`),
            ...errors.map((e) => `requests.${i}.params${e}`),
          ],
        })
      }
      lines.push({ customId: customId as string, input: inputOf(params!), body: params! })
    }
    if (refusal) return refuse(400, "invalid_request_error", refusal, n)
    const limit = fake.batch.queueLimit
    if (limit !== undefined) {
      let queued = 0
      for (const b of fake.batch.pending()) queued += b.lines.length
      if (queued + n > limit) return refuse(429, "rate_limit_error", QUEUE_LIMIT_MESSAGE, n)
    }
    const batch = fake.batch.create({
      id: (seq) => id("msgbatch_", `${fake.port}|${seq}`),
      lines,
      data: null,
    })
    fake.batch.creates.push({ at, status: 200, id: batch.id, requests: n })
    return Response.json(batchJson(batch, fake.batch.fresh(batch)))
  }

  const resultLines = (b: FakeBatch<null>) =>
    mapIter(fake.batch.results(b), ({ line, index, result }) => {
      const custom_id = line.customId
      switch (result.type) {
        case "succeeded":
          return JSON.stringify({
            custom_id,
            result: {
              type: "succeeded",
              message: message(line.body, result.content, "ok", `${b.id}|${index}`, cache.line(b, index)),
            },
          })
        case "errored":
        case "failed":
          return JSON.stringify({
            custom_id,
            result: {
              type: "errored",
              error: {
                type: "error",
                error: errorOf(result.type === "errored" ? result.error : { status: 500 }),
                request_id: null,
              },
            },
          })
        case "cancelled":
          return JSON.stringify({ custom_id, result: { type: "canceled" } })
        case "expired":
          return JSON.stringify({ custom_id, result: { type: "expired" } })
      }
    })

  const list = (url: URL): Response => {
    const limit = pageLimit(url.searchParams.get("limit"), 1000)
    const { data, hasMore } = fake.batch.page(
      limit,
      url.searchParams.get("after_id") ?? undefined,
      url.searchParams.get("before_id") ?? undefined,
    )
    return Response.json({
      data: data.map((b) => batchJson(b, fake.batch.observe(b))),
      has_more: hasMore,
      first_id: data[0]?.id ?? null,
      last_id: data.at(-1)?.id ?? null,
    })
  }

  return (req: Request, url: URL): Response | Promise<Response> | undefined => {
    const path = url.pathname
    if (path !== "/v1/messages/batches" && !path.startsWith("/v1/messages/batches/")) return undefined
    const [batchId, action, ...rest] = path.slice("/v1/messages/batches/".length).split("/")
    if (rest.length) return undefined
    const method = req.method
    const refused = denied(req)
    if (refused) return refused
    if (!batchId) {
      if (method === "POST") return create(req)
      if (method === "GET") return list(url)
      return undefined
    }
    const routed = fake.batch.route(batchId, action, method, {
      json: batchJson,
      missing: noBatch,
      // an ended batch is not cancelled again: the cancel answers it as it is
      ended: (b) => Response.json(batchJson(b, fake.batch.observe(b))),
    })
    if (routed) return routed
    if (action === "results" && method === "GET") {
      const b = fake.batch.find(batchId)
      if (!b) return noBatch(batchId)
      if (fake.batch.observe(b).phase !== "ended") {
        return error(
          400,
          "invalid_request_error",
          `Message Batch ${batchId} has not ended yet; its results are not available.`,
        )
      }
      return fake.batch.serve(resultLines(b), "application/binary")
    }
    return undefined
  }
}

export async function startFakeAnthropic(options: FakeOptions = {}): Promise<Fake> {
  const hung = new Set<() => void>()
  const reply = options.reply ?? ((input: string) => `echo: ${input}`)
  const now = options.now ?? Date.now
  const limiter = options.rateLimit ? new RateLimiter(options.rateLimit, now()) : undefined
  const cache = new PromptCacheModel(options.prices)
  const modelOf = (body: Record<string, unknown>) => (typeof body.model === "string" ? body.model : "")

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
      case "reset":
      case "hang":
        return wireFault(kind, signal, hung)
      case "ok":
      case "max_tokens":
      case "empty":
        return undefined
    }
  }

  /** A 401 without the right x-api-key, a 400 without anthropic-version; undefined if the request may go on. */
  const denied = (req: Request): Response | undefined => {
    const key = req.headers.get("x-api-key")
    if (!key || (options.apiKey !== undefined && key !== options.apiKey)) {
      return error(401, "authentication_error", "invalid x-api-key")
    }
    if (!req.headers.get("anthropic-version")) {
      return error(400, "invalid_request_error", "anthropic-version: header is required")
    }
    return undefined
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
    const refused = denied(req)
    if (refused) return refused
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
    const limit = typeof body.max_tokens === "number" ? body.max_tokens : 0
    if (limiter) {
      // before anything else is counted: a refused request is not `seen` and does not move the script on
      const at = now()
      const verdict = limiter.admit({ input: inputTokens(body), output: Math.max(0, limit) }, at)
      state.headers = rateHeaders(limiter, at)
      if (!verdict.ok) {
        fake.limited++
        return rateLimited(verdict)
      }
    }
    const input = inputOf(body)
    const kind = faultFor(fake, input)
    // the prompt cache as the request arrives: requests that overlap a write (latency) all write
    const arrived = now()
    const use = cache.lookup(body, arrived)
    if (fake.latencyMs > 0 && kind !== "hang") await Bun.sleep(fake.latencyMs)
    const failed = fault(kind, req.signal)
    if (failed) return failed
    fake.paid.set(input, (fake.paid.get(input) ?? 0) + 1)
    fake.served.push(now())
    cache.keep(body, use, arrived)
    const answer = message(body, reply(input, body), kind, fake.requests, use)
    cache.bill(modelOf(body), answer.usage, false)
    return Response.json(answer, { headers: { "request-id": id("req_", fake.requests) } })
  }

  let batchRoutes: ReturnType<typeof messageBatchApi>

  const server = serveFake((req) => {
    const url = new URL(req.url)
    const path = url.pathname
    if (req.method === "POST" && path === "/v1/messages") return limitedCreate(req)
    if (req.method === "GET" && path === "/_stats") return Response.json(fake.stats())
    const batchAnswer = batchRoutes(req, url)
    if (batchAnswer) return batchAnswer
    if (options.unrouted) return options.unrouted(req)
    return error(404, "not_found_error", `Not Found: ${req.method} ${path}`)
  })

  const fake: Fake = {
    url: `http://127.0.0.1:${server.port}`,
    port: server.port ?? 0,
    ...counters<FaultKind>(options),
    headers: undefined,
    bodies: [],
    batch: undefined as unknown as BatchEngine<null>,
    stats: () => statsOf(fake, options.rateLimit),
    billed() {
      fake.batch.settle()
      return cache.billed()
    },
    cached() {
      fake.batch.settle()
      return { ...cache.counts }
    },
    stop: () => stopFake(server, hung),
    async [Symbol.asyncDispose]() {
      await fake.stop()
    },
  }
  fake.batch = new BatchEngine<null>(
    {
      now,
      reply,
      paid: () => fake.paid,
      // validating and finalizing are in_progress too: a Message Batch is processing until it has ended
      status: (view) =>
        view.phase === "ended" ? "ended" : view.phase === "cancelling" ? "canceling" : "in_progress",
      // 100,000 requests and 256 MB a create
      limits: { maxRequests: 100_000, maxBytes: 256 * 1024 * 1024 },
      // a succeeded line is billed as it is paid, with its share of the batch's prompt cache
      served(b, index) {
        const line = b.lines[index]!
        const use = cache.line(b, index)
        cache.bill(modelOf(line.body), usage(line.body, b.content[index] ?? "", "ok", use), true)
      },
    },
    options.batch,
  )
  batchRoutes = messageBatchApi(fake, options, now, error, denied, cache)
  return fake
}
