/**
 * `spool migrate`: a SQLite store's runs copied into a PostgreSQL store, so that a run started on a laptop goes on
 * on a fleet. Every table but `workers`, ids kept (items, attempts and batches name each other), in one transaction:
 * all of it or nothing. The response cache goes whole (it is every run's), beside the entries the store has. Rows go
 * in pages, each page one statement with one JSON parameter, the next page read while the server inserts this one:
 * a store of a million items takes a few hundred round trips, and is never whole in memory.
 */
import type { SQL } from "bun"
import { existsSync } from "node:fs"
import { join } from "node:path"
import { UsageError } from "../../base/errors.ts"
import { gone } from "../../base/process.ts"
import { FRESH_MS } from "../ledger.ts"
import type { Run } from "../types.ts"
import * as dump from "../sqlite/dump.ts"
import { DB_FILE } from "../sqlite/faults.ts"
import * as sqlite from "../sqlite/sqlite.ts"
import { connect, notify, retrying, type Pg } from "./connect.ts"

export interface CopyOptions {
  /** The SQLite store's home directory. */
  from: string
  /** The PostgreSQL store's URL (`?schema=` names its schema). */
  to: string
  /** Only this run (a name, whose latest run is meant, or an id) and its pipeline steps' runs; every run when undefined. */
  run?: string
  /** How a page is bounded (default 5,000 rows or 16 M characters of text). */
  page?: Partial<dump.PageLimits>
}

/** What a migration copied. */
export interface Copied {
  runs: Pick<Run, "id" | "name" | "state">[]
  /** Rows copied, per table (the cache's entries: those the store did not hold already). */
  rows: Record<dump.Table, number>
  /** Batches of the copied runs still at the provider or on their way back. */
  liveBatches: number
  /** The store's URL, password masked. */
  shown: string
}

/** The tables whose `id` is an identity column: their sequences are set past the ids copied. */
const IDENTITIES = ["runs", "items", "attempts", "problems", "batches", "reviews", "primes"] as const
/** The counters PostgreSQL's triggers keep: they are copied as SQLite kept them, not as the inserts would count. */
const DERIVED: readonly dump.Table[] = ["tallies", "progress", "error_tallies"]
/**
 * Tables of the whole store, not of a run, and what a row of them does where the store holds its key already: a
 * cache entry the store has is kept (either answer is one the provider gave to that request).
 */
const SHARED: Partial<Record<dump.Table, string>> = { cache: "ON CONFLICT (key) DO NOTHING" }

/**
 * Copies the runs of the store under `from` into the store at `to`. Refused, with nothing written, while a worker
 * of one of them is alive, or when the PostgreSQL store holds a run of the same name or id already.
 */
export async function copy(o: CopyOptions): Promise<Copied> {
  if (!existsSync(join(o.from, DB_FILE)))
    throw new UsageError(
      `no spool store in ${o.from} to migrate`,
      "Point --from (or --home, SPOOL_HOME) at the folder that holds one (its spool.db).",
    )
  const limits = { rows: o.page?.rows ?? 5_000, chars: o.page?.chars ?? 16 * 1024 * 1024 }
  const ledger = sqlite.open(o.from, { access: "read" })
  try {
    const runs = await chosen(ledger, o.run)
    const release = dump.snapshot(ledger.db)
    try {
      const ids = runs.map((r) => r.id)
      const live = dump.holders(ledger.db, ids, Date.now(), FRESH_MS).filter((owner) => !gone(owner))
      if (live.length > 0)
        throw new UsageError(
          `a worker is still at work on ${runs.length === 1 ? `run "${runs[0]!.name}"` : "a run"} in ${o.from} (${live.join(", ")})`,
          "Stop it first (Ctrl+C where it runs) and migrate once it has exited. A worker of another machine is only known gone when its heartbeat and leases lapse (a minute by default): try again then.",
        )
      const pg = await connect(o.to, { max: 2 })
      try {
        const rows = await retrying(pg, () => pg.sql.begin((tx) => write(tx, pg, ledger.db, runs, limits)))
        let liveBatches = 0
        for (const id of ids) liveBatches += (await ledger.batches.live(id)).length
        return {
          runs: runs.map((r) => ({ id: r.id, name: r.name, state: r.state })),
          rows,
          liveBatches,
          shown: pg.shown,
        }
      } finally {
        await pg.sql.close()
      }
    } finally {
      release()
    }
  } finally {
    await ledger.close()
  }
}

/**
 * The runs to copy: the one `ref` names with, when it is a pipeline run, every run of its steps (a step's rows are its
 * pipeline's); or all of them. Oldest first.
 */
async function chosen(ledger: sqlite.SqliteLedger, ref: string | undefined): Promise<Run[]> {
  if (ref === undefined) {
    const all = await ledger.runs.list()
    if (all.length === 0)
      throw new UsageError(`the store ${ledger.path} holds no runs`, "There is nothing to migrate.")
    return all
  }
  const run = await ledger.runs.find(ref)
  if (!run)
    throw new UsageError(
      `no run "${ref}" in ${ledger.path}`,
      "Give a run's name or id, as `spool runs` lists them.",
    )
  return [run, ...(await ledger.runs.list()).filter((r) => r.parent === run.id)]
}

