/**
 * `spool run` of a job with `[[step]]` tables (docs/PIPELINES.md). The pipeline run holds the rows: its inputs are
 * read into it as any run's are, and its items are never called. Each step is a run of its own (`NAME.STEP`, its
 * `parent` the pipeline run), driven by a Runner or a Batcher as a one-step run is. A promoter makes a row's item of
 * a step as soon as the row's needed steps have ended (`promote.ts`), so there is no barrier across the dataset: a
 * batch step and a realtime step after it work at once, each on its own ledger rows.
 */
import { JobError, type ExitCode } from "../../plugins/api/errors.ts"
import { UsageError } from "../base/errors.ts"
import * as jobs from "../job/job.ts"
import type { Step } from "../job/steps.ts"
import * as log from "../base/log.ts"
import * as registry from "../../plugins/registry.ts"
import type { Ledger } from "../ledger/ledger.ts"
import { isUrl, open, shown, withoutPassword } from "../ledger/open.ts"
import type { Run } from "../ledger/types.ts"
import { STATES, type State } from "../ledger/states.ts"
import * as template from "../job/template.ts"
import { ingest, plan, preflight, specs, verify } from "./ingest.ts"
import { sleep } from "./follow.ts"
import { Runner } from "./runner.ts"
import { Batcher } from "./batcher.ts"
import { dead, enlist, ingestLease, ownerId, type Enlisted } from "./owner.ts"
import { Budget, capOf } from "./budget.ts"
import { warnUnpriced } from "../job/pricing.ts"
import type { Ticker } from "../report/report.ts"
import type { BatchClient, ProviderClient } from "../../plugins/api/define.ts"
import { lookupOf } from "./cache.ts"
import { prefixesOf } from "./prefix.ts"
import { client, identity } from "./provider.ts"
import { promote, type Promoted } from "./promote.ts"
import { Waker } from "./wake.ts"
import { finish, sameInputs, startRun, tally, totalOf, type Session, type StartOptions } from "./session.ts"

/** A step of this pipeline as the session drives it: its job (a review's: the job of what it reviews), and its run. */
interface Planned extends Promoted {
  job: jobs.Job
  fingerprint: string
  run: Run
  needRuns: number[]
}

/** Rows decided per `Steps.ready` page. */
const PAGE = 1_000
/** The promoter's longest sleep: it is woken by every commit and every stored batch of rows before that. */
const PROMOTE_MS = 1_000
const TICK_MS = 200
/** The end of the reason a pipeline run is paused with while rows wait for review (not a person's pause). */
const WAITING = "wait for review"
/** How many times as long as a promoter's pass took it rests before the next. */
const REST = 10

/**
 * Each step's fingerprint: what shapes its requests (as a one-step job's), its kind and `when`, and the fingerprints
 * of the steps it needs. A change to a step thus changes it and every step after it that reaches it, never one before.
 */
export function fingerprints(steps: Step<jobs.Job>[], pipeline: jobs.Job): Map<string, string> {
  const out = new Map<string, string>()
  for (const s of steps) {
    const { sources: _sources, ...shaping } = s.job ? jobs.shaping(s.job) : {}
    const text = JSON.stringify({
      kind: s.kind,
      when: s.when?.source ?? null,
      needs: s.needs.map((n) => out.get(n)),
      ...(s.kind === "model" ? { shaping } : { reviews: pipeline.name }),
    })
    out.set(s.name, new Bun.CryptoHasher("sha256").update(text).digest("hex"))
  }
  return out
}

/** The pipeline run's fingerprint: its inputs alone (each step has its own). */
export function pipelineFingerprint(job: jobs.Job): string {
  const { sources } = jobs.shaping(job)
  return new Bun.CryptoHasher("sha256").update(JSON.stringify({ pipeline: true, sources })).digest("hex")
}

/** The steps `from` names and every step that reaches it: what `--rerun-from` runs again. */
export function downstream(steps: Step<unknown>[], from: string): Set<string> {
  const out = new Set([from])
  for (const s of steps) if (s.needs.some((n) => out.has(n))) out.add(s.name)
  return out
}

/** The job a step's run keeps: a model step's own; a review step's, the job of the answer it reviews. */
function jobOf(steps: Step<jobs.Job>[], s: Step<jobs.Job>): jobs.Job {
  if (s.job) return s.job
  const reviewed = steps.find((t) => t.name === s.needs.at(-1))!
  return jobOf(steps, reviewed)
}

