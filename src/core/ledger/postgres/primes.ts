/**
 * A run's priming calls on PostgreSQL (ledger.ts `Primes`, migration 7; sqlite/primes.ts is the same in SQLite): one
 * row each, written once it ended. An answered one's tokens are paid: the run's summary adds them to its totals.
 */
import type { SQL } from "bun"
import type * as api from "../ledger.ts"
import type { Prime, Summary } from "../types.ts"
import { retrying, type Pg } from "./connect.ts"

export class Primes implements api.Primes {
  constructor(readonly pg: Pg) {}

  async record(run: number, p: Prime): Promise<void> {
    await retrying(
      this.pg,
      () => this.pg
        .sql`INSERT INTO primes (run_id, prefix, batch_id, owner, started_at, ended_at, outcome, error,
        http_status, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, latency_ms)
        VALUES (${run}, ${p.prefix}, ${p.batch}, ${p.owner}, ${p.startedAt}::float8, ${p.endedAt}::float8,
        ${p.outcome}, ${p.error ?? null}, ${p.status ?? null}, ${p.inputTokens}::float8, ${p.outputTokens}::float8,
        ${p.cachedTokens}::float8, ${p.writeTokens}::float8, ${p.latencyMs}::float8)`,
    )
  }

  /** When the last answered priming of `prefix` ended: a walk of the (run, prefix, ended_at) index. */
  async last(run: number, prefix: string): Promise<number | null> {
    const [row]: { at: number | null }[] = await retrying(
      this.pg,
      () => this.pg.sql`SELECT max(ended_at) AS at FROM primes
        WHERE run_id = ${run} AND prefix = ${prefix} AND outcome = 'ok'`,
    )
    return row?.at ?? null
  }
}

/** The run's priming calls, counted and summed (reads.ts `summary`): a run has a few, one per batch and prefix. */
export async function primed(sql: SQL, run: number): Promise<Summary["primes"]> {
  const [row]: Summary["primes"][] = await sql`SELECT count(*)::int AS "count",
    count(*) FILTER (WHERE outcome = 'failed')::int AS "failed",
    max(ended_at) FILTER (WHERE outcome = 'ok') AS "lastAt",
    coalesce(sum(input_tokens) FILTER (WHERE outcome = 'ok'), 0) AS "inputTokens",
    coalesce(sum(output_tokens) FILTER (WHERE outcome = 'ok'), 0) AS "outputTokens",
    coalesce(sum(cached_input_tokens) FILTER (WHERE outcome = 'ok'), 0) AS "cachedTokens",
    coalesce(sum(cache_write_tokens) FILTER (WHERE outcome = 'ok'), 0) AS "writeTokens"
    FROM primes WHERE run_id = ${run}`
  return {
    count: row?.count ?? 0,
    failed: row?.failed ?? 0,
    lastAt: row?.lastAt ?? null,
    inputTokens: row?.inputTokens ?? 0,
    outputTokens: row?.outputTokens ?? 0,
    cachedTokens: row?.cachedTokens ?? 0,
    writeTokens: row?.writeTokens ?? 0,
  }
}
