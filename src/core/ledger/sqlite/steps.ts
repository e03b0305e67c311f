/**
 * Pipelines (ledger.ts `Steps`; migration 12): the rows of a pipeline run whose step may be decided now, and the step's
 * items made of them. A row is found by index look-ups only: the pipeline run's items walked from the cursor along
 * items_state, and, for each, its item in the step's run and in each needed step's run by the unique index of
 * (run_id, input, key). Items are counted as ingest counts them: per statement, in the code (no trigger counts an
 * insert).
 */
import type { Database, SQLQueryBindings, Statement } from "bun:sqlite"
import { TransitionError } from "../../base/errors.ts"
import type { Ready, StepItem } from "../ledger.ts"
import { STATES, type State } from "../states.ts"
import { PROGRESS_BUCKET_MS } from "../types.ts"
import { guard } from "./faults.ts"
import { statements } from "./connect.ts"
import type { Tallies } from "./tallies.ts"

/** The states a needed step's item has ended in: not needs_review, which a person may still let through. */
const ENDED = "('completed', 'failed', 'skipped', 'rejected')"

/** The states a step's item is made in. */
const MADE: readonly State[] = ["pending", "skipped", "needs_review", "completed"]

/** Items per INSERT, as ingest's: the per-row cost of crossing into SQLite dominates a bulk insert. */
const INSERT_ROWS = 50

/** Parameters per item: input, key, row, source_id, data, state, output, error, error_class. */
const WIDTH = 9

/** A row of the pipeline run, as `ready` finds it (its needs are read after). */
type Row = Omit<Ready, "needs">

export class Steps {
  private readonly q: ReturnType<typeof prepare>
  /** `ready`'s statement for each number of needs. */
  private readonly readies = new Map<number, Statement<Row, SQLQueryBindings[]>>()

  constructor(
    private readonly db: Database,
    readonly path: string,
    private readonly tallies: Tallies,
  ) {
    this.q = prepare(db)
  }

  /**
   * The pipeline run's rows after `after` that have no item in `step` and whose item in every run of `needs` has
   * ended, in ledger order, at most `limit`; each with its needs' items, in their order. One read transaction: the
   * rows and their needs are of one moment.
   */
  ready(parent: number, step: number, needs: number[], o: { after: number; limit: number }): Ready[] {
    if (o.limit <= 0) return []
    const statement = this.readyOf(needs.length)
    return this.db.transaction(() => {
      // state by state along items_state from the cursor: a walk of the pipeline run's own items, never of the
      // steps' items made between them (a rowid walk would read those too)
      const found: Row[] = []
      for (const state of STATES)
        found.push(...statement.all(parent, state, o.after, step, o.limit, ...needs))
      found.sort((a, b) => a.id - b.id)
      return found.slice(0, o.limit).map((row) => ({
        ...row,
        needs: needs.map((run) => this.q.need.get(run, row.input, row.key)!),
      }))
    })()
  }

  /**
   * Stores a step's items, each in its state (a pending one with no cache key: the cache's sweep asks for it); an
   * item of the same input and key that the run has is kept as it is. Counts what it stored in the tallies, the
   * completions chart (a completed item as completed, one left for review as failed, as the trigger counts a call
   * that ends so; a skipped one nowhere: nothing was done) and the inputs' rows. How many it stored.
   */
  add(step: number, items: StepItem[]): number {
    for (const item of items)
      if (!MADE.includes(item.state))
        throw new TransitionError(`a step's item is made ${MADE.join(", ")}, not ${item.state}`)
    if (items.length === 0) return 0
    const now = Date.now()
    return this.db
      .transaction(() => {
        const moved: Partial<Record<State, number>> = {}
        const rows = new Map<number, number>()
        for (let i = 0; i < items.length; i += INSERT_ROWS) {
          const chunk = items.slice(i, i + INSERT_ROWS)
          const params: SQLQueryBindings[] = [step, now]
          for (const x of chunk)
            params.push(
              x.input,
              x.key,
              x.row,
              x.source_id,
              x.data,
              x.state,
              x.output ?? null,
              x.error ?? null,
              x.error_class ?? null,
            )
          const statement = chunk.length === INSERT_ROWS ? this.q.insert : insert(this.db, chunk.length)
          for (const made of statement.all(...params)) {
            moved[made.state] = (moved[made.state] ?? 0) + 1
            rows.set(made.input, (rows.get(made.input) ?? 0) + 1)
          }
        }
        const added = [...rows.values()].reduce((a, b) => a + b, 0)
        if (added === 0) return 0
        this.tallies.shift(step, moved)
        const completed = moved.completed ?? 0
        const review = moved.needs_review ?? 0
        if (completed + review > 0)
          this.tallies.ended(step, Math.floor(now / PROGRESS_BUCKET_MS), completed, review)
        for (const [input, n] of rows) this.q.counted.run(n, step, input)
        return added
      })
      .immediate()
  }

  /**
   * `ready`'s statement for `n` needs: parameters parent, state, after, step, limit, then each need's run. The
   * pipeline run's items of one state from the cursor, in id order (items_state), each kept when the step's run has
   * no item of its input and key and each need's run has one that ended (the unique index of (run_id, input, key)).
   */
  private readyOf(n: number): Statement<Row, SQLQueryBindings[]> {
    const known = this.readies.get(n)
    if (known) return known
    const ended = Array.from(
      { length: n },
      (_, i) => `AND EXISTS (SELECT 1 FROM items n WHERE n.run_id = ?${6 + i} AND n.input = p.input
        AND n.key = p.key AND n.state IN ${ENDED})`,
    ).join("\n")
    const statement = statements(this.db)<Row, SQLQueryBindings[]>(
      `SELECT p.id, p.input, p.key, p.row, p.source_id, p.data FROM items p
       WHERE p.run_id = ?1 AND p.state = ?2 AND p.id > ?3
       AND NOT EXISTS (SELECT 1 FROM items s WHERE s.run_id = ?4 AND s.input = p.input AND s.key = p.key)
       ${ended}
       ORDER BY p.id LIMIT ?5`,
    )
    this.readies.set(n, statement)
    return statement
  }
}
guard(Steps)

/**
 * INSERT of `n` step items, an item the run has (same input and key) left as it is: parameters step, now, then per
 * item input, key, row, source_id, data, state, output, error, error_class. Returns each item stored.
 */
function insert(db: Database, n: number): Statement<{ input: number; state: State }, SQLQueryBindings[]> {
  const values = Array.from({ length: n }, (_, j) => {
    const at = 3 + WIDTH * j
    const p = Array.from({ length: WIDTH }, (_, k) => `?${at + k}`)
    return `(?1, ${p.join(", ")}, ?2)`
  }).join(", ")
  return statements(db)<{ input: number; state: State }, SQLQueryBindings[]>(
    `INSERT INTO items (run_id, input, key, row, source_id, data, state, output, error, error_class, updated_at)
     VALUES ${values} ON CONFLICT (run_id, input, key) DO NOTHING RETURNING input, state`,
  )
}

function prepare(db: Database) {
  const q = statements(db)
  return {
    insert: insert(db, INSERT_ROWS),
    need: q<Ready["needs"][number], [number, number, string]>(
      "SELECT state, data, output, error FROM items WHERE run_id = ? AND input = ? AND key = ?",
    ),
    counted: q<void, [number, number, number]>(
      "UPDATE inputs SET rows = rows + ? WHERE run_id = ? AND idx = ?",
    ),
  }
}
