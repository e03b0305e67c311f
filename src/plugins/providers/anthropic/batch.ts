/**
 * The Anthropic Message Batches API, through the official SDK client the realtime provider makes (wire.ts
 * `sdk`). Requests are the realtime Messages bodies; results are read with the realtime reader and classifier, so a
 * batch item is asked and read exactly as a direct call would be. The results file is saved as the API serves it.
 */
import type Anthropic from "@anthropic-ai/sdk"
import type { MessageBatch } from "@anthropic-ai/sdk/resources/messages/batches"
import type { Message } from "@anthropic-ai/sdk/resources/messages"
import type { BatchClient, BatchLine, BatchTag, Found, RemoteBatch, Request } from "../../api/define.ts"
import { announced, CLOCK_SLACK_MS, save, stallWatch, UPLOAD_TIMEOUT_MS } from "../../api/batch.ts"
import { ProviderError, StoreError } from "../../api/errors.ts"
import type { FirstAnswers } from "../../api/baseurl.ts"
import { body, classify, failure, reply } from "./wire.ts"

/**
 * 100,000 requests or 256 MB per batch, whichever comes first. The bytes are those of the create body, counted as
 * it is sent: `{"requests":[` (13 bytes), the request lines joined by commas (each line's UTF-8 bytes, plus one
 * byte per line but the first), and `]}` (2 bytes). `line()` writes each line as compact JSON, and the SDK sends the
 * parsed lines as compact JSON again, so the line bytes are the body's bytes.
 */
export const ANTHROPIC_BATCH_LIMITS = { maxRequests: 100_000, maxBytes: 256_000_000 } as const

/** The bytes of the create body a request file's lines make (see ANTHROPIC_BATCH_LIMITS). */
export function createBodyBytes(lineBytes: number, lines: number): number {
  return '{"requests":['.length + lineBytes + Math.max(0, lines - 1) + "]}".length
}

/** The HTTP status each error type of the API stands for, so a line's error is classified as a direct call's. */
export const ERROR_STATUS: Readonly<Record<string, number>> = {
  invalid_request_error: 400,
  authentication_error: 401,
  billing_error: 402,
  permission_error: 403,
  not_found_error: 404,
  request_too_large: 413,
  rate_limit_error: 429,
  api_error: 500,
  timeout_error: 504,
  overloaded_error: 529,
}

/** How many result lines `find` reads of an ended candidate to tell whether its custom_ids carry the tag. */
const SAMPLE_LINES = 20

/**
 * The create body, streamed from a request file of JSON lines (each ending in a newline): `{"requests":[`, the lines
 * with each newline turned into a comma but the last one dropped, then `]}`. Newlines appear in the file only
 * between lines (JSON escapes those inside strings).
 */
export function createBody(file: string): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder()
  const reader = Bun.file(file).stream().getReader()
  // the last byte read is held back until more comes: if nothing does, it was the last newline, and is dropped
  let held: number | undefined
  let started = false
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (!started) {
        started = true
        controller.enqueue(encoder.encode('{"requests":['))
        return
      }
      const { value, done } = await reader.read()
      if (done) {
        if (held !== undefined && held !== 10) controller.enqueue(Uint8Array.of(held))
        controller.enqueue(encoder.encode("]}"))
        controller.close()
        return
      }
      if (value.length === 0) return
      const out = new Uint8Array(value.length)
      let n = 0
      if (held !== undefined) out[n++] = held === 10 ? 44 : held
      for (let i = 0; i < value.length - 1; i++) out[n++] = value[i] === 10 ? 44 : value[i]!
      held = value[value.length - 1]
      controller.enqueue(out.subarray(0, n))
    },
    cancel(reason) {
      return reader.cancel(reason)
    },
  })
}

/** The number a queue-limit message gives: "… limit of 100,000 batch requests …" or "… 100,000 requests …". */
export function queuedRequests(message: string): number | undefined {
  const m =
    /(?:limit|maximum)(?:\s+of)?\s*:?\s*(\d[\d,]*)/i.exec(message) ??
    /(\d[\d,]*)\s+(?:(?:message|batch|queued|enqueued)\s+)*requests/i.exec(message)
  if (!m?.[1]) return undefined
  const n = Number(m[1].replaceAll(",", ""))
  return Number.isFinite(n) ? n : undefined
}

/**
 * A 429 to a batch create that speaks of the queue (the requests of a workspace's unended batches are capped per
 * model, by tier: "Maximum batch requests in processing queue") is a queue_limit: retryable once other batches end.
 * Any other error, 429s that do not speak of the queue included, stays as it is.
 */
