/**
 * The provider-neutral engine behind the fakes' batch APIs (fake-openai.ts: Files + Batch API; fake-anthropic.ts:
 * Message Batches). A batch is a list of lines; it moves through its phases on the fake's clock
 * (validating → in progress → finalizing → ended, or cancelling → ended), its lines are processed in a
 * deterministic order spread linearly over `processingMs`, and each processed line is paid into the fake's `paid`
 * map, as a realtime call would be. No timers: a batch is brought up to date whenever the fake looks at it (a GET,
 * a list, a cancel, a results download, a create of another batch, a read of a record's `status`, or `settle()`), so
 * a test that drives `now` sees exactly the state of that moment, and an "instant" batch (all durations 0) is
 * processed in one pass, O(lines), at its first look.
 */
import { validateSchema, type Spec } from "./spec.ts"

/** How a batch ends early (after a share of its lines were processed) instead of completing. */
export type Outcome = "expired" | "cancelled" | "failed"

/**
 * An error for one line. `type` defaults to what the provider calls an error of that status (OpenAI: 400/404 →
 * invalid_request_error, 429 → requests, 500+ → server_error; Anthropic: 400 → invalid_request_error, 429 →
 * rate_limit_error, 500 → api_error, 529 → overloaded_error, …); `message` to a generic one.
 */
export interface LineError {
  status: number
  type?: string
  message?: string
  /** OpenAI's `error.code` (null by default). */
  code?: string | null
}

/** What can go wrong with one batch; `fake.batch.faults` for every batch, or one per batch from `fake.batch.script`. */
export interface BatchFault {
  /** The batch ends with `outcome` once the share `after` (0..1) of its lines was processed. */
  end?: { outcome: Outcome; after: number }
  /** Errors the line (it is then not paid); undefined runs it. `input` is the text that keys `paid`. */
  lineError?: (customId: string, input: string, body: Record<string, unknown>) => LineError | undefined
  /**
   * OpenAI: changes the answer body a succeeded line is served with (say, an embedding of the wrong length); the line
   * is still paid. The body returned is served as it is.
   */
  reshape?: (customId: string, answer: Record<string, unknown>) => Record<string, unknown>
  /** Results in a deterministic order that is not the request order (default true). */
  shuffle?: boolean
  /** The first GET of the batch after its create answers 404; later GETs work. */
  notFoundOnce?: boolean
}

/**
 * The `batch` options of a fake; all of them are also fields of `fake.batch`, which a test may change at any time. A
 * batch takes the durations, its fault and the limits as they are when it is created (`cancelMs` when it is
 * cancelled), so a change applies to the batches created after it.
 */
export interface BatchOptions {
  /** How long a batch validates (OpenAI's `validating`; Anthropic shows it as in_progress), ms. Default 0. */
  validatingMs?: number
  /** How long processing the whole batch takes, ms; lines complete linearly over it. Default 0. */
  processingMs?: number
  /** How long a batch finalizes after its last line (OpenAI's `finalizing`), ms. Default 0. */
  finalizingMs?: number
  /** How long a batch stays cancelling after a cancel, ms. Default 0. */
  cancelMs?: number
  faults?: BatchFault
  /** Faults for the next batches created, one each, in order; an entry wins over `faults`. */
  script?: BatchFault[]
  /**
   * OpenAI: the enqueued-token limit. The input tokens of every batch not yet ended plus the new batch's must stay
   * within it, else the new batch fails validation with token_limit_exceeded. Off when undefined.
   */
  enqueuedTokenLimit?: number
  /**
   * Anthropic: the most requests that may sit in batches still processing. A create that would pass it gets
   * HTTP 429 rate_limit_error (QUEUE_LIMIT_MESSAGE). Off when undefined.
   */
  queueLimit?: number
  /** Most requests in one batch (OpenAI 50,000 lines per input file; Anthropic 100,000 requests). */
  maxRequests?: number
  /** Largest input (OpenAI 200 MB input file; Anthropic 256 MB create body), bytes. */
  maxBytes?: number
}

