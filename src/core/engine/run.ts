/** `spool run`: from a job to a finished (or safely stopped) run. The CLI only parses, calls this, and prints. */
import { JobError, SourceError, type ExitCode } from "../../plugins/api/errors.ts"
import * as jobs from "../job/job.ts"
import { UsageError } from "../base/errors.ts"
import * as log from "../base/log.ts"
import * as registry from "../../plugins/registry.ts"
import { alive, type Ledger } from "../ledger/ledger.ts"
import { isUrl, open, shown, withoutPassword } from "../ledger/open.ts"
import type { Run } from "../ledger/types.ts"
import * as template from "../job/template.ts"
import type { State } from "../ledger/states.ts"
import {
  expand,
  globBase,
  ingest,
  plan,
  preflight,
  specs,
  verify,
  type Planned,
  type Spec,
} from "./ingest.ts"
import { Follower, pollMs, sleep } from "./follow.ts"
import { Runner } from "./runner.ts"
import { dead, enlist, ingestLease, ownerId } from "./owner.ts"
import { Budget, capOf } from "./budget.ts"
import { warnUnpriced } from "../job/pricing.ts"
import type { Ticker } from "../report/report.ts"
import type { BatchClient, ProviderClient } from "../../plugins/api/define.ts"
import { Batcher } from "./batcher.ts"
import * as canaries from "./canary.ts"
import { canaryReport, type CanaryReport } from "../report/canary.ts"
import { lookupOf } from "./cache.ts"
import { Asker } from "./asker.ts"
import { client, identity } from "./provider.ts"
import { prefixesOf } from "./prefix.ts"
import { finish, sameInputs, startRun, tally, type Session, type StartOptions } from "./session.ts"
import { preparePipeline } from "./pipeline.ts"

export { checkProvider, client, identity } from "./provider.ts"
export { afterCancel, withFlag, type Session, type StartOptions } from "./session.ts"

/** How often, at most, progress reads the run's counts again (a few rows of the tallies). */
const TICK_MS = 200

/** Reopens an existing run: reads inputs on from their checkpoints, and re-queues what dead workers held. */
async function resume(db: Ledger, run: Run, o: StartOptions, unread: boolean): Promise<void> {
  if (run.state === "cancelled") {
    const { total, done } = tally(await db.reads.counts(run.id))
    log.info(
      `run "${run.name}" was cancelled: going on with its ${total - done} item(s) left; the ${done} finished are kept (--new-run starts over)`,
    )
  }
  await db.runs.setResume(run.id, o.resume)
  if (run.state !== "running") await db.runs.setState(run.id, "running")
  if (o.reingest) await db.ingest.reset(run.id)
  // reopened by a worker that cannot read the inputs, they would wait for a reader that may never come
  else if (!unread) await db.ingest.reopen(run.id)
  const back = await db.claims.recover(run.id, dead)
  log.info("resuming", { run: run.name, id: run.id, ...(back ? { requeued: back } : {}) })
}

