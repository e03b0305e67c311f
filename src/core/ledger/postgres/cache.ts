/**
 * The response cache on PostgreSQL (README, "Cache"; schema.ts migration 2), as sqlite/cache.ts keeps it: accepted
 * answers by the key of their request, shared by every run and every worker of the store, and the run's items it
 * serves. Answers are written where their items complete (`claim_step`, batches.ts `apply`); a hit is one transaction
 * with the items it completes, set-based whatever their number.
 */
import type { SQL } from "bun"
import type * as api from "../ledger.ts"
import { usageText, type CacheEntry, type CacheStats } from "../ledger.ts"
import { notify, retrying, type Pg } from "./connect.ts"

/** An entry's columns, as `CacheEntry` has them. */
const ENTRY_COLUMNS = `key, output, provider, model, input_tokens, output_tokens, cached_input_tokens, cost_usd,
  created_at`

type Gone = { entries: number; bytes: number }

export class Cache implements api.Cache {
  constructor(private readonly pg: Pg) {}

  /**
   * Pending items after `after`, in ledger order: those never looked up (items_unlooked, however many were), or every
   * one (items_state from the cursor: the state as a range, as reads.ts `ofState` explains).
   */
  pending(
    run: number,
    o: { after: number; limit: number; all?: boolean },
  ): Promise<{ id: number; data: string; key: string | null }[]> {
    return this.rows((sql) =>
      o.all
        ? sql`SELECT id, data, cache_key AS key FROM items WHERE run_id = ${run}
            AND (state, id) > ('pending'::text, ${o.after}::int) AND state <= 'pending'
            ORDER BY state, id LIMIT ${o.limit}`
        : sql`SELECT id, data, cache_key AS key FROM items
            WHERE run_id = ${run} AND state = 'pending' AND cache_key IS NULL AND id > ${o.after}::int
            ORDER BY id LIMIT ${o.limit}`,
    )
  }

  /** The entries of `keys` written at or after `since`: one read, each key a probe of the primary key. */
  get(keys: string[], since: number): Promise<CacheEntry[]> {
    const wanted = [...new Set(keys)]
    if (wanted.length === 0) return Promise.resolve([])
    return this.rows(
      (sql) => sql`SELECT ${sql.unsafe(ENTRY_COLUMNS)} FROM cache
        WHERE key = ANY(${sql.array(wanted, "TEXT")}) AND created_at >= ${since}::float8`,
    )
  }

  /**
   * Completes the hits still pending (and not asked for under another key), each with its `cached` attempt, records
   * the misses' keys where none is, and counts what changed; in one transaction, a statement each. Rows are locked
   * in id order: two workers serving the same items wait for each other, never deadlock, and the second finds them
   * settled. The tallies and the completions chart are the trigger's (`items_counts` counts pending → completed).
   */
  serve(
    run: number,
    owner: string,
    hits: { id: number; key: string; entry: CacheEntry }[],
    misses: { id: number; key: string }[],
  ): Promise<{ hits: number; misses: number }> {
    const served = JSON.stringify(
      hits.map(({ id, key, entry }) => ({
        id,
        key,
        output: entry.output,
        usage: usageText(entry),
        saved: entry.cost_usd ?? 0,
      })),
    )
    const missed = JSON.stringify(misses)
    return retrying(this.pg, () =>
      this.pg.sql.begin(async (tx) => {
        const now = Date.now()
        let done = { n: 0, saved: 0, again: 0 }
        if (hits.length > 0) {
          const [row]: { n: number; saved: number; again: number }[] = await tx`WITH h AS (
              SELECT * FROM jsonb_to_recordset(${served}::text::jsonb) AS h(id int, key text, output text, usage text,
                saved float8)
            ), l AS (
              SELECT items.id, h.key, h.output, h.usage, h.saved, items.cache_key IS NOT NULL AS again
              FROM items JOIN h ON h.id = items.id
              WHERE items.run_id = ${run} AND items.state = 'pending'
                AND (items.cache_key IS NULL OR items.cache_key = h.key)
              ORDER BY items.id FOR UPDATE OF items
            ), u AS (
              UPDATE items SET state = 'completed', output = l.output, cached_usage = l.usage, cache_key = l.key,
                error = NULL, error_class = NULL, next_at = NULL, updated_at = ${now}::float8
              FROM l WHERE items.id = l.id RETURNING items.id, l.saved, l.again
            ), a AS (
              INSERT INTO attempts (item_id, run_id, n, owner, started_at, ended_at, outcome, latency_ms)
              SELECT u.id, ${run}, 0, ${owner}, ${now}::float8, ${now}::float8, 'cached', 0 FROM u ORDER BY u.id
            )
            SELECT count(*)::int AS n, coalesce(sum(saved), 0)::float8 AS saved,
              (count(*) FILTER (WHERE again))::int AS again FROM u`
          done = row ?? done
        }
        let asked = 0
        if (misses.length > 0) {
          const [row]: { n: number }[] = await tx`WITH m AS (
              SELECT * FROM jsonb_to_recordset(${missed}::text::jsonb) AS m(id int, key text)
            ), l AS (
              SELECT items.id, m.key FROM items JOIN m ON m.id = items.id
              WHERE items.run_id = ${run} AND items.state = 'pending' AND items.cache_key IS NULL
              ORDER BY items.id FOR UPDATE OF items
            ), u AS (
              UPDATE items SET cache_key = l.key FROM l WHERE items.id = l.id RETURNING 1
            )
            SELECT count(*)::int AS n FROM u`
          asked = row?.n ?? 0
        }
        // an item looked up before and served now was counted a miss then: it is a hit, and no longer a miss
        if (done.n > 0 || asked > 0) await count(tx, run, done.n, asked - done.again, done.saved)
        // items looked up are claimable by the looked claims of every worker
        if (asked > 0) await notify(tx, this.pg, { run, kind: "items" })
        return { hits: done.n, misses: asked }
      }),
    )
  }

