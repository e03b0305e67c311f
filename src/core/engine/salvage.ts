/**
 * Batch mode's salvage (DESIGN §4 rule 4): an ended batch's result files are downloaded, checked against the
 * provider's counts (results.ts) before anything settles, and applied line by line, a chunk per transaction.
 */
import { existsSync, readdirSync, renameSync, rmSync } from "node:fs"
import { join } from "node:path"
import { ProviderError } from "../../plugins/api/errors.ts"
import type { BatchLine, Downloaded, RemoteBatch, Reply } from "../../plugins/api/define.ts"
import * as log from "../base/log.ts"
import type { Job } from "../job/job.ts"
import type { Batch, LineOutcome } from "../ledger/types.ts"
import { crashPoint } from "./crash.ts"
import type { BatchScope } from "./pack.ts"
import * as decide from "./decide.ts"
import * as embed from "./embed.ts"
import * as results from "./results.ts"
import { cacheWrite, type CacheUse } from "./cache.ts"

/** Lines settled per transaction while applying a result file. */
const APPLY_CHUNK = 5000
/** Lines read between turns of the event loop while a chunk fills. */
const BREATHE_LINES = 1000
/** Chunks between full collections (the others get a hint). */
const FULL_GC_CHUNKS = 4

/**
 * Lets the event loop turn. Applying a file is reads of its lines and synchronous commits: without a turn now and
 * then, other I/O (the next batch's upload, streamed from disk) stalls until the whole file is applied, holding its
 * buffers all that while. Measured: batch peak RSS 218 → 193 MB at 200k items (docs/BENCHMARKS.md).
 */
function breathe(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve))
}

export interface SalvageOptions extends BatchScope {
  /** The output schema's check, when the job has one. */
  validate: ((value: unknown) => string | undefined) | undefined
  /** The response cache, unless the job turns it off: each accepted line's answer is written to it. */
  cache?: CacheUse | undefined
}

/** The provider's counts of an ended batch, for a message. */
function counted(remote: RemoteBatch): string {
  const e = remote.expect
  if (e?.kinds)
    return Object.entries(e.kinds)
      .map(([k, n]) => `${n} ${k}`)
      .join(", ")
  if (remote.counts)
    return `${remote.counts.total} requests, ${remote.counts.done - remote.counts.failed} completed, ${remote.counts.failed} failed`
  return "nothing"
}

/** An item whose result line the provider's file holds but nobody can read: to review, with the line as its output. */
function unreadable(item: number, text: string | undefined, why: string): LineOutcome {
  return {
    item,
    to: "needs_review",
    label: "needs_review",
    errorClass: "bad_response",
    error:
      `the provider's result line cannot be read (${why}), the same in two downloads; it was paid for, so the ` +
      "item is not sent again by itself (`spool retry --state needs_review` sends it again)",
    output: text,
    endedAt: Date.now(),
  }
}

export class Salvager {
  /** Batches left alone after `download_tries` bad downloads, with why: their items stay submitted. */
  readonly held = new Map<number, string>()
  /** Per batch: downloads that failed verification in this process. */
  private readonly badDownloads = new Map<number, number>()

  constructor(private readonly o: SalvageOptions) {}

