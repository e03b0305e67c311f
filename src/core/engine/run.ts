/** `spool run`: from a job to a finished (or safely stopped) run. The CLI only parses, calls this, and prints. */
import { basename } from "node:path"
import { JobError, SourceError, type ExitCode } from "../../plugins/api/errors.ts"
import { RunCancelledError, RunPausedError } from "../base/errors.ts"
import * as jobs from "../job/job.ts"
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
import { dead, enlist, leaseMs, ownerId } from "./owner.ts"
import { Budget, capOf } from "./budget.ts"
import { warnUnpriced } from "../job/pricing.ts"
import type { Ticker } from "../report/report.ts"
import type { BatchClient, ProviderClient } from "../../plugins/api/define.ts"
import { Batcher } from "./batcher.ts"
import * as canaries from "./canary.ts"
import { canaryReport, type CanaryReport } from "../report/canary.ts"
import { lookupOf } from "./cache.ts"
import { client, identity } from "./provider.ts"

export { checkProvider, client, identity } from "./provider.ts"

export interface StartOptions {
  file: string | undefined
  flags: jobs.Flags
  /** Where logs and batch files go, and the SQLite ledger when there is no store URL. */
  home: string
  /**
   * The ledger's PostgreSQL URL when the command line chose one (--store, else the job's [store] url, else
   * SPOOL_STORE); without it, the job's [store] url, else the SQLite store under `home`.
   */
  store?: string | undefined
  newRun: boolean
  reingest: boolean
  /** The command that resumes this run, printed when it stops early. */
  resume: string
  /** SQLite's synchronous setting; FULL unless a benchmark compares. */
  synchronous?: "FULL" | "NORMAL"
  /**
   * `spool watch`: keep the run open. Inputs are read on as lines are appended and globs matched again as files
   * arrive (file-system events, or every `SPOOL_WATCH_POLL_MS`, default 1000); an unterminated last line waits
   * for its newline. The run ends only when stopped (exit 130), cancelled or paused.
   */
  follow?: boolean
  /**
   * `--canary N`: send the run's first N items as direct calls, report on them and stop (README, "Canary"); refused
   * on a run past its first items. Without it, the job's `limits.canary` starts one on a run that has sent nothing.
   */
  canary?: number | undefined
}

/** How often, at most, progress reads the run's counts again (a few rows of the tallies). */
const TICK_MS = 200

function tally(counts: Record<State, number>): Pick<Ticker, "total" | "done" | "failed" | "review"> {
  return {
    total: Object.values(counts).reduce((a, b) => a + b, 0),
    done: counts.completed + counts.failed + counts.needs_review + counts.rejected,
    failed: counts.failed + counts.rejected,
    review: counts.needs_review,
  }
}

/** Everything checked and opened; nothing has been called yet. */
export interface Session {
  run: Run
  job: jobs.Job
  ticker: Ticker
  /** Where the run's ledger is: a PostgreSQL URL (its password left out, for a command to print), or undefined. */
  store: string | undefined
  /**
   * Runs to the end, or until stopped; resolves with the exit code. After a canary, `onCanary` shows its report and
   * says whether to go on with the rest now (without it: no); when the canary was the whole run, it is not asked.
   */
  execute(
    onTick?: (ticker: Ticker) => void,
    onCanary?: (report: CanaryReport) => Promise<boolean>,
  ): Promise<ExitCode>
  /** First signal: stop claiming, give in-flight calls `graceMs`, then cut them short. */
  stop(graceMs: number): void
}

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

/**
 * Item ids are namespaced by input position, so a run keeps its inputs, in their order, for its whole life. The
 * files a glob matches are how a run grows: a new match is appended as a new input (the next index; the others'
 * never move), and a match that is gone is skipped with a warning, its items kept. Files the job names are held
 * to the old rule: the same, in the same order. `gone` remembers the warnings given, so each is given once.
 */
async function sameInputs(
  db: Ledger,
  run: Run,
  given: Spec[],
  inputs: Planned[],
  gone: Set<string>,
): Promise<void> {
  const named = new Set(given.filter((s) => !s.glob).map((s) => s.path))
  const globs = given.filter((s) => s.glob).map((s) => new Bun.Glob(s.path))
  const matched = (path: string) => !named.has(path) && globs.some((g) => g.match(path))
  const stored = await db.runs.inputs(run.id)
  const before = stored.map((i) => i.path).filter((p) => !matched(p))
  const now = inputs.filter((i) => i.glob === undefined).map((i) => i.path)
  if (JSON.stringify(before) !== JSON.stringify(now)) await refuse(db, run, before, now)
  const present = new Set(inputs.map((i) => i.path))
  for (const input of stored) {
    if (present.has(input.path) || !matched(input.path)) {
      gone.delete(input.path)
      continue
    }
    if (gone.has(input.path)) continue
    gone.add(input.path)
    log.warn("an input matched by the glob is gone; its items are kept", { run: run.name, input: input.path })
  }
  const known = new Set(stored.map((i) => i.path))
  for (const p of inputs) {
    if (p.glob === undefined || known.has(p.path)) continue
    const added = await db.runs.addInput(run.id, p.path, p.source.name)
    known.add(p.path)
    log.info("new input", { run: run.name, input: p.path, idx: added.idx })
  }
}

async function refuse(db: Ledger, run: Run, before: string[], now: string[]): Promise<never> {
  await db.close()
  const names = (paths: string[]) => paths.map((p) => basename(p)).join(", ")
  const same = before.length === now.length && before.every((p) => now.includes(p))
  throw new JobError(
    `run "${run.name}" reads ${names(before)}${same ? " in that order" : ""}; this job gives ${names(now)}`,
    [
      ...before.filter((p) => !now.includes(p)).map((p) => `${p} is no longer listed`),
      ...now.filter((p) => !before.includes(p)).map((p) => `${p} was not an input of the run`),
      ...(same ? ["the same files in another order"] : []),
    ],
    `A run keeps its inputs and their order (item ids depend on them). Put them back as they were, or start a fresh run with --new-run.`,
  )
}

