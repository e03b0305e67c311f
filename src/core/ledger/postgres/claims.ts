/**
 * Claims and outcomes on PostgreSQL (DESIGN §4 rules 1 and 2): write before the call, commit before counting, leases,
 * recovery. The realtime hot path: a step is one statement (the schema's `claim_step`: the outcomes, then the
 * claims), its own transaction, one round trip however many items it carries; claims take rows `FOR UPDATE SKIP
 * LOCKED`, so workers never wait on each other's items and never hold one item twice, and look for pending items
 * from a cursor past those this process claimed, not over the dead index entries of every item claimed before.
 */
import type { SQL } from "bun"
import type * as api from "../ledger.ts"
import type { Looked } from "../ledger.ts"
import * as states from "../states.ts"
import type { State } from "../states.ts"
import type { Claimed, Dead, Outcome } from "../types.ts"
import { outcomesJson, vectorBytes } from "../vector.ts"
import { notify, retrying, type Pg } from "./connect.ts"

/** Where this process looks for a run's pending items next, and the run's requeues it had seen then. */
interface Cursor {
  from: number
  seen: number
}

export class Claims implements api.Claims {
  /** By run: see the schema's `claim_step`. */
  private readonly cursors = new Map<number, Cursor>()

  constructor(readonly pg: Pg) {}

  /**
   * Records finished attempts and claims up to `limit` more, in one statement: write-before-call (rule 1)
   * and commit-before-count (rule 2) share each commit. Due retries come first, then pending items in
   * ledger order (with `looked`, only those the response cache was asked for). Outcomes for items whose lease was
   * lost to another worker are recorded on the attempt only; a completed one with `cache` writes its answer under
   * its item's key in the same statement.
   */
  async step(
    run: number,
    owner: string,
    outcomes: Outcome[],
    limit: number,
    leaseMs: number,
    o: Looked = {},
  ): Promise<Claimed[]> {
    for (const x of outcomes) states.check("running", x.to)
    // one statement, its own transaction: no BEGIN and COMMIT round trips
    return retrying(this.pg, () =>
      this.within(this.pg.sql, run, owner, outcomes, limit, leaseMs, null, o.looked ?? false),
    )
  }

  /**
   * A step as one statement (the schema's `claim_step`), in the caller's transaction `sql` or as one of its own;
   * with `upTo`, it claims only items whose id is at most that (a canary's first items): locked items are
   * skipped, so a cut limit alone would reach past them. With `looked`, only pending items with a cache key.
   */
  async within(
    sql: SQL,
    run: number,
    owner: string,
    outcomes: Outcome[],
    limit: number,
    leaseMs: number,
    upTo: number | null,
    looked: boolean,
  ): Promise<Claimed[]> {
    if (outcomes.length === 0 && limit <= 0) return []
    if (limit > 0) {
      states.check("pending", "running")
      states.check("retry_wait", "running")
    }
    const now = Date.now()
    // an embedding's vectors as float32 bytes first, while their items are still this owner's: written again
    // harmlessly if the step after fails, and read only once the item is completed
    const vectors = outcomes.filter((x) => x.vector)
    if (vectors.length > 0) {
      const pairs = JSON.stringify(
        vectors.map((x) => [x.item, Buffer.from(vectorBytes(x.vector!)).toString("hex")]),
      )
      await sql`UPDATE items SET vector = decode(v.value ->> 1, 'hex')
        FROM jsonb_array_elements(${pairs}::text::jsonb) AS v
        WHERE items.id = (v.value ->> 0)::bigint AND items.state = 'running' AND items.lease_owner = ${owner}`
    }
    const json = outcomes.length > 0 ? outcomesJson(outcomes) : null
    const cursor = this.cursors.get(run) ?? { from: 0, seen: -1 }
    const rows: (Claimed & { seen: number; next_from: number })[] = await sql`
      SELECT id, key, data, attempt, seen, next_from FROM claim_step(${run}::int, ${owner}::text, ${json}::text,
        ${Math.max(limit, 0)}::int, ${now}::float8, ${now + leaseMs}::float8, ${upTo ?? 2 ** 31 - 1}::int,
        ${cursor.from}::int, ${cursor.seen}::int, ${looked}::boolean)`
    if (rows.length === 0) return []
    let from = 0
    for (const r of rows) from = Math.max(from, r.next_from)
    this.cursors.set(run, { from, seen: rows[0]!.seen })
    return rows.map(({ id, key, data, attempt }) => ({ id, key, data, attempt })).sort((a, b) => a.id - b.id)
  }

