/** Claims and outcomes (DESIGN §4 rules 1 and 2): write before the call, commit before counting, leases, recovery. */
import type { Database } from "bun:sqlite"
import * as states from "../states.ts"
import type { State } from "../states.ts"
import type { Looked } from "../ledger.ts"
import type { Claimed, Dead, Outcome } from "../types.ts"
import type { Cache } from "./cache.ts"
import { guard } from "./faults.ts"
import { statements } from "./connect.ts"
import { outcomesJson, vectorBytes } from "../vector.ts"
import type { Runs } from "./runs.ts"

export class Claims {
  private readonly q: ReturnType<typeof prepare>

  constructor(
    private readonly db: Database,
    readonly path: string,
    private readonly runs: Runs,
    private readonly cache: Cache,
  ) {
    this.q = prepare(db)
  }

  /**
   * Records finished attempts and claims up to `limit` more, in one transaction: write-before-call (rule 1)
   * and commit-before-count (rule 2) share each fsync. Due retries come first, then pending items in
   * ledger order (with `looked`, only those the response cache was asked for). Outcomes for items whose lease was
   * lost to another worker are recorded on the attempt only.
   */
  step(
    run: number,
    owner: string,
    outcomes: Outcome[],
    limit: number,
    leaseMs: number,
    o: Looked = {},
  ): Claimed[] {
    return this.db
      .transaction(() => {
        this.record(outcomes, owner)
        if (limit <= 0) return []
        const now = Date.now()
        const picked = this.q.dueRetries.all(run, now, limit)
        const pending = o.looked ? this.q.lookedItems : this.q.pendingItems
        if (picked.length < limit) picked.push(...pending.all(run, limit - picked.length))
        if (picked.length === 0) return []
        for (const item of picked) states.check(item.state, "running")
        // set-based: one statement claims them all and one opens their attempts, however many there are
        const ids = JSON.stringify(picked.map((p) => p.id))
        const claimed = this.q.claim.all(owner, now + leaseMs, now, ids)
        claimed.sort((a, b) => a.id - b.id)
        this.q.openAttempts.run(JSON.stringify(claimed.map((c) => [c.id, c.attempt])), run, owner, now)
        return claimed
      })
      .immediate()
  }

  /**
   * Closes the outcomes' attempts and settles their items. An attempt that was cut short by a stop (`interrupted`)
   * or never sent (`unsent`) is taken back: the item's count goes down by one, so it does not count toward
   * max_attempts, and the attempt is kept, numbered 0 (not counted), for the record: the call may have been paid.
   * Only while the item is still this owner's: one already taken back by recovery stays counted as `lost`.
   */
  private record(outcomes: Outcome[], owner: string): void {
    if (outcomes.length === 0) return
    for (const o of outcomes) states.check("running", o.to)
    // answers to cache are written under their item's key while the item is still this owner's, before it settles
    for (const o of outcomes) if (o.cache) this.cache.put(this.q.heldKey.get(o.item, owner)?.key ?? null, o)
    // an embedding's vector as float32 bytes, while the item is still this owner's (`output` stays null)
    for (const o of outcomes) if (o.vector) this.q.vector.run(vectorBytes(o.vector), o.item, owner)
    const json = outcomesJson(outcomes)
    this.q.endAttempts.run(json, owner)
    this.q.finish.run(json, owner)
  }

  /** Extends the leases of every item this owner holds. */
  renew(run: number, owner: string, leaseMs: number): void {
    this.q.renew.run(Date.now() + leaseMs, run, owner)
  }

  /**
   * Puts back to `pending` every `running` item whose lease has lapsed or whose owner is known dead. The
   * attempt stays counted and is closed as `lost`. Returns how many came back.
   */
  recover(run: number, dead: Dead): number {
    const now = Date.now()
    return this.db
      .transaction(() => {
        let n = 0
        for (const item of this.q.leased.all(run)) {
          if ((item.lease_expires ?? 0) >= now && !dead(item.lease_owner ?? "")) continue
          states.check("running", "pending")
          this.q.release.run(now, item.id)
          this.q.loseAttempt.run(now, item.id)
          n++
        }
        return n
      })
      .immediate()
  }

  /** When the earliest waiting retry falls due, or null when none waits. */
  nextRetryAt(run: number): number | null {
    return this.q.nextRetry.get(run)?.at ?? null
  }

  /**
   * Moves every failed (or needs_review) item back to pending, and reopens the run; attempts are kept. Their cache
   * keys are forgotten, so the cache is asked for them again.
   */
  retry(run: number, from: Extract<State, "failed" | "needs_review" | "rejected">): number {
    states.check(from, "pending")
    return this.db
      .transaction(() => {
        const n = this.q.retryItems.run(Date.now(), run, from).changes
        if (n > 0) this.runs.setState(run, "running")
        return n
      })
      .immediate()
  }
}
guard(Claims)

type Claimable = { id: number; state: State }

/** The outcomes of attempts that do not count: cut short by a stop, or claimed ahead and never sent. */
const UNCOUNTED = "('interrupted', 'unsent')"

