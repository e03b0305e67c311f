/** Reads: a run's counts and totals from the tallies, its chart, errors, pages of items, and the stream of them. */
import type { Database } from "bun:sqlite"
import { StoreCorruptError } from "../../base/errors.ts"
import { summaryOf } from "../rows.ts"
import { STATES, type State } from "../states.ts"
import {
  PROGRESS_BUCKET_MS,
  type AttemptError,
  type AttemptRow,
  type ExportMark,
  type ExportRow,
  type Item,
  type PagedItem,
  type PageRow,
  type Problem,
  type Summary,
} from "../types.ts"
import { damaged, failure, guard } from "./faults.ts"
import { statements } from "./connect.ts"
import type { Primes } from "./primes.ts"
import type { Tallies } from "./tallies.ts"
import { runCounts } from "./cache.ts"

export class Reads {
  private readonly q: ReturnType<typeof prepare>
  private readonly cacheCounts: ReturnType<typeof runCounts>

  constructor(
    private readonly db: Database,
    readonly path: string,
    private readonly tallies: Tallies,
    private readonly primes: Primes,
  ) {
    this.q = prepare(db)
    this.cacheCounts = runCounts(db)
  }

  /** Items per state: the ledger's maintained tallies (a few rows, whatever the run's size). */
  counts(run: number): Record<State, number> {
    return this.tallies.tallied(run).counts
  }

  /** A run's totals, from maintained tallies and indexed lookups only: as fast for a million items as for ten. */
  summary(run: number, now = Date.now(), windowMs = 60_000): Summary {
    const { counts, sum } = this.tallies.tallied(run)
    const problems = this.q.problemTotals.get(run)
    const since = Math.floor((now - windowMs) / PROGRESS_BUCKET_MS)
    const recent = this.q.progressSince.get(run, since)
    return summaryOf({
      counts,
      sum,
      errors: this.errorClasses(run),
      problems: {
        count: problems?.n ?? 0,
        duplicates: problems?.duplicates ?? 0,
        sample: this.q.problemSample.all(run),
      },
      firstStarted: this.q.firstStarted.get(run)?.at ?? null,
      lastEnded: this.q.lastEnded.get(run)?.at ?? null,
      recent: recent?.completed ?? 0,
      since,
      now,
      cache: this.cacheCounts(run),
      primes: this.primes.totals(run),
    })
  }

  /** Error classes of a run's attempts, most frequent first, each with its first example. */
  errorClasses(run: number): Summary["errors"] {
    return this.q.errorClasses.all(run).map((e) => ({
      class: e.class,
      count: e.n,
      example: e.error ?? "",
      key: e.key ?? "",
    }))
  }

  /**
   * Items ended per PROGRESS_BUCKET_MS since `from` (ms), merged into slots of `slotMs`: the completions chart.
   * Reads one row per bucket, so its cost grows with the run's duration, never with its size.
   */
  progress(run: number, from: number, slotMs: number): { at: number; completed: number; failed: number }[] {
    const slot = Math.max(1, Math.round(slotMs / PROGRESS_BUCKET_MS))
    const first = Math.floor(from / PROGRESS_BUCKET_MS)
    return this.q.progressSlots.all(run, first, slot).map((r) => ({
      at: (first + r.slot * slot) * PROGRESS_BUCKET_MS,
      completed: r.completed,
      failed: r.failed,
    }))
  }

  /** When the first item of a run ended (the start of its chart), or null. */
  firstProgress(run: number): number | null {
    const bucket = this.q.firstBucket.get(run)?.bucket
    return bucket === undefined || bucket === null ? null : bucket * PROGRESS_BUCKET_MS
  }

  /** Attempts ended since `from` per slot, or null past `max` of them: a count on the ended-at index decides first. */
  endings(
    run: number,
    from: number,
    slotMs: number,
    max: number,
  ): { at: number; completed: number; failed: number; errors: number }[] | null {
    if ((this.q.endedSince.get(run, from, max + 1)?.n ?? 0) > max) return null
    return this.q.endings.all(run, from, slotMs).map(({ slot, ...n }) => ({ at: from + slot * slotMs, ...n }))
  }

