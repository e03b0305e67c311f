/**
 * `spool results` of a pipeline run (docs/RESULTS.md, "Pipelines"): one row per input row, in the pipeline run's
 * ledger order, with each step's state, answer and error beside it. A row's item in a step has the row's input and
 * key; each step's run is read in its own order a page at a time, at most a window ahead of the rows, and an item
 * that is not in the window is looked up by its key. No run is ever held whole.
 */
import { UsageError } from "../base/errors.ts"
import type { Ledger } from "../ledger/ledger.ts"
import type { ExportRow, PagedItem, Run } from "../ledger/types.ts"
import {
  columnsOf,
  distinct,
  Learned,
  SPOOL_QUALIFIED,
  valueOf,
  type Column,
  type SpoolField,
  type Values,
} from "./columns.ts"
import {
  checker,
  exportRows,
  maker,
  PAGE,
  type Export,
  type ExportOptions,
  type Maker,
  type TableRow,
} from "./export.ts"
import type { ResultLine } from "./report.ts"

/**
 * How many of a step's items may be read ahead of the rows, at most. A step's items are made in the rows' order, wave
 * after wave as the steps before end, so a row's item is almost always in the window; past it, it is looked up.
 */
export const WINDOW = 10_000

/** spool's fields each step has as columns (csv, parquet), in this order before its answer's. */
const STEP_FIELDS: readonly SpoolField[] = ["state", "cost_usd", "error"]

/** A JSONL line's own keys, which a step's object cannot take: the row's id and source, and its input (joined). */
const LINE_KEYS = ["id", "source", "input"] as const

/** A step of the pipeline as its export reads it: its name and its run (null while it has none). */
interface Part {
  name: string
  run: Run | null
}

/** The values of a row that has not reached a step: every column of the step empty. */
const NONE: Values = { input: null, spool: {} as Values["spool"], output: null }

/**
 * The export of the pipeline run `run`: per row its id, each step's part, its source (JSONL) and, with `o.join`, its
 * input row. Only `o.format` and `o.join` apply (a step's own export, `--step`, takes every other option). A step
 * named as one of the line's own keys is refused for JSONL, before anything is read.
 */
export async function joined(db: Ledger, run: Run, o: ExportOptions, window = WINDOW): Promise<Export> {
  const runs = new Map((await db.runs.steps(run.id)).map((r) => [r.step!, r]))
  const parts: Part[] = (run.job.pipeline ?? []).map((s) => ({ name: s.name, run: runs.get(s.name) ?? null }))
  if (o.format === "jsonl")
    for (const p of parts)
      if (LINE_KEYS.some((k) => k === p.name && (k !== "input" || o.join)))
        throw new UsageError(
          `step "${p.name}" has the name of a JSONL line's own key "${p.name}"`,
          `Write it alone with --step ${p.name}, or the rows as csv (--format csv), where its columns are ${p.name}.state, …`,
        )
  const owners = new Map<Column, number>()
  return {
    columns: async () => {
      const columns = await plan(db, run, o, parts)
      for (const [i, cs] of columns.steps.entries()) for (const c of cs) owners.set(c, i)
      return distinct([...columns.row, ...columns.steps.flat()])
    },
    jsonl: () => jsonlLines(db, run, o, parts, window),
    rows: (columns) => tableRows(db, run, o, parts, columns, owners, window),
  }
}

/** The rows' columns (their input's when joined, then their id) and each step's (its state, cost, error, answer). */
async function plan(
  db: Ledger,
  run: Run,
  o: ExportOptions,
  parts: Part[],
): Promise<{ row: Column[]; steps: Column[][] }> {
  const learned = new Learned()
  if (o.join) for await (const row of exportRows(db, run, rowsOnly(o))) learned.see(row, true)
  const input = learned.columns()
  const id: Column = {
    name: input.some((c) => c.name === "id") ? `${SPOOL_QUALIFIED}id` : "id",
    shape: { kind: "string" },
    from: { part: "spool", field: "id" },
  }
  const steps = parts.map((p) =>
    // a one-step export's columns of the step's run, its answer's prefixed with the step's name, and spool's too
    columnsOf({
      input: [],
      cached: false,
      dimensions: null,
      schema: p.run?.job.output?.schema,
      prefix: `${p.name}.`,
    })
      .filter((c) => c.from.part === "output" || STEP_FIELDS.includes(c.from.field as SpoolField))
      .map((c) => (c.from.part === "spool" ? { ...c, name: `${p.name}.${c.from.field}` } : c)),
  )
  return { row: [...input, id], steps }
}

/** The options the pipeline run's own rows are read with: all of them, in ledger order. */
const rowsOnly = (o: ExportOptions): ExportOptions => ({ format: o.format, join: o.join })

