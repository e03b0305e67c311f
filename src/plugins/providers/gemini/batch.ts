/**
 * The Gemini Batch API (ai.google.dev/gemini-api/docs/batch-mode, ai.google.dev/api/batch-mode, ai.google.dev/api/files):
 * `POST /v1beta/models/{model}:batchGenerateContent` with the requests inline when the create body stays under
 * 20 MB, else a JSONL file of `{key, request}` lines uploaded through the Files API (resumable upload); the batch is
 * a long-running operation (`batches/…`) polled with GET, its state `BATCH_STATE_*` (the SDKs say `JOB_STATE_*`: both
 * are read), cancelled with `:cancel`, and found again after a crash by its display name, which is the batch's tag.
 * Results come back inline (`inlinedResponses`, written here as the JSONL a file would hold) or as a responses file
 * downloaded from `/download/v1beta/files/…:download?alt=media`. Lines are read with the realtime reader and
 * classifier (wire.ts), so a batch item is asked and read exactly as a direct call would be.
 */
import type { BatchClient, BatchLine, BatchTag, Found, RemoteBatch, Request } from "../../api/define.ts"
import { announced, CLOCK_SLACK_MS, save, stallWatch, UPLOAD_TIMEOUT_MS } from "../../api/batch.ts"
import { ProviderError, StoreError } from "../../api/errors.ts"
import { body, classify, modelPath, reply, schemaRefusal, send, unanswered, type Wire } from "./wire.ts"

/** The create body may hold its requests inline up to 20 MB; above, they go as a file (up to 2 GB). */
export const INLINE_LIMIT_BYTES = 20_000_000

/**
 * How much one batch may hold: the Files API's 2 GB per file. The API documents no cap on the request count; the
 * batcher's cap is kept at 100,000, as Anthropic's, so that a batch stays a size one retry can afford.
 */
export const GEMINI_BATCH_LIMITS = { maxRequests: 100_000, maxBytes: 2_000_000_000 } as const

/** google.rpc.Code → the HTTP status it maps to (google.rpc.code.proto), so a line's error is classified as a call's. */
const HTTP_OF_CODE: Readonly<Record<number, number>> = {
  1: 499,
  2: 500,
  3: 400,
  4: 504,
  5: 404,
  6: 409,
  7: 403,
  8: 429,
  9: 400,
  10: 409,
  11: 400,
  12: 501,
  13: 500,
  14: 503,
  15: 500,
  16: 401,
}

/** A google.rpc.Status (`{code, message, details}`, code a google.rpc.Code) as a classified error. */
export function statusError(status: unknown): ProviderError {
  const s = typeof status === "object" && status !== null ? (status as { code?: unknown }) : {}
  const http = typeof s.code === "number" ? (HTTP_OF_CODE[s.code] ?? 500) : 500
  return classify(http, { error: status }, new Headers())
}

type Stats = {
  requestCount?: string | number
  successfulRequestCount?: string | number
  failedRequestCount?: string | number
  pendingRequestCount?: string | number
}

/** The GenerateContentBatch an operation's metadata holds. */
type Meta = { state?: string; displayName?: string; createTime?: string; batchStats?: Stats }

/** A batch's long-running operation, as GET /v1beta/batches/{id} answers. */
export type Operation = {
  name?: string
  done?: boolean
  metadata?: Meta
  error?: unknown
  response?: {
    responsesFile?: string
    inlinedResponses?: { inlinedResponses?: InlinedResponse[] }
  }
}

type InlinedResponse = { response?: unknown; error?: unknown; metadata?: { key?: unknown } }

const n = (x: string | number | undefined) => Number(x ?? 0) || 0

/** The end each final state is. */
const ENDS: Readonly<Record<string, NonNullable<RemoteBatch["outcome"]>>> = {
  SUCCEEDED: "completed",
  FAILED: "failed",
  CANCELLED: "cancelled",
  EXPIRED: "expired",
}

/**
 * A batch operation in neutral terms. PENDING is validating (queued, nothing run), RUNNING in progress, and
 * SUCCEEDED, FAILED, CANCELLED and EXPIRED the ends. The results are where the operation's response says: a
 * responses file (`files/…`) or inline in the operation itself (its name is kept, to read them again).
 */
