/**
 * Reads on PostgreSQL: a run's counts and totals from the tallies, its chart, errors, pages of items, and the stream
 * of them (sqlite/reads.ts, ported). Every read is bounded as there: tallies, progress buckets and index walks, never
 * a scan of a run's items, so a run of a million items reads as fast as one of ten.
 */
import type { SQL } from "bun"
import type * as api from "../ledger.ts"
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
import { runCounts } from "./cache.ts"
import { retrying, type Pg } from "./connect.ts"
import { primed } from "./primes.ts"
import { tallied } from "./tallies.ts"

/** How many items the stream reads a page at a time. */
const STREAM_PAGE = 1000

/** The largest id an `integer` column holds: a cursor past it has nothing after it. */
const MAX_ID = 2 ** 31 - 1

/** A cursor (an item id from a caller) as a parameter the server takes: whole, and within `integer`. */
const cursor = (after: number | undefined): number =>
  Number.isFinite(after) ? Math.min(Math.max(Math.floor(after!), 0), MAX_ID) : 0

/** Whether `id` can be a row's id at all (a larger one must not reach the server as an out-of-range parameter). */
const isId = (id: number): boolean => Number.isSafeInteger(id) && id >= 1 && id <= MAX_ID

const PAGE_COLUMNS = `items.id, items.input, items.key, items.state, items.attempts, items.output, items.error_class,
  items.error, items.input_tokens, items.output_tokens, items.cached_input_tokens, items.cache_write_tokens,
  items.batch_input_tokens, items.batch_output_tokens, items.batch_cached_tokens, items.batch_write_tokens,
  items.cached_usage, items.row, items.source_id, inputs.path`

/** The fields of an `Item`, and no others of the row (its lease, its batch file offsets). */
const ITEM_COLUMNS = `items.id, items.run_id, items.input, items.key, items.row, items.source_id, items.data,
  items.state, items.attempts, items.next_at, items.output, items.error_class, items.error, items.input_tokens,
  items.output_tokens, items.cached_input_tokens, items.cache_write_tokens, items.batch_id, items.batch_line,
  items.batch_input_tokens, items.batch_output_tokens, items.batch_cached_tokens, items.batch_write_tokens,
  items.cache_key, items.cached_usage, items.vector, items.updated_at, inputs.path`

const ATTEMPT_COLUMNS = `n, started_at, ended_at, outcome, error_class, error, http_status, input_tokens,
  output_tokens, cached_input_tokens, cache_write_tokens, latency_ms, batch_id`

const OPEN: State[] = ["pending", "running", "retry_wait", "queued", "submitted"]

/**
 * The ids of a run's items of one state in (after, upTo], in id order, at most `limit`: a walk of items_state from
 * the cursor. The state is given as a range (`(state, id) > (s, after) AND state <= s`), not as `state = s`, and
 * the order is (state, id): with an equality the planner finds the order by id alone, which the primary key gives
 * too, and often walks it instead, filtering, which is a walk of the whole run when the state's items come late
 * (pending items behind 600,000 completed ones). The row comparison still starts the walk at the cursor.
 */
function ofState(sql: SQL, run: number, state: State, after: number, limit: number, upTo = MAX_ID) {
  return sql`SELECT id FROM items WHERE run_id = ${run} AND (state, id) > (${state}::text, ${after}::int)
    AND state <= ${state}::text AND id <= ${upTo} ORDER BY state, id LIMIT ${limit}`
}

export class Reads implements api.Reads {
  constructor(readonly pg: Pg) {}

  /** Runs one read (or a few together), again while the connection is lost. */
  private read<T>(fn: (sql: SQL) => Promise<T>): Promise<T> {
    return retrying(this.pg, () => fn(this.pg.sql))
  }

  /** Rows of one read as a plain array (Bun.SQL's result array is a class of its own, which toEqual and toMatchObject tell from an array). */
  private async rows<T>(fn: (sql: SQL) => Promise<T[]>): Promise<T[]> {
    return [...(await this.read(fn))]
  }