  /** Failed attempts per slot, each slot's count a walk of at most `cap` entries of the failed-attempts index. */
  errorMarks(
    run: number,
    from: number,
    slotMs: number,
    slots: number,
    cap: number,
  ): { at: number; errors: number }[] {
    const marks: { at: number; errors: number }[] = []
    for (let i = 0; i < slots; i++) {
      const at = from + i * slotMs
      const errors = this.q.errorsIn.get(run, at, at + slotMs, cap)?.n ?? 0
      if (errors) marks.push({ at, errors })
    }
    return marks
  }

  /** The last `limit` failed attempts of a run, newest first. */
  latestErrors(run: number, limit: number): AttemptError[] {
    return this.q.latestErrors.all(run, limit)
  }

  /** Failed attempts that ended at or after `since` (ms), oldest first: the "new errors" of a live page. */
  errorsSince(run: number, since: number, limit = 50): AttemptError[] {
    return this.q.errorsSince.all(run, since, limit)
  }

  /**
   * A page of a run's items in ledger order after the item id `after`, optionally of one state, each with its
   * attempts. Walks an index from `after`, so any page costs the same.
   */
  page(run: number, o: { state?: State | undefined; after?: number; limit: number }): PagedItem[] {
    const after = o.after ?? 0
    const rows = o.state
      ? this.q.pageOfState.all(run, o.state, after, o.limit)
      : this.pageAll(run, after, o.limit)
    return rows.map((row) => ({ ...row, attempts_list: this.attempts(row.id) }))
  }

  /** Between the run's first and last ids: another run's items before or after them are never walked. */
  private pageAll(run: number, after: number, limit: number): PageRow[] {
    const span = this.span(run)
    return span ? this.q.pageAll.all(run, Math.max(after, span.lo - 1), span.hi, limit) : []
  }

  /** A cheap number that changes whenever any connection commits to the store (PRAGMA data_version). */
  version(): number {
    return this.db.query<{ data_version: number }, []>("PRAGMA data_version").get()?.data_version ?? 0
  }

  /**
   * Streams a run's items in ledger order, optionally of one state. In a damaged store it goes on past the damage:
   * every item that can still be read is given, then a `StoreCorruptError` names the ids that could not be.
   */
  *items(run: number, state?: State): Generator<Item> {
    const rows = state ? this.q.itemsOfState.iterate(run, state) : this.q.allItems.iterate(run)
    let last = 0
    try {
      for (const row of rows) {
        last = row.id
        yield row
      }
      return
    } catch (err) {
      if (!(failure(err, this.path) instanceof StoreCorruptError)) throw err
    }
    const lost: string[] = []
    let from: number | null = last
    // a damaged table beside the items (inputs, joined) fails every row: past a few damaged parts, the walk stops
    while (from !== null && lost.length < 20) {
      let after: number = from
      try {
        for (const row of this.q.itemsAfter.iterate(after, run, state ?? null)) {
          after = row.id
          yield row
        }
        from = null
        continue
      } catch (err) {
        if (!(failure(err, this.path) instanceof StoreCorruptError)) throw err
      }
      const next = this.reachable(after)
      lost.push(next === null ? `above ${after}` : `${after + 1}-${next - 1}`)
      from = next === null ? null : next - 1
    }
    throw new StoreCorruptError(
      `the store ${this.path} is damaged: the items with ids ${lost.join(", ")}${
        from === null ? " could not be read (every other item of the run was)" : " and more could not be read"
      }`,
      damaged(this.path),
    )
  }

