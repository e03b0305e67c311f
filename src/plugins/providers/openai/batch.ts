/**
 * The OpenAI Batch API, through the official SDK: the request file is uploaded (purpose "batch") and a batch is made
 * of it, tagged in its metadata; result files are streamed to disk as the API serves them. Lines are written and
 * read with the realtime provider's own body builders and readers (wire.ts, embed.ts), so a batch item is asked and
 * read exactly as a direct call would be. The same client serves the services that copy this API (Azure, Groq,
 * Together, …) through a `BatchShape`: what sets each apart (openai-compatible's profiles fill it).
 */
import OpenAI, {
  APIConnectionError,
  APIConnectionTimeoutError,
  APIError,
  APIUserAbortError,
  OpenAIError,
  toStreamingFile,
} from "openai"
import type { Batch } from "openai/resources/batches"
import type {
  BatchClient,
  BatchExpect,
  BatchLimits,
  BatchLine,
  Downloaded,
  EmbedOptions,
  ProviderContext,
  RemoteBatch,
  Reply,
  Request,
} from "../../api/define.ts"
import { announced, save, stallWatch, UPLOAD_TIMEOUT_MS, CLOCK_SLACK_MS } from "../../api/batch.ts"
import { ProviderError, StoreError } from "../../api/errors.ts"
import { unanswered, type SdkErrors } from "../../api/http.ts"
import type { FirstAnswers } from "../../api/baseurl.ts"
import {
  baseOf,
  body,
  classify,
  extras,
  replyOf,
  responsesBody,
  responsesReplyOf,
  type ErrorDetail,
} from "./wire.ts"
import { embedBody, embedLineReplyOf } from "./embed.ts"

/** 50,000 requests and 200 MB of request file per batch, as the Batch API guide states. */
export const OPENAI_BATCH_LIMITS = { maxRequests: 50_000, maxBytes: 200_000_000 } as const

/**
 * What sets an OpenAI-shaped Batch API apart from OpenAI's own: openai-compatible's profiles fill it, and OpenAI's is
 * `OPENAI_SHAPE`. Every field is read by the one client below, so every service gets the same guarantees.
 */
export interface BatchShape {
  limits: BatchLimits
  /** The purpose the request file is uploaded with: "batch" (OpenAI), "batch-api" (Together). */
  purpose: string
  /** The create's `completion_window`. */
  window: string
  /** What comes before the endpoint's path in each line's `url` and the create's `endpoint`: "/v1" or "" (Azure). */
  prefix: string
  /** The service's status words, by OpenAI's word they mean (Together's "IN_PROGRESS"); a word not named is lower-cased. */
  statuses: Readonly<Record<string, Batch["status"]>>
  /** Headers on every call (null removes one): Azure's `api-key` in place of `Authorization`. */
  headers: Readonly<Record<string, string | null>>
  /** Query parameters on every call: Azure's `api-version`. */
  query: Readonly<Record<string, string>>
  /** The enqueued-token cap, when the service documents one: learned when a refusal names no number. */
  enqueuedTokens?: number | undefined
  /** A chat line's body, when not OpenAI's (openai-compatible sends `max_tokens`). */
  body?: ((model: string, request: Request) => Record<string, unknown>) | undefined
  /** Reads a line's 200 body, when not as OpenAI's (openai-compatible's tolerant reader). */
  read?: ((status: number, body: unknown) => Reply) | undefined
  /** Lines carry `prompt_cache_key` for a request with a shared prefix (OpenAI's own API; never `service_tier`). */
  cacheKey?: boolean | undefined
}

/** OpenAI's own Batch API. */
export const OPENAI_SHAPE: BatchShape = {
  limits: OPENAI_BATCH_LIMITS,
  purpose: "batch",
  window: "24h",
  prefix: "/v1",
  statuses: {},
  headers: {},
  query: {},
  cacheKey: true,
}

/** Batch metadata values may be 512 characters long. */
const METADATA_MAX = 512

/** The enqueued-token (or request) limit a refusal names: "… Limit: 90,000 enqueued tokens. …". */
export function enqueuedLimit(message: string): { tokens?: number; requests?: number } | undefined {
  const m = /limit:?\s*(\d[\d,]*)\s+enqueued\s+(tokens|requests)/i.exec(message)
  if (!m?.[1] || !m[2]) return undefined
  const n = Number(m[1].replaceAll(",", ""))
  if (!Number.isFinite(n)) return undefined
  return m[2].toLowerCase() === "tokens" ? { tokens: n } : { requests: n }
}

/**
 * Why a failed batch failed. The queue being full (`token_limit_exceeded`, or a message naming an enqueued limit) is
 * a queue_limit, retryable once other batches finish; anything else (the file did not validate) is the request
 * file's fault and is not retried.
 */
