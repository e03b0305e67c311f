/** Drives a run's items through the ledger: claim, call, record; concurrency-limited, durable at every step. */
import { JobError, ProviderError } from "../../plugins/api/errors.ts"
import * as retry from "./retry.ts"
import type { Ledger } from "../ledger/ledger.ts"
import type { Claimed, Outcome, Run } from "../ledger/types.ts"
import * as template from "../job/template.ts"
import type { Job } from "../job/job.ts"
import type { ProviderClient } from "../../plugins/api/define.ts"
import { baseTokens, tokens } from "../job/estimate.ts"
import * as schemas from "../job/schema.ts"
import { tokensOf, type Budget } from "./budget.ts"
import * as decide from "./decide.ts"
import { dead, leaseMs } from "./owner.ts"
import { Limiter } from "./ratelimit.ts"
import { Waker } from "./wake.ts"
import { cacheWrite, type Lookup } from "./cache.ts"
import { EMBEDDERS, Embedder, type Group } from "./embed.ts"
import { arrange, type Prefixes } from "./prefix.ts"

export type Ending = "done" | "interrupted" | "paused" | "cancelled"

export interface Progress {
  completed: number
  failed: number
  retried: number
  inFlight: number
}

export interface RunnerOptions {
  ledger: Ledger
  run: Run
  job: Job
  client: ProviderClient
  owner: string
  leaseMs?: number
  policy?: retry.Policy
  /** The spend cap (`limits.max_cost_usd`), with what the run had spent before this process. */
  budget?: Budget | undefined
  /** The store tells this process of changes (`Ledger.listen`): idle, it looks every few seconds, and when told. */
  listening?: boolean
  /** The response cache's look-ups, unless the job turns it off: asked before any item is claimed (cache.ts). */
  lookup?: Lookup | undefined
  /** The prompt cache's prefixes (prefix.ts), unless the job turns it off: each claim is sent prefix by prefix. */
  prefixes?: Prefixes | undefined
  /** Whether this process is still reading the run's inputs to their end (not `spool watch`'s passes). */
  reading?: (() => boolean) | undefined
}

const IDLE_POLL_MS = 1000
/** An idle runner's look at the ledger when the store tells it of changes (a lapsed lease is still found so). */
const LISTENING_POLL_MS = 5000
/** How often the spend cap is synced with every worker's spend. */
const SYNC_MS = 250
/** The longest a finished result waits for companions before it is committed. */
const GROUP_MS = 10
/** Items the cache is asked for per turn of the loop, at most: a long sweep does not hold up the calls. */
const SWEEP_ITEMS = 20_000

/** An item claimed ahead that was never sent goes back to pending; the ledger takes its attempt back (claims.ts). */
function unsent(item: Claimed): Outcome {
  return {
    item: item.id,
    attempt: item.attempt,
    to: "pending",
    label: "unsent",
    latencyMs: 0,
    endedAt: Date.now(),
  }
}