/**
 * What one download of a result file serves instead of the file, as a broken gateway or proxy does, each with a 200:
 * the body cut mid-line (streamed: Bun announces no Content-Length for one of 256 bytes or more), an empty body, an HTML
 * error page, the file with its middle line left out, or with its first line twice.
 */
export type DownloadFault = "truncated" | "empty" | "html" | "missing_line" | "duplicate_line"

/** The page a broken gateway answers with, status 200. */
export const GATEWAY_PAGE =
  "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n<body><h1>502 Bad Gateway</h1></body></html>\n"

/** One request of a batch. */
export interface BatchLine {
  customId: string
  /** The text that keys `paid` and that `reply` answers: the realtime endpoint's input. */
  input: string
  body: Record<string, unknown>
}

export type Phase = "validating" | "in_progress" | "finalizing" | "cancelling" | "ended"
export type Ending = "completed" | Outcome

/** Where a batch stands at one moment. Times are ms on the fake's clock. */
export interface View {
  phase: Phase
  /** How it ended, once `phase` is ended. */
  ending?: Ending
  total: number
  /** Lines processed so far (succeeded + errored). */
  processed: number
  succeeded: number
  errored: number
  /** Lines the batch ended without processing: 0 until it ended. */
  unprocessed: number
  at: { inProgress?: number; finalizing?: number; cancelling?: number; ended?: number }
}

/** The result of one line, in result order: processed lines first, then (if it ended early) those never run. */
export type Result =
  { type: "succeeded"; content: string } | { type: "errored"; error: LineError } | { type: Outcome }

/** A create call the fake received, accepted or refused. */
export interface CreateRecord {
  /** When, on the fake's clock. */
  at: number
  /** The HTTP status it was answered with. */
  status: number
  /** The batch created, if one was. */
  id?: string
  /** Requests (lines) it carried, as far as they could be read. */
  requests: number
  /** Why it was refused, or why its batch will fail validation. */
  error?: string
}

/** What the engine needs from a fake. */
export interface Host {
  now(): number
  reply(input: string, body: Record<string, unknown>): string
  /** The fake's `paid` map. */
  paid(): Map<string, number>
  /** The provider's name for a phase (and, once ended, for how it ended). */
  status(view: View): string
  /** The provider's own limits, where the options set none. */
  limits: { maxRequests: number; maxBytes: number }
  /** Called for each line that succeeds, as it is paid (Anthropic: the line's prompt-cache use and bill). */
  served?(batch: FakeBatch, index: number): void
}

interface Stop {
  at: number
  processed: number
  outcome: Outcome
  /** How long it stays cancelling (cancelled only). */
  cancelMs: number
}

/** A batch as the engine keeps it; `fake.batch.batches` lists them. `data` is the provider's own. */
export class FakeBatch<D = unknown> {
  /** Lines processed so far, in `order`. */
  done = 0
  succeeded = 0
  errored = 0
  /** The reply of each succeeded line, by line index. */
  readonly content: (string | undefined)[]
  readonly errors = new Map<number, LineError>()
  /** Processing (and result) order: line indexes. */
  readonly order: Uint32Array
  stop: Stop | undefined
  /** The next GET answers 404 (notFoundOnce). */
  hidden: boolean
  readonly custom_ids: string[]

  constructor(
    private readonly engine: BatchEngine<D>,
    readonly seq: number,
    readonly id: string,
    readonly createdAt: number,
    readonly lines: BatchLine[],
    readonly metadata: Record<string, string> | null,
    /** Fails validation: validating, then failed with nothing processed. */
    readonly refused: boolean,
    readonly fault: BatchFault,
    readonly timeline: { validatingMs: number; processingMs: number; finalizingMs: number },
    readonly data: D,
  ) {
    this.custom_ids = lines.map((l) => l.customId)
    this.content = new Array(lines.length)
    this.hidden = fault.notFoundOnce === true
    this.order = order(lines.length, fault.shuffle ?? true, seq)
    const end = fault.end
    if (end && !refused) {
      const after = Math.min(1, Math.max(0, end.after))
      this.stop = {
        at: createdAt + timeline.validatingMs + timeline.processingMs * after,
        processed: Math.floor(lines.length * after),
        outcome: end.outcome,
        cancelMs: engine.cancelMs,
      }
    }
  }