export function batchError(
  batch: Pick<Batch, "status" | "errors">,
  enqueuedTokens?: number,
): ProviderError | undefined {
  if (batch.status !== "failed") return undefined
  const data = batch.errors?.data ?? []
  const limit = data.find(
    (e) => e.code === "token_limit_exceeded" || (e.message !== undefined && enqueuedLimit(e.message)),
  )
  if (limit) {
    const err = new ProviderError(
      "queue_limit",
      `the batch was refused (${limit.code ?? "queue limit"}): ${limit.message ?? "no message"}`,
      { retryable: true },
    )
    err.queueLimit =
      enqueuedLimit(limit.message ?? "") ?? (enqueuedTokens ? { tokens: enqueuedTokens } : undefined)
    return err
  }
  if (data.length === 0) {
    return new ProviderError("bad_request", "the batch failed and the API gave no reason", {
      retryable: false,
    })
  }
  const shown = data.slice(0, 3).map((e) => {
    const where = e.line === null || e.line === undefined ? "" : ` at line ${e.line}`
    return `${e.code ?? "error"}${where}: ${e.message ?? "no message"}`
  })
  const more = data.length > shown.length ? ` (and ${data.length - shown.length} more)` : ""
  return new ProviderError("bad_request", `the batch failed: ${shown.join("; ")}${more}`, {
    retryable: false,
  })
}

const PHASES: Record<Batch["status"], Pick<RemoteBatch, "phase" | "outcome">> = {
  validating: { phase: "validating" },
  in_progress: { phase: "in_progress" },
  finalizing: { phase: "finalizing" },
  cancelling: { phase: "cancelling" },
  completed: { phase: "ended", outcome: "completed" },
  expired: { phase: "ended", outcome: "expired" },
  cancelled: { phase: "ended", outcome: "cancelled" },
  failed: { phase: "ended", outcome: "failed" },
}

/**
 * The lines an ended batch's files hold: the output file one per completed request; the error file one per failed
 * request, and, for a batch that expired or was cancelled, possibly one more per request never run (whether those
 * are counted as failed is not documented, so both readings are accepted).
 */
function expectOf(
  counts: NonNullable<Batch["request_counts"]>,
  outcome: RemoteBatch["outcome"],
): BatchExpect {
  const cut = outcome === "expired" || outcome === "cancelled"
  return {
    output: { min: counts.completed, max: counts.completed },
    errors: {
      min: counts.failed,
      max: cut ? Math.max(counts.failed, counts.total - counts.completed) : counts.failed,
    },
  }
}

/**
 * An OpenAI batch in neutral terms. A status this code does not know is taken as still in progress. With a `shape`,
 * the service's status word is read as the OpenAI word it means, and `status` is that word (Together's "IN_PROGRESS"
 * is "in_progress"), so a job moved between services shows and stores the same words; a `created_at` given as a
 * date is read too.
 */
export function remote(batch: Batch, shape?: BatchShape): RemoteBatch {
  const word = shape
    ? (shape.statuses[batch.status] ?? (batch.status.toLowerCase() as Batch["status"]))
    : batch.status
  const created = batch.created_at as number | string
  const out: RemoteBatch = {
    id: batch.id,
    status: word,
    ...(PHASES[word] ?? { phase: "in_progress" }),
    createdAt: typeof created === "string" ? Date.parse(created) : created * 1000,
  }
  const counts = batch.request_counts
  if (counts) {
    out.counts = { total: counts.total, done: counts.completed + counts.failed, failed: counts.failed }
    if (out.phase === "ended") out.expect = expectOf(counts, out.outcome)
  }
  // the API sends null for a file it has not made
  const output = batch.output_file_id ?? undefined
  const errors = batch.error_file_id ?? undefined
  if (output !== undefined || errors !== undefined) {
    out.files = {}
    if (output !== undefined) out.files.output = output
    if (errors !== undefined) out.files.errors = errors
  }
  const error = batchError(word === batch.status ? batch : { ...batch, status: word }, shape?.enqueuedTokens)
  if (error) out.error = error
  return out
}

/** A created batch: Together answers the create with the batch under `job`. */
function unwrapped(batch: Batch): Batch {
  const job = (batch as Batch & { job?: Batch }).job
  return job && typeof job === "object" && typeof job.id === "string" ? job : batch
}

/** The SDK's error classes, for `unanswered`. */
const SDK_ERRORS: SdkErrors = {
  timeout: APIConnectionTimeoutError,
  abort: APIUserAbortError,
  connection: APIConnectionError,
  base: OpenAIError,
}

/**
 * Turns whatever the SDK threw into a ProviderError, classified as the realtime provider classifies an HTTP answer
 * (and, with `first`, checked as a first answer). An abort by the caller is rethrown as the caller's own reason.
 */
