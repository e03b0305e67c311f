/**
 * `spool results`: a run's items as JSONL, CSV or Parquet (docs/RESULTS.md), joined to their input rows, filtered by
 * state or by the last export, written to stdout or atomically to a file. A pipeline run's are its rows, each with
 * every step's state and answer; `--step S` writes one step's items as a one-step run's.
 */
import { defineCommand } from "citty"
import { createWriteStream, renameSync, rmSync } from "node:fs"
import { extname, resolve } from "node:path"
import { UsageError } from "../core/base/errors.ts"
import { mustFind, type Ledger } from "../core/ledger/ledger.ts"
import * as states from "../core/ledger/states.ts"
import type { State } from "../core/ledger/states.ts"
import type { Run } from "../core/ledger/types.ts"
import type { ExportOptions } from "../core/report/export.ts"
import { common, existingStore, lazyLedger } from "./common.ts"

const lazyExport = () => import("../core/report/export.ts")
const FORMATS = ["jsonl", "csv", "parquet"] as const
type Format = (typeof FORMATS)[number]

/** The format a file's extension says; jsonl for any other (what `--out` always wrote). */
const BY_EXTENSION: Record<string, Format> = {
  ".csv": "csv",
  ".parquet": "parquet",
  ".pq": "parquet",
  ".jsonl": "jsonl",
  ".ndjson": "jsonl",
}

/**
 * How far back of its read an export's mark is set (`--since-last-export`): an item whose `updated_at` is this much
 * before the read may still be committing (a batch applied, a worker's outcomes in flight), or come from a worker
 * whose clock is behind. Such items are exported again by the next export rather than missed.
 */
export const MARGIN_S = 120

function marginMs(): number {
  const text = process.env.SPOOL_EXPORT_MARGIN_S
  if (text === undefined || text === "") return MARGIN_S * 1000
  const s = Number(text)
  if (!Number.isFinite(s) || s < 0)
    throw new UsageError(`SPOOL_EXPORT_MARGIN_S: "${text}" is not a number of seconds`, "Give 0 or more.")
  return s * 1000
}

/** The states asked for: `--state a,b`, `--failed-only`, or all (undefined). */
export function statesOf(state: string | undefined, failedOnly: boolean): State[] | undefined {
  if (failedOnly && state !== undefined)
    throw new UsageError(
      "--failed-only and --state: give one of them",
      "--failed-only is --state failed,needs_review,rejected.",
    )
  if (failedOnly) return ["failed", "needs_review", "rejected"]
  if (state === undefined) return undefined
  const list = state
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
  if (!list.length)
    throw new UsageError("--state: no state given", `Use one or more of: ${states.STATES.join(", ")}.`)
  for (const s of list)
    if (!states.isState(s))
      throw new UsageError(
        `--state: unknown state "${s}"`,
        `Use one or more of: ${states.STATES.join(", ")}.`,
      )
  return [...new Set(list)] as State[]
}

/** The format: --format, else the extension of --out, else jsonl. */
export function formatOf(format: string | undefined, out: string | undefined): Format {
  if (format !== undefined) {
    if (!(FORMATS as readonly string[]).includes(format))
      throw new UsageError(`--format: unknown format "${format}"`, `Use one of: ${FORMATS.join(", ")}.`)
    return format as Format
  }
  return (out && BY_EXTENSION[extname(out).toLowerCase()]) || "jsonl"
}

