/** Opening the SQLite store: its directory and permissions, the header and `quick_check`, pragmas, migrations. */
import { Database, SQLiteError, constants, type SQLQueryBindings, type Statement } from "bun:sqlite"
import {
  accessSync,
  chmodSync,
  closeSync,
  constants as fs,
  existsSync,
  mkdirSync,
  openSync,
  readSync,
  statSync,
} from "node:fs"
import { dirname, join, resolve } from "node:path"
import { StoreError } from "../../../plugins/api/errors.ts"
import { StoreCorruptError } from "../../base/errors.ts"
import { DB_FILE, READERS, damaged, failure } from "./faults.ts"
import { MIGRATIONS } from "./schema.ts"
import type { OpenOptions } from "../ledger.ts"

/** An open connection to the store, as every part of the driver shares it. */
export interface Conn {
  db: Database
  /** The store's file, named in every error. */
  path: string
  /** The durability level of every commit but the batch lines' (see batches.ts `apply`). */
  synchronous: "FULL" | "NORMAL"
}

/** A typed statement maker: each part of the driver prepares its own statements, beside its methods. */
export function statements(db: Database) {
  return <R, P extends SQLQueryBindings[] = SQLQueryBindings[]>(sql: string): Statement<R, P> =>
    db.prepare<R, P>(sql) as unknown as Statement<R, P>
}

/**
 * Stores up to this size are checked (`PRAGMA quick_check`) when opened for writing, so that a damaged store is
 * refused before a run writes to it: ~3 ms per MB with the file in the page cache, up to ~25 ms per MB from disk
 * (docs/BENCHMARKS.md, "Opening the store"). A larger store is checked page by page, by SQLite, as it is read.
 */
export const CHECK_BYTES = 16 * 1024 * 1024

/** Opens (creating if needed) the store under `home`, with the durability pragmas of DESIGN §4 rule 6. */
export function connect(home: string, options: OpenOptions = {}): Conn {
  const path = join(home, DB_FILE)
  const synchronous = options.synchronous ?? "FULL"
  if (options.access === "read" && existsSync(path)) {
    const refused = unreadable(path)
    if (refused) throw refused
    if (unwritable(home, path)) return reader(home, path)
  }
  directory(home)
  const refused = unreadable(path) ?? unwritable(home, path)
  if (refused) throw refused
  const fresh = !existsSync(path)
  if (!fresh) header(path)
  let db: Database
  try {
    db = new Database(path, { create: true, strict: true })
  } catch (cause) {
    throw failure(cause, path)
  }
  try {
    if (fresh) chmodSync(path, 0o600)
    db.run("PRAGMA busy_timeout = 10000")
    db.run("PRAGMA journal_mode = WAL")
    db.run(`PRAGMA synchronous = ${synchronous}`)
    db.run("PRAGMA foreign_keys = ON")
    // a write-heavy ledger: checkpoint the WAL every ~40 MB instead of every 4 MB (fewer copy-and-fsync passes)
    db.run("PRAGMA wal_autocheckpoint = 10000")
    // 16 MB of pages (the default is 2): the response cache's index of a million entries stays in it as a run looks up
    db.run("PRAGMA cache_size = -16384")
    // a read goes on past a damaged page (see `items`); a write is refused before it lands beside one
    if (options.access !== "read" && !fresh && statSync(path).size <= CHECK_BYTES) check(db, path)
    migrate(db, path, true)
    return { db, path, synchronous }
  } catch (err) {
    db.close()
    throw failure(err, path)
  }
}

/**
 * A read-only store. With no write-ahead log, the file holds every commit, and `immutable=1` reads it without the
 * `-wal` and `-shm` files SQLite would otherwise make: a read-only directory forbids them, and beside a read-only
 * file SQLite leaves them read-only, which would refuse every later writer. With a log (a writer was killed, or is
 * running as a user who may write), the log is read through its `-shm`, made if the directory allows.
 */
