/**
 * Provider batches on PostgreSQL (DESIGN §4 rules 3 and 4), as sqlite/batches.ts keeps them: the intent before
 * create, submit, polls, download, apply by line. Every commit here is durable (`synchronous_commit` stays on):
 * SQLite's lighter commit of the batch lines has no twin here.
 */
import type { SQL } from "bun"
import { StoreError, type ErrorClass } from "../../../plugins/api/errors.ts"
import type * as api from "../ledger.ts"
import type { Looked } from "../ledger.ts"
import * as states from "../states.ts"
import { vectorBytes } from "../vector.ts"
import type { State } from "../states.ts"
import {
  PROGRESS_BUCKET_MS,
  type Batch,
  type Dead,
  type Intent,
  type LineOutcome,
  type Packable,
  type RemoteView,
} from "../types.ts"
import { notify, retrying, type Pg } from "./connect.ts"
import type { Runs } from "./runs.ts"
import { ended, shift } from "./tallies.ts"

/**
 * Many rows as one statement parameter, for `jsonb_to_recordset`. Sent as text and cast: Bun.SQL would encode a
 * string given straight to `::jsonb` as a JSON string, not as the array it holds.
 */
const rows = (value: unknown[]) => JSON.stringify(value)

export class Batches implements api.Batches {
  constructor(
    private readonly pg: Pg,
    private readonly runs: Runs,
  ) {}

  /** The right to pack, submit, poll and apply a run's batches: one process at a time, as with ingestion. */
  lease(run: number, owner: string, ms: number, dead: Dead): Promise<boolean> {
    return this.runs.lease("batch", run, owner, ms, dead)
  }

  /** Who holds the batch lease, while it is held. */
  holder(run: number): Promise<string | null> {
    return this.runs.batchHolder(run)
  }

  release(run: number, owner: string): Promise<void> {
    return this.runs.releaseBatches(run, owner)
  }

  /**
   * Items that may go into the next batch: due retries first, then pending ones, in ledger order (with `looked`,
   * only those the response cache was asked for: a cached answer never goes into a batch file).
   */
  packable(run: number, limit: number, o: Looked & { now?: number } = {}): Promise<Packable[]> {
    const now = o.now ?? Date.now()
    const looked = o.looked ?? false
    return retrying(this.pg, async () => {
      const picked: Packable[] = [
        ...(await this.pg.sql`SELECT id, key, data, attempts, batch_id, batch_offset, batch_bytes FROM items
          WHERE run_id = ${run} AND state = 'retry_wait' AND next_at <= ${now}::float8 ORDER BY id LIMIT ${limit}`),
      ]
      if (picked.length < limit)
        picked.push(
          ...(await this.pg.sql`SELECT id, key, data, attempts, batch_id, batch_offset, batch_bytes FROM items
            WHERE run_id = ${run} AND state = 'pending' AND (NOT ${looked}::boolean OR cache_key IS NOT NULL)
            ORDER BY id LIMIT ${limit - picked.length}`),
        )
      return picked
    })
  }

