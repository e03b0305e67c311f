/**
 * A run's canary on PostgreSQL (README, "Canary"): how many of its first items, in ledger order, go out as direct
 * calls before the rest, and whether their report was given. The run's first items are found by id: ids only grow,
 * so the id of the run's n-th item, once it exists, never changes.
 */
import type { SQL } from "bun"
import type * as api from "../ledger.ts"
import type { Canary, Looked } from "../ledger.ts"
import * as states from "../states.ts"
import type { State } from "../states.ts"
import type { Claimed, Outcome } from "../types.ts"
import type { Claims } from "./claims.ts"
import { retrying, type Pg } from "./connect.ts"
import { ZERO_COUNTS } from "./tallies.ts"

/** Above every id (ids are int4). */
const TOP = 2 ** 31 - 1

export class Canaries implements api.Canaries {
  /** `run:n` → the id of the run's n-th item, once it exists. */
  private readonly bounds = new Map<string, number>()

  constructor(
    readonly pg: Pg,
    private readonly claims: Claims,
  ) {}

  async get(run: number): Promise<Canary | null> {
    const [row] = await retrying(
      this.pg,
      (): Promise<Canary[]> =>
        this.pg.sql`SELECT items, started_at, reported_at FROM canaries WHERE run_id = ${run}`,
    )
    return row ?? null
  }

  /** Starts the canary, or widens it to the run's first `items` items; either way its report is due. */
  async start(run: number, items: number): Promise<Canary> {
    const [row] = await retrying(
      this.pg,
      (): Promise<Canary[]> => this.pg.sql`
        INSERT INTO canaries (run_id, items, started_at) VALUES (${run}, ${items}, ${Date.now()}::float8)
        ON CONFLICT (run_id) DO UPDATE SET items = excluded.items, reported_at = NULL
        RETURNING items, started_at, reported_at`,
    )
    return row!
  }

  async reported(run: number): Promise<void> {
    await retrying(
      this.pg,
      () => this.pg.sql`UPDATE canaries SET reported_at = ${Date.now()}::float8 WHERE run_id = ${run}`,
    )
  }

  /**
   * How many items after the run's first `first` were ever attempted, or are not pending; an item the response cache
   * completed was not sent, and is not counted.
   */
  async beyond(run: number, first: number): Promise<number> {
    return retrying(this.pg, async () => {
      const after = (await this.bound(this.pg.sql, run, first)) ?? TOP
      const [row]: { n: number }[] = await this.pg.sql`
        SELECT count(*)::int AS n FROM items
        WHERE run_id = ${run} AND id > ${after}
          AND (attempts > 0 OR (state <> 'pending' AND cached_usage IS NULL))`
      return row?.n ?? 0
    })
  }

  /** The states of the run's first `first` items. */
  async counts(run: number, first: number): Promise<Record<State, number>> {
    return retrying(this.pg, async () => (await this.head(this.pg.sql, run, first, Date.now())).counts)
  }

  /**
   * Claims.step, its claims kept among the run's first `first` items, in one transaction: the limit is cut to how
   * many of them may be claimed now (pending, or a retry due), read before the outcomes are recorded, and the
   * claims are bounded by the id of the run's `first`-th item (another worker's locked items are skipped, so
   * the cut alone could reach past them). With `looked`, the pending items counted are those the response cache
   * was asked for, the only ones claimed.
   */
  async step(
    run: number,
    owner: string,
    outcomes: Outcome[],
    limit: number,
    leaseMs: number,
    first: number,
    o: Looked = {},
  ): Promise<Claimed[]> {
    for (const x of outcomes) states.check("running", x.to)
    const looked = o.looked ?? false
    return retrying(this.pg, () =>
      this.pg.sql.begin(async (tx) => {
        const head = await this.head(tx, run, first, Date.now())
        const upTo = await this.bound(tx, run, first)
        const cut = Math.min(limit, (looked ? head.looked : head.counts.pending) + head.due)
        return this.claims.within(tx, run, owner, outcomes, cut, leaseMs, upTo, looked)
      }),
    )
  }

  private async head(
    sql: SQL,
    run: number,
    first: number,
    now: number,
  ): Promise<{ counts: Record<State, number>; due: number; looked: number }> {
    const counts = ZERO_COUNTS()
    let due = 0
    let looked = 0
    // read by id from the run's first item to its first-th: a few rows, however many the run has after them
    const from = (await this.bound(sql, run, 1)) ?? TOP
    const upTo = (await this.bound(sql, run, first)) ?? TOP
    const rows: { state: State; n: number; due: number; looked: number }[] = await sql`
      SELECT state, count(*)::int AS n,
        count(*) FILTER (WHERE state = 'retry_wait' AND next_at <= ${now}::float8)::int AS due,
        count(*) FILTER (WHERE state = 'pending' AND cache_key IS NOT NULL)::int AS looked
      FROM items WHERE run_id = ${run} AND id BETWEEN ${from} AND ${upTo} GROUP BY state`
    for (const row of rows) {
      counts[row.state] = row.n
      due += row.due
      looked += row.looked
    }
    return { counts, due, looked }
  }

  /** The id of the run's `first`-th item in ledger order; null while the run has fewer (then all are among them). */
  private async bound(sql: SQL, run: number, first: number): Promise<number | null> {
    if (first <= 0) return 0
    const key = `${run}:${first}`
    const known = this.bounds.get(key)
    if (known !== undefined) return known
    const [row]: { id: number }[] = await sql`
      SELECT id FROM items WHERE run_id = ${run} ORDER BY id LIMIT 1 OFFSET ${first - 1}::int`
    const id = row?.id ?? null
    if (id !== null) this.bounds.set(key, id)
    return id
  }
}
