/**
 * Batch mode (DESIGN §5): packs a run's items into provider batches, creates each once, polls them, downloads what
 * they return and settles every item line by line. Every step is committed before the next provider call, so a
 * process killed at any point leaves a ledger the next one carries on from:
 *
 *   pack ─▶ intent (committed) ─▶ create ─▶ submitted ─▶ poll … ─▶ ended ─▶ downloading ─▶ applying ─▶ done
 *
 * - An intent whose create may have happened (the process died, or the call failed without a clear answer) is
 *   looked up at the provider by its tag before anything is created again (DESIGN §4 rule 3).
 * - An ended batch, whatever its end (completed, expired, cancelled, failed), is salvaged: each line with a result
 *   settles its item, and only items with no line go back to pending, unpaid (DESIGN §4 rule 4).
 */
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  renameSync,
  rmSync,
  writeSync,
} from "node:fs"
import { join } from "node:path"
import { ProviderError, StoreError, type ErrorClass } from "../../plugins/api/errors.ts"
import { StoreCorruptError } from "../base/errors.ts"
import * as log from "../base/log.ts"
import { Waker } from "./wake.ts"
import * as retry from "./retry.ts"
import * as schemas from "../job/schema.ts"
import * as template from "../job/template.ts"
import type { Ledger } from "../ledger/ledger.ts"
import type { Batch, LineOutcome, Packable, Run } from "../ledger/types.ts"
import { Runner, type Ending } from "./runner.ts"
import { dead } from "./owner.ts"
import { Budget, batchRoom, reached, type Cap } from "./budget.ts"
import * as decide from "./decide.ts"
import type { Job } from "../job/job.ts"
import * as results from "./results.ts"
import type {
  BatchClient,
  BatchLine,
  BatchTag,
  Downloaded,
  ProviderClient,
  RemoteBatch,
} from "../../plugins/api/define.ts"

export interface BatcherOptions {
  ledger: Ledger
  run: Run
  job: Job
  client: ProviderClient & { batch: BatchClient }
  owner: string
  /** The store's directory: artifacts go under `artifacts/<run>/` in it. */
  home: string
  policy?: retry.Policy
  /** The spend cap (`limits.max_cost_usd`) and the model's price. */
  cap?: Cap | undefined
}

export interface BatchProgress {
  completed: number
  failed: number
}

/** How long the batch lease lasts without renewal. */
const LEASE_MS = 60_000
/** Lines settled per transaction while applying a result file. */
const APPLY_CHUNK = 5000
/** A 404 this soon after create is the provider not having caught up yet (OpenAI documents the lag). */
const YOUNG_MS = 120_000
/** The longest the loop sleeps when nothing is due: it looks at the run's state (pause, cancel) this often. */
const TICK_MS = 1000

/**
 * Test hook: `SPOOL_CRASH_AT=<point>` makes the process kill itself with SIGKILL at that point, so the crash tests
 * can stop a real `dist/spool` exactly between two steps. Points: pack (request file half written), intent (intent
 * committed, create not called), created (create answered, not committed), poll (a poll answered, not committed),
 * download (files written, not committed), apply (the first lines committed, not the rest).
 */
function crashPoint(at: string): void {
  if (process.env.SPOOL_CRASH_AT === at) process.kill(process.pid, "SIGKILL")
}

/** The directory of a run's batch files. */
export function artifactsDir(home: string, run: Pick<Run, "name">): string {
  return join(home, "artifacts", run.name)
}

/** The exact bytes of an item's earlier request line, from its batch's request file. */
function requestOf(file: string, offset: number, bytes: number): Promise<string> {
  return Bun.file(file)
    .slice(offset, offset + bytes)
    .text()
}

