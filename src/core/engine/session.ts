/**
 * What `spool run` of a one-step job (run.ts) and of a pipeline (pipeline.ts) share: the options they start from,
 * the session they give the CLI, the checks of a resumed run's inputs, and how a run ends.
 */
import { basename } from "node:path"
import { JobError, type ExitCode } from "../../plugins/api/errors.ts"
import { RunCancelledError, RunPausedError } from "../base/errors.ts"
import * as jobs from "../job/job.ts"
import * as log from "../base/log.ts"
import type { Ledger } from "../ledger/ledger.ts"
import type { NewRun, Run } from "../ledger/types.ts"
import type { State } from "../ledger/states.ts"
import type { Planned, Spec } from "./ingest.ts"
import type { Ticker } from "../report/report.ts"
import type { CanaryReport } from "../report/canary.ts"
import { ownerId } from "./owner.ts"

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
  /** A pipeline's `--rerun-from STEP`: that step and every step after it that reaches it run again for every row. */
  rerunFrom?: string | undefined
}

/** How many items a run's counts hold, of every state. */
export const totalOf = (counts: Record<State, number>): number =>
  Object.values(counts).reduce((a, b) => a + b, 0)

/** A run's counts as progress shows them: every item, those ended (a pipeline step's skipped too), failed, held. */
export function tally(counts: Record<State, number>): Pick<Ticker, "total" | "done" | "failed" | "review"> {
  return {
    total: totalOf(counts),
    done: counts.completed + counts.failed + counts.needs_review + counts.rejected + counts.skipped,
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
  /** What to say once it has ended, instead of the one-step run's closing line (a pipeline's counts per step). */
  summary?: () => string[]
  /** First signal: stop claiming, give in-flight calls `graceMs`, then cut them short. */
  stop(graceMs: number): void
}

/**
 * The run a start goes on with: `latest` (the latest run of the job's name), or a new one when there is none or
 * `--new-run` asks for one, made after `check` (the inputs' preflight) passes. A run another worker made meanwhile is
 * given instead of a second one (`NewRun.seen`); `created` says whether this process made it.
 */
export async function startRun(
  db: Ledger,
  o: StartOptions,
  latest: Run | null,
  made: Pick<NewRun, "name" | "job" | "fingerprint" | "inputs">,
  check: () => Promise<void>,
): Promise<{ run: Run; created: boolean }> {
  if (latest && !o.newRun) return { run: latest, created: false }
  await check()
  const out = await db.runs.create({
    ...made,
    resume: o.resume,
    seen: o.newRun ? (latest?.id ?? null) : null,
    worker: ownerId(),
  })
  const what = made.job.pipeline ? "pipeline run created" : "run created"
  if (out.created) log.info(what, { run: out.run.name, id: out.run.id })
  return out
}

/**
 * Item ids are namespaced by input position, so a run keeps its inputs, in their order, for its whole life. The
 * files a glob matches are how a run grows: a new match is appended as a new input (the next index; the others'
 * never move), and a match that is gone is skipped with a warning, its items kept. Files the job names are held
 * to the old rule: the same, in the same order. `gone` remembers the warnings given, so each is given once.
 */
export async function sameInputs(
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

export async function finish(
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
