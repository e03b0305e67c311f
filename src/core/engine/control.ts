/**
 * `spool pause | resume | cancel | retry | export | prune`: acting on a run from outside the process that runs it. A
 * running process reads its run's state from the store, so a change made here reaches it within a second.
 */
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs"
import { basename, join } from "node:path"
import { type ExitCode } from "../../plugins/api/errors.ts"
import { UsageError } from "../base/errors.ts"
import * as log from "../base/log.ts"
import * as registry from "../../plugins/registry.ts"
import * as report from "../report/report.ts"
import { mustFind, type Ledger } from "../ledger/ledger.ts"
import type { Run } from "../ledger/types.ts"
import { Batcher } from "./batcher.ts"
import { sleep } from "./follow.ts"
import { afterCancel, client } from "./run.ts"
import { dead, ownerId } from "./owner.ts"
import type { BatchClient, ProviderClient } from "../../plugins/api/define.ts"

const FINISHED = new Set(["completed", "completed_with_failures", "cancelled"])

/**
 * The run `ref` names, refused (UsageError) when it has finished: there is nothing left to `verb`. A cancelled run
 * can still be gone on with, by `spool run`: the hint says so.
 */
export async function live(db: Ledger, ref: string | undefined, verb: string): Promise<Run> {
  const run = await mustFind(db, ref)
  if (FINISHED.has(run.state))
    throw new UsageError(
      `run "${run.name}" is ${run.state}: there is nothing to ${verb}`,
      run.state === "cancelled" ? await afterCancel(db, run) : undefined,
    )
  return run
}

/** Stops new work: no new batch is submitted and no new call made; live batches are still polled and applied. */
export async function pause(db: Ledger, ref: string | undefined): Promise<string> {
  const run = await live(db, ref, "pause")
  if (run.state === "paused") return `run "${run.name}" is already paused\n`
  if (run.state === "cancelling") throw new UsageError(`run "${run.name}" is being cancelled`)
  await db.runs.setState(run.id, "paused", "paused by `spool pause`")
  return `run "${run.name}" paused: nothing new is sent; batches at the provider are still followed. \`spool resume ${run.name}\` goes on.\n`
}

export async function resume(db: Ledger, ref: string | undefined): Promise<string> {
  const run = await live(db, ref, "resume")
  if (run.state !== "paused") return `run "${run.name}" is ${run.state}, not paused\n`
  await db.runs.setState(run.id, "running")
  return `run "${run.name}" resumed: a process running it goes on now; if none is, start one with:\n  ${run.resume}\n`
}

/** A signal nobody aborts: the default of a caller that gives none. */
const NEVER = new AbortController().signal

/**
 * Cancels a run: a batch run's live batches are cancelled at the provider and what they return is applied. When a
 * process is driving the run, it does the work and this waits for it; otherwise it is done here. `signal` is the
 * caller's stop (the CLI's Ctrl+C, the server's shutdown): it ends the wait, or stops the batches' work here, and
 * the run stays cancelling for the next `spool cancel` or `spool run`. Signals are the caller's to listen to.
 */
export async function cancel(
  db: Ledger,
  ref: string | undefined,
  home: string,
  say: (line: string) => void,
  signal: AbortSignal = NEVER,
): Promise<ExitCode> {
  return carryOut(db, await mark(db, ref), home, say, signal)
}

/** The first half of `cancel`: the run marked cancelling (refused when it has finished). */
export async function mark(db: Ledger, ref: string | undefined): Promise<Run> {
  const run = await live(db, ref, "cancel")
  await db.runs.setState(run.id, "cancelling", "cancelling (`spool cancel`)")
  return run
}