export class Runner {
  readonly progress: Progress = { completed: 0, failed: 0, retried: 0, inFlight: 0 }
  /** Called after each commit with what this process has committed so far; awaited before the loop goes on. */
  onCommit: ((progress: Progress) => void | Promise<void>) | undefined
  /** Set when a provider error paused the run. */
  pausedBy: ProviderError | undefined
  /** Set when the spend cap stopped new work. */
  capped: string | undefined
  private readonly o: RunnerOptions
  private readonly prompt: template.Template
  /** Keeps calls under the provider's rate limits, configured or learned, and backs off on 429 bursts. */
  readonly limiter: Limiter
  private limiterTimer: ReturnType<typeof setTimeout> | undefined
  /** The structured-output check, when the job has a schema. */
  private readonly validate: ((value: unknown) => string | undefined) | undefined
  /** The input tokens every request of the job has whatever its row (job/estimate.ts). */
  private readonly base: number
  /** In flight, by item (an embedding request: by its first item). */
  private readonly inflight = new Map<number, AbortController>()
  /** An embedding job's cutting of items into requests (embed.ts); undefined for chat. */
  private readonly embedder: Embedder | undefined
  /** Claimed (committed as running) but not yet sent: a finished call starts the next without waiting for a commit. */
  private readonly queue: Claimed[] = []
  private outcomes: Outcome[] = []
  private stopping = false
  /** `spool pause` or `spool cancel` from another process, read from the run's state every half second. */
  private userHold: "paused" | "cancelling" | undefined
  private checkedAt = 0
  /** Work outside the loop's turns that failed (a lease renewal, a rate grant): the loop stops with it next turn. */
  private broken: unknown
  /** A grant from the run's rate buckets is being asked for (one at a time). */
  private granting = false
  private readonly waker = new Waker()
  private readonly leaseMs: number
  /** How many items are claimed ahead of free slots, and the most results one commit waits for. */
  private readonly ahead: number
  private soon = false
  /** Something changed since the loop last looked at the ledger (poke). */
  private news = false
  /** How long an idle loop sleeps, and how often it reads the run's state, when nothing tells it sooner. */
  private readonly idleMs: number
  private readonly stateMs: number
  private syncedAt = 0
  /** When this worker last took back the items of lapsed leases (every lease length, busy or not). */
  private recoveredAt = Date.now()
  /** Items other workers hold (running in the ledger, not ours), as of the last sync: under way for the cap too. */
  private others = 0
  /**
   * Pending items the cache was never asked for may be there: at the start, after news (items read, a state
   * changed) and after an idle wait. A sweep that finds none clears it, so a busy loop does not ask every turn.
   */
  private unlooked = true

  constructor(options: RunnerOptions) {
    this.o = options
    this.prompt = template.parse(options.job.request.prompt)
    this.validate = options.job.output ? schemas.validator(options.job.output.schema) : undefined
    this.base = baseTokens(options.job.request)
    this.embedder = options.job.request.kind === "embedding" ? new Embedder(options.job) : undefined
    if (this.embedder && !options.client.embed)
      throw new JobError(`provider "${options.job.provider.name}" cannot embed`, [], EMBEDDERS)
    const { rpm, tpm, concurrency } = options.job.limits
    this.limiter = new Limiter({ rpm, tpm, concurrency, pooled: true })
    this.leaseMs = options.leaseMs ?? leaseMs()
    // a store over the network (PostgreSQL) commits in a round trip that several workers share: a slot whose call
    // ends must find its next item claimed already, so a whole round is claimed ahead there (4 workers × 64 at
    // 50 ms: 78% of the ideal with a quarter, 91% with a whole; docs/BENCHMARKS.md); SQLite commits in a local fsync.
    // Under a spend cap a quarter still: what is claimed ahead may start before the next look at the run's spend
    const whole = options.listening && !options.budget
    this.ahead = Math.ceil(options.job.limits.concurrency / (whole ? 1 : 4))
    this.idleMs = options.listening ? LISTENING_POLL_MS : IDLE_POLL_MS
    this.stateMs = options.listening ? LISTENING_POLL_MS : 500
  }

  /** What the store told: items to claim, or the run's state changed (read it at the next turn). */
  notice(kind: "items" | "state"): void {
    if (kind === "state") this.checkedAt = 0
    this.poke()
  }

  /** Stops claiming; in-flight calls run on until they end or `abort()` is called. */
  stop(): void {
    this.stopping = true
    this.waker.notify()
  }

  /**
   * Cuts every in-flight call short. Those items go back to pending as `interrupted`: the ledger keeps the attempt
   * (the provider may have been paid) but does not count it toward max_attempts, so a stop never uses up an item's
   * tries (README, "What happens when things go wrong").
   */
  abort(): void {
    for (const controller of this.inflight.values()) controller.abort(new Error("interrupted"))
  }

