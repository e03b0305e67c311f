/**
 * A fake OpenAI server on 127.0.0.1 (`POST /v1/chat/completions`, `POST /v1/responses` and `POST /v1/embeddings`) that speaks the official
 * wire format, with switchable faults. Chat completions, realtime and batch, read and write its automatic prompt cache,
 * and every answer is billed in USD (fake-openai-cache.ts); `service_tier: "flex"` is served, at half the price.
 */
import { PromptCache, type CacheOptions } from "./fake-openai-cache.ts"
import { BatchEngine, base62, jsonl, mapIter, pageLimit, unix, Validator } from "./fake-batch.ts"
import type { BatchLine, BatchOptions, FakeBatch, LineError, View } from "./fake-batch.ts"
import { validateSchema } from "./spec.ts"

/** "flex_unavailable": the 429 a flex call gets when the flex tier has no capacity ("Resource Unavailable"). */
export type FaultKind =
  "ok" | "429" | "quota" | "500" | "503" | "hang" | "reset" | "garbage" | "flex_unavailable"

/** Random faults, of the kinds `K` a fake has (this one's FaultKind, or fake-anthropic.ts's). */
export interface FaultsOf<K extends string> {
  /** Share of requests that get a fault, decided per (seed, input, how often the input was seen). */
  rate: number
  kinds: K[]
  seed?: number
  /** The retry-after header of 429s: seconds or an HTTP-date. */
  retryAfter?: string
}

export type Faults = FaultsOf<FaultKind>

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

/** The options both fakes (this one and fake-anthropic.ts) take, with their own faults `F`. */
export interface FakeOptionsOf<F> {
  latencyMs?: number
  faults?: F
  reply?: (input: string, body: Record<string, unknown>) => string
  /** The clock of the rate limit, of `served` and of the batches, in ms (default Date.now). */
  now?: () => number
}

export interface FakeOptions extends FakeOptionsOf<Faults> {
  apiKey?: string
  /** Check every request body against CreateChatCompletionRequest or CreateResponse (default on). */
  validate?: boolean
  /** A rate limit like the API's (off by default): x-ratelimit-* headers on every response, 429s past it. */
  rateLimit?: RateLimit
  /** The Batch API (files, batches): how long batches take, their faults and limits (fake-batch.ts). */
  batch?: BatchOptions
  /** A chat completion's finish_reason for an input (default "stop"): "length" for an answer cut at max_tokens. */
  finish?: (input: string) => "stop" | "length"
  /**
   * What a request for a path the fake does not serve gets, as a server or gateway at a wrong base URL answers
   * (default: the API's own 404, `Unknown request URL: POST /path`).
   */
  unrouted?: (req: Request) => Response | Promise<Response>
  /** Serve as one of openai-compatible's profiles does (default "openai": OpenAI's own API). See `SERVED`. */
  profile?: FakeProfile
  /** false: keep no batch metadata, as a service that takes none does (batches show `metadata: null`). */
  metadata?: false
  /** The prompt cache's lifetime and the bill's prices (fake-openai-cache.ts). */
  cache?: CacheOptions
}

/** The services the fake can serve as: OpenAI's API, or one of openai-compatible's batch profiles. */
export type FakeProfile = "openai" | "azure" | "groq" | "together"

/**
 * What each profile serves differently, written from the pages listed at the top of
 * src/plugins/providers/openai-compatible/profiles.ts (Azure OpenAI global batch, Groq Batch API, Together batch
 * inference). `root`: the path the API's own paths sit under (Azure's `/openai/files`, Groq's `/openai/v1/files`);
 * `prefix`: what comes before `/chat/completions` in a line's url and a create's endpoint; `purpose`: the file purpose
 * taken; `windows`: the completion windows taken; `upper`: statuses in capitals (Together); `job`: the create answered
 * with the batch under `job` (Together); `azure`: the `api-key` header, an `api-version` on every request (refused
 * without one, as Azure refuses it), deployment paths for realtime calls, and batches that never expire.
 */
const SERVED: Record<
  FakeProfile,
  {
    root: string
    prefix: string
    purpose: string
    windows: string[]
    upper: boolean
    job: boolean
    azure: boolean
  }
> = {
  openai: {
    root: "",
    prefix: "/v1",
    purpose: "batch",
    windows: ["24h"],
    upper: false,
    job: false,
    azure: false,
  },
  azure: {
    root: "/openai",
    prefix: "",
    purpose: "batch",
    windows: ["24h"],
    upper: false,
    job: false,
    azure: true,
  },
  groq: {
    root: "/openai",
    prefix: "/v1",
    purpose: "batch",
    windows: ["24h", "48h", "72h", "7d"],
    upper: false,
    job: false,
    azure: false,
  },
  together: {
    root: "",
    prefix: "/v1",
    purpose: "batch-api",
    windows: ["24h"],
    upper: true,
    job: true,
    azure: false,
  },
}

/** Azure's answer to a wrong or missing `api-key`. */
const AZURE_DENIED =
  "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."

/** One error of a batch that failed, as `errors.data` lists them. */
export interface BatchError {
  code: string
  message: string
  param: string | null
  line: number | null
}

/** What the OpenAI fake keeps of each batch (`fake.batch.batches[i].data`). */
export interface OpenAIBatch {
  endpoint: string
  /** How its lines are answered: the realtime endpoint's code. */
  api: Api
  inputFileId: string
  /** The model of its lines. */
  model: string | undefined
  /** Why it failed validation (refused batches), or why it failed (a `failed` fault). */
  errors: BatchError[]
  /** Input tokens of its lines, once counted (for the enqueued-token limit). */
  tokens: number | undefined
  outputFileId?: string
  errorFileId?: string
  /** Its output and error files were made (it has ended). */
  finished: boolean
}