export function sdkFailure(
  cause: unknown,
  signal: AbortSignal,
  timeoutMs: number,
  first?: FirstAnswers,
): unknown {
  if (signal.aborted) return signal.reason ?? cause
  // already ours: a provider's error mapped before, or the disk failing under a download
  if (cause instanceof ProviderError || cause instanceof StoreError) return cause
  if (cause instanceof APIError && cause.status !== undefined && cause.headers) {
    // `error` is the body's `error` object; without a JSON body the SDK's message is "<status> <body text>"
    const detail = (cause.error ?? undefined) as ErrorDetail | undefined
    const text = detail ? JSON.stringify({ error: detail }) : cause.message.replace(/^\d+ /, "")
    const err = classify(cause.status, text, cause.headers, detail)
    return first ? first.check(err, text) : err
  }
  return unanswered(cause, timeoutMs, SDK_ERRORS, { cause })
}

/** The fields of one output or error file line (the Batch API's BatchRequestOutput). */
type OutputLine = {
  custom_id?: unknown
  response?: { status_code?: unknown; body?: unknown } | null
  error?: { code?: unknown; message?: unknown } | null
}

/** Line errors that mean the request never ran: its item goes back to pending, unpaid. */
const NOT_RUN = new Set(["batch_expired", "batch_cancelled"])

/** What a batch runs: chat completions, responses or embeddings (one endpoint per batch: the create's `endpoint`). */
export type BatchEndpoint = "chat" | "responses" | "embeddings"

const PATHS = {
  chat: "/chat/completions",
  responses: "/responses",
  embeddings: "/embeddings",
} as const satisfies Record<BatchEndpoint, string>

/**
 * The Batch API of the openai provider, or of a service that copies it (`shape`, default OpenAI's). The SDK client is
 * made on first use (the Batch API needs a key; a run that never uses it never makes one). `first` is the client's
 * first-answer check, shared with its realtime calls.
 */