export async function preparePipeline(o: StartOptions, loaded: jobs.Loaded): Promise<Session> {
  const steps = loaded.steps!
  const job: jobs.Job = {
    ...loaded.job,
    pipeline: steps.map((s) => ({ name: s.name, kind: s.kind, needs: s.needs, when: s.when?.source })),
  }
  if (o.follow)
    throw new UsageError("`spool watch` does not run pipelines yet", "Run it with `spool run` instead.")
  if (o.canary !== undefined)
    throw new UsageError(
      "--canary does not apply to pipelines yet",
      "Drop --canary, or run one step as a job.",
    )
  const names = steps.map((s) => s.name)
  if (o.rerunFrom !== undefined && !names.includes(o.rerunFrom))
    throw new UsageError(`--rerun-from: no step is named "${o.rerunFrom}"`, `The steps: ${names.join(", ")}.`)
  await registry.load(job.plugins ?? [])
  const clients = new Map<string, ProviderClient>()
  for (const s of steps) {
    if (!s.job) continue
    clients.set(s.name, client(s.job))
    template.parse(s.job.request.prompt)
  }
  const inputs = plan(job, false)
  const at = o.store ?? loaded.store ?? o.home
  const db = await open(at, { synchronous: o.synchronous ?? "FULL" })
  log.init(o.home)
  log.debug("ledger opened", { store: shown(at) })
  const prints = fingerprints(steps, job)
  try {
    const fingerprint = pipelineFingerprint(job)
    const { run: parent, created } = await startRun(
      db,
      o,
      await db.runs.latest(job.name),
      {
        name: job.name,
        job,
        fingerprint,
        inputs: inputs.map((i) => ({ path: i.path, format: i.source.name })),
      },
      () => preflight(inputs, template.parse(job.request.prompt), "request.prompt"),
    )
    if (parent.fingerprint !== fingerprint)
      throw new JobError(
        `run "${job.name}" was started with ${parent.job.pipeline ? "other inputs" : "a job without steps"}; resuming it would mix two kinds of rows`,
        [parent.job.pipeline ? "sources changed" : "[[step]] tables were added"],
        "Put back the old job to resume it, or start a fresh run: add --new-run, or give the job another name.",
      )
    await sameInputs(db, parent, specs(job, false), inputs, new Set())
    if (!created) {
      if (!o.reingest) await verify(db, parent, inputs)
      await db.runs.updateJob(parent.id, job)
    }
    const plans = await stepRuns(db, parent, steps, prints, o, created)
    return session(db, o, at, parent, created, inputs, plans, clients)
  } catch (err) {
    await db.close()
    throw err
  }
}

/**
 * Each step's run: the latest of its name under this pipeline run when its fingerprint is the step's; a new one for
 * a step not run before, and for every step `--rerun-from` names (the old run is kept, as history). A step whose
 * fingerprint changed is refused, with every step it changes named: old and new answers are never mixed.
 */