  async loop(): Promise<Ending> {
    const { ledger, run, owner } = this.o
    const ahead = this.ahead
    const renew = setInterval(() => {
      ledger.claims.renew(run.id, owner, this.leaseMs).catch((err: unknown) => {
        this.broken ??= err
        this.waker.notify()
      })
    }, this.leaseMs / 4)
    try {
      for (;;) {
        if (this.broken !== undefined) throw this.broken
        if (Date.now() - this.checkedAt >= this.stateMs) await this.watch()
        if (this.o.budget && Date.now() - this.syncedAt >= SYNC_MS) await this.sync(this.o.budget)
        // a worker cut off or dead elsewhere: its items come back once their lease lapses, even while this one is
        // busy with others (an idle one also looks in nothingToClaim)
        if (Date.now() - this.recoveredAt >= this.leaseMs) {
          this.recoveredAt = Date.now()
          if ((await ledger.claims.recover(run.id, dead)) > 0) this.news = true
        }
        const holding = this.holding
        // items claimed ahead but never sent go back as they were; no request left for them
        if (holding) for (const item of this.queue.splice(0)) this.outcomes.push(unsent(item))
        // an embedding request carries many items: a slot claims as many as one may carry
        const per = this.embedder?.limits.inputs ?? 1
        let free = holding ? 0 : (this.slots() + ahead - this.inflight.size) * per - this.queue.length
        if (free > 0 && this.o.budget) free = Math.min(free, this.affordable(this.o.budget))
        // the cache first: what it holds is completed here, outside every limit (the spend cap too: a hit costs
        // nothing), and only what it was asked for may be claimed for a call; a sweep that left some for the next
        // turn is news, so that turn comes at once
        const swept = this.sweeps(free) ? await this.sweep(this.o.lookup!) : false
        if (this.capped && !holding) continue // the next turn commits what is waiting and winds down
        const done = this.outcomes
        this.outcomes = []
        this.news = swept
        const claimed = await ledger.claims.step(run.id, owner, done, free, this.leaseMs, {
          looked: this.o.lookup !== undefined,
        })
        const told = this.committed(done)
        if (told) await told
        this.queue.push(...(await arrange(this.o.prefixes, claimed, ledger, run.id)))
        this.fill()
        if (this.outcomes.length > 0) {
          await this.waker.sleep(this.commitNow() ? 0 : GROUP_MS)
          continue
        }
        if (this.inflight.size > 0) {
          // with free slots, look again when a retry falls due or new items may have come in
          const roomy = !holding && this.inflight.size < this.slots()
          const wait = roomy ? await this.untilDue() : undefined
          // a call that ended, or news that came, while untilDue read the ledger has notified no sleep (the waker
          // is not sticky): look again now. The run's last call ending so slept the idle wait through, 5 s at the
          // end of a run on PostgreSQL (LISTENING_POLL_MS)
          if (this.outcomes.length === 0 && !this.news) await this.waker.sleep(wait)
          continue
        }
        if (holding) {
          if (this.pausedBy) return "paused"
          if (this.capped) {
            if (swept) continue // items the cache serves are still being looked up
            // a run still reading its inputs has items to come: capped before they are in, it pauses, not ends
            const left = await this.o.ledger.reads.counts(run.id)
            const reading = (await this.o.ledger.runs.get(run.id))?.ingested === 0
            const waiting = left.pending + left.retry_wait > 0
            // nothing waits while this process reads on: what it reads may be all hits, or nothing new (a resume)
            if (!waiting && reading && this.o.reading?.()) await this.waker.sleep(this.idleMs)
            else return waiting || reading ? "paused" : "done"
            continue
          }
          if (this.stopping) return "interrupted"
          if (this.userHold === "cancelling") {
            await ledger.runs.setState(run.id, "cancelled", "cancelled by `spool cancel`")
            return "cancelled"
          }
          // paused by another worker at the spend cap (the run's, synced above): this one stops at it too
          if (this.o.budget && this.o.budget.room(0) <= 0) {
            this.capped = this.o.budget.reached()
            continue
          }
          // paused by `spool pause`: nothing is in flight; wait for `spool resume`
          await this.waker.sleep(this.idleMs)
          continue
        }
        const wait = await this.nothingToClaim()
        if (wait === null) return "done"
        // pending items none of ours can claim: perhaps never looked up (another process's, with the cache off)
        this.unlooked = true
        if (!this.news) await this.waker.sleep(wait)
      }
    } finally {
      clearInterval(renew)
      clearTimeout(this.limiterTimer)
    }
  }

  private get holding(): boolean {
    return (
      this.stopping || this.pausedBy !== undefined || this.capped !== undefined || this.userHold !== undefined
    )
  }

  private async watch(): Promise<void> {
    this.checkedAt = Date.now()
    const state = (await this.o.ledger.runs.get(this.o.run.id))?.state
    this.userHold =
      state === "paused"
        ? "paused"
        : state === "cancelling" || state === "cancelled"
          ? "cancelling"
          : undefined
  }