function reader(home: string, path: string): Conn {
  header(path)
  let db: Database
  try {
    db = logged(path)
      ? new Database(path, { readonly: true, strict: true })
      : new Database(`file:${resolve(path).replace(/[%?#]/g, encodeURIComponent)}?immutable=1`, URI_READONLY)
  } catch (cause) {
    throw failure(cause, path)
  }
  try {
    db.run("PRAGMA busy_timeout = 10000")
    migrate(db, path, false)
    return { db, path, synchronous: "FULL" }
  } catch (err) {
    db.close()
    if (err instanceof SQLiteError && /^SQLITE_(READONLY|CANTOPEN)/.test(err.code ?? ""))
      throw new StoreError(
        `cannot read the store ${path}: its write-ahead log ${path}-wal needs ${path}-shm beside it, and ${home} is not writable`,
        `Make ${home} writable for a moment (chmod u+w ${home}), or copy the directory and read the copy (--home COPY).`,
        { cause: err },
      )
    throw failure(err, path)
  }
}

// numeric flags: the options object has no way to ask for a URI (and so the connection is not `strict`; the store
// binds only positional parameters, which strict mode does not change)
const URI_READONLY = constants.SQLITE_OPEN_READONLY | constants.SQLITE_OPEN_URI

/** Whether the store has a write-ahead log with anything in it. */
function logged(path: string): boolean {
  return existsSync(`${path}-wal`) && statSync(`${path}-wal`).size > 0
}

/** Makes the store's directory (owner-only), or says why it cannot be made. */
function directory(home: string): void {
  try {
    mkdirSync(home, { recursive: true, mode: 0o700 })
  } catch (cause) {
    throw new StoreError(
      `cannot create the store directory ${home}: ${reason(cause)}`,
      "Give --home (or SPOOL_HOME) a directory you can create and write to.",
      { cause },
    )
  }
  try {
    // owner-only: others lose their access; the owner's own is left as it is (a directory made read-only on
    // purpose stays so, and is refused below with a reason)
    chmodSync(home, statSync(home).mode & 0o700)
  } catch {
    // someone else's directory (a shared one): its mode is theirs; whether spool may write there is checked next
  }
}

/** Why the store (or its -wal or -shm) cannot be read, if it cannot. */
function unreadable(path: string): StoreError | undefined {
  for (const file of [path, `${path}-wal`, `${path}-shm`]) {
    if (existsSync(file) && !allowed(file, fs.R_OK))
      return new StoreError(
        `cannot read the store ${file}: permission denied`,
        `Make it readable (chmod u+r ${file}), or run spool as the user who owns it.`,
      )
  }
  return undefined
}

/** Why the store cannot be written, if it cannot: its directory (SQLite makes -wal and -shm there), the file, its -wal and -shm. */
function unwritable(home: string, path: string): StoreError | undefined {
  if (!allowed(home, fs.W_OK))
    return new StoreError(
      `the store directory ${home} is not writable`,
      `spool writes ${DB_FILE} there, and SQLite its ${DB_FILE}-wal and ${DB_FILE}-shm. Make it writable (chmod u+w ${home}), or run spool as the user who owns it. ${READERS}`,
    )
  for (const file of [path, `${path}-wal`, `${path}-shm`]) {
    if (existsSync(file) && !allowed(file, fs.W_OK))
      return new StoreError(
        `the store ${file} is read-only`,
        `Make it writable (chmod u+w ${file}), or run spool as the user who owns it. ${READERS}`,
      )
  }
  return undefined
}

function allowed(file: string, mode: number): boolean {
  try {
    accessSync(file, mode)
    return true
  } catch {
    return false
  }
}

/** A file-system error's cause, in words. */
function reason(cause: unknown): string {
  const code = (cause as NodeJS.ErrnoException)?.code
  if (code === "EACCES" || code === "EPERM") return "permission denied"
  if (code === "ENOTDIR") return "a part of the path is a file, not a directory"
  if (code === "EEXIST") return "a file of that name is in the way"
  if (code === "EROFS") return "the file system is read-only"
  if (code === "ENOSPC") return "the disk is full"
  return (cause as Error)?.message ?? String(cause)
}

const MAGIC = "SQLite format 3\0"

