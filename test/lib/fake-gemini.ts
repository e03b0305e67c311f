/**
 * A fake Gemini API server on 127.0.0.1 (generativelanguage v1beta) that speaks the official wire format, with
 * switchable faults: realtime `POST /v1beta/models/{model}:generateContent`, and the Batch API
 * (`:batchGenerateContent` inline or from a file, `GET /v1beta/batches[/{id}]`, `POST /v1beta/batches/{id}:cancel`),
 * the Files API's resumable upload (`POST /upload/v1beta/files`) and download
 * (`GET /download/v1beta/files/{id}:download?alt=media`).
 *
 * Written from these pages (Google's discovery document was not found whole: fake-gemini-wire.ts checks requests against
 * it when it is given (`DISCOVERY_AT`), and against these pages always):
 * - ai.google.dev/api/generate-content: GenerateContentRequest, Content, Part, GenerationConfig,
 *   GenerateContentResponse, Candidate, FinishReason, PromptFeedback, UsageMetadata;
 * - ai.google.dev/gemini-api/docs/structured-output: responseMimeType with responseJsonSchema;
 * - ai.google.dev/gemini-api/docs/troubleshooting and ai.google.dev/gemini-api/docs/rate-limits: the error body
 *   (google.rpc.Status under `error`), 429 RESOURCE_EXHAUSTED with QuotaFailure and RetryInfo.retryDelay, an invalid
 *   key as 400 INVALID_ARGUMENT with ErrorInfo reason API_KEY_INVALID;
 * - ai.google.dev/gemini-api/docs/batch-mode and ai.google.dev/api/batch-mode: the create body
 *   (`{batch: {displayName, inputConfig: {requests: {requests: [{request, metadata: {key}}]}} | {fileName}}}`), the
 *   operation (`name`, `metadata` the GenerateContentBatch with `state` BATCH_STATE_* and `batchStats`, `done`,
 *   `response.inlinedResponses.inlinedResponses` or `response.responsesFile`), output lines `{key, response|error}`;
 * - ai.google.dev/api/files: the resumable upload (x-goog-upload-* headers, the upload URL, `{file: {name}}`).
 */
import {
  answer,
  checkRequest,
  discoveryErrors,
  exhausted,
  inputOf,
  isRecord,
  lineStatus,
  rpc,
  status,
  type FaultKind,
} from "./fake-gemini-wire.ts"
import type { BatchFault, BatchOptions } from "./fake-batch.ts"
import type { BatchServer, FakeRecord } from "./batch-contract.ts"

/** The wire helpers the tests use too, from fake-gemini-wire.ts. */
export { checkRequest, inputOf, promptTokens, type FaultKind } from "./fake-gemini-wire.ts"

/** How a fake is started: its key, its answers, its clock and its batches' pace. */
export interface FakeOptions {
  /** The key `x-goog-api-key` must carry; any non-empty key when undefined. */
  apiKey?: string
  /** The text the model answers `input` (the request's user text) with; default `echo: ${input}`. */
  reply?: (input: string, body: Record<string, unknown>) => string
  /** Tokens of the prompt reported as read from the context cache (`cachedContentTokenCount`), per input. */
  cached?: (input: string) => number
  /** The fake's clock for batches (ms). */
  now?: () => number
  /** How long a batch takes to run all its lines (0: it has ended once created). */
  processingMs?: number
  /** A batch line whose input this names ends in this google.rpc.Status instead of an answer. */
  lineError?: (input: string) => { code: number; message: string; status: string } | undefined
  /**
   * The shared batch options of the other fakes (fake-batch.ts), as the contract suite starts a fake with them: its
   * `processingMs` when the one above is not given; `faults` and `script` (a batch ending part way, expired, cancelled
   * or failed; lines errored by custom_id, as the google.rpc.Status of their HTTP status). A batch runs its lines in
   * request order, whatever `shuffle` says. `cancelMs` is taken and does nothing: a Gemini batch has no cancelling
   * state, a cancel ends it.
   */
  batch?: BatchOptions
}

/** One batch the fake holds. */
export interface FakeBatch {
  name: string
  displayName: string
  model: string
  createdAt: number
  /** How its requests came: inline in the create body, or as an uploaded file. */
  via: "inline" | "file"
  lines: { key: string; input: string; request: Record<string, unknown> }[]
  processingMs: number
  /** Set when a cancel came: the lines run by then are all that ever run. */
  cancelledAt?: number
  /** Its fault (`batch.script`'s next, else `batch.faults`), taken at its create. */
  fault: BatchFault
}