/** A file of the Files API: uploaded (its bytes) or made by a batch (its lines, built whenever it is read). */
export interface StoredFile {
  id: string
  filename: string
  purpose: "batch" | "batch_output"
  createdAt: number
  bytes?: Uint8Array
  lines?: () => Iterator<string>
}

/** What both fakes (this one and fake-anthropic.ts) have, with their own kinds of fault `K`. */
export interface FakeOf<K extends string> extends AsyncDisposable {
  port: number
  latencyMs: number
  faults: FaultsOf<K> | undefined
  /** input → the kinds of fault its 1st, 2nd, … requests get ("ok" for none); wins over `faults`. */
  script: Map<string, K[]>
  /** input → requests received, faulted or not. */
  seen: Map<string, number>
  requests: number
  /** 429s sent because the rate limit refused the request (not scripted or random 429 faults). */
  limited: number
  invalid: { body: unknown; errors: string[] }[]
  stats(): Stats
  stop(): Promise<void>
}

export interface Fake extends FakeOf<FaultKind> {
  url: string
  /** input → 200 completions (or responses) served: what the provider would bill. */
  paid: Map<string, number>
  /** When (by `now`) each 200 completion or response went out: `paid`, in time. */
  served: number[]
  /** The Batch API: its options (change them at any time), faults, and records of every batch. */
  batch: BatchEngine<OpenAIBatch>
  /** The Files API's files, by id. */
  files: Map<string, StoredFile>
  /** The prompt cache and the bill: `billed` USD, `hits`, `cachedTokens`, and every chat request's `keys`. */
  cache: PromptCache
}

/** What a fake that has answered nothing yet counts, with the latency and faults `options` give. */
export function counters<K extends string>(options: FakeOptionsOf<FaultsOf<K>>) {
  return {
    latencyMs: options.latencyMs ?? 0,
    faults: options.faults,
    script: new Map<string, K[]>(),
    paid: new Map<string, number>(),
    seen: new Map<string, number>(),
    requests: 0,
    limited: 0,
    served: [] as number[],
    invalid: [] as { body: unknown; errors: string[] }[],
  }
}

/** What `GET /_stats` answers for a fake with the rate limit `rateLimit`. */
export function statsOf(
  fake: { requests: number; limited: number; served: number[] },
  rateLimit: RateLimit | undefined,
): Stats {
  return {
    requests: fake.requests,
    limited: fake.limited,
    served: fake.served.length,
    firstServedAt: fake.served[0] ?? null,
    lastServedAt: fake.served.at(-1) ?? null,
    rateLimit: rateLimit ?? null,
  }
}

/** Stops a fake's server, once the requests it holds hanging (`hung`, their releases) are let go. */
export async function stopFake(server: { stop(force?: boolean): Promise<void> }, hung: Set<() => void>) {
  for (const release of [...hung]) release()
  await server.stop(true)
}

/**
 * The server of a fake: on 127.0.0.1 at a free port, with no idle timeout, bodies of up to 1 GB (an OpenAI batch
 * input file may have 200 MB, and the Files API takes 512 MB; a Message Batches create may carry 256 MB), and a bare
 * 500 for a route that throws.
 */
export function serveFake(fetch: (req: Request) => Response | Promise<Response>) {
  return Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    idleTimeout: 0,
    maxRequestBodySize: 1024 * 1024 * 1024,
    fetch,
    error() {
      return new Response(null, { status: 500 })
    },
  })
}

/**
 * The faults of the connection rather than of the API, alike in both fakes: "garbage", a 200 whose body is not JSON;
 * "reset", headers, then the connection dies mid-body; "hang", no answer until the client gives up or the fake stops
 * (`hung` holds the release of each). Undefined for any other kind.
 */
export function wireFault(
  kind: string,
  signal: AbortSignal,
  hung: Set<() => void>,
): Response | Promise<Response> | undefined {
  switch (kind) {
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
  }
  return undefined
}

/**
 * The kind of fault a request for `input` gets: its script's next entry, else a draw from the fake's random faults,
 * else "ok". The request is counted as seen.
 */