  /**
   * Commits a submission intent: the batch row, and its items claimed as `queued` with their line and its bytes
   * in the request file, each with a new attempt. Items whose request could not be made at all (`failed`) end
   * here, with their attempt. The items are locked first and checked: if any is no longer claimable, it throws,
   * committing nothing.
   */
  intend(
    run: number,
    intent: Intent,
    lines: { id: number; line: number; offset: number; bytes: number }[],
    failed: { id: number; errorClass: ErrorClass; error: string }[],
    owner: string,
  ): Promise<Batch | null> {
    const now = Date.now()
    const ids = [...lines, ...failed].map((x) => ({ id: x.id }))
    return this.begin(async (tx) => {
      // in id order, so that two transactions locking some of the same items wait for each other, never deadlock
      const locked: { id: number; state: State }[] = ids.length
        ? await tx`SELECT id, state FROM items
            WHERE id IN (SELECT id FROM jsonb_to_recordset(${rows(ids)}::text::jsonb) AS r(id int))
            ORDER BY id FOR UPDATE`
        : []
      const of = (want: { id: number }[], state: State) => {
        const set = new Set(want.map((x) => x.id))
        return locked.filter((r) => set.has(r.id) && r.state === state).length
      }
      let batch: Batch | null = null
      if (lines.length > 0) {
        states.check("pending", "queued")
        states.check("retry_wait", "queued")
        const fromPending = of(lines, "pending")
        const fromRetry = of(lines, "retry_wait")
        const claimed = fromPending + fromRetry
        if (claimed !== lines.length)
          throw new StoreError(
            `${lines.length - claimed} item(s) of batch ${intent.tag} were claimed elsewhere`,
          )
        const [made]: Batch[] =
          await tx`INSERT INTO batches (run_id, tag, state, count, bytes, tokens, requests, created_at)
          VALUES (${run}, ${intent.tag}, 'intent', ${lines.length}, ${intent.bytes}::float8, ${intent.tokens}::float8,
          ${intent.requests}, ${now}::float8) RETURNING *`
        if (!made) throw new StoreError("the batch could not be recorded")
        batch = made
        const queued = await tx`UPDATE items SET state = 'queued', attempts = attempts + 1, next_at = NULL,
          batch_id = ${made.id}, batch_line = l.line, batch_offset = l."offset", batch_bytes = l.bytes,
          updated_at = ${now}::float8
          FROM jsonb_to_recordset(${rows(lines)}::text::jsonb) AS l(id int, line int, "offset" float8, bytes int)
          WHERE items.id = l.id AND items.state IN ('pending', 'retry_wait')`
        if (queued.count !== claimed)
          throw new StoreError(
            `${lines.length - queued.count} item(s) of batch ${intent.tag} were claimed elsewhere`,
          )
        await shift(
          tx,
          run,
          { pending: -fromPending, retry_wait: -fromRetry, queued: claimed },
          { attempts: claimed },
        )
      }
      if (failed.length > 0) {
        states.check("queued", "failed")
        if (of(failed, "pending") + of(failed, "retry_wait") !== failed.length)
          throw new StoreError("an item that could not be packed was claimed elsewhere")
        const json = rows(failed.map((f) => ({ id: f.id, error_class: f.errorClass, error: f.error })))
        // the items_tally and items_progress triggers count these (pending or retry_wait → failed)
        await tx`WITH f AS (
            UPDATE items SET state = 'failed', attempts = attempts + 1, next_at = NULL,
            error_class = j.error_class, error = j.error, updated_at = ${now}::float8
            FROM jsonb_to_recordset(${json}::text::jsonb) AS j(id int, error_class text, error text)
            WHERE items.id = j.id AND items.state IN ('pending', 'retry_wait')
            RETURNING items.id, items.attempts, items.error_class, items.error)
          INSERT INTO attempts (item_id, run_id, n, owner, started_at, ended_at, outcome, error_class, error)
          SELECT id, ${run}, attempts, ${owner}, ${now}::float8, ${now}::float8, 'failed', error_class, error
          FROM f ORDER BY id`
      }
      return batch
    })
  }

  /** The provider has the batch: its items are `submitted`. */
  async submitted(batch: number, remote: RemoteView): Promise<void> {
    const now = Date.now()
    await this.begin(async (tx) => {
      states.check("queued", "submitted")
      await tx`UPDATE batches SET state = 'submitted', provider_id = ${remote.id}, status = ${remote.status},
        phase = ${remote.phase}, submitted_at = ${now}::float8 WHERE id = ${batch} AND state = 'intent'`
      const { count } = await tx`UPDATE items SET state = 'submitted', updated_at = ${now}::float8
          WHERE batch_id = ${batch} AND state = 'queued'`
      await shift(tx, await runOf(tx, batch), { queued: -count, submitted: count })
      await observed(tx, batch, remote, null)
    })
  }