  /** The provider's status now (brings the batch up to date). */
  get status(): string {
    return this.engine.host.status(this.engine.observe(this))
  }
}

/** A permutation of 0..n-1: the identity, or a deterministic shuffle (Fisher–Yates on a seeded mulberry32). */
function order(n: number, shuffle: boolean, seed: number): Uint32Array {
  const out = new Uint32Array(n)
  for (let i = 0; i < n; i++) out[i] = i
  if (!shuffle) return out
  let s = (seed * 0x9e3779b1 + 0x2545f491) >>> 0
  const random = () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    const t = out[i]!
    out[i] = out[j]!
    out[j] = t
  }
  // a batch of 2+ lines always comes out in another order than it went in
  if (n > 1 && out.every((v, i) => v === i)) {
    out[0] = 1
    out[1] = 0
  }
  return out
}

/** `fake.batch`: the options (mutable), the records, and the engine the fake's routes call. */
export class BatchEngine<D = unknown> {
  validatingMs: number
  processingMs: number
  finalizingMs: number
  cancelMs: number
  faults: BatchFault | undefined
  script: BatchFault[]
  enqueuedTokenLimit: number | undefined
  queueLimit: number | undefined
  maxRequests: number
  maxBytes: number
  /** Lines that produced a successful result (each also counted in the fake's `paid`). */
  paidLines = 0
  /** Faults for the next result file downloads, one each, in order (`serve`); null serves one intact. */
  downloadFaults: (DownloadFault | null)[] = []
  /**
   * A line (0-based) that every download of every result file has garbled, cut to its first half: the provider's own
   * file is broken there, and downloading again does not mend it.
   */
  garbledLine: number | undefined
  /** Result file downloads served, faulty or not. */
  downloads = 0
  /** Every batch created, in order. */
  readonly batches: FakeBatch<D>[] = []
  /** Every create call received, including refused ones. */
  readonly creates: CreateRecord[] = []
  private readonly byId = new Map<string, FakeBatch<D>>()

  constructor(
    readonly host: Host,
    options: BatchOptions = {},
  ) {
    this.maxRequests = options.maxRequests ?? host.limits.maxRequests
    this.maxBytes = options.maxBytes ?? host.limits.maxBytes
    this.validatingMs = options.validatingMs ?? 0
    this.processingMs = options.processingMs ?? 0
    this.finalizingMs = options.finalizingMs ?? 0
    this.cancelMs = options.cancelMs ?? 0
    this.faults = options.faults
    this.script = options.script ?? []
    this.enqueuedTokenLimit = options.enqueuedTokenLimit
    this.queueLimit = options.queueLimit
  }

  /** A result file's download: its lines as `jsonl` serves them, with the next download fault or the garbled line. */
  serve(lines: Iterator<string>, contentType: string): Response {
    this.downloads++
    const fault = this.downloadFaults.shift() ?? undefined
    if (fault === undefined && this.garbledLine === undefined) return jsonl(lines, contentType)
    const all = [...{ [Symbol.iterator]: () => lines }]
    const garbled = this.garbledLine
    if (garbled !== undefined && all[garbled] !== undefined)
      all[garbled] = all[garbled]!.slice(0, Math.floor(all[garbled]!.length / 2))
    const text = all.length ? `${all.join("\n")}\n` : ""
    const streamed = (body: string, type = contentType) =>
      new Response(
        new ReadableStream<Uint8Array>({
          start(controller) {
            if (body) controller.enqueue(new TextEncoder().encode(body))
            controller.close()
          },
        }),
        { headers: { "content-type": type } },
      )
    switch (fault) {
      case "truncated": {
        // cut inside a line, never just after a newline
        let cut = Math.floor(text.length / 2)
        while (cut > 1 && text[cut - 1] === "\n") cut--
        return streamed(text.slice(0, cut))
      }
      case "empty":
        return streamed("")
      case "html":
        return streamed(GATEWAY_PAGE, "text/html; charset=utf-8")
      case "missing_line":
        all.splice(Math.floor(all.length / 2), 1)
        return streamed(all.length ? `${all.join("\n")}\n` : "")
      case "duplicate_line":
        if (all[0] !== undefined) all.unshift(all[0])
        return streamed(all.length ? `${all.join("\n")}\n` : "")
      default:
        return streamed(text)
    }
  }

