/** Ingestion: a source batch's rows, problems and checkpoint in one transaction; the run's ingest flag and lease. */
import type { Database, SQLQueryBindings, Statement } from "bun:sqlite"
import type { SourceBatch } from "../../../plugins/api/define.ts"
import type { Dead, Input } from "../types.ts"
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

  /** Stores one source batch: its rows as pending items, its problems, and its checkpoint, atomically. */
  add(
    run: number,
    input: Pick<Input, "idx" | "path">,
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
        if (added > 0) this.tallies.shift(run, { pending: added })
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

function prepare(db: Database) {
  const q = statements(db)
  return {
    insertItems: insertItems(db, INSERT_ROWS),
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
    itemRow: q<{ row: number }, [number, number, string]>(
      "SELECT row FROM items WHERE run_id = ? AND input = ? AND key = ?",
    ),
  }
}