/** Validates the job, opens the store, finds or creates the run, and recovers what a crash left in flight. */
export async function prepare(o: StartOptions): Promise<Session> {
  const { job, store } = jobs.load(o.file, o.flags)
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
  let run = o.newRun ? null : latest
  let created = false
  if (!run) {
    await preflight(inputs, prompt, job.request.kind === "embedding" ? "request.input" : "request.prompt")
    const made = await db.runs.create({
      name: job.name,
      job,
      fingerprint: jobs.fingerprint(job),
      resume: o.resume,
      inputs: inputs.map((i) => ({ path: i.path, format: i.source.name })),
      seen: o.newRun ? (latest?.id ?? null) : null,
      worker: ownerId(),
    })
    run = made.run
    created = made.created
    if (created) log.info("run created", { run: run.name, id: run.id })
  }
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
  const lookup = lookupOf(db, run, owner, job, identity(job))
  if (job.request.kind === "embedding" && job.cache.enabled)
    log.info("the response cache is off for embedding jobs")
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

  async function ingester(): Promise<void> {
    const signal = ingestAbort.signal
    // a lease is good for 60 s (leaseMs): renewing it every quarter of that spares an fsync on every pass of a watch
    const ms = leaseMs()
    let leasedAt = 0
    const lease = async () => {
      if (Date.now() - leasedAt < ms / 4) return true
      const held = await db.ingest.lease(current.id, owner, ms, dead)
      if (held) leasedAt = Date.now()
      return held
    }
    const seen = follower && new Map<string, string>()
    let files = inputs
    try {
      while (!unread && !signal.aborted && (follower || (await db.runs.get(current.id))?.ingested === 0)) {
        if (!(await lease())) {
          await sleep(2000, signal)
          continue
        }
        if (follower) files = await pass(follower)
        const added = await ingest(db, current, files, lease, {
          signal,
          follow: seen,
          ask: lookup && ((rows) => lookup.ask(rows)),
          onBatch: (n) => {
            ticker.total += n
            // rows the cache answered were stored completed: progress the driver has no commit of its own to show
            if (lookup) progressed()
            driver.poke()
          },
        })
        if (added.problems > 0) {
          log.warn("input lines skipped", { run: current.name, count: added.problems, see: "spool status" })
        }
        // each stored batch has poked the driver already; this tells it the inputs are read to their end
        if (!follower) driver.poke()
        else await follower.wait(signal)
      }
    } finally {
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

/**
 * What a cancelled run keeps and how to go on: the one text of `spool cancel` and of the process it stopped. A
 * cancelled run is not over: `spool run` goes on with its items left (README, "Cancel").
 */
export async function afterCancel(db: Ledger, run: Run): Promise<string> {
  const { total, done } = tally(await db.reads.counts(run.id))
  const left = total - done
  const kept = `${done} finished item(s) kept (\`spool results\` gives them)`
  if (left === 0) return `${kept}; none left.`
  return `${kept}, ${left} left. \`${run.resume}\` goes on with the ${left} left and sends nothing finished again; add --new-run to start over instead.`
}

async function finish(
  db: Ledger,
  run: Run,
  ending: string,
  reason: string | undefined,
  capped = false,
  hint?: string,
): Promise<ExitCode> {
  if (ending === "interrupted") return 130
  if (ending === "cancelled") {
    log.warn("run cancelled", { run: run.name })
    throw new RunCancelledError(`run "${run.name}" was cancelled`, await afterCancel(db, run))
  }
  if (ending === "paused") {
    await db.runs.setState(run.id, "paused", reason ?? null)
    log.error("run paused", { run: run.name, reason })
    throw new RunPausedError(
      `run "${run.name}" paused: ${reason}`,
      capped
        ? `Nothing more was started. To go on, raise the cap: ${withFlag(run.resume, "--max-cost-usd", "N")}`
        : hint
          ? `${hint} Resume: ${run.resume}`
          : `Going on would fail every item the same way. Fix the cause (API key, quota, billing), then resume: ${run.resume}`,
    )
  }
  const counts = await db.reads.counts(run.id)
  const failures = counts.failed + counts.needs_review + counts.rejected
  await db.runs.setState(run.id, failures > 0 ? "completed_with_failures" : "completed")
  log.debug("run finished", { run: run.name, completed: counts.completed, failed: counts.failed })
  return failures > 0 ? 3 : 0
}

/**
 * A command (as cli.ts `quote` writes one) with `flag` set to `value`: an existing `--flag V` or `--flag=V` has its
 * value replaced where it stands, else the flag is added at the end. The hint for a capped run gives one
 * `--max-cost-usd`, not the old one and a second.
 */
export function withFlag(command: string, flag: string, value: string): string {
  // a word: bare characters, a backslash-escaped one, or a single-quoted stretch ('it'\''s' is one word)
  const words = command.match(/(?:[^\s'\\]+|\\.|'[^']*')+/g) ?? []
  let found = false
  const out = words.map((word, i) => {
    if (word.startsWith(`${flag}=`)) {
      found = true
      return `${flag}=${value}`
    }
    if (i > 0 && words[i - 1] === flag) {
      found = true
      return value
    }
    return word
  })
  return found ? out.join(" ") : [...out, flag, value].join(" ")
}

/** Closes the store before an error goes on up: for a refusal before the run is touched. */
function closing(db: Ledger): (err: unknown) => Promise<never> {
  return async (err) => {
    await db.close()
    throw err
  }
}