  /** Items per state: the ledger's maintained tallies (a few rows, whatever the run's size). */
  async counts(run: number): Promise<Record<State, number>> {
    return (await this.read((sql) => tallied(sql, run))).counts
  }

  /** A run's totals, from maintained tallies and indexed look-ups only: as fast for a million items as for ten. */
  async summary(run: number, now = Date.now(), windowMs = 60_000): Promise<Summary> {
    const since = Math.floor((now - windowMs) / PROGRESS_BUCKET_MS)
    type Totals = {
      first_started: number | null
      last_ended: number | null
      recent: number
      problems: number
      duplicates: number
    }
    const [{ counts, sum }, [totals], errors, sample, cache, primes] = await this.read((sql) =>
      Promise.all([
        tallied(sql, run),
        // attempts_run_ended gives the first and the last ended attempt; the buckets and inputs are a few rows each
        sql<Totals[]>`SELECT
          (SELECT started_at FROM attempts WHERE run_id = ${run} AND ended_at IS NOT NULL
            ORDER BY ended_at LIMIT 1) AS first_started,
          (SELECT ended_at FROM attempts WHERE run_id = ${run} AND ended_at IS NOT NULL
            ORDER BY ended_at DESC LIMIT 1) AS last_ended,
          (SELECT coalesce(sum(completed), 0)::int FROM progress
            WHERE run_id = ${run} AND bucket >= ${since}::float8) AS recent,
          (SELECT coalesce(sum(problems), 0)::int FROM inputs WHERE run_id = ${run}) AS problems,
          (SELECT coalesce(sum(duplicates), 0)::int FROM inputs WHERE run_id = ${run}) AS duplicates`,
        this.classes(sql, run),
        sql<{ file: string; line: number; reason: string }[]>`SELECT file, line, reason FROM problems
          WHERE run_id = ${run} ORDER BY input, line, id LIMIT 5`,
        runCounts(sql, run),
        primed(sql, run),
      ]),
    )
    return summaryOf({
      counts,
      sum,
      errors,
      problems: { count: totals?.problems ?? 0, duplicates: totals?.duplicates ?? 0, sample: [...sample] },
      firstStarted: totals?.first_started ?? null,
      lastEnded: totals?.last_ended ?? null,
      recent: totals?.recent ?? 0,
      since,
      now,
      cache,
      primes,
    })
  }

  /** Error classes of a run's attempts, most frequent first, each with its first example. */
  async errorClasses(run: number): Promise<Summary["errors"]> {
    return this.read((sql) => this.classes(sql, run))
  }

  private async classes(sql: SQL, run: number): Promise<Summary["errors"]> {
    // classes in byte order (COLLATE "C"), as SQLite orders them, whatever the database's collation
    const rows: { class: string; n: number; error: string | null; key: string | null }[] =
      await sql`SELECT t.class, t.n, a.error, i.key FROM error_tallies t
        LEFT JOIN attempts a ON a.id = t.attempt_id LEFT JOIN items i ON i.id = a.item_id
        WHERE t.run_id = ${run} ORDER BY t.n DESC, t.class COLLATE "C"`
    return rows.map((e) => ({ class: e.class, count: e.n, example: e.error ?? "", key: e.key ?? "" }))
  }

  /**
   * Items ended per PROGRESS_BUCKET_MS since `from` (ms), merged into slots of `slotMs`: the completions chart.
   * Reads one row per bucket, so its cost grows with the run's duration, never with its size.
   */
  async progress(
    run: number,
    from: number,
    slotMs: number,
  ): Promise<{ at: number; completed: number; failed: number }[]> {
    const slot = Math.max(1, Math.round(slotMs / PROGRESS_BUCKET_MS))
    const first = Math.floor(from / PROGRESS_BUCKET_MS)
    const rows: { slot: number; completed: number; failed: number }[] = await this.read(
      (sql) => sql`SELECT floor((bucket - ${first}::float8) / ${slot}::float8) AS slot,
        sum(completed)::int AS completed, sum(failed)::int AS failed FROM progress
        WHERE run_id = ${run} AND bucket >= ${first}::float8 GROUP BY 1 ORDER BY 1`,
    )
    return rows.map((r) => ({
      at: (first + r.slot * slot) * PROGRESS_BUCKET_MS,
      completed: r.completed,
      failed: r.failed,
    }))
  }

