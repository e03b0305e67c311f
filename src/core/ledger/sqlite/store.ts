/** The ledger: the only module that writes SQL. Every state change is one synchronous transaction. */
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
import { StoreCorruptError, StoreError, UsageError, type ErrorClass } from "../../base/errors.ts"
import * as states from "../states.ts"
import type { RunState, State } from "../states.ts"
import type { Checkpoint, RemoteBatch, SourceBatch } from "../../../plugins/api/define.ts"
import type { Paid } from "../../job/pricing.ts"

/** What the ledger keeps of a provider batch's state. */
export type RemoteView = Pick<
  RemoteBatch,
  "id" | "status" | "phase" | "outcome" | "counts" | "files" | "error"
>

/** Migrations, in order; `PRAGMA user_version` is the number applied. Never edit one that has shipped. */
const MIGRATIONS = [
  `
  CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    job TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    resume TEXT NOT NULL,
    reason TEXT,
    ingested INTEGER NOT NULL DEFAULT 0,
    ingest_owner TEXT,
    ingest_expires INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER
  );
  CREATE INDEX runs_name ON runs (name, id);

  CREATE TABLE inputs (
    run_id INTEGER NOT NULL REFERENCES runs (id),
    idx INTEGER NOT NULL,
    path TEXT NOT NULL,
    format TEXT NOT NULL,
    checkpoint TEXT,
    rows INTEGER NOT NULL DEFAULT 0,
    problems INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, idx)
  );

  CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id),
    input INTEGER NOT NULL,
    key TEXT NOT NULL,
    row INTEGER NOT NULL,
    source_id TEXT,
    data TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at INTEGER,
    lease_owner TEXT,
    lease_expires INTEGER,
    output TEXT,
    error_class TEXT,
    error TEXT,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL,
    UNIQUE (run_id, input, key)
  );
  CREATE INDEX items_state ON items (run_id, state, id);

  CREATE TABLE attempts (
    id INTEGER PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items (id),
    run_id INTEGER NOT NULL,
    n INTEGER NOT NULL,
    owner TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    outcome TEXT,
    error_class TEXT,
    error TEXT,
    http_status INTEGER,
    input_tokens INTEGER,
    output_tokens INTEGER,
    latency_ms INTEGER
  );
  CREATE INDEX attempts_item ON attempts (item_id, n);
  CREATE INDEX attempts_run_ended ON attempts (run_id, ended_at);
  CREATE INDEX attempts_errors ON attempts (run_id, error_class) WHERE error_class IS NOT NULL;

  CREATE TABLE problems (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id),
    input INTEGER NOT NULL,
    file TEXT NOT NULL,
    line INTEGER NOT NULL,
    reason TEXT NOT NULL,
    excerpt TEXT NOT NULL
  );
  CREATE INDEX problems_run ON problems (run_id, input, line);
  `,
  // 2: input tokens served from the provider's prompt cache (a part of input_tokens, billed lower)
  `
  ALTER TABLE items ADD COLUMN cached_input_tokens INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE attempts ADD COLUMN cached_input_tokens INTEGER;
  `,
  // 3: batch mode. A batch row is the submission intent (DESIGN §4 rule 3); an item in a batch knows its batch,
  // its line in the request file and the bytes of that line (its exact request, replayed on retry). Tokens paid at
  // the batch price are kept apart, so cost stays computed at read time.
  `
  CREATE TABLE batches (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id),
    tag TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    provider_id TEXT,
    status TEXT,
    phase TEXT,
    outcome TEXT,
    count INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    total INTEGER,
    done INTEGER,
    failed INTEGER,
    files TEXT,
    requests TEXT NOT NULL,
    output TEXT,
    errors TEXT,
    error TEXT,
    error_class TEXT,
    lines INTEGER NOT NULL DEFAULT 0,
    polls INTEGER NOT NULL DEFAULT 0,
    next_at INTEGER,
    created_at INTEGER NOT NULL,
    submitted_at INTEGER,
    ended_at INTEGER,
    finished_at INTEGER
  );
  CREATE INDEX batches_run ON batches (run_id, state);
  ALTER TABLE items ADD COLUMN batch_id INTEGER;
  ALTER TABLE items ADD COLUMN batch_line INTEGER;
  ALTER TABLE items ADD COLUMN batch_offset INTEGER;
  ALTER TABLE items ADD COLUMN batch_bytes INTEGER;
  ALTER TABLE items ADD COLUMN batch_input_tokens INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE items ADD COLUMN batch_output_tokens INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE items ADD COLUMN batch_cached_tokens INTEGER NOT NULL DEFAULT 0;
  CREATE INDEX items_batch ON items (batch_id) WHERE batch_id IS NOT NULL;
  ALTER TABLE attempts ADD COLUMN batch_id INTEGER;
  ALTER TABLE runs ADD COLUMN queue_tokens INTEGER;
  ALTER TABLE runs ADD COLUMN queue_requests INTEGER;
  ALTER TABLE runs ADD COLUMN batch_owner TEXT;
  ALTER TABLE runs ADD COLUMN batch_expires INTEGER;
  ALTER TABLE runs ADD COLUMN exported_at INTEGER;
  `,
  // 4: counters kept by the ledger itself, so a page over a run of millions of items reads a few rows, never a scan
  // (issue 6). Per run and state: how many items (exact per state), and sums of attempts and tokens (exact summed
  // over a run's rows; their split between states is not kept); per run and 10 s: how many items ended; per run and
  // error class: how many attempts failed so, with the first example. Triggers count every change but the batch
  // path's (into or out of queued and submitted: Store counts those per statement, see \`shift\`), and item inserts,
  // which ingest counts per source batch: a trigger per row there cost a third of batch mode's throughput.
  `
  CREATE TABLE tallies (
    run_id INTEGER NOT NULL,
    state TEXT NOT NULL,
    n INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cached_input_tokens INTEGER NOT NULL DEFAULT 0,
    batch_input_tokens INTEGER NOT NULL DEFAULT 0,
    batch_output_tokens INTEGER NOT NULL DEFAULT 0,
    batch_cached_tokens INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, state)
  ) WITHOUT ROWID;
  INSERT INTO tallies
    SELECT run_id, state, count(*), sum(attempts), sum(input_tokens), sum(output_tokens), sum(cached_input_tokens),
    sum(batch_input_tokens), sum(batch_output_tokens), sum(batch_cached_tokens) FROM items GROUP BY run_id, state;
  CREATE TRIGGER items_tally AFTER UPDATE OF state, attempts, input_tokens, output_tokens, cached_input_tokens,
    batch_input_tokens, batch_output_tokens, batch_cached_tokens ON items
    WHEN old.state NOT IN ('queued', 'submitted') AND new.state NOT IN ('queued', 'submitted')
  BEGIN
    UPDATE tallies SET n = n - 1, attempts = attempts - old.attempts, input_tokens = input_tokens - old.input_tokens,
      output_tokens = output_tokens - old.output_tokens,
      cached_input_tokens = cached_input_tokens - old.cached_input_tokens,
      batch_input_tokens = batch_input_tokens - old.batch_input_tokens,
      batch_output_tokens = batch_output_tokens - old.batch_output_tokens,
      batch_cached_tokens = batch_cached_tokens - old.batch_cached_tokens
      WHERE run_id = old.run_id AND state = old.state;
    INSERT INTO tallies VALUES (new.run_id, new.state, 1, new.attempts, new.input_tokens, new.output_tokens,
      new.cached_input_tokens, new.batch_input_tokens, new.batch_output_tokens, new.batch_cached_tokens)
      ON CONFLICT (run_id, state) DO UPDATE SET n = n + 1, attempts = attempts + excluded.attempts,
      input_tokens = input_tokens + excluded.input_tokens, output_tokens = output_tokens + excluded.output_tokens,
      cached_input_tokens = cached_input_tokens + excluded.cached_input_tokens,
      batch_input_tokens = batch_input_tokens + excluded.batch_input_tokens,
      batch_output_tokens = batch_output_tokens + excluded.batch_output_tokens,
      batch_cached_tokens = batch_cached_tokens + excluded.batch_cached_tokens;
  END;

  CREATE TABLE progress (
    run_id INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, bucket)
  ) WITHOUT ROWID;
  INSERT INTO progress
    SELECT run_id, updated_at / 10000, sum(state = 'completed'), sum(state <> 'completed') FROM items
    WHERE state IN ('completed', 'failed', 'needs_review') GROUP BY 1, 2;
  CREATE TRIGGER items_progress AFTER UPDATE OF state ON items
    WHEN new.state IN ('completed', 'failed', 'needs_review')
    AND old.state NOT IN ('completed', 'failed', 'needs_review', 'submitted')
  BEGIN
    INSERT INTO progress VALUES (new.run_id, new.updated_at / 10000, new.state = 'completed', new.state <> 'completed')
      ON CONFLICT (run_id, bucket) DO UPDATE SET completed = completed + excluded.completed,
      failed = failed + excluded.failed;
  END;

  CREATE TABLE error_tallies (
    run_id INTEGER NOT NULL,
    class TEXT NOT NULL,
    n INTEGER NOT NULL,
    attempt_id INTEGER NOT NULL,
    PRIMARY KEY (run_id, class)
  ) WITHOUT ROWID;
  INSERT INTO error_tallies
    SELECT run_id, error_class, count(*), min(id) FROM attempts WHERE error_class IS NOT NULL
    GROUP BY run_id, error_class;
  CREATE TRIGGER attempts_error_insert AFTER INSERT ON attempts WHEN new.error_class IS NOT NULL
  BEGIN
    INSERT INTO error_tallies VALUES (new.run_id, new.error_class, 1, new.id)
      ON CONFLICT (run_id, class) DO UPDATE SET n = n + 1;
  END;
  CREATE TRIGGER attempts_error_update AFTER UPDATE OF error_class ON attempts
    WHEN new.error_class IS NOT NULL AND old.error_class IS NULL
  BEGIN
    INSERT INTO error_tallies VALUES (new.run_id, new.error_class, 1, new.id)
      ON CONFLICT (run_id, class) DO UPDATE SET n = n + 1;
  END;
  CREATE INDEX attempts_failed ON attempts (run_id, ended_at) WHERE error_class IS NOT NULL;
  `,
]