  /** Batches whose custom_ids all start with `prefix` (spool's are `${tag}_${n}`), or whose metadata.spool_tag is it. */
  byTag(prefix: string): FakeBatch<D>[] {
    return this.batches.filter(
      (b) =>
        b.metadata?.spool_tag === prefix ||
        (b.custom_ids.length > 0 && b.custom_ids.every((c) => c.startsWith(prefix))),
    )
  }

  find(id: string): FakeBatch<D> | undefined {
    return this.byId.get(id)
  }

  /** The batch a GET asks for: undefined if there is none, or once, right after its create, with notFoundOnce. */
  reveal(id: string): FakeBatch<D> | undefined {
    const b = this.byId.get(id)
    if (!b?.hidden) return b
    b.hidden = false
    return undefined
  }

  /** Creates a batch, taking the next scripted fault (or the global one) and the current durations. */
  create(args: {
    id: (seq: number) => string
    lines: BatchLine[]
    metadata?: Record<string, string> | null
    refused?: boolean
    data: D
  }): FakeBatch<D> {
    const seq = this.batches.length
    const fault = this.script.length ? this.script.shift()! : (this.faults ?? {})
    const batch = new FakeBatch<D>(
      this,
      seq,
      args.id(seq),
      this.host.now(),
      args.lines,
      args.metadata ?? null,
      args.refused === true,
      fault,
      { validatingMs: this.validatingMs, processingMs: this.processingMs, finalizingMs: this.finalizingMs },
      args.data,
    )
    this.batches.push(batch)
    this.byId.set(batch.id, batch)
    return batch
  }

  /** What a batch looks like as its create answers it: just submitted, nothing processed. */
  fresh(b: FakeBatch<D>): View {
    return {
      phase: "validating",
      total: b.lines.length,
      processed: 0,
      succeeded: 0,
      errored: 0,
      unprocessed: 0,
      at: {},
    }
  }

  /** Where the batch stands now, processing (and paying) the lines due by now. */
  observe(b: FakeBatch<D>): View {
    const t = this.host.now()
    const n = b.lines.length
    const { validatingMs, processingMs, finalizingMs } = b.timeline
    const t1 = b.createdAt + validatingMs
    const t2 = t1 + processingMs
    const t3 = t2 + finalizingMs
    const view = (phase: Phase, processed: number, at: View["at"], ending?: Ending): View => {
      this.advance(b, processed)
      const unprocessed = phase === "ended" && ending !== "completed" ? n - b.done : 0
      return {
        phase,
        ...(ending ? { ending } : {}),
        total: n,
        processed: b.done,
        succeeded: b.succeeded,
        errored: b.errored,
        unprocessed,
        at,
      }
    }
    if (b.refused) {
      return t < t1 ? view("validating", 0, {}) : view("ended", 0, { ended: t1 }, "failed")
    }
    const s = b.stop
    if (s && t >= s.at) {
      const at: View["at"] = {}
      if (s.at >= t1) at.inProgress = t1
      if (s.at > t2 && finalizingMs > 0) at.finalizing = t2
      if (s.outcome === "cancelled") {
        at.cancelling = s.at
        if (t < s.at + s.cancelMs) return view("cancelling", s.processed, at)
        at.ended = s.at + s.cancelMs
      } else at.ended = s.at
      return view("ended", s.processed, at, s.outcome)
    }
    if (t < t1) return view("validating", 0, {})
    const processed = t >= t2 ? n : Math.floor((n * (t - t1)) / processingMs)
    if (t < t2) return view("in_progress", processed, { inProgress: t1 })
    if (t < t3) return view("finalizing", n, { inProgress: t1, finalizing: t2 })
    return view(
      "ended",
      n,
      { inProgress: t1, ...(finalizingMs > 0 ? { finalizing: t2 } : {}), ended: t3 },
      "completed",
    )
  }

