/**
 * The counters the store keeps itself, as in SQLite (sqlite/tallies.ts): triggers count most changes; ingest and
 * the batch path count theirs here, once per statement, inside their own transaction.
 */
import type { SQL } from "bun"
import * as states from "../states.ts"
import type { State } from "../states.ts"
import { shifts, ZERO_COUNTS, ZERO_TALLY, type Tally } from "../rows.ts"

export { ZERO_COUNTS, ZERO_TALLY, type Tally }

/**
 * Counts, in the tallies, items that one statement moved between states (`moved`: the change of each state's
 * count), and what it added to their attempts and tokens (`added`, counted on the first state named).
 */
export async function shift(
  tx: SQL,
  run: number,
  moved: Partial<Record<State, number>>,
  added: Partial<Tally> = {},
): Promise<void> {
  for (const { state, n, sum: a } of shifts(moved, added))
    await tx`INSERT INTO tallies AS t VALUES (${run}, ${state}, shard(), ${n}, ${a.attempts}, ${a.input_tokens},
      ${a.output_tokens}, ${a.cached_input_tokens}, ${a.batch_input_tokens}, ${a.batch_output_tokens},
      ${a.batch_cached_tokens}, ${a.cache_write_tokens}, ${a.batch_write_tokens})
      ON CONFLICT (run_id, state, shard) DO UPDATE SET n = t.n + excluded.n, attempts = t.attempts + excluded.attempts,
      input_tokens = t.input_tokens + excluded.input_tokens, output_tokens = t.output_tokens + excluded.output_tokens,
      cached_input_tokens = t.cached_input_tokens + excluded.cached_input_tokens,
      batch_input_tokens = t.batch_input_tokens + excluded.batch_input_tokens,
      batch_output_tokens = t.batch_output_tokens + excluded.batch_output_tokens,
      batch_cached_tokens = t.batch_cached_tokens + excluded.batch_cached_tokens,
      cache_write_tokens = t.cache_write_tokens + excluded.cache_write_tokens,
      batch_write_tokens = t.batch_write_tokens + excluded.batch_write_tokens`
}

/** Counts items that ended in one 10 s bucket of a run (the batch path's; the trigger counts the others'). */
export async function ended(
  tx: SQL,
  run: number,
  bucket: number,
  completed: number,
  failed: number,
): Promise<void> {
  await tx`INSERT INTO progress AS p VALUES (${run}, ${bucket}, shard(), ${completed}, ${failed})
    ON CONFLICT (run_id, bucket, shard) DO UPDATE SET completed = p.completed + excluded.completed,
    failed = p.failed + excluded.failed`
}

/** A run's tallies: items per state, and the sums of their attempts and tokens over all states and shards. */
export async function tallied(tx: SQL, run: number): Promise<{ counts: Record<State, number>; sum: Tally }> {
  const counts = ZERO_COUNTS()
  const sum = ZERO_TALLY()
  const rows: (Tally & { state: string; n: number })[] = await tx`SELECT * FROM tallies WHERE run_id = ${run}`
  for (const row of rows) {
    // a state's count is the sum of its shards'
    if (states.isState(row.state)) counts[row.state] += row.n
    for (const k of Object.keys(sum) as (keyof Tally)[]) sum[k] += row[k]
  }
  return { counts, sum }
}