export const results = defineCommand({
  meta: {
    name: "results",
    description:
      "A run's items as JSONL, CSV or Parquet: input columns (--join), id, state, attempts, cost, what the prompt cache saved, error, the output (a pipeline: each row with its steps)",
  },
  args: {
    run: { type: "positional", required: false, description: "Run name or id (default: the latest)" },
    out: {
      type: "string",
      description: "Write to this file (atomically) instead of stdout",
      valueHint: "file",
    },
    format: {
      type: "string",
      description: "The format (default: --out's extension, .csv or .parquet; else jsonl)",
      valueHint: "jsonl|csv|parquet",
    },
    state: {
      type: "string",
      description: `Only items in these states, separated by commas (${states.STATES.join(", ")})`,
      valueHint: "a,b",
    },
    "failed-only": { type: "boolean", description: "Only failed items and those left for review" },
    "since-last-export": {
      type: "boolean",
      description:
        "Only items finished since the last export of the run that used this flag (remembered in the store)",
    },
    join: {
      type: "boolean",
      description: "Add each item's input row: its columns (default for csv and parquet; --no-join: none)",
    },
    prefix: {
      type: "string",
      description: 'Name of the output columns: PREFIX + property (default "output."; "" for bare names)',
    },
    step: {
      type: "string",
      description: "A pipeline run's step: its items alone, as a one-step run's (every flag applies)",
      valueHint: "name",
    },
    ...common,
  },
  async run({ args, rawArgs }) {
    const format = formatOf(args.format, args.out)
    if (format === "parquet" && !args.out)
      throw new UsageError(
        "--format parquet needs --out: a Parquet file is binary and written with its footer last",
        "Give --out results.parquet.",
      )
    const chosen = rawArgs.some((a) => a === "--join" || a === "--no-join")
    const join = chosen ? (args.join ?? false) : format !== "jsonl"
    if (args.prefix !== undefined && format === "jsonl")
      throw new UsageError("--prefix names the columns of csv and parquet", "Drop it, or add --format csv.")
    const since = args["since-last-export"] ?? false
    let wanted = statesOf(args.state, args["failed-only"] ?? false)
    if (since) {
      const finished = ["completed", "failed", "needs_review", "rejected"] as State[]
      wanted = (wanted ?? finished).filter((s) => finished.includes(s))
      if (!wanted.length)
        throw new UsageError(
          "--since-last-export writes finished items only: completed, failed, needs_review or rejected",
          "Ask for one of those states, or drop --since-last-export.",
        )
    }
    const ledger = await lazyLedger()
    // a remembered export is written to the store: it is opened for writing then
    const db = await ledger.open(await existingStore(args), { access: since ? "write" : "read" })
    try {
      let run = await mustFind(db, args.run)
      if (args.step !== undefined) run = await stepOf(db, run, args.step)
      else if (run.job.pipeline)
        refuseJoined(run, {
          "--state": args.state !== undefined,
          "--failed-only": args["failed-only"] === true,
          "--since-last-export": since,
          "--prefix": args.prefix !== undefined,
        })
      const margin = since ? marginMs() : 0
      const last = since ? await db.reads.lastExport(run.id) : null
      // the read starts now: anything that changes from here on is above the mark recorded below
      const at = Date.now()
      const o = { format, join, prefix: args.prefix, states: wanted, since: last?.mark ?? null }
      const written = await write(db, run, o, args.out).catch((err: unknown) => {
        throw unwritable(err, args.out)
      })
      if (written === null) return 0
      if (since)
        await db.reads.recordExport(run.id, {
          at: Math.max(at, (last?.at ?? 0) + 1),
          mark: Math.max(last?.mark ?? -Infinity, at - margin),
          rows: written,
          format,
          path: args.out ? resolve(args.out) : null,
        })
      if (args.out) {
        // the one line a file's writer gets: stdout stays for data, and here there is none
        const what = `${written.toLocaleString("en-US")} result${written === 1 ? "" : "s"}`
        const after = last ? ` finished since the export of ${new Date(last.at).toISOString()}` : ""
        process.stderr.write(`wrote ${what}${after} to ${args.out}\n`)
      }
    } finally {
      await db.close()
    }
    return 0
  },
})

/** The run of the pipeline `run`'s step `name`: what `--step` exports. */
async function stepOf(db: Ledger, run: Run, name: string): Promise<Run> {
  const names = run.job.pipeline?.map((s) => s.name)
  if (!names)
    throw new UsageError(
      `--step: run "${run.name}" is ${run.parent === null ? "not a pipeline: it has no steps" : "a step of a pipeline, not a pipeline"}`,
      run.parent === null
        ? "Drop --step: the run's results are its own items."
        : "Drop --step (its results are that step's), or give the pipeline's run.",
    )
  const found = (await db.runs.steps(run.id)).find((r) => r.step === name)
  if (found) return found
  throw new UsageError(
    names.includes(name)
      ? `--step: step "${name}" of run "${run.name}" has no run yet`
      : `--step: pipeline run "${run.name}" has no step "${name}"`,
    `Its steps: ${names.join(", ")}.`,
  )
}

/** Refuses the flags given of a one-step export that a pipeline's rows do not take: each step has its own states. */
function refuseJoined(run: Run, given: Record<string, boolean>): void {
  const flags = Object.keys(given).filter((f) => given[f])
  if (!flags.length) return
  const names = run.job.pipeline!.map((s) => s.name)
  throw new UsageError(
    `${flags.join(", ")}: run "${run.name}" is a pipeline, whose rows have a state, an answer and an export mark in each step`,
    `Write one step's items with --step NAME (its steps: ${names.join(", ")}): every flag applies there. Or drop ${flags.join(", ")}.`,
  )
}

/** A file that cannot be written (no such folder, no right to, a full disk) as a clear error; any other as it is. */
function unwritable(err: unknown, out: string | undefined): unknown {
  const e = err as NodeJS.ErrnoException
  if (out === undefined || typeof e?.code !== "string" || !e.syscall) return err
  return new UsageError(
    `cannot write ${out}: ${e.code === "ENOENT" ? "its folder does not exist" : e.message}`,
    "Give --out a file in a folder that exists and that you can write to. Nothing was written.",
  )
}