  /** When the first item of a run ended (the start of its chart), or null. */
  async firstProgress(run: number): Promise<number | null> {
    const [row] = await this.read(
      (sql): Promise<{ bucket: number | null }[]> =>
        sql`SELECT min(bucket) AS bucket FROM progress WHERE run_id = ${run}`,
    )
    return row?.bucket === undefined || row.bucket === null ? null : row.bucket * PROGRESS_BUCKET_MS
  }

  /** Attempts ended since `from` per slot, or null past `max` of them: a count on the ended-at index decides first. */
  async endings(
    run: number,
    from: number,
    slotMs: number,
    max: number,
  ): Promise<{ at: number; completed: number; failed: number; errors: number }[] | null> {
    type Slot = { slot: number; completed: number; failed: number; errors: number }
    const rows = await this.read(async (sql): Promise<Slot[] | null> => {
      const [ended] = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM (SELECT 1 FROM attempts
        WHERE run_id = ${run} AND ended_at >= ${from}::float8 LIMIT ${max + 1}) AS a`
      if ((ended?.n ?? 0) > max) return null
      return await sql<Slot[]>`SELECT floor((ended_at - ${from}::float8) / ${slotMs}::float8) AS slot,
        count(*) FILTER (WHERE outcome IN ('ok', 'cached'))::int AS completed,
        count(*) FILTER (WHERE outcome IN ('failed', 'needs_review'))::int AS failed,
        count(*) FILTER (WHERE error_class IS NOT NULL)::int AS errors
        FROM attempts WHERE run_id = ${run} AND ended_at >= ${from}::float8 GROUP BY 1 ORDER BY 1`
    })
    return rows && rows.map(({ slot, ...n }) => ({ at: from + slot * slotMs, ...n }))
  }

  /**
   * Failed attempts per slot, each slot's count a walk of at most `cap` entries of the failed-attempts index: one
   * statement, whatever the number of slots.
   */
  async errorMarks(
    run: number,
    from: number,
    slotMs: number,
    slots: number,
    cap: number,
  ): Promise<{ at: number; errors: number }[]> {
    if (slots <= 0) return []
    // a slot's bounds are computed as in SQLite's driver (at = from + i × slot; to = at + slot), in float8 as in JS
    const rows: { i: number; errors: number }[] = await this.read(
      (sql) => sql`SELECT s.i, (SELECT count(*)::int FROM (SELECT 1 FROM attempts
          WHERE run_id = ${run} AND error_class IS NOT NULL
          AND ended_at >= ${from}::float8 + s.i * ${slotMs}::float8
          AND ended_at < (${from}::float8 + s.i * ${slotMs}::float8) + ${slotMs}::float8 LIMIT ${cap}) AS a) AS errors
        FROM generate_series(0, ${slots - 1}::int) AS s(i) ORDER BY s.i`,
    )
    return rows.filter((r) => r.errors).map((r) => ({ at: from + r.i * slotMs, errors: r.errors }))
  }

  /** The last `limit` failed attempts of a run, newest first. */
  async latestErrors(run: number, limit: number): Promise<AttemptError[]> {
    return this.rows(
      (
        sql,
      ) => sql`SELECT a.id, a.item_id, i.key, a.n, a.ended_at, a.outcome, a.error_class, a.error, a.http_status
        FROM attempts a JOIN items i ON i.id = a.item_id
        WHERE a.run_id = ${run} AND a.error_class IS NOT NULL AND a.ended_at IS NOT NULL
        ORDER BY a.ended_at DESC, a.id DESC LIMIT ${limit}`,
    )
  }

  /** Failed attempts that ended at or after `since` (ms), oldest first: the "new errors" of a live page. */
  async errorsSince(run: number, since: number, limit = 50): Promise<AttemptError[]> {
    return this.rows(
      (
        sql,
      ) => sql`SELECT a.id, a.item_id, i.key, a.n, a.ended_at, a.outcome, a.error_class, a.error, a.http_status
        FROM attempts a JOIN items i ON i.id = a.item_id
        WHERE a.run_id = ${run} AND a.error_class IS NOT NULL AND a.ended_at >= ${since}::float8
        ORDER BY a.ended_at, a.id LIMIT ${limit}`,
    )
  }

  /**
   * A page of a run's items in ledger order after the item id `after`, optionally of one state, each with its
   * attempts. Walks an index from `after`, so any page costs the same.
   */
  async page(
    run: number,
    o: { state?: State | undefined; after?: number; limit: number },
  ): Promise<PagedItem[]> {
    const after = cursor(o.after)
    return this.read(async (sql) => {
      let rows: PageRow[]
      if (o.state) {
        rows =
          await sql`SELECT ${sql.unsafe(PAGE_COLUMNS)} FROM (${ofState(sql, run, o.state, after, o.limit)}) AS p
          JOIN items ON items.id = p.id JOIN inputs ON inputs.run_id = items.run_id AND inputs.idx = items.input
          ORDER BY items.id`
      } else {
        const span = await this.span(sql, run)
        if (!span) return []
        // between the run's first and last ids: the planner walks the primary key from the cursor (a run's items are
        // nearly contiguous, so a page reads about `limit` rows), or for a run that is a small part of the table,
        // items_state. (SQLite's `+run_id` has no use here: with `run_id + 0` the planner guessed 0.5% of the rows
        // were the run's, and read and sorted the whole table for a search of 20,000.)
        rows = await sql`SELECT ${sql.unsafe(PAGE_COLUMNS)} FROM items
          JOIN inputs ON inputs.run_id = items.run_id AND inputs.idx = items.input
          WHERE items.run_id = ${run} AND items.id > ${Math.max(after, span.lo - 1)} AND items.id <= ${span.hi}
          ORDER BY items.id LIMIT ${o.limit}`
      }
      return this.attached(sql, rows)
    })
  }

  /**
   * A page of a run's items for an export: a walk of the primary key from the cursor, between the run's first and
   * last ids (as `page`), keeping the items of the given states (and changed after `since`).
   */
  async exportPage(
    run: number,
    o: { states?: State[] | undefined; since?: number | null; after: number; limit: number },
  ): Promise<ExportRow[]> {
    const after = cursor(o.after)
    const states = o.states?.length ? o.states : null
    const since = o.since ?? null
    return this.rows(async (sql) => {
      const span = await this.span(sql, run)
      if (!span) return []
      const rows = await sql<
        (ExportRow & { vector: Uint8Array | null })[]
      >`SELECT ${sql.unsafe(PAGE_COLUMNS)},
          items.data, items.vector, items.updated_at FROM items
        JOIN inputs ON inputs.run_id = items.run_id AND inputs.idx = items.input
        WHERE items.run_id = ${run} AND items.id > ${Math.max(after, span.lo - 1)} AND items.id <= ${span.hi}
          AND (${states === null} OR items.state = ANY(${states ?? []}::text[]))
          AND (${since === null} OR items.updated_at > ${since ?? 0}::float8)
        ORDER BY items.id LIMIT ${o.limit}`
      // bytea comes back as a Buffer: a plain Uint8Array, as SQLite gives it
      for (const r of rows) if (r.vector) r.vector = new Uint8Array(r.vector)
      return rows
    })
  }

  /** The run's last remembered export. */
  async lastExport(run: number): Promise<ExportMark | null> {
    const [row] = await this.rows(
      (sql): Promise<ExportMark[]> =>
        sql`SELECT at, mark, rows, format, path FROM exports WHERE run_id = ${run} ORDER BY at DESC LIMIT 1`,
    )
    return row ?? null
  }

  /** Remembers an export of the run (sent again after a lost connection: the row is there once). */
  async recordExport(run: number, e: ExportMark): Promise<void> {
    await this.read(
      (sql) => sql`INSERT INTO exports (run_id, at, mark, rows, format, path)
        VALUES (${run}, ${e.at}::float8, ${e.mark}::float8, ${e.rows}, ${e.format}, ${e.path})
        ON CONFLICT DO NOTHING`,
    )
  }

  /**
   * A number that changes whenever anyone changes the store: the schema's `version` sequence, which every statement
   * that writes a table of the ledger bumps (schema.ts `bump`). Of this schema only: another schema's or database's
   * writes, or the server's own (checkpoints, vacuum), leave it as it is. It may move before a commit lands (a
   * sequence is not transactional): a caller then only looks again for nothing new.
   */
  async version(): Promise<number> {
    const [row] = await this.read(
      (sql): Promise<{ v: number }[]> => sql`SELECT last_value::float8 AS v FROM version`,
    )
    return row?.v ?? 0
  }

  /**
   * Streams a run's items in ledger order, optionally of one state: a page of STREAM_PAGE items at a time by id, each
   * page its own read, so no cursor or snapshot is held while the consumer works (a stream left early holds nothing).
   * An item is given once; its state is the one its page read.
   */
  items(run: number, state?: State): AsyncIterable<Item> {
    const pages = (after: number) => this.streamPage(run, state, after)
    return {
      async *[Symbol.asyncIterator]() {
        let after = 0
        for (;;) {
          const rows = await pages(after)
          if (rows === null) return
          yield* rows
          if (rows.length < STREAM_PAGE) return
          after = rows.at(-1)!.id
        }
      },
    }
  }

  /** The stream's next page after `after`, or null when the run has no items (of that state) at all. */
  private streamPage(run: number, state: State | undefined, after: number): Promise<Item[] | null> {
    return this.read(async (sql) => {
      if (state)
        return await sql<Item[]>`SELECT ${sql.unsafe(ITEM_COLUMNS)}
          FROM (${ofState(sql, run, state, after, STREAM_PAGE)}) AS p
          JOIN items ON items.id = p.id JOIN inputs ON inputs.run_id = items.run_id AND inputs.idx = items.input
          ORDER BY items.id`
      const span = await this.span(sql, run)
      if (!span) return null
      return await sql<Item[]>`SELECT ${sql.unsafe(ITEM_COLUMNS)} FROM items
        JOIN inputs ON inputs.run_id = items.run_id AND inputs.idx = items.input
        WHERE items.run_id = ${run} AND items.id > ${Math.max(after, span.lo - 1)} AND items.id <= ${span.hi}
        ORDER BY items.id LIMIT ${STREAM_PAGE}`
    })
  }

  /** An item's attempts, oldest first. */
  async attempts(item: number): Promise<AttemptRow[]> {
    if (!isId(item)) return []
    // in the order they were made, not by n: an attempt that did not count is numbered 0 (claims `record`)
    return this.rows(
      (sql) => sql`SELECT ${sql.unsafe(ATTEMPT_COLUMNS)} FROM attempts WHERE item_id = ${item} ORDER BY id`,
    )
  }

  /** One item of a run by its id, with its input row and attempts: a primary-key look-up. */
  async item(run: number, id: number): Promise<(PagedItem & { data: string }) | null> {
    if (!isId(id)) return null
    const [row] = await this.read(async (sql) => {
      const rows: (PageRow & { data: string })[] = await sql`SELECT ${sql.unsafe(PAGE_COLUMNS)}, items.data
        FROM items JOIN inputs ON inputs.run_id = items.run_id AND inputs.idx = items.input
        WHERE items.id = ${id} AND items.run_id = ${run}`
      return this.attached(sql, rows)
    })
    return row ?? null
  }

  /** The run's items whose key is `key`: one look-up of the (run_id, input, key) index per input. */
  async keyed(run: number, key: string): Promise<PagedItem[]> {
    return this.read(async (sql) => {
      const rows: PageRow[] = await sql`SELECT ${sql.unsafe(PAGE_COLUMNS)} FROM inputs
        JOIN items ON items.run_id = inputs.run_id AND items.input = inputs.idx AND items.key = ${key}
        WHERE inputs.run_id = ${run} ORDER BY items.id`
      return this.attached(sql, rows)
    })
  }

  /**
   * Reads at most `scan` of the run's items from the cursor, between the run's first and last ids (so another run's
   * items before or after it are never walked), and keeps those whose row, output or error holds `text`, ASCII
   * letters in either case as SQLite's LIKE folds them (and no other letter). The server reads the `scan` rows and hands back
   * only the matches up to `limit` and where the read stopped: at the `limit`-th match, or the last row read.
   */
  async search(
    run: number,
    o: { text: string; state?: State | undefined; after?: number; limit: number; scan: number },
  ): Promise<{ items: PagedItem[]; scanned: number; next: number | null }> {
    const like = `%${o.text.replace(/[\\%_]/g, (c) => `\\${c}`)}%`
    // ILIKE under the "C" collation folds ASCII letters only, as SQLite's LIKE does (under the database's own
    // collation it would fold É and é too); translate() of each column, the other way to fold ASCII only, took
    // eight times as long
    const hit = (sql: SQL) =>
      sql`coalesce(data COLLATE "C" ILIKE ${like} ESCAPE '\\' OR output COLLATE "C" ILIKE ${like} ESCAPE '\\'
        OR error COLLATE "C" ILIKE ${like} ESCAPE '\\', false)`
    type Read = { id: number; hit: boolean; k: number; stop: boolean }
    return this.read(async (sql) => {
      const span = await this.span(sql, run, o.state)
      if (!span) return { items: [], scanned: 0, next: null }
      const from = Math.max(cursor(o.after), span.lo - 1)
      const scanned = o.state
        ? sql`SELECT items.id, ${hit(sql)} AS hit FROM (${ofState(sql, run, o.state, from, o.scan, span.hi)}) AS p
            JOIN items ON items.id = p.id`
        : // the primary key from the cursor to the run's last id, as a page walks it
          sql`SELECT id, ${hit(sql)} AS hit FROM items
            WHERE run_id = ${run} AND id > ${from} AND id <= ${span.hi} ORDER BY id LIMIT ${o.scan}`
      // k: the row's place in the read; the read stops at the first row with `limit` matches up to it, or its last
      // (e is MATERIALIZED: inlined, the planner, guessing one row read, computed it again for every row of n)
      const rows: Read[] = await sql`WITH s AS (${scanned}),
        n AS (SELECT id, hit, row_number() OVER w AS k, count(*) FILTER (WHERE hit) OVER w AS h FROM s
          WINDOW w AS (ORDER BY id)),
        e AS MATERIALIZED (SELECT coalesce(min(k) FILTER (WHERE h >= ${o.limit}), max(k)) AS k FROM n)
        SELECT n.id, n.hit, n.k::int AS k, n.k = e.k AS stop FROM n, e
        WHERE n.k <= e.k AND (n.hit OR n.k = e.k) ORDER BY n.id`
      const end = rows.find((r) => r.stop)
      const hits = rows.filter((r) => r.hit).map((r) => r.id)
      const found: (PageRow & { data: string })[] = hits.length
        ? await sql`SELECT ${sql.unsafe(PAGE_COLUMNS)}, items.data
            FROM items JOIN inputs ON inputs.run_id = items.run_id AND inputs.idx = items.input
            WHERE items.id = ANY(${hits}::int[]) AND items.run_id = ${run} ORDER BY items.id`
        : []
      const last = end?.id ?? from
      return {
        items: await this.attached(sql, found),
        scanned: end?.k ?? 0,
        next: last >= span.hi ? null : last,
      }
    })
  }

  /** The lowest and highest id of the run's items (of one state): two probes of items_state per state. */
  private async span(sql: SQL, run: number, state?: State): Promise<{ lo: number; hi: number } | null> {
    // each state as a range, ordered by (state, id), for the reason `ofState` gives (min(id) and max(id) with
    // `state = s` walked the primary key, seconds for a state with no items in a run of a million)
    const [b] = await sql<{ lo: number | null; hi: number | null }[]>`SELECT min(a.lo) AS lo, max(b.hi) AS hi
      FROM unnest(${state ? [state] : [...STATES]}::text[]) AS s(state)
      CROSS JOIN LATERAL (SELECT id AS lo FROM items WHERE run_id = ${run} AND state >= s.state AND state <= s.state
        ORDER BY items.state, items.id LIMIT 1) AS a
      CROSS JOIN LATERAL (SELECT id AS hi FROM items WHERE run_id = ${run} AND state >= s.state AND state <= s.state
        ORDER BY items.state DESC, items.id DESC LIMIT 1) AS b`
    return b?.lo === null || b?.lo === undefined || b.hi === null ? null : { lo: b.lo, hi: b.hi }
  }

  /** Rows with their attempts (`attempts_list`, oldest first): one read for all of them. */
  private async attached<T extends { id: number }>(
    sql: SQL,
    rows: T[],
  ): Promise<(T & { attempts_list: AttemptRow[] })[]> {
    if (!rows.length) return []
    const all: (AttemptRow & { item_id: number })[] = await sql`SELECT item_id, ${sql.unsafe(ATTEMPT_COLUMNS)}
      FROM attempts WHERE item_id = ANY(${rows.map((r) => r.id)}::int[]) ORDER BY id`
    const of = new Map<number, AttemptRow[]>()
    for (const { item_id, ...a } of all) {
      const list = of.get(item_id)
      if (list) list.push(a)
      else of.set(item_id, [a])
    }
    return rows.map((row) => ({ ...row, attempts_list: of.get(row.id) ?? [] }))
  }

  async problems(run: number, limit = 1000): Promise<Problem[]> {
    return this.rows(
      (sql) => sql`SELECT file, line, reason, excerpt FROM problems WHERE run_id = ${run}
        ORDER BY input, line, id LIMIT ${limit}`,
    )
  }

  /** Whether any item of the run is not yet finished (pending, in flight or waiting to retry): one index probe. */
  async hasOpen(run: number): Promise<boolean> {
    const [row] = await this.read(
      (sql): Promise<{ open: boolean }[]> =>
        // a probe of items_state per state (see `ofState`)
        sql`SELECT EXISTS (SELECT 1 FROM unnest(${OPEN}::text[]) AS s(state)
          CROSS JOIN LATERAL (SELECT 1 FROM items WHERE run_id = ${run} AND state >= s.state AND state <= s.state
            ORDER BY items.state, items.id LIMIT 1) AS i) AS open`,
    )
    return row?.open ?? false
  }

  /** The most input and output tokens one attempt of the run has used: a bound for what the next one will. */
  async largestAttempt(run: number): Promise<{ input: number; output: number } | null> {
    const [row] = await this.read(
      (sql): Promise<{ input: number | null; output: number | null }[]> =>
        sql`SELECT max(input_tokens) AS input, max(output_tokens) AS output FROM attempts
          WHERE run_id = ${run} AND outcome IS NOT NULL AND input_tokens IS NOT NULL`,
    )
    return row && row.input !== null ? { input: row.input, output: row.output ?? 0 } : null
  }
}