  /**
   * The first id past a damaged part of the items table that a look-up can reach, or null if none is: a seek past
   * `after` by growing steps until one goes through, then back by halves to the nearest one that does.
   */
  private reachable(after: number): number | null {
    const seek = (from: number): { id: number | null } | undefined => {
      try {
        return { id: this.q.idAfter.get(from)?.id ?? null }
      } catch (err) {
        if (!(failure(err, this.path) instanceof StoreCorruptError)) throw err
        return undefined
      }
    }
    let bad = after
    let step = 1
    let good = seek(bad + step)
    while (good === undefined) {
      if (step > Number.MAX_SAFE_INTEGER / 4) return null
      bad += step
      step *= 2
      good = seek(bad + step)
    }
    let from = bad + step
    while (from - bad > 1) {
      const mid = bad + Math.floor((from - bad) / 2)
      const found = seek(mid)
      if (found === undefined) bad = mid
      else [from, good] = [mid, found]
    }
    return good.id
  }

  /**
   * A page of a run's items for an export: a walk of the primary key from the cursor, between the run's first and
   * last ids, keeping the items of the given states (and changed after `since`). Its cost is the rows it walks.
   */
  exportPage(
    run: number,
    o: { states?: State[] | undefined; since?: number | null; after: number; limit: number },
  ): ExportRow[] {
    const span = this.span(run)
    if (!span) return []
    const states = o.states?.length ? JSON.stringify(o.states) : null
    return this.q.exportPage.all(
      run,
      Math.max(o.after, span.lo - 1),
      span.hi,
      states,
      o.since ?? null,
      o.limit,
    )
  }

  /** The run's last remembered export: one probe of the exports table's key. */
  lastExport(run: number): ExportMark | null {
    return this.q.lastExport.get(run) ?? null
  }

  /** Remembers an export of the run. */
  recordExport(run: number, e: ExportMark): void {
    this.q.recordExport.run(run, e.at, e.mark, e.rows, e.format, e.path)
  }

  /** An item's attempts, oldest first. */
  attempts(item: number): AttemptRow[] {
    return this.q.attemptsOf.all(item)
  }

  /** One item of a run by its id, with its input row and attempts: a primary-key look-up. */
  item(run: number, id: number): (PagedItem & { data: string }) | null {
    const row = this.q.itemOfRun.get(id, run)
    return row ? { ...row, attempts_list: this.attempts(row.id) } : null
  }

  /** The run's items whose key is `key`: one look-up of the (run, input, key) index per input. */
  keyed(run: number, key: string): PagedItem[] {
    return this.q.keyed.all(run, key).map((row) => ({ ...row, attempts_list: this.attempts(row.id) }))
  }

  /**
   * Reads at most `scan` of the run's items from the cursor, between the run's first and last ids (so another run's
   * items before or after it are never walked), and keeps those whose row, output or error holds `text`: SQLite's
   * LIKE, which folds ASCII letters only.
   */
  search(
    run: number,
    o: { text: string; state?: State | undefined; after?: number; limit: number; scan: number },
  ): { items: PagedItem[]; scanned: number; next: number | null } {
    const span = this.span(run, o.state)
    if (!span) return { items: [], scanned: 0, next: null }
    const from = Math.max(o.after ?? 0, span.lo - 1)
    const like = `%${o.text.replace(/[\\%_]/g, (c) => `\\${c}`)}%`
    const rows = o.state
      ? this.q.scanOfState.iterate(run, o.state, from, span.hi, like, o.scan)
      : this.q.scanAll.iterate(run, from, span.hi, like, o.scan)
    const hits: number[] = []
    let scanned = 0
    let last = from
    for (const row of rows) {
      scanned++
      last = row.id
      if (row.hit) hits.push(row.id)
      if (hits.length === o.limit) break
    }
    const items = hits.flatMap((id) => this.item(run, id) ?? [])
    return { items, scanned, next: last >= span.hi ? null : last }
  }