async function stepRuns(
  db: Ledger,
  parent: Run,
  steps: Step<jobs.Job>[],
  prints: Map<string, string>,
  o: StartOptions,
  created: boolean,
): Promise<Planned[]> {
  // the latest run of each step's name first, then this pipeline run's: a step run another worker makes in between
  // is newer than what `create` is told it saw, and `create` gives it instead of a second one. (Read the other way
  // round, a worker could make a second; and the latest of the name may be an older pipeline run's, after --new-run.)
  const seen = new Map<string, number | null>()
  for (const s of steps) seen.set(s.name, (await db.runs.latest(`${parent.name}.${s.name}`))?.id ?? null)
  const existing = new Map((await db.runs.steps(parent.id)).map((r) => [r.step!, r]))
  const again = o.rerunFrom === undefined ? new Set<string>() : downstream(steps, o.rerunFrom)
  const changed = steps.filter(
    (s) =>
      !again.has(s.name) && existing.has(s.name) && existing.get(s.name)!.fingerprint !== prints.get(s.name),
  )
  if (changed.length) {
    const first = changed[0]!
    const before = existing.get(first.name)!
    const keys = first.job ? jobs.changedKeys(before.job, first.job) : []
    throw new JobError(
      `step "${first.name}" of run "${parent.name}" changed since its answers were made; going on would mix old and new answers`,
      [
        ...(keys.length
          ? keys.map((k) => `step.${first.name}: ${k} changed`)
          : [`step.${first.name} changed`]),
        ...changed.slice(1).map((s) => `step.${s.name} reaches it, so it changes too`),
      ],
      `Run it again and what follows it: add --rerun-from ${first.name} (earlier steps are kept; the previous answers stay in history, and unchanged requests come from the cache). Or start afresh with --new-run.`,
    )
  }
  const inputs = (await db.runs.inputs(parent.id)).map((i) => ({ path: i.path, format: i.format }))
  const plans: Planned[] = []
  for (const s of steps) {
    const job = jobOf(steps, s)
    let run = again.has(s.name) ? undefined : existing.get(s.name)
    if (!run) {
      const made = await db.runs.create({
        name: `${parent.name}.${s.name}`,
        job,
        fingerprint: prints.get(s.name)!,
        resume: o.resume,
        inputs,
        seen: seen.get(s.name)!,
        parent: { run: parent.id, step: s.name },
      })
      run = made.run
      if (made.created && !created) log.info("step run created", { run: run.name, id: run.id })
    } else {
      for (const input of inputs) await db.runs.addInput(run.id, input.path, input.format)
      await db.runs.updateJob(run.id, job)
    }
    const byName = new Map(plans.map((p) => [p.name, p]))
    plans.push({
      name: s.name,
      kind: s.kind,
      when: s.when,
      whenText: s.when?.source,
      needs: s.needs,
      structured: s.needs.map((n) => byName.get(n)!.job.output !== undefined),
      job,
      fingerprint: prints.get(s.name)!,
      run,
      needRuns: s.needs.map((n) => byName.get(n)!.run.id),
    })
  }
  return plans
}

type Driver = Runner | Batcher

