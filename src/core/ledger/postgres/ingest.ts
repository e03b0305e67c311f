/**
 * Ingestion on PostgreSQL: a source batch's rows, problems and checkpoint in one transaction, its rows in one
 * statement whatever their number; the run's ingest flag and lease.
 */
import type { SQL } from "bun"
import type { SourceBatch } from "../../../plugins/api/define.ts"
import type * as api from "../ledger.ts"
import type { Dead, Input } from "../types.ts"
import { notify, retrying, type Pg } from "./connect.ts"
import type { Runs } from "./runs.ts"
import { shift } from "./tallies.ts"

export class Ingest implements api.Ingest {
  constructor(
    readonly pg: Pg,
    private readonly runs: Runs,
  ) {}

  /**
   * Takes (or renews) the right to ingest a run's inputs, so that two workers never read the same file into
   * the ledger at once. Succeeds when nobody holds it, the holder is us, or the holder's lease has lapsed.
   */
  lease(run: number, owner: string, ms: number, dead: Dead): Promise<boolean> {
    return this.runs.lease("ingest", run, owner, ms, dead)
  }

  /**
   * Stores one source batch: its rows as pending items, its problems, and its checkpoint, atomically. A key already
   * in the input is kept; a row of it is a duplicate (a problem), unless it is the same row read again (--reingest,
   * or a resumed batch).
   */
  async add(
    run: number,
    input: Pick<Input, "idx" | "path">,
    batch: SourceBatch,
    last: boolean,
  ): Promise<{ added: number; duplicates: number }> {
    const { rows } = batch
    // each key once (its first row): a row that cannot be inserted must not reach the INSERT, where it would take
    // an id of the sequence all the same (ids would gap, by a whole run's worth at each --reingest)
    const keys = new Set<string>()
    const fresh = rows.filter((r) => !keys.has(r.key) && keys.add(r.key))
    // the rows as one parameter: one statement, one round trip, whatever the batch's size
    const json = JSON.stringify(
      fresh.map((r) => ({ k: r.key, l: r.line, s: r.id ?? null, d: r.raw ?? JSON.stringify(r.data) })),
    )
    const checkpoint = JSON.stringify(batch.checkpoint)
    return retrying(this.pg, () =>
      this.pg.sql.begin(async (tx) => {
        const now = Date.now()
        let added = 0
        let duplicates = 0
        if (fresh.length > 0) {
          const [made] = await tx`
            WITH ins AS (
              INSERT INTO items (run_id, input, key, row, source_id, data, state, updated_at)
              SELECT ${run}, ${input.idx}, r.k, r.l, r.s, r.d, 'pending', ${now}
              FROM ROWS FROM (json_to_recordset(${json}::text::json) AS (k text, l int, s text, d text))
                WITH ORDINALITY AS r(k, l, s, d, n)
              -- a scalar subquery, not NOT EXISTS: one index probe a row, never an anti join over the run's items
              WHERE (SELECT 1 FROM items i WHERE i.run_id = ${run} AND i.input = ${input.idx} AND i.key = r.k LIMIT 1) IS NULL
              ORDER BY r.n
              ON CONFLICT (run_id, input, key) DO NOTHING
              RETURNING 1
            )
            SELECT count(*)::int AS n FROM ins`
          added = (made as { n: number }).n
        }
        if (added < rows.length) {
          // some keys were there already (or twice in this batch): a row whose item holds another line is a duplicate
          const keyed = JSON.stringify(rows.map((r) => ({ k: r.key, l: r.line })))
          const found: { n: number }[] = await tx`
            SELECT r.n::int AS n
            FROM ROWS FROM (jsonb_to_recordset(${keyed}::text::jsonb) AS (k text, l int)) WITH ORDINALITY AS r(k, l, n)
            WHERE (SELECT i.row FROM items i WHERE i.run_id = ${run} AND i.input = ${input.idx} AND i.key = r.k LIMIT 1) <> r.l
            ORDER BY r.n`
          duplicates = found.length
          if (duplicates > 0) {
            const dups = found.map(({ n }) => {
              const row = rows[n - 1]!
              return {
                l: row.line,
                r: `duplicate id "${row.key}" (the first row with this id is kept)`,
                e: (row.raw ?? JSON.stringify(row.data)).slice(0, 200),
              }
            })
            await problem(tx, run, input, dups)
          }
        }
        if (added > 0) await shift(tx, run, { pending: added })
        if (batch.problems.length > 0)
          await problem(
            tx,
            run,
            input,
            batch.problems.map((p) => ({ l: p.line, r: p.reason, e: p.excerpt })),
          )
        await tx`UPDATE inputs SET checkpoint = ${checkpoint}, rows = rows + ${added},
          problems = problems + ${batch.problems.length + duplicates}, duplicates = duplicates + ${duplicates},
          done = ${last ? 1 : 0} WHERE run_id = ${run} AND idx = ${input.idx}`
        if (added > 0) await notify(tx, this.pg, { run, kind: "items" })
        return { added, duplicates }
      }),
    )
  }

  /** Every input is read to its end: the ingest lease is let go. */
  async done(run: number): Promise<void> {
    await retrying(
      this.pg,
      () =>
        this.pg
          .sql`UPDATE runs SET ingested = 1, ingest_owner = NULL, ingest_expires = NULL WHERE id = ${run}`,
    )
  }

  /** Makes the next ingester read every input on from its checkpoint: rows appended since are picked up. */
  async reopen(run: number): Promise<void> {
    await retrying(this.pg, () => this.pg.sql`UPDATE runs SET ingested = 0 WHERE id = ${run}`)
  }

  /** Forgets a run's ingestion so `--reingest` can read its inputs again; items already done are kept. */
  async reset(run: number): Promise<void> {
    await retrying(this.pg, () =>
      this.pg.sql.begin(async (tx) => {
        await tx`UPDATE inputs SET checkpoint = NULL, done = 0, problems = 0, duplicates = 0 WHERE run_id = ${run}`
        await tx`DELETE FROM problems WHERE run_id = ${run}`
        await tx`UPDATE runs SET ingested = 0 WHERE id = ${run}`
      }),
    )
  }
}

/** Records problem lines of an input, in their order: line, reason, excerpt each. */
async function problem(
  tx: SQL,
  run: number,
  input: Pick<Input, "idx" | "path">,
  lines: { l: number; r: string; e: string }[],
): Promise<void> {
  await tx`
    INSERT INTO problems (run_id, input, file, line, reason, excerpt)
    SELECT ${run}, ${input.idx}, ${input.path}, p.l, p.r, p.e
    FROM ROWS FROM (jsonb_to_recordset(${JSON.stringify(lines)}::text::jsonb) AS (l int, r text, e text))
      WITH ORDINALITY AS p(l, r, e, n)
    ORDER BY p.n`
}