  /** The lowest and highest id of the run's items (of one state): two index probes per state. */
  private span(run: number, state?: State): { lo: number; hi: number } | null {
    let lo = Infinity
    let hi = -Infinity
    for (const s of state ? [state] : STATES) {
      const b = this.q.bounds.get(run, s)
      if (b?.lo === null || b?.lo === undefined) continue
      lo = Math.min(lo, b.lo)
      hi = Math.max(hi, b.hi as number)
    }
    return lo === Infinity ? null : { lo, hi }
  }

  problems(run: number, limit = 1000): Problem[] {
    return this.q.problems.all(run, limit)
  }

  integrity(): string {
    return (
      this.db.query<{ integrity_check: string }, []>("PRAGMA integrity_check").get()?.integrity_check ?? ""
    )
  }

  /** Whether any item of the run is not yet finished (pending, in flight or waiting to retry): one index probe. */
  hasOpen(run: number): boolean {
    return this.q.hasOpen.get(run) !== null
  }

  /** The most input and output tokens one attempt of the run has used: a bound for what the next one will. */
  largestAttempt(run: number): { input: number; output: number } | null {
    const row = this.q.largestAttempt.get(run)
    return row && row.input !== null ? { input: row.input, output: row.output ?? 0 } : null
  }
}
guard(Reads)

/** A run's failed attempts with their items' keys (\`run_id\` the first parameter), as AttemptError rows. */
const FAILED_ATTEMPTS = `SELECT a.id, a.item_id, i.key, a.n, a.ended_at, a.outcome, a.error_class, a.error, a.http_status
  FROM attempts a JOIN items i ON i.id = a.item_id WHERE a.run_id = ? AND a.error_class IS NOT NULL`

const PAGE_COLUMNS = `items.id, items.input, items.key, items.state, items.attempts, items.output, items.error_class,
  items.error, items.input_tokens, items.output_tokens, items.cached_input_tokens, items.cache_write_tokens,
  items.batch_input_tokens, items.batch_output_tokens, items.batch_cached_tokens, items.batch_write_tokens,
  items.cached_usage, items.row, items.source_id, inputs.path`