export interface Run {
  id: number
  name: string
  state: RunState
  job: string
  fingerprint: string
  resume: string
  reason: string | null
  ingested: number
  created_at: number
  updated_at: number
  finished_at: number | null
  /** Queue limits learned from the provider (batch mode): enqueued tokens, and requests. */
  queue_tokens: number | null
  queue_requests: number | null
  exported_at: number | null
}

export interface Input {
  run_id: number
  idx: number
  path: string
  format: string
  checkpoint: string | null
  rows: number
  problems: number
  duplicates: number
  done: number
}

/** An item as the runner needs it to make a request. `attempt` is this attempt's number (1 for the first). */
export interface Claimed {
  id: number
  key: string
  data: string
  attempt: number
}

export interface Item {
  id: number
  run_id: number
  input: number
  key: string
  row: number
  source_id: string | null
  data: string
  state: State
  attempts: number
  next_at: number | null
  output: string | null
  error_class: string | null
  error: string | null
  input_tokens: number
  output_tokens: number
  cached_input_tokens: number
  batch_id: number | null
  batch_line: number | null
  batch_input_tokens: number
  batch_output_tokens: number
  batch_cached_tokens: number
  path: string
}

/** How one attempt ended, as the runner hands it to the store. */
export interface Outcome {
  item: number
  /** The attempt's number, as claimed. */
  attempt: number
  to: Extract<State, "completed" | "retry_wait" | "failed" | "pending" | "needs_review">
  /** ok, retry, failed, needs_review, interrupted, paused */
  label: string
  output?: string
  errorClass?: ErrorClass
  error?: string
  status?: number
  nextAt?: number
  inputTokens?: number
  outputTokens?: number
  cachedTokens?: number
  latencyMs: number
  endedAt: number
}

/** A provider batch as the ledger keeps it: from the intent committed before `create` to the last line applied. */
export interface Batch {
  id: number
  run_id: number
  tag: string
  /** intent → submitted → downloading → applying → done; or abandoned (never reached the provider, or refused). */
  state: BatchState
  provider_id: string | null
  status: string | null
  phase: string | null
  outcome: string | null
  count: number
  bytes: number
  tokens: number
  total: number | null
  done: number | null
  failed: number | null
  files: string | null
  requests: string
  output: string | null
  errors: string | null
  error: string | null
  error_class: string | null
  lines: number
  polls: number
  next_at: number | null
  created_at: number
  submitted_at: number | null
  ended_at: number | null
  finished_at: number | null
}

export type BatchState = "intent" | "submitted" | "downloading" | "applying" | "done" | "abandoned"

/** An item that may go into the next batch, with where its last request is, when it has been in a batch. */
export interface Packable {
  id: number
  key: string
  data: string
  attempts: number
  batch_id: number | null
  batch_offset: number | null
  batch_bytes: number | null
}

/** How one line of an ended batch settles its item. */
export interface LineOutcome {
  item: number
  to: Extract<State, "completed" | "pending" | "failed" | "needs_review">
  label: string
  output?: string | undefined
  errorClass?: ErrorClass | undefined
  error?: string | undefined
  status?: number | undefined
  inputTokens?: number | undefined
  outputTokens?: number | undefined
  cachedTokens?: number | undefined
  endedAt: number
}

export interface Summary {
  counts: Record<State, number>
  total: number
  attempts: number
  inputTokens: number
  outputTokens: number
  cachedTokens: number
  /** The part of the tokens paid at the batch price. */
  batch: { inputTokens: number; outputTokens: number; cachedTokens: number }
  errors: { class: string; count: number; example: string; key: string }[]
  problems: { count: number; duplicates: number; sample: { file: string; line: number; reason: string }[] }
  firstStarted: number | null
  lastEnded: number | null
  recentCompleted: number
  recentWindowMs: number
}

const ZERO_COUNTS = (): Record<State, number> =>
  Object.fromEntries(states.STATES.map((s) => [s, 0])) as Record<State, number>

export const DB_FILE = "spool.db"

/**
 * Stores up to this size are checked (`PRAGMA quick_check`) when opened for writing, so that a damaged store is
 * refused before a run writes to it: ~3 ms per MB with the file in the page cache, up to ~25 ms per MB from disk
 * (docs/BENCHMARKS.md, "Opening the store"). A larger store is checked page by page, by SQLite, as it is read.
 */
export const CHECK_BYTES = 16 * 1024 * 1024

export interface OpenOptions {
  /** The durability level of every commit but the batch lines' (see `apply`). */
  synchronous?: "FULL" | "NORMAL"
  /**
   * `read`: the caller only reads (status, results, runs), so a store that cannot be written — the file, its
   * directory — is opened read-only instead of refused. Default `write`.
   */
  access?: "read" | "write"
}

