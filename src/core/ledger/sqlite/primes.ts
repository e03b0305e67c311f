/**
 * A run's priming calls (ledger.ts `Primes`, migration 13): one row each, written once it ended. An answered one's
 * tokens are paid: the run's summary adds them to its totals (reads.ts `summary`).
 */
import type { Database } from "bun:sqlite"
import type { Prime, Summary } from "../types.ts"
import { guard } from "./faults.ts"
import { statements } from "./connect.ts"

export class Primes {
  private readonly q: ReturnType<typeof prepare>

  constructor(
    db: Database,
    readonly path: string,
  ) {
    this.q = prepare(db)
  }

  record(run: number, p: Prime): void {
    this.q.record.run(
      run,
      p.prefix,
      p.batch,
      p.owner,
      p.startedAt,
      p.endedAt,
      p.outcome,
      p.error ?? null,
      p.status ?? null,
      p.inputTokens,
      p.outputTokens,
      p.cachedTokens,
      p.writeTokens,
      p.latencyMs,
    )
  }

  /** When the last answered priming of `prefix` ended: one probe of the (run, prefix, ended_at) index. */
  last(run: number, prefix: string): number | null {
    return this.q.last.get(run, prefix)?.at ?? null
  }

  /** The run's priming calls, counted and summed: a run has a few (one per batch and prefix at most). */
  totals(run: number): Summary["primes"] {
    const row = this.q.totals.get(run)
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
}
guard(Primes)

function prepare(db: Database) {
  const q = statements(db)
  return {
    record: q<
      void,
      [
        number,
        string,
        number | null,
        string,
        number,
        number,
        string,
        string | null,
        number | null,
        number,
        number,
        number,
        number,
        number,
      ]
    >(
      `INSERT INTO primes (run_id, prefix, batch_id, owner, started_at, ended_at, outcome, error, http_status,
       input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, latency_ms)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    last: q<{ at: number | null }, [number, string]>(
      "SELECT max(ended_at) AS at FROM primes WHERE run_id = ? AND prefix = ? AND outcome = 'ok'",
    ),
    totals: q<Summary["primes"], [number]>(
      `SELECT count(*) AS count, coalesce(sum(outcome = 'failed'), 0) AS failed,
       max(CASE WHEN outcome = 'ok' THEN ended_at END) AS lastAt,
       coalesce(sum(CASE WHEN outcome = 'ok' THEN input_tokens END), 0) AS inputTokens,
       coalesce(sum(CASE WHEN outcome = 'ok' THEN output_tokens END), 0) AS outputTokens,
       coalesce(sum(CASE WHEN outcome = 'ok' THEN cached_input_tokens END), 0) AS cachedTokens,
       coalesce(sum(CASE WHEN outcome = 'ok' THEN cache_write_tokens END), 0) AS writeTokens
       FROM primes WHERE run_id = ?`,
    ),
  }
}