export function openaiBatch(
  context: ProviderContext,
  endpoint: BatchEndpoint,
  first?: FirstAnswers,
  shape: BatchShape = OPENAI_SHAPE,
): BatchClient {
  const responses = endpoint === "responses"
  const embeddings = endpoint === "embeddings"
  const url = `${shape.prefix}${PATHS[endpoint]}`
  // a batch line is never flex: the Batch API has its own discount
  const extra = (request: Request) => (shape.cacheKey ? extras(request) : {})
  const build = responses
    ? (model: string, request: Request) => responsesBody(model, request, extra(request))
    : (shape.body ?? ((model: string, request: Request) => body(model, request, undefined, extra(request))))
  const read: (status: number, body: unknown) => Reply = embeddings
    ? embedLineReplyOf
    : responses
      ? responsesReplyOf
      : (shape.read ?? replyOf)
  const see = (batch: Batch) => remote(batch, shape === OPENAI_SHAPE ? undefined : shape)
  const model = context.model
  // The SDK rejects a timeout that is not a whole number of milliseconds.
  const timeoutMs = Math.max(1, Math.ceil(context.timeoutMs))
  const head = `,"method":"POST","url":${JSON.stringify(url)},"body":`

  let made: OpenAI | undefined
  const sdk = (): OpenAI => {
    if (made) return made
    if (!context.apiKey) {
      throw new ProviderError("auth", "the Batch API needs an API key, and none was given", {
        retryable: false,
        pause: true,
      })
    }
    made = new OpenAI({
      apiKey: context.apiKey,
      baseURL: baseOf(context),
      maxRetries: 0,
      timeout: timeoutMs,
      logLevel: "off",
      // spool reads the environment itself: the SDK must not add an organization, project or admin key of its own
      organization: null,
      project: null,
      adminAPIKey: null,
      webhookSecret: null,
      defaultHeaders: shape.headers,
      defaultQuery: shape.query,
    })
    return made
  }

  /** One SDK call, its failure mapped. */
  const attempt = async <T>(signal: AbortSignal, run: (client: OpenAI) => Promise<T>): Promise<T> => {
    try {
      const out = await run(sdk())
      first?.ok()
      return out
    } catch (cause) {
      throw sdkFailure(cause, signal, timeoutMs, first)
    }
  }

  /**
   * Whether a batch with no metadata (a service that keeps none) was made of the request file uploaded for `tag`: the
   * file is uploaded as `<tag>.jsonl`. OpenAI keeps metadata, so its batches are never looked at so; a file gone is
   * not ours to know, and says no.
   */
  const namedFor = async (client: OpenAI, batch: Batch, tag: string, signal: AbortSignal) => {
    if (shape === OPENAI_SHAPE || batch.metadata?.spool_tag !== undefined || !batch.input_file_id)
      return false
    try {
      const file = await client.files.retrieve(batch.input_file_id, { signal })
      return file.filename === `${tag}.jsonl`
    } catch (cause) {
      if (cause instanceof APIError && cause.status === 404) return false
      throw cause
    }
  }

  /** Streams one file's content to `path`; returns the length it was served with, if one was announced. */
  const fetchFile = async (id: string, path: string, signal: AbortSignal): Promise<number | undefined> => {
    const watch = stallWatch(timeoutMs)
    const both = AbortSignal.any([signal, watch.signal])
    try {
      const response = await sdk().files.content(id, { signal: both })
      first?.ok()
      await save(response.body, path, watch.touch)
      return announced(response)
    } catch (cause) {
      throw sdkFailure(cause, signal, timeoutMs, first)
    } finally {
      watch.stop()
    }
  }

  return {
    limits: shape.limits,

    line(customId: string, request: Request): string {
      // a batch holds one endpoint: a client made for embeddings writes embedding lines only
      if (embeddings) throw new Error("this batch client was made for embeddings: use embedLine")
      return `{"custom_id":${JSON.stringify(customId)}${head}${JSON.stringify(build(model, request))}}`
    },

    ...(embeddings && {
      embedLine(customId: string, input: string, options: EmbedOptions): string {
        // one input a line, base64 as realtime asks: a custom_id names one item, and its answer is a third the size
        const payload = embedBody(model, [input], options, "base64")
        return `{"custom_id":${JSON.stringify(customId)}${head}${JSON.stringify(payload)}}`
      },
    }),

    async create(file, tag, signal) {
      return attempt(signal, async (client) => {
        // streamed from disk as multipart form data: a 200 MB file is never held in memory
        const upload = toStreamingFile(Bun.file(file).stream(), `${tag.tag}.jsonl`)
        const input = await client.files.create(
          { file: upload, purpose: shape.purpose as "batch" },
          { signal, timeout: Math.max(timeoutMs, UPLOAD_TIMEOUT_MS) },
        )
        // the input file is left to expire (batch files do, after 30 days): if this create reached the API but its
        // answer was lost, the batch reads that file, and deleting it would fail the batch
        const batch = await client.batches.create(
          {
            input_file_id: input.id,
            endpoint: url as "/v1/chat/completions",
            completion_window: shape.window as "24h",
            metadata: { spool_run: Array.from(tag.run).slice(0, METADATA_MAX).join(""), spool_tag: tag.tag },
          },
          { signal },
        )
        return see(unwrapped(batch))
      })
    },

    async retrieve(id, signal) {
      return attempt(signal, async (client) => see(await client.batches.retrieve(id, { signal })))
    },

    async find(tag, signal) {
      return attempt(signal, async (client) => {
        const since = tag.since - CLOCK_SLACK_MS
        // newest first, page after page, until the batches are older than the intent
        for await (const batch of client.batches.list({ limit: 100 }, { signal })) {
          const seen = see(batch)
          if (seen.createdAt < since) break
          if (batch.metadata?.spool_tag === tag.tag) return { found: seen }
          if (await namedFor(client, batch, tag.tag, signal)) return { found: seen }
        }
        return { none: true as const }
      })
    },

    async cancel(id, signal) {
      return attempt(signal, async (client) => see(await client.batches.cancel(id, { signal })))
    },

    async download(batch, to, signal) {
      const written: Downloaded = { announced: {} }
      if (batch.files?.output) {
        written.announced!.output = await fetchFile(batch.files.output, to.output, signal)
        written.output = to.output
      }
      if (batch.files?.errors) {
        written.announced!.errors = await fetchFile(batch.files.errors, to.errors, signal)
        written.errors = to.errors
      }
      return written
    },

    parse(text: string): BatchLine {
      const line = JSON.parse(text) as OutputLine | null
      const customId = line?.custom_id
      if (typeof customId !== "string") throw new Error("the line has no custom_id")
      const response = line?.response
      if (response && typeof response.status_code === "number") {
        const status = response.status_code
        if (status !== 200) {
          const payload = response.body === undefined ? "" : JSON.stringify(response.body)
          return { customId, error: classify(status, payload, new Headers()) }
        }
        try {
          // the body is read as it was parsed with its line: no second JSON round trip per line
          return { customId, reply: read(status, response.body) }
        } catch (error) {
          if (error instanceof ProviderError) return { customId, error }
          throw error
        }
      }
      const error = line?.error
      if (error && typeof error === "object") {
        const code = typeof error.code === "string" ? error.code : "unknown"
        if (NOT_RUN.has(code)) return { customId }
        const message = typeof error.message === "string" ? error.message : "no message"
        return {
          customId,
          error: new ProviderError("bad_request", `${code}: ${message}`, { retryable: false }),
        }
      }
      throw new Error("the line has neither a response nor an error")
    },
  }
}