  /**
   * The batch never reached the provider, or the provider refused the whole of it (a full queue): its items go back
   * to pending as if never sent; their attempt is taken back.
   */
  abandon(batch: number, why: { errorClass: string; error: string }): Promise<number> {
    const now = Date.now()
    return this.begin(async (tx) => {
      const n = await this.unrun(tx, batch, now)
      await tx`UPDATE batches SET state = 'abandoned', error = ${why.error}, error_class = ${why.errorClass},
        finished_at = ${now}::float8, next_at = NULL WHERE id = ${batch}`
      return n
    })
  }

  /**
   * Items of a batch still `queued` or `submitted` go back to pending, their attempt taken back (it never ran), in
   * one statement that tells how many were in each state; others may claim them now.
   */
  private async unrun(tx: SQL, batch: number, now: number): Promise<number> {
    states.check("submitted", "pending")
    states.check("queued", "pending")
    const [was]: { queued: number; submitted: number }[] = await tx`WITH u AS (
        UPDATE items SET state = 'pending', attempts = items.attempts - 1, updated_at = ${now}::float8
        FROM (SELECT id, state FROM items WHERE batch_id = ${batch} AND state IN ('queued', 'submitted')
          ORDER BY id FOR UPDATE) AS o
        WHERE items.id = o.id RETURNING o.state)
      SELECT count(*) FILTER (WHERE state = 'queued')::int AS queued,
        count(*) FILTER (WHERE state = 'submitted')::int AS submitted FROM u`
    const queued = was?.queued ?? 0
    const submitted = was?.submitted ?? 0
    const n = queued + submitted
    if (n === 0) return 0
    const run = await runOf(tx, batch)
    await shift(tx, run, { queued: -queued, submitted: -submitted, pending: n }, { attempts: -n })
    await notify(tx, this.pg, { run, kind: "items" })
    return n
  }

  /** What the provider said of the batch; `nextAt` is when to ask again. An ended batch moves on to downloading. */
  async observe(batch: number, remote: RemoteView, nextAt: number | null): Promise<void> {
    await retrying(this.pg, () => observed(this.pg.sql, batch, remote, nextAt))
  }

  /** Sets when to look at a batch again, with the error that made us wait, if any. */
  async later(batch: number, nextAt: number, error: string | null = null): Promise<void> {
    await retrying(
      this.pg,
      () => this.pg.sql`UPDATE batches SET next_at = ${nextAt}::float8, error = ${error} WHERE id = ${batch}`,
    )
  }

  /** The raw result files are on disk: apply them next. */
  async downloaded(
    batch: number,
    files: { output?: string | undefined; errors?: string | undefined },
  ): Promise<void> {
    await retrying(
      this.pg,
      () =>
        this.pg.sql`UPDATE batches SET state = 'applying', output = ${files.output ?? null},
          errors = ${files.errors ?? null} WHERE id = ${batch} AND state IN ('downloading', 'applying')`,
    )
  }