/** The second half of `cancel`, for a run `mark` gave: the work, or the wait for the process that does it. */
export async function carryOut(
  db: Ledger,
  run: Run,
  home: string,
  say: (line: string) => void,
  signal: AbortSignal = NEVER,
): Promise<ExitCode> {
  const { job } = run
  const holder = await db.batches.holder(run.id)
  const driven = holder !== null && !dead(holder)
  // a pipeline run has no batches of its own (its steps' runs have): the process running it stops its steps
  const batchy = job.provider.mode === "batch" && !job.pipeline
  if (!batchy || driven) {
    if (!batchy && !(await runningElsewhere(db, run))) {
      await db.runs.setState(run.id, "cancelled", "cancelled by `spool cancel`")
      say(`run "${run.name}" cancelled: ${await afterCancel(db, run)}\n`)
      return 0
    }
    say(`run "${run.name}": the process running it is stopping its work…\n`)
    let last = Date.now()
    while ((await db.runs.get(run.id))?.state === "cancelling") {
      await sleep(250, signal)
      if (signal.aborted) {
        say(`stopped waiting: run "${run.name}" is still being cancelled by the process running it\n`)
        return 130
      }
      if (Date.now() - last > 10_000) {
        last = Date.now()
        say(`  still waiting for live batches to end at the provider…\n`)
      }
    }
    const state = (await db.runs.get(run.id))?.state
    say(`run "${run.name}" ${state}${state === "cancelled" ? `: ${await afterCancel(db, run)}` : ""}\n`)
    return 0
  }
  // nobody drives it: cancel its batches here
  log.init(home)
  await registry.load(job.plugins ?? [])
  const provider = client(job) as ProviderClient & { batch: BatchClient }
  const batcher = new Batcher({ ledger: db, run, job, client: provider, owner: ownerId(), home })
  const stop = () => batcher.stop()
  if (signal.aborted) return 130
  signal.addEventListener("abort", stop, { once: true })
  const count = (await db.batches.live(run.id)).length
  say(
    `run "${run.name}": cancelling ${count} live batch(es) at the provider and keeping what they finished…\n`,
  )
  const ending = await batcher.loop().finally(() => signal.removeEventListener("abort", stop))
  if (ending === "interrupted") return 130
  say(
    `run "${run.name}" cancelled: ${batcher.progress.completed} more item(s) completed from its batches; ${await afterCancel(db, run)}\n`,
  )
  return 0
}

/**
 * Moves a run's failed (or needs_review) items back to pending, their attempts kept. A process running the run
 * picks them up; a finished run (a cancelled one too) is reopened, to be finished by the next `spool run`.
 */
export async function retry(
  db: Ledger,
  ref: string | undefined,
  from: "failed" | "needs_review" | "rejected",
): Promise<string> {
  const run = await mustFind(db, ref)
  // a step's later steps have already decided on its failed rows (skipped them): retried alone, they would stay so
  if (run.parent !== null || run.job.pipeline)
    throw new UsageError(
      `run "${run.name}" is ${run.parent !== null ? "a pipeline's step" : "a pipeline"}: its items are not retried one by one`,
      `Run a step again for every row, with the steps after it: \`${run.resume} --rerun-from ${run.step ?? "STEP"}\` (answers already paid for come from the cache).`,
    )
  if (run.state === "cancelling")
    throw new UsageError(
      `run "${run.name}" is being cancelled: its items cannot be retried now`,
      "Wait for `spool cancel` to end, then retry: `spool run` goes on with a cancelled run.",
    )
  const n = await db.claims.retry(run.id, from)
  if (n === 0) return `run "${run.name}" has no ${from} items\n`
  const running = (await runningElsewhere(db, run)) || (await db.batches.holder(run.id)) !== null
  return running
    ? `${n} ${from} item(s) of run "${run.name}" are pending again; the process running it picks them up\n`
    : `${n} ${from} item(s) of run "${run.name}" are pending again. Process them with:\n  ${run.resume}\n`
}

/** Whether a live process holds items of this (realtime) run. */
async function runningElsewhere(db: Ledger, run: Run): Promise<boolean> {
  return (await db.claims.holders(run.id)).some((owner) => !dead(owner))
}

const manifestVersion = "spool-export/1"

/**
 * Writes a self-describing bundle of a run: manifest.json (the run, its job, its batches and every file with its
 * size, lines and sha256), the batches' request files, their raw output and error files, and results.jsonl.
 */
