/**
 * Claims and outcomes on PostgreSQL (DESIGN §4 rules 1 and 2): write before the call, commit before counting, leases,
 * recovery. The realtime hot path: a step is one transaction of two set-based statements (the outcomes, then the
 * claims), however many items it carries; claims take rows `FOR UPDATE SKIP LOCKED`, so workers never wait on
 * each other's items and never hold one item twice.
 */
import type { SQL } from "bun"
import type * as api from "../ledger.ts"
import * as states from "../states.ts"
import type { State } from "../states.ts"
import type { Claimed, Dead, Outcome } from "../types.ts"
import { notify, retrying, type Pg } from "./connect.ts"

export class Claims implements api.Claims {
  constructor(readonly pg: Pg) {}

  /**
   * Records finished attempts and claims up to `limit` more, in one transaction: write-before-call (rule 1)
   * and commit-before-count (rule 2) share each commit. Due retries come first, then pending items in
   * ledger order. Outcomes for items whose lease was lost to another worker are recorded on the attempt only.
   */
  async step(
    run: number,
    owner: string,
    outcomes: Outcome[],
    limit: number,
    leaseMs: number,
  ): Promise<Claimed[]> {
    for (const o of outcomes) states.check("running", o.to)
    return retrying(this.pg, () =>
      this.pg.sql.begin((tx) => this.within(tx, run, owner, outcomes, limit, leaseMs, null)),
    )
  }

  /**
   * A step inside the caller's transaction `tx`; with `upTo`, it claims only items whose id is at most that (a
   * canary's first items): locked items are skipped, so a cut limit alone would reach past them.
   */
  async within(
    tx: SQL,
    run: number,
    owner: string,
    outcomes: Outcome[],
    limit: number,
    leaseMs: number,
    upTo: number | null,
  ): Promise<Claimed[]> {
    if (outcomes.length === 0 && limit <= 0) return []
    await record(tx, outcomes, owner)
    if (limit <= 0) return []
    states.check("pending", "running")
    states.check("retry_wait", "running")
    const now = Date.now()
    const top = upTo ?? 2 ** 31 - 1
    // due retries first, then pending items, each in ledger order; the pending ones only as many as the retries
    // left room for. A statement of its own, after the outcomes': an item they put back is claimable here.
    const claimed: Claimed[] = await tx`
      WITH due AS (
        SELECT id FROM items
        WHERE run_id = ${run} AND state = 'retry_wait' AND next_at <= ${now}::float8 AND id <= ${top}::int
        ORDER BY id LIMIT ${limit}::int FOR UPDATE SKIP LOCKED
      ), fresh AS (
        SELECT id FROM items WHERE run_id = ${run} AND state = 'pending' AND id <= ${top}::int
        ORDER BY id LIMIT greatest(${limit}::int - (SELECT count(*) FROM due), 0) FOR UPDATE SKIP LOCKED
      ), taken AS (
        UPDATE items SET state = 'running', attempts = attempts + 1, next_at = NULL, lease_owner = ${owner},
          lease_expires = ${now + leaseMs}::float8, updated_at = ${now}::float8
        WHERE id IN (SELECT id FROM due UNION ALL SELECT id FROM fresh)
        RETURNING id, key, data, attempts
      ), opened AS (
        INSERT INTO attempts (item_id, run_id, n, owner, started_at)
        SELECT id, ${run}, attempts, ${owner}, ${now}::float8 FROM taken
      )
      SELECT id, key, data, attempts AS attempt FROM taken ORDER BY id`
    return [...claimed]
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

  /** Moves every failed (or needs_review) item back to pending, and reopens the run; attempts are kept. */
  async retry(run: number, from: Extract<State, "failed" | "needs_review">): Promise<number> {
    states.check(from, "pending")
    return retrying(this.pg, () =>
      this.pg.sql.begin(async (tx) => {
        const now = Date.now()
        const moved = await tx`
          UPDATE items SET state = 'pending', error = NULL, error_class = NULL, next_at = NULL,
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

/**
 * Closes the outcomes' attempts and settles their items, in one statement (its parts see the items as they were
 * before it). An attempt that was cut short by a stop (`interrupted`) or never sent (`unsent`) is taken back: the
 * item's count goes down by one, so it does not count toward max_attempts, and the attempt is kept, numbered 0
 * (not counted), for the record: the call may have been paid. Only while the item is still this owner's: one
 * already taken back by recovery stays counted as `lost`.
 */
async function record(tx: SQL, outcomes: Outcome[], owner: string): Promise<void> {
  if (outcomes.length === 0) return
  const json = JSON.stringify(outcomes)
  await tx`
    WITH o AS (
      SELECT * FROM jsonb_to_recordset(${json}::text::jsonb) AS r(item int, attempt int, "to" text, label text,
        output text, "errorClass" text, error text, status int, "nextAt" float8, "inputTokens" float8,
        "outputTokens" float8, "cachedTokens" float8, "latencyMs" float8, "endedAt" float8)
    ), held AS (
      UPDATE items SET state = o."to", output = o.output,
        attempts = items.attempts - (o.label IN ('interrupted', 'unsent'))::int,
        error_class = o."errorClass", error = o.error, next_at = o."nextAt",
        input_tokens = items.input_tokens + coalesce(o."inputTokens", 0),
        cached_input_tokens = items.cached_input_tokens + coalesce(o."cachedTokens", 0),
        output_tokens = items.output_tokens + coalesce(o."outputTokens", 0),
        lease_owner = NULL, lease_expires = NULL, updated_at = o."endedAt"
      FROM o WHERE items.id = o.item AND items.state = 'running' AND items.lease_owner = ${owner}
      RETURNING items.id
    )
    UPDATE attempts SET ended_at = o."endedAt", outcome = o.label,
      n = CASE WHEN o.label IN ('interrupted', 'unsent')
        AND attempts.item_id IN (SELECT id FROM held) THEN 0 ELSE attempts.n END,
      error_class = o."errorClass", error = o.error, http_status = o.status, input_tokens = o."inputTokens",
      output_tokens = o."outputTokens", cached_input_tokens = o."cachedTokens", latency_ms = o."latencyMs"
    FROM o WHERE attempts.item_id = o.item AND attempts.n = o.attempt`
}