export function queueLimit(error: unknown): unknown {
  if (!(error instanceof ProviderError) || error.errorClass !== "rate_limit" || !/queue/i.test(error.message))
    return error
  const out = new ProviderError("queue_limit", error.message, {
    retryable: true,
    retryAfterMs: error.retryAfterMs,
    status: error.status,
    cause: error,
  })
  const requests = queuedRequests(error.message)
  out.queueLimit = requests === undefined ? undefined : { requests }
  return out
}

/**
 * A Message Batch in neutral terms. An ended batch's outcome: "cancelled" when a cancel was asked for (whatever its
 * lines say), else "expired" when any line expired (the 24 hours ran out before it ran), else "completed" — errored
 * lines are line errors, not the batch's. The API never fails a batch as a whole: there is no `error`.
 */
export function remote(batch: MessageBatch): RemoteBatch {
  const c = batch.request_counts
  const total = c.processing + c.succeeded + c.errored + c.canceled + c.expired
  const out: RemoteBatch = {
    id: batch.id,
    status: batch.processing_status,
    phase: "in_progress",
    // what is not processing is done: succeeded, errored, canceled or expired
    counts: { total, done: total - c.processing, failed: c.errored },
    createdAt: Date.parse(batch.created_at),
  }
  if (batch.processing_status === "canceling") out.phase = "cancelling"
  if (batch.processing_status === "ended") {
    out.phase = "ended"
    out.outcome = batch.cancel_initiated_at ? "cancelled" : c.expired > 0 ? "expired" : "completed"
    // one results line per request, of the type it is counted under
    const lines = c.succeeded + c.errored + c.canceled + c.expired
    out.expect = {
      output: { min: lines, max: lines },
      kinds: { succeeded: c.succeeded, errored: c.errored, canceled: c.canceled, expired: c.expired },
    }
  }
  if (batch.results_url) out.files = { output: batch.results_url }
  return out
}

/** One line of a results file (MessageBatchIndividualResponse). */
type ResultLine = {
  custom_id?: unknown
  result?: {
    type?: unknown
    message?: Message
    /** An ErrorResponse (`{type: "error", error: {type, message}}`); older docs show the inner error alone. */
    error?: { type?: unknown; error?: { type?: unknown; message?: unknown } }
  }
}

/**
 * The Message Batches API of the anthropic provider, on the provider's own SDK client; `first` is the client's
 * first-answer check, shared with its realtime calls.
 */