async function session(
  db: Ledger,
  o: StartOptions,
  at: string,
  parent: Run,
  created: boolean,
  inputs: ReturnType<typeof plan>,
  plans: Planned[],
  clients: Map<string, ProviderClient>,
): Promise<Session> {
  const owner = ownerId()
  const workers: Enlisted[] = [await enlist(db, parent.id)]
  const runs = [parent, ...plans.map((p) => p.run)]
  for (const run of runs) {
    await db.runs.setResume(run.id, o.resume)
    if (run.state !== "running") await db.runs.setState(run.id, "running")
    if (run !== parent) workers.push(await enlist(db, run.id))
    const back = await db.claims.recover(run.id, dead)
    if (back) log.info("resuming", { run: run.name, requeued: back })
  }
  if (!created) {
    if (o.reingest) await db.ingest.reset(parent.id)
    else await db.ingest.reopen(parent.id)
  }
  // a step's run is read to its end only when the pipeline says so (below): until then its driver waits for rows
  for (const p of plans) await db.ingest.reopen(p.run.id)
  const drivers = new Map<string, Driver>()
  for (const p of plans) {
    if (p.kind !== "model") continue
    warnUnpriced(p.job.provider, p.job.pricing)
    const cap = capOf(p.job)
    const policy = { baseMs: p.job.limits.retry_base_s * 1000, capMs: p.job.limits.retry_cap_s * 1000 }
    const lookup = lookupOf(db, p.run, owner, p.job, identity(p.job))
    const prefixes = prefixesOf(p.job, p.run.name)
    const provider = clients.get(p.name)!
    drivers.set(
      p.name,
      p.job.provider.mode === "batch"
        ? new Batcher({
            ledger: db,
            run: p.run,
            job: p.job,
            client: provider as ProviderClient & { batch: BatchClient },
            owner,
            home: o.home,
            policy,
            cap,
            lookup,
            prefixes,
          })
        : new Runner({
            ledger: db,
            run: p.run,
            job: p.job,
            client: provider,
            owner,
            policy,
            budget: cap && new Budget(cap, p.job.request, await db.reads.summary(p.run.id)),
            listening: db.listen !== undefined,
            lookup,
            prefixes,
          }),
    )
  }
  const waker = new Waker(true)
  const ingestAbort = new AbortController()
  let stopping = false
  const ticker: Ticker = { total: 0, done: 0, failed: 0, review: 0, startedAt: Date.now(), doneAtStart: 0 }
  // every step's counts together: the pipeline's progress
  const read = async () => {
    const sum = Object.fromEntries(STATES.map((s) => [s, 0])) as Record<State, number>
    for (const p of plans) {
      const c = await db.reads.counts(p.run.id)
      for (const s of STATES) sum[s] += c[s]
    }
    Object.assign(ticker, tally(sum))
  }
  await read()
  ticker.doneAtStart = ticker.done
  let lines: string[] = []

  async function ingester(): Promise<void> {
    const signal = ingestAbort.signal
    const lease = ingestLease(db, parent.id, owner)
    while (!signal.aborted && (await db.runs.get(parent.id))?.ingested === 0) {
      if (!(await lease())) {
        await sleep(2000, signal)
        continue
      }
      const added = await ingest(db, parent, inputs, lease, { signal, onBatch: () => waker.notify() })
      if (added.problems > 0)
        log.warn("input lines skipped", { run: parent.name, count: added.problems, see: "spool status" })
      waker.notify()
    }
  }

  /**
   * One pass over the steps, in order: every row that can go on does. How many rows could, whoever stored their
   * items: another worker may store them first, and this one must not take the pass for a quiet one.
   */
  async function promoteAll(): Promise<number> {
    let seen = 0
    for (const p of plans) {
      let after = 0
      for (;;) {
        const rows = await db.steps.ready(parent.id, p.run.id, p.needRuns, { after, limit: PAGE })
        if (rows.length === 0) break
        const n = await db.steps.add(
          p.run.id,
          rows.map((r) => promote(p, r)),
        )
        seen += rows.length
        if (n) drivers.get(p.name)?.poke()
        after = rows.at(-1)!.id
        if (rows.length < PAGE) break
      }
    }
    return seen
  }

  /** The steps whose every row has its item: read to their end, so that a batch step sends a partial last batch. */
  const full = new Set<string>()
  async function fill(): Promise<void> {
    if ((await db.runs.get(parent.id))?.ingested !== 1) return
    const rows = totalOf(await db.reads.counts(parent.id))
    for (const p of plans) {
      if (full.has(p.name) || totalOf(await db.reads.counts(p.run.id)) < rows) continue
      full.add(p.name)
      await db.ingest.done(p.run.id)
      drivers.get(p.name)?.poke()
    }
  }

  /** Whether nothing can move any more without a person: every row read, nothing in flight in any step. */
  async function quiet(): Promise<boolean> {
    if ((await db.runs.get(parent.id))?.ingested !== 1) return false
    for (const p of plans) if (await db.reads.hasOpen(p.run.id)) return false
    return true
  }

  return {
    run: parent,
    job: parent.job,
    ticker,
    store: isUrl(at) ? withoutPassword(at) : undefined,
    summary: () => lines,
    stop(graceMs) {
      stopping = true
      ingestAbort.abort()
      waker.notify()
      for (const d of drivers.values()) d.stop()
      setTimeout(() => {
        for (const d of drivers.values()) d.abort()
      }, graceMs).unref()
    },
    async execute(onTick) {
      let readAt = 0
      const tick = async () => {
        waker.notify()
        if (Date.now() - readAt >= TICK_MS) {
          readAt = Date.now()
          await read()
        }
        onTick?.(ticker)
      }
      const endings = new Map<string, Promise<string>>()
      let ended: { name: string; ending: string } | undefined
      let settled = false
      for (const [name, d] of drivers) {
        d.onCommit = tick
        endings.set(
          name,
          d.loop().then((ending) => {
            // a driver that ends by itself stops the pipeline (paused, cancelled); one stopped here has nothing left
            // (one that ends done does so after another worker settled the pipeline: this one settles it too)
            if (!stopping && !settled && !ended && ending !== "done") ended = { name, ending }
            waker.notify()
            return ending
          }),
        )
      }
      const reading = ingester().catch((err: unknown) => {
        stopping = true
        for (const d of drivers.values()) d.stop()
        throw err
      })
      reading.catch(() => {})
      const listening = await db.listen?.((n) => {
        const d = plans.find((p) => p.run.id === n.run)
        if (d) drivers.get(d.name)?.notice(n.kind)
        if (n.run === parent.id || d) waker.notify()
      })
      try {
        while (!stopping && !ended) {
          const now = await db.runs.get(parent.id)
          const state = now?.state
          // paused by a person (`spool pause`), not by another worker's end with rows waiting for review
          const held = state === "paused" && !now?.reason?.endsWith(WAITING)
          if (state === "cancelling")
            await db.runs.setState(parent.id, "cancelled", "cancelled by `spool cancel`")
          if (state === "cancelling" || state === "cancelled" || held) {
            ended = { name: parent.name, ending: held ? "paused" : "cancelled" }
            break
          }
          const began = Date.now()
          const seen = await promoteAll()
          if (seen) await tick()
          await fill()
          // quiet, and still so after a pass that found no row to move: a row another worker was storing is
          // either found by the pass (not yet stored) or open in its step when looked at after it (stored)
          if (seen === 0 && (await quiet()) && (await promoteAll()) === 0 && (await quiet())) {
            settled = true
            break
          }
          // a pass reads every row not yet decided: one that moved few rows for it rests ten times as long as it
          // took (so that on a large run the commits that wake it cost the drivers at most a tenth of the process's
          // time), one that moved a page of rows or more rests that much less
          const rest = (REST * (Date.now() - began)) / Math.max(1, seen / PAGE)
          await sleep(Math.min(rest, PROMOTE_MS * 30), ingestAbort.signal)
          await waker.sleep(PROMOTE_MS)
        }
      } finally {
        for (const d of drivers.values()) d.stop()
        await Promise.all(endings.values())
        await listening?.().catch(() => {})
        ingestAbort.abort()
      }
      try {
        await reading
        await read()
        onTick?.(ticker)
        if (stopping) return 130
        if (ended) {
          const p = plans.find((q) => q.name === ended!.name)
          const d = p && drivers.get(p.name)
          return await finish(
            db,
            p?.run ?? parent,
            ended.ending,
            d?.pausedBy?.message ?? d?.capped,
            d?.capped !== undefined,
            d?.pausedBy?.hint,
          )
        }
        const outcome = await settle(db, parent, plans)
        lines = outcome.lines
        return outcome.code
      } finally {
        for (const w of workers) await w.leave()
        await db.close()
      }
    },
  }
}