  /** Calls that may be in flight now: the job's concurrency, or less while 429s have cut it back. */
  private slots(): number {
    return Math.max(1, Math.floor(this.limiter.concurrency))
  }

  /** Tokens a call will count against a tokens-per-minute limit: its input, estimated, and its max_tokens. */
  private estimate(item: Claimed): number {
    return this.base + tokens(item.data) + (this.o.job.request.max_tokens ?? 0)
  }

  /** Starts queued items while there is room, and while the rate limits allow; else looks again when they will. */
  private fill(): void {
    if (this.embedder) return this.fillEmbeddings(this.embedder)
    while (!this.holding && this.inflight.size < this.slots() && this.queue.length > 0) {
      const item = this.queue[0]!
      const tokens = this.estimate(item)
      if (!this.limiter.take(tokens)) {
        this.blocked(tokens)
        return
      }
      this.queue.shift()
      this.start(item.id, (signal) => this.attempt(item, signal, tokens).then((o) => [o]))
    }
  }

  /**
   * `fill` for an embedding job: requests of many items, the queue shared among the free slots (embed.ts cuts them);
   * an item never sent (its input over the model's limit, or unfilled) is failed at once.
   */
  private fillEmbeddings(embedder: Embedder): void {
    while (!this.holding && this.inflight.size < this.slots() && this.queue.length > 0) {
      const most = Math.ceil(this.queue.length / (this.slots() - this.inflight.size))
      const { group, failed } = embedder.take(this.queue, most)
      if (failed.length > 0) (this.outcomes.push(...failed), this.wake())
      if (!group) continue
      if (!this.limiter.take(group.tokens)) {
        this.queue.unshift(...group.items)
        this.blocked(group.tokens)
        return
      }
      this.start(group.items[0]!.id, (signal) => this.embed(embedder, group, signal))
    }
  }

  /** Held back by the limits: a grant asked for, unless one is due (asked at once, each gave mere crumbs); or a wait. */
  private blocked(tokens: number): void {
    const wait = this.limiter.wait(tokens)
    if (wait !== Number.POSITIVE_INFINITY) this.later(wait)
    else if (this.limiterTimer === undefined) this.ask()
  }

  /** Fills again in `ms` (one timer at a time). */
  private later(ms: number): void {
    this.limiterTimer ??= setTimeout(() => {
      this.limiterTimer = undefined
      this.fill()
    }, ms)
  }

  /**
   * Asks the run's rate buckets (ledger.ts `Workers.take`, one for all its workers) for what the next calls lack,
   * and fills with what they gave; the rest is asked for again when they say it will be there.
   */
  private ask(): void {
    if (this.granting) return
    this.granting = true
    this.granted().then(
      (wait) => {
        this.granting = false
        if (wait > 0) this.later(wait)
        this.fill()
      },
      (err: unknown) => {
        this.granting = false
        this.broken ??= err
        this.waker.notify()
      },
    )
  }

  /** Takes grants for the calls that may start now; how long until the rest of what they lack is there (0: none). */
  private async granted(): Promise<number> {
    const head = this.queue.slice(0, Math.max(1, this.slots() - this.inflight.size))
    const lack = this.limiter.lack(
      head.length,
      head.reduce((sum, item) => sum + this.estimate(item), 0),
    )
    const { rpm, tpm } = this.o.job.limits
    let wait = 0
    for (const [name, want, limit] of [
      ["rpm", lack.rpm, rpm],
      ["tpm", lack.tpm, tpm],
    ] as const) {
      if (want <= 0) continue
      const grant = await this.o.ledger.workers.take(this.o.run.id, name, limit, want)
      this.limiter.grant(name, grant.granted)
      wait = Math.max(wait, grant.waitMs)
    }
    return wait
  }

  private async untilDue(): Promise<number> {
    const next = await this.o.ledger.claims.nextRetryAt(this.o.run.id)
    return next === null ? this.idleMs : Math.max(0, Math.min(next - Date.now(), this.idleMs))
  }