export function anthropicBatch(
  client: Anthropic,
  model: string,
  timeoutMs: number,
  first?: FirstAnswers,
): BatchClient {
  /** A failure mapped as the realtime provider maps it; one already ours (or the disk's) is kept as it is. */
  const mapped = (cause: unknown, signal: AbortSignal): unknown =>
    !signal.aborted && (cause instanceof ProviderError || cause instanceof StoreError)
      ? cause
      : failure(cause, signal, timeoutMs, first)

  /** One SDK call, its failure mapped. */
  const attempt = async <T>(signal: AbortSignal, run: () => Promise<T>): Promise<T> => {
    try {
      const out = await run()
      first?.ok()
      return out
    } catch (cause) {
      throw mapped(cause, signal)
    }
  }

  /** The results file as the API serves it: the SDK's own binary GET (as `messages.batches.results` makes it). */
  const results = (url: string, signal: AbortSignal): Promise<Response> =>
    client
      .get(url, {
        signal,
        stream: true,
        __binaryResponse: true,
        headers: { Accept: "application/binary" },
      })
      .asResponse()

  /** The custom_ids of the first `n` lines of a results file ("" for a line that is not JSON). */
  const sample = async (url: string, n: number, signal: AbortSignal): Promise<string[]> => {
    const ids: string[] = []
    const watch = stallWatch(timeoutMs)
    const response = await results(url, AbortSignal.any([signal, watch.signal])).catch((cause: unknown) => {
      watch.stop()
      throw cause
    })
    if (!response.body) {
      watch.stop()
      return ids
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader()
    const take = (text: string) => {
      const line = text.trim()
      if (!line) return
      try {
        const id = (JSON.parse(line) as ResultLine).custom_id
        ids.push(typeof id === "string" ? id : "")
      } catch {
        ids.push("")
      }
    }
    let buffer = ""
    try {
      while (ids.length < n) {
        const { done, value } = await reader.read()
        watch.touch()
        if (value) buffer += value
        let end: number
        while (ids.length < n && (end = buffer.indexOf("\n")) >= 0) {
          take(buffer.slice(0, end))
          buffer = buffer.slice(end + 1)
        }
        if (done) {
          if (ids.length < n) take(buffer)
          break
        }
      }
    } finally {
      watch.stop()
      await reader.cancel().catch(() => {})
    }
    return ids
  }

  /**
   * Which batch carries `tag`. The API has no metadata: the candidates are the batches created since the intent
   * (less the clock slack) with exactly the tag's request count. An ended candidate is ours when the custom_ids of
   * its first result lines all carry the tag. Otherwise a single unended candidate is taken as ours, provisionally:
   * spool only ever applies result lines whose custom_id carries its own tag, so a wrong adoption can cost waiting
   * for someone else's batch to end, never a wrong result.
   */
  const find = async (tag: BatchTag, signal: AbortSignal): Promise<Found> => {
    const since = tag.since - CLOCK_SLACK_MS
    const ended: RemoteBatch[] = []
    const unended: RemoteBatch[] = []
    // newest first, page after page, until the batches are older than the intent
    for await (const batch of client.messages.batches.list({ limit: 100 }, { signal })) {
      const r = remote(batch)
      if (r.createdAt < since) break
      if (r.counts?.total !== tag.count) continue
      ;(r.phase === "ended" ? ended : unended).push(r)
    }
    const prefix = `${tag.tag}_`
    for (const r of ended) {
      if (!r.files?.output) continue
      let ids: string[]
      try {
        ids = await sample(r.files.output, SAMPLE_LINES, signal)
      } catch (cause) {
        const err = mapped(cause, signal)
        // results no longer served (archived after 29 days) cannot be ours to wait for
        if (err instanceof ProviderError && err.errorClass === "not_found") continue
        throw err
      }
      if (ids.length > 0 && ids.every((id) => id.startsWith(prefix))) return { found: r }
    }
    const [only] = unended
    if (only && unended.length === 1) return { found: only }
    if (unended.length > 1) {
      return {
        wait: `${unended.length} unended batches of ${tag.count} requests were created since the batch's intent (${unended
          .map((r) => r.id)
          .join(", ")}); which one is ${tag.tag} can be told only once they end`,
      }
    }
    return { none: true }
  }

  return {
    limits: ANTHROPIC_BATCH_LIMITS,

    line(customId: string, request: Request): string {
      return `{"custom_id":${JSON.stringify(customId)},"params":${JSON.stringify(body(model, request))}}`
    },

    async create(file, _tag, signal) {
      try {
        // The API takes the requests in the create body, not as a file: the body is streamed from the request file
        // (`{"requests":[` + its lines joined by commas + `]}`), so a 256 MB batch is never held in memory.
        const batch = await client.post<MessageBatch>("/v1/messages/batches", {
          body: createBody(file),
          headers: { "content-type": "application/json" },
          signal,
          // the body may be 256 MB: the SDK's timer runs until the answer's headers
          timeout: Math.max(timeoutMs, UPLOAD_TIMEOUT_MS),
        })
        first?.ok()
        return remote(batch)
      } catch (cause) {
        throw queueLimit(mapped(cause, signal))
      }
    },

    async retrieve(id, signal) {
      return attempt(signal, async () => remote(await client.messages.batches.retrieve(id, {}, { signal })))
    },

    async find(tag, signal) {
      return attempt(signal, () => find(tag, signal))
    },

    async cancel(id, signal) {
      return attempt(signal, async () => remote(await client.messages.batches.cancel(id, {}, { signal })))
    },

    async download(batch, to, signal) {
      const url = batch.files?.output
      if (!url) return {}
      const watch = stallWatch(timeoutMs)
      try {
        const response = await results(url, AbortSignal.any([signal, watch.signal]))
        first?.ok()
        await save(response.body, to.output, watch.touch)
        return { output: to.output, announced: { output: announced(response) } }
      } catch (cause) {
        throw mapped(cause, signal)
      } finally {
        watch.stop()
      }
    },

    parse(text: string): BatchLine {
      const line = JSON.parse(text) as ResultLine | null
      const customId = line?.custom_id
      if (typeof customId !== "string") throw new Error("the line has no custom_id")
      const result = line?.result
      switch (result?.type) {
        case "succeeded":
          try {
            return { customId, kind: result.type, reply: reply(result.message as Message) }
          } catch (error) {
            if (error instanceof ProviderError) return { customId, kind: result.type, error }
            throw error
          }
        case "errored": {
          const inner = result.error?.error ?? result.error
          const type = typeof inner?.type === "string" ? inner.type : ""
          // an error type this code does not know is taken as the API's own (500): retried, never given up on
          const status = ERROR_STATUS[type] ?? 500
          const detail = result.error?.error ? result.error : { type: "error", error: inner }
          return { customId, kind: result.type, error: classify(status, detail, new Headers()) }
        }
        case "canceled":
        case "expired":
          return { customId, kind: result.type }
        default:
          throw new Error(`the line has no result this code knows (${String(result?.type)})`)
      }
    },
  }
}