/** Refuses a file that is not a SQLite database, or is shorter than its own header says (a copy cut short). */
function header(path: string): void {
  const size = statSync(path).size
  // SQLite makes an empty file a new database
  if (size === 0) return
  const head = Buffer.alloc(100)
  const fd = openSync(path, "r")
  try {
    readSync(fd, head, 0, head.length, 0)
  } finally {
    closeSync(fd)
  }
  if (size < head.length || head.toString("latin1", 0, MAGIC.length) !== MAGIC)
    throw new StoreCorruptError(
      `the store ${path} is not a SQLite database: its first bytes are not SQLite's header`,
      `It was overwritten, or is not a spool store. Restore it from a backup (with no spool running), or move it aside (mv ${path} ${path}.bad) and start afresh; spool cannot read anything from it.`,
    )
  const pageSize = head.readUInt16BE(16) === 1 ? 65536 : head.readUInt16BE(16)
  const bytes = head.readUInt32BE(28) * pageSize
  // the page count is valid only while its "version-valid-for" equals the change counter; pages still in the
  // write-ahead log may not be in the file yet
  const counted = head.readUInt32BE(24) === head.readUInt32BE(92)
  if (counted && size < bytes && !logged(path))
    throw new StoreCorruptError(
      `the store ${path} is cut short: it has ${size} bytes of the ${bytes} its header gives`,
      `A copy or a restore stopped part way. Restore the whole file from a backup (with no spool running), or move it aside (mv ${path} ${path}.bad) and start afresh.`,
    )
}

/** `PRAGMA quick_check`: the b-trees' pages, cells and order, without comparing indexes to their tables. */
function check(db: Database, path: string): void {
  const problem = db.query<{ quick_check: string }, []>("PRAGMA quick_check(1)").get()?.quick_check ?? "ok"
  if (problem === "ok") return
  const found = problem.replace(/^\*\*\* in database \w+ \*\*\*\s*/, "").replace(/\s+/g, " ")
  throw new StoreCorruptError(
    `the store ${path} is damaged (SQLite's check: ${found}); nothing was written to it`,
    damaged(path),
  )
}

function version(db: Database): number {
  return db.query<{ user_version: number }, []>("PRAGMA user_version").get()?.user_version ?? 0
}

/**
 * The tables migrations up to `n` leave: those they create, less those they drop, by their last name (a table
 * rebuilt is created under another name and renamed). A store of version n that lacks one was damaged.
 */
function tables(n: number): string[] {
  const left = new Set<string>()
  for (const m of MIGRATIONS.slice(0, n))
    for (const [, op, name, to] of m.matchAll(
      /(CREATE TABLE|DROP TABLE|ALTER TABLE) (\w+)(?: RENAME TO (\w+))?/g,
    )) {
      if (op === "CREATE TABLE") left.add(name!)
      else if (op === "DROP TABLE") left.delete(name!)
      else if (to) {
        left.delete(name!)
        left.add(to)
      }
    }
  return [...left]
}

/** Refuses a schema that is not the one its version says: a table gone, or a database that is not a store. */
function schema(db: Database, path: string, v: number): void {
  const have = new Set(
    db
      .query<{ name: string }, []>("SELECT name FROM sqlite_master WHERE type = 'table'")
      .all()
      .map((t) => t.name),
  )
  if (v === 0 && have.size > 0)
    throw new StoreError(
      `${path} is a SQLite database, but not a spool store (it has the tables ${[...have].slice(0, 5).join(", ")})`,
      "Give --home (or SPOOL_HOME) another directory.",
    )
  const missing = tables(v).filter((t) => !have.has(t))
  if (missing.length > 0)
    throw new StoreCorruptError(
      `the store ${path} is damaged: its schema (version ${v}) lacks the table${missing.length > 1 ? "s" : ""} ${missing.join(", ")}`,
      damaged(path),
    )
}

function migrate(db: Database, path: string, writable: boolean): void {
  const tooNew = (v: number) =>
    new StoreError(
      `the store ${path} was written by a newer spool (schema ${v}, this one knows ${MIGRATIONS.length})`,
      "Upgrade spool, or point --home at another directory.",
    )
  const v = version(db)
  if (v > MIGRATIONS.length) throw tooNew(v)
  schema(db, path, v)
  if (v === MIGRATIONS.length) return
  if (!writable)
    throw new StoreError(
      `the store ${path} has schema ${v}, which this spool upgrades to ${MIGRATIONS.length}, but it is read-only`,
      `Make it and its directory writable once (chmod u+w ${path} ${dirname(path)}) and run \`spool status\`: the upgrade keeps every item.`,
    )
  // read the version again under the write lock: another process may have migrated meanwhile
  db.transaction(() => {
    const current = version(db)
    if (current > MIGRATIONS.length) throw tooNew(current)
    for (let i = current; i < MIGRATIONS.length; i++) db.run(MIGRATIONS[i] as string)
    db.run(`PRAGMA user_version = ${MIGRATIONS.length}`)
  }).immediate()
}