export async function exportRun(
  db: Ledger,
  ref: string | undefined,
  dir: string,
  version: string,
): Promise<string> {
  const run = await mustFind(db, ref)
  if (existsSync(dir) && readdirSync(dir).length > 0)
    throw new UsageError(`${dir} is not empty`, "Export into a new or empty directory.")
  for (const sub of ["", "requests", "outputs"]) mkdirSync(join(dir, sub), { recursive: true, mode: 0o700 })
  const files: { path: string; bytes: number; lines: number; sha256: string }[] = []
  const missing: string[] = []
  const place = async (from: string | null, to: string): Promise<string | null> => {
    if (!from) return null
    if (!existsSync(from)) {
      missing.push(basename(from))
      return null
    }
    copyFileSync(from, join(dir, to))
    files.push(await describe(dir, to))
    return to
  }
  const batches = []
  for (const b of await db.batches.list(run.id)) {
    batches.push({
      ...report.batchView(b),
      files: {
        requests: await place(b.requests, `requests/${basename(b.requests)}`),
        output: await place(b.output, `outputs/${b.tag}.output.jsonl`),
        errors: await place(b.errors, `outputs/${b.tag}.errors.jsonl`),
      },
    })
  }
  // streamed: a run of a million items is not held in memory
  const out = Bun.file(join(dir, "results.jsonl")).writer({ highWaterMark: 1 << 20 })
  for await (const line of report.results(db, run)) out.write(line)
  await out.end()
  chmodSync(join(dir, "results.jsonl"), 0o600)
  files.push(await describe(dir, "results.jsonl"))
  const manifest = {
    format: manifestVersion,
    spool_version: version,
    exported_at: new Date().toISOString(),
    run: {
      id: run.id,
      name: run.name,
      state: run.state,
      created_at: new Date(run.created_at).toISOString(),
      finished_at: run.finished_at ? new Date(run.finished_at).toISOString() : null,
    },
    // the job as run: keys never live in it (only the name of the variable that holds one)
    job: run.job,
    counts: await db.reads.counts(run.id),
    batches,
    files,
    // files a prune had deleted before this export
    missing,
  }
  writeFileSync(join(dir, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`, { mode: 0o600 })
  await db.runs.markExported(run.id)
  return `exported run "${run.name}" to ${dir}: ${batches.length} batch(es), ${files.length} file(s)${
    missing.length ? ` (${missing.length} pruned before, not included)` : ""
  }\n`
}

async function describe(
  dir: string,
  rel: string,
): Promise<{ path: string; bytes: number; lines: number; sha256: string }> {
  const hasher = new Bun.CryptoHasher("sha256")
  let lines = 0
  for await (const chunk of Bun.file(join(dir, rel)).stream()) {
    hasher.update(chunk)
    for (const byte of chunk) if (byte === 10) lines++
  }
  return { path: rel, bytes: statSync(join(dir, rel)).size, lines, sha256: hasher.digest("hex") }
}

/**
 * Deletes a finished run's batch files: its request files always, its raw outputs only once it has been exported
 * (or with `force`). Returns what it did.
 */
export async function prune(db: Ledger, ref: string | undefined, force: boolean): Promise<string> {
  const run = await mustFind(db, ref)
  if (!FINISHED.has(run.state))
    throw new UsageError(
      `run "${run.name}" is ${run.state}: its request files are still needed (a retry replays its exact request)`,
      "Prune a run once it has finished, or cancel it first.",
    )
  let removed = 0
  let bytes = 0
  let kept = 0
  const drop = (file: string | null) => {
    if (!file || !existsSync(file)) return
    bytes += statSync(file).size
    rmSync(file)
    removed++
  }
  const raw = force || run.exported_at !== null
  for (const b of await db.batches.list(run.id)) {
    drop(b.requests)
    for (const file of [b.output, b.errors]) {
      if (raw) drop(file)
      else if (file && existsSync(file)) kept++
    }
  }
  const mb = (bytes / 1e6).toFixed(1)
  const note = kept
    ? `; kept ${kept} raw output file(s): they are the only copy of what the provider returned — \`spool export ${run.name} --dir DIR\` first, or --force`
    : ""
  return `pruned run "${run.name}": ${removed} file(s), ${mb} MB${note}\n`
}
