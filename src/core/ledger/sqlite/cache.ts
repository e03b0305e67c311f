/**
 * The response cache (README, "Cache"; migrations 7 and 11): accepted answers by the key of their request, and the run's
 * items it serves. A hit is one transaction with the item it completes; an answer is written in the transaction that
 * completes its item (`put`, called by claims.ts and batches.ts).
 */
import type { Database } from "bun:sqlite"
import { usageText, type CacheEntry, type CacheStats } from "../ledger.ts"
import { PROGRESS_BUCKET_MS, type CacheWrite } from "../types.ts"
import { guard } from "./faults.ts"
import { statements } from "./connect.ts"
import type { Tallies } from "./tallies.ts"

export class Cache {
  private readonly q: ReturnType<typeof prepare>
  /** Where the next look-up's entries are guessed to start (`get`): after the last ones, when they were neighbours. */
  private next: number | undefined

  constructor(
    private readonly db: Database,
    readonly path: string,
    private readonly tallies: Tallies,
  ) {
    this.q = prepare(db)
  }

  /** Pending items after `after`, in ledger order: those never looked up (their own index), or every one. */
  pending(
    run: number,
    o: { after: number; limit: number; all?: boolean },
  ): { id: number; data: string; key: string | null }[] {
    return (o.all ? this.q.pendingAll : this.q.pendingUnlooked).all(run, o.after, o.limit)
  }

  /**
   * The entries of `keys` written at or after `since`. Entries are kept in the order they were written (migration
   * 11), and a run asks for its rows' answers in about the order an earlier run of them wrote them: when the last
   * look-up's entries were neighbours, the entries after them are read first, in one pass along the table, and only
   * the keys not among them are searched by their slots (a random page of the index each). A run in another order
   * costs one short wasted read, and stops the guessing until its entries are neighbours again.
   */
  get(keys: string[], since: number): CacheEntry[] {
    const wanted = new Set(keys)
    const out: CacheEntry[] = []
    const ids: number[] = []
    const take = (entry: CacheEntry & { id: number }): void => {
      if (!wanted.delete(entry.key)) return
      ids.push(entry.id)
      // field by field: a rest copy (`{ id, ...rest }`) of each entry showed in the profile of a million hits
      out.push({
        key: entry.key,
        output: entry.output,
        provider: entry.provider,
        model: entry.model,
        input_tokens: entry.input_tokens,
        output_tokens: entry.output_tokens,
        cached_input_tokens: entry.cached_input_tokens,
        cost_usd: entry.cost_usd,
        created_at: entry.created_at,
      })
    }
    if (this.next !== undefined) {
      const to = this.next + Math.ceil(wanted.size * 1.25) + 16
      for (const entry of this.q.range.all(this.next, to, since)) take(entry)
    }
    const guessed = out.length
    if (wanted.size > 0)
      for (const entry of this.q.entries.all(JSON.stringify([...wanted].map(slot)), since)) take(entry)
    this.next = neighbours(ids, guessed, keys.length)
    return out
  }

  /**
   * Completes the hits still pending, records the misses' keys, and counts both; in one transaction. The tallies
   * and the completions chart are counted here once (the triggers skip pending → completed).
   */
  serve(
    run: number,
    owner: string,
    hits: { id: number; key: string; entry: CacheEntry }[],
    misses: { id: number; key: string }[],
  ): { hits: number; misses: number } {
    return this.db
      .transaction(() => {
        const now = Date.now()
        const served: number[] = []
        let saved = 0
        let again = 0
        for (const { id, key, entry } of hits) {
          const usage = usageText(entry)
          // an item looked up before and served now was counted a miss then: it is a hit, and no longer a miss
          if (!this.q.hit.get(entry.output, usage, key, now, id, run)) {
            if (!this.q.hitAgain.get(entry.output, usage, key, now, id, run)) continue
            again++
          }
          served.push(id)
          saved += entry.cost_usd ?? 0
        }
        this.attempts(served, run, owner, now)
        let missed = 0
        for (const { id, key } of misses) missed += this.q.miss.run(key, id, run).changes
        const n = served.length
        if (n > 0) {
          this.tallies.shift(run, { pending: -n, completed: n })
          this.tallies.ended(run, Math.floor(now / PROGRESS_BUCKET_MS), n, 0)
        }
        if (n > 0 || missed > 0) this.count(run, n, missed - again, saved)
        return { hits: n, misses: missed }
      })
      .immediate()
  }

  /** Hits' attempts: outcome `cached`, not counted, no call; inside the caller's transaction. */
  attempts(items: number[], run: number, owner: string, now: number): void {
    if (items.length > 0) this.q.cachedAttempts.run(JSON.stringify(items), run, owner, now)
  }