  /**
   * Downloads an ended batch's result files and checks them (results.ts) before anything is applied; true when they
   * can be. A download that fails the check is kept as `<tag>.output.bad-N.jsonl` (and `.errors.`) and fetched again
   * with backoff; after `download_tries` of them in this process the batch is held, its items left submitted. A line
   * that cannot be read in two downloads in a row, all else agreeing, is the provider's own: it is taken as it is.
   * `seen` is the batch as the poll that saw it end found it; otherwise it is looked up for its counts.
   */
  async download(b: Batch, seen: RemoteBatch | undefined, signal: AbortSignal): Promise<boolean> {
    const { ledger, run, job } = this.o
    const remote = seen ?? (await this.o.api.retrieve(b.provider_id!, signal))
    const to = {
      output: join(this.o.dir, `${b.tag}.output.jsonl`),
      errors: join(this.o.dir, `${b.tag}.errors.jsonl`),
    }
    const written = await this.o.api.download(remote, to, signal)
    crashPoint("download")
    const reader = await this.reader(b)
    const checked = await results.check(written, remote.expect, reader)
    if (checked.problems.length === 0 && (await this.sameBroken(b, checked.broken, reader))) {
      if (checked.broken.length > 0)
        log.warn(
          "result lines that cannot be read came back the same in two downloads: they are the provider's",
          {
            run: run.name,
            batch: b.id,
            lines: checked.broken.map((x) => `${x.file}:${x.line}`),
          },
        )
      await ledger.batches.downloaded(b.id, written)
      this.badDownloads.delete(b.id)
      return true
    }
    const kept = this.keepBad(b, written, checked.suspect)
    crashPoint("verify")
    const tries = (this.badDownloads.get(b.id) ?? 0) + 1
    this.badDownloads.set(b.id, tries)
    const problems = [...checked.problems]
    if (checked.broken.length > 0) {
      const first = checked.broken[0]!
      problems.push(
        `${checked.broken.length} line(s) that cannot be read (the first: ${first.file} line ${first.line})`,
      )
    }
    const why =
      `batch ${b.id} (${remote.id}): its result files do not agree with the provider ` +
      `(${written.output ? `${checked.lines.output} output lines` : "no output file"}, ` +
      `${written.errors ? `${checked.lines.errors} error lines` : "no error file"}; ` +
      `the provider counts ${counted(remote)}): ${problems.join("; ")}; kept as ${kept.join(", ") || "nothing"}`
    if (tries >= job.batch.download_tries) {
      const held = `${why}; ${tries} downloads failed the check, nothing was applied`
      this.held.set(b.id, held)
      await ledger.batches.later(b.id, Date.now(), held)
      log.error("batch held: its result files would not verify", { run: run.name, batch: b.id, error: held })
      return false
    }
    throw new ProviderError("bad_response", `${why}; downloading them again`, { retryable: true })
  }

  private async reader(b: Batch): Promise<results.Reader> {
    return {
      parse: (text) => this.o.api.parse(text),
      prefix: `${b.tag}_`,
      // every item the batch was sent for, settled or not: a file downloaded again by a worker that took the batch
      // over part-applied holds lines of items already settled, and they are still this batch's
      items: new Set(await this.o.ledger.batches.members(b.id)),
    }
  }

  /** The `bad-N` files of a batch, newest first. */
  private badFiles(b: Batch): { n: number; path: string }[] {
    const pattern = new RegExp(`^${b.tag}\\.(?:output|errors)\\.bad-(\\d+)\\.jsonl$`)
    return readdirSync(this.o.dir)
      .map((name) => ({ name, m: pattern.exec(name) }))
      .filter((x) => x.m)
      .map((x) => ({ n: Number(x.m![1]), path: join(this.o.dir, x.name) }))
      .sort((x, y) => y.n - x.n)
  }

  /** Moves the files of a download that failed the check aside, as `<tag>.<file>.bad-N.jsonl`; returns their paths. */
  private keepBad(b: Batch, written: Downloaded, suspect: Set<results.FileKind>): string[] {
    const n = (this.badFiles(b)[0]?.n ?? 0) + 1
    const kept: string[] = []
    for (const kind of suspect) {
      const path = written[kind]
      if (!path || !existsSync(path)) continue
      const bad = join(this.o.dir, `${b.tag}.${kind}.bad-${n}.jsonl`)
      renameSync(path, bad)
      kept.push(bad)
    }
    return kept
  }

  /**
   * Whether the lines that cannot be read (none is the easy case) are exactly those of the last download that failed
   * the check: the provider's file itself has them, and downloading again will not mend them.
   */
  private async sameBroken(b: Batch, broken: results.Broken[], reader: results.Reader): Promise<boolean> {
    if (broken.length === 0) return true
    const newest = this.badFiles(b)
    const last = newest.filter((f) => f.n === newest[0]?.n)
    const before: string[] = []
    for (const f of last) {
      for await (const { text } of results.linesOf(f.path)) {
        try {
          reader.parse(text)
        } catch {
          before.push(text)
        }
      }
    }
    const now = broken.map((x) => x.text)
    return before.length === now.length && now.every((text) => before.includes(text))
  }