/** Opens (creating if needed) the store under `home`, with the durability pragmas of DESIGN §4 rule 6. */
export function open(home: string, options: OpenOptions = {}): Store {
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
    // a read goes on past a damaged page (see `items`); a write is refused before it lands beside one
    if (options.access !== "read" && !fresh && statSync(path).size <= CHECK_BYTES) check(db, path)
    migrate(db, path, true)
    return new Store(db, path, synchronous)
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
function reader(home: string, path: string): Store {
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
    return new Store(db, path, "FULL")
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

const READERS = "`spool status`, `results` and `runs` can read the store as it is."

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

/** The damaged store's hint: what can still be done. */
function damaged(path: string): string {
  const home = dirname(path)
  return `Restore it from a backup (with no spool running), or move it aside (mv ${path} ${path}.bad) and start afresh. Before that, \`spool results --home ${home} > saved.jsonl\` keeps every item that can still be read.`
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

/** The tables migrations up to `n` create: a store of version n that lacks one was damaged. */
function tables(n: number): string[] {
  return MIGRATIONS.slice(0, n).flatMap((m) =>
    [...m.matchAll(/CREATE TABLE (\w+)/g)].map((t) => t[1] as string),
  )
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

/**
 * SQLite's errors as the store's own, naming the file: a damaged page (at any read, at any time) is a
 * `StoreCorruptError`; a store that cannot be written, a full disk, an I/O error, a lock held too long, a
 * `StoreError`. Anything else — a constraint, a syntax error — is a bug and stays as it is.
 */
function failure(err: unknown, path: string): unknown {
  if (!(err instanceof SQLiteError)) return err
  const code = err.code ?? ""
  const said = `${err.message} (${code})`
  if (/^SQLITE_(CORRUPT|NOTADB)/.test(code))
    return new StoreCorruptError(`the store ${path} is damaged: ${said}`, damaged(path), { cause: err })
  if (code.startsWith("SQLITE_READONLY"))
    return new StoreError(
      `cannot write to the store ${path}: ${said}`,
      `Make the file, its -wal and -shm, and ${dirname(path)} writable (chmod u+w), or run spool as the user who owns them. ${READERS}`,
      { cause: err },
    )
  if (code.startsWith("SQLITE_FULL"))
    return new StoreError(
      `the disk holding the store ${path} is full`,
      "Free some space, then resume: every commit before this one is kept.",
      { cause: err },
    )
  if (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED"))
    return new StoreError(
      `the store ${path} stayed locked by another process for 10 s`,
      "Another spool (or a tool) holds a long write on it; wait for it, or stop it.",
      { cause: err },
    )
  if (code.startsWith("SQLITE_IOERR") || code.startsWith("SQLITE_CANTOPEN"))
    return new StoreError(
      `cannot read or write the store ${path}: ${said}`,
      `Check the disk and the permissions of ${dirname(path)} and its files.`,
      { cause: err },
    )
  return err
}

export class Store {
  readonly db: Database
  readonly path: string
  private readonly q: ReturnType<typeof prepare>

  constructor(
    db: Database,
    path: string,
    /** The durability level of every commit but the batch lines' (see `apply`). */
    readonly synchronous: "FULL" | "NORMAL" = "FULL",
  ) {
    this.db = db
    this.path = path
    this.q = prepare(db)
  }

  close(): void {
    this.db.close()
  }

  // ---- runs

  latestRun(name: string): Run | null {
    return this.q.latestRun.get(name)
  }

  run(id: number): Run | null {
    return this.q.runById.get(id)
  }

  /** A run by name (its latest) or by numeric id. */
  findRun(ref: string): Run | null {
    return this.latestRun(ref) ?? (/^\d+$/.test(ref) ? this.run(Number(ref)) : null)
  }

  runs(): Run[] {
    return this.q.runs.all()
  }

  /**
   * Creates a run, unless another process created a run of this name after the caller last looked (`seen`:
   * the id of the latest such run then, or null). Workers started together thus share one run.
   */
  createRun(
    name: string,
    job: string,
    fingerprint: string,
    resume: string,
    inputs: { path: string; format: string }[],
    seen: number | null = null,
  ): { run: Run; created: boolean } {
    const now = Date.now()
    return this.db
      .transaction(() => {
        const latest = this.latestRun(name)
        if (latest && latest.id !== seen) return { run: latest, created: false }
        const run = this.q.insertRun.get(name, job, fingerprint, resume, now, now)
        if (!run) throw new StoreError("the run could not be created")
        inputs.forEach((input, idx) => this.q.insertInput.run(run.id, idx, input.path, input.format))
        return { run, created: true }
      })
      .immediate()
  }

  setRunState(id: number, state: RunState, reason: string | null = null): void {
    const finished = state === "completed" || state === "completed_with_failures" || state === "cancelled"
    this.q.setRunState.run(state, reason, Date.now(), finished ? Date.now() : null, id)
  }

  setResume(id: number, resume: string): void {
    this.q.setResume.run(resume, id)
  }

  inputs(run: number): Input[] {
    return this.q.inputs.all(run)
  }

  /**
   * Appends a file to a run's inputs at the next index (a new match of a glob: the indexes of the others, and so
   * their items' ids, never move). A path already an input of the run is kept as it is. Returns its input.
   */
  addInput(run: number, path: string, format: string): Input {
    return this.db
      .transaction(() => {
        this.q.addInput.run(run, path, format)
        const input = this.q.inputs.all(run).find((i) => i.path === path)
        if (!input) throw new StoreError(`the input ${path} could not be added`)
        return input
      })
      .immediate()
  }

  // ---- ingestion

  /**
   * Takes (or renews) the right to ingest a run's inputs, so that two workers never read the same file into
   * the ledger at once. Succeeds when nobody holds it, the holder is us, or the holder's lease has lapsed.
   */
  leaseIngest(run: number, owner: string, ms: number, dead: (owner: string) => boolean): boolean {
    return this.lease("ingest", run, owner, ms, dead)
  }

  /**
   * A run-wide lease (ingestion, or driving its batches): taken when nobody holds it, the holder is `owner`, or the
   * holder's lease has lapsed or its process is known dead.
   */
  private lease(
    kind: "ingest" | "batch",
    run: number,
    owner: string,
    ms: number,
    dead: (owner: string) => boolean,
  ): boolean {
    const [get, set] =
      kind === "ingest"
        ? [this.q.ingestLease, this.q.setIngestLease]
        : [this.q.batchLease, this.q.setBatchLease]
    return this.db
      .transaction(() => {
        const row = get.get(run)
        if (!row) return false
        const now = Date.now()
        const free = row.owner === null || row.owner === owner || (row.expires ?? 0) < now || dead(row.owner)
        if (!free) return false
        set.run(owner, now + ms, run)
        return true
      })
      .immediate()
  }

  /** Stores one source batch: its rows as pending items, its problems, and its checkpoint, atomically. */
  ingest(
    run: number,
    input: Input,
    batch: SourceBatch,
    last: boolean,
  ): { added: number; duplicates: number } {
    const now = Date.now()
    return this.db
      .transaction(() => {
        let added = 0
        let duplicates = 0
        const { rows } = batch
        // many rows per statement: the per-row cost of crossing into SQLite dominates a bulk ingest
        for (let i = 0; i < rows.length; i += INSERT_ROWS) {
          const chunk = rows.slice(i, i + INSERT_ROWS)
          const params: SQLQueryBindings[] = []
          for (const row of chunk) {
            params.push(row.key, row.line, row.id ?? null, row.raw ?? JSON.stringify(row.data))
          }
          const statement =
            chunk.length === INSERT_ROWS ? this.q.insertItems : insertItems(this.db, chunk.length)
          const changes = statement.run(run, input.idx, now, ...params).changes
          added += changes
          if (changes === chunk.length) continue
          for (const row of chunk) {
            // the same row read again (--reingest, or a resumed batch) is not a duplicate
            if (this.q.itemRow.get(run, input.idx, row.key)?.row === row.line) continue
            duplicates++
            this.q.insertProblem.run(
              run,
              input.idx,
              input.path,
              row.line,
              `duplicate id "${row.key}" (the first row with this id is kept)`,
              (row.raw ?? JSON.stringify(row.data)).slice(0, 200),
            )
          }
        }
        if (added > 0) this.shift(run, { pending: added })
        for (const p of batch.problems) {
          this.q.insertProblem.run(run, input.idx, input.path, p.line, p.reason, p.excerpt)
        }
        this.q.advanceInput.run(
          JSON.stringify(batch.checkpoint),
          added,
          batch.problems.length + duplicates,
          duplicates,
          last ? 1 : 0,
          run,
          input.idx,
        )
        return { added, duplicates }
      })
      .immediate()
  }

  /** Keeps the latest job of a resumed run (same fingerprint: only limits and pricing can differ). */
  updateJob(run: number, job: string): void {
    this.q.updateJob.run(job, Date.now(), run)
  }

  markIngested(run: number): void {
    this.q.markIngested.run(run)
  }

  /** Makes the next ingester read every input on from its checkpoint: rows appended since are picked up. */
  reopenIngest(run: number): void {
    this.q.unmarkIngested.run(run)
  }

  /** Forgets a run's ingestion so `--reingest` can read its inputs again; items already done are kept. */
  resetIngest(run: number): void {
    this.db
      .transaction(() => {
        this.q.resetInputs.run(run)
        this.q.clearProblems.run(run)
        this.q.unmarkIngested.run(run)
      })
      .immediate()
  }

  static checkpoint(input: Input): Checkpoint | undefined {
    return input.checkpoint ? (JSON.parse(input.checkpoint) as Checkpoint) : undefined
  }

  // ---- claims and outcomes

  /**
   * Puts back to `pending` every `running` item whose lease has lapsed or whose owner is known dead. The
   * attempt stays counted and is closed as `lost`. Returns how many came back.
   */
  recover(run: number, dead: (owner: string) => boolean): number {
    const now = Date.now()
    return this.db
      .transaction(() => {
        let n = 0
        for (const item of this.q.leased.all(run)) {
          if ((item.lease_expires ?? 0) >= now && !dead(item.lease_owner ?? "")) continue
          states.check("running", "pending")
          this.q.release.run(now, item.id)
          this.q.loseAttempt.run(now, item.id)
          n++
        }
        return n
      })
      .immediate()
  }

  /**
   * Records finished attempts and claims up to `limit` more, in one transaction: write-before-call (rule 1)
   * and commit-before-count (rule 2) share each fsync. Due retries come first, then pending items in
   * ledger order. Outcomes for items whose lease was lost to another worker are recorded on the attempt only.
   */
  step(run: number, owner: string, outcomes: Outcome[], limit: number, leaseMs: number): Claimed[] {
    return this.db
      .transaction(() => {
        this.record(outcomes, owner)
        if (limit <= 0) return []
        const now = Date.now()
        const picked = this.q.dueRetries.all(run, now, limit)
        if (picked.length < limit) picked.push(...this.q.pendingItems.all(run, limit - picked.length))
        if (picked.length === 0) return []
        for (const item of picked) states.check(item.state, "running")
        // set-based: one statement claims them all and one opens their attempts, however many there are
        const ids = JSON.stringify(picked.map((p) => p.id))
        const claimed = this.q.claim.all(owner, now + leaseMs, now, ids)
        claimed.sort((a, b) => a.id - b.id)
        this.q.openAttempts.run(JSON.stringify(claimed.map((c) => [c.id, c.attempt])), run, owner, now)
        return claimed
      })
      .immediate()
  }

  private record(outcomes: Outcome[], owner: string): void {
    if (outcomes.length === 0) return
    for (const o of outcomes) states.check("running", o.to)
    const json = JSON.stringify(outcomes)
    this.q.endAttempts.run(json)
    this.q.finish.run(json, owner)
  }

  /** Extends the leases of every item this owner holds. */
  renew(run: number, owner: string, leaseMs: number): void {
    this.q.renew.run(Date.now() + leaseMs, run, owner)
  }

  /** When the earliest waiting retry falls due, or null when none waits. */
  nextRetryAt(run: number): number | null {
    return this.q.nextRetry.get(run)?.at ?? null
  }

  /** Moves every failed (or needs_review) item back to pending; attempts are kept. */
  retry(run: number, from: Extract<State, "failed" | "needs_review">): number {
    states.check(from, "pending")
    return this.db
      .transaction(() => {
        const n = this.q.retryItems.run(Date.now(), run, from).changes
        if (n > 0) this.q.setRunState.run("running", null, Date.now(), null, run)
        return n
      })
      .immediate()
  }

  // ---- batches (DESIGN §4 rules 3 and 4)

  /** The right to pack, submit, poll and apply a run's batches: one process at a time, as with ingestion. */
  leaseBatches(run: number, owner: string, ms: number, dead: (owner: string) => boolean): boolean {
    return this.lease("batch", run, owner, ms, dead)
  }

  /** Who holds the batch lease, while it is held. */
  batchHolder(run: number): string | null {
    const row = this.q.batchLease.get(run)
    return row?.owner && (row.expires ?? 0) >= Date.now() ? row.owner : null
  }

  releaseBatches(run: number, owner: string): void {
    this.q.releaseBatchLease.run(run, owner)
  }

  /** Whether any item of the run is not yet finished (pending, in flight or waiting to retry): one index probe. */
  hasOpen(run: number): boolean {
    return this.q.hasOpen.get(run) !== null
  }

  /** The most input and output tokens one attempt of the run has used: a bound for what the next one will. */
  largestAttempt(run: number): { input: number; output: number } | null {
    const row = this.q.largestAttempt.get(run)
    return row && row.input !== null ? { input: row.input, output: row.output ?? 0 } : null
  }

  /** The processes that hold a lease on the run: items in flight, ingestion, batches. */
  leaseHolders(run: number): string[] {
    return this.q.leaseHolders.all(run).map((r) => r.owner)
  }

  /** Items that may go into the next batch: due retries first, then pending ones, in ledger order. */
  packable(run: number, limit: number, now = Date.now()): Packable[] {
    const picked = this.q.packableRetries.all(run, now, limit)
    if (picked.length < limit) picked.push(...this.q.packablePending.all(run, limit - picked.length))
    return picked
  }

  /**
   * Commits a submission intent: the batch row, and its items claimed as `queued` with their line and its bytes
   * in the request file, each with a new attempt. Items whose request could not be made at all (`failed`) end
   * here, with their attempt. Throws, committing nothing, if any item is no longer claimable.
   */
  intend(
    run: number,
    intent: { tag: string; requests: string; bytes: number; tokens: number },
    lines: { id: number; line: number; offset: number; bytes: number }[],
    failed: { id: number; errorClass: ErrorClass; error: string }[],
    owner: string,
  ): Batch | null {
    const now = Date.now()
    return this.db
      .transaction(() => {
        let batch: Batch | null = null
        if (lines.length > 0) {
          batch = this.q.insertBatch.get(
            run,
            intent.tag,
            lines.length,
            intent.bytes,
            intent.tokens,
            intent.requests,
            now,
          )
          if (!batch) throw new StoreError("the batch could not be recorded")
          states.check("pending", "queued")
          states.check("retry_wait", "queued")
          const json = JSON.stringify(lines)
          const fromPending = this.q.queueItems.run(batch.id, now, json, "pending").changes
          const fromRetry = this.q.queueItems.run(batch.id, now, json, "retry_wait").changes
          const claimed = fromPending + fromRetry
          this.shift(
            run,
            { pending: -fromPending, retry_wait: -fromRetry, queued: claimed },
            { attempts: claimed },
          )
          if (claimed !== lines.length)
            throw new StoreError(
              `${lines.length - claimed} item(s) of batch ${intent.tag} were claimed elsewhere`,
            )
        }
        if (failed.length > 0) {
          states.check("queued", "failed")
          const json = JSON.stringify(failed)
          const n = this.q.failUnpackable.run(now, json).changes
          if (n !== failed.length)
            throw new StoreError("an item that could not be packed was claimed elsewhere")
          this.q.closeUnpackable.run(run, owner, now, json)
        }
        return batch
      })
      .immediate()
  }

  /** The provider has the batch: its items are `submitted`. */
  submitted(batch: number, remote: RemoteView): void {
    const now = Date.now()
    this.db
      .transaction(() => {
        states.check("queued", "submitted")
        this.q.submitBatch.run(remote.id, remote.status, remote.phase, now, batch)
        const n = this.q.submitItems.run(now, batch).changes
        this.shift(this.runOfBatch(batch), { queued: -n, submitted: n })
        this.observe(batch, remote, null)
      })
      .immediate()
  }

  /**
   * The batch never reached the provider, or the provider refused the whole of it (a full queue): its items go back
   * to pending as if never sent; their attempt is taken back.
   */
  abandon(batch: number, why: { errorClass: string; error: string }): number {
    const now = Date.now()
    return this.db
      .transaction(() => {
        const n = this.unrun(batch, now)
        this.q.abandonBatch.run(why.error, why.errorClass, now, batch)
        return n
      })
      .immediate()
  }

  /** Items of a batch still `queued` or `submitted` go back to pending, their attempt taken back (it never ran). */
  private unrun(batch: number, now: number): number {
    states.check("submitted", "pending")
    states.check("queued", "pending")
    const queued = this.q.unrunItems.run(now, batch, "queued").changes
    const submitted = this.q.unrunItems.run(now, batch, "submitted").changes
    const n = queued + submitted
    if (n > 0)
      this.shift(
        this.runOfBatch(batch),
        { queued: -queued, submitted: -submitted, pending: n },
        { attempts: -n },
      )
    return n
  }

  private runOfBatch(batch: number): number {
    const row = this.q.batchById.get(batch)
    if (!row) throw new StoreError(`batch ${batch} is not in the ledger`)
    return row.run_id
  }

  /**
   * Counts, in the tallies, items that one statement moved between states (\`moved\`: the change of each state's
   * count), and what it added to their attempts and tokens (\`added\`, counted on the first state named). The batch
   * path counts itself so (see migration 4); everything else is counted by the \`items_tally\` trigger.
   */
  private shift(run: number, moved: Partial<Record<State, number>>, added: Partial<Tally> = {}): void {
    let first = true
    for (const [state, n] of Object.entries(moved)) {
      if (n === 0 && !first) continue
      const a = { ...ZERO_TALLY(), ...(first ? added : {}) }
      first = false
      this.q.tallyAdd.run(
        run,
        state,
        n,
        a.attempts,
        a.input_tokens,
        a.output_tokens,
        a.cached_input_tokens,
        a.batch_input_tokens,
        a.batch_output_tokens,
        a.batch_cached_tokens,
      )
    }
  }

  /** What the provider said of the batch; `nextAt` is when to ask again. An ended batch moves on to downloading. */
  observe(batch: number, remote: RemoteView, nextAt: number | null): void {
    const ended = remote.phase === "ended"
    this.q.observeBatch.run(
      remote.status,
      remote.phase,
      remote.outcome ?? null,
      remote.counts?.total ?? null,
      remote.counts?.done ?? null,
      remote.counts?.failed ?? null,
      remote.files ? JSON.stringify(remote.files) : null,
      remote.error?.message ?? null,
      remote.error?.errorClass ?? null,
      nextAt,
      ended ? Date.now() : null,
      batch,
    )
  }

  /** Sets when to look at a batch again, with the error that made us wait, if any. */
  later(batch: number, nextAt: number, error: string | null = null): void {
    this.q.batchLater.run(nextAt, error, batch)
  }

  /** The raw result files are on disk: apply them next. */
  downloaded(batch: number, files: { output?: string | undefined; errors?: string | undefined }): void {
    this.q.downloadedBatch.run(files.output ?? null, files.errors ?? null, batch)
  }

  /**
   * Settles items by their lines, in one transaction, recording each line as the item's attempt (a batch item's
   * attempt row is written when its line comes back; until then `items.attempts` alone counts it). Lines of items
   * already settled (a re-apply after a crash) are skipped.
   */
  apply(batch: number, outcomes: LineOutcome[], owner: string): void {
    if (outcomes.length === 0) return
    for (const o of outcomes) states.check("submitted", o.to)
    const now = Date.now()
    // Without an fsync of its own (ARCHITECTURE.md, "Batch mode"): the lines come from a result file that is already
    // on disk, and a power cut can only lose the last of these commits, never a later one (the WAL is one sequence,
    // and finishBatch syncs it); the batch is then still `applying` and its file is applied again. Set and reset in
    // this one synchronous call, so no other commit of this connection runs in between.
    this.db.run("PRAGMA synchronous = NORMAL")
    try {
      this.db
        .transaction(() => {
          const started = this.q.batchStarted.get(batch)?.at ?? now
          // the tallies and completion buckets of the lines settled, counted here once for the chunk
          const moved: Partial<Record<State, number>> = { submitted: 0 }
          const tokens = { input_tokens: 0, output_tokens: 0, cached_input_tokens: 0 }
          const buckets = new Map<number, { completed: number; failed: number }>()
          let run = 0
          // a statement per line: twice as fast here as one statement over a json_each of the chunk
          for (const o of outcomes) {
            const done = this.q.settleItem.get(
              o.to,
              o.output ?? null,
              o.errorClass ?? null,
              o.error ?? null,
              o.inputTokens ?? 0,
              o.outputTokens ?? 0,
              o.cachedTokens ?? 0,
              o.endedAt,
              o.item,
              batch,
            )
            if (!done) continue
            run = done.run_id
            moved.submitted = (moved.submitted ?? 0) - 1
            moved[o.to] = (moved[o.to] ?? 0) + 1
            tokens.input_tokens += o.inputTokens ?? 0
            tokens.output_tokens += o.outputTokens ?? 0
            tokens.cached_input_tokens += o.cachedTokens ?? 0
            if (states.isFinal(o.to)) {
              const at = Math.floor(o.endedAt / PROGRESS_BUCKET_MS)
              const bucket = buckets.get(at) ?? { completed: 0, failed: 0 }
              if (o.to === "completed") bucket.completed++
              else bucket.failed++
              buckets.set(at, bucket)
            }
            this.q.recordLine.run(
              o.item,
              done.run_id,
              done.attempts,
              owner,
              started,
              o.endedAt,
              o.label,
              o.errorClass ?? null,
              o.error ?? null,
              o.status ?? null,
              o.inputTokens ?? null,
              o.outputTokens ?? null,
              o.cachedTokens ?? null,
              batch,
            )
          }
          if (run === 0) return
          this.shift(run, moved, {
            ...tokens,
            batch_input_tokens: tokens.input_tokens,
            batch_output_tokens: tokens.output_tokens,
            batch_cached_tokens: tokens.cached_input_tokens,
          })
          for (const [at, b] of buckets) this.q.progressAdd.run(run, at, b.completed, b.failed)
        })
        .immediate()
    } finally {
      this.db.run(`PRAGMA synchronous = ${this.synchronous}`)
    }
  }

  /** Every line is applied: items without a line go back to pending, unpaid; the batch is done. */
  finishBatch(batch: number, lines: number): number {
    const now = Date.now()
    return this.db
      .transaction(() => {
        const n = this.unrun(batch, now)
        this.q.finishBatch.run(lines, now, batch)
        return n
      })
      .immediate()
  }

  /** The items a batch still has at the provider, with their attempt numbers. */
  batchItems(batch: number): { id: number; attempts: number }[] {
    return this.q.batchItems.all(batch)
  }

  batch(id: number): Batch | null {
    return this.q.batchById.get(id)
  }

  batches(run: number): Batch[] {
    return this.q.batchesOf.all(run)
  }

  /** A run's live batches and the last `n` that ended, oldest first; and how many it has in all. */
  recentBatches(run: number, n: number): { batches: Batch[]; total: number } {
    return {
      batches: this.q.recentBatches.all(run, n),
      total: this.q.batchCount.get(run)?.n ?? 0,
    }
  }

  /** Batches not yet done or abandoned. */
  liveBatches(run: number): Batch[] {
    return this.q.liveBatches.all(run)
  }

  /** Remembers a queue limit the provider reported (enqueued tokens, or requests). */
  learnQueue(run: number, limit: { tokens?: number | undefined; requests?: number | undefined }): void {
    this.q.learnQueue.run(limit.tokens ?? null, limit.requests ?? null, run)
  }

  markExported(run: number): void {
    this.q.markExported.run(Date.now(), run)
  }

  /** The exact bytes of an item's request line, when its batch's request file is still there. */
  static requestOf(file: string, offset: number, bytes: number): Promise<string> {
    return Bun.file(file)
      .slice(offset, offset + bytes)
      .text()
  }

  // ---- reading

  /** Items per state: the ledger's maintained tallies (a few rows, whatever the run's size). */
  counts(run: number): Record<State, number> {
    return this.tallied(run).counts
  }

  /** A run's tallies: items per state, and the sums of their attempts and tokens over all states. */
  private tallied(run: number): { counts: Record<State, number>; sum: Tally } {
    const counts = ZERO_COUNTS()
    const sum = ZERO_TALLY()
    for (const row of this.q.tallies.all(run)) {
      if (states.isState(row.state)) counts[row.state] = row.n
      for (const k of Object.keys(sum) as (keyof Tally)[]) sum[k] += row[k]
    }
    return { counts, sum }
  }

  /** A run's totals, from maintained tallies and indexed lookups only: as fast for a million items as for ten. */
  summary(run: number, now = Date.now(), windowMs = 60_000): Summary {
    const { counts, sum } = this.tallied(run)
    const problems = this.q.problemTotals.get(run)
    const since = Math.floor((now - windowMs) / PROGRESS_BUCKET_MS)
    const recent = this.q.progressSince.get(run, since)
    const firstStarted = this.q.firstStarted.get(run)?.at ?? null
    return {
      counts,
      total: Object.values(counts).reduce((a, b) => a + b, 0),
      attempts: sum.attempts,
      inputTokens: sum.input_tokens,
      outputTokens: sum.output_tokens,
      cachedTokens: sum.cached_input_tokens,
      batch: {
        inputTokens: sum.batch_input_tokens,
        outputTokens: sum.batch_output_tokens,
        cachedTokens: sum.batch_cached_tokens,
      },
      errors: this.errorClasses(run),
      problems: {
        count: problems?.n ?? 0,
        duplicates: problems?.duplicates ?? 0,
        sample: this.q.problemSample.all(run),
      },
      firstStarted,
      lastEnded: this.q.lastEnded.get(run)?.at ?? null,
      recentCompleted: recent?.completed ?? 0,
      // the buckets summed cover from the start of the first one (or of the run's first attempt, if later) to now
      recentWindowMs: Math.max(1000, now - Math.max(since * PROGRESS_BUCKET_MS, firstStarted ?? 0)),
    }
  }

  /** Error classes of a run's attempts, most frequent first, each with its first example. */
  errorClasses(run: number): Summary["errors"] {
    return this.q.errorClasses.all(run).map((e) => ({
      class: e.class,
      count: e.n,
      example: e.error ?? "",
      key: e.key ?? "",
    }))
  }

  /**
   * Items ended per PROGRESS_BUCKET_MS since `from` (ms), merged into slots of `slotMs`: the completions chart.
   * Reads one row per bucket, so its cost grows with the run's duration, never with its size.
   */
  progress(run: number, from: number, slotMs: number): { at: number; completed: number; failed: number }[] {
    const slot = Math.max(1, Math.round(slotMs / PROGRESS_BUCKET_MS))
    const first = Math.floor(from / PROGRESS_BUCKET_MS)
    return this.q.progressSlots.all(run, first, slot).map((r) => ({
      at: (first + r.slot * slot) * PROGRESS_BUCKET_MS,
      completed: r.completed,
      failed: r.failed,
    }))
  }

  /** When the first item of a run ended (the start of its chart), or null. */
  firstProgress(run: number): number | null {
    const bucket = this.q.firstBucket.get(run)?.bucket
    return bucket === undefined || bucket === null ? null : bucket * PROGRESS_BUCKET_MS
  }

  /** The last `limit` failed attempts of a run, newest first. */
  latestErrors(run: number, limit: number): AttemptError[] {
    return this.q.latestErrors.all(run, limit)
  }

  /** Failed attempts that ended at or after `since` (ms), oldest first: the "new errors" of a live page. */
  errorsSince(run: number, since: number, limit = 50): AttemptError[] {
    return this.q.errorsSince.all(run, since, limit)
  }

  /**
   * A page of a run's items in ledger order after the item id `after`, optionally of one state, each with its
   * attempts. Walks an index from `after`, so any page costs the same.
   */
  page(run: number, o: { state?: State | undefined; after?: number; limit: number }): PagedItem[] {
    const after = o.after ?? 0
    const rows = o.state
      ? this.q.pageOfState.all(run, o.state, after, o.limit)
      : this.q.pageAll.all(run, after, o.limit)
    return rows.map((row) => ({ ...row, attempts_list: this.attemptsOf(row.id) }))
  }

  /** A cheap number that changes whenever any connection commits to the store (PRAGMA data_version). */
  dataVersion(): number {
    return this.db.query<{ data_version: number }, []>("PRAGMA data_version").get()?.data_version ?? 0
  }

  /**
   * Streams a run's items in ledger order, optionally of one state. In a damaged store it goes on past the damage:
   * every item that can still be read is given, then a `StoreCorruptError` names the ids that could not be.
   */
  *items(run: number, state?: State): Generator<Item> {
    const rows = state ? this.q.itemsOfState.iterate(run, state) : this.q.allItems.iterate(run)
    let last = 0
    try {
      for (const row of rows) {
        last = row.id
        yield row
      }
      return
    } catch (err) {
      if (!(failure(err, this.path) instanceof StoreCorruptError)) throw err
    }
    const lost: string[] = []
    let from: number | null = last
    // a damaged table beside the items (inputs, joined) fails every row: past a few damaged parts, the walk stops
    while (from !== null && lost.length < 20) {
      let after: number = from
      try {
        for (const row of this.q.itemsAfter.iterate(after, run, state ?? null)) {
          after = row.id
          yield row
        }
        from = null
        continue
      } catch (err) {
        if (!(failure(err, this.path) instanceof StoreCorruptError)) throw err
      }
      const next = this.reachable(after)
      lost.push(next === null ? `above ${after}` : `${after + 1}-${next - 1}`)
      from = next === null ? null : next - 1
    }
    throw new StoreCorruptError(
      `the store ${this.path} is damaged: the items with ids ${lost.join(", ")}${
        from === null ? " could not be read (every other item of the run was)" : " and more could not be read"
      }`,
      damaged(this.path),
    )
  }

  /**
   * The first id past a damaged part of the items table that a look-up can reach, or null if none is: a seek past
   * `after` by growing steps until one goes through, then back by halves to the nearest one that does.
   */
  private reachable(after: number): number | null {
    const seek = (from: number): { id: number | null } | undefined => {
      try {
        return { id: this.q.idAfter.get(from)?.id ?? null }
      } catch (err) {
        if (!(failure(err, this.path) instanceof StoreCorruptError)) throw err
        return undefined
      }
    }
    let bad = after
    let step = 1
    let good = seek(bad + step)
    while (good === undefined) {
      if (step > Number.MAX_SAFE_INTEGER / 4) return null
      bad += step
      step *= 2
      good = seek(bad + step)
    }
    let from = bad + step
    while (from - bad > 1) {
      const mid = bad + Math.floor((from - bad) / 2)
      const found = seek(mid)
      if (found === undefined) bad = mid
      else [from, good] = [mid, found]
    }
    return good.id
  }

  /** An item's attempts, oldest first. */
  attemptsOf(item: number): AttemptRow[] {
    return this.q.attemptsOf.all(item)
  }

  problems(run: number, limit = 1000): { file: string; line: number; reason: string; excerpt: string }[] {
    return this.q.problems.all(run, limit)
  }

  integrity(): string {
    return (
      this.db.query<{ integrity_check: string }, []>("PRAGMA integrity_check").get()?.integrity_check ?? ""
    )
  }
}

// Every method of the store turns SQLite's errors into the store's own, naming the file (`failure`): a page found
// damaged in the middle of a run stops it with a message that says what to do, not an internal error. A generator's
// errors come as it is read, so the generator is wrapped too.
for (const name of Object.getOwnPropertyNames(Store.prototype)) {
  const method: unknown = Object.getOwnPropertyDescriptor(Store.prototype, name)?.value
  if (name === "constructor" || typeof method !== "function") continue
  Object.defineProperty(Store.prototype, name, {
    configurable: true,
    writable: true,
    value: function (this: Store, ...args: unknown[]): unknown {
      try {
        const out: unknown = Reflect.apply(method, this, args)
        if (out instanceof Promise)
          return out.catch((err: unknown) => Promise.reject(failure(err, this.path)))
        return Object.prototype.toString.call(out) === "[object Generator]"
          ? guarded(out as Generator<unknown, unknown>, this.path)
          : out
      } catch (err) {
        throw failure(err, this.path)
      }
    },
  })
}

function* guarded<T, R>(gen: Generator<T, R>, path: string): Generator<T, R> {
  try {
    return yield* gen
  } catch (err) {
    throw failure(err, path)
  }
}

function prepare(db: Database) {
  const q = <R, P extends SQLQueryBindings[] = SQLQueryBindings[]>(sql: string): Statement<R, P> =>
    db.prepare<R, P>(sql) as unknown as Statement<R, P>
  type Id = { id: number }
  return {
    latestRun: q<Run, [string]>("SELECT * FROM runs WHERE name = ? ORDER BY id DESC LIMIT 1"),
    runById: q<Run, [number]>("SELECT * FROM runs WHERE id = ?"),
    runs: q<Run, []>("SELECT * FROM runs ORDER BY id"),
    insertRun: q<Run, [string, string, string, string, number, number]>(
      `INSERT INTO runs (name, state, job, fingerprint, resume, created_at, updated_at)
       VALUES (?, 'running', ?, ?, ?, ?, ?) RETURNING *`,
    ),
    insertInput: q<void, [number, number, string, string]>(
      "INSERT INTO inputs (run_id, idx, path, format) VALUES (?, ?, ?, ?)",
    ),
    setRunState: q<void, [RunState, string | null, number, number | null, number]>(
      "UPDATE runs SET state = ?, reason = ?, updated_at = ?, finished_at = ? WHERE id = ?",
    ),
    setResume: q<void, [string, number]>("UPDATE runs SET resume = ? WHERE id = ?"),
    inputs: q<Input, [number]>("SELECT * FROM inputs WHERE run_id = ? ORDER BY idx"),
    addInput: q<void, [number, string, string]>(
      `INSERT INTO inputs (run_id, idx, path, format)
       SELECT ?1, (SELECT coalesce(max(idx) + 1, 0) FROM inputs WHERE run_id = ?1), ?2, ?3
       WHERE NOT EXISTS (SELECT 1 FROM inputs WHERE run_id = ?1 AND path = ?2)`,
    ),
    ingestLease: q<Lease, [number]>(
      "SELECT ingest_owner AS owner, ingest_expires AS expires FROM runs WHERE id = ?",
    ),
    setIngestLease: q<void, [string, number, number]>(
      "UPDATE runs SET ingest_owner = ?, ingest_expires = ? WHERE id = ?",
    ),
    insertItems: insertItems(db, INSERT_ROWS),
    insertProblem: q<void, [number, number, string, number, string, string]>(
      "INSERT INTO problems (run_id, input, file, line, reason, excerpt) VALUES (?, ?, ?, ?, ?, ?)",
    ),
    advanceInput: q<void, [string, number, number, number, number, number, number]>(
      `UPDATE inputs SET checkpoint = ?, rows = rows + ?, problems = problems + ?, duplicates = duplicates + ?,
       done = ? WHERE run_id = ? AND idx = ?`,
    ),
    updateJob: q<void, [string, number, number]>("UPDATE runs SET job = ?, updated_at = ? WHERE id = ?"),
    markIngested: q<void, [number]>(
      "UPDATE runs SET ingested = 1, ingest_owner = NULL, ingest_expires = NULL WHERE id = ?",
    ),
    unmarkIngested: q<void, [number]>("UPDATE runs SET ingested = 0 WHERE id = ?"),
    resetInputs: q<void, [number]>(
      "UPDATE inputs SET checkpoint = NULL, done = 0, problems = 0, duplicates = 0 WHERE run_id = ?",
    ),
    clearProblems: q<void, [number]>("DELETE FROM problems WHERE run_id = ?"),
    itemRow: q<{ row: number }, [number, number, string]>(
      "SELECT row FROM items WHERE run_id = ? AND input = ? AND key = ?",
    ),
    leased: q<{ id: number; lease_owner: string | null; lease_expires: number | null }, [number]>(
      "SELECT id, lease_owner, lease_expires FROM items WHERE run_id = ? AND state = 'running'",
    ),
    release: q<void, [number, number]>(
      `UPDATE items SET state = 'pending', lease_owner = NULL, lease_expires = NULL, updated_at = ?
       WHERE id = ? AND state = 'running'`,
    ),
    loseAttempt: q<void, [number, number]>(
      "UPDATE attempts SET ended_at = ?, outcome = 'lost' WHERE item_id = ? AND ended_at IS NULL",
    ),
    dueRetries: q<Claimable, [number, number, number]>(
      `SELECT id, state FROM items WHERE run_id = ? AND state = 'retry_wait' AND next_at <= ? ORDER BY id LIMIT ?`,
    ),
    pendingItems: q<Claimable, [number, number]>(
      "SELECT id, state FROM items WHERE run_id = ? AND state = 'pending' ORDER BY id LIMIT ?",
    ),
    claim: q<Claimed, [string, number, number, string]>(
      `UPDATE items SET state = 'running', attempts = attempts + 1, next_at = NULL, lease_owner = ?1,
       lease_expires = ?2, updated_at = ?3
       WHERE id IN (SELECT value FROM json_each(?4)) AND state IN ('pending', 'retry_wait')
       RETURNING id, key, data, attempts AS attempt`,
    ),
    openAttempts: q<void, [string, number, string, number]>(
      `INSERT INTO attempts (item_id, run_id, n, owner, started_at)
       SELECT j.value ->> 0, ?2, j.value ->> 1, ?3, ?4 FROM json_each(?1) AS j`,
    ),
    endAttempts: q<void, [string]>(
      `UPDATE attempts SET ended_at = j.value ->> 'endedAt', outcome = j.value ->> 'label',
       error_class = j.value ->> 'errorClass', error = j.value ->> 'error', http_status = j.value ->> 'status',
       input_tokens = j.value ->> 'inputTokens', output_tokens = j.value ->> 'outputTokens',
       cached_input_tokens = j.value ->> 'cachedTokens',
       latency_ms = j.value ->> 'latencyMs'
       FROM json_each(?1) AS j WHERE attempts.item_id = j.value ->> 'item' AND attempts.n = j.value ->> 'attempt'`,
    ),
    finish: q<void, [string, string]>(
      `UPDATE items SET state = j.value ->> 'to', output = j.value ->> 'output',
       error_class = j.value ->> 'errorClass', error = j.value ->> 'error', next_at = j.value ->> 'nextAt',
       input_tokens = input_tokens + coalesce(j.value ->> 'inputTokens', 0),
       cached_input_tokens = cached_input_tokens + coalesce(j.value ->> 'cachedTokens', 0),
       output_tokens = output_tokens + coalesce(j.value ->> 'outputTokens', 0),
       lease_owner = NULL, lease_expires = NULL, updated_at = j.value ->> 'endedAt'
       FROM json_each(?1) AS j
       WHERE items.id = j.value ->> 'item' AND items.state = 'running' AND items.lease_owner = ?2`,
    ),
    renew: q<void, [number, number, string]>(
      "UPDATE items SET lease_expires = ? WHERE run_id = ? AND lease_owner = ? AND state = 'running'",
    ),
    nextRetry: q<{ at: number | null }, [number]>(
      "SELECT min(next_at) AS at FROM items WHERE run_id = ? AND state = 'retry_wait'",
    ),
    retryItems: q<void, [number, number, State]>(
      `UPDATE items SET state = 'pending', error = NULL, error_class = NULL, next_at = NULL, updated_at = ?
       WHERE run_id = ? AND state = ?`,
    ),
    tallies: q<Tally & { state: string; n: number }, [number]>("SELECT * FROM tallies WHERE run_id = ?"),
    tallyAdd: q<void, [number, string, number, number, number, number, number, number, number, number]>(
      `INSERT INTO tallies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (run_id, state) DO UPDATE SET n = n + excluded.n, attempts = attempts + excluded.attempts,
       input_tokens = input_tokens + excluded.input_tokens, output_tokens = output_tokens + excluded.output_tokens,
       cached_input_tokens = cached_input_tokens + excluded.cached_input_tokens,
       batch_input_tokens = batch_input_tokens + excluded.batch_input_tokens,
       batch_output_tokens = batch_output_tokens + excluded.batch_output_tokens,
       batch_cached_tokens = batch_cached_tokens + excluded.batch_cached_tokens`,
    ),
    progressAdd: q<void, [number, number, number, number]>(
      `INSERT INTO progress VALUES (?, ?, ?, ?) ON CONFLICT (run_id, bucket) DO UPDATE SET
       completed = completed + excluded.completed, failed = failed + excluded.failed`,
    ),
    firstStarted: q<{ at: number }, [number]>(
      "SELECT started_at AS at FROM attempts WHERE run_id = ? AND ended_at IS NOT NULL ORDER BY ended_at LIMIT 1",
    ),
    lastEnded: q<{ at: number }, [number]>(
      "SELECT ended_at AS at FROM attempts WHERE run_id = ? AND ended_at IS NOT NULL ORDER BY ended_at DESC LIMIT 1",
    ),
    progressSince: q<{ completed: number | null }, [number, number]>(
      "SELECT sum(completed) AS completed FROM progress WHERE run_id = ? AND bucket >= ?",
    ),
    progressSlots: q<{ slot: number; completed: number; failed: number }, [number, number, number]>(
      `SELECT (bucket - ?2) / ?3 AS slot, sum(completed) AS completed, sum(failed) AS failed FROM progress
       WHERE run_id = ?1 AND bucket >= ?2 GROUP BY slot ORDER BY slot`,
    ),
    firstBucket: q<{ bucket: number | null }, [number]>(
      "SELECT min(bucket) AS bucket FROM progress WHERE run_id = ?",
    ),
    errorClasses: q<{ class: string; n: number; error: string | null; key: string | null }, [number]>(
      `SELECT t.class, t.n, a.error, i.key FROM error_tallies t
       LEFT JOIN attempts a ON a.id = t.attempt_id LEFT JOIN items i ON i.id = a.item_id
       WHERE t.run_id = ? ORDER BY t.n DESC, t.class`,
    ),
    errorsSince: q<AttemptError, [number, number, number]>(
      `${FAILED_ATTEMPTS} AND a.ended_at >= ? ORDER BY a.ended_at, a.id LIMIT ?`,
    ),
    latestErrors: q<AttemptError, [number, number]>(
      `${FAILED_ATTEMPTS} AND a.ended_at IS NOT NULL
       ORDER BY a.ended_at DESC, a.id DESC LIMIT ?`,
    ),
    // walks the primary key from the cursor (`+run_id` keeps the planner off items_state, which would read and sort
    // every item of the run): a run's items are nearly contiguous, so a page reads about `limit` rows
    pageAll: q<PageRow, [number, number, number]>(
      `SELECT ${PAGE_COLUMNS} FROM items JOIN inputs ON inputs.run_id = items.run_id AND inputs.idx = items.input
       WHERE +items.run_id = ? AND items.id > ? ORDER BY items.id LIMIT ?`,
    ),
    pageOfState: q<PageRow, [number, State, number, number]>(
      `SELECT ${PAGE_COLUMNS} FROM items JOIN inputs ON inputs.run_id = items.run_id AND inputs.idx = items.input
       WHERE items.run_id = ? AND items.state = ? AND items.id > ? ORDER BY items.id LIMIT ?`,
    ),
    attemptsOf: q<AttemptRow, [number]>(
      `SELECT n, started_at, ended_at, outcome, error_class, error, http_status, input_tokens, output_tokens,
       cached_input_tokens, latency_ms, batch_id FROM attempts WHERE item_id = ? ORDER BY n`,
    ),
    problemTotals: q<{ n: number; duplicates: number }, [number]>(
      "SELECT coalesce(sum(problems), 0) AS n, coalesce(sum(duplicates), 0) AS duplicates FROM inputs WHERE run_id = ?",
    ),
    problemSample: q<{ file: string; line: number; reason: string }, [number]>(
      "SELECT file, line, reason FROM problems WHERE run_id = ? ORDER BY input, line, id LIMIT 5",
    ),
    problems: q<{ file: string; line: number; reason: string; excerpt: string }, [number, number]>(
      "SELECT file, line, reason, excerpt FROM problems WHERE run_id = ? ORDER BY input, line, id LIMIT ?",
    ),
    // by the table's own b-tree (NOT INDEXED), so that a damaged page of it can be stepped over (items)
    itemsAfter: q<Item, [number, number, State | null]>(
      `SELECT items.*, inputs.path FROM items NOT INDEXED
       JOIN inputs ON inputs.run_id = items.run_id AND inputs.idx = items.input
       WHERE items.id > ?1 AND items.run_id = ?2 AND (?3 IS NULL OR items.state = ?3) ORDER BY items.id`,
    ),
    idAfter: q<Id, [number]>("SELECT id FROM items NOT INDEXED WHERE id > ? ORDER BY id LIMIT 1"),
    allItems: q<Item, [number]>(
      `SELECT items.*, inputs.path FROM items JOIN inputs ON inputs.run_id = items.run_id AND inputs.idx = items.input
       WHERE items.run_id = ? ORDER BY items.id`,
    ),
    itemsOfState: q<Item, [number, State]>(
      `SELECT items.*, inputs.path FROM items JOIN inputs ON inputs.run_id = items.run_id AND inputs.idx = items.input
       WHERE items.run_id = ? AND items.state = ? ORDER BY items.id`,
    ),
    batchLease: q<Lease, [number]>(
      "SELECT batch_owner AS owner, batch_expires AS expires FROM runs WHERE id = ?",
    ),
    setBatchLease: q<void, [string, number, number]>(
      "UPDATE runs SET batch_owner = ?, batch_expires = ? WHERE id = ?",
    ),
    releaseBatchLease: q<void, [number, string]>(
      "UPDATE runs SET batch_owner = NULL, batch_expires = NULL WHERE id = ? AND batch_owner = ?",
    ),
    largestAttempt: q<{ input: number | null; output: number | null }, [number]>(
      `SELECT max(input_tokens) AS input, max(output_tokens) AS output FROM attempts
       WHERE run_id = ? AND outcome IS NOT NULL AND input_tokens IS NOT NULL`,
    ),
    hasOpen: q<{ one: number }, [number]>(
      `SELECT 1 AS one FROM items WHERE run_id = ?
       AND state IN ('pending', 'running', 'retry_wait', 'queued', 'submitted') LIMIT 1`,
    ),
    leaseHolders: q<{ owner: string }, [number]>(
      `SELECT DISTINCT lease_owner AS owner FROM items WHERE run_id = ?1 AND state = 'running'
       UNION SELECT ingest_owner FROM runs WHERE id = ?1 AND ingest_owner IS NOT NULL
       UNION SELECT batch_owner FROM runs WHERE id = ?1 AND batch_owner IS NOT NULL`,
    ),
    packableRetries: q<Packable, [number, number, number]>(
      `SELECT id, key, data, attempts, batch_id, batch_offset, batch_bytes FROM items
       WHERE run_id = ? AND state = 'retry_wait' AND next_at <= ? ORDER BY id LIMIT ?`,
    ),
    packablePending: q<Packable, [number, number]>(
      `SELECT id, key, data, attempts, batch_id, batch_offset, batch_bytes FROM items
       WHERE run_id = ? AND state = 'pending' ORDER BY id LIMIT ?`,
    ),
    insertBatch: q<Batch, [number, string, number, number, number, string, number]>(
      `INSERT INTO batches (run_id, tag, state, count, bytes, tokens, requests, created_at)
       VALUES (?, ?, 'intent', ?, ?, ?, ?, ?) RETURNING *`,
    ),
    queueItems: q<void, [number, number, string, State]>(
      `UPDATE items SET state = 'queued', attempts = attempts + 1, next_at = NULL, batch_id = ?1,
       batch_line = j.value ->> 'line', batch_offset = j.value ->> 'offset', batch_bytes = j.value ->> 'bytes',
       updated_at = ?2
       FROM json_each(?3) AS j WHERE items.id = j.value ->> 'id' AND items.state = ?4`,
    ),
    failUnpackable: q<void, [number, string]>(
      `UPDATE items SET state = 'failed', attempts = attempts + 1, next_at = NULL,
       error_class = j.value ->> 'errorClass', error = j.value ->> 'error', updated_at = ?1
       FROM json_each(?2) AS j WHERE items.id = j.value ->> 'id' AND items.state IN ('pending', 'retry_wait')`,
    ),
    closeUnpackable: q<void, [number, string, number, string]>(
      `INSERT INTO attempts (item_id, run_id, n, owner, started_at, ended_at, outcome, error_class, error)
       SELECT i.id, ?1, i.attempts, ?2, ?3, ?3, 'failed', i.error_class, i.error
       FROM json_each(?4) AS j JOIN items i ON i.id = j.value ->> 'id'`,
    ),
    submitBatch: q<void, [string, string, string, number, number]>(
      `UPDATE batches SET state = 'submitted', provider_id = ?, status = ?, phase = ?, submitted_at = ?
       WHERE id = ? AND state = 'intent'`,
    ),
    submitItems: q<void, [number, number]>(
      "UPDATE items SET state = 'submitted', updated_at = ? WHERE batch_id = ? AND state = 'queued'",
    ),
    unrunItems: q<void, [number, number, State]>(
      `UPDATE items SET state = 'pending', attempts = attempts - 1, updated_at = ?
       WHERE batch_id = ? AND state = ?`,
    ),
    abandonBatch: q<void, [string, string, number, number]>(
      `UPDATE batches SET state = 'abandoned', error = ?, error_class = ?, finished_at = ?, next_at = NULL
       WHERE id = ?`,
    ),
    observeBatch: q<
      void,
      [
        string,
        string,
        string | null,
        number | null,
        number | null,
        number | null,
        string | null,
        string | null,
        string | null,
        number | null,
        number | null,
        number,
      ]
    >(
      `UPDATE batches SET status = ?1, phase = ?2, outcome = ?3, total = coalesce(?4, total),
       done = coalesce(?5, done), failed = coalesce(?6, failed), files = coalesce(?7, files), error = ?8,
       error_class = ?9, next_at = ?10, polls = polls + 1,
       ended_at = coalesce(ended_at, ?11),
       state = CASE WHEN ?11 IS NOT NULL AND state = 'submitted' THEN 'downloading' ELSE state END
       WHERE id = ?12`,
    ),
    batchLater: q<void, [number, string | null, number]>(
      "UPDATE batches SET next_at = ?, error = ? WHERE id = ?",
    ),
    downloadedBatch: q<void, [string | null, string | null, number]>(
      "UPDATE batches SET state = 'applying', output = ?, errors = ? WHERE id = ? AND state = 'downloading'",
    ),
    batchStarted: q<{ at: number }, [number]>(
      "SELECT coalesce(submitted_at, created_at) AS at FROM batches WHERE id = ?",
    ),
    settleItem: q<
      { run_id: number; attempts: number },
      [string, string | null, string | null, string | null, number, number, number, number, number, number]
    >(
      `UPDATE items SET state = ?1, output = ?2, error_class = ?3, error = ?4,
       input_tokens = input_tokens + ?5, output_tokens = output_tokens + ?6,
       cached_input_tokens = cached_input_tokens + ?7, batch_input_tokens = batch_input_tokens + ?5,
       batch_output_tokens = batch_output_tokens + ?6, batch_cached_tokens = batch_cached_tokens + ?7,
       updated_at = ?8
       WHERE id = ?9 AND batch_id = ?10 AND state = 'submitted' RETURNING run_id, attempts`,
    ),
    recordLine: q<
      void,
      [
        number,
        number,
        number,
        string,
        number,
        number,
        string,
        string | null,
        string | null,
        number | null,
        number | null,
        number | null,
        number | null,
        number,
      ]
    >(
      `INSERT INTO attempts (item_id, run_id, n, owner, started_at, ended_at, outcome, error_class, error,
       http_status, input_tokens, output_tokens, cached_input_tokens, batch_id)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    finishBatch: q<void, [number, number, number]>(
      "UPDATE batches SET state = 'done', lines = ?, finished_at = ?, next_at = NULL WHERE id = ?",
    ),
    batchItems: q<{ id: number; attempts: number }, [number]>(
      "SELECT id, attempts FROM items WHERE batch_id = ? AND state = 'submitted'",
    ),
    batchById: q<Batch, [number]>("SELECT * FROM batches WHERE id = ?"),
    batchesOf: q<Batch, [number]>("SELECT * FROM batches WHERE run_id = ? ORDER BY id"),
    recentBatches: q<Batch, [number, number]>(
      `SELECT * FROM (
         SELECT * FROM batches WHERE run_id = ?1 AND state NOT IN ('done', 'abandoned')
         UNION ALL
         SELECT * FROM (SELECT * FROM batches WHERE run_id = ?1 AND state IN ('done', 'abandoned')
           ORDER BY id DESC LIMIT ?2)
       ) ORDER BY id`,
    ),
    batchCount: q<{ n: number }, [number]>("SELECT count(*) AS n FROM batches WHERE run_id = ?"),
    liveBatches: q<Batch, [number]>(
      "SELECT * FROM batches WHERE run_id = ? AND state NOT IN ('done', 'abandoned') ORDER BY id",
    ),
    learnQueue: q<void, [number | null, number | null, number]>(
      `UPDATE runs SET queue_tokens = coalesce(?1, queue_tokens), queue_requests = coalesce(?2, queue_requests)
       WHERE id = ?3`,
    ),
    markExported: q<void, [number, number]>("UPDATE runs SET exported_at = ? WHERE id = ?"),
  }
}

type Claimable = { id: number; state: State }

/** The sums a `tallies` row keeps beside its count: attempts, and tokens (the batch-priced part apart). */
type Tally = Paid & { attempts: number }

const ZERO_TALLY = (): Tally => ({
  attempts: 0,
  input_tokens: 0,
  output_tokens: 0,
  cached_input_tokens: 0,
  batch_input_tokens: 0,
  batch_output_tokens: 0,
  batch_cached_tokens: 0,
})

/** The length of a `progress` bucket: completions are counted per run and per 10 s. */
export const PROGRESS_BUCKET_MS = 10_000

/** One attempt of an item, as the page and the API show it. */
export interface AttemptRow {
  n: number
  started_at: number
  ended_at: number | null
  outcome: string | null
  error_class: string | null
  error: string | null
  http_status: number | null
  input_tokens: number | null
  output_tokens: number | null
  cached_input_tokens: number | null
  latency_ms: number | null
  batch_id: number | null
}

/** A failed attempt, with its item, as the page lists it. */
export type AttemptError = Pick<AttemptRow, "n" | "outcome" | "error" | "http_status"> & {
  id: number
  item_id: number
  key: string
  ended_at: number
  error_class: string
}

/** The fields of an item a result line (DESIGN §7) is made of. */
export type ResultRow = Pick<
  Item,
  | "input"
  | "key"
  | "state"
  | "output"
  | "error"
  | "error_class"
  | "attempts"
  | "input_tokens"
  | "output_tokens"
  | "cached_input_tokens"
  | "batch_input_tokens"
  | "batch_output_tokens"
  | "batch_cached_tokens"
  | "path"
  | "row"
  | "source_id"
>

/** A run's failed attempts with their items' keys (\`run_id\` the first parameter), as AttemptError rows. */
const FAILED_ATTEMPTS = `SELECT a.id, a.item_id, i.key, a.n, a.ended_at, a.outcome, a.error_class, a.error, a.http_status
  FROM attempts a JOIN items i ON i.id = a.item_id WHERE a.run_id = ? AND a.error_class IS NOT NULL`

const PAGE_COLUMNS = `items.id, items.input, items.key, items.state, items.attempts, items.output, items.error_class,
  items.error, items.input_tokens, items.output_tokens, items.cached_input_tokens, items.batch_input_tokens,
  items.batch_output_tokens, items.batch_cached_tokens, items.row, items.source_id, inputs.path`

/** An item of a page: its result line's fields, and its id (the cursor). */
export type PageRow = ResultRow & { id: number }

export interface PagedItem extends PageRow {
  attempts_list: AttemptRow[]
}

type Lease = { owner: string | null; expires: number | null }

const INSERT_ROWS = 50

/** INSERT OR IGNORE of `n` items: parameters run, input, now, then key, row, source_id, data per row. */
function insertItems(db: Database, n: number): Statement<void, SQLQueryBindings[]> {
  const values = Array.from({ length: n }, (_, j) => {
    const at = 4 + 4 * j
    return `(?1, ?2, ?${at}, ?${at + 1}, ?${at + 2}, ?${at + 3}, 'pending', ?3)`
  }).join(", ")
  return db.prepare<void, SQLQueryBindings[]>(
    `INSERT OR IGNORE INTO items (run_id, input, key, row, source_id, data, state, updated_at) VALUES ${values}`,
  ) as unknown as Statement<void, SQLQueryBindings[]>
}

/** Refuses a ref that names no run, with the list of what exists. */
export function mustFindRun(store: Store, ref: string | undefined): Run {
  const runs = store.runs()
  if (!ref) {
    const last = runs.at(-1)
    if (!last) throw new UsageError("there are no runs yet", "Start one with `spool run job.toml`.")
    return last
  }
  const run = store.findRun(ref)
  if (run) return run
  const names = [...new Set(runs.map((r) => r.name))]
  throw new UsageError(
    `no run named "${ref}"`,
    names.length ? `Known runs: ${names.join(", ")}.` : "Start one with `spool run job.toml`.",
  )
}