  /**
   * Settles items by their lines, in one transaction and a few statements whatever the number of lines: each line
   * is its item's attempt (a batch item's attempt row is written when its line comes back; until then
   * `items.attempts` alone counts it). A line whose item is no longer `submitted` in this batch (a re-apply after a
   * crash) is skipped. The commit is as durable as any other: PostgreSQL's `synchronous_commit = off`, SQLite's
   * lighter commit here, is not used, so a result applied is never lost with the server. A completed line with
   * `cache` writes its answer under its item's key, for the lines settled only (as claim_step does: two items of one
   * key write it once, the later answer kept, keys in order).
   */
  async apply(batch: number, outcomes: LineOutcome[], owner: string): Promise<void> {
    if (outcomes.length === 0) return
    for (const o of outcomes) states.check("submitted", o.to)
    // an item's first line settles it, as in SQLite, where its next line finds it settled already
    const lines = new Map<number, LineOutcome>()
    for (const o of outcomes) if (!lines.has(o.item)) lines.set(o.item, o)
    const json = rows(
      [...lines.values()].map((o, ord) => ({
        ord,
        item: o.item,
        state: o.to,
        label: o.label,
        output: o.output,
        error_class: o.errorClass,
        error: o.error,
        status: o.status,
        input_tokens: o.inputTokens,
        output_tokens: o.outputTokens,
        cached_tokens: o.cachedTokens,
        write_tokens: o.writeTokens,
        ended_at: o.endedAt,
        cache: o.cache ?? null,
      })),
    )
    const now = Date.now()
    // an embedding's vectors as float32 bytes (`output` stays null), for the items the lines are about to settle
    const vectors = [...lines.values()].filter((o) => o.vector)
    const pairs = JSON.stringify(
      vectors.map((o) => [o.item, Buffer.from(vectorBytes(o.vector!)).toString("hex")]),
    )
    await this.begin(async (tx) => {
      if (vectors.length > 0)
        await tx`UPDATE items SET vector = decode(v.value ->> 1, 'hex')
          FROM jsonb_array_elements(${pairs}::text::jsonb) AS v
          WHERE items.id = (v.value ->> 0)::bigint AND items.batch_id IS NOT DISTINCT FROM ${batch}
            AND items.state = 'submitted'`
      // Each line finds its item by id. The batch is checked by IS NOT DISTINCT FROM, which no index serves: with
      // `batch_id =`, statistics older than the intent (a new run, before autovacuum) made the planner read the
      // whole batch by items_batch once per line, 35 s for 5,000 lines of a 10,000-item batch, 0.4 s so.
      const settled: { item: number; run: number }[] = await tx`WITH r AS (
          SELECT * FROM jsonb_to_recordset(${json}::text::jsonb) AS r(ord int, item int, state text, label text,
            output text, error_class text, error text, status int, input_tokens float8, output_tokens float8,
            cached_tokens float8, write_tokens float8, ended_at float8, cache jsonb)),
        u AS (
          UPDATE items SET state = r.state, output = r.output, error_class = r.error_class, error = r.error,
          input_tokens = items.input_tokens + coalesce(r.input_tokens, 0),
          output_tokens = items.output_tokens + coalesce(r.output_tokens, 0),
          cached_input_tokens = items.cached_input_tokens + coalesce(r.cached_tokens, 0),
          batch_input_tokens = items.batch_input_tokens + coalesce(r.input_tokens, 0),
          batch_output_tokens = items.batch_output_tokens + coalesce(r.output_tokens, 0),
          batch_cached_tokens = items.batch_cached_tokens + coalesce(r.cached_tokens, 0),
          cache_write_tokens = items.cache_write_tokens + coalesce(r.write_tokens, 0),
          batch_write_tokens = items.batch_write_tokens + coalesce(r.write_tokens, 0),
          updated_at = r.ended_at
          FROM r WHERE items.id = r.item AND items.batch_id IS NOT DISTINCT FROM ${batch} AND items.state = 'submitted'
          RETURNING items.id, items.run_id, items.attempts, items.cache_key),
        put AS (
          INSERT INTO cache AS c (key, provider, model, output, input_tokens, output_tokens, cached_input_tokens,
            cost_usd, bytes, created_at)
          SELECT DISTINCT ON (u.cache_key) u.cache_key, r.cache->>'provider', r.cache->>'model', r.output,
            coalesce(r.input_tokens, 0), coalesce(r.output_tokens, 0), coalesce(r.cached_tokens, 0),
            (r.cache->>'cost')::float8, octet_length(r.output), r.ended_at
          FROM u JOIN r ON r.item = u.id
          WHERE r.cache IS NOT NULL AND r.state = 'completed' AND r.output IS NOT NULL AND u.cache_key <> ''
          ORDER BY u.cache_key, r.ended_at DESC, r.ord DESC
          ON CONFLICT (key) DO UPDATE SET provider = excluded.provider, model = excluded.model,
            output = excluded.output, input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens,
            cached_input_tokens = excluded.cached_input_tokens, cost_usd = excluded.cost_usd, bytes = excluded.bytes,
            created_at = excluded.created_at)
        INSERT INTO attempts (item_id, run_id, n, owner, started_at, ended_at, outcome, error_class, error,
          http_status, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, batch_id)
        SELECT u.id, u.run_id, u.attempts, ${owner},
          coalesce((SELECT coalesce(submitted_at, created_at) FROM batches WHERE id = ${batch}), ${now}::float8),
          r.ended_at, r.label, r.error_class, r.error, r.status, r.input_tokens, r.output_tokens, r.cached_tokens,
          r.write_tokens, ${batch}
        FROM u JOIN r ON r.item = u.id ORDER BY r.ord
        RETURNING item_id AS item, run_id AS run`
      if (settled.length === 0) return
      // the tallies and completion buckets of the lines settled, counted here once for the chunk, as in SQLite
      const run = settled[0]!.run
      const done = new Set(settled.map((s) => s.item))
      const moved: Partial<Record<State, number>> = { submitted: 0 }
      const tokens = { input_tokens: 0, output_tokens: 0, cached_input_tokens: 0, cache_write_tokens: 0 }
      const buckets = new Map<number, { completed: number; failed: number }>()
      for (const o of lines.values()) {
        if (!done.has(o.item)) continue
        moved.submitted = (moved.submitted ?? 0) - 1
        moved[o.to] = (moved[o.to] ?? 0) + 1
        tokens.input_tokens += o.inputTokens ?? 0
        tokens.output_tokens += o.outputTokens ?? 0
        tokens.cached_input_tokens += o.cachedTokens ?? 0
        tokens.cache_write_tokens += o.writeTokens ?? 0
        if (!states.isFinal(o.to)) continue
        const at = Math.floor(o.endedAt / PROGRESS_BUCKET_MS)
        const bucket = buckets.get(at) ?? { completed: 0, failed: 0 }
        if (o.to === "completed") bucket.completed++
        else bucket.failed++
        buckets.set(at, bucket)
      }
      await shift(tx, run, moved, {
        ...tokens,
        batch_input_tokens: tokens.input_tokens,
        batch_output_tokens: tokens.output_tokens,
        batch_cached_tokens: tokens.cached_input_tokens,
        batch_write_tokens: tokens.cache_write_tokens,
      })
      for (const [at, b] of buckets) await ended(tx, run, at, b.completed, b.failed)
      if ((moved.pending ?? 0) > 0) await notify(tx, this.pg, { run, kind: "items" })
    })
  }

