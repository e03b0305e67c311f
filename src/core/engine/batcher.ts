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
import { existsSync, mkdirSync, rmSync } from "node:fs"
import { join } from "node:path"
import { ProviderError, StoreError } from "../../plugins/api/errors.ts"
import { StoreCorruptError } from "../base/errors.ts"
import * as log from "../base/log.ts"
import { Waker } from "./wake.ts"
import * as retry from "./retry.ts"
import * as schemas from "../job/schema.ts"
import * as template from "../job/template.ts"
import type { Ledger } from "../ledger/ledger.ts"
import type { Batch, Run } from "../ledger/types.ts"
import { Runner, type Ending } from "./runner.ts"
import { dead, leaseMs } from "./owner.ts"
import { Budget, batchRoom, reached, type Cap } from "./budget.ts"
import type { Job } from "../job/job.ts"
import { crashPoint } from "./crash.ts"
import { packOne, queueLimited, queueRoom, requestFile, tailItems, type PackOptions } from "./pack.ts"
import { Salvager } from "./salvage.ts"
import type { BatchClient, BatchTag, ProviderClient } from "../../plugins/api/define.ts"
import type { Lookup } from "./cache.ts"
import type { Prefixes } from "./prefix.ts"
import { primerOf, type Primer } from "./prime.ts"

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
  /** The response cache's look-ups, unless the job turns it off: asked before any item is packed (cache.ts). */
  lookup?: Lookup | undefined
  /** The prompt cache's prefixes (prefix.ts), unless the job turns it off; explicit ones are primed (prime.ts). */
  prefixes?: Prefixes | undefined
}

export interface BatchProgress {
  completed: number
  failed: number
}