function prepare(db: Database) {
  const q = statements(db)
  return {
    leased: q<{ id: number; lease_owner: string | null; lease_expires: number | null }, [number]>(
      "SELECT id, lease_owner, lease_expires FROM items WHERE run_id = ? AND state = 'running'",
    ),
    release: q<void, [number, number]>(
      `UPDATE items SET state = 'pending', lease_owner = NULL, lease_expires = NULL, updated_at = ?
       WHERE id = ? AND state = 'running'`,
    ),
    loseAttempt: q<void, [number, number]>(
      "UPDATE attempts SET ended_at = ?, outcome = 'lost' WHERE item_id = ? AND ended_at IS NULL",
    ),
    dueRetries: q<Claimable, [number, number, number]>(
      `SELECT id, state FROM items WHERE run_id = ? AND state = 'retry_wait' AND next_at <= ? ORDER BY id LIMIT ?`,
    ),
    pendingItems: q<Claimable, [number, number]>(
      "SELECT id, state FROM items WHERE run_id = ? AND state = 'pending' ORDER BY id LIMIT ?",
    ),
    lookedItems: q<Claimable, [number, number]>(
      `SELECT id, state FROM items WHERE run_id = ? AND state = 'pending' AND cache_key IS NOT NULL
       ORDER BY id LIMIT ?`,
    ),
    vector: q<void, [Uint8Array, number, string]>(
      "UPDATE items SET vector = ? WHERE id = ? AND state = 'running' AND lease_owner = ?",
    ),
    heldKey: q<{ key: string | null }, [number, string]>(
      "SELECT cache_key AS key FROM items WHERE id = ? AND state = 'running' AND lease_owner = ?",
    ),
    claim: q<Claimed, [string, number, number, string]>(
      `UPDATE items SET state = 'running', attempts = attempts + 1, next_at = NULL, lease_owner = ?1,
       lease_expires = ?2, updated_at = ?3
       WHERE id IN (SELECT value FROM json_each(?4)) AND state IN ('pending', 'retry_wait')
       RETURNING id, key, data, attempts AS attempt`,
    ),
    openAttempts: q<void, [string, number, string, number]>(
      `INSERT INTO attempts (item_id, run_id, n, owner, started_at)
       SELECT j.value ->> 0, ?2, j.value ->> 1, ?3, ?4 FROM json_each(?1) AS j`,
    ),
    endAttempts: q<void, [string, string]>(
      `UPDATE attempts SET ended_at = j.value ->> 'endedAt', outcome = j.value ->> 'label',
       n = CASE WHEN j.value ->> 'label' IN ${UNCOUNTED} AND EXISTS (SELECT 1 FROM items i
         WHERE i.id = attempts.item_id AND i.state = 'running' AND i.lease_owner = ?2) THEN 0 ELSE attempts.n END,
       error_class = j.value ->> 'errorClass', error = j.value ->> 'error', http_status = j.value ->> 'status',
       input_tokens = j.value ->> 'inputTokens', output_tokens = j.value ->> 'outputTokens',
       cached_input_tokens = j.value ->> 'cachedTokens', cache_write_tokens = j.value ->> 'writeTokens',
       latency_ms = j.value ->> 'latencyMs'
       FROM json_each(?1) AS j WHERE attempts.item_id = j.value ->> 'item' AND attempts.n = j.value ->> 'attempt'`,
    ),
    finish: q<void, [string, string]>(
      `UPDATE items SET state = j.value ->> 'to', output = j.value ->> 'output',
       attempts = attempts - (j.value ->> 'label' IN ${UNCOUNTED}),
       error_class = j.value ->> 'errorClass', error = j.value ->> 'error', next_at = j.value ->> 'nextAt',
       input_tokens = input_tokens + coalesce(j.value ->> 'inputTokens', 0),
       cached_input_tokens = cached_input_tokens + coalesce(j.value ->> 'cachedTokens', 0),
       cache_write_tokens = cache_write_tokens + coalesce(j.value ->> 'writeTokens', 0),
       output_tokens = output_tokens + coalesce(j.value ->> 'outputTokens', 0),
       lease_owner = NULL, lease_expires = NULL, updated_at = j.value ->> 'endedAt'
       FROM json_each(?1) AS j
       WHERE items.id = j.value ->> 'item' AND items.state = 'running' AND items.lease_owner = ?2`,
    ),
    renew: q<void, [number, number, string]>(
      "UPDATE items SET lease_expires = ? WHERE run_id = ? AND lease_owner = ? AND state = 'running'",
    ),
    nextRetry: q<{ at: number | null }, [number]>(
      "SELECT min(next_at) AS at FROM items WHERE run_id = ? AND state = 'retry_wait'",
    ),
    retryItems: q<void, [number, number, State]>(
      `UPDATE items SET state = 'pending', error = NULL, error_class = NULL, next_at = NULL, cache_key = NULL,
       updated_at = ? WHERE run_id = ? AND state = ?`,
    ),
  }
}
