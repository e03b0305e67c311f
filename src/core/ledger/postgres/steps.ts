/**
 * Pipelines on PostgreSQL (ledger.ts `Steps`; sqlite/steps.ts): the rows of a pipeline run whose step may be decided
 * now, and the step's items made of them. A row is found by index look-ups only: the pipeline run's items walked from
 * the cursor along items_state, and, for each, its item in the step's run and in each needed step's run by the unique
 * index of (run_id, input, key). Items are counted as ingest counts them: per statement, in the code (the trigger
 * counts updates only).
 */
import type * as api from "../ledger.ts"
import type { Ready, StepItem } from "../ledger.ts"
import { TransitionError } from "../../base/errors.ts"
import { STATES, type State } from "../states.ts"
import { PROGRESS_BUCKET_MS } from "../types.ts"
import { notify, retrying, type Pg } from "./connect.ts"
import { ended, shift } from "./tallies.ts"

/** The states a step's item is made in. */
const MADE: readonly State[] = ["pending", "skipped", "needs_review", "completed"]

/** A row as the read gives it: its needs' items as JSON, each `[state, data, output, error]`. */
type Row = Omit<Ready, "needs"> & { needs: string }

export class Steps implements api.Steps {
  constructor(readonly pg: Pg) {}

  /**
   * The pipeline run's rows after `after` that have no item in `step` and whose item in every run of `needs` has
   * ended (completed, failed, skipped, rejected), in ledger order, at most `limit`; each with its needs' items, in
   * their order. One statement: the rows and their needs are of one moment.
   */
  async ready(
    parent: number,
    step: number,
    needs: number[],
    o: { after: number; limit: number },
  ): Promise<Ready[]> {
    if (o.limit <= 0) return []
    const { after, limit } = o
    const rows = await retrying(this.pg, () =>
      this.pg.sql.begin(async (tx): Promise<Row[]> => {
        // the walk in ledger order, stopped at `limit`, whatever the planner knows of the run: of a new run's items it
        // knows nothing, guesses a few, and would read them all by a bitmap and sort them (a whole run per call)
        await tx`SELECT set_config('enable_bitmapscan', 'off', true), set_config('enable_seqscan', 'off', true)`
        // state by state along items_state from the cursor, each state as a range (reads.ts `ofState` says why): a
        // walk of the pipeline run's own items, never of the steps' items made between them. Each look-up of the
        // step's and the needs' items is a probe of their unique index per row (OFFSET 0 keeps the planner from
        // making it a join, which it may hash over a whole run's items)
        return await tx`
          SELECT p.id, p.input, p.key, p.row, p.source_id, p.data,
            (SELECT coalesce(json_agg(json_build_array(n.state, n.data, n.output, n.error) ORDER BY r.i), '[]')::text
              FROM unnest(${needs}::int[]) WITH ORDINALITY AS r(run, i)
              JOIN items n ON n.run_id = r.run AND n.input = p.input AND n.key = p.key) AS needs
          FROM unnest(${[...STATES]}::text[]) AS s(state)
          CROSS JOIN LATERAL (
            SELECT id, input, key, row, source_id, data FROM items p
            WHERE p.run_id = ${parent} AND (p.state, p.id) > (s.state, ${after}::int) AND p.state <= s.state
              AND NOT EXISTS (SELECT 1 FROM items x WHERE x.run_id = ${step} AND x.input = p.input AND x.key = p.key
                OFFSET 0)
              AND NOT EXISTS (SELECT 1 FROM unnest(${needs}::int[]) AS r(run) WHERE NOT EXISTS (
                SELECT 1 FROM items n WHERE n.run_id = r.run AND n.input = p.input AND n.key = p.key
                  AND n.state IN ('completed', 'failed', 'skipped', 'rejected') OFFSET 0) OFFSET 0)
            ORDER BY p.state, p.id LIMIT ${limit}) AS p
          ORDER BY p.id LIMIT ${limit}`
      }),
    )
    return rows.map((row) => ({
      id: row.id,
      input: row.input,
      key: row.key,
      row: row.row,
      source_id: row.source_id,
      data: row.data,
      needs: (JSON.parse(row.needs) as [State, string, string | null, string | null][]).map(
        ([state, data, output, error]) => ({ state, data, output, error }),
      ),
    }))
  }

  /**
   * Stores a step's items in one statement, each in its state (a pending one with no cache key: the cache's sweep
   * asks for it); an item of the same input and key that the run has is kept as it is. Counts what it stored in the
   * tallies, the completions chart (as sqlite/steps.ts does) and the inputs' rows, and tells the listening workers.
   * How many it stored.
   */
  async add(step: number, items: StepItem[]): Promise<number> {
    for (const item of items)
      if (!MADE.includes(item.state))
        throw new TransitionError(`a step's item is made ${MADE.join(", ")}, not ${item.state}`)
    if (items.length === 0) return 0
    const rows = JSON.stringify(
      items.map((x) => ({
        i: x.input,
        k: x.key,
        l: x.row,
        s: x.source_id,
        d: x.data,
        t: x.state,
        o: x.output ?? null,
        e: x.error ?? null,
        c: x.error_class ?? null,
      })),
    )
    return retrying(this.pg, () =>
      this.pg.sql.begin(async (tx) => {
        const now = Date.now()
        // what was stored, by input and state, in that order: the inputs' rows are locked in one order by all
        const made: { input: number; state: State; n: number }[] = await tx`
          WITH r AS (
            SELECT * FROM ROWS FROM (json_to_recordset(${rows}::text::json)
              AS (i int, k text, l int, s text, d text, t text, o text, e text, c text))
              WITH ORDINALITY AS r(i, k, l, s, d, t, o, e, c, n)
          ), ins AS (
            INSERT INTO items (run_id, input, key, row, source_id, data, state, output, error, error_class, updated_at)
            SELECT ${step}, r.i, r.k, r.l, r.s, r.d, r.t, r.o, r.e, r.c, ${now}::float8 FROM r ORDER BY r.n
            ON CONFLICT (run_id, input, key) DO NOTHING
            RETURNING input, state
          )
          SELECT input, state, count(*)::int AS n FROM ins GROUP BY input, state ORDER BY input, state`
        if (made.length === 0) return 0
        const moved: Partial<Record<State, number>> = {}
        const inputs = new Map<number, number>()
        for (const m of made) {
          moved[m.state] = (moved[m.state] ?? 0) + m.n
          inputs.set(m.input, (inputs.get(m.input) ?? 0) + m.n)
        }
        await shift(tx, step, moved)
        const completed = moved.completed ?? 0
        const review = moved.needs_review ?? 0
        if (completed + review > 0)
          await ended(tx, step, Math.floor(now / PROGRESS_BUCKET_MS), completed, review)
        for (const [input, n] of inputs)
          await tx`UPDATE inputs SET rows = rows + ${n} WHERE run_id = ${step} AND idx = ${input}`
        await notify(tx, this.pg, { run: step, kind: "items" })
        return [...inputs.values()].reduce((a, b) => a + b, 0)
      }),
    )
  }
}
