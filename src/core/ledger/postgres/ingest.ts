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
    const checkpoint = JSON.stringify(batch.checkpoint)
    return retrying(this.pg, () =>
      this.pg.sql.begin(async (tx) => {
        const now = Date.now()
        // the lines of the keys the input holds already, looked up before the INSERT and not by a probe a row
        // within it: there the planner, which knows nothing of a new run's items, probed by items_state (run_id
        // alone) and walked every row the statement had inserted so far, for each row: 17,000 rows took 9 s
        const lines = await held(tx, run, input.idx, [...keys])
        const novel = fresh.filter((r) => !lines.has(r.key))
        let added = 0
        if (novel.length > 0) {
          const json = JSON.stringify(
            novel.map((r) => ({ k: r.key, l: r.line, s: r.id ?? null, d: r.raw ?? JSON.stringify(r.data) })),
          )
          const [made] = await tx`
            WITH ins AS (
              INSERT INTO items (run_id, input, key, row, source_id, data, state, updated_at)
              SELECT ${run}, ${input.idx}, r.k, r.l, r.s, r.d, 'pending', ${now}
              FROM ROWS FROM (json_to_recordset(${json}::text::json) AS (k text, l int, s text, d text))
                WITH ORDINALITY AS r(k, l, s, d, n)
              ORDER BY r.n
              ON CONFLICT (run_id, input, key) DO NOTHING
              RETURNING 1
            )
            SELECT count(*)::int AS n FROM ins`
          added = (made as { n: number }).n
          // another writer stored some of these keys between the look and the INSERT: their lines are its
          if (added < novel.length)
            for (const [k, l] of await held(
              tx,
              run,
              input.idx,
              novel.map((r) => r.key),
            ))
              lines.set(k, l)
        }
        for (const r of novel) if (!lines.has(r.key)) lines.set(r.key, r.line)
        // a row whose key's item holds another line is a duplicate (a row read again is not)
        const dups = rows
          .filter((r) => lines.get(r.key) !== r.line)
          .map((row) => ({
            l: row.line,
            r: `duplicate id "${row.key}" (the first row with this id is kept)`,
            e: (row.raw ?? JSON.stringify(row.data)).slice(0, 200),
          }))
        const duplicates = dups.length
        if (duplicates > 0) await problem(tx, run, input, dups)
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

/**
 * The line of each of `keys` that the input holds already. One statement whatever the plan: the keys are one array
 * constant, so a scan of the run's items (what the planner picks while its statistics know nothing of the run)
 * tests each item against a hash of them, and an index scan of (run_id, input, key) looks each up. A custom plan
 * is forced: a generic one (a prepared statement's, after five runs) keeps the array a parameter, tested item by
 * item against every key.
 */
async function held(tx: SQL, run: number, input: number, keys: string[]): Promise<Map<string, number>> {
  if (keys.length === 0) return new Map()
  await tx`SET LOCAL plan_cache_mode = force_custom_plan`
  const found: { key: string; row: number }[] = await tx`
    SELECT key, row FROM items WHERE run_id = ${run} AND input = ${input} AND key = ANY(${tx.array(keys, "TEXT")})`
  return new Map(found.map((f) => [f.key, f.row]))
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