/** How long the batch lease lasts without renewal. */
const LEASE_MS = leaseMs()
/** A 404 this soon after create is the provider not having caught up yet (OpenAI documents the lag). */
const YOUNG_MS = 120_000
/** The longest the loop sleeps when nothing is due: it looks at the run's state (pause, cancel) this often. */
const TICK_MS = 1000

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
  /** Downloads, their check and the apply of result lines; it holds the batches whose files would not verify. */
  private readonly salvage: Salvager
  private readonly packing: PackOptions
  private readonly primer: Primer | undefined
  /** A lease renewal that failed (the store, the disk): the loop stops with it at its next turn. */
  private renewal: unknown

  constructor(options: BatcherOptions) {
    this.o = options
    this.api = options.client.batch
    this.prompt = template.parse(options.job.request.prompt)
    this.validate = options.job.output ? schemas.validator(options.job.output.schema) : undefined
    this.dir = join(options.home, "artifacts", options.run.name)
    const { ledger, run, job, owner } = options
    this.salvage = new Salvager({
      ledger,
      run,
      job,
      owner,
      api: this.api,
      dir: this.dir,
      validate: this.validate,
      cache: options.lookup?.use,
    })
    const { prefixes } = options
    this.packing = { ledger, run, job, owner, api: this.api, dir: this.dir, prompt: this.prompt, prefixes }
    this.primer = primerOf(this.packing, options.client)
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

  /** What the store told (items to pack, or the run's state changed): either way, look now. */
  readonly notice = (_kind: "items" | "state") => this.poke()

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
        // at the cap: paused, unless the cache has served what was left
        if (this.capped && (await ledger.batches.live(run.id)).length === 0 && (await this.affordable()) <= 0)
          return (await this.finished()) ? "done" : "paused"
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
    if (this.salvage.held.size === 0 || (await ledger.runs.get(run.id))?.ingested === 0) return false
    if ((await ledger.batches.live(run.id)).some((b) => !this.salvage.held.has(b.id))) return false
    const c = await ledger.reads.counts(run.id)
    return c.pending + c.running + c.retry_wait + c.queued === 0
  }

  /** Ends the process with the held batches' reasons; their items stay submitted, for a later run to fetch. */
  private holdUp(): "paused" {
    this.pausedBy = new ProviderError("bad_response", [...this.salvage.held.values()].join("\n"), {
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
      if (this.salvage.held.has(b.id)) continue
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
        if (await this.salvage.download(b, undefined, this.signal))
          await this.apply((await this.o.ledger.batches.get(b.id))!)
        return
      case "applying":
        // taken over from a worker whose result files are on another host: download them again here first
        if ((b.output && !existsSync(b.output)) || (b.errors && !existsSync(b.errors))) {
          if (!(await this.salvage.download(b, undefined, this.signal))) return
          b = (await this.o.ledger.batches.get(b.id))!
        }
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
    const file = await requestFile(this.packing, b)
    if (file === null) return
    crashPoint("intent")
    await this.primer?.prime(b.id, this.signal)
    let remote
    try {
      remote = await this.api.create(file, this.tagOf(b), this.signal)
    } catch (err) {
      if (err instanceof ProviderError && err.errorClass === "queue_limit") return this.queueLimited(b, err)
      throw err
    }
    crashPoint("created")
    await ledger.batches.submitted(b.id, remote)
    await ledger.batches.later(b.id, Date.now() + this.pollMs())
    log.info("batch created", { run: run.name, batch: b.id, provider_id: remote.id, items: b.count })
  }

  /** The provider's queue is full: the batch goes back (pack.ts `queueLimited`); packing waits as it says. */
  private async queueLimited(b: Batch, err: ProviderError): Promise<void> {
    const { full, after } = await queueLimited(this.packing, b, err)
    this.queueFull = full
    if (!full) this.packAfter = after
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
      if (await this.salvage.download((await ledger.batches.get(b.id))!, remote, this.signal))
        await this.apply((await ledger.batches.get(b.id))!)
    }
  }

  /** The wait before the next look: poll_s, growing by half each look that finds nothing new, up to poll_max_s. */
  private pollMs(same = 0): number {
    const { poll_s, poll_max_s } = this.o.job.batch
    return Math.min(poll_max_s, poll_s * 1.5 ** same) * 1000
  }

  /** Settles an ended batch's items from its checked files (salvage.ts), counting them as they commit. */
  private async apply(b: Batch): Promise<void> {
    const lines = await this.salvage.apply(b, async (chunk) => {
      for (const o of chunk) {
        if (o.to === "completed") this.progress.completed++
        else if (o.to === "failed" || o.to === "needs_review") this.progress.failed++
      }
      await this.onCommit?.(this.progress)
    })
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
    if (this.stopping || this.pausedBy) return false
    // the cache first: what it holds is completed with no batch (whatever the queue's room or the spend cap: a hit
    // needs neither), and only what it was asked for is packed
    if (this.o.lookup) {
      const { hits } = await this.o.lookup.sweep(Number.POSITIVE_INFINITY)
      if (hits > 0) {
        this.progress.completed += hits
        await this.onCommit?.(this.progress)
      }
    }
    if (this.queueFull || Date.now() < this.packAfter) return false
    const room = await queueRoom(this.packing)
    if (room.tokens <= 0 || room.requests <= 0 || room.batches <= 0) return false
    const affordable = await this.affordable()
    if (affordable <= 0) return false
    // the last items are the realtime tail's: no batch is packed for them, whichever of the two looks first
    if ((await tailItems(this.packing)) > 0) return false
    const candidates = await ledger.batches.packable(run.id, Math.min(cap, room.requests, affordable), {
      looked: this.o.lookup !== undefined,
    })
    if (candidates.length === 0) {
      this.waitingSince = undefined
      return false
    }
    const ingesting = (await ledger.runs.get(run.id))?.ingested === 0
    // looked at again once the inputs are seen read: they may have been read to their end since the look above
    if (!ingesting && (await tailItems(this.packing)) > 0) return false
    if (ingesting && candidates.length < cap) {
      this.waitingSince ??= Date.now()
      if (Date.now() - this.waitingSince < job.batch.flush_s * 1000) return false
    }
    this.waitingSince = undefined
    const { batch: b, failed, marked } = await packOne(this.packing, candidates, room.tokens)
    if (b) this.primer?.note(b.id, marked)
    if (failed > 0) {
      this.progress.failed += failed
      await this.onCommit?.(this.progress)
    }
    if (!b) return true
    this.fresh.add(b.id)
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

  // ---- the last items, through direct calls

  /**
   * With `tail_realtime = N`: once the inputs are read, no batch is live, and at most N items are left, they are
   * finished with direct calls on the same ledger (the realtime runner), rather than waiting for another batch.
   */
  private async tail(): Promise<boolean> {
    const { ledger, run, job } = this.o
    const left = await tailItems(this.packing)
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
      lookup: this.o.lookup,
      prefixes: this.o.prefixes,
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

  // ---- cancel

  /**
   * `spool cancel`: every live batch is cancelled at the provider, then salvaged as it ends; intents are looked up
   * first (a batch created just before a crash is cancelled too). Items never sent stay pending.
   */
  private async cancel(): Promise<"cancelled" | "interrupted" | "paused"> {
    const { ledger, run } = this.o
    const asked = new Set<number>()
    for (;;) {
      const live = (await ledger.batches.live(run.id)).filter((b) => !this.salvage.held.has(b.id))
      if (live.length === 0 && this.salvage.held.size > 0) return this.holdUp()
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