/** A running fake: its URL, its script of faults, what it received, billed and holds. */
export interface Fake extends AsyncDisposable {
  /** The base URL, as GEMINI_BASE_URL or a job's base_url takes it. */
  url: string
  /** Faults per input, in order: the first request of an input gets the first, and so on; then "ok". */
  script: Map<string, FaultKind[]>
  /** The retryDelay seconds of a "429" (default "1"). */
  retryDelay: string
  /** Every realtime body answered with success, in order. */
  bodies: Record<string, unknown>[]
  /** Every realtime request that reached the model (past the key and format checks): its input, when, what it got. */
  log: { input: string; at: number; kind: FaultKind }[]
  /** The headers of the last realtime request. */
  headers: Headers | undefined
  /** What the fake found wrong in a request, against the documented format: must stay empty. */
  invalid: { body: unknown; errors: string[] }[]
  /** Requests received, of every kind. */
  requests: number
  /** input → answers billed (realtime 200s and batch lines answered). */
  paid: Map<string, number>
  /** The Batch API's records, in creation order. */
  batches: FakeBatch[]
  /** Uploaded files by name (`files/…`), their bytes as text. */
  files: Map<string, string>
  /** The options a batch created from now on takes (`processingMs`). */
  options: FakeOptions
  /** Batch lines answered and billed, over every batch. */
  paidLines: number
  /** How many of a batch's lines have run by now (in request order: its lines 0 to this one less). */
  ran(b: FakeBatch): number
  stop(): Promise<void>
}

const iso = (ms: number) => new Date(ms).toISOString()