  /** Processes lines in order until `processed` are done: each succeeds (paid) or errors by the batch's fault. */
  private advance(b: FakeBatch<D>, processed: number): void {
    const lineError = b.fault.lineError
    const { host } = this
    const paid = host.paid()
    while (b.done < processed) {
      const i = b.order[b.done++]!
      const line = b.lines[i]!
      const error = lineError?.(line.customId, line.input, line.body)
      if (error) {
        b.errors.set(i, error)
        b.errored++
        continue
      }
      const content = host.reply(line.input, line.body)
      b.content[i] = content
      b.succeeded++
      paid.set(line.input, (paid.get(line.input) ?? 0) + 1)
      this.paidLines++
      host.served?.(b, i)
    }
  }

  /** Brings every batch up to date (processes and pays whatever is due by now). */
  settle(): void {
    for (const b of this.batches) this.observe(b)
  }

  /** Batches not yet ended, now. */
  pending(): FakeBatch<D>[] {
    return this.batches.filter((b) => this.observe(b).phase !== "ended")
  }

  /**
   * Cancels a batch that has not ended: the lines processed by now keep their results, the others are cancelled
   * once `cancelMs` has passed. Returns the batch as the cancel answers it: cancelling. Undefined if it had ended.
   */
  cancel(b: FakeBatch<D>): View | undefined {
    const now = this.observe(b)
    if (now.phase === "ended") return undefined
    if (now.phase !== "cancelling") {
      b.stop = {
        at: this.host.now(),
        processed: now.processed,
        outcome: "cancelled",
        cancelMs: this.cancelMs,
      }
    }
    const view = this.observe(b)
    if (view.phase === "cancelling") return view
    // cancelMs 0: it is already cancelled, but the cancel still answers "cancelling", as the APIs do
    const { ended: _ended, ...at } = view.at
    return { ...view, phase: "cancelling", ending: undefined, unprocessed: 0, at }
  }

  /**
   * The two routes on one batch that every batch API has: its GET, and the POST of its cancel, each answered with
   * `json` of the batch (as it stands, or cancelling); `missing` answers for an id no batch has (and, once, for one
   * hidden by notFoundOnce), `ended` for a cancel of a batch that has ended. Undefined for any other request.
   */
  route(
    id: string,
    action: string | undefined,
    method: string,
    answer: {
      json: (b: FakeBatch<D>, view: View) => unknown
      missing: (id: string) => Response
      ended: (b: FakeBatch<D>) => Response
    },
  ): Response | undefined {
    if (action === undefined && method === "GET") {
      const b = this.reveal(id)
      return b ? Response.json(answer.json(b, this.observe(b))) : answer.missing(id)
    }
    if (action === "cancel" && method === "POST") {
      const b = this.find(id)
      if (!b) return answer.missing(id)
      const view = this.cancel(b)
      return view ? Response.json(answer.json(b, view)) : answer.ended(b)
    }
    return undefined
  }

  /** The results in result order: processed lines, then (ended early) the others with the batch's outcome. */
  *results(b: FakeBatch<D>): Generator<{ line: BatchLine; index: number; result: Result }> {
    const view = this.observe(b)
    if (view.phase !== "ended") return
    const outcome = view.ending === "completed" ? undefined : view.ending
    for (let k = 0; k < b.lines.length; k++) {
      const index = b.order[k]!
      const line = b.lines[index]!
      if (k < b.done) {
        const content = b.content[index]
        yield {
          line,
          index,
          result:
            content !== undefined
              ? { type: "succeeded", content }
              : { type: "errored", error: b.errors.get(index)! },
        }
      } else if (outcome) yield { line, index, result: { type: outcome } }
    }
  }

