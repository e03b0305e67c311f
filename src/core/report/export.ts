/**
 * `spool results` as JSONL, CSV or Parquet (docs/RESULTS.md): a run's items joined to their input rows, filtered by
 * state or by the last export, written as they are read, a page of the ledger at a time (never the whole run).
 */
import type { Ledger } from "../ledger/ledger.ts"
import type { State } from "../ledger/states.ts"
import type { ExportRow, Run } from "../ledger/types.ts"
import {
  cell,
  columnsOf,
  Learned,
  mixedVectors,
  type Column,
  type SpoolField,
  type Values,
  valueOf,
} from "./columns.ts"
import { resultLine, type ResultLine } from "./report.ts"

export const EXPORT_FORMATS = ["jsonl", "csv", "parquet"] as const
export type Format = (typeof EXPORT_FORMATS)[number]

export interface ExportOptions {
  format: Format
  /** Write each item's input row: its fields as columns (CSV, Parquet), or an `input` object (JSONL). */
  join: boolean
  /** The output columns' prefix (`--prefix`); undefined: `output.`. */
  prefix?: string | undefined
  /** Only items of these states; undefined: all. */
  states?: State[] | undefined
  /** Only items whose `updated_at` is above this mark (`--since-last-export`); null or undefined: all. */
  since?: number | null | undefined
}

/** How many items a read of the ledger gives at a time. */
export const PAGE = 2_000

/**
 * The items an export writes, a page at a time, in ledger order. An export of the whole run or of one state reads
 * them as `spool results` always did (`Reads.items`): in a damaged store it gives every item that can still be read,
 * then names the ids that cannot (README, "What happens when things go wrong").
 */
export async function* exportRows(db: Ledger, run: Run, o: ExportOptions): AsyncGenerator<ExportRow> {
  if ((o.since ?? null) === null && (o.states === undefined || o.states.length === 1)) {
    for await (const item of db.reads.items(run.id, o.states?.[0]))
      yield { ...item, updated_at: (item as { updated_at?: number }).updated_at ?? 0 }
    return
  }
  let after = 0
  for (;;) {
    const page = await db.reads.exportPage(run.id, {
      states: o.states,
      since: o.since ?? null,
      after,
      limit: PAGE,
    })
    yield* page
    if (page.length < PAGE) return
    after = page.at(-1)!.id
  }
}

/** An embedding's float32 bytes (little-endian) as numbers. */
export function floats(bytes: Uint8Array): number[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const out = new Array<number>(bytes.byteLength >> 2)
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true)
  return out
}

/** The run changed between the export's two reads: nothing is written; the next try reads it again. */
export function changed(what: string): Error {
  return new Error(
    `the run changed while it was exported (${what}); nothing was written: run the export again (or once the run has finished)`,
  )
}

/** An item's values for the columns: its result line's fields, its input row, its answer, its vector. */
export type Maker = (row: ExportRow) => { line: ResultLine; values: Values }

export async function maker(db: Ledger, run: Run, join: boolean): Promise<Maker> {
  const line = await resultLine(db, run)
  const structured = run.job.output !== undefined
  return (row) => {
    const l = line(row)
    let output: unknown = l.output
    // an answer left for review is text; with a schema its columns are filled where it parses and fits them
    if (
      structured &&
      (row.state === "needs_review" || row.state === "rejected") &&
      typeof output === "string"
    ) {
      try {
        output = JSON.parse(output) as unknown
      } catch {
        // not JSON: no column of the schema's can hold it
      }
    }
    const spool: Record<SpoolField, unknown> = {
      id: l.id,
      state: l.state,
      attempts: l.attempts,
      cost_usd: l.cost_usd,
      prompt_cache_saved_usd: l.prompt_cache_saved_usd,
      cache_write_tokens: l.usage.cache_write_tokens,
      cached: l.cached,
      error: l.error?.message ?? null,
      vector: row.vector ? floats(row.vector) : null,
    }
    const input = join ? (JSON.parse(row.data) as Record<string, unknown>) : null
    return { line: l, values: { input, spool, output } }
  }
}

/**
 * The export's columns: the input's learned from a first read of the items it writes (when joined, or for the
 * vectors' length), then spool's and the output's. Throws a Clash when two would have one name.
 */