  /** Extends the leases of every item this owner holds. */
  async renew(run: number, owner: string, leaseMs: number): Promise<void> {
    await retrying(
      this.pg,
      () => this.pg.sql`UPDATE items SET lease_expires = ${Date.now() + leaseMs}::float8
        WHERE run_id = ${run} AND lease_owner = ${owner} AND state = 'running'`,
    )
  }

  /**
   * Puts back to `pending` every `running` item whose lease has lapsed or whose owner is known dead. The
   * attempt stays counted and is closed as `lost`. Returns how many came back. Items another transaction has
   * locked are being settled or claimed right now: they are skipped, not waited for.
   */
  async recover(run: number, dead: Dead): Promise<number> {
    states.check("running", "pending")
    return retrying(this.pg, () =>
      this.pg.sql.begin(async (tx) => {
        const now = Date.now()
        // the owners are few (a process each), so `dead` judges each once, not once per item
        const owners: { owner: string }[] = await tx`
          SELECT DISTINCT coalesce(lease_owner, '') AS owner FROM items WHERE run_id = ${run} AND state = 'running'`
        const gone = JSON.stringify(owners.map((o) => o.owner).filter((o) => dead(o)))
        const [row]: { n: number }[] = await tx`
          WITH lapsed AS (
            SELECT id FROM items
            WHERE run_id = ${run} AND state = 'running' AND (coalesce(lease_expires, 0) < ${now}::float8
              OR coalesce(lease_owner, '') IN (SELECT jsonb_array_elements_text(${gone}::text::jsonb)))
            FOR UPDATE SKIP LOCKED
          ), back AS (
            UPDATE items SET state = 'pending', lease_owner = NULL, lease_expires = NULL, updated_at = ${now}::float8
            FROM lapsed WHERE items.id = lapsed.id RETURNING items.id
          ), lost AS (
            UPDATE attempts SET ended_at = ${now}::float8, outcome = 'lost'
            FROM back WHERE attempts.item_id = back.id AND attempts.ended_at IS NULL
          )
          SELECT count(*)::int AS n FROM back`
        const n = row?.n ?? 0
        if (n > 0) await notify(tx, this.pg, { run, kind: "items" })
        return n
      }),
    )
  }

  /** When the earliest waiting retry falls due, or null when none waits. */
  async nextRetryAt(run: number): Promise<number | null> {
    const [row] = await retrying(
      this.pg,
      (): Promise<{ at: number | null }[]> =>
        this.pg.sql`SELECT min(next_at) AS at FROM items WHERE run_id = ${run} AND state = 'retry_wait'`,
    )
    return row?.at ?? null
  }

  /**
   * Moves every failed (or needs_review) item back to pending, and reopens the run; attempts are kept. Their cache
   * keys are forgotten, so the cache is asked for them again.
   */
  async retry(run: number, from: Extract<State, "failed" | "needs_review" | "rejected">): Promise<number> {
    states.check(from, "pending")
    return retrying(this.pg, () =>
      this.pg.sql.begin(async (tx) => {
        const now = Date.now()
        const moved = await tx`
          UPDATE items SET state = 'pending', error = NULL, error_class = NULL, next_at = NULL, cache_key = NULL,
            updated_at = ${now}::float8
          WHERE run_id = ${run} AND state = ${from}`
        const n = moved.count
        if (n === 0) return 0
        // as runs.setState(run, "running"), in this transaction: the items and the reopened run land together
        const [was]: { state: string }[] = await tx`SELECT state FROM runs WHERE id = ${run} FOR UPDATE`
        await tx`UPDATE runs SET state = 'running', reason = NULL, updated_at = ${now}::float8, finished_at = NULL
          WHERE id = ${run}`
        await notify(tx, this.pg, { run, kind: "items" })
        if (was && was.state !== "running") await notify(tx, this.pg, { run, kind: "state" })
        return n
      }),
    )
  }

  /** The processes that hold a lease on the run: items in flight, ingestion, batches; by name, bytewise. */
  async holders(run: number): Promise<string[]> {
    const rows = await retrying(
      this.pg,
      (): Promise<{ owner: string }[]> => this.pg.sql`
        SELECT owner FROM (
          SELECT lease_owner AS owner FROM items
          WHERE run_id = ${run} AND state = 'running' AND lease_owner IS NOT NULL
          UNION SELECT ingest_owner FROM runs WHERE id = ${run} AND ingest_owner IS NOT NULL
          UNION SELECT batch_owner FROM runs WHERE id = ${run} AND batch_owner IS NOT NULL
        ) AS h ORDER BY owner COLLATE "C"`,
    )
    return rows.map((r) => r.owner)
  }
}
