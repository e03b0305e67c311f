/**
 * A run's canary (README, "Canary"): how many of its first items, in ledger order, go out as direct calls before the
 * rest, and whether their report was given. The run's first items are found by id: ids only grow, so the id of the
 * run's n-th item, once it exists, never changes.
 */
import type { Database } from "bun:sqlite"
import type { Canary, Looked } from "../ledger.ts"
import type { State } from "../states.ts"
import type { Claimed, Outcome } from "../types.ts"
import type { Claims } from "./claims.ts"
import { guard } from "./faults.ts"
import { statements } from "./connect.ts"
import { ZERO_COUNTS } from "./tallies.ts"

export class Canaries {
  private readonly q: ReturnType<typeof prepare>
  /** `run:n` → the id of the run's n-th item, once it exists. */
  private readonly bounds = new Map<string, number>()

  constructor(
    private readonly db: Database,
    readonly path: string,
    private readonly claims: Claims,
  ) {
    this.q = prepare(db)
  }

  get(run: number): Canary | null {
    return this.q.get.get(run)
  }

  /** Starts the canary, or widens it to the run's first `items` items; either way its report is due. */
  start(run: number, items: number): Canary {
    return this.q.start.get(run, items, Date.now())!
  }

  reported(run: number): void {
    this.q.reported.run(Date.now(), run)
  }

  /** How many items after the run's first `first` were ever attempted, or are not pending. */
  beyond(run: number, first: number): number {
    return this.q.beyond.get(run, this.bound(run, first) ?? Number.MAX_SAFE_INTEGER)?.n ?? 0
  }

  /** The states of the run's first `first` items. */
  counts(run: number, first: number): Record<State, number> {
    return this.head(run, first, Date.now()).counts
  }

  /**
   * Claims.step, its claims kept among the run's first `first` items. In one transaction, so nobody claims or adds
   * between: the limit is cut to how many of them may be claimed now (pending, or a retry due). Step takes due
   * retries first, then pending items in ledger order; so, cut so, every item it takes is one of the first.
   */
  step(
    run: number,
    owner: string,
    outcomes: Outcome[],
    limit: number,
    leaseMs: number,
    first: number,
    o: Looked = {},
  ): Claimed[] {
    return this.db
      .transaction(() => {
        const { counts, due, looked } = this.head(run, first, Date.now())
        // claims take pending items in ledger order (with `looked`, those the cache was asked for): cut to how many
        // of them the head holds, every one taken is one of the head's
        const pending = o.looked ? looked : counts.pending
        return this.claims.step(run, owner, outcomes, Math.min(limit, pending + due), leaseMs, o)
      })
      .immediate()
  }

  private head(
    run: number,
    first: number,
    now: number,
  ): { counts: Record<State, number>; due: number; looked: number } {
    const counts = ZERO_COUNTS()
    let due = 0
    let looked = 0
    // read by id from the run's first item to its first-th: a few rows, however many the run has after them
    const from = this.bound(run, 1) ?? Number.MAX_SAFE_INTEGER
    const upTo = this.bound(run, first) ?? Number.MAX_SAFE_INTEGER
    for (const row of this.q.head.all(run, from, upTo, now)) {
      counts[row.state] = row.n
      due += row.due
      looked += row.looked
    }
    return { counts, due, looked }
  }

  /** The id of the run's `first`-th item in ledger order; null while the run has fewer (then all are among them). */
  private bound(run: number, first: number): number | null {
    if (first <= 0) return 0
    const key = `${run}:${first}`
    const known = this.bounds.get(key)
    if (known !== undefined) return known
    const id = this.q.nth.get(run, first - 1)?.id ?? null
    if (id !== null) this.bounds.set(key, id)
    return id
  }
}
guard(Canaries)

function prepare(db: Database) {
  const q = statements(db)
  return {
    get: q<Canary, [number]>("SELECT items, started_at, reported_at FROM canaries WHERE run_id = ?"),
    start: q<Canary, [number, number, number]>(
      `INSERT INTO canaries (run_id, items, started_at) VALUES (?1, ?2, ?3)
       ON CONFLICT (run_id) DO UPDATE SET items = excluded.items, reported_at = NULL
       RETURNING items, started_at, reported_at`,
    ),
    reported: q<void, [number, number]>("UPDATE canaries SET reported_at = ? WHERE run_id = ?"),
    nth: q<{ id: number }, [number, number]>(
      "SELECT id FROM items WHERE run_id = ? ORDER BY id LIMIT 1 OFFSET ?",
    ),
    beyond: q<{ n: number }, [number, number]>(
      // an item the response cache completed was not sent
      `SELECT count(*) AS n FROM items WHERE run_id = ? AND id > ?
       AND (attempts > 0 OR (state <> 'pending' AND cached_usage IS NULL))`,
    ),
    // +run_id: the rowid range, not the run's whole index entry, is what bounds the read
    head: q<{ state: State; n: number; due: number; looked: number }, [number, number, number, number]>(
      `SELECT state, count(*) AS n, coalesce(sum(state = 'retry_wait' AND next_at <= ?4), 0) AS due,
       coalesce(sum(state = 'pending' AND cache_key IS NOT NULL), 0) AS looked
       FROM items WHERE +run_id = ?1 AND id BETWEEN ?2 AND ?3 GROUP BY state`,
    ),
  }
}