  /** With nothing in flight and nothing claimable: null when the run has nothing left, else how long to wait. */
  private async nothingToClaim(): Promise<number | null> {
    const { ledger, run } = this.o
    if ((await ledger.claims.nextRetryAt(run.id)) !== null) return this.untilDue()
    const counts = await ledger.reads.counts(run.id)
    const ingesting = (await ledger.runs.get(run.id))?.ingested === 0
    if (counts.running === 0 && counts.queued === 0 && counts.pending === 0 && !ingesting) return null
    // another worker holds items or is still ingesting: wait for it, and take over what a dead one held
    await ledger.claims.recover(run.id, dead)
    return this.idleMs
  }

  /**
   * Wakes the loop: new items were ingested, or something else changed. News that comes while the loop is awake is
   * kept, so an idle loop looks again at once instead of sleeping through it.
   */
  poke(): void {
    this.news = true
    this.unlooked = true
    this.waker.notify()
  }

  /**
   * Whether this turn looks items up in the cache: when some may be there to look up (`unlooked`), with room for
   * calls or at the spend cap (hits are free); never while stopping, paused by the provider, or held by `spool
   * pause` or `spool cancel`.
   */
  private sweeps(free: number): boolean {
    if (!this.o.lookup || !this.unlooked) return false
    if (this.stopping || this.pausedBy || this.userHold !== undefined) return false
    return free > 0 || this.capped !== undefined
  }

  /** A turn's look-ups in the cache; its hits are progress like any other completion. Whether some were left. */
  private async sweep(lookup: Lookup): Promise<boolean> {
    const { hits, more } = await lookup.sweep(SWEEP_ITEMS)
    this.unlooked = more
    if (hits > 0) {
      this.progress.completed += hits
      this.progress.inFlight = this.inflight.size
      await this.onCommit?.(this.progress)
    }
    return more
  }

  /**
   * How many more items may start under the spend cap (budget.ts), every item in flight or claimed counted. When
   * nothing more fits, new work stops and the run pauses once the calls in flight have ended.
   */
  private affordable(budget: Budget): number {
    const underway = this.inflight.size + this.queue.length + this.others
    const room = budget.room(underway)
    if (room <= 0 && underway === 0) {
      this.capped = budget.reached()
      this.waker.notify()
    }
    return room
  }

  /**
   * The run's spend and what other workers hold, from the ledger: with several workers the cap is the run's. An
   * item another worker holds is counted under way; one of ours ended but not yet committed stays counted as ours.
   */
  private async sync(budget: Budget): Promise<void> {
    this.syncedAt = Date.now()
    const summary = await this.o.ledger.reads.summary(this.o.run.id)
    budget.sync(summary)
    const ours = this.inflight.size + this.queue.length + this.outcomes.length
    this.others = Math.max(0, summary.counts.running - ours)
  }

  /** Counts what a commit carried; what `onCommit` returns (a promise, when it reads the ledger) is awaited. */
  private committed(outcomes: Outcome[]): void | Promise<void> {
    const budget = this.o.budget
    for (const o of outcomes) {
      if (budget && o.label !== "unsent") budget.add(tokensOf(o))
      if (o.to === "completed") this.progress.completed++
      else if (o.to === "failed" || o.to === "needs_review") this.progress.failed++
      else if (o.to === "retry_wait") this.progress.retried++
    }
    this.progress.inFlight = this.inflight.size
    if (outcomes.length > 0) return this.onCommit?.(this.progress)
  }

  /** Makes one call (one item's, or an embedding request's) under `key`; its outcomes are committed as they end. */
  private start(key: number, call: (signal: AbortSignal) => Promise<Outcome[]>): void {
    const controller = new AbortController()
    this.inflight.set(key, controller)
    call(controller.signal).then((outcomes) => {
      this.inflight.delete(key)
      this.outcomes.push(...outcomes)
      // the queue is started first: whether to commit now depends on what is left in it
      this.fill()
      this.wake()
    })
  }

  /** Wakes the loop to commit, when it should now, once the responses already in have settled: one commit for all. */
  private wake(): void {
    if (this.commitNow() && !this.soon) {
      this.soon = true
      setImmediate(() => {
        this.soon = false
        this.waker.notify()
      })
    }
  }