export function faultFor<K extends string>(fake: FakeOf<K>, input: string): K | "ok" {
  const nth = fake.seen.get(input) ?? 0
  fake.seen.set(input, nth + 1)
  const scripted = fake.script.get(input)
  return scripted ? (scripted[nth] ?? "ok") : fake.faults ? pick(fake.faults, input, nth) : "ok"
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

/** A flex call's answer says it was served by the flex tier. */
const tierOf = (body: Record<string, unknown>) =>
  body.service_tier === "flex" ? { service_tier: "flex" } : {}

/** The endpoint of each batch line's body, and the cached tokens of each chat line once it was processed. */
const lineApis = new WeakMap<object, Api>()
const lineCached = new WeakMap<object, number>()

/** One endpoint the fake serves: its request schema, where its input text is, and its success body. */
export interface Api {
  schema: string
  input(body: Record<string, unknown>): string
  /** Every input a request holds, each paid for (an embeddings request's many); `input` alone when unset. */
  inputs?(body: Record<string, unknown>): string[]
  /** What the request costs against a token limit: its input tokens as usage reports them, plus its max output. */
  cost(body: Record<string, unknown>): Cost
  /**
   * `at`: the answer's creation time in unix seconds (now unless given: a batch's lines keep theirs across downloads);
   * `cached`: its prompt tokens read from the prompt cache (chat completions).
   */
  answer(
    body: Record<string, unknown>,
    content: string,
    n: number,
    at?: number,
    cached?: number,
  ): Record<string, unknown>
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
  answer(body, content, n, at = Math.floor(Date.now() / 1000), cached = 0) {
    const prompt = tokens(JSON.stringify(body.messages ?? ""))
    const completion = tokens(content)
    return {
      id: `chatcmpl-${n}`,
      object: "chat.completion",
      created: at,
      model: model(body),
      choices: [
        {
          index: 0,
          message: { role: "assistant", content, refusal: null },
          logprobs: null,
          finish_reason: "stop",
        },
      ],
      usage: {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        prompt_tokens_details: { cached_tokens: cached },
      },
      ...tierOf(body),
    }
  },
}

/** The vectors' length for a model without `dimensions`: OpenAI's for its models, else a short one. */
export function defaultDimensions(model: string): number {
  if (model === "text-embedding-3-large") return 3072
  if (model === "text-embedding-3-small" || model === "text-embedding-ada-002") return 1536
  return 16
}

/**
 * The fake's vector for a text: deterministic, so that a test checks each stored vector against it. Each dimension
 * is a sine of the text's hash and the dimension's number, in [-1, 1].
 */
export function fakeVector(text: string, dimensions: number): Float32Array {
  const seed = Number(Bun.hash(text) % 100_000n)
  const out = new Float32Array(dimensions)
  for (let d = 0; d < dimensions; d++) out[d] = Math.sin(seed + d * 0.7)
  return out
}

/** The texts of an embeddings request: its `input`, a string or a list of them. */
export function embeddingInputs(body: Record<string, unknown>): string[] {
  if (typeof body.input === "string") return [body.input]
  return Array.isArray(body.input)
    ? body.input.map((x) => (typeof x === "string" ? x : JSON.stringify(x)))
    : []
}

/**
 * `POST /v1/embeddings`: a vector per input (as `encoding_format` asks: floats, or base64 of float32 bytes), usage
 * counted as the inputs' tokens. Faults go by its first input, as a chat request's by its prompt.
 */
export const EMBEDDINGS: Api = {
  schema: "CreateEmbeddingRequest",
  input: (body) => embeddingInputs(body)[0] ?? "",
  inputs: embeddingInputs,
  cost: (body) => ({ input: embeddingInputs(body).reduce((sum, text) => sum + tokens(text), 0), output: 0 }),
  answer(body) {
    const texts = embeddingInputs(body)
    const dims = typeof body.dimensions === "number" ? body.dimensions : defaultDimensions(model(body))
    const base64 = body.encoding_format === "base64"
    const used = texts.reduce((sum, text) => sum + tokens(text), 0)
    return {
      object: "list",
      model: model(body),
      data: texts.map((text, index) => {
        const v = fakeVector(text, dims)
        const embedding = base64 ? Buffer.from(v.buffer).toString("base64") : Array.from(v)
        return { object: "embedding", index, embedding }
      }),
      usage: { prompt_tokens: used, total_tokens: used },
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
  answer(body, content, n, at = Math.floor(Date.now() / 1000)) {
    const instructions = typeof body.instructions === "string" ? body.instructions : null
    const input = tokens(JSON.stringify(body.input ?? "")) + (instructions ? tokens(instructions) : 0)
    const output = tokens(content)
    const now = at
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
      ...tierOf(body),
      metadata: body.metadata ?? {},
    }
  },
}

function pick<K extends string>(faults: FaultsOf<K>, input: string, nth: number): K | "ok" {
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

/**
 * A 401 unless the request carries `Bearer <apiKey>` (any key passes when apiKey is undefined); under the azure
 * profile, `api-key: <apiKey>` instead, and a 401 in Azure's words.
 */
function unauthorized(req: Request, apiKey: string | undefined, profile?: FakeProfile): Response | undefined {
  if (profile === "azure") {
    if (apiKey === undefined || req.headers.get("api-key") === apiKey) return undefined
    return Response.json({ error: { code: "401", message: AZURE_DENIED } }, { status: 401 })
  }
  if (apiKey !== undefined && req.headers.get("authorization") !== `Bearer ${apiKey}`) {
    return errorBody(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
  }
  return undefined
}

/**
 * The parts of a multipart/form-data body, by name: their bytes, and the filename of file parts. Read by hand, as
 * Bun's own parser is several times slower on large files; undefined when the body is not multipart.
 */
async function multipart(
  req: Request,
): Promise<Map<string, { filename?: string; data: Uint8Array }> | undefined> {
  const match = /boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(req.headers.get("content-type") ?? "")
  if (!match) return undefined
  // read as the chunks come: req.arrayBuffer() is several times slower on large bodies sent in many chunks
  const chunks: Uint8Array[] = []
  if (req.body) for await (const chunk of req.body) chunks.push(chunk)
  const body = Buffer.concat(chunks)
  const delimiter = Buffer.from(`\r\n--${match[1] ?? match[2]}`)
  const parts = new Map<string, { filename?: string; data: Uint8Array }>()
  // the first delimiter may come without its CRLF, at the very start
  let at = body.indexOf(delimiter.subarray(2))
  if (at < 0) return undefined
  at += delimiter.length - 2
  for (;;) {
    if (body[at] === 45 && body[at + 1] === 45) return parts // "--": the closing delimiter
    const head = body.indexOf("\r\n\r\n", at)
    if (head < 0) return undefined
    const next = body.indexOf(delimiter, head + 4)
    if (next < 0) return undefined
    const headers = body.toString("utf8", at, head)
    const name = /(?:^|[;\s])name="([^"]*)"/i.exec(headers)?.[1]
    const filename = /filename="([^"]*)"/i.exec(headers)?.[1]
    if (name !== undefined) {
      parts.set(name, {
        ...(filename !== undefined ? { filename } : {}),
        data: body.subarray(head + 4, next),
      })
    }
    at = next + delimiter.length
  }
}