export function remote(op: Operation): RemoteBatch {
  const meta = op.metadata ?? {}
  const state = meta.state ?? "BATCH_STATE_UNSPECIFIED"
  const word = state.replace(/^(BATCH|JOB)_STATE_/, "")
  const s = meta.batchStats ?? {}
  const total = n(s.requestCount)
  const ok = n(s.successfulRequestCount)
  const failed = n(s.failedRequestCount)
  const out: RemoteBatch = {
    id: op.name ?? "",
    status: state,
    phase: word === "PENDING" ? "validating" : "in_progress",
    counts: { total, done: ok + failed, failed },
    createdAt: meta.createTime ? Date.parse(meta.createTime) : 0,
  }
  const end = ENDS[word]
  if (!end) return out
  out.phase = "ended"
  out.outcome = end
  if (end === "failed" && op.error) out.error = statusError(op.error)
  const file = op.response?.responsesFile
  if (file) out.files = { output: file }
  else if (op.response?.inlinedResponses) out.files = { output: op.name ?? "" }
  // one line per request that ran; a request never run (cancelled, expired) has none
  if (out.files) out.expect = { output: { min: ok + failed, max: total } }
  return out
}

/** The Batch API of the gemini provider on the provider's own wire; `problems` checks a job's output schema. */
export function geminiBatch(
  w: Wire,
  model: string,
  problems: (schema: Record<string, unknown>) => string[],
): BatchClient {
  const path = modelPath(model)
  // a schema the API would refuse: found while lines are written, thrown by `create` before anything is sent
  let refused: string[] = []

  const json = { "content-type": "application/json" }

  /** Uploads the request file (resumable: start, then upload and finalize in one request); its `files/…` name. */
  const upload = async (file: string, tag: BatchTag, signal: AbortSignal): Promise<string> => {
    const size = Bun.file(file).size
    const started = await send(w, "POST", "/upload/v1beta/files", signal, {
      body: JSON.stringify({ file: { displayName: tag.tag } }),
      headers: {
        ...json,
        "x-goog-upload-protocol": "resumable",
        "x-goog-upload-command": "start",
        "x-goog-upload-header-content-length": String(size),
        "x-goog-upload-header-content-type": "application/jsonl",
      },
    })
    const url = started.headers.get("x-goog-upload-url")
    if (!url)
      throw new ProviderError("bad_response", "the Files API gave no x-goog-upload-url", {
        retryable: true,
        status: started.status,
      })
    const done = await send(w, "POST", url, signal, {
      body: Bun.file(file),
      headers: {
        "content-length": String(size),
        "x-goog-upload-offset": "0",
        "x-goog-upload-command": "upload, finalize",
      },
      timeoutMs: Math.max(w.timeoutMs, UPLOAD_TIMEOUT_MS),
    })
    const name = (done.json as { file?: { name?: unknown } } | null)?.file?.name
    if (typeof name !== "string")
      throw new ProviderError("bad_response", "the Files API's answer names no file", {
        retryable: true,
        status: done.status,
      })
    return name
  }

  /** The inline requests of a request file, or undefined when the create body would pass the inline limit. */
  const inline = async (file: string): Promise<unknown[] | undefined> => {
    if (Bun.file(file).size > INLINE_LIMIT_BYTES) return undefined
    const requests = (await Bun.file(file).text())
      .split("\n")
      .filter((l) => l.trim())
      .map((l) => {
        const { key, request } = JSON.parse(l) as { key: string; request: unknown }
        return { request, metadata: { key } }
      })
    return JSON.stringify(requests).length + 200 > INLINE_LIMIT_BYTES ? undefined : requests
  }

  /** The operations of batches, page by page, until none is left (the API says nothing of their order). */
  const list = async function* (signal: AbortSignal): AsyncGenerator<Operation> {
    let token: string | undefined
    for (let page = 0; page < 1000; page++) {
      const query = `pageSize=100${token ? `&pageToken=${encodeURIComponent(token)}` : ""}`
      const got = await send(w, "GET", `/v1beta/batches?${query}`, signal)
      const data = got.json as { operations?: Operation[]; nextPageToken?: string }
      for (const op of data.operations ?? []) yield op
      token = data.nextPageToken
      if (!token) return
    }
  }

  /** A GET whose body is streamed to disk under a stall watch (a responses file). */
  const fetchStream = async (url: string, to: string, signal: AbortSignal) => {
    const watch = stallWatch(w.timeoutMs)
    try {
      let response: Response
      try {
        response = await fetch(url, {
          headers: { "x-goog-api-key": w.key },
          signal: AbortSignal.any([signal, watch.signal]),
        })
      } catch (cause) {
        throw unanswered(cause, signal, w.timeoutMs)
      }
      if (!response.ok) {
        const text = await response.text().catch(() => "")
        let detail: unknown = text
        try {
          detail = JSON.parse(text) as unknown
        } catch {}
        throw w.first.check(classify(response.status, detail, response.headers), detail)
      }
      w.first.ok()
      try {
        await save(response.body, to, watch.touch)
      } catch (cause) {
        if (cause instanceof StoreError) throw cause
        throw unanswered(cause, signal, w.timeoutMs)
      }
      return announced(response)
    } finally {
      watch.stop()
    }
  }

  /** A stream of one string, for `save`. */
  const streamOf = (text: string) =>
    new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode(text))
        controller.close()
      },
    })

  const retrieve = async (id: string, signal: AbortSignal) =>
    remote((await send(w, "GET", `/v1beta/${id}`, signal)).json as Operation)

  return {
    limits: GEMINI_BATCH_LIMITS,

    line(customId: string, request: Request): string {
      if (request.schema && refused.length === 0) refused = problems(request.schema.schema)
      return `{"key":${JSON.stringify(customId)},"request":${JSON.stringify(body(request))}}`
    },

    async create(file, tag, signal) {
      signal.throwIfAborted()
      if (refused.length) throw schemaRefusal(refused)
      const requests = await inline(file)
      const inputConfig = requests
        ? { requests: { requests } }
        : { fileName: await upload(file, tag, signal) }
      const created = await send(w, "POST", `/v1beta/${path}:batchGenerateContent`, signal, {
        body: JSON.stringify({ batch: { model: path, displayName: tag.tag, inputConfig } }),
        headers: json,
        timeoutMs: Math.max(w.timeoutMs, UPLOAD_TIMEOUT_MS),
      })
      return remote(created.json as Operation)
    },

    retrieve,

    async find(tag, signal): Promise<Found> {
      const since = tag.since - CLOCK_SLACK_MS
      let found: RemoteBatch | undefined
      for await (const op of list(signal)) {
        if (op.metadata?.displayName !== tag.tag) continue
        const r = remote(op)
        if (r.createdAt < since) continue
        if (!found || r.createdAt > found.createdAt) found = r
      }
      return found ? { found } : { none: true }
    },

    async cancel(id, signal) {
      await send(w, "POST", `/v1beta/${id}:cancel`, signal, { body: "{}", headers: json })
      return retrieve(id, signal)
    },

    async download(batch, to, signal) {
      const source = batch.files?.output
      if (!source) return {}
      if (source.startsWith("files/")) {
        const length = await fetchStream(
          `${w.base}/download/v1beta/${source}:download?alt=media`,
          to.output,
          signal,
        )
        return { output: to.output, announced: { output: length } }
      }
      // inline results: the operation holds them; written as the lines a responses file would hold
      const op = (await send(w, "GET", `/v1beta/${source}`, signal)).json as Operation
      const answers = op.response?.inlinedResponses?.inlinedResponses ?? []
      const text = answers
        .map((a) =>
          JSON.stringify({
            key: a.metadata?.key,
            ...(a.error !== undefined ? { error: a.error } : { response: a.response }),
          }),
        )
        .map((l) => `${l}\n`)
        .join("")
      await save(streamOf(text), to.output)
      return { output: to.output, announced: { output: Buffer.byteLength(text) } }
    },

    parse(text: string): BatchLine {
      const line = JSON.parse(text) as { key?: unknown; response?: unknown; error?: unknown } | null
      const customId = line?.key
      if (typeof customId !== "string") throw new Error("the line has no key")
      if (line?.error !== undefined) return { customId, error: statusError(line.error) }
      if (line?.response === undefined) throw new Error("the line has neither a response nor an error")
      try {
        return { customId, reply: reply(line.response) }
      } catch (error) {
        if (error instanceof ProviderError) return { customId, error }
        throw error
      }
    },
  }
}