  /** A page of batches, newest first: after `after` (older) or before `before` (newer), `limit` of them. */
  page(limit: number, after?: string, before?: string): { data: FakeBatch<D>[]; hasMore: boolean } {
    const newest = this.batches.slice().reverse()
    if (before !== undefined) {
      const end = newest.findIndex((b) => b.id === before)
      const stop = end < 0 ? 0 : end
      const start = Math.max(0, stop - limit)
      return { data: newest.slice(start, stop), hasMore: start > 0 }
    }
    const start = after !== undefined ? newest.findIndex((b) => b.id === after) + 1 : 0
    if (after !== undefined && start === 0) return { data: [], hasMore: false }
    const data = newest.slice(start, start + limit)
    return { data, hasMore: start + limit < newest.length }
  }
}

/** A list route's `limit`: 20 unless given, at least 1, at most `max`. */
export function pageLimit(raw: string | null, max: number): number {
  const asked = Number(raw ?? 20)
  return Number.isFinite(asked) ? Math.min(max, Math.max(1, Math.floor(asked))) : 20
}

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

/** `length` base62 characters derived from `seed`: the random-looking tail of an id, here deterministic. */
export function base62(seed: string, length: number): string {
  let h = BigInt(Bun.hash(seed))
  let out = ""
  for (let i = 0; i < length; i++) {
    out += BASE62[Number(h % 62n)]
    h = h / 62n || BigInt(Bun.hash(`${out}${seed}`))
  }
  return out
}

/** Seconds since the epoch, as OpenAI writes times. */
export const unix = (ms: number) => Math.floor(ms / 1000)

/** A JSONL body, built and sent in chunks as the client reads it: lines are made on demand, never all at once. */
export function jsonl(lines: Iterator<string>, contentType: string): Response {
  const encoder = new TextEncoder()
  return new Response(
    new ReadableStream<Uint8Array>({
      pull(controller) {
        const chunk: string[] = []
        for (let next = lines.next(); !next.done; next = lines.next()) {
          chunk.push(next.value)
          if (chunk.length === 2000) break
        }
        // joined, not concatenated: a flat string encodes several times faster than a rope
        if (chunk.length) controller.enqueue(encoder.encode(chunk.join("\n") + "\n"))
        if (chunk.length < 2000) controller.close()
      },
    }),
    { headers: { "content-type": contentType } },
  )
}

/** Maps each item through `f`, lazily. */
export function* mapIter<T, U>(items: Iterable<T>, f: (item: T) => U | undefined): Generator<U> {
  for (const item of items) {
    const out = f(item)
    if (out !== undefined) yield out
  }
}

/**
 * Validates request bodies of one schema, fast when they differ only in their user text (as a batch's lines do):
 * a body is keyed by its JSON with every non-empty user text replaced, and each key is validated once, with the first
 * body that has it. The schemas put no constraint on those texts but their type and non-emptiness, so the verdict is
 * the same as validating every body.
 */
export class Validator {
  private readonly cache = new Map<string, string[]>()
  constructor(
    readonly schema: string,
    readonly spec: Spec = "openai",
  ) {}

  errors(body: Record<string, unknown>): string[] {
    const key = skeleton(body)
    let errors = this.cache.get(key)
    if (!errors) {
      errors = validateSchema(this.schema, body, this.spec)
      if (this.cache.size >= 10_000) this.cache.clear()
      this.cache.set(key, errors)
    }
    return errors
  }
}

/** The JSON of a body with its user texts (messages' or input's) replaced by "x", non-empty ones only. */
function skeleton(body: Record<string, unknown>): string {
  const undo: (() => void)[] = []
  const blank = (holder: Record<string, unknown>, key: string) => {
    const value = holder[key]
    if (typeof value === "string" && value !== "") {
      holder[key] = "x"
      undo.push(() => (holder[key] = value))
    }
  }
  blank(body, "input")
  for (const key of ["messages", "input"]) {
    const list = body[key]
    if (!Array.isArray(list)) continue
    for (const m of list as unknown[]) {
      if (!m || typeof m !== "object" || (m as { role?: unknown }).role !== "user") continue
      const message = m as Record<string, unknown>
      blank(message, "content")
      if (Array.isArray(message.content)) {
        for (const part of message.content as unknown[]) {
          if (part && typeof part === "object") blank(part as Record<string, unknown>, "text")
        }
      }
    }
  }
  const key = JSON.stringify(body)
  for (const u of undo) u()
  return key
}
