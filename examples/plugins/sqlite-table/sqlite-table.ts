/**
 * A source plugin: the rows of one table of a SQLite database, in rowid order, one item per row.
 *
 * Load it with `plugins = ["sqlite-table.ts"]` in a job file and read a database with
 * `[source] path = "tickets.db"` (or `format = "sqlite-table"` for other endings). The key is the `id`
 * column's value when `id` is set, else the rowid. Rows added later (higher rowids) are picked up by the
 * next `spool run`; a change to rows already read is refused, as for every source.
 */
import { Database } from "bun:sqlite"
import { existsSync } from "node:fs"
import {
  defineSource,
  SourceChangedError,
  SourceError,
  type SourceProblem,
  type SourceRow,
} from "spool/plugin"
import * as v from "valibot"

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/

/** A value the prompt template and the results can hold: blobs become base64, big integers strings. */
function plain(value: unknown): unknown {
  if (value instanceof Uint8Array) return Buffer.from(value).toString("base64")
  if (typeof value === "bigint") return Number.isSafeInteger(Number(value)) ? Number(value) : String(value)
  return value
}

function open(file: string): Database {
  if (!existsSync(file)) throw new SourceError(`cannot read ${file}: no such file`, "Check source.path.")
  try {
    const db = new Database(file, { readonly: true })
    db.query("SELECT count(*) FROM sqlite_master").get() // a file that is not a database fails here
    return db
  } catch (err) {
    throw new SourceError(`cannot read ${file} as a SQLite database: ${(err as Error).message}`)
  }
}

/** The table to read: the one named, or the only one there is. */
function pick(db: Database, file: string, named: string | undefined): string {
  const tables = (
    db.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").all() as {
      name: string
    }[]
  ).map((t) => t.name)
  if (named !== undefined) {
    if (!tables.includes(named))
      throw new SourceError(
        `${file} has no table "${named}"`,
        `Its tables: ${tables.join(", ") || "none"}. Set source.table to one of them.`,
      )
    return named
  }
  if (tables.length === 1) return tables[0]!
  throw new SourceError(
    `${file} has ${tables.length} tables (${tables.join(", ")}): say which one to read`,
    'Set table = "…" in the [source] table of the job.',
  )
}

export default defineSource({
  name: "sqlite-table",
  extensions: [".db", ".sqlite", ".sqlite3"],
  options: v.strictObject({
    /** The table to read; may be left out when the database has one table. */
    table: v.optional(v.pipe(v.string(), v.regex(IDENTIFIER, "must be a plain table name"))),
    /** Rows per batch (each batch is committed with its checkpoint). */
    batch_rows: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1)), 1000),
  }),
  async *read(file, options, checkpoint, signal) {
    const db = open(file)
    try {
      const table = pick(db, file, options.table)
      const columns = (db.query(`PRAGMA table_info("${table}")`).all() as { name: string }[]).map(
        (c) => c.name,
      )
      if (options.id !== undefined && !columns.includes(options.id))
        throw new SourceError(
          `table "${table}" of ${file} has no column "${options.id}" (the id field)`,
          `Its columns: ${columns.join(", ")}.`,
        )
      let rows: Record<string, unknown>[]
      const select = db.query(
        `SELECT rowid AS "__rowid", * FROM "${table}" WHERE rowid > ? ORDER BY rowid LIMIT ?`,
      )
      const hasher = new Bun.CryptoHasher("sha256")
      const digest = (row: Record<string, unknown>) => hasher.update(JSON.stringify(row, (_, x) => plain(x)))

      // resuming: the rows already read must be the rows that were read
      let last = 0
      let count = 0
      if (checkpoint) {
        const through = Number(checkpoint.rowid)
        const before = db
          .query(`SELECT rowid AS "__rowid", * FROM "${table}" WHERE rowid <= ? ORDER BY rowid`)
          .all(through) as Record<string, unknown>[]
        for (const row of before) digest(row)
        if (before.length !== checkpoint.rows || hasher.copy().digest("hex") !== checkpoint.sha256)
          throw new SourceChangedError(
            `table "${table}" of ${file} changed since it was ingested: its first ${checkpoint.rows} rows are not the same`,
            "Restore the rows, or run again with --reingest to read the table from the start.",
          )
        last = through
        count = before.length
      }

      let yielded = false
      do {
        if (signal?.aborted) return
        rows = select.all(last, options.batch_rows) as Record<string, unknown>[]
        const out: SourceRow[] = []
        const problems: SourceProblem[] = []
        for (const row of rows) {
          digest(row)
          const { __rowid: rowid, ...fields } = row
          const line = Number(rowid)
          const data = Object.fromEntries(Object.entries(fields).map(([k, x]) => [k, plain(x)]))
          if (options.id === undefined) {
            out.push({ key: String(line), line, data })
            continue
          }
          const id = data[options.id]
          if (typeof id === "string" || typeof id === "number")
            out.push({ key: String(id), line, id: String(id), data })
          else
            problems.push({
              line,
              reason: `the "${options.id}" column (the id field) is ${id === null ? "NULL" : "not text or a number"}`,
              excerpt: JSON.stringify(data).slice(0, 200),
            })
        }
        if (rows.length) last = Number(rows.at(-1)!.__rowid)
        count += rows.length
        if (rows.length || !yielded)
          yield {
            rows: out,
            problems,
            checkpoint: { rowid: last, rows: count, sha256: hasher.copy().digest("hex") },
          }
        yielded = true
      } while (rows.length === options.batch_rows)
    } finally {
      db.close()
    }
  },
})