  /**
   * The attempts of the hits a transaction stored as new items (ingest), in one statement: every item of the run
   * stored completed with an id above `before`, the largest id before the transaction; inside it.
   */
  attemptsAfter(before: number, run: number, owner: string, now: number): void {
    this.q.cachedAttemptsAfter.run(run, before, owner, now)
  }

  /** Counts hits, misses and what the hits saved in the run's cache tallies; inside the caller's transaction. */
  count(run: number, hits: number, misses: number, saved: number): void {
    this.q.count.run(run, hits, misses, saved)
  }

  /**
   * Writes an outcome's answer under its item's key, when the outcome completes the item and carries a write (the
   * job's cache writes), replacing what the key held (an expired or unusable entry, or `--refresh-cache`). Only for
   * an item that was looked up with a key; called inside the caller's transaction.
   */
  put(key: string | null, answer: Answer): void {
    const write = answer.cache
    if (!key || !write || answer.to !== "completed" || answer.output === undefined) return
    this.q.put.run(
      slot(key),
      key,
      write.provider,
      write.model,
      answer.output,
      answer.inputTokens ?? 0,
      answer.outputTokens ?? 0,
      answer.cachedTokens ?? 0,
      write.cost,
      Buffer.byteLength(answer.output),
      answer.endedAt,
    )
  }

  stats(): CacheStats {
    const totals = this.q.totals.get()
    const runs = this.q.runTotals.get()
    return {
      entries: totals?.entries ?? 0,
      bytes: totals?.bytes ?? 0,
      hits: runs?.hits ?? 0,
      misses: runs?.misses ?? 0,
      saved_usd: runs?.saved ?? 0,
      oldest: totals?.oldest ?? null,
      newest: totals?.newest ?? null,
      models: this.q.models.all(),
    }
  }

  prune(before: number): { entries: number; bytes: number } {
    return this.db
      .transaction(() => {
        const gone = this.q.pruned.get(before)
        this.q.prune.run(before)
        return { entries: gone?.entries ?? 0, bytes: gone?.bytes ?? 0 }
      })
      .immediate()
  }

  clear(model?: string): { entries: number; bytes: number } {
    return this.db
      .transaction(() => {
        const gone = model === undefined ? this.q.clearedAll.get() : this.q.cleared.get(model)
        if (model === undefined) this.q.clearAll.run()
        else this.q.clear.run(model)
        return { entries: gone?.entries ?? 0, bytes: gone?.bytes ?? 0 }
      })
      .immediate()
  }
}
guard(Cache)

/** What `put` reads of an outcome (a call's or a batch line's): the answer, the usage it was paid for, the write. */
export interface Answer {
  to: string
  cache?: CacheWrite | undefined
  output?: string | undefined
  inputTokens?: number | undefined
  outputTokens?: number | undefined
  cachedTokens?: number | undefined
  endedAt: number
}

type Gone = { entries: number; bytes: number }

/** The slot of a key's entry: 52 bits of its hash, a whole number a double holds exactly (see migration 11). */
export function slot(key: string): number {
  return Number(Bun.hash.wyhash(key) & 0xfffffffffffffn)
}

/** What a look-up reads of an entry, and its place in the table. */
const ENTRY = `id, key, output, provider, model, input_tokens, output_tokens, cached_input_tokens, cost_usd, created_at`

/**
 * After a look-up that found the entries `ids` (the first `guessed` of them read along the table) for `asked` keys:
 * the id to read on from, when most of them were found where guessed, or when they lie close together (within
 * twice their number); otherwise undefined, and the next look-up searches by slot alone.
 */
export function neighbours(ids: number[], guessed: number, asked: number): number | undefined {
  if (ids.length === 0) return undefined
  let lo = Number.POSITIVE_INFINITY
  let hi = 0
  for (const id of ids) {
    if (id < lo) lo = id
    if (id > hi) hi = id
  }
  const close = hi - lo + 1 <= 2 * ids.length
  return guessed * 2 >= asked || close ? hi + 1 : undefined
}

