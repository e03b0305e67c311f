/** Batch mode's packing: the request file of one batch, written and fsynced, then its intent committed (DESIGN §4 rule 3). */
import { closeSync, existsSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from "node:fs"
import { join } from "node:path"
import type { ErrorClass, ProviderError } from "../../plugins/api/errors.ts"
import type { BatchClient, Request } from "../../plugins/api/define.ts"
import * as log from "../base/log.ts"
import type { Job } from "../job/job.ts"
import * as template from "../job/template.ts"
import type { Ledger } from "../ledger/ledger.ts"
import type { Batch, Packable, Run } from "../ledger/types.ts"
import { crashPoint } from "./crash.ts"
import { inputOf, limitsOf } from "./embed.ts"
import { arrange, type Prefixes } from "./prefix.ts"

/** One run's batch work: its ledger, job and owner, the provider's batch client, and where its batch files go. */
export interface BatchScope {
  ledger: Ledger
  run: Run
  job: Job
  owner: string
  api: BatchClient
  /** The run's batch files. */
  dir: string
}

export interface PackOptions extends BatchScope {
  prompt: template.Template
  /** The prompt cache's prefixes (prefix.ts), unless the job turns it off: a batch's lines go prefix by prefix. */
  prefixes?: Prefixes | undefined
}

/**
 * A packed batch (null when nothing could be sent), how many candidates failed before sending (template, size), and a
 * request of each prefix its lines mark for the prompt cache (by prefix key), to prime before the batch is created.
 */
export interface Packed {
  batch: Batch | null
  failed: number
  marked: Map<string, Request>
}

/** The exact bytes of an item's earlier request line, from its batch's request file. */
function requestOf(file: string, offset: number, bytes: number): Promise<string> {
  return Bun.file(file)
    .slice(offset, offset + bytes)
    .text()
}

export function randomTag(): string {
  // letters and digits only: a custom_id is `${tag}_${item}`, within Anthropic's ^[a-zA-Z0-9_-]{1,64}$
  const bytes = crypto.getRandomValues(new Uint8Array(8))
  return `sp${[...bytes].map((b) => (b % 36).toString(36)).join("")}`
}

/** Writes a file with owner-only permissions: to `.part`, fsynced, then renamed into place. */
class FileOut {
  private readonly fd: number
  private readonly part: string
  private chunks: string[] = []
  private size = 0
  bytes = 0

  constructor(readonly path: string) {
    this.part = `${path}.part`
    this.fd = openSync(this.part, "w", 0o600)
  }

  /** Appends a line; returns its byte offset and length (the newline excluded). */
  line(text: string): { offset: number; bytes: number } {
    const bytes = Buffer.byteLength(text)
    const at = { offset: this.bytes, bytes }
    this.chunks.push(text, "\n")
    this.bytes += bytes + 1
    this.size += bytes + 1
    if (this.size >= 1 << 20) this.flush()
    return at
  }

  private flush(): void {
    if (this.chunks.length) writeSync(this.fd, this.chunks.join(""))
    this.chunks = []
    this.size = 0
  }

  close(): void {
    this.flush()
    fsyncSync(this.fd)
    closeSync(this.fd)
    renameSync(this.part, this.path)
  }

  discard(): void {
    closeSync(this.fd)
    rmSync(this.part, { force: true })
  }
}

/**
 * Writes the request file of one batch and commits its intent. A retried item's line is its exact earlier
 * request, read back from the batch file it was sent in, under its new custom_id.
 */
export async function packOne(o: PackOptions, candidates: Packable[], tokenRoom: number): Promise<Packed> {
  const { ledger, run, owner } = o
  const { maxBytes } = o.api.limits
  const tag = randomTag()
  const path = join(o.dir, `${tag}.requests.jsonl`)
  const out = new FileOut(path)
  const lines: { id: number; line: number; offset: number; bytes: number }[] = []
  const failed: { id: number; errorClass: ErrorClass; error: string }[] = []
  const files = new Map<number, string | null>()
  const marked = new Map<string, Request>()
  let tokens = 0
  try {
    for (const item of await arrange(o.prefixes, candidates, ledger, run.id)) {
      const text = await lineOf(o, item, `${tag}_${item.id}`, files, marked)
      if (typeof text !== "string") {
        failed.push({ id: item.id, ...text })
        continue
      }
      const size = Buffer.byteLength(text) + 1
      if (size > maxBytes) {
        failed.push({
          id: item.id,
          errorClass: "bad_request",
          error: `the request is ${size} bytes; a provider batch holds at most ${maxBytes} bytes`,
        })
        continue
      }
      // OpenAI counts a batch's input tokens against the queue; about 4 characters a token
      const estimate = Math.ceil(size / 4)
      if (out.bytes + size > maxBytes || (lines.length > 0 && tokens + estimate > tokenRoom)) break
      if (lines.length === 0 && estimate > tokenRoom && tokenRoom !== Infinity) {
        // never sendable only when larger than the whole queue, with none of ours in it: `tokenRoom` was read before
        // packing began, and a batch of ours that ended since would make a fitting request look too large
        const whole = (await ledger.runs.get(run.id))?.queue_tokens ?? Infinity
        if (estimate > whole && (await emptyOfOthers(o))) {
          failed.push({
            id: item.id,
            errorClass: "queue_limit",
            error: `the request (~${estimate} tokens) is larger than the provider's whole batch queue (${whole} tokens)`,
          })
          continue
        }
        break
      }
      tokens += estimate
      lines.push({ id: item.id, line: lines.length + 1, ...out.line(text) })
      if (lines.length === Math.ceil(candidates.length / 2)) crashPoint("pack")
      if (lines.length % 10_000 === 0) Bun.gc(false)
    }
    if (lines.length === 0) out.discard()
    else out.close()
  } catch (err) {
    out.discard()
    throw err
  }
  const batch = await ledger.batches.intend(
    run.id,
    { tag, requests: path, bytes: out.bytes, tokens },
    lines,
    failed,
    owner,
  )
  if (!batch) return { batch: null, failed: failed.length, marked }
  Bun.gc(false)
  log.info("batch packed", { run: run.name, batch: batch.id, items: lines.length, bytes: out.bytes })
  return { batch, failed: failed.length, marked }
}

/** With no batch of ours in the provider's queue, a request larger than the queue can never be sent. */
async function emptyOfOthers(o: PackOptions): Promise<boolean> {
  return (await o.ledger.batches.live(o.run.id)).every((b) => b.phase === "ended")
}

/** Why an item is never sent: its row cannot fill the template, or (embeddings) its input is over the model's limit. */
type Refused = { errorClass: ErrorClass; error: string }

/** The item's request line: its earlier exact bytes when it has been in a batch whose file is kept, else rendered. */
async function lineOf(
  o: PackOptions,
  item: Packable,
  customId: string,
  files: Map<number, string | null>,
  marked?: Map<string, Request>,
): Promise<string | Refused> {
  if (item.batch_id !== null && item.batch_offset !== null && item.batch_bytes !== null) {
    let file = files.get(item.batch_id)
    if (file === undefined) {
      file = (await o.ledger.batches.get(item.batch_id))?.requests ?? null
      if (file && !existsSync(file)) file = null
      files.set(item.batch_id, file)
    }
    if (file) {
      const before = JSON.parse(await requestOf(file, item.batch_offset, item.batch_bytes)) as {
        custom_id?: unknown
      }
      if (typeof before.custom_id === "string") return JSON.stringify({ ...before, custom_id: customId })
    }
  }
  return render(o, item.data, customId, marked)
}

/**
 * An item's request line rendered from its row: a chat request (`line`), or for an embedding job one input
 * (`embedLine`), checked against the model's per-input limit as a realtime run checks it (embed.ts `inputOf`).
 */
function render(
  o: PackOptions,
  data: string,
  customId: string,
  marked?: Map<string, Request>,
): string | Refused {
  const { job, api } = o
  if (job.request.kind === "embedding") {
    const model = job.provider.model ?? job.provider.name
    const got = inputOf(o.prompt, data, limitsOf(job), model)
    if ("error" in got) return got
    return api.embedLine!(customId, got.text, { dimensions: job.request.dimensions })
  }
  const request = template.requestOf(job, o.prompt, data, o.prefixes)
  if ("unfilled" in request) return { errorClass: "template", error: request.unfilled }
  if (request.cache?.mark && marked && !marked.has(request.cache.key)) marked.set(request.cache.key, request)
  return api.line(customId, request)
}

/** What the learned queue limits leave for a new batch (Infinity when none is known). */
export async function queueRoom(
  o: PackOptions,
): Promise<{ tokens: number; requests: number; batches: number }> {
  const { ledger, run } = o
  const r = await ledger.runs.get(run.id)
  const live = (await ledger.batches.live(run.id)).filter((b) => b.phase !== "ended")
  const tokens = r?.queue_tokens ? r.queue_tokens - live.reduce((a, b) => a + b.tokens, 0) : Infinity
  const requests = r?.queue_requests ? r.queue_requests - live.reduce((a, b) => a + b.count, 0) : Infinity
  const max = o.job.batch.max_live
  return { tokens, requests, batches: max > 0 ? max - live.length : Infinity }
}

/**
 * The provider's queue is full: the batch goes back (its items unsent), and the limit is remembered. `full`: batches
 * of ours fill the queue, so the next pack waits for one to end; else other work fills it, and packing waits until
 * `after` before it asks again.
 */
export async function queueLimited(
  o: PackOptions,
  b: Batch,
  err: ProviderError,
): Promise<{ full: boolean; after: number }> {
  const { ledger, run } = o
  // ours still in the provider's queue: created, not yet ended
  const live = (await ledger.batches.live(run.id)).filter(
    (x) => x.id !== b.id && x.state === "submitted" && x.phase !== "ended",
  )
  // with no number in the message, the limit is at most what is enqueued now
  const limit = err.queueLimit ?? {
    tokens: live.reduce((a, x) => a + x.tokens, 0) || undefined,
    requests: live.reduce((a, x) => a + x.count, 0) || undefined,
  }
  if (limit.tokens !== undefined || limit.requests !== undefined)
    await ledger.batches.learnQueue(run.id, limit)
  const back = await ledger.batches.abandon(b.id, { errorClass: "queue_limit", error: err.message })
  log.warn("the provider's batch queue is full; the batch waits for earlier ones to finish", {
    run: run.name,
    batch: b.id,
    items: back,
    limit,
  })
  return { full: live.length > 0, after: Date.now() + (err.retryAfterMs ?? o.job.batch.poll_max_s * 1000) }
}

/** How many items the realtime tail takes now: those left, when it is at most N of them, the inputs are read and no batch is live; else 0. */
export async function tailItems(o: PackOptions): Promise<number> {
  const { ledger, run, job } = o
  const n = job.limits.tail_realtime
  if (
    n <= 0 ||
    (await ledger.batches.live(run.id)).length > 0 ||
    (await ledger.runs.get(run.id))?.ingested === 0
  )
    return 0
  const c = await ledger.reads.counts(run.id)
  const left = c.pending + c.retry_wait
  return left > n ? 0 : left
}

/**
 * The request file of an intent about to be created: its own, or, when it is not on this machine (made by a worker
 * of another host, or pruned by hand), one written again from the ledger, byte for byte (the provider has no such
 * batch: find said so). Null when neither can be had: the intent is then abandoned, its items never sent.
 */
export async function requestFile(o: PackOptions, b: Batch): Promise<string | null> {
  if (existsSync(b.requests)) return b.requests
  const made = await rerender(o, b)
  if ("path" in made) return made.path
  await o.ledger.batches.abandon(b.id, {
    errorClass: "bad_request",
    error: `the request file ${b.requests} is missing, and cannot be written again from the ledger: ${made.why}`,
  })
  return null
}

/**
 * The request file of a batch not yet created, written again from the ledger alone: a worker that takes over the
 * batches of one that died on another host has no such file. Each line is rendered as packing rendered it (the same
 * job: the run's fingerprint guarantees it) under the batch's custom_id, and must come out at the very offset and
 * length the ledger kept; the path of the file, or why it could not be made so (the intent is then abandoned).
 */
export async function rerender(o: PackOptions, b: Batch): Promise<{ path: string } | { why: string }> {
  const lines = await o.ledger.batches.lines(b.id)
  if (lines.length === 0) return { why: "the ledger holds none of its lines" }
  const path = join(o.dir, `${b.tag}.requests.jsonl`)
  const out = new FileOut(path)
  try {
    for (const [i, item] of lines.entries()) {
      const text = render(o, item.data, `${b.tag}_${item.id}`)
      if (typeof text !== "string") throw new Mismatch(`item ${item.id}: ${text.error}`)
      const at = out.line(text)
      if (item.line !== i + 1 || at.offset !== item.offset || at.bytes !== item.bytes)
        throw new Mismatch(
          `item ${item.id}'s line ${i + 1} is ${at.bytes} bytes at ${at.offset}; the ledger has line ${item.line}, ${item.bytes} bytes at ${item.offset}`,
        )
    }
    out.close()
  } catch (err) {
    out.discard()
    if (err instanceof Mismatch) return { why: err.message }
    throw err
  }
  log.info("batch request file written again from the ledger", {
    run: o.run.name,
    batch: b.id,
    lines: lines.length,
  })
  return { path }
}

class Mismatch extends Error {}
