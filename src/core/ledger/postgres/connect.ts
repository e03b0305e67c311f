/**
 * Opening the PostgreSQL store: the URL (its schema, its password masked wherever it is shown), Bun's own SQL client
 * (Bun.SQL: the binary gains no dependency), the schema made and migrated once under an advisory lock, and the
 * connection retried for a while when the server is away (a restart, a network cut).
 */
import { SQL } from "bun"
import { StoreError } from "../../../plugins/api/errors.ts"
import type { Notice } from "../ledger.ts"
import { mask } from "../url.ts"
import { MIGRATIONS } from "./schema.ts"

/** An open PostgreSQL store, as every part of the driver shares it. */
export interface Pg {
  sql: SQL
  /** The schema the ledger lives in (`spool` unless `?schema=` says otherwise). */
  schema: string
  /** The URL with its password masked: the only form of it that is ever shown. */
  shown: string
  /** How long a statement that failed on a lost connection is tried again, in ms. */
  retryMs: number
}

/** The schema a URL names (`?schema=`), or `spool`; refused unless it is a plain identifier. */
export function schemaOf(url: string): string {
  const schema = new URL(url).searchParams.get("schema") ?? "spool"
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema))
    throw new StoreError(
      `the store URL's schema "${schema}" is not a plain lower-case identifier`,
      "Give ?schema= letters, digits and underscores, starting with a letter (e.g. ?schema=spool_eu).",
    )
  return schema
}

/** How long, by default, a worker keeps trying a server that went away before it gives up (SPOOL_PG_RETRY_S). */
export const RETRY_MS = 60_000

export interface ConnectOptions {
  /** Connections in the pool (a worker needs few: its writes are one transaction at a time). */
  max?: number
  retryMs?: number
}

/**
 * A client of the store at `url`, not yet connected (Bun.SQL connects at the first query, opening `max` connections
 * at once: a command that only reads asks for few). The password comes from the URL or from PGPASSWORD (Bun.SQL
 * reads the usual PG* variables), never from the ledger.
 */
export function client(url: string, options: ConnectOptions = {}): Pg {
  const schema = schemaOf(url)
  const u = new URL(url)
  u.searchParams.delete("schema")
  const envRetry = Number(process.env.SPOOL_PG_RETRY_S)
  const retryMs = options.retryMs ?? (Number.isFinite(envRetry) && envRetry >= 0 ? envRetry * 1000 : RETRY_MS)
  const sql = new SQL({
    url: u.toString(),
    max: options.max ?? 8,
    idleTimeout: 60,
    connectionTimeout: 10,
    connection: { search_path: schema, application_name: "spool" },
  })
  return { sql, schema, shown: mask(url), retryMs }
}

/**
 * The schema version of the store (`meta.version`), read without a lock: null when the URL's schema holds no
 * ledger yet (no schema, no `meta`), 0 when `meta` has no version.
 */
export async function version(pg: Pg): Promise<number | null> {
  try {
    const [row] = await pg.sql.unsafe(`SELECT value FROM "${pg.schema}".meta WHERE key = 'version'`)
    return row ? Number(row.value) : 0
  } catch (err) {
    // undefined_table, invalid_schema_name: nothing was made here
    const state = (err as { errno?: unknown } | null)?.errno
    if (state === "42P01" || state === "3F000") return null
    throw err
  }
}

/**
 * Brings a store whose version was read as `known` up to this spool's schema: nothing when it is current (the
 * common case: no transaction, no lock), a refusal when a newer spool made it, else the migrations under the lock.
 */
export async function ready(pg: Pg, known: number | null): Promise<void> {
  if (known === MIGRATIONS.length) return
  if (known !== null && known > MIGRATIONS.length) throw newer(pg, known)
  await migrate(pg)
}

/**
 * Connects to the store at `url` and brings its schema up to date: one read of its version when it is current,
 * the migrations under an advisory lock when it is not (or not there yet).
 */
export async function connect(url: string, options: ConnectOptions = {}): Promise<Pg> {
  const pg = client(url, options)
  try {
    await retrying(pg, async () => ready(pg, await version(pg)))
    return pg
  } catch (err) {
    await pg.sql.close().catch(() => {})
    throw failure(err, pg)
  }
}

function newer(pg: Pg, version: number): StoreError {
  return new StoreError(
    `the store ${pg.shown} was made by a newer spool (schema version ${version}, this one knows ${MIGRATIONS.length})`,
    "Upgrade spool on this machine to the version the other workers run.",
  )
}