/**
 * The end of a pipeline's pass: nothing more moves without a person. Each step's run, and the pipeline run, get
 * their state: completed (with failures, when a row failed a step), or paused while rows wait for review. The exit
 * code is 3 when a step failed for a row, else 0, rows waiting for review included: they go on at the next run.
 */
async function settle(
  db: Ledger,
  parent: Run,
  plans: Planned[],
): Promise<{ code: ExitCode; lines: string[] }> {
  const rows = totalOf(await db.reads.counts(parent.id))
  let failed = 0
  const waiting: { step: string; n: number }[] = []
  const parts: string[] = []
  for (const p of plans) {
    const c = await db.reads.counts(p.run.id)
    const made = totalOf(c)
    failed += c.failed
    if (c.needs_review) waiting.push({ step: p.name, n: c.needs_review })
    const said = (["completed", "skipped", "failed", "needs_review", "rejected"] as const)
      .filter((s) => c[s] > 0)
      .map((s) => `${c[s]} ${s === "needs_review" ? "wait for review" : s}`)
    if (made < rows) said.push(`${rows - made} not reached yet`)
    parts.push(`${p.name}: ${said.join(", ") || "nothing"}`)
    if (made === rows && c.needs_review === 0) {
      await db.ingest.done(p.run.id)
      await db.runs.setState(p.run.id, c.failed + c.rejected > 0 ? "completed_with_failures" : "completed")
    } else {
      const reason = c.needs_review
        ? `${c.needs_review} row(s) ${WAITING}`
        : "rows wait for review at an earlier step"
      await db.runs.setState(p.run.id, "paused", reason)
    }
  }
  const lines = [`run "${parent.name}", ${rows} row(s): ${parts.join("; ")}`]
  const total = waiting.reduce((a, w) => a + w.n, 0)
  if (total) {
    const where = waiting.map((w) => `${w.n} at ${w.step} (spool review ${parent.name} --step ${w.step})`)
    lines.push(
      `${total} row(s) wait for review: ${where.join(", ")}; approve, edit or reject them, then \`${parent.resume}\` takes them on`,
    )
    await db.runs.setState(parent.id, "paused", `${total} row(s) ${WAITING}`)
  } else await db.runs.setState(parent.id, failed > 0 ? "completed_with_failures" : "completed")
  return { code: failed > 0 ? 3 : 0, lines }
}