  /** Every line is applied: items without a line go back to pending, unpaid; the batch is done. */
  finish(batch: number, lines: number): Promise<number> {
    const now = Date.now()
    return this.begin(async (tx) => {
      const n = await this.unrun(tx, batch, now)
      await tx`UPDATE batches SET state = 'done', lines = ${lines}, finished_at = ${now}::float8, next_at = NULL
        WHERE id = ${batch}`
      return n
    })
  }

  /** The items a batch still has at the provider, with their attempt numbers. */
  items(batch: number): Promise<{ id: number; attempts: number }[]> {
    return this.read(
      () =>
        this.pg
          .sql`SELECT id, attempts FROM items WHERE batch_id = ${batch} AND state = 'submitted' ORDER BY id`,
    )
  }

  /** The lines of a batch not yet created, in line order, with each item's input row. */
  lines(batch: number): Promise<{ id: number; data: string; line: number; offset: number; bytes: number }[]> {
    return this.read(
      () =>
        this.pg
          .sql`SELECT id, data, batch_line AS line, batch_offset AS "offset", batch_bytes AS bytes FROM items
          WHERE batch_id = ${batch} AND state = 'queued' ORDER BY batch_line`,
    )
  }

  /** Every item whose last request went in this batch, whatever its state. */
  async members(batch: number): Promise<number[]> {
    const rows = await this.read<{ id: number }>(
      () => this.pg.sql`SELECT id FROM items WHERE batch_id = ${batch} ORDER BY id`,
    )
    return rows.map((r) => r.id)
  }