/** Creates the schema and applies the migrations it lacks, once, however many workers start together. */
async function migrate(pg: Pg): Promise<void> {
  await pg.sql.begin(async (tx) => {
    // one lock per schema: ten workers starting at once wait for the first, which migrates; the others find it done
    await tx`SELECT pg_advisory_xact_lock(hashtext(${"spool:" + pg.schema}))`
    await tx.unsafe(`CREATE SCHEMA IF NOT EXISTS "${pg.schema}"`)
    await tx.unsafe(
      `CREATE TABLE IF NOT EXISTS "${pg.schema}".meta (key text PRIMARY KEY, value text NOT NULL)`,
    )
    const [row] = await tx.unsafe(`SELECT value FROM "${pg.schema}".meta WHERE key = 'version'`)
    const version = row ? Number(row.value) : 0
    if (version > MIGRATIONS.length) throw newer(pg, version)
    for (let i = version; i < MIGRATIONS.length; i++) {
      await tx.unsafe(`SET LOCAL search_path TO "${pg.schema}"`)
      await tx.unsafe(MIGRATIONS[i]!)
    }
    if (version < MIGRATIONS.length)
      await tx.unsafe(
        `INSERT INTO "${pg.schema}".meta VALUES ('version', '${MIGRATIONS.length}')
         ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
      )
  })
}

/** Whether an error is the connection's (the server went away, refused, timed out), not the statement's. */
export function lost(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  if (
    typeof code === "string" &&
    /^ERR_POSTGRES_(CONNECTION|SOCKET|TLS|IDLE|LIFETIME)|CONNECTION_CLOSED|REFUSED|TIMEOUT/.test(code)
  )
    return true
  const errno = (err as { errno?: unknown; code?: unknown } | null)?.code
  if (typeof errno === "string" && /^(ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|ENOTFOUND)$/.test(errno))
    return true
  // the server shutting down, or in recovery: admin_shutdown, crash_shutdown, cannot_connect_now
  const state = (err as { errno?: unknown } | null)?.errno
  return state === "57P01" || state === "57P02" || state === "57P03"
}

/** Whether the server rolled a transaction back for another's sake: a deadlock, a serialization failure. */
function conflict(err: unknown): boolean {
  const state = (err as { errno?: unknown } | null)?.errno
  return state === "40P01" || state === "40001"
}

/**
 * Runs `fn`, trying it again while the connection is lost, for up to `pg.retryMs`: a server restarted mid-run is
 * waited for, not a reason to exit. `fn` must be a whole transaction (or a read): one that failed was rolled back.
 */
export async function retrying<T>(pg: Pg, fn: () => Promise<T>): Promise<T> {
  const start = Date.now()
  let wait = 100
  for (;;) {
    try {
      return await fn()
    } catch (err) {
      // a deadlock or a serialization failure rolled the whole transaction back: it is simply run again
      if (conflict(err) && Date.now() - start < pg.retryMs) continue
      if (!lost(err) || Date.now() - start >= pg.retryMs) throw failure(err, pg)
      await Bun.sleep(wait)
      wait = Math.min(wait * 2, 2000)
    }
  }
}

/** PostgreSQL's errors as the store's own, naming the server (password masked); a bug's error stays as it is. */
export function failure(err: unknown, pg: Pick<Pg, "shown" | "retryMs">): unknown {
  if (err instanceof StoreError) return err
  if (lost(err))
    return new StoreError(
      `cannot reach the store ${pg.shown}: ${(err as Error).message}`,
      `Check that the PostgreSQL server is up and reachable (tried for ${Math.round(pg.retryMs / 1000)} s; SPOOL_PG_RETRY_S sets how long), then run the same command again: every commit before this one is kept.`,
      { cause: err },
    )
  const state = (err as { errno?: unknown } | null)?.errno
  if (state === "28P01" || state === "28000")
    return new StoreError(
      `the store ${pg.shown} refused the login: ${(err as Error).message}`,
      "Give the password in the URL, in PGPASSWORD, or in a .env file in the working directory.",
      { cause: err },
    )
  if (state === "3D000")
    return new StoreError(
      `the store ${pg.shown} names a database that does not exist`,
      "Create it (createdb NAME) or fix the URL.",
      {
        cause: err,
      },
    )
  if (state === "53100")
    return new StoreError(
      `the disk of the store ${pg.shown} is full`,
      "Free some space on the server, then resume.",
      {
        cause: err,
      },
    )
  return err
}

/** The channel every worker of a store listens on (schema-qualified: two ledgers in one database do not mix). */
export const channel = (pg: Pick<Pg, "schema">) => `spool_${pg.schema}`

/** Tells every listening worker, when `tx` commits (a rolled-back transaction tells no one). */
export async function notify(tx: SQL, pg: Pick<Pg, "schema">, notice: Notice): Promise<void> {
  await tx`SELECT pg_notify(${channel(pg)}, ${JSON.stringify(notice)})`
}