function prepare(db: Database) {
  const q = statements(db)
  type Pending = { id: number; data: string; key: string | null }
  return {
    pendingUnlooked: q<Pending, [number, number, number]>(
      `SELECT id, data, cache_key AS key FROM items INDEXED BY items_unlooked
       WHERE run_id = ? AND state = 'pending' AND cache_key IS NULL AND id > ? ORDER BY id LIMIT ?`,
    ),
    pendingAll: q<Pending, [number, number, number]>(
      `SELECT id, data, cache_key AS key FROM items
       WHERE run_id = ? AND state = 'pending' AND id > ? ORDER BY id LIMIT ?`,
    ),
    entries: q<CacheEntry & { id: number }, [string, number]>(
      `SELECT ${ENTRY} FROM cache WHERE slot IN (SELECT value FROM json_each(?1)) AND created_at >= ?2`,
    ),
    range: q<CacheEntry & { id: number }, [number, number, number]>(
      `SELECT ${ENTRY} FROM cache WHERE id BETWEEN ?1 AND ?2 AND created_at >= ?3`,
    ),
    hit: q<{ id: number }, [string, string, string, number, number, number]>(
      `UPDATE items SET state = 'completed', output = ?1, cached_usage = ?2, cache_key = ?3, error = NULL,
       error_class = NULL, next_at = NULL, updated_at = ?4
       WHERE id = ?5 AND run_id = ?6 AND state = 'pending' AND cache_key IS NULL RETURNING id`,
    ),
    hitAgain: q<{ id: number }, [string, string, string, number, number, number]>(
      `UPDATE items SET state = 'completed', output = ?1, cached_usage = ?2, error = NULL, error_class = NULL,
       next_at = NULL, updated_at = ?4
       WHERE id = ?5 AND run_id = ?6 AND state = 'pending' AND cache_key = ?3 RETURNING id`,
    ),
    cachedAttempts: q<void, [string, number, string, number]>(
      `INSERT INTO attempts (item_id, run_id, n, owner, started_at, ended_at, outcome, latency_ms)
       SELECT value, ?2, 0, ?3, ?4, ?4, 'cached', 0 FROM json_each(?1)`,
    ),
    cachedAttemptsAfter: q<void, [number, number, string, number]>(
      `INSERT INTO attempts (item_id, run_id, n, owner, started_at, ended_at, outcome, latency_ms)
       SELECT id, ?1, 0, ?3, ?4, ?4, 'cached', 0 FROM items WHERE id > ?2 AND run_id = ?1 AND state = 'completed'`,
    ),
    miss: q<void, [string, number, number]>(
      "UPDATE items SET cache_key = ? WHERE id = ? AND run_id = ? AND state = 'pending' AND cache_key IS NULL",
    ),
    count: q<void, [number, number, number, number]>(
      `INSERT INTO cache_tallies (run_id, hits, misses, saved_usd) VALUES (?, ?, ?, ?)
       ON CONFLICT (run_id) DO UPDATE SET hits = hits + excluded.hits, misses = misses + excluded.misses,
       saved_usd = saved_usd + excluded.saved_usd`,
    ),
    put: q<
      void,
      [number, string, string, string, string, number, number, number, number | null, number, number]
    >(
      `INSERT INTO cache (slot, key, provider, model, output, input_tokens, output_tokens, cached_input_tokens,
       cost_usd, bytes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (slot) DO UPDATE SET key = excluded.key, provider = excluded.provider, model = excluded.model,
       output = excluded.output,
       input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens,
       cached_input_tokens = excluded.cached_input_tokens, cost_usd = excluded.cost_usd, bytes = excluded.bytes,
       created_at = excluded.created_at`,
    ),
    totals: q<{ entries: number; bytes: number; oldest: number | null; newest: number | null }, []>(
      `SELECT count(*) AS entries, coalesce(sum(bytes), 0) AS bytes, min(created_at) AS oldest,
       max(created_at) AS newest FROM cache`,
    ),
    runTotals: q<{ hits: number; misses: number; saved: number }, []>(
      `SELECT coalesce(sum(hits), 0) AS hits, coalesce(sum(misses), 0) AS misses,
       coalesce(sum(saved_usd), 0) AS saved FROM cache_tallies`,
    ),
    models: q<{ provider: string; model: string; entries: number; bytes: number }, []>(
      `SELECT provider, model, count(*) AS entries, sum(bytes) AS bytes FROM cache GROUP BY provider, model
       ORDER BY entries DESC, provider, model`,
    ),
    pruned: q<Gone, [number]>(
      "SELECT count(*) AS entries, coalesce(sum(bytes), 0) AS bytes FROM cache WHERE created_at < ?",
    ),
    prune: q<void, [number]>("DELETE FROM cache WHERE created_at < ?"),
    clearedAll: q<Gone, []>("SELECT count(*) AS entries, coalesce(sum(bytes), 0) AS bytes FROM cache"),
    clearAll: q<void, []>("DELETE FROM cache"),
    cleared: q<Gone, [string]>(
      "SELECT count(*) AS entries, coalesce(sum(bytes), 0) AS bytes FROM cache WHERE model = ?",
    ),
    clear: q<void, [string]>("DELETE FROM cache WHERE model = ?"),
  }
}

/** A run's cache counts (`reads.summary`). */
export function runCounts(db: Database): (run: number) => { hits: number; misses: number; savedUsd: number } {
  const q = statements(db)<{ hits: number; misses: number; saved: number }, [number]>(
    "SELECT hits, misses, saved_usd AS saved FROM cache_tallies WHERE run_id = ?",
  )
  return (run) => {
    const row = q.get(run)
    return { hits: row?.hits ?? 0, misses: row?.misses ?? 0, savedUsd: row?.saved ?? 0 }
  }
}
