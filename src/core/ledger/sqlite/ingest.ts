/** Ingestion: a source batch's rows, problems and checkpoint in one transaction; the run's ingest flag and lease. */
import type { Database, SQLQueryBindings, Statement } from "bun:sqlite"
import type { SourceBatch, SourceRow } from "../../../plugins/api/define.ts"
import { usageText, type Asked } from "../ledger.ts"
import { PROGRESS_BUCKET_MS, type Dead, type Input } from "../types.ts"
import type { Cache } from "./cache.ts"
import { guard } from "./faults.ts"
import { statements } from "./connect.ts"
import type { Runs } from "./runs.ts"
import type { Tallies } from "./tallies.ts"

/** Rows per INSERT: the per-row cost of crossing into SQLite dominates a bulk ingest. */
const INSERT_ROWS = 50

export class Ingest {
  private readonly q: ReturnType<typeof prepare>

  constructor(
    private readonly db: Database,
    readonly path: string,
    private readonly runs: Runs,
    private readonly tallies: Tallies,
    private readonly cache: Cache,
  ) {
    this.q = prepare(db)
  }

  /**
   * Takes (or renews) the right to ingest a run's inputs, so that two workers never read the same file into
   * the ledger at once. Succeeds when nobody holds it, the holder is us, or the holder's lease has lapsed.
   */
  lease(run: number, owner: string, ms: number, dead: Dead): boolean {
    return this.runs.lease("ingest", run, owner, ms, dead)
  }