/** Starts a fake Gemini API on a free port of 127.0.0.1; `await using` stops it. */
export async function startFakeGemini(options: FakeOptions = {}): Promise<Fake> {
  const hung = new Set<() => void>()
  const reply = options.reply ?? ((input: string) => `echo: ${input}`)
  const now = () => (options.now ?? Date.now)()
  const seen = new Map<string, number>()
  let uploads = 0
  // the faults of the next batches created, one each (`batch.script`)
  const scripts = [...(options.batch?.script ?? [])]

  /** A key check: none is 403 PERMISSION_DENIED, a wrong one 400 API_KEY_INVALID, as the API answers. */
  const denied = (req: Request): Response | undefined => {
    const key = req.headers.get("x-goog-api-key")
    if (!key)
      return status(
        403,
        "PERMISSION_DENIED",
        "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
      )
    if (options.apiKey !== undefined && key !== options.apiKey)
      return status(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [
        rpc("ErrorInfo", {
          reason: "API_KEY_INVALID",
          domain: "googleapis.com",
          metadata: { service: "generativelanguage.googleapis.com" },
        }),
      ])
    return undefined
  }

  const faultOf = (input: string): FaultKind => {
    const n = seen.get(input) ?? 0
    seen.set(input, n + 1)
    return fake.script.get(input)?.[n] ?? "ok"
  }

  /** An answer, checked against the discovery document's schema `name` (when it is there) before it goes out. */
  const sent = (name: string, value: unknown): Response => {
    const errors = discoveryErrors(name, value)
    if (errors.length) fake.invalid.push({ body: { answer: name }, errors })
    return Response.json(value)
  }

  const generate = async (req: Request): Promise<Response> => {
    fake.headers = req.headers
    const refused = denied(req)
    if (refused) return refused
    let body: Record<string, unknown>
    try {
      body = (await req.json()) as Record<string, unknown>
    } catch {
      return status(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
    }
    const errors = checkRequest(body)
    if (errors.length) {
      fake.invalid.push({ body, errors })
      return status(400, "INVALID_ARGUMENT", errors.join("; "))
    }
    const input = inputOf(body)
    const kind = faultOf(input)
    fake.log.push({ input, at: Date.now(), kind })
    switch (kind) {
      case "429":
        return exhausted(false, fake.retryDelay)
      case "quota":
        return exhausted(true, fake.retryDelay)
      case "500":
        return status(
          500,
          "INTERNAL",
          "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
        )
      case "503":
        return status(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
      case "invalid":
        return status(400, "INVALID_ARGUMENT", "Request contains an invalid argument.")
      case "garbage":
        return new Response("<html>oops</html>", { headers: { "content-type": "application/json" } })
      case "reset":
        return new Response(
          new ReadableStream({
            start(controller) {
              controller.enqueue(new TextEncoder().encode('{"candidates":'))
              controller.error()
            },
          }),
          { headers: { "content-type": "application/json" } },
        )
      case "hang":
        return new Promise<Response>((resolve) => {
          const release = () => {
            hung.delete(release)
            resolve(status(500, "INTERNAL", "released"))
          }
          hung.add(release)
          req.signal.addEventListener("abort", release)
        })
    }
    fake.bodies.push(body)
    fake.paid.set(input, (fake.paid.get(input) ?? 0) + 1)
    const text = reply(input, body)
    return sent(
      "GenerateContentResponse",
      answer(body, text, kind, options.cached?.(input) ?? 0, fake.requests),
    )
  }

  // ---- the Batch API

  /** When a batch's fault ends it part way (`end`): at what time, after how many lines, and in which state. */
  const stopOf = (b: FakeBatch) => {
    const end = b.fault.end
    if (!end) return undefined
    const after = Math.min(1, Math.max(0, end.after))
    return {
      at: b.createdAt + b.processingMs * after,
      processed: Math.floor(b.lines.length * after),
      state: `BATCH_STATE_${end.outcome === "expired" ? "EXPIRED" : end.outcome === "cancelled" ? "CANCELLED" : "FAILED"}`,
    }
  }

  /** How many of a batch's lines have run by now: linearly over its processingMs, up to a cancel or its end. */
  const ran = (b: FakeBatch): number => {
    const stop = stopOf(b)
    const at = Math.min(now(), b.cancelledAt ?? Infinity)
    if (stop && at >= stop.at) return stop.processed
    const n = b.lines.length
    const linear =
      b.processingMs <= 0 ? n : Math.min(n, Math.floor(((at - b.createdAt) * n) / b.processingMs))
    return Math.min(linear, stop?.processed ?? n)
  }

  const stateOf = (b: FakeBatch): string => {
    const done = ran(b)
    if (b.cancelledAt !== undefined) return "BATCH_STATE_CANCELLED"
    const stop = stopOf(b)
    if (stop && now() >= stop.at) return stop.state
    if (done === b.lines.length) return "BATCH_STATE_SUCCEEDED"
    return done === 0 ? "BATCH_STATE_PENDING" : "BATCH_STATE_RUNNING"
  }

  /** The Status a line ends in, if it errs: its input's (`lineError`), else its fault's (by custom_id). */
  const errorOf = (b: FakeBatch, i: number) => {
    const line = b.lines[i]!
    const own = options.lineError?.(line.input)
    if (own) return own
    const shared = b.fault.lineError?.(line.key, line.input, line.request)
    return shared && lineStatus(shared)
  }

  /** A line's result: its answer, or the Status it errs with (`errorOf`). */
  const resultOf = (b: FakeBatch, i: number) => {
    const line = b.lines[i]!
    const error = errorOf(b, i)
    if (error) return { key: line.key, error }
    return {
      key: line.key,
      response: answer(
        line.request,
        reply(line.input, line.request),
        "ok",
        options.cached?.(line.input) ?? 0,
        i,
      ),
    }
  }

  const operation = (b: FakeBatch) => {
    const state = stateOf(b)
    const done = ran(b)
    let failed = 0
    for (let i = 0; i < done; i++) if (errorOf(b, i)) failed++
    const ended = state !== "BATCH_STATE_PENDING" && state !== "BATCH_STATE_RUNNING"
    const op: Record<string, unknown> = {
      name: b.name,
      metadata: {
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
        model: b.model,
        displayName: b.displayName,
        createTime: iso(b.createdAt),
        updateTime: iso(now()),
        batchStats: {
          requestCount: String(b.lines.length),
          successfulRequestCount: String(done - failed),
          failedRequestCount: String(failed),
          pendingRequestCount: String(ended ? 0 : b.lines.length - done),
        },
        state,
        name: b.name,
      },
      done: ended,
    }
    if (!ended) return op
    if (state === "BATCH_STATE_FAILED") {
      op.error = { code: 13, message: "The batch failed.", status: "INTERNAL" }
      return op
    }
    const results = Array.from({ length: done }, (_, i) => resultOf(b, i))
    if (b.via === "file") {
      const file = `files/batch-${b.name.slice("batches/".length)}`
      fake.files.set(file, results.map((r) => `${JSON.stringify(r)}\n`).join(""))
      op.response = {
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatchOutput",
        responsesFile: file,
      }
    } else {
      op.response = {
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatchOutput",
        inlinedResponses: {
          inlinedResponses: results.map(({ key, ...r }) => ({ ...r, metadata: { key } })),
        },
      }
    }
    return op
  }

  /** Bills each line once, the first time its batch is seen ended. */
  const billed = new Set<string>()
  const bill = (b: FakeBatch) => {
    const op = operation(b)
    if (!op.done || billed.has(b.name)) return op
    billed.add(b.name)
    // a failed batch serves no results: none of its lines is billed
    if (op.error) return op
    const done = ran(b)
    for (let i = 0; i < done; i++) {
      if (errorOf(b, i)) continue
      const input = b.lines[i]!.input
      fake.paid.set(input, (fake.paid.get(input) ?? 0) + 1)
      fake.paidLines++
    }
    return op
  }

  const createBatch = async (req: Request, model: string): Promise<Response> => {
    let body: {
      batch?: {
        displayName?: unknown
        inputConfig?: { requests?: { requests?: unknown[] }; fileName?: unknown }
      }
    }
    try {
      body = (await req.json()) as typeof body
    } catch {
      return status(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
    }
    const wrong = discoveryErrors("BatchGenerateContentRequest", body)
    if (wrong.length) fake.invalid.push({ body: "(the create body)", errors: wrong })
    const config = body.batch?.inputConfig
    let lines: { key: string; request: unknown }[]
    let via: FakeBatch["via"]
    if (Array.isArray(config?.requests?.requests)) {
      via = "inline"
      lines = config.requests.requests.map((r) => {
        const x = r as { request?: unknown; metadata?: { key?: unknown } }
        return { key: String(x.metadata?.key ?? ""), request: x.request }
      })
    } else if (typeof config?.fileName === "string") {
      via = "file"
      const text = fake.files.get(config.fileName)
      if (text === undefined) return status(404, "NOT_FOUND", `File ${config.fileName} not found.`)
      lines = text
        .split("\n")
        .filter((l) => l.trim())
        .map((l) => JSON.parse(l) as { key: string; request: unknown })
    } else {
      fake.invalid.push({ body, errors: ["batch.inputConfig: requests or fileName required"] })
      return status(400, "INVALID_ARGUMENT", "batch.input_config is required.")
    }
    const errors = lines.flatMap((l, i) =>
      !isRecord(l.request)
        ? [`requests[${i}].request: required`]
        : checkRequest(l.request).map((e) => `requests[${i}].request.${e}`),
    )
    if (errors.length) {
      fake.invalid.push({ body, errors })
      return status(400, "INVALID_ARGUMENT", errors[0]!)
    }
    const b: FakeBatch = {
      name: `batches/fake${fake.batches.length + 1}x${String(now()).slice(-6)}`,
      displayName: typeof body.batch?.displayName === "string" ? body.batch.displayName : "",
      model,
      createdAt: now(),
      via,
      lines: lines.map((l) => ({
        key: l.key,
        request: l.request as Record<string, unknown>,
        input: inputOf(l.request as Record<string, unknown>),
      })),
      processingMs: options.processingMs ?? options.batch?.processingMs ?? 0,
      fault: scripts.length ? scripts.shift()! : (options.batch?.faults ?? {}),
    }
    fake.batches.push(b)
    return sent("Operation", bill(b))
  }

  const batchRoute = (req: Request, url: URL): Response | Promise<Response> | undefined => {
    const path = url.pathname
    const create = /^\/v1beta\/(models\/[^/:]+):batchGenerateContent$/.exec(path)
    if (create && req.method === "POST") return createBatch(req, create[1]!)
    if (path === "/v1beta/batches" && req.method === "GET") {
      const size = Math.min(Number(url.searchParams.get("pageSize") ?? 50) || 50, 1000)
      const from = Number(url.searchParams.get("pageToken") ?? 0) || 0
      const newest = fake.batches.slice().reverse()
      const page = newest.slice(from, from + size)
      const next = from + size < newest.length ? String(from + size) : undefined
      return sent("ListOperationsResponse", {
        operations: page.map(bill),
        ...(next && { nextPageToken: next }),
      })
    }
    const one = /^\/v1beta\/(batches\/[^/:]+)(:cancel)?$/.exec(path)
    if (one) {
      const b = fake.batches.find((x) => x.name === one[1])
      if (!b) return status(404, "NOT_FOUND", `Batch ${one[1]} not found.`)
      if (one[2] && req.method === "POST") {
        if (!operation(b).done) b.cancelledAt = now()
        return Response.json({})
      }
      if (!one[2] && req.method === "GET") return sent("Operation", bill(b))
    }
    if (path === "/upload/v1beta/files" && req.method === "POST") {
      const command = req.headers.get("x-goog-upload-command")
      if (command === "start") {
        const id = ++uploads
        return new Response(null, {
          headers: {
            "x-goog-upload-url": `${fake.url}/upload/v1beta/files?upload_id=${id}`,
            "x-goog-upload-status": "active",
          },
        })
      }
      if (command === "upload, finalize" && url.searchParams.get("upload_id")) {
        return req.text().then((text) => {
          const name = `files/upload${url.searchParams.get("upload_id")}`
          fake.files.set(name, text)
          return Response.json({
            file: {
              name,
              mimeType: "application/jsonl",
              sizeBytes: String(Buffer.byteLength(text)),
              state: "ACTIVE",
            },
          })
        })
      }
      return status(400, "INVALID_ARGUMENT", "Bad upload command.")
    }
    const download = /^\/download\/v1beta\/(files\/[^/:]+):download$/.exec(path)
    if (download && req.method === "GET") {
      const text = fake.files.get(download[1]!)
      if (text === undefined) return status(404, "NOT_FOUND", `File ${download[1]} not found.`)
      return new Response(text, { headers: { "content-type": "application/jsonl" } })
    }
    return undefined
  }

  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    idleTimeout: 0,
    maxRequestBodySize: 1024 * 1024 * 1024,
    fetch(req) {
      fake.requests++
      const url = new URL(req.url)
      if (req.method === "POST" && /^\/v1beta\/models\/[^/:]+:generateContent$/.test(url.pathname))
        return generate(req)
      const refused = denied(req)
      if (refused) return refused
      const routed = batchRoute(req, url)
      if (routed) return routed
      // Google answers a path it does not serve with an HTML page, not a Status
      return new Response(
        `<!DOCTYPE html><title>Error 404 (Not Found)!!1</title><p>The requested URL <code>${url.pathname}</code> was not found on this server.`,
        {
          status: 404,
          headers: { "content-type": "text/html; charset=UTF-8" },
        },
      )
    },
    error() {
      return new Response(null, { status: 500 })
    },
  })

  const fake: Fake = {
    url: `http://127.0.0.1:${server.port}`,
    script: new Map(),
    retryDelay: "1",
    bodies: [],
    log: [],
    headers: undefined,
    invalid: [],
    requests: 0,
    paid: new Map(),
    batches: [],
    files: new Map(),
    options,
    paidLines: 0,
    ran,
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

/**
 * The fake's batches as the batch-client contract suite reads a fake's engine (batch-contract.ts `BatchServer.batch`):
 * each batch a FakeRecord (its keys as custom_ids, run in request order, `done` read live from the fake's clock), the
 * `processingMs` that the batches created next take, and the lines billed.
 */
export function contractView(fake: Fake): BatchServer["batch"] {
  const records = new Map<FakeBatch, FakeRecord>()
  const recordOf = (b: FakeBatch): FakeRecord => {
    let r = records.get(b)
    if (!r) {
      r = {
        id: b.name,
        createdAt: b.createdAt,
        custom_ids: b.lines.map((l) => l.key),
        order: Uint32Array.from(b.lines, (_, i) => i),
        get done() {
          return fake.ran(b)
        },
      }
      records.set(b, r)
    }
    return r
  }
  return {
    get batches() {
      return fake.batches.map(recordOf)
    },
    get processingMs() {
      return fake.options.processingMs ?? fake.options.batch?.processingMs ?? 0
    },
    set processingMs(ms: number) {
      fake.options.processingMs = ms
    },
    get paidLines() {
      return fake.paidLines
    },
  }
}