  async stats(): Promise<CacheStats> {
    type Totals = { entries: number; bytes: number; oldest: number | null; newest: number | null }
    type Runs = { hits: number; misses: number; saved: number }
    type Model = CacheStats["models"][number]
    const [[totals], [runs], models] = await this.read((sql) =>
      Promise.all([
        sql<Totals[]>`SELECT count(*)::int AS entries, coalesce(sum(bytes), 0)::float8 AS bytes,
          min(created_at) AS oldest, max(created_at) AS newest FROM cache`,
        sql<Runs[]>`SELECT coalesce(sum(hits), 0)::float8 AS hits, coalesce(sum(misses), 0)::float8 AS misses,
          coalesce(sum(saved_usd), 0)::float8 AS saved FROM cache_tallies`,
        // names in byte order (COLLATE "C"), as SQLite orders them
        sql<Model[]>`SELECT provider, model, count(*)::int AS entries, sum(bytes)::float8 AS bytes FROM cache
          GROUP BY provider, model ORDER BY entries DESC, provider COLLATE "C", model COLLATE "C"`,
      ]),
    )
    return {
      entries: totals?.entries ?? 0,
      bytes: totals?.bytes ?? 0,
      hits: runs?.hits ?? 0,
      misses: runs?.misses ?? 0,
      saved_usd: runs?.saved ?? 0,
      oldest: totals?.oldest ?? null,
      newest: totals?.newest ?? null,
      models: [...models],
    }
  }

  /** Removes the entries written before `before`; what went, as the statement that removed them counted it. */
  async prune(before: number): Promise<Gone> {
    const [gone] = await this.read(
      (sql): Promise<Gone[]> => sql`WITH d AS (DELETE FROM cache WHERE created_at < ${before}::float8
          RETURNING bytes)
        SELECT count(*)::int AS entries, coalesce(sum(bytes), 0)::float8 AS bytes FROM d`,
    )
    return gone ?? { entries: 0, bytes: 0 }
  }

  /** Removes every entry, or those of one model; what went. */
  async clear(model?: string): Promise<Gone> {
    const [gone] = await this.read(
      (sql): Promise<Gone[]> => sql`WITH d AS (DELETE FROM cache
          WHERE ${model === undefined}::boolean OR model = ${model ?? null}::text RETURNING bytes)
        SELECT count(*)::int AS entries, coalesce(sum(bytes), 0)::float8 AS bytes FROM d`,
    )
    return gone ?? { entries: 0, bytes: 0 }
  }

  /** One statement (or a few together), again while the connection is lost. */
  private read<T>(fn: (sql: SQL) => Promise<T>): Promise<T> {
    return retrying(this.pg, () => fn(this.pg.sql))
  }

  /** Rows of one read as a plain array (Bun.SQL's result array is a class of its own). */
  private async rows<T>(fn: (sql: SQL) => Promise<T[]>): Promise<T[]> {
    return [...(await this.read(fn))]
  }
}

/**
 * Counts hits, misses and what the hits saved in the run's cache tallies, on this connection's shard (workers do not
 * queue on one row); inside the caller's transaction.
 */
export async function count(
  tx: SQL,
  run: number,
  hits: number,
  misses: number,
  saved: number,
): Promise<void> {
  await tx`INSERT INTO cache_tallies AS t VALUES (${run}, shard(), ${hits}, ${misses}, ${saved}::float8)
    ON CONFLICT (run_id, shard) DO UPDATE SET hits = t.hits + excluded.hits, misses = t.misses + excluded.misses,
    saved_usd = t.saved_usd + excluded.saved_usd`
}

/** A run's cache counts, summed over the shards (reads.ts `summary`). */
export async function runCounts(
  sql: SQL,
  run: number,
): Promise<{ hits: number; misses: number; savedUsd: number }> {
  const [row]: { hits: number; misses: number; saved: number }[] = await sql`SELECT
    coalesce(sum(hits), 0)::float8 AS hits, coalesce(sum(misses), 0)::float8 AS misses,
    coalesce(sum(saved_usd), 0)::float8 AS saved FROM cache_tallies WHERE run_id = ${run}`
  return { hits: row?.hits ?? 0, misses: row?.misses ?? 0, savedUsd: row?.saved ?? 0 }
}