/** A step as an export reads it: its name, the reader of its items, and what makes their lines and values. */
interface Opened {
  name: string
  reader: Reader
  /** Null for a step with no run: its reader finds nothing. */
  make: Maker | null
}

/** Each step's reader and maker. */
async function open(db: Ledger, parts: Part[], window: number): Promise<Opened[]> {
  return Promise.all(
    parts.map(async (p) => ({
      name: p.name,
      reader: new Reader(db, p.run?.id ?? null, window),
      make: p.run ? await maker(db, p.run, false) : null,
    })),
  )
}

/** A step's result line without the row's own id and source: what a JSONL line holds of the step. */
function stepLine(line: ResultLine): Omit<ResultLine, "id" | "source"> {
  const { id: _id, source: _source, ...rest } = line
  return rest
}

/**
 * The lines of a pipeline's JSONL export: `{"id", STEP: its result line without id and source, or null where the
 * row has not reached it, …, "source", "input" (joined)}`.
 */
async function* jsonlLines(
  db: Ledger,
  run: Run,
  o: ExportOptions,
  parts: Part[],
  window: number,
): AsyncGenerator<string> {
  const head = await maker(db, run, o.join)
  const steps = await open(db, parts, window)
  for await (const row of exportRows(db, run, rowsOnly(o))) {
    const { line, values } = head(row)
    const out: Record<string, unknown> = { id: line.id }
    for (const s of steps) {
      const item = await s.reader.find(row.input, row.key)
      out[s.name] = item && s.make ? stepLine(s.make(item).line) : null
    }
    out.source = line.source
    if (values.input) out.input = values.input
    yield `${JSON.stringify(out)}\n`
  }
}

/** The rows of a pipeline's CSV or Parquet export: each column's value from the row or from its step's item. */
async function* tableRows(
  db: Ledger,
  run: Run,
  o: ExportOptions,
  parts: Part[],
  columns: Column[],
  owners: Map<Column, number>,
  window: number,
): AsyncGenerator<TableRow> {
  const head = await maker(db, run, o.join)
  const check = checker(columns)
  const steps = await open(db, parts, window)
  const owner = columns.map((c) => owners.get(c) ?? -1)
  const per: Values[] = steps.map(() => NONE)
  for await (const row of exportRows(db, run, rowsOnly(o))) {
    const { values } = head(row)
    check(row, values)
    for (const [i, s] of steps.entries()) {
      const item = await s.reader.find(row.input, row.key)
      per[i] = item && s.make ? s.make(item).values : NONE
    }
    yield { key: row.key, cells: columns.map((c, i) => valueOf(c, owner[i]! < 0 ? values : per[owner[i]!]!)) }
  }
}

/**
 * A step run's items found by their row's input and key. The run is read in its own order a page at a time into a
 * window of items whose rows are still to come; a row whose item is not in it is read further for, while the window
 * has room, and looked up by its key (an index look-up) once it is full. An item looked up is passed over when the
 * reading reaches it. The run's end, read, means a row that has found nothing has no item: it has not reached the step.
 */
export class Reader {
  private readonly ahead = new Map<string, ExportRow>()
  /** Items looked up before the reading reached them (their ids). */
  private readonly taken = new Set<number>()
  private after = 0
  private done: boolean
  /** How many items were looked up by key: the window did not hold them. */
  lookups = 0

  constructor(
    private readonly db: Ledger,
    private readonly run: number | null,
    private readonly window: number,
  ) {
    this.done = run === null
  }

  /** The step's item of the row (`input`, `key`), or null when the row has none (yet). */
  async find(input: number, key: string): Promise<ExportRow | null> {
    const k = `${input}:${key}`
    for (;;) {
      const hit = this.ahead.get(k)
      if (hit) {
        this.ahead.delete(k)
        return hit
      }
      if (this.done) return null
      if (this.ahead.size >= this.window) return this.lookup(input, key)
      await this.read()
    }
  }

  private async read(): Promise<void> {
    const page = await this.db.reads.exportPage(this.run!, { after: this.after, limit: PAGE })
    for (const item of page)
      if (!this.taken.delete(item.id)) this.ahead.set(`${item.input}:${item.key}`, item)
    if (page.length < PAGE) this.done = true
    else this.after = page.at(-1)!.id
  }

  private async lookup(input: number, key: string): Promise<ExportRow | null> {
    this.lookups++
    const found = (await this.db.reads.keyed(this.run!, key)).find((i) => i.input === input)
    if (!found) return null
    if (found.id > this.after) this.taken.add(found.id)
    return row(found)
  }
}

/** An item looked up by key as an export row: no input row or vector (a step's columns use neither). */
function row(item: PagedItem): ExportRow {
  const { attempts_list: _attempts, ...rest } = item
  return { ...rest, data: "{}", vector: null, updated_at: 0 }
}