/** A line of a JSONL file that is not JSON. */
class Unparsable {
  constructor(readonly raw: string) {}
}

/**
 * The values of a JSONL file's non-blank lines (an Unparsable for a line that is not JSON), and their line numbers
 * when they are not simply 1, 2, 3… (blank lines). Parsed in one native pass when the file is clean, as a spool
 * file is; line by line otherwise.
 */
function jsonLines(bytes: Uint8Array): { values: unknown[]; numbers: number[] | undefined } {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length)
  let lines = 0
  let blank = false
  let start = 0
  for (let end = buf.indexOf(10); ; end = buf.indexOf(10, start)) {
    const stop = end < 0 ? buf.length : end
    const empty = stop === start || (stop === start + 1 && buf[start] === 13)
    if (empty) blank ||= end >= 0
    else lines++
    if (end < 0) break
    start = end + 1
  }
  if (!blank) {
    const parsed = Bun.JSONL.parseChunk(bytes)
    if (parsed.done && !parsed.error && parsed.values.length === lines)
      return { values: parsed.values, numbers: undefined }
  }
  const values: unknown[] = []
  const numbers: number[] = []
  const raws = new TextDecoder().decode(bytes).split("\n")
  for (let k = 1; k <= raws.length; k++) {
    const raw = raws[k - 1]!
    if (raw === "" || raw === "\r") continue
    try {
      values.push(JSON.parse(raw))
    } catch {
      values.push(new Unparsable(raw))
    }
    numbers.push(k)
  }
  return { values, numbers }
}

/** An error of the official shape that names its parameter. */
const paramError = (status: number, message: string, param: string | null) =>
  Response.json({ error: { message, type: "invalid_request_error", param, code: null } }, { status })

/** The endpoints a batch may run, and how their lines are answered. */
const ENDPOINTS: Record<string, Api> = {
  "/v1/chat/completions": CHAT,
  "/v1/responses": RESPONSES,
  "/v1/embeddings": EMBEDDINGS,
}

/**
 * An embedding line's answer checked against CreateEmbeddingResponse. The spec types `embedding` as a list of floats
 * only, though the API answers `encoding_format: "base64"` with base64 text: such a vector is checked decoded.
 */
export function embeddingAnswerErrors(answer: Record<string, unknown>): string[] {
  const data = Array.isArray(answer.data) ? (answer.data as Record<string, unknown>[]) : []
  const decoded = data.map((d) =>
    typeof d?.embedding === "string"
      ? {
          ...d,
          embedding: Array.from(new Float32Array(new Uint8Array(Buffer.from(d.embedding, "base64")).buffer)),
        }
      : d,
  )
  return validateSchema("CreateEmbeddingResponse", { ...answer, data: decoded })
}

/** 32 hex digits derived from `seed`, as OpenAI's ids end. */
const hex = (seed: string) =>
  Bun.hash(seed).toString(16).padStart(16, "0") + Bun.hash(`${seed}|`).toString(16).padStart(16, "0")

/** A file id as the Files API makes them: file- and 22 base62 characters. */
const fileId = (seed: string) => `file-${base62(seed, 22)}`

/** The error body of a line that errored, with the type and message the API gives its status unless set. */
function lineErrorBody(e: LineError) {
  const type =
    e.type ?? (e.status === 429 ? "requests" : e.status >= 500 ? "server_error" : "invalid_request_error")
  const message =
    e.message ??
    (e.status === 429
      ? "Rate limit reached for requests"
      : e.status >= 500
        ? "The server had an error while processing your request."
        : "Invalid request.")
  const code = e.code !== undefined ? e.code : e.status === 429 ? "rate_limit_exceeded" : null
  return { error: { message, type, param: null, code } }
}

/** What a line that was never run says in the error file. */
const UNRUN = {
  expired: {
    code: "batch_expired",
    message: "This request could not be executed before the completion window expired.",
  },
  cancelled: {
    code: "batch_cancelled",
    message: "This request was not executed because the batch was cancelled.",
  },
} as const

/** The error of a batch that failed part-way (a `failed` fault). */
const FAILED: BatchError = {
  code: "server_error",
  message: "The batch failed while processing. The requests it processed are in its output and error files.",
  param: null,
  line: null,
}

/** The message of a batch refused for the enqueued-token limit, as the API writes it. */
export const enqueuedLimitMessage = (model: string, limit: number) =>
  `Enqueued token limit reached for ${model} in organization org-fake. Limit: ${limit.toLocaleString("en-US")} enqueued tokens. Please try submitting an input file with fewer tokens, or wait for current batches to complete.`

/**
 * The Files and Batch APIs on the fake's server: `POST /v1/files`, `GET /v1/files/{id}`, `GET /v1/files/{id}/content`,
 * `DELETE /v1/files/{id}`, `POST /v1/batches`, `GET /v1/batches`, `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`
 * (with or without /v1). Returns undefined for any other request.
 */