/** Validates the job, opens the store, finds or creates the run, and recovers what a crash left in flight. */
export async function prepare(o: StartOptions): Promise<Session> {
  const loaded = jobs.load(o.file, o.flags)
  if (loaded.steps) return preparePipeline(o, loaded)
  if (o.rerunFrom !== undefined)
    throw new UsageError(
      "--rerun-from names a step of a pipeline; this job has no [[step]] tables",
      "Drop --rerun-from.",
    )
  const { job, store } = loaded
  await registry.load(job.plugins ?? [])
  const provider = client(job)
  const cap = capOf(job)
  const prompt = template.parse(job.request.prompt)
  const given = specs(job, o.follow)
  let unread: SourceError | undefined
  let inputs: Planned[]
  try {
    inputs = plan(job, o.follow)
  } catch (err) {
    // perhaps another machine's file: only a worker joining a run under way may go on without it (below)
    if (!(err instanceof SourceError) || o.newRun) throw err
    unread = err
    inputs = []
  }
  const at = o.store ?? store ?? o.home
  const db = await open(at, { synchronous: o.synchronous ?? "FULL" })
  log.init(o.home)
  log.debug("ledger opened", { store: shown(at) })
  const latest = await db.runs.latest(job.name)
  // without its inputs a worker can only help: the inputs read to their end, or read by a worker alive now
  if (unread && (!latest || (latest.ingested === 0 && alive(await db.workers.list(latest.id)) === 0))) {
    await db.close()
    throw unread
  }
  const { run, created } = await startRun(
    db,
    o,
    latest,
    {
      name: job.name,
      job,
      fingerprint: jobs.fingerprint(job),
      inputs: inputs.map((i) => ({ path: i.path, format: i.source.name })),
    },
    () => preflight(inputs, prompt, job.request.kind === "embedding" ? "request.input" : "request.prompt"),
  )
  // decided before the run is touched: --canary on a run past its first items is refused with nothing changed
  const canary = await canaries
    .plan(db, run, { asked: o.canary, job, follow: o.follow ?? false })
    .catch(closing(db))
  // a glob's match that is gone is warned about once, here or at the pass that first misses it
  const gone = new Set<string>()
  if (unread)
    log.warn(
      "this machine cannot read the run's inputs: this worker processes the run's items, and leaves reading them to a worker that can",
      { run: run.name, error: unread.message },
    )
  else await sameInputs(db, run, given, inputs, gone)
  if (run.fingerprint !== jobs.fingerprint(job)) {
    const changed = jobs.changedKeys(run.job, job)
    await db.close()
    throw new JobError(
      `run "${job.name}" was started with a different job; resuming it would mix two kinds of requests`,
      changed.map((k) => `${k} changed`),
      `Put back the old values to resume it, or start a fresh run: add --new-run, or give the job another name.`,
    )
  }
  if (!created) {
    // a changed input is refused before the run is touched or any call is made
    if (!o.reingest && !unread) await verify(db, run, inputs).catch(closing(db))
    await db.runs.updateJob(run.id, job)
  }
  // from here on this process works on the run: a worker with a heartbeat until execute() ends (owner.ts)
  const worker = await enlist(db, run.id)
  if (!created) await resume(db, run, o, unread !== undefined)
  warnUnpriced(job.provider, job.pricing)
  if (canary !== undefined) await db.canaries.start(run.id, canary)
  const owner = ownerId()
  const policy = { baseMs: job.limits.retry_base_s * 1000, capMs: job.limits.retry_cap_s * 1000 }
  // the response cache's look-ups, one for the process: rows it answers are stored completed as they are read
  // (Lookup.ask), and pending items are asked before the runner claims or the batcher packs them
  const who = identity(job)
  const lookup = lookupOf(db, run, owner, job, who)
  if (job.request.kind === "embedding" && job.cache.enabled)
    log.info("the response cache is off for embedding jobs")
  // the provider's prompt cache: where each request's shared prefix ends, learned from the run's first rows
  const prefixes = prefixesOf(job, run.name)
  /** Direct calls, their spend cap counted from what the run has spent by the time they start. */
  const runner = async (ledger: Ledger) =>
    new Runner({
      ledger,
      run,
      job,
      client: provider,
      owner,
      policy,
      budget: cap && new Budget(cap, job.request, await db.reads.summary(run.id)),
      listening: db.listen !== undefined,
      lookup,
      prefixes,
      reading: () => ingesting,
    })
  // realtime calls or provider batches: the same ledger, driven one way or the other
  const drive = async (): Promise<Runner | Batcher> =>
    job.provider.mode === "batch"
      ? new Batcher({
          ledger: db,
          run,
          job,
          client: provider as ProviderClient & { batch: BatchClient },
          owner,
          home: o.home,
          policy,
          cap,
          lookup,
          prefixes,
        })
      : runner(db)
  // a canary's calls come first, through a Runner that sees only the run's first items; the rest once it has ended
  const canaryRunner = canary === undefined ? undefined : await runner(canaries.within(db, canary))
  let driver: Runner | Batcher = canaryRunner ?? (await drive())
  let stopping = false
  let interrupt = () => {}
  const interrupted = new Promise<false>((done) => (interrupt = () => done(false)))
  const counted = tally(await db.reads.counts(run.id))
  const ticker: Ticker = { ...counted, startedAt: Date.now(), doneAtStart: counted.done }
  const ingestAbort = new AbortController()
  // the command that started this process resumes the run from now on (resume() stored it)
  const current: Run = { ...run, resume: o.resume }
  const follower = o.follow ? new Follower(pollMs()) : undefined
  /** Shows the run's counts again (at most every TICK_MS): set by execute() to its `tick`. */
  let progressed = (): void => {}

  /** This process reads the inputs to their end (not `spool watch`'s endless passes), and has not yet. */
  let ingesting = false
  async function ingester(): Promise<void> {
    ingesting = !follower && !unread
    const signal = ingestAbort.signal
    const lease = ingestLease(db, current.id, owner)
    const seen = follower && new Map<string, string>()
    let files = inputs
    try {
      while (!unread && !signal.aborted && (follower || (await db.runs.get(current.id))?.ingested === 0)) {
        if (!(await lease())) {
          await sleep(2000, signal)
          continue
        }
        if (follower) files = await pass(follower)
        // a long input's rows are asked of the cache on a thread of their own (asker.ts)
        const asker = lookup && new Asker(lookup, { store: at, run: current, owner, job, who })
        const added = await ingest(db, current, files, lease, {
          signal,
          follow: seen,
          ask: asker && ((rows) => asker.ask(rows)),
          onBatch: (n) => {
            ticker.total += n
            // rows the cache answered were stored completed: progress the driver has no commit of its own to show
            if (lookup) progressed()
            driver.poke()
          },
        }).finally(() => asker?.close())
        if (added.problems > 0) {
          log.warn("input lines skipped", { run: current.name, count: added.problems, see: "spool status" })
        }
        // each stored batch has poked the driver already; this tells it the inputs are read to their end
        if (!follower) driver.poke()
        else await follower.wait(signal)
      }
    } finally {
      ingesting = false
      follower?.close()
    }
  }

  /** Follow mode, before each pass: the globs matched again, new files made inputs, and everything watched. */
  async function pass(follower: Follower): Promise<Planned[]> {
    const files = expand(given, true)
    await sameInputs(db, current, given, files, gone)
    for (const s of given) {
      if (!s.glob) follower.watch(s.path, "file")
      else {
        const { dir, rest } = globBase(s.path)
        follower.watch(dir, rest.includes("/") ? "tree" : "dir")
      }
    }
    return files
  }

  /**
   * Once the canary's items have ended: its report, when the inputs are read to their end (so it counts every item),
   * and the answer to it. Stopped here, the run is paused, to go on at the next start; a signal during the question
   * leaves the report due again.
   */
  async function afterCanary(
    size: number,
    reading: Promise<void>,
    onCanary: ((report: CanaryReport) => Promise<boolean>) | undefined,
  ): Promise<"go" | "stop" | "interrupted"> {
    await reading
    if (stopping) return "interrupted"
    const report = await canaryReport(db, current, job, size)
    const go = await Promise.race([onCanary?.(report) ?? Promise.resolve(false), interrupted])
    if (stopping) return "interrupted"
    await db.canaries.reported(current.id)
    if (go || report.rest === 0) return "go"
    await db.runs.setState(current.id, "paused", canaries.stoppedReason(report.items, report.rest, o.resume))
    return "stop"
  }

  return {
    run,
    job,
    ticker,
    store: isUrl(at) ? withoutPassword(at) : undefined,
    stop(graceMs) {
      stopping = true
      interrupt()
      ingestAbort.abort()
      follower?.close()
      driver.stop()
      setTimeout(() => driver.abort(), graceMs).unref()
    },
    async execute(onTick, onCanary) {
      // the run's counts, not this process's own: another worker may have started it, or be working beside it
      let readAt = 0
      const read = async () => {
        readAt = Date.now()
        Object.assign(ticker, tally(await db.reads.counts(current.id)))
      }
      // awaited by the driver after each commit when it reads, so the counts shown are read before it goes on
      const tick = () => {
        if (Date.now() - readAt < TICK_MS) return onTick?.(ticker)
        return read().then(() => onTick?.(ticker))
      }
      progressed = () => void tick()
      const reading = ingester().catch((err: unknown) => {
        driver.stop()
        throw err
      })
      // awaited after the loop; until then a rejection must not count as unhandled (it would end the process)
      reading.catch(() => {})
      driver.onCommit = tick
      // a shared store tells this worker of others' changes: new items, a retry due, pause, resume, cancel
      const listening = await db.listen?.((n) => {
        if (n.run === current.id) driver.notice(n.kind)
      })
      let unlistened: Promise<void> | undefined
      const unlisten = () => (unlistened ??= listening?.().catch(() => {}))
      let ending: string
      try {
        ending = await driver.loop()
        if (canary !== undefined && driver === canaryRunner && ending === "done") {
          const next = await afterCanary(canary, reading, onCanary)
          if (next === "stop") {
            await unlisten()
            await worker.leave()
            await db.close()
            return 0
          }
          if (next === "interrupted") ending = "interrupted"
          else {
            driver = await drive()
            driver.onCommit = tick
            ending = stopping ? "interrupted" : await driver.loop()
          }
        }
      } finally {
        await unlisten()
      }
      // a watch's ingester never ends by itself: a run cancelled, paused or capped ends it here. A run done has
      // its inputs read to their end (both drivers end "done" only once the run is ingested): the ingester of a
      // worker that waits for another's ingest lease stops waiting (it slept up to 2 s more before it saw that)
      if (follower || ending === "done") ingestAbort.abort()
      await reading
      await read()
      // what the closing line says of the cache: the run's hits and savings, every worker's
      ticker.cache = (await db.reads.summary(current.id)).cache
      onTick?.(ticker)
      try {
        return await finish(
          db,
          current,
          ending,
          driver.pausedBy?.message ?? driver.capped,
          driver.capped !== undefined,
          driver.pausedBy?.hint,
        )
      } finally {
        await worker.leave()
        await db.close()
      }
    },
  }
}

/** Closes the store before an error goes on up: for a refusal before the run is touched. */
function closing(db: Ledger): (err: unknown) => Promise<never> {
  return async (err) => {
    await db.close()
    throw err
  }
}