  /**
   * Stores one source batch: its rows as items, its problems, and its checkpoint, atomically. With `asked`, each
   * item keeps its cache key, and the rows the cache answered are stored completed, each with its `cached` attempt.
   */
  add(
    run: number,
    input: Pick<Input, "idx" | "path">,
    batch: SourceBatch,
    last: boolean,
    asked?: Asked,
  ): { added: number; duplicates: number } {
    const now = Date.now()
    return this.db
      .transaction(() => {
        const { rows } = batch
        const counted: Counted = { pending: 0, completed: 0, duplicates: 0, saved: 0 }
        // every item this transaction stores has an id above the largest now (rowids are max + 1)
        const before = asked?.hits.size ? (this.q.lastId.get()?.id ?? 0) : 0
        // in the file's order, so that ledger order is the file's: runs of rows stored pending, runs of hits
        for (let i = 0; i < rows.length;) {
          const hit = asked?.hits.has(i) ?? false
          let end = Math.min(i + INSERT_ROWS, rows.length)
          if (asked) for (let j = i + 1; j < end; j++) if (asked.hits.has(j) !== hit) end = j
          const chunk = rows.slice(i, end)
          if (hit) this.hits(run, input, chunk, i, asked!, before, now, counted)
          else this.pending(run, input, chunk, asked?.keys.slice(i, end), now, counted)
          i = end
        }
        // the hits' `cached` attempts, in one statement: the items stored completed by this transaction
        if (counted.completed > 0) this.cache.attemptsAfter(before, run, asked!.owner, now)
        const added = counted.pending + counted.completed
        const duplicates = counted.duplicates
        if (added > 0) this.tallies.shift(run, { pending: counted.pending, completed: counted.completed })
        if (counted.completed > 0)
          this.tallies.ended(run, Math.floor(now / PROGRESS_BUCKET_MS), counted.completed, 0)
        if (asked && added > 0) this.cache.count(run, counted.completed, counted.pending, counted.saved)
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

  /** Rows stored pending, many per statement (the per-row cost of crossing into SQLite dominates a bulk ingest). */
  private pending(
    run: number,
    input: Pick<Input, "idx" | "path">,
    chunk: SourceRow[],
    keys: string[] | undefined,
    now: number,
    counted: Counted,
  ): void {
    const params: SQLQueryBindings[] = []
    for (const [j, row] of chunk.entries()) {
      params.push(row.key, row.line, row.id ?? null, row.raw ?? JSON.stringify(row.data))
      if (keys) params.push(keys[j]!)
    }
    const full = chunk.length === INSERT_ROWS
    const statement = keys
      ? full
        ? this.q.insertKeyed
        : insertItems(this.db, chunk.length, KEYED)
      : full
        ? this.q.insertItems
        : insertItems(this.db, chunk.length)
    const changes = statement.run(run, input.idx, now, ...params).changes
    counted.pending += changes
    if (changes === chunk.length) return
    for (const row of chunk) this.duplicate(run, input, row, counted)
  }

  /**
   * Rows the cache answered, `from` the batch's index of the first: stored completed, each with its answer, its first
   * cost and its key, many per statement, as pending rows are (`add` writes their `cached` attempts). `before`: the
   * largest item id before this transaction, so that the items it stores are told from those stored before.
   */
  private hits(
    run: number,
    input: Pick<Input, "idx" | "path">,
    chunk: SourceRow[],
    from: number,
    asked: Asked,
    before: number,
    now: number,
    counted: Counted,
  ): void {
    const params: SQLQueryBindings[] = []
    let saved = 0
    for (const [j, row] of chunk.entries()) {
      const entry = asked.hits.get(from + j)!
      const usage = usageText(entry)
      const data = row.raw ?? JSON.stringify(row.data)
      params.push(row.key, row.line, row.id ?? null, data, asked.keys[from + j]!, entry.output, usage)
      saved += entry.cost_usd ?? 0
    }
    const statement = chunk.length === INSERT_ROWS ? this.q.insertHits : insertHits(this.db, chunk.length)
    const changes = statement.run(run, input.idx, now, ...params).changes
    counted.completed += changes
    if (changes === chunk.length) {
      counted.saved += saved
      return
    }
    // some rows were stored before (a row read again, a duplicate id): only those stored now count
    for (const [j, row] of chunk.entries()) {
      const item = this.q.itemRow.get(run, input.idx, row.key)
      if (item && item.id > before && item.row === row.line)
        counted.saved += asked.hits.get(from + j)!.cost_usd ?? 0
      else this.duplicate(run, input, row, counted)
    }
  }

  /** A row not stored: the same row read again (--reingest, or a resumed batch), or a duplicate id, reported. */
  private duplicate(run: number, input: Pick<Input, "idx" | "path">, row: SourceRow, counted: Counted): void {
    if (this.q.itemRow.get(run, input.idx, row.key)?.row === row.line) return
    counted.duplicates++
    this.q.insertProblem.run(
      run,
      input.idx,
      input.path,
      row.line,
      `duplicate id "${row.key}" (the first row with this id is kept)`,
      (row.raw ?? JSON.stringify(row.data)).slice(0, 200),
    )
  }

  /** Every input is read to its end: the ingest lease is let go. */
  done(run: number): void {
    this.q.markIngested.run(run)
  }

  /** Makes the next ingester read every input on from its checkpoint: rows appended since are picked up. */
  reopen(run: number): void {
    this.q.unmarkIngested.run(run)
  }

  /** Forgets a run's ingestion so `--reingest` can read its inputs again; items already done are kept. */
  reset(run: number): void {
    this.db
      .transaction(() => {
        this.q.resetInputs.run(run)
        this.q.clearProblems.run(run)
        this.q.unmarkIngested.run(run)
      })
      .immediate()
  }
}
guard(Ingest)

type Counted = { pending: number; completed: number; duplicates: number; saved: number }

/** Parameters per row: key, row, source_id, data; and the cache key, when the cache was asked. */
const PLAIN = 4
const KEYED = 5

/**
 * INSERT OR IGNORE of `n` pending items: parameters run, input, now, then per row key, row, source_id, data (and,
 * `width` KEYED, its cache key).
 */
function insertItems(db: Database, n: number, width = PLAIN): Statement<void, SQLQueryBindings[]> {
  const values = Array.from({ length: n }, (_, j) => {
    const at = 4 + width * j
    const key = width === KEYED ? `?${at + 4}` : "NULL"
    return `(?1, ?2, ?${at}, ?${at + 1}, ?${at + 2}, ?${at + 3}, 'pending', ?3, ${key})`
  }).join(", ")
  return db.prepare<void, SQLQueryBindings[]>(
    `INSERT OR IGNORE INTO items (run_id, input, key, row, source_id, data, state, updated_at, cache_key)
     VALUES ${values}`,
  ) as unknown as Statement<void, SQLQueryBindings[]>
}

/**
 * INSERT OR IGNORE of `n` items the cache answered: parameters run, input, now, then per row key, row, source_id,
 * data, cache key, output and cached usage.
 */
function insertHits(db: Database, n: number): Statement<void, SQLQueryBindings[]> {
  const values = Array.from({ length: n }, (_, j) => {
    const at = 4 + 7 * j
    return `(?1, ?2, ?${at}, ?${at + 1}, ?${at + 2}, ?${at + 3}, 'completed', ?3, ?${at + 4}, ?${at + 5}, ?${at + 6})`
  }).join(", ")
  return db.prepare<void, SQLQueryBindings[]>(
    `INSERT OR IGNORE INTO items (run_id, input, key, row, source_id, data, state, updated_at, cache_key, output,
     cached_usage) VALUES ${values}`,
  ) as unknown as Statement<void, SQLQueryBindings[]>
}

function prepare(db: Database) {
  const q = statements(db)
  return {
    insertItems: insertItems(db, INSERT_ROWS),
    insertKeyed: insertItems(db, INSERT_ROWS, KEYED),
    insertHits: insertHits(db, INSERT_ROWS),
    insertProblem: q<void, [number, number, string, number, string, string]>(
      "INSERT INTO problems (run_id, input, file, line, reason, excerpt) VALUES (?, ?, ?, ?, ?, ?)",
    ),
    advanceInput: q<void, [string, number, number, number, number, number, number]>(
      `UPDATE inputs SET checkpoint = ?, rows = rows + ?, problems = problems + ?, duplicates = duplicates + ?,
       done = ? WHERE run_id = ? AND idx = ?`,
    ),
    markIngested: q<void, [number]>(
      "UPDATE runs SET ingested = 1, ingest_owner = NULL, ingest_expires = NULL WHERE id = ?",
    ),
    unmarkIngested: q<void, [number]>("UPDATE runs SET ingested = 0 WHERE id = ?"),
    resetInputs: q<void, [number]>(
      "UPDATE inputs SET checkpoint = NULL, done = 0, problems = 0, duplicates = 0 WHERE run_id = ?",
    ),
    clearProblems: q<void, [number]>("DELETE FROM problems WHERE run_id = ?"),
    itemRow: q<{ id: number; row: number }, [number, number, string]>(
      "SELECT id, row FROM items WHERE run_id = ? AND input = ? AND key = ?",
    ),
    lastId: q<{ id: number | null }, []>("SELECT max(id) AS id FROM items"),
  }
}