function prepare(db: Database) {
  const q = statements(db)
  type Id = { id: number }
  return {
    firstStarted: q<{ at: number }, [number]>(
      "SELECT started_at AS at FROM attempts WHERE run_id = ? AND ended_at IS NOT NULL ORDER BY ended_at LIMIT 1",
    ),
    lastEnded: q<{ at: number }, [number]>(
      "SELECT ended_at AS at FROM attempts WHERE run_id = ? AND ended_at IS NOT NULL ORDER BY ended_at DESC LIMIT 1",
    ),
    progressSince: q<{ completed: number | null }, [number, number]>(
      "SELECT sum(completed) AS completed FROM progress WHERE run_id = ? AND bucket >= ?",
    ),
    progressSlots: q<{ slot: number; completed: number; failed: number }, [number, number, number]>(
      `SELECT (bucket - ?2) / ?3 AS slot, sum(completed) AS completed, sum(failed) AS failed FROM progress
       WHERE run_id = ?1 AND bucket >= ?2 GROUP BY slot ORDER BY slot`,
    ),
    endedSince: q<{ n: number }, [number, number, number]>(
      "SELECT count(*) AS n FROM (SELECT 1 FROM attempts WHERE run_id = ? AND ended_at >= ? LIMIT ?)",
    ),
    endings: q<{ slot: number; completed: number; failed: number; errors: number }, [number, number, number]>(
      `SELECT (ended_at - ?2) / ?3 AS slot, sum(outcome IN ('ok', 'cached')) AS completed,
       sum(outcome IN ('failed', 'needs_review')) AS failed, sum(error_class IS NOT NULL) AS errors
       FROM attempts WHERE run_id = ?1 AND ended_at >= ?2 GROUP BY slot ORDER BY slot`,
    ),
    errorsIn: q<{ n: number }, [number, number, number, number]>(
      `SELECT count(*) AS n FROM (SELECT 1 FROM attempts
       WHERE run_id = ? AND error_class IS NOT NULL AND ended_at >= ? AND ended_at < ? LIMIT ?)`,
    ),
    firstBucket: q<{ bucket: number | null }, [number]>(
      "SELECT min(bucket) AS bucket FROM progress WHERE run_id = ?",
    ),
    errorClasses: q<{ class: string; n: number; error: string | null; key: string | null }, [number]>(
      `SELECT t.class, t.n, a.error, i.key FROM error_tallies t
       LEFT JOIN attempts a ON a.id = t.attempt_id LEFT JOIN items i ON i.id = a.item_id
       WHERE t.run_id = ? ORDER BY t.n DESC, t.class`,
    ),
    errorsSince: q<AttemptError, [number, number, number]>(
      `${FAILED_ATTEMPTS} AND a.ended_at >= ? ORDER BY a.ended_at, a.id LIMIT ?`,
    ),
    latestErrors: q<AttemptError, [number, number]>(
      `${FAILED_ATTEMPTS} AND a.ended_at IS NOT NULL
       ORDER BY a.ended_at DESC, a.id DESC LIMIT ?`,
    ),
    // walks the primary key from the cursor (`+run_id` keeps the planner off items_state, which would read and sort
    // every item of the run): a run's items are nearly contiguous, so a page reads about `limit` rows
    pageAll: q<PageRow, [number, number, number, number]>(
      `SELECT ${PAGE_COLUMNS} FROM items JOIN inputs ON inputs.run_id = items.run_id AND inputs.idx = items.input
       WHERE +items.run_id = ? AND items.id > ? AND items.id <= ? ORDER BY items.id LIMIT ?`,
    ),
    pageOfState: q<PageRow, [number, State, number, number]>(
      `SELECT ${PAGE_COLUMNS} FROM items JOIN inputs ON inputs.run_id = items.run_id AND inputs.idx = items.input
       WHERE items.run_id = ? AND items.state = ? AND items.id > ? ORDER BY items.id LIMIT ?`,
    ),
    itemOfRun: q<PageRow & { data: string }, [number, number]>(
      `SELECT ${PAGE_COLUMNS}, items.data FROM items
       JOIN inputs ON inputs.run_id = items.run_id AND inputs.idx = items.input WHERE items.id = ? AND items.run_id = ?`,
    ),
    // inputs first (CROSS JOIN keeps that order), so that each probe has all three columns of the (run_id, input,
    // key) index; the other way round the planner walks every item of the run
    keyed: q<PageRow, [number, string]>(
      `SELECT ${PAGE_COLUMNS} FROM inputs
       CROSS JOIN items ON items.run_id = inputs.run_id AND items.input = inputs.idx AND items.key = ?2
       WHERE inputs.run_id = ?1 ORDER BY items.id`,
    ),
    bounds: q<{ lo: number | null; hi: number | null }, [number, State]>(
      `SELECT (SELECT min(id) FROM items WHERE run_id = ?1 AND state = ?2) AS lo,
       (SELECT max(id) FROM items WHERE run_id = ?1 AND state = ?2) AS hi`,
    ),
    // the primary key from the cursor to the run's last id, as pageAll walks it
    scanAll: q<{ id: number; hit: number | null }, [number, number, number, string, number]>(
      `SELECT id, (data LIKE ?4 ESCAPE '\\' OR output LIKE ?4 ESCAPE '\\' OR error LIKE ?4 ESCAPE '\\') AS hit
       FROM items WHERE +run_id = ?1 AND id > ?2 AND id <= ?3 ORDER BY id LIMIT ?5`,
    ),
    scanOfState: q<{ id: number; hit: number | null }, [number, State, number, number, string, number]>(
      `SELECT id, (data LIKE ?5 ESCAPE '\\' OR output LIKE ?5 ESCAPE '\\' OR error LIKE ?5 ESCAPE '\\') AS hit
       FROM items WHERE run_id = ?1 AND state = ?2 AND id > ?3 AND id <= ?4 ORDER BY id LIMIT ?6`,
    ),
    // in the order they were made, not by n: an attempt that did not count is numbered 0 (claims.ts `record`)
    attemptsOf: q<AttemptRow, [number]>(
      `SELECT n, started_at, ended_at, outcome, error_class, error, http_status, input_tokens, output_tokens,
       cached_input_tokens, cache_write_tokens, latency_ms, batch_id FROM attempts WHERE item_id = ? ORDER BY id`,
    ),
    problemTotals: q<{ n: number; duplicates: number }, [number]>(
      "SELECT coalesce(sum(problems), 0) AS n, coalesce(sum(duplicates), 0) AS duplicates FROM inputs WHERE run_id = ?",
    ),
    problemSample: q<{ file: string; line: number; reason: string }, [number]>(
      "SELECT file, line, reason FROM problems WHERE run_id = ? ORDER BY input, line, id LIMIT 5",
    ),
    problems: q<{ file: string; line: number; reason: string; excerpt: string }, [number, number]>(
      "SELECT file, line, reason, excerpt FROM problems WHERE run_id = ? ORDER BY input, line, id LIMIT ?",
    ),
    // by the table's own b-tree (NOT INDEXED), so that a damaged page of it can be stepped over (items)
    itemsAfter: q<Item, [number, number, State | null]>(
      `SELECT items.*, inputs.path FROM items NOT INDEXED
       JOIN inputs ON inputs.run_id = items.run_id AND inputs.idx = items.input
       WHERE items.id > ?1 AND items.run_id = ?2 AND (?3 IS NULL OR items.state = ?3) ORDER BY items.id`,
    ),
    idAfter: q<Id, [number]>("SELECT id FROM items NOT INDEXED WHERE id > ? ORDER BY id LIMIT 1"),
    allItems: q<Item, [number]>(
      `SELECT items.*, inputs.path FROM items JOIN inputs ON inputs.run_id = items.run_id AND inputs.idx = items.input
       WHERE items.run_id = ? ORDER BY items.id`,
    ),
    itemsOfState: q<Item, [number, State]>(
      `SELECT items.*, inputs.path FROM items JOIN inputs ON inputs.run_id = items.run_id AND inputs.idx = items.input
       WHERE items.run_id = ? AND items.state = ? ORDER BY items.id`,
    ),
    // the primary key from the cursor to the run's last id (as pageAll), the states as a JSON array (null: all)
    exportPage: q<ExportRow, [number, number, number, string | null, number | null, number]>(
      `SELECT ${PAGE_COLUMNS}, items.data, items.vector, items.updated_at FROM items
       JOIN inputs ON inputs.run_id = items.run_id AND inputs.idx = items.input
       WHERE +items.run_id = ?1 AND items.id > ?2 AND items.id <= ?3
       AND (?4 IS NULL OR items.state IN (SELECT value FROM json_each(?4)))
       AND (?5 IS NULL OR items.updated_at > ?5) ORDER BY items.id LIMIT ?6`,
    ),
    lastExport: q<ExportMark, [number]>(
      "SELECT at, mark, rows, format, path FROM exports WHERE run_id = ? ORDER BY at DESC LIMIT 1",
    ),
    recordExport: q<void, [number, number, number, number, string, string | null]>(
      "INSERT OR IGNORE INTO exports (run_id, at, mark, rows, format, path) VALUES (?, ?, ?, ?, ?, ?)",
    ),
    hasOpen: q<{ one: number }, [number]>(
      `SELECT 1 AS one FROM items WHERE run_id = ?
       AND state IN ('pending', 'running', 'retry_wait', 'queued', 'submitted') LIMIT 1`,
    ),
    largestAttempt: q<{ input: number | null; output: number | null }, [number]>(
      `SELECT max(input_tokens) AS input, max(output_tokens) AS output FROM attempts
       WHERE run_id = ? AND outcome IS NOT NULL AND input_tokens IS NOT NULL`,
    ),
  }
}
