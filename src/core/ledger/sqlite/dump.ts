/**
 * The SQLite store's raw rows, table by table in pages, for `spool migrate` (postgres/copy.ts): each table read by
 * its key (keyset, never an offset), so a store of millions of rows is read in bounded memory.
 */
import type { Database } from "bun:sqlite"

/**
 * How a table is read: by its `key`, the rows of the runs copied (`run`: the column naming their run), or, with `run`
 * null, every row (a table of the whole store); `omit`: columns that are SQLite's own, not copied.
 */
interface Spec {
  key: readonly string[]
  run: string | null
  omit?: readonly string[]
}

/** Every table a migration copies (all of schema.ts but `workers`), in an order that keeps references valid. */
export const TABLES = {
  runs: { key: ["id"], run: "id" },
  inputs: { key: ["run_id", "idx"], run: "run_id" },
  items: { key: ["id"], run: "run_id" },
  attempts: { key: ["id"], run: "run_id" },
  problems: { key: ["id"], run: "run_id" },
  batches: { key: ["id"], run: "run_id" },
  tallies: { key: ["run_id", "state"], run: "run_id" },
  progress: { key: ["run_id", "bucket"], run: "run_id" },
  error_tallies: { key: ["run_id", "class"], run: "run_id" },
  canaries: { key: ["run_id"], run: "run_id" },
  cache_tallies: { key: ["run_id"], run: "run_id" },
  reviews: { key: ["id"], run: "run_id" },
  primes: { key: ["id"], run: "run_id" },
  // the response cache is shared by every run of the store: all of it goes, whichever runs are copied. Its `id` (the
  // order of writing) and `slot` (a hash of the key, schema.ts migration 11) are SQLite's way to find a key:
  // PostgreSQL finds it by the key
  cache: { key: ["id"], run: null, omit: ["id", "slot"] },
} as const satisfies Record<string, Spec>

export type Table = keyof typeof TABLES

/** A raw row, as SQLite returns it (a BLOB, such as an embedding's vector, as bytes). */
export type Row = Record<string, string | number | Uint8Array | null>

/** The columns of a table that a migration copies, in their order. */
export function columns(db: Database, table: Table): string[] {
  const { omit = [] }: Spec = TABLES[table]
  return db
    .query<{ name: string }, []>(`SELECT name FROM pragma_table_info('${table}') ORDER BY cid`)
    .all()
    .map((c) => c.name)
    .filter((c) => !omit.includes(c))
}

/** How a page is bounded: by rows, and by the text it holds (a page of long outputs stops early). */
export interface PageLimits {
  rows: number
  chars: number
}

/**
 * The rows of `table` that belong to `runs` (all of them for a table of the whole store), in key order, a page at a
 * time. A row holds every column, those omitted too (its key may be one).
 */
export function* pages(db: Database, table: Table, runs: number[], limits: PageLimits): Generator<Row[]> {
  const { key, run }: Spec = TABLES[table]
  const keys = key.join(", ")
  // ?1 is there either way: a table of the whole store ignores it
  const of = run === null ? "?1 IS NOT NULL" : `${run} IN (SELECT value FROM json_each(?1))`
  const first = db.query<Row, [string]>(
    `SELECT * FROM ${table} WHERE ${of} ORDER BY ${keys} LIMIT ${limits.rows}`,
  )
  const next = db.query<Row, [string, ...(string | number | null)[]]>(
    `SELECT * FROM ${table} WHERE ${of}
     AND (${keys}) > (${key.map((_, i) => `?${i + 2}`).join(", ")}) ORDER BY ${keys} LIMIT ${limits.rows}`,
  )
  const ids = JSON.stringify(runs)
  let after: (string | number | null)[] | undefined
  for (;;) {
    const page: Row[] = []
    let chars = 0
    for (const row of after ? next.iterate(ids, ...after) : first.iterate(ids)) {
      page.push(row)
      // bytes count as the hex text they are sent as
      for (const v of Object.values(row))
        if (typeof v === "string") chars += v.length
        else if (v instanceof Uint8Array) chars += v.length * 2
      if (chars >= limits.chars) break
    }
    if (page.length === 0) return
    const last = page.at(-1) as Row
    after = key.map((k) => (last[k] ?? null) as string | number | null)
    yield page
  }
}

/**
 * The owners that hold something of `runs` at `now`: a fresh heartbeat in the worker registry (`freshMs`), an item
 * lease, the ingest or batch lease not yet expired. The caller judges which of them are gone.
 */
export function holders(db: Database, runs: number[], now: number, freshMs: number): string[] {
  const ids = JSON.stringify(runs)
  const rows = db
    .query<{ owner: string }, [string, number, number]>(
      `WITH r AS (SELECT value AS id FROM json_each(?1))
       SELECT owner FROM workers WHERE run_id IN (SELECT id FROM r) AND beat_at > ?2 - ?3
       UNION SELECT lease_owner FROM items
         WHERE run_id IN (SELECT id FROM r) AND state = 'running' AND lease_expires > ?2 AND lease_owner IS NOT NULL
       UNION SELECT ingest_owner FROM runs WHERE id IN (SELECT id FROM r) AND ingest_expires > ?2
         AND ingest_owner IS NOT NULL
       UNION SELECT batch_owner FROM runs WHERE id IN (SELECT id FROM r) AND batch_expires > ?2
         AND batch_owner IS NOT NULL`,
    )
    .all(ids, now, freshMs)
  return rows.map((r) => r.owner)
}

/**
 * Holds one read snapshot of the store until the returned function is called: every page of a migration reads the
 * same store, however long the copy takes.
 */
export function snapshot(db: Database): () => void {
  db.exec("BEGIN")
  // a deferred transaction takes its snapshot at its first read
  db.query("SELECT count(*) FROM runs").get()
  return () => db.exec("COMMIT")
}
