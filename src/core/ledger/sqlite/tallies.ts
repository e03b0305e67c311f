/**
 * The counters the store keeps itself (migration 4): items, attempts and tokens per run and state, and items ended
 * per run and 10 s. Triggers count most changes; ingest and the batch path count theirs here, once per statement.
 */
import type { Database } from "bun:sqlite"
import * as states from "../states.ts"
import { shifts, ZERO_COUNTS, ZERO_TALLY, type Tally } from "../rows.ts"
import type { State } from "../states.ts"
import { statements } from "./connect.ts"

export { ZERO_COUNTS, ZERO_TALLY, type Tally }

export class Tallies {
  private readonly q: ReturnType<typeof prepare>

  constructor(
    db: Database,
    readonly path: string,
  ) {
    this.q = prepare(db)
  }

  /**
   * Counts, in the tallies, items that one statement moved between states (`moved`: the change of each state's
   * count), and what it added to their attempts and tokens (`added`, counted on the first state named). The batch
   * path counts itself so (see migration 4); everything else is counted by the `items_tally` trigger.
   */
  shift(run: number, moved: Partial<Record<State, number>>, added: Partial<Tally> = {}): void {
    for (const { state, n, sum: a } of shifts(moved, added))
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
        a.cache_write_tokens,
        a.batch_write_tokens,
      )
  }

  /** Counts items that ended in one 10 s bucket of a run (the batch path's; the trigger counts the others'). */
  ended(run: number, bucket: number, completed: number, failed: number): void {
    this.q.progressAdd.run(run, bucket, completed, failed)
  }

  /** A run's tallies: items per state, and the sums of their attempts and tokens over all states. */
  tallied(run: number): { counts: Record<State, number>; sum: Tally } {
    const counts = ZERO_COUNTS()
    const sum = ZERO_TALLY()
    for (const row of this.q.tallies.all(run)) {
      if (states.isState(row.state)) counts[row.state] = row.n
      for (const k of Object.keys(sum) as (keyof Tally)[]) sum[k] += row[k]
    }
    return { counts, sum }
  }
}
// not guarded: only the guarded parts call it, inside their own methods

function prepare(db: Database) {
  const q = statements(db)
  return {
    tallies: q<Tally & { state: string; n: number }, [number]>("SELECT * FROM tallies WHERE run_id = ?"),
    // the columns in their order: migration 13 added the write tokens last
    tallyAdd: q<
      void,
      [number, string, number, number, number, number, number, number, number, number, number, number]
    >(
      `INSERT INTO tallies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (run_id, state) DO UPDATE SET n = n + excluded.n, attempts = attempts + excluded.attempts,
       input_tokens = input_tokens + excluded.input_tokens, output_tokens = output_tokens + excluded.output_tokens,
       cached_input_tokens = cached_input_tokens + excluded.cached_input_tokens,
       batch_input_tokens = batch_input_tokens + excluded.batch_input_tokens,
       batch_output_tokens = batch_output_tokens + excluded.batch_output_tokens,
       batch_cached_tokens = batch_cached_tokens + excluded.batch_cached_tokens,
       cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens,
       batch_write_tokens = batch_write_tokens + excluded.batch_write_tokens`,
    ),
    progressAdd: q<void, [number, number, number, number]>(
      `INSERT INTO progress VALUES (?, ?, ?, ?) ON CONFLICT (run_id, bucket) DO UPDATE SET
       completed = completed + excluded.completed, failed = failed + excluded.failed`,
    ),
  }
}