export async function plan(db: Ledger, run: Run, o: ExportOptions): Promise<Column[]> {
  const learned = new Learned()
  if (o.join || o.format !== "jsonl") for await (const row of exportRows(db, run, o)) learned.see(row, o.join)
  return columnsOf({
    input: learned.columns(),
    cached: run.job.cache?.enabled !== false,
    dimensions: learned.dimensions,
    schema: run.job.output?.schema,
    prefix: o.prefix,
  })
}

/** Checks an item against the columns learned: a field or a vector length they do not know means the run changed. */
export function checker(columns: Column[]): (row: ExportRow, values: Values) => void {
  const known = new Set(columns.filter((c) => c.from.part === "input").map((c) => c.from.field))
  const vector = columns.some((c) => c.from.field === "vector" && c.from.part === "spool")
  let dims: number | null = null
  return (row, values) => {
    if (values.input)
      for (const k in values.input) if (!known.has(k)) throw changed(`a new input field "${k}"`)
    if (row.vector) {
      if (!vector) throw changed("an item with a vector")
      const n = row.vector.byteLength / 4
      if (dims !== null && dims !== n) throw mixedVectors(dims, n, row)
      dims = n
    }
  }
}

/** Quotes a CSV field when it must be (RFC 4180): a comma, a quote or a line break in it. */
export function csvField(text: string): string {
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text
}

/** The lines of a JSONL export: the result lines of DESIGN §7, with `vector` and, joined, `input`. */
export async function* jsonlLines(db: Ledger, run: Run, o: ExportOptions): AsyncGenerator<string> {
  const make = await maker(db, run, o.join)
  for await (const row of exportRows(db, run, o)) {
    const { line, values } = make(row)
    const out: Record<string, unknown> = { ...line }
    if (values.spool.vector) out.vector = values.spool.vector
    if (values.input) out.input = values.input
    yield `${JSON.stringify(out)}\n`
  }
}

/** A row of a CSV or Parquet export: its key (named when a value does not fit its column) and a value per column. */
export interface TableRow {
  key: string
  cells: unknown[]
}

/** The rows of a one-step run's CSV or Parquet export, each item's values in the order of `columns`. */
export async function* tableRows(
  db: Ledger,
  run: Run,
  o: ExportOptions,
  columns: Column[],
): AsyncGenerator<TableRow> {
  const make = await maker(db, run, o.join)
  const check = checker(columns)
  for await (const row of exportRows(db, run, o)) {
    const { values } = make(row)
    check(row, values)
    yield { key: row.key, cells: columns.map((c) => valueOf(c, values)) }
  }
}

/** The lines of a CSV export: a header of the columns' names, then one line per row. */
export async function* csvOf(columns: Column[], rows: AsyncIterable<TableRow>): AsyncGenerator<string> {
  yield `${columns.map((c) => csvField(c.name)).join(",")}\r\n`
  for await (const row of rows) yield `${row.cells.map((v) => csvField(cell(v))).join(",")}\r\n`
}

/** The lines of a one-step run's CSV export: a header of the columns' names, then one line per item. */
export function csvLines(db: Ledger, run: Run, o: ExportOptions, columns: Column[]): AsyncGenerator<string> {
  return csvOf(columns, tableRows(db, run, o, columns))
}

/**
 * An export as `spool results` writes it, whatever the run: its columns (CSV, Parquet), then its JSONL lines or its
 * table rows. `single` is a one-step run's; a pipeline run's joins each row to its steps (pipeline-export.ts).
 */
export interface Export {
  /** The columns of a CSV or Parquet export, learned from a first read where they must be; may throw a Clash. */
  columns(): Promise<Column[]>
  /** The lines of a JSONL export. */
  jsonl(): AsyncIterable<string>
  /** The rows of a CSV or Parquet export, a value for each of `columns` (what `columns()` gave). */
  rows(columns: Column[]): AsyncIterable<TableRow>
}

/** A one-step run's export: its items, as `plan`, `jsonlLines` and `tableRows` make them. */
export function single(db: Ledger, run: Run, o: ExportOptions): Export {
  return {
    columns: () => plan(db, run, o),
    jsonl: () => jsonlLines(db, run, o),
    rows: (columns) => tableRows(db, run, o, columns),
  }
}

/** The states of a finished item: what `--since-last-export` exports. */
export const FINISHED: readonly State[] = ["completed", "failed", "needs_review", "rejected"]