  /**
   * Whether the results waiting should be committed now. While claimed-ahead items keep every slot busy, results
   * gather into one commit, up to a quarter of concurrency or GROUP_MS: fewer fsyncs, and a crash can cost at most
   * that many finished calls.
   */
  private commitNow(): boolean {
    return this.outcomes.length >= this.ahead || this.queue.length === 0 || this.holding
  }

  private async attempt(item: Claimed, signal: AbortSignal, tokens: number): Promise<Outcome> {
    const started = performance.now()
    const base = { item: item.id, attempt: item.attempt }
    const end = () => ({ latencyMs: Math.round(performance.now() - started), endedAt: Date.now() })
    const request = template.requestOf(this.o.job, this.prompt, item.data, this.o.prefixes)
    if ("unfilled" in request)
      return {
        ...base,
        ...end(),
        to: "failed",
        label: "failed",
        errorClass: "template",
        error: request.unfilled,
      }
    try {
      const reply = await this.o.client.call(request, signal)
      this.limiter.observe(reply.rate)
      this.limiter.settle(tokens, reply.usage.input_tokens + reply.usage.output_tokens)
      this.limiter.succeeded()
      const settled = decide.answer(reply, this.validate, item.attempt, this.max)
      // only an answer that passed every gate is cached
      const cache =
        settled.verdict === "completed" ? cacheWrite(this.o.lookup?.use, reply.usage, false) : undefined
      return { ...this.outcome(item, end(), settled), ...(cache && { cache }) }
    } catch (err) {
      return this.failure([item], end(), err, signal)[0]!
    }
  }

  /**
   * One embedding request: its items completed with their vectors and shares of the usage (embed.ts); when it fails,
   * each of its items as a chat call's would (retried, failed, or back to pending when cut short).
   */
  private async embed(embedder: Embedder, group: Group, signal: AbortSignal): Promise<Outcome[]> {
    const started = performance.now()
    const end = () => ({ latencyMs: Math.round(performance.now() - started), endedAt: Date.now() })
    try {
      const dimensions = this.o.job.request.dimensions
      const got = await this.o.client.embed!(group.inputs, { dimensions }, signal)
      this.limiter.observe(got.rate)
      this.limiter.settle(group.tokens, got.usage.input_tokens)
      this.limiter.succeeded()
      return embedder.settle(group, got, end())
    } catch (err) {
      return this.failure(group.items, end(), err, signal)
    }
  }

  /** How a call that threw ends for its items (one, or an embedding request's): its error is told once. */
  private failure(
    items: Claimed[],
    ended: { latencyMs: number; endedAt: number },
    err: unknown,
    signal: AbortSignal,
  ): Outcome[] {
    const base = (item: Claimed) => ({ item: item.id, attempt: item.attempt, ...ended })
    if (signal.aborted) return items.map((item) => ({ ...base(item), to: "pending", label: "interrupted" }))
    const e =
      err instanceof ProviderError
        ? err
        : new ProviderError("bad_response", `unexpected error: ${(err as Error)?.message ?? String(err)}`, {
            retryable: true,
            cause: err,
          })
    this.limiter.observe(e.rate)
    if (e.errorClass === "rate_limit") this.limiter.limited()
    if (e.pause) {
      this.pausedBy ??= e
      this.waker.notify()
      return items.map((item) => ({ ...base(item), ...decide.recorded(e), to: "pending", label: "paused" }))
    }
    return items.map((item) =>
      this.outcome(item, ended, decide.error(e, item.attempt, this.max), retry.askedWait(e, this.o.policy)),
    )
  }

  private get max(): number {
    return this.o.job.limits.max_attempts
  }

  /** A settled attempt as the ledger records it; "again" is a backoff in retry_wait (the provider's Retry-After). */
  private outcome(
    item: Claimed,
    ended: { latencyMs: number; endedAt: number },
    settled: decide.Settled,
    retryAfterMs?: number,
  ): Outcome {
    const { verdict, ...fields } = settled
    const at = { item: item.id, attempt: item.attempt, ...ended, ...fields, label: decide.label(verdict) }
    if (verdict !== "retry") return { ...at, to: verdict }
    return {
      ...at,
      to: "retry_wait",
      nextAt: Date.now() + retry.delay(item.attempt, retryAfterMs, this.o.policy),
    }
  }
}