/** The whole copy, inside one transaction; the rows copied per table. */
async function write(
  tx: SQL,
  pg: Pg,
  db: sqlite.SqliteLedger["db"],
  runs: Run[],
  limits: dump.PageLimits,
): Promise<Record<dump.Table, number>> {
  // two migrations into one schema go one after the other, each seeing the other's runs
  await tx`SELECT pg_advisory_xact_lock(hashtext(${"spool-migrate:" + pg.schema}))`
  await clash(tx, pg, runs)
  const types = await columnTypes(tx, pg.schema)
  const ids = runs.map((r) => r.id)
  const rows = {} as Record<dump.Table, number>
  for (const table of Object.keys(dump.TABLES) as dump.Table[]) {
    const cols = dump.columns(db, table)
    const pgTypes = types.get(table) ?? new Map<string, string>()
    const missing = cols.filter((c) => !pgTypes.has(c))
    if (missing.length > 0)
      throw new UsageError(
        `the store ${pg.shown} has no column ${missing.map((c) => `${table}.${c}`).join(", ")} of the SQLite store`,
        "Run the same version of spool on both ends (the newer one migrates the PostgreSQL schema when it connects).",
      )
    if (DERIVED.includes(table))
      await tx.unsafe(
        `DELETE FROM ${table} WHERE run_id IN (SELECT value::int FROM jsonb_array_elements_text($1::text::jsonb))`,
        [JSON.stringify(ids)],
      )
    const list = cols.map((c) => `"${c}"`).join(", ")
    const record = cols.map((c) => `"${c}" ${pgTypes.get(c)}`).join(", ")
    // json, not jsonb: read once as it is parsed, a quarter faster than building jsonb first
    const insert = `INSERT INTO ${table} (${list}) SELECT ${list} FROM json_to_recordset($1::text::json) AS r(${record})
      ${SHARED[table] ?? ""}`
    rows[table] = 0
    // the next page is read from SQLite while the server inserts this one
    let sent: Promise<{ n: number } | { failed: unknown }> | undefined
    const landed = async () => {
      const done = await sent
      if (done && "failed" in done) throw clashed(done.failed, pg, table)
      rows[table] += done?.n ?? 0
    }
    for (const page of dump.pages(db, table, ids, limits)) {
      const text = JSON.stringify(page, bytea)
      await landed()
      sent = tx.unsafe(insert, [text]).then(
        (r: { count: number }) => ({ n: r.count }),
        (err: unknown) => ({ failed: err ?? new Error("insert failed") }),
      )
    }
    await landed()
  }
  // the next id made here comes after every id copied
  for (const table of IDENTITIES)
    await tx.unsafe(
      `SELECT setval(pg_get_serial_sequence('${pg.schema}.${table}', 'id'), max(id)) FROM ${table}`,
    )
  for (const run of runs) await notify(tx, pg, { run: run.id, kind: "items" })
  return rows
}

/** JSON of a page: bytes (an embedding's vector) as PostgreSQL's bytea text, `\x` and hex, not as an object of numbers. */
function bytea(_: string, value: unknown): unknown {
  return value instanceof Uint8Array ? `\\x${Buffer.from(value).toString("hex")}` : value
}

/** Refuses when the store holds a run of the same name or id: a migration must not mix two stores' runs. */
async function clash(tx: SQL, pg: Pg, runs: Run[]): Promise<void> {
  const given = JSON.stringify(runs.map((r) => ({ id: r.id, name: r.name })))
  const [hit] = await tx.unsafe<{ id: number; name: string }[]>(
    `SELECT id, name FROM runs WHERE id IN (SELECT id FROM jsonb_to_recordset($1::text::jsonb) AS r(id int, name text))
     OR name IN (SELECT name FROM jsonb_to_recordset($1::text::jsonb) AS r(id int, name text)) ORDER BY id LIMIT 1`,
    [given],
  )
  if (hit) throw refusal(pg, `already holds run ${hit.id} ("${hit.name}")`)
}

/** A row whose id the store holds already: the same refusal, named by PostgreSQL's detail. */
function clashed(err: unknown, pg: Pg, table: string): unknown {
  const e = err as { errno?: unknown; detail?: unknown; message?: string }
  if (e?.errno !== "23505") return err
  const detail = typeof e.detail === "string" ? e.detail : (e.message ?? "")
  return refusal(pg, `already holds a row of ${table} this store has (${detail})`)
}

function refusal(pg: Pg, what: string): UsageError {
  return new UsageError(
    `the store ${pg.shown} ${what}: a migration does not mix two stores; nothing was copied`,
    "Migrate into a schema of its own: add ?schema=NAME to the URL (e.g. ?schema=laptop), and run there with the same URL.",
  )
}

/** Each table's columns and their types, as PostgreSQL names them (`integer`, `double precision`, `text`). */
async function columnTypes(tx: SQL, schema: string): Promise<Map<string, Map<string, string>>> {
  const rows = await tx<{ tbl: string; col: string; type: string }[]>`
    SELECT c.relname AS tbl, a.attname AS col, format_type(a.atttypid, a.atttypmod) AS type
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ${schema} AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped`
  const types = new Map<string, Map<string, string>>()
  for (const r of rows) {
    const table = types.get(r.tbl) ?? new Map<string, string>()
    table.set(r.col, r.type)
    types.set(r.tbl, table)
  }
  return types
}