/**
 * Writes the export to stdout or, atomically, to `out`; the rows written, or null when stdout's reader went away
 * before the end (nothing may be remembered of such an export).
 */
async function write(
  db: Ledger,
  run: Run,
  o: ExportOptions,
  out: string | undefined,
): Promise<number | null> {
  const x = await lazyExport()
  const { Clash } = await import("../core/report/columns.ts")
  const pipeline = run.job.pipeline !== undefined
  let columns
  let ex
  try {
    ex = pipeline
      ? await (await import("../core/report/pipeline-export.ts")).joined(db, run, o)
      : x.single(db, run, o)
    columns = o.format === "jsonl" ? [] : await ex.columns()
  } catch (err) {
    if (!(err instanceof Clash)) throw err
    throw new UsageError(
      `results: ${err.message}`,
      pipeline
        ? "Leave the input's columns out with --no-join, or write the step alone with --step NAME."
        : `Name the output's columns otherwise with --prefix (e.g. --prefix llm_), or leave the input's out with --no-join.`,
    )
  }
  if (o.format === "parquet") {
    const path = resolve(out!)
    const tmp = `${path}.${process.pid}.tmp`
    try {
      const { writeTable } = await import("../core/report/parquet.ts")
      const count = await writeTable(tmp, run.name, columns, ex.rows(columns))
      renameSync(tmp, path)
      return count
    } catch (err) {
      rmSync(tmp, { force: true })
      throw err
    }
  }
  const lines = o.format === "csv" ? x.csvOf(columns, ex.rows(columns)) : ex.jsonl()
  const header = o.format === "csv" ? 1 : 0
  if (!out) {
    const { count, complete } = await pour(process.stdout, lines)
    return complete ? count - header : null
  }
  return (await writeAtomically(resolve(out), lines)) - header
}

/** About how many characters of lines are written at a time. */
const CHUNK = 64 * 1024

/**
 * Writes lines with backpressure and waits until the last one is handed to the OS: the process exits
 * right after a command returns, and a pipe's unflushed tail would be lost (a slow reader saw 256 of
 * 5,000 lines before this). Says how many it wrote, and whether all of them were (not when the reader left).
 */
async function pour(
  out: NodeJS.WritableStream,
  lines: AsyncIterable<string>,
): Promise<{ count: number; complete: boolean }> {
  let failed: NodeJS.ErrnoException | undefined
  let count = 0
  const onError = (err: NodeJS.ErrnoException) => (failed ??= err)
  out.on("error", onError)
  try {
    // lines go out in chunks of about 64 kB: a write per line made a million-line export ~5 times slower
    let chunk: string[] = []
    let size = 0
    const flush = async () => {
      const text = chunk.join("")
      chunk = []
      size = 0
      // each wait takes its listeners off again: left on, they piled up (MaxListenersExceededWarning at ~3,000 lines)
      if (!out.write(text))
        await new Promise<void>((done) => {
          const go = () => {
            out.off("drain", go)
            out.off("error", go)
            done()
          }
          out.on("drain", go)
          out.on("error", go)
        })
    }
    try {
      for await (const line of lines) {
        if (failed) break
        count++
        chunk.push(line)
        size += line.length
        if (size >= CHUNK) await flush()
      }
    } catch (err) {
      // the reading stopped (a damaged store names what it could not read): what was read still goes out first
      if (!failed && chunk.length) await flush()
      if (!failed) await new Promise<void>((done) => out.write("", () => done()))
      throw err
    }
    if (!failed && chunk.length) await flush()
    if (!failed) await new Promise<void>((done) => out.write("", () => done()))
  } finally {
    out.off("error", onError)
  }
  // the reader went away (`spool results | head`): it has what it wanted, which is not an error
  if (failed && !(failed.code === "EPIPE" && out === process.stdout)) throw failed
  return { count, complete: failed === undefined }
}

/** Writes beside the target and renames, so a reader never sees a half-written file. Owner-only. The lines written. */
async function writeAtomically(path: string, lines: AsyncIterable<string>): Promise<number> {
  const tmp = `${path}.${process.pid}.tmp`
  const out = createWriteStream(tmp, { mode: 0o600 })
  try {
    const { count } = await pour(out, lines)
    await new Promise<void>((done, fail) => out.end((err?: Error | null) => (err ? fail(err) : done())))
    renameSync(tmp, path)
    return count
  } catch (err) {
    rmSync(tmp, { force: true })
    throw err
  }
}
