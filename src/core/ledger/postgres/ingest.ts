/**
 * Ingestion on PostgreSQL: a source batch's rows, problems and checkpoint in one transaction, its rows in one
 * statement whatever their number; the run's ingest flag and lease.
 */
import type { SQL } from "bun"
import type { SourceBatch } from "../../../plugins/api/define.ts"
import type * as api from "../ledger.ts"
import { usageText, type Asked } from "../ledger.ts"
import type { State } from "../states.ts"
import { PROGRESS_BUCKET_MS, type Dead, type Input } from "../types.ts"
import { count } from "./cache.ts"
import { notify, retrying, type Pg } from "./connect.ts"
import type { Runs } from "./runs.ts"
import { ended, shift } from "./tallies.ts"

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
   * or a resumed batch). With `asked`, each item keeps its cache key, and the rows the cache answered are stored
   * completed, each with its answer, its first cost and its `cached` attempt, in the same statement; the run's cache
   * counts take the items stored.
   */
  async add(
    run: number,
    input: Pick<Input, "idx" | "path">,
    batch: SourceBatch,
    last: boolean,
    asked?: Asked,
  ): Promise<{ added: number; duplicates: number }> {
    const { rows } = batch
    // each key once (its first row): a row that cannot be inserted must not reach the INSERT, where it would take
    // an id of the sequence all the same (ids would gap, by a whole run's worth at each --reingest)
    const keys = new Set<string>()
    const fresh: Row[] = []
    for (const [i, r] of rows.entries()) {
      if (keys.has(r.key)) continue
      keys.add(r.key)
      const hit = asked?.hits.get(i)
      fresh.push({
        k: r.key,
        l: r.line,
        s: r.id ?? null,
        d: r.raw ?? JSON.stringify(r.data),
        c: asked?.keys[i] ?? null,
        o: hit?.output ?? null,
        u: hit ? usageText(hit) : null,
        p: hit ? (hit.cost_usd ?? 0) : null,
      })
    }
    const checkpoint = JSON.stringify(batch.checkpoint)
    return retrying(this.pg, () =>
      this.pg.sql.begin(async (tx) => {
        const now = Date.now()
        // the lines of the keys the input holds already, looked up before the INSERT and not by a probe a row
        // within it: there the planner, which knows nothing of a new run's items, probed by items_state (run_id
        // alone) and walked every row the statement had inserted so far, for each row: 17,000 rows took 9 s
        const lines = await held(tx, run, input.idx, [...keys])
        const novel = fresh.filter((r) => !lines.has(r.k))
        const made = { pending: 0, completed: 0, saved: 0 }
        if (novel.length > 0) {
          // a hit (`o`, its answer) is stored completed, with its cached attempt; `p` is what it saved
          const [stored] = await tx<(typeof made)[]>`
            WITH r AS (
              SELECT * FROM ROWS FROM (json_to_recordset(${JSON.stringify(novel)}::text::json)
                AS (k text, l int, s text, d text, c text, o text, u text, p float8))
                WITH ORDINALITY AS r(k, l, s, d, c, o, u, p, n)
            ), ins AS (
              INSERT INTO items (run_id, input, key, row, source_id, data, state, updated_at, cache_key, output,
                cached_usage)
              SELECT ${run}, ${input.idx}, r.k, r.l, r.s, r.d, CASE WHEN r.o IS NULL THEN 'pending' ELSE 'completed' END,
                ${now}, r.c, r.o, r.u
              FROM r ORDER BY r.n
              ON CONFLICT (run_id, input, key) DO NOTHING
              RETURNING id, key, state
            ), cached AS (
              INSERT INTO attempts (item_id, run_id, n, owner, started_at, ended_at, outcome, latency_ms)
              SELECT id, ${run}, 0, ${asked?.owner ?? ""}, ${now}::float8, ${now}::float8, 'cached', 0 FROM ins
              WHERE state = 'completed' ORDER BY id
            )
            SELECT count(*) FILTER (WHERE state = 'pending')::int AS pending,
              count(*) FILTER (WHERE state = 'completed')::int AS completed,
              (SELECT coalesce(sum(r.p), 0) FROM ins JOIN r ON r.k = ins.key WHERE ins.state = 'completed')::float8
                AS saved
            FROM ins`
          if (stored) Object.assign(made, stored)
          // another writer stored some of these keys between the look and the INSERT: their lines are its
          if (made.pending + made.completed < novel.length)
            for (const [k, l] of await held(
              tx,
              run,
              input.idx,
              novel.map((r) => r.k),
            ))
              lines.set(k, l)
        }
        for (const r of novel) if (!lines.has(r.k)) lines.set(r.k, r.l)
        const added = made.pending + made.completed
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
        if (added > 0) await this.count(tx, run, made, asked !== undefined, now)
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

  /**
   * Counts the items a batch stored in the tallies; the hits, as the trigger counts a hit served later, in the
   * completions chart too, and, when the cache was asked, hits, misses and savings in the run's cache counts.
   */
  private async count(
    tx: SQL,
    run: number,
    made: { pending: number; completed: number; saved: number },
    asked: boolean,
    now: number,
  ): Promise<void> {
    const moved: Partial<Record<State, number>> = {}
    if (made.pending > 0) moved.pending = made.pending
    if (made.completed > 0) moved.completed = made.completed
    await shift(tx, run, moved)
    if (made.completed > 0) await ended(tx, run, Math.floor(now / PROGRESS_BUCKET_MS), made.completed, 0)
    if (asked) await count(tx, run, made.completed, made.pending, made.saved)
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

/** A row as the INSERT takes it: key, line, source id, data; cache key, answer, cached usage, saved (hits). */
interface Row {
  k: string
  l: number
  s: string | null
  d: string
  c: string | null
  o: string | null
  u: string | null
  p: number | null
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