function batchApi(fake: Fake, options: FakeOptions, now: () => number) {
  const served = SERVED[options.profile ?? "openai"]
  const validators = new Map<Api, Validator>()
  const validator = (api: Api) => {
    let v = validators.get(api)
    if (!v) validators.set(api, (v = new Validator(api.schema)))
    return v
  }
  const sizes = new Map<string, number>()
  let files = 0

  const addFile = (
    filename: string,
    purpose: StoredFile["purpose"],
    content: Pick<StoredFile, "bytes" | "lines">,
  ) => {
    const id = fileId(`${fake.port}|${files++}|${filename}`)
    fake.files.set(id, { id, filename, purpose, createdAt: now(), ...content })
    return id
  }

  const fileJson = (f: StoredFile) => {
    let bytes = f.bytes?.length ?? sizes.get(f.id)
    if (bytes === undefined) {
      bytes = 0
      for (const line of { [Symbol.iterator]: f.lines! }) bytes += Buffer.byteLength(line) + 1
      sizes.set(f.id, bytes)
    }
    const created = unix(f.createdAt)
    return {
      id: f.id,
      object: "file",
      bytes,
      created_at: created,
      expires_at: created + 30 * 86_400,
      filename: f.filename,
      purpose: f.purpose,
      status: "processed",
    }
  }

  const noFile = (id: string) => paramError(404, `No such File object: ${id}`, "id")
  const noBatch = (id: string) => paramError(404, `No batch found with id '${id}'.`, "batch_id")

  const upload = async (req: Request): Promise<Response> => {
    const form = await multipart(req)
    if (!form) return paramError(400, "The body must be multipart/form-data with a file and a purpose.", null)
    const file = form.get("file")
    const purpose = form.get("purpose")
    if (!file || file.filename === undefined)
      return paramError(400, "Missing required parameter: 'file'.", "file")
    const purposeText = purpose ? new TextDecoder().decode(purpose.data) : undefined
    if (purposeText !== served.purpose) {
      return paramError(
        400,
        `Invalid value for 'purpose': '${purposeText}'. This server takes '${served.purpose}' files only.`,
        "purpose",
      )
    }
    if (!file.filename.endsWith(".jsonl")) {
      return paramError(400, "Invalid file format for Batch API. Must be .jsonl", null)
    }
    const id = addFile(file.filename, "batch", { bytes: file.data })
    return Response.json(fileJson(fake.files.get(id)!))
  }

  const content = (id: string): Response => {
    const f = fake.files.get(id)
    if (!f) return noFile(id)
    if (f.bytes) return new Response(f.bytes, { headers: { "content-type": "application/octet-stream" } })
    return fake.batch.serve(f.lines!(), "application/octet-stream")
  }

  /** Reads an input file: its lines, what makes the batch fail validation, and its model. */
  const readFile = (file: StoredFile, endpoint: string, api: Api) => {
    const { numbers, values } = jsonLines(file.bytes!)
    const count = values.length
    const errors: BatchError[] = []
    const fail = (
      code: string,
      message: string,
      param: string | null,
      line: number | null,
      body: unknown,
    ) => {
      if (errors.length < 100) errors.push({ code, message, param, line })
      if (line !== null) fake.invalid.push({ body, errors: [`line ${line}: ${code}: ${message}`] })
    }
    const { maxBytes, maxRequests } = fake.batch
    if (count === 0) fail("empty_file", "The batch input file is empty.", null, null, null)
    if (file.bytes!.length > maxBytes) {
      fail(
        "file_too_large",
        `The batch input file is larger than the ${maxBytes} byte maximum. Please try again with a smaller file.`,
        null,
        null,
        null,
      )
    }
    if (count > maxRequests) {
      fail(
        "too_many_tasks",
        `The batch input file has ${count.toLocaleString("en-US")} requests; a batch may have at most ${maxRequests.toLocaleString("en-US")}. Please try again with fewer requests.`,
        null,
        null,
        null,
      )
    }
    const checkBodies = errors.length === 0 && options.validate !== false
    const lines: BatchLine[] = []
    const seen = new Set<string>()
    const models = new Set<string>()
    let model: string | undefined
    for (let i = 0; i < count; i++) {
      const k = numbers ? numbers[i]! : i + 1
      const value = values[i]
      if (value instanceof Unparsable) {
        fail("invalid_json_line", "This line is not parseable as valid JSON.", null, k, value.raw)
        continue
      }
      if (!value || typeof value !== "object" || Array.isArray(value)) {
        fail("invalid_json_line", "This line is not a JSON object.", null, k, value)
        continue
      }
      const line = value as Record<string, unknown>
      const { custom_id: customId, method, url } = line
      const body = line.body as Record<string, unknown>
      const missing =
        customId == null
          ? "custom_id"
          : method == null
            ? "method"
            : url == null
              ? "url"
              : body == null
                ? "body"
                : undefined
      if (missing) {
        fail("missing_required_parameter", `Missing required parameter: '${missing}'.`, missing, k, line)
        continue
      }
      if (typeof customId !== "string" || typeof body !== "object" || Array.isArray(body)) {
        const param = typeof customId !== "string" ? "custom_id" : "body"
        fail("invalid_type", "custom_id must be a string and body an object.", param, k, line)
        continue
      }
      if (method !== "POST") {
        fail("invalid_method", `Invalid method '${method}': only POST is supported.`, "method", k, line)
      }
      if (url !== endpoint) {
        fail(
          "url_mismatch",
          `The url '${url}' does not match the batch's endpoint '${endpoint}'.`,
          "url",
          k,
          line,
        )
      }
      if (seen.has(customId)) {
        fail(
          "duplicate_custom_id",
          `The custom_id '${customId}' is a duplicate of another request's. The custom_id parameter must be unique for each request in a batch.`,
          "custom_id",
          k,
          line,
        )
      }
      seen.add(customId)
      const lineModel = body.model
      if (typeof lineModel === "string" && lineModel !== model) {
        if (model === undefined) model = lineModel
        else {
          models.add(lineModel)
          if (errors.length < 100) {
            errors.push({
              code: "model_mismatch",
              message: `The model '${lineModel}' of this request differs from the batch's model '${model}'. All requests in a batch must use the same model.`,
              param: "body.model",
              line: k,
            })
          }
        }
      }
      if (checkBodies) {
        const wrong = validator(api).errors(body)
        if (wrong.length) fake.invalid.push({ body, errors: wrong.map((e) => `line ${k}: body${e}`) })
      }
      lines.push({ customId, input: api.input(body), body })
      lineApis.set(body, api)
      if (api === CHAT) fake.cache.key(body)
    }
    if (models.size) {
      fake.invalid.push({
        body: { input_file_id: file.id },
        errors: [`the lines use different models: ${[model!, ...models].join(", ")}`],
      })
    }
    return { lines, errors, model, count }
  }

  const tokensOf = (b: FakeBatch<OpenAIBatch>) => {
    if (b.data.tokens === undefined) {
      let sum = 0
      for (const line of b.lines) sum += b.data.api.cost(line.body).input
      b.data.tokens = sum
    }
    return b.data.tokens
  }

  const createBatch = async (req: Request): Promise<Response> => {
    const at = now()
    const refuse = (status: number, message: string, param: string | null, requests = 0) => {
      fake.batch.creates.push({ at, status, requests, error: message })
      return paramError(status, message, param)
    }
    let body: Record<string, unknown>
    try {
      body = (await req.json()) as Record<string, unknown>
    } catch {
      return refuse(400, "We could not parse the JSON body of your request.", null)
    }
    if (!body || typeof body !== "object" || Array.isArray(body)) {
      return refuse(400, "The body of your request must be a JSON object.", null)
    }
    if (options.validate !== false) {
      // a profile's own endpoint and window words are checked above and below; the rest against OpenAI's spec
      const endpoint = String(body.endpoint)
      const openai = endpoint.startsWith(served.prefix)
        ? `/v1${endpoint.slice(served.prefix.length)}`
        : endpoint
      const window = served.windows.includes(String(body.completion_window)) ? "24h" : body.completion_window
      const errors = validateSchema("CreateBatchRequest", {
        ...body,
        endpoint: openai,
        completion_window: window,
      })
      if (errors.length) fake.invalid.push({ body, errors })
    }
    const inputFileId = String(body.input_file_id)
    const file = fake.files.get(inputFileId)
    if (!file) return refuse(404, `No such File object: ${inputFileId}`, "input_file_id")
    if (file.purpose !== "batch" || !file.bytes) {
      return refuse(400, `The file ${inputFileId} was not uploaded with purpose 'batch'.`, "input_file_id")
    }
    const endpoint = String(body.endpoint)
    // Azure names endpoints without /v1 ("/chat/completions")
    const api = endpoint.startsWith(served.prefix)
      ? ENDPOINTS[`/v1${endpoint.slice(served.prefix.length)}`]
      : undefined
    if (!api) {
      return refuse(
        400,
        `Invalid value for 'endpoint': '${endpoint}'. This server runs batches of '${served.prefix}/chat/completions', '${served.prefix}/responses' and '${served.prefix}/embeddings'.`,
        "endpoint",
      )
    }
    if (!served.windows.includes(String(body.completion_window))) {
      return refuse(
        400,
        `Invalid value for 'completion_window': '${body.completion_window}'. Supported values are: ${served.windows.map((w) => `'${w}'`).join(", ")}.`,
        "completion_window",
      )
    }
    if (body.metadata !== undefined && body.metadata !== null) {
      const meta = body.metadata
      if (typeof meta !== "object" || Array.isArray(meta)) {
        return refuse(
          400,
          `Invalid type for 'metadata': expected an object, but got ${typeof meta} instead.`,
          "metadata",
        )
      }
      const wrong = Object.entries(meta).find(([, v]) => typeof v !== "string")
      if (wrong) {
        const [key, value] = wrong
        return refuse(
          400,
          `Invalid type for 'metadata.${key}': expected a string, but got a ${typeof value} instead.`,
          `metadata.${key}`,
        )
      }
    }
    const { lines, errors, model, count } = readFile(file, endpoint, api)
    const data: OpenAIBatch = {
      endpoint,
      api,
      inputFileId,
      model,
      errors,
      tokens: undefined,
      finished: false,
    }
    const limit = fake.batch.enqueuedTokenLimit
    if (limit !== undefined && errors.length === 0) {
      let tokens = 0
      for (const line of lines) tokens += api.cost(line.body).input
      data.tokens = tokens
      let enqueued = 0
      for (const b of fake.batch.pending()) if (!b.refused) enqueued += tokensOf(b)
      if (enqueued + tokens > limit) {
        errors.push({
          code: "token_limit_exceeded",
          message: enqueuedLimitMessage(model ?? "unknown", limit),
          param: null,
          line: null,
        })
      }
    }
    const metadata =
      options.metadata === false
        ? null
        : ((body.metadata as Record<string, string> | null | undefined) ?? null)
    const batch = fake.batch.create({
      id: (seq) => `batch_${hex(`${fake.port}|batch|${seq}`)}`,
      lines,
      metadata,
      refused: errors.length > 0,
      data,
    })
    fake.batch.creates.push({
      at,
      status: 200,
      id: batch.id,
      requests: count,
      ...(errors.length ? { error: errors[0]!.message } : {}),
    })
    const made = batchJson(batch, fake.batch.fresh(batch))
    return Response.json(served.job ? { job: made } : made)
  }

  /**
   * A batch's output lines, as `kind` picks them ("output": those that succeeded; "error": those that errored or
   * were never run because it expired or was cancelled). Each is written by hand around the JSON of its body: the
   * envelope's fields are strings the fake made, and this is the benchmark's hot path.
   */
  const resultLines = (b: FakeBatch<OpenAIBatch>, kind: "output" | "error") => {
    // ids of the lines: batch_req_… and req_…, 32 hex digits, distinct per batch and line
    const head = hex(b.id)
    const idHead = `{"id":"batch_req_${head.slice(0, 24)}`
    const requestHead = `"request_id":"req_${head.slice(8)}`
    const base = (b.seq + 1) * 0x1_0000_0000
    // the same line in every download of the file, as a provider's stored file is
    const created = unix(b.createdAt)
    return mapIter(fake.batch.results(b), ({ line, index, result }) => {
      const tail = index.toString(16).padStart(8, "0")
      const start = `${idHead}${tail}","custom_id":${JSON.stringify(line.customId)},"response":`
      if (kind === "output") {
        if (result.type !== "succeeded") return undefined
        const made = b.data.api.answer(
          line.body,
          result.content,
          base + index,
          created,
          lineCached.get(line.body),
        )
        const answer = b.fault.reshape ? b.fault.reshape(line.customId, made) : made
        if (b.data.api === EMBEDDINGS && options.validate !== false) {
          const wrong = embeddingAnswerErrors(answer)
          if (wrong.length)
            fake.invalid.push({ body: answer, errors: wrong.map((e) => `output line: body${e}`) })
        }
        const body = JSON.stringify(answer)
        return `${start}{"status_code":200,${requestHead}${tail}","body":${body}},"error":null}`
      }
      if (result.type === "errored") {
        const body = JSON.stringify(lineErrorBody(result.error))
        return `${start}{"status_code":${result.error.status},${requestHead}${tail}","body":${body}},"error":null}`
      }
      if (result.type === "expired" || result.type === "cancelled") {
        return `${start}null,"error":${JSON.stringify(UNRUN[result.type])}}`
      }
      return undefined
    })
  }

  /** Lines that were never run and get an error line: those of a batch that expired or was cancelled. */
  const unrun = (view: View) =>
    view.ending === "expired" || view.ending === "cancelled" ? view.unprocessed : 0

  /** Once a batch has ended: its output and error files, if it has lines for them. */
  const finish = (b: FakeBatch<OpenAIBatch>, view: View) => {
    const d = b.data
    if (d.finished) return
    d.finished = true
    if (b.refused) return
    if (view.succeeded > 0)
      d.outputFileId = addFile(`batch_${b.id}_output.jsonl`, "batch_output", {
        lines: () => resultLines(b, "output"),
      })
    if (view.errored + unrun(view) > 0) {
      d.errorFileId = addFile(`batch_${b.id}_error.jsonl`, "batch_output", {
        lines: () => resultLines(b, "error"),
      })
    }
  }

  /** The Batch object for a view of the batch. */
  const batchJson = (b: FakeBatch<OpenAIBatch>, view: View): Record<string, unknown> => {
    const d = b.data
    const ended = view.phase === "ended"
    if (ended) finish(b, view)
    const errors = b.refused ? d.errors : ended && view.ending === "failed" ? [FAILED] : []
    const out: Record<string, unknown> = {
      id: b.id,
      object: "batch",
      endpoint: d.endpoint,
      ...(d.model !== undefined ? { model: d.model } : {}),
      ...(errors.length ? { errors: { object: "list", data: errors } } : {}),
      input_file_id: d.inputFileId,
      completion_window: "24h",
      status: fake.batch.host.status(view),
      ...(ended && d.outputFileId ? { output_file_id: d.outputFileId } : {}),
      ...(ended && d.errorFileId ? { error_file_id: d.errorFileId } : {}),
      created_at: unix(b.createdAt),
      expires_at: served.azure ? null : unix(b.createdAt + 86_400_000),
    }
    const times: [string, number | undefined][] = [
      ["in_progress_at", view.at.inProgress],
      ["finalizing_at", view.at.finalizing],
      ["cancelling_at", view.at.cancelling],
      [`${view.ending}_at`, ended ? view.at.ended : undefined],
    ]
    for (const [k, v] of times) if (v !== undefined) out[k] = unix(v)
    out.request_counts =
      view.phase === "validating" || b.refused
        ? { total: 0, completed: 0, failed: 0 }
        : { total: view.total, completed: view.succeeded, failed: view.errored + unrun(view) }
    out.metadata = b.metadata
    return out
  }

  const listBatches = (url: URL): Response => {
    const limit = pageLimit(url.searchParams.get("limit"), 100)
    const { data, hasMore } = fake.batch.page(limit, url.searchParams.get("after") ?? undefined)
    const items = data.map((b) => batchJson(b, fake.batch.observe(b)))
    return Response.json({
      object: "list",
      data: items,
      ...(items.length ? { first_id: items[0]!.id, last_id: items.at(-1)!.id } : {}),
      has_more: hasMore,
    })
  }

  return (req: Request, url: URL): Response | Promise<Response> | undefined => {
    const path = url.pathname.startsWith("/v1/") ? url.pathname.slice(3) : url.pathname
    const [kind, id, action, ...rest] = path.split("/").slice(1)
    if ((kind !== "files" && kind !== "batches") || rest.length) return undefined
    const denied = unauthorized(req, options.apiKey, options.profile)
    if (denied) return denied
    const method = req.method
    if (kind === "files") {
      if (!id && method === "POST") return upload(req)
      if (!id || (action !== undefined && action !== "content")) return undefined
      const f = fake.files.get(id)
      if (action === "content" && method === "GET") return content(id)
      if (action === undefined && method === "GET") return f ? Response.json(fileJson(f)) : noFile(id)
      if (action === undefined && method === "DELETE") {
        if (!f) return noFile(id)
        fake.files.delete(id)
        return Response.json({ id, object: "file", deleted: true })
      }
      return undefined
    }
    if (!id && method === "POST") return createBatch(req)
    if (!id && method === "GET") return listBatches(url)
    if (!id) return undefined
    return fake.batch.route(id, action, method, {
      json: batchJson,
      missing: noBatch,
      ended: (b) => paramError(400, `Cannot cancel a batch with status '${b.status}'.`, null),
    })
  }
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
      case "flex_unavailable": {
        const after = fake.faults?.retryAfter
        return errorBody(
          429,
          "Resource Unavailable: Flex processing has no capacity for this request right now. Please try again later.",
          "service_unavailable_error",
          "resource_unavailable",
          after === undefined ? {} : { headers: { "retry-after": after } },
        )
      }
      case "garbage":
      case "reset":
      case "hang":
        return wireFault(kind, signal, hung)
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
    const denied = unauthorized(req, options.apiKey, options.profile)
    if (denied) return denied
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
    if (api === CHAT) fake.cache.key(body)
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
    const kind = faultFor(fake, input)
    if (fake.latencyMs > 0 && kind !== "hang") await Bun.sleep(fake.latencyMs)
    const failed = fault(kind, req.signal)
    if (failed) return failed
    const content = reply(input, body)
    for (const text of api.inputs?.(body) ?? [input]) fake.paid.set(text, (fake.paid.get(text) ?? 0) + 1)
    fake.served.push(now())
    const cached = charge(api, body, content, body.service_tier === "flex")
    const answer = api.answer(body, content, fake.requests, undefined, cached) as {
      choices?: { finish_reason: string }[]
    }
    if (options.finish && answer.choices?.[0]) answer.choices[0].finish_reason = options.finish(input)
    return Response.json(answer)
  }

  /**
   * Reads a chat prompt's cached tokens (writing its prefixes), and bills an answered request (`half`: a batch line
   * or a flex call) by the usage its answer reports. Returns the cached tokens.
   */
  const charge = (api: Api, body: Record<string, unknown>, content: string, half: boolean) => {
    const name = model(body)
    const cached = api === CHAT ? fake.cache.read(name, JSON.stringify(body.messages ?? "")) : 0
    const output = api === EMBEDDINGS ? 0 : tokens(content)
    fake.cache.bill({ model: name, input: api.cost(body).input, cached, output, half })
    return cached
  }

  /** A batch line is answered: the cache and the bill see it as it is processed, in processing order. */
  const replyLine = (input: string, body: Record<string, unknown>) => {
    const content = reply(input, body)
    const cached = charge(lineApis.get(body) ?? CHAT, body, content, true)
    if (cached > 0) lineCached.set(body, cached)
    return content
  }

  let batchRoutes: ReturnType<typeof batchApi>

  const served = SERVED[options.profile ?? "openai"]
  const server = serveFake((req) => {
    const url = new URL(req.url)
    let path = url.pathname
    if (served.azure && !url.searchParams.get("api-version")) {
      return Response.json({ error: { code: "404", message: "Resource not found" } }, { status: 404 })
    }
    if (served.root && path.startsWith(`${served.root}/`)) {
      path = path.slice(served.root.length)
      // Azure's realtime calls name the deployment in the path
      if (served.azure) path = path.replace(/^\/deployments\/[^/]+\//, "/")
      url.pathname = path
    }
    if (req.method === "POST" && (path === "/v1/chat/completions" || path === "/chat/completions")) {
      return limitedEndpoint(req, CHAT)
    }
    if (req.method === "POST" && (path === "/v1/embeddings" || path === "/embeddings")) {
      return limitedEndpoint(req, EMBEDDINGS)
    }
    if (req.method === "POST" && (path === "/v1/responses" || path === "/responses")) {
      return limitedEndpoint(req, RESPONSES)
    }
    if (req.method === "GET" && path === "/_stats") return Response.json(fake.stats())
    const batchAnswer = batchRoutes(req, url)
    if (batchAnswer) return batchAnswer
    if (options.unrouted) return options.unrouted(req)
    return errorBody(
      404,
      `Unknown request URL: ${req.method} ${path}`,
      "invalid_request_error",
      "unknown_url",
    )
  })

  const fake: Fake = {
    url: `http://127.0.0.1:${server.port}${served.root}${served.azure ? "" : "/v1"}`,
    port: server.port ?? 0,
    ...counters<FaultKind>(options),
    batch: undefined as unknown as BatchEngine<OpenAIBatch>,
    files: new Map(),
    cache: new PromptCache(options.cache ?? {}, now),
    stats: () => statsOf(fake, options.rateLimit),
    stop: () => stopFake(server, hung),
    async [Symbol.asyncDispose]() {
      await fake.stop()
    },
  }
  // OpenAI's statuses are the engine's phases, and once ended how it ended; 50,000 lines and 200 MB a file
  const status = (view: View) => {
    const word = view.phase === "ended" ? view.ending! : view.phase
    return served.upper ? word.toUpperCase() : word
  }
  const limits = { maxRequests: 50_000, maxBytes: 200 * 1024 * 1024 }
  fake.batch = new BatchEngine<OpenAIBatch>(
    { now, reply: replyLine, paid: () => fake.paid, status, limits },
    options.batch,
  )
  batchRoutes = batchApi(fake, options, now)
  return fake
}