  async get(id: number): Promise<Batch | null> {
    const [batch] = await this.read<Batch>(() => this.pg.sql`SELECT * FROM batches WHERE id = ${id}`)
    return batch ?? null
  }

  list(run: number): Promise<Batch[]> {
    return this.read(() => this.pg.sql`SELECT * FROM batches WHERE run_id = ${run} ORDER BY id`)
  }

  /** A run's live batches and the last `n` that ended, oldest first; and how many it has in all. */
  recent(run: number, n: number): Promise<{ batches: Batch[]; total: number }> {
    return retrying(this.pg, async () => {
      const batches: Batch[] = [
        ...(await this.pg.sql`SELECT * FROM (
            SELECT * FROM batches WHERE run_id = ${run} AND state NOT IN ('done', 'abandoned')
            UNION ALL
            (SELECT * FROM batches WHERE run_id = ${run} AND state IN ('done', 'abandoned') ORDER BY id DESC LIMIT ${n})
          ) AS b ORDER BY id`),
      ]
      const [count]: { n: number }[] = await this.pg
        .sql`SELECT count(*)::int AS n FROM batches WHERE run_id = ${run}`
      return { batches, total: count?.n ?? 0 }
    })
  }

  /** Batches not yet done or abandoned. */
  live(run: number): Promise<Batch[]> {
    return this.read(
      () =>
        this.pg
          .sql`SELECT * FROM batches WHERE run_id = ${run} AND state NOT IN ('done', 'abandoned') ORDER BY id`,
    )
  }

  /** Remembers a queue limit the provider reported (enqueued tokens, or requests). */
  async learnQueue(
    run: number,
    limit: { tokens?: number | undefined; requests?: number | undefined },
  ): Promise<void> {
    await retrying(
      this.pg,
      () =>
        this.pg.sql`UPDATE runs SET queue_tokens = coalesce(${limit.tokens ?? null}::float8, queue_tokens),
          queue_requests = coalesce(${limit.requests ?? null}::int, queue_requests) WHERE id = ${run}`,
    )
  }

  /** One transaction, tried again whole while the connection is lost. */
  private begin<T>(fn: (tx: SQL) => Promise<T>): Promise<T> {
    return retrying(this.pg, () => this.pg.sql.begin((tx) => fn(tx)) as Promise<T>)
  }

  /** Rows of one read, as a plain array. */
  private async read<T>(fn: () => Promise<T[]>): Promise<T[]> {
    return [...(await retrying(this.pg, fn))]
  }
}

/** The run a batch belongs to. */
async function runOf(tx: SQL, batch: number): Promise<number> {
  const [row]: { run_id: number }[] = await tx`SELECT run_id FROM batches WHERE id = ${batch}`
  if (!row) throw new StoreError(`batch ${batch} is not in the ledger`)
  return row.run_id
}

/** Writes what the provider said of a batch (in a transaction, or as a statement of its own). */
async function observed(sql: SQL, batch: number, remote: RemoteView, nextAt: number | null): Promise<void> {
  const endedAt = remote.phase === "ended" ? Date.now() : null
  await sql`UPDATE batches SET status = ${remote.status}, phase = ${remote.phase}, outcome = ${remote.outcome ?? null},
    total = coalesce(${remote.counts?.total ?? null}::int, total),
    done = coalesce(${remote.counts?.done ?? null}::int, done),
    failed = coalesce(${remote.counts?.failed ?? null}::int, failed),
    files = coalesce(${remote.files ? JSON.stringify(remote.files) : null}::text, files),
    error = ${remote.error?.message ?? null}, error_class = ${remote.error?.errorClass ?? null},
    next_at = ${nextAt}::float8, polls = polls + 1,
    ended_at = coalesce(ended_at, ${endedAt}::float8),
    state = CASE WHEN ${endedAt}::float8 IS NOT NULL AND state = 'submitted' THEN 'downloading' ELSE state END
    WHERE id = ${batch}`
}