function randomTag(): string {
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

export class Batcher {
  readonly progress: BatchProgress = { completed: 0, failed: 0 }
  /** Called after lines are committed; awaited before the batcher goes on. */
  onCommit: ((progress: BatchProgress) => void | Promise<void>) | undefined
  /** Set when a provider error paused the run (bad key, no quota). */
  pausedBy: ProviderError | undefined
  /** Set when the spend cap stopped new batches. */
  capped: string | undefined
  private readonly o: BatcherOptions
  private readonly api: BatchClient
  private readonly prompt: template.Template
  private readonly validate: ((value: unknown) => string | undefined) | undefined
  private readonly dir: string
  private readonly calls = new AbortController()
  private stopping = false
  /** Sticky: an ingester's poke that comes while the loop awaits the ledger is not slept through. */
  private readonly waker = new Waker(true)
  /** Intents this process committed and has not yet tried to create: nothing can exist at the provider for them. */
  private readonly fresh = new Set<number>()
  /** Per batch: the provider status last seen, and how many looks in a row found it unchanged. */
  private readonly seen = new Map<number, { key: string; same: number; errors: number }>()
  /** When a batch that was not full was first seen waiting for more items (the flush timer). */
  private waitingSince: number | undefined
  /** Set while the provider's queue is full: nothing new is packed until a live batch ends. */
  private queueFull = false
  /** Nothing new is packed before this time (ms): the queue was full with none of our batches in it. */
  private packAfter = 0
  private tailRunner: Runner | undefined
  /** Set when the spend cap stopped the direct calls of the realtime tail. */
  private tailCapped: string | undefined
  /** Batches in a row that the provider failed without one result line. */
  private emptyFailures = 0
  /** Per batch: downloads that failed verification in this process. */
  private readonly badDownloads = new Map<number, number>()
  /** Batches left alone after `download_tries` bad downloads, with why: their items stay submitted. */
  private readonly held = new Map<number, string>()
  /** A lease renewal that failed (the store, the disk): the loop stops with it at its next turn. */
  private renewal: unknown

  constructor(options: BatcherOptions) {
    this.o = options
    this.api = options.client.batch
    this.prompt = template.parse(options.job.request.prompt)
    this.validate = options.job.output ? schemas.validator(options.job.output.schema) : undefined
    this.dir = artifactsDir(options.home, options.run)
  }

  /** Stops packing and creating; batches already at the provider are picked up by the next run. */
  stop(): void {
    this.stopping = true
    this.tailRunner?.stop()
    this.waker.notify()
  }

  /** Cuts the provider call in flight short. */
  abort(): void {
    this.calls.abort(new Error("interrupted"))
    this.tailRunner?.abort()
  }

  poke(): void {
    this.waker.notify()
  }

  private get signal(): AbortSignal {
    return this.calls.signal
  }

  async loop(): Promise<Ending | "cancelled"> {
    const { ledger, run, owner } = this.o
    while (!(await ledger.batches.lease(run.id, owner, LEASE_MS, dead))) {
      if (this.stopping) return "interrupted"
      log.info("another process drives this run's batches; waiting for it", { run: run.name })
      await this.waker.sleep(2000)
    }
    mkdirSync(this.dir, { recursive: true, mode: 0o700 })
    this.sweep()
    const renew = setInterval(() => {
      ledger.batches.lease(run.id, owner, LEASE_MS, dead).catch((err: unknown) => {
        this.renewal ??= err
        this.waker.notify()
      })
    }, LEASE_MS / 4)
    try {
      for (;;) {
        if (this.renewal !== undefined) throw this.renewal
        const state = (await ledger.runs.get(run.id))?.state
        if (state === "cancelling") return await this.cancel()
        if (state === "cancelled") return "cancelled"
        const paused = state === "paused"
        // the batches at the provider move on while the next one is packed and sent: its work and ours overlap
        // (advance() asks the ledger for its list of batches before pack() can commit one, so the two never touch
        // the same batch)
        const [moved, packed] = await Promise.all([this.advance(), paused ? false : this.pack()])
        if (this.stopping) return "interrupted"
        if (this.pausedBy) return "paused"
        if (this.capped && (await ledger.batches.live(run.id)).length === 0 && (await this.affordable()) <= 0)
          return "paused"
        if (!paused && (await this.tail())) continue
        if (this.tailCapped) return "paused"
        if (await this.finished()) return "done"
        if (await this.onlyHeld()) return this.holdUp()
        if (!moved && !packed) await this.waker.sleep(await this.untilDue())
      }
    } finally {
      clearInterval(renew)
      await ledger.batches.release(run.id, owner)
    }
  }

  /** Removes request files a killed process left half written (their batches were never committed). */
  private sweep(): void {
    for (const name of new Bun.Glob("*.part").scanSync(this.dir))
      rmSync(join(this.dir, name), { force: true })
  }

  private async finished(): Promise<boolean> {
    const { ledger, run } = this.o
    if ((await ledger.batches.live(run.id)).length > 0) return false
    if ((await ledger.runs.get(run.id))?.ingested === 0) return false
    return !(await ledger.reads.hasOpen(run.id))
  }

  /** Nothing is left to do but batches whose downloads would not verify. */
  private async onlyHeld(): Promise<boolean> {
    const { ledger, run } = this.o
    if (this.held.size === 0 || (await ledger.runs.get(run.id))?.ingested === 0) return false
    if ((await ledger.batches.live(run.id)).some((b) => !this.held.has(b.id))) return false
    const c = await ledger.reads.counts(run.id)
    return c.pending + c.running + c.retry_wait + c.queued === 0
  }

  /** Ends the process with the held batches' reasons; their items stay submitted, for a later run to fetch. */
  private holdUp(): "paused" {
    this.pausedBy = new ProviderError("bad_response", [...this.held.values()].join("\n"), {
      retryable: false,
      pause: true,
      hint:
        "Nothing was applied from those files, and their items stay submitted: `spool run` again downloads and checks " +
        "them anew. The files that failed are kept beside the batch's request file for inspection.",
    })
    return "paused"
  }

  /** Milliseconds until a batch is due a look, a retry falls due, or the flush timer runs out; at most TICK_MS. */
  private async untilDue(): Promise<number> {
    const now = Date.now()
    let next = now + TICK_MS
    for (const b of await this.o.ledger.batches.live(this.o.run.id)) next = Math.min(next, b.next_at ?? now)
    const retryAt = await this.o.ledger.claims.nextRetryAt(this.o.run.id)
    if (retryAt !== null) next = Math.min(next, retryAt)
    if (this.waitingSince !== undefined)
      next = Math.min(next, this.waitingSince + this.o.job.batch.flush_s * 1000)
    if (this.packAfter > now) next = Math.min(next, this.packAfter)
    return Math.max(0, next - now)
  }

  // ---- the life of a batch

  /** Moves every live batch that is due one step on: create, look up, poll, download, apply. */
  private async advance(): Promise<boolean> {
    const { ledger, run } = this.o
    let moved = false
    for (const b of await ledger.batches.live(run.id)) {
      if (this.stopping || this.pausedBy) return moved
      if (this.held.has(b.id)) continue
      if (b.next_at !== null && b.next_at > Date.now()) continue
      moved = true
      try {
        await this.step(b)
      } catch (err) {
        if (this.signal.aborted) return moved
        await this.failedStep(b, err)
      }
    }
    return moved
  }

  private async step(b: Batch): Promise<void> {
    switch (b.state) {
      case "intent":
        return this.resolve(b)
      case "submitted":
        return this.poll(b)
      case "downloading":
        if (await this.download(b)) await this.apply((await this.o.ledger.batches.get(b.id))!)
        return
      case "applying":
        return this.apply(b)
      default:
        return
    }
  }

  private tagOf(b: Batch): BatchTag {
    return { tag: b.tag, run: this.o.run.name, count: b.count, since: b.created_at }
  }

  /** An intent: create its batch, unless it may exist already; then look it up and adopt it instead. */
  private async resolve(b: Batch): Promise<void> {
    const { ledger, run } = this.o
    if (!this.fresh.has(b.id)) {
      const found = await this.api.find(this.tagOf(b), this.signal)
      if ("found" in found) {
        log.info("batch adopted: it was created before the process stopped", {
          run: run.name,
          batch: b.id,
          provider_id: found.found.id,
        })
        await ledger.batches.submitted(b.id, found.found)
        this.seen.delete(b.id)
        return
      }
      if ("wait" in found) {
        await ledger.batches.later(b.id, Date.now() + this.pollMs(), found.wait)
        return
      }
    }
    this.fresh.delete(b.id)
    if (!existsSync(b.requests)) {
      // the request file is gone (pruned by hand): these items were never sent; pack them again
      await ledger.batches.abandon(b.id, {
        errorClass: "bad_request",
        error: `the request file ${b.requests} is missing`,
      })
      return
    }
    crashPoint("intent")
    let remote
    try {
      remote = await this.api.create(b.requests, this.tagOf(b), this.signal)
    } catch (err) {
      if (err instanceof ProviderError && err.errorClass === "queue_limit") return this.queueLimited(b, err)
      throw err
    }
    crashPoint("created")
    await ledger.batches.submitted(b.id, remote)
    await ledger.batches.later(b.id, Date.now() + this.pollMs())
    log.info("batch created", { run: run.name, batch: b.id, provider_id: remote.id, items: b.count })
  }

  /** The provider's queue is full: the batch goes back (its items unsent), and the limit is remembered. */
  private async queueLimited(b: Batch, err: ProviderError): Promise<void> {
    const { ledger, run } = this.o
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
    // with batches of ours in the queue, the next pack waits for one to end; with none (other work fills the
    // queue), it waits a while before it asks again
    this.queueFull = live.length > 0
    if (!this.queueFull)
      this.packAfter = Date.now() + (err.retryAfterMs ?? this.o.job.batch.poll_max_s * 1000)
    log.warn("the provider's batch queue is full; the batch waits for earlier ones to finish", {
      run: run.name,
      batch: b.id,
      items: back,
      limit,
    })
  }

  private async poll(b: Batch): Promise<void> {
    const { ledger } = this.o
    const remote = await this.api.retrieve(b.provider_id!, this.signal)
    crashPoint("poll")
    if (remote.phase === "ended" && remote.error?.errorClass === "queue_limit") {
      await ledger.batches.observe(b.id, remote, null)
      return this.queueLimited((await ledger.batches.get(b.id))!, remote.error)
    }
    const key = `${remote.status}|${remote.counts?.done ?? ""}`
    const seen = this.seen.get(b.id)
    const same = seen && seen.key === key ? seen.same + 1 : 0
    this.seen.set(b.id, { key, same, errors: 0 })
    await ledger.batches.observe(
      b.id,
      remote,
      remote.phase === "ended" ? null : Date.now() + this.pollMs(same),
    )
    if (remote.phase === "ended") {
      log.info("batch ended", {
        run: this.o.run.name,
        batch: b.id,
        outcome: remote.outcome,
        done: remote.counts?.done,
        total: remote.counts?.total,
      })
      this.queueFull = false
      if (await this.download((await ledger.batches.get(b.id))!, remote))
        await this.apply((await ledger.batches.get(b.id))!)
    }
  }

  /** The wait before the next look: poll_s, growing by half each look that finds nothing new, up to poll_max_s. */
  private pollMs(same = 0): number {
    const { poll_s, poll_max_s } = this.o.job.batch
    return Math.min(poll_max_s, poll_s * 1.5 ** same) * 1000
  }

  /**
   * Downloads an ended batch's result files and checks them (results.ts) before anything is applied; true when they
   * can be. A download that fails the check is kept as `<tag>.output.bad-N.jsonl` (and `.errors.`) and fetched again
   * with backoff; after `download_tries` of them in this process the batch is held, its items left submitted. A line
   * that cannot be read in two downloads in a row, all else agreeing, is the provider's own: it is taken as it is.
   * `seen` is the batch as the poll that saw it end found it; otherwise it is looked up for its counts.
   */
  private async download(b: Batch, seen?: RemoteBatch): Promise<boolean> {
    const { ledger, run, job } = this.o
    const remote = seen ?? (await this.api.retrieve(b.provider_id!, this.signal))
    const to = {
      output: join(this.dir, `${b.tag}.output.jsonl`),
      errors: join(this.dir, `${b.tag}.errors.jsonl`),
    }
    const written = await this.api.download(remote, to, this.signal)
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
      parse: (text) => this.api.parse(text),
      prefix: `${b.tag}_`,
      items: new Set((await this.o.ledger.batches.items(b.id)).map((r) => r.id)),
    }
  }

  /** The `bad-N` files of a batch, newest first. */
  private badFiles(b: Batch): { n: number; path: string }[] {
    const pattern = new RegExp(`^${b.tag}\\.(?:output|errors)\\.bad-(\\d+)\\.jsonl$`)
    return readdirSync(this.dir)
      .map((name) => ({ name, m: pattern.exec(name) }))
      .filter((x) => x.m)
      .map((x) => ({ n: Number(x.m![1]), path: join(this.dir, x.name) }))
      .sort((x, y) => y.n - x.n)
  }

  /** Moves the files of a download that failed the check aside, as `<tag>.<file>.bad-N.jsonl`; returns their paths. */
  private keepBad(b: Batch, written: Downloaded, suspect: Set<results.FileKind>): string[] {
    const n = (this.badFiles(b)[0]?.n ?? 0) + 1
    const kept: string[] = []
    for (const kind of suspect) {
      const path = written[kind]
      if (!path || !existsSync(path)) continue
      const bad = join(this.dir, `${b.tag}.${kind}.bad-${n}.jsonl`)
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
  private async apply(b: Batch): Promise<void> {
    const { ledger, run, job } = this.o
    const prefix = `${b.tag}_`
    let chunk: LineOutcome[] = []
    let lines = 0
    let first = true
    const commit = async () => {
      // in ledger order: results come in any order, and item pages touched in order stay in the cache
      chunk.sort((x, y) => x.item - y.item)
      await ledger.batches.apply(b.id, chunk, this.o.owner)
      for (const o of chunk) {
        if (o.to === "completed") this.progress.completed++
        else if (o.to === "failed" || o.to === "needs_review") this.progress.failed++
      }
      chunk = []
      // the lines just applied are garbage now: a hint to collect keeps the peak flat over a 1M-item run
      Bun.gc(false)
      await this.onCommit?.(this.progress)
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
          line = this.api.parse(text)
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
    // a batch the provider failed without a single result (its file did not validate, say) would fail the same way
    // again and again: after three in a row the run pauses, with the provider's reason
    if (b.outcome === "failed" && lines === 0) this.emptyFailures++
    else if (lines > 0) this.emptyFailures = 0
    if (this.emptyFailures >= 3)
      this.pausedBy = new ProviderError(
        "bad_request",
        `${this.emptyFailures} batches in a row failed at the provider with no result: ${b.error ?? "no reason given"}`,
        { retryable: false, pause: true },
      )
  }

  /**
   * How one line settles its item (decide.ts); "again" is back to pending, to be packed into a later batch. Undefined
   * for a line with no result (the item goes back to pending, unpaid).
   */
  private settle(item: number, attempt: number, line: BatchLine, job: Job): LineOutcome | undefined {
    const max = job.limits.max_attempts
    const settled = line.reply
      ? decide.answer(line.reply, this.validate, attempt, max)
      : line.error && decide.error(line.error, attempt, max)
    if (!settled) return undefined
    const { verdict, ...fields } = settled
    const to = verdict === "retry" ? "pending" : verdict
    return { item, endedAt: Date.now(), ...fields, to, label: decide.label(verdict) }
  }

  /** A step failed: wait and try again (transient), pause the run (auth, quota), or give the batch up (refused). */
  private async failedStep(b: Batch, err: unknown): Promise<void> {
    const { ledger, run } = this.o
    // the store or the disk failing is ours, not the provider's: waiting would not mend it, so the run stops
    if (err instanceof StoreError || err instanceof StoreCorruptError) throw err
    const e =
      err instanceof ProviderError
        ? err
        : new ProviderError("network", (err as Error)?.message ?? String(err), {
            retryable: true,
            cause: err,
          })
    if (e.pause) {
      this.pausedBy = e
      await ledger.batches.later(b.id, Date.now(), e.message)
      return
    }
    const seen = this.seen.get(b.id) ?? { key: "", same: 0, errors: 0 }
    seen.errors++
    this.seen.set(b.id, seen)
    const young = b.submitted_at !== null && Date.now() - b.submitted_at < YOUNG_MS
    if (e.errorClass === "not_found" && b.state === "submitted" && young) {
      await ledger.batches.later(b.id, Date.now() + this.pollMs(), null)
      return
    }
    if (!e.retryable && b.state === "intent") {
      // the provider refused to create it (a bad request): going on would refuse every batch the same way
      await ledger.batches.abandon(b.id, { errorClass: e.errorClass, error: e.message })
      this.pausedBy = e
      return
    }
    const wait = retry.delay(seen.errors, e.retryAfterMs, {
      baseMs: this.o.job.batch.poll_s * 1000,
      capMs: this.o.job.batch.poll_max_s * 1000,
    })
    await ledger.batches.later(b.id, Date.now() + wait, e.message)
    log.warn("batch step failed; trying again", {
      run: run.name,
      batch: b.id,
      state: b.state,
      error: e.message,
      wait_ms: wait,
    })
  }

  // ---- packing

  /** Packs and creates one batch, when there are items, room in the provider's queue, and no reason to wait. */
  private async pack(): Promise<boolean> {
    const { ledger, run, job } = this.o
    const cap = Math.min(job.batch.batch_size ?? this.api.limits.maxRequests, this.api.limits.maxRequests)
    if (this.stopping || this.pausedBy || this.queueFull || Date.now() < this.packAfter) return false
    const room = await this.queueRoom()
    if (room.tokens <= 0 || room.requests <= 0 || room.batches <= 0) return false
    const affordable = await this.affordable()
    if (affordable <= 0) return false
    // the last items are the realtime tail's: no batch is packed for them, whichever of the two looks first
    if ((await this.tailItems()) > 0) return false
    const candidates = await ledger.batches.packable(run.id, Math.min(cap, room.requests, affordable))
    if (candidates.length === 0) {
      this.waitingSince = undefined
      return false
    }
    const ingesting = (await ledger.runs.get(run.id))?.ingested === 0
    if (ingesting && candidates.length < cap) {
      this.waitingSince ??= Date.now()
      if (Date.now() - this.waitingSince < job.batch.flush_s * 1000) return false
    }
    this.waitingSince = undefined
    const b = await this.packOne(candidates, room.tokens)
    if (!b) return true
    try {
      await this.resolve(b)
    } catch (err) {
      if (this.signal.aborted) return false
      await this.failedStep(b, err)
    }
    return true
  }

  /** How many more items the spend cap allows in new batches (budget.ts), at the batch price. */
  private async affordable(): Promise<number> {
    const cap = this.o.cap
    if (!cap) return Number.POSITIVE_INFINITY
    const { ledger, run, job } = this.o
    const { room, spentUsd } = batchRoom(
      cap,
      job.request,
      await ledger.reads.summary(run.id),
      await ledger.reads.largestAttempt(run.id),
    )
    if (room <= 0) {
      if (!this.capped)
        log.warn("spend cap reached: no new batch is sent; live batches are still followed", {
          run: run.name,
        })
      this.capped = reached(cap, spentUsd)
    } else this.capped = undefined
    return room
  }

  /** What the learned queue limits leave for a new batch (Infinity when none is known). */
  private async queueRoom(): Promise<{ tokens: number; requests: number; batches: number }> {
    const { ledger, run } = this.o
    const r = await ledger.runs.get(run.id)
    const live = (await ledger.batches.live(run.id)).filter((b) => b.phase !== "ended")
    const tokens = r?.queue_tokens ? r.queue_tokens - live.reduce((a, b) => a + b.tokens, 0) : Infinity
    const requests = r?.queue_requests ? r.queue_requests - live.reduce((a, b) => a + b.count, 0) : Infinity
    const max = this.o.job.batch.max_live
    return { tokens, requests, batches: max > 0 ? max - live.length : Infinity }
  }

  /**
   * Writes the request file of one batch and commits its intent. A retried item's line is its exact earlier
   * request, read back from the batch file it was sent in, under its new custom_id.
   */
  private async packOne(candidates: Packable[], tokenRoom: number): Promise<Batch | null> {
    const { ledger, run, owner } = this.o
    const { maxBytes } = this.api.limits
    const tag = randomTag()
    const path = join(this.dir, `${tag}.requests.jsonl`)
    const out = new FileOut(path)
    const lines: { id: number; line: number; offset: number; bytes: number }[] = []
    const failed: { id: number; errorClass: ErrorClass; error: string }[] = []
    const files = new Map<number, string | null>()
    let tokens = 0
    try {
      for (const item of candidates) {
        const text = await this.lineOf(item, `${tag}_${item.id}`, files)
        if (typeof text !== "string") {
          failed.push({ id: item.id, errorClass: "template", error: text.unfilled })
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
          if (await this.queueRoomEmptyOfOthers()) {
            failed.push({
              id: item.id,
              errorClass: "queue_limit",
              error: `the request (~${estimate} tokens) is larger than the provider's whole batch queue (${tokenRoom} tokens)`,
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
    if (failed.length > 0) {
      this.progress.failed += failed.length
      await this.onCommit?.(this.progress)
    }
    if (!batch) return null
    this.fresh.add(batch.id)
    Bun.gc(false)
    log.info("batch packed", { run: run.name, batch: batch.id, items: lines.length, bytes: out.bytes })
    return batch
  }

  /** With no batch of ours in the provider's queue, a request larger than the queue can never be sent. */
  private async queueRoomEmptyOfOthers(): Promise<boolean> {
    return (await this.o.ledger.batches.live(this.o.run.id)).every((b) => b.phase === "ended")
  }

  /** The item's request line: its earlier exact bytes when it has been in a batch whose file is kept, else rendered. */
  private async lineOf(
    item: Packable,
    customId: string,
    files: Map<number, string | null>,
  ): Promise<string | { unfilled: string }> {
    if (item.batch_id !== null && item.batch_offset !== null && item.batch_bytes !== null) {
      let file = files.get(item.batch_id)
      if (file === undefined) {
        file = (await this.o.ledger.batches.get(item.batch_id))?.requests ?? null
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
    const request = template.requestOf(this.o.job, this.prompt, item.data)
    if ("unfilled" in request) return request
    return this.api.line(customId, request)
  }

  // ---- the last items, through direct calls

  /**
   * With `tail_realtime = N`: once the inputs are read, no batch is live, and at most N items are left, they are
   * finished with direct calls on the same ledger (the realtime runner), rather than waiting for another batch.
   */
  private async tail(): Promise<boolean> {
    const { ledger, run, job } = this.o
    const left = await this.tailItems()
    if (left === 0) return false
    log.info("finishing the last items with direct calls", { run: run.name, items: left })
    // the spend cap holds for direct calls too: they start from what the run has spent, batches included
    const cap = this.o.cap
    const runner = new Runner({
      ledger,
      run,
      job,
      client: this.o.client,
      owner: this.o.owner,
      ...(this.o.policy ? { policy: this.o.policy } : {}),
      budget: cap && new Budget(cap, job.request, await ledger.reads.summary(run.id)),
    })
    this.tailRunner = runner
    runner.onCommit = (p) =>
      this.onCommit?.({
        completed: this.progress.completed + p.completed,
        failed: this.progress.failed + p.failed,
      })
    const ending = await runner.loop()
    this.tailRunner = undefined
    this.progress.completed += runner.progress.completed
    this.progress.failed += runner.progress.failed
    if (runner.pausedBy) this.pausedBy = runner.pausedBy
    // the cap stopped the direct calls: the run pauses as it would for batches
    if (runner.capped) this.capped = this.tailCapped = runner.capped
    return ending === "done"
  }

  /** How many items the realtime tail takes now: those left, when it is at most N of them, the inputs are read and no batch is live; else 0. */
  private async tailItems(): Promise<number> {
    const { ledger, run, job } = this.o
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

  // ---- cancel

  /**
   * `spool cancel`: every live batch is cancelled at the provider, then salvaged as it ends; intents are looked up
   * first (a batch created just before a crash is cancelled too). Items never sent stay pending.
   */
  private async cancel(): Promise<"cancelled" | "interrupted" | "paused"> {
    const { ledger, run } = this.o
    const asked = new Set<number>()
    for (;;) {
      const live = (await ledger.batches.live(run.id)).filter((b) => !this.held.has(b.id))
      if (live.length === 0 && this.held.size > 0) return this.holdUp()
      if (live.length === 0) break
      for (const b of live) {
        if (this.stopping) return "interrupted"
        if (b.next_at !== null && b.next_at > Date.now() && !(b.state === "submitted" && !asked.has(b.id)))
          continue
        try {
          if (b.state === "intent") {
            this.fresh.delete(b.id)
            const found = await this.api.find(this.tagOf(b), this.signal)
            if ("found" in found) await ledger.batches.submitted(b.id, found.found)
            else if ("none" in found)
              await ledger.batches.abandon(b.id, {
                errorClass: "cancelled",
                error: "cancelled before it was created",
              })
            else await ledger.batches.later(b.id, Date.now() + this.pollMs(), found.wait)
          } else if (b.state === "submitted" && !asked.has(b.id)) {
            const remote = await this.api.cancel(b.provider_id!, this.signal)
            asked.add(b.id)
            await ledger.batches.observe(b.id, remote, Date.now() + this.pollMs())
            log.info("batch cancel asked", { run: run.name, batch: b.id, status: remote.status })
          } else {
            await this.step(b)
          }
        } catch (err) {
          if (this.signal.aborted) return "interrupted"
          // a batch that ended meanwhile cannot be cancelled: it is polled, downloaded and applied as usual
          if (err instanceof ProviderError && !err.retryable && b.state === "submitted") asked.add(b.id)
          await this.failedStep(b, err)
        }
      }
      await this.waker.sleep(await this.untilDue())
    }
    await ledger.runs.setState(run.id, "cancelled", "cancelled by `spool cancel`")
    return "cancelled"
  }
}