  /**
   * Settles the batch's items from its result files, a chunk of lines per transaction; a line whose item is already
   * settled (applied before a crash) changes nothing. Lines that are not this batch's are ignored.
   */
  async apply(b: Batch, onChunk: (chunk: LineOutcome[]) => Promise<void>): Promise<number> {
    const { ledger, run, job } = this.o
    const prefix = `${b.tag}_`
    let chunk: LineOutcome[] = []
    let lines = 0
    let first = true
    let commits = 0
    const commit = async () => {
      // in ledger order: results come in any order, and item pages touched in order stay in the cache
      chunk.sort((x, y) => x.item - y.item)
      await ledger.batches.apply(b.id, chunk, this.o.owner)
      await onChunk(chunk)
      chunk = []
      // the lines just applied are garbage now: a hint to collect after each chunk, and a full collection every
      // FULL_GC_CHUNKS, keep the peak flat over a 1M-item run (docs/BENCHMARKS.md, "Before and after")
      Bun.gc(++commits % FULL_GC_CHUNKS === 0)
      await breathe()
      if (first) crashPoint("apply")
      first = false
    }
    const attempts = new Map<number, number>()
    for (const row of await ledger.batches.items(b.id)) attempts.set(row.id, row.attempts)
    const reader = { prefix, items: new Set(attempts.keys()) }
    // lines that cannot be read got here only by coming back the same in two downloads (download()): the provider
    // charged for them, so their items go to review with the raw line, never back to be paid for again
    let unplaced = 0
    for (const file of [b.output, b.errors]) {
      if (!file || !existsSync(file)) continue
      for await (const { text } of results.linesOf(file)) {
        let line: BatchLine
        try {
          line = this.o.api.parse(text)
        } catch (err) {
          const item = results.itemOf(results.claimedId(text), reader)
          if (item === undefined) unplaced++
          else chunk.push(unreadable(item, text, (err as Error).message))
          lines++
          continue
        }
        if (!line.customId.startsWith(prefix)) continue
        const item = Number(line.customId.slice(prefix.length))
        const n = attempts.get(item)
        if (n === undefined) continue
        const outcome = this.settle(item, n, line, job)
        if (!outcome) continue
        lines++
        chunk.push(outcome)
        if (chunk.length >= APPLY_CHUNK) await commit()
        else if (chunk.length % BREATHE_LINES === 0) await breathe()
      }
    }
    if (chunk.length > 0) await commit()
    if (unplaced > 0) {
      // which items those lines were cannot be told: every item left without a line is one of them, perhaps
      const why = `one of ${unplaced} result line(s) with no readable custom_id`
      chunk = (await ledger.batches.items(b.id)).map((row) => unreadable(row.id, undefined, why))
      if (chunk.length > 0) await commit()
    }
    const back = await ledger.batches.finish(b.id, lines)
    if (!job.batch.keep_raw) {
      for (const file of [b.output, b.errors]) if (file) rmSync(file, { force: true })
    }
    log.info("batch applied", { run: run.name, batch: b.id, lines, requeued: back })
    return lines
  }

  /**
   * How one line settles its item (decide.ts); "again" is back to pending, to be packed into a later batch. Undefined
   * for a line with no result (the item goes back to pending, unpaid).
   */
  private settle(item: number, attempt: number, line: BatchLine, job: Job): LineOutcome | undefined {
    const max = job.limits.max_attempts
    if (line.reply && job.request.kind === "embedding") return embedded(item, attempt, line.reply, job)
    const settled = line.reply
      ? decide.answer(line.reply, this.o.validate, attempt, max)
      : line.error && decide.error(line.error, attempt, max)
    if (!settled) return undefined
    const { verdict, ...fields } = settled
    const to = verdict === "retry" ? "pending" : verdict
    // only an answer that passed every gate is cached, at the batch price it was paid
    const cache =
      verdict === "completed" && line.reply ? cacheWrite(this.o.cache, line.reply.usage, true) : undefined
    return { item, endedAt: Date.now(), ...fields, to, label: decide.label(verdict), ...(cache && { cache }) }
  }
}

/**
 * How an embedding line's answer settles its item: completed with its vector and its usage; the chat gates (JSON, the
 * output schema, a cut answer) are not for vectors. A vector of the wrong length is a bad response, tried again while
 * attempts are left, as a realtime request's would be; its tokens were paid and are counted.
 */
function embedded(item: number, attempt: number, reply: Reply, job: Job): LineOutcome {
  const usage = { inputTokens: reply.usage.input_tokens, outputTokens: 0, cachedTokens: 0 }
  const endedAt = Date.now()
  try {
    if (!reply.vector) throw new Error("it has no vector")
    embed.check([reply.vector], 1, job.request.dimensions)
    return { item, to: "completed", label: "ok", status: 200, ...usage, vector: reply.vector, endedAt }
  } catch (err) {
    const why = `the embedding line's answer does not fit: ${(err as Error).message}`
    const wrong = new ProviderError("bad_response", why, { retryable: true, status: 200 })
    const { verdict, ...fields } = decide.error(wrong, attempt, job.limits.max_attempts)
    return {
      item,
      endedAt,
      ...fields,
      ...usage,
      to: verdict === "retry" ? "pending" : verdict,
      label: decide.label(verdict),
    }
  }
}
