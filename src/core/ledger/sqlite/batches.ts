/** Provider batches (DESIGN §4 rules 3 and 4): the intent before create, submit, polls, download, apply by line. */
import type { Database } from "bun:sqlite"
import { StoreError, type ErrorClass } from "../../../plugins/api/errors.ts"
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
import type { Looked } from "../ledger.ts"
import type { Cache } from "./cache.ts"
import { guard } from "./faults.ts"
import { statements, type Conn } from "./connect.ts"
import type { Runs } from "./runs.ts"
import type { Tallies } from "./tallies.ts"

export class Batches {
  readonly path: string
  private readonly db: Database
  /** The durability level of every commit but the batch lines' (see `apply`). */
  private readonly synchronous: "FULL" | "NORMAL"
  private readonly q: ReturnType<typeof prepare>

  constructor(
    conn: Conn,
    private readonly runs: Runs,
    private readonly tallies: Tallies,
    private readonly cache: Cache,
  ) {
    this.db = conn.db
    this.path = conn.path
    this.synchronous = conn.synchronous
    this.q = prepare(conn.db)
  }

  /** The right to pack, submit, poll and apply a run's batches: one process at a time, as with ingestion. */
  lease(run: number, owner: string, ms: number, dead: Dead): boolean {
    return this.runs.lease("batch", run, owner, ms, dead)
  }

  /** Who holds the batch lease, while it is held. */
  holder(run: number): string | null {
    return this.runs.batchHolder(run)
  }

  release(run: number, owner: string): void {
    this.runs.releaseBatches(run, owner)
  }

  /**
   * Items that may go into the next batch: due retries first, then pending ones, in ledger order (with `looked`,
   * only those the response cache was asked for).
   */
  packable(run: number, limit: number, o: Looked & { now?: number } = {}): Packable[] {
    const picked = this.q.packableRetries.all(run, o.now ?? Date.now(), limit)
    const pending = o.looked ? this.q.packableLooked : this.q.packablePending
    if (picked.length < limit) picked.push(...pending.all(run, limit - picked.length))
    return picked
  }

  /**
   * Commits a submission intent: the batch row, and its items claimed as `queued` with their line and its bytes
   * in the request file, each with a new attempt. Items whose request could not be made at all (`failed`) end
   * here, with their attempt. Throws, committing nothing, if any item is no longer claimable.
   */
  intend(
    run: number,
    intent: Intent,
    lines: { id: number; line: number; offset: number; bytes: number }[],
    failed: { id: number; errorClass: ErrorClass; error: string }[],
    owner: string,
  ): Batch | null {
    const now = Date.now()
    return this.db
      .transaction(() => {
        let batch: Batch | null = null
        if (lines.length > 0) {
          batch = this.q.insertBatch.get(
            run,
            intent.tag,
            lines.length,
            intent.bytes,
            intent.tokens,
            intent.requests,
            now,
          )
          if (!batch) throw new StoreError("the batch could not be recorded")
          states.check("pending", "queued")
          states.check("retry_wait", "queued")
          const json = JSON.stringify(lines)
          const fromPending = this.q.queueItems.run(batch.id, now, json, "pending").changes
          const fromRetry = this.q.queueItems.run(batch.id, now, json, "retry_wait").changes
          const claimed = fromPending + fromRetry
          this.tallies.shift(
            run,
            { pending: -fromPending, retry_wait: -fromRetry, queued: claimed },
            { attempts: claimed },
          )
          if (claimed !== lines.length)
            throw new StoreError(
              `${lines.length - claimed} item(s) of batch ${intent.tag} were claimed elsewhere`,
            )
        }
        if (failed.length > 0) {
          states.check("queued", "failed")
          const json = JSON.stringify(failed)
          const n = this.q.failUnpackable.run(now, json).changes
          if (n !== failed.length)
            throw new StoreError("an item that could not be packed was claimed elsewhere")
          this.q.closeUnpackable.run(run, owner, now, json)
        }
        return batch
      })
      .immediate()
  }

  /** The provider has the batch: its items are `submitted`. */
  submitted(batch: number, remote: RemoteView): void {
    const now = Date.now()
    this.db
      .transaction(() => {
        states.check("queued", "submitted")
        this.q.submitBatch.run(remote.id, remote.status, remote.phase, now, batch)
        const n = this.q.submitItems.run(now, batch).changes
        this.tallies.shift(this.runOfBatch(batch), { queued: -n, submitted: n })
        this.observe(batch, remote, null)
      })
      .immediate()
  }

  /**
   * The batch never reached the provider, or the provider refused the whole of it (a full queue): its items go back
   * to pending as if never sent; their attempt is taken back.
   */
  abandon(batch: number, why: { errorClass: string; error: string }): number {
    const now = Date.now()
    return this.db
      .transaction(() => {
        const n = this.unrun(batch, now)
        this.q.abandonBatch.run(why.error, why.errorClass, now, batch)
        return n
      })
      .immediate()
  }

  /** Items of a batch still `queued` or `submitted` go back to pending, their attempt taken back (it never ran). */
  private unrun(batch: number, now: number): number {
    states.check("submitted", "pending")
    states.check("queued", "pending")
    const queued = this.q.unrunItems.run(now, batch, "queued").changes
    const submitted = this.q.unrunItems.run(now, batch, "submitted").changes
    const n = queued + submitted
    if (n > 0)
      this.tallies.shift(
        this.runOfBatch(batch),
        { queued: -queued, submitted: -submitted, pending: n },
        { attempts: -n },
      )
    return n
  }

  private runOfBatch(batch: number): number {
    const row = this.q.batchById.get(batch)
    if (!row) throw new StoreError(`batch ${batch} is not in the ledger`)
    return row.run_id
  }

  /** What the provider said of the batch; `nextAt` is when to ask again. An ended batch moves on to downloading. */
  observe(batch: number, remote: RemoteView, nextAt: number | null): void {
    const ended = remote.phase === "ended"
    this.q.observeBatch.run(
      remote.status,
      remote.phase,
      remote.outcome ?? null,
      remote.counts?.total ?? null,
      remote.counts?.done ?? null,
      remote.counts?.failed ?? null,
      remote.files ? JSON.stringify(remote.files) : null,
      remote.error?.message ?? null,
      remote.error?.errorClass ?? null,
      nextAt,
      ended ? Date.now() : null,
      batch,
    )
  }

  /** Sets when to look at a batch again, with the error that made us wait, if any. */
  later(batch: number, nextAt: number, error: string | null = null): void {
    this.q.batchLater.run(nextAt, error, batch)
  }

  /** The raw result files are on disk: apply them next. */
  downloaded(batch: number, files: { output?: string | undefined; errors?: string | undefined }): void {
    this.q.downloadedBatch.run(files.output ?? null, files.errors ?? null, batch)
  }

  /**
   * Settles items by their lines, in one transaction, recording each line as the item's attempt (a batch item's
   * attempt row is written when its line comes back; until then `items.attempts` alone counts it). Lines of items
   * already settled (a re-apply after a crash) are skipped.
   */
  apply(batch: number, outcomes: LineOutcome[], owner: string): void {
    if (outcomes.length === 0) return
    for (const o of outcomes) states.check("submitted", o.to)
    const now = Date.now()
    // Without an fsync of its own (ARCHITECTURE.md, "Batch mode"): the lines come from a result file that is already
    // on disk, and a power cut can only lose the last of these commits, never a later one (the WAL is one sequence,
    // and `finish` syncs it); the batch is then still `applying` and its file is applied again. Set and reset in
    // this one synchronous call, so no other commit of this connection runs in between.
    this.db.run("PRAGMA synchronous = NORMAL")
    try {
      this.db
        .transaction(() => {
          const started = this.q.batchStarted.get(batch)?.at ?? now
          // the tallies and completion buckets of the lines settled, counted here once for the chunk
          const moved: Partial<Record<State, number>> = { submitted: 0 }
          const tokens = { input_tokens: 0, output_tokens: 0, cached_input_tokens: 0, cache_write_tokens: 0 }
          const buckets = new Map<number, { completed: number; failed: number }>()
          let run = 0
          // a statement per line: twice as fast here as one statement over a json_each of the chunk
          for (const o of outcomes) {
            const done = this.q.settleItem.get(
              o.to,
              o.output ?? null,
              o.errorClass ?? null,
              o.error ?? null,
              o.inputTokens ?? 0,
              o.outputTokens ?? 0,
              o.cachedTokens ?? 0,
              o.endedAt,
              o.item,
              batch,
              o.writeTokens ?? 0,
            )
            if (!done) continue
            // an embedding's vector as float32 bytes (`output` stays null), in the line's own transaction
            if (o.vector) this.q.vectorOf.run(vectorBytes(o.vector), o.item)
            this.cache.put(done.cache_key, o)
            run = done.run_id
            moved.submitted = (moved.submitted ?? 0) - 1
            moved[o.to] = (moved[o.to] ?? 0) + 1
            tokens.input_tokens += o.inputTokens ?? 0
            tokens.output_tokens += o.outputTokens ?? 0
            tokens.cached_input_tokens += o.cachedTokens ?? 0
            tokens.cache_write_tokens += o.writeTokens ?? 0
            if (states.isFinal(o.to)) {
              const at = Math.floor(o.endedAt / PROGRESS_BUCKET_MS)
              const bucket = buckets.get(at) ?? { completed: 0, failed: 0 }
              if (o.to === "completed") bucket.completed++
              else bucket.failed++
              buckets.set(at, bucket)
            }
            this.q.recordLine.run(
              o.item,
              done.run_id,
              done.attempts,
              owner,
              started,
              o.endedAt,
              o.label,
              o.errorClass ?? null,
              o.error ?? null,
              o.status ?? null,
              o.inputTokens ?? null,
              o.outputTokens ?? null,
              o.cachedTokens ?? null,
              o.writeTokens ?? null,
              batch,
            )
          }
          if (run === 0) return
          this.tallies.shift(run, moved, {
            ...tokens,
            batch_input_tokens: tokens.input_tokens,
            batch_output_tokens: tokens.output_tokens,
            batch_cached_tokens: tokens.cached_input_tokens,
            batch_write_tokens: tokens.cache_write_tokens,
          })
          for (const [at, b] of buckets) this.tallies.ended(run, at, b.completed, b.failed)
        })
        .immediate()
    } finally {
      this.db.run(`PRAGMA synchronous = ${this.synchronous}`)
    }
  }

  /** Every line is applied: items without a line go back to pending, unpaid; the batch is done. */
  finish(batch: number, lines: number): number {
    const now = Date.now()
    return this.db
      .transaction(() => {
        const n = this.unrun(batch, now)
        this.q.finishBatch.run(lines, now, batch)
        return n
      })
      .immediate()
  }

  /** The items a batch still has at the provider, with their attempt numbers. */
  items(batch: number): { id: number; attempts: number }[] {
    return this.q.batchItems.all(batch)
  }

  /** The lines of a batch not yet created, in line order, with each item's input row. */
  lines(batch: number): { id: number; data: string; line: number; offset: number; bytes: number }[] {
    return this.q.batchLines.all(batch)
  }

  /** Every item whose last request went in this batch, whatever its state. */
  members(batch: number): number[] {
    return this.q.batchMembers.all(batch).map((r) => r.id)
  }

  get(id: number): Batch | null {
    return this.q.batchById.get(id)
  }

  list(run: number): Batch[] {
    return this.q.batchesOf.all(run)
  }

  /** A run's live batches and the last `n` that ended, oldest first; and how many it has in all. */
  recent(run: number, n: number): { batches: Batch[]; total: number } {
    return {
      batches: this.q.recentBatches.all(run, n),
      total: this.q.batchCount.get(run)?.n ?? 0,
    }
  }

  /** Batches not yet done or abandoned. */
  live(run: number): Batch[] {
    return this.q.liveBatches.all(run)
  }

  /** Remembers a queue limit the provider reported (enqueued tokens, or requests). */
  learnQueue(run: number, limit: { tokens?: number | undefined; requests?: number | undefined }): void {
    this.q.learnQueue.run(limit.tokens ?? null, limit.requests ?? null, run)
  }

  /** The exact bytes of an item's request line, when its batch's request file is still there. */
  static requestOf(file: string, offset: number, bytes: number): Promise<string> {
    return Bun.file(file)
      .slice(offset, offset + bytes)
      .text()
  }
}
guard(Batches)

function prepare(db: Database) {
  const q = statements(db)
  return {
    packableRetries: q<Packable, [number, number, number]>(
      `SELECT id, key, data, attempts, batch_id, batch_offset, batch_bytes FROM items
       WHERE run_id = ? AND state = 'retry_wait' AND next_at <= ? ORDER BY id LIMIT ?`,
    ),
    packablePending: q<Packable, [number, number]>(
      `SELECT id, key, data, attempts, batch_id, batch_offset, batch_bytes FROM items
       WHERE run_id = ? AND state = 'pending' ORDER BY id LIMIT ?`,
    ),
    packableLooked: q<Packable, [number, number]>(
      `SELECT id, key, data, attempts, batch_id, batch_offset, batch_bytes FROM items
       WHERE run_id = ? AND state = 'pending' AND cache_key IS NOT NULL ORDER BY id LIMIT ?`,
    ),
    insertBatch: q<Batch, [number, string, number, number, number, string, number]>(
      `INSERT INTO batches (run_id, tag, state, count, bytes, tokens, requests, created_at)
       VALUES (?, ?, 'intent', ?, ?, ?, ?, ?) RETURNING *`,
    ),
    queueItems: q<void, [number, number, string, State]>(
      `UPDATE items SET state = 'queued', attempts = attempts + 1, next_at = NULL, batch_id = ?1,
       batch_line = j.value ->> 'line', batch_offset = j.value ->> 'offset', batch_bytes = j.value ->> 'bytes',
       updated_at = ?2
       FROM json_each(?3) AS j WHERE items.id = j.value ->> 'id' AND items.state = ?4`,
    ),
    failUnpackable: q<void, [number, string]>(
      `UPDATE items SET state = 'failed', attempts = attempts + 1, next_at = NULL,
       error_class = j.value ->> 'errorClass', error = j.value ->> 'error', updated_at = ?1
       FROM json_each(?2) AS j WHERE items.id = j.value ->> 'id' AND items.state IN ('pending', 'retry_wait')`,
    ),
    closeUnpackable: q<void, [number, string, number, string]>(
      `INSERT INTO attempts (item_id, run_id, n, owner, started_at, ended_at, outcome, error_class, error)
       SELECT i.id, ?1, i.attempts, ?2, ?3, ?3, 'failed', i.error_class, i.error
       FROM json_each(?4) AS j JOIN items i ON i.id = j.value ->> 'id'`,
    ),
    submitBatch: q<void, [string, string, string, number, number]>(
      `UPDATE batches SET state = 'submitted', provider_id = ?, status = ?, phase = ?, submitted_at = ?
       WHERE id = ? AND state = 'intent'`,
    ),
    submitItems: q<void, [number, number]>(
      "UPDATE items SET state = 'submitted', updated_at = ? WHERE batch_id = ? AND state = 'queued'",
    ),
    unrunItems: q<void, [number, number, State]>(
      `UPDATE items SET state = 'pending', attempts = attempts - 1, updated_at = ?
       WHERE batch_id = ? AND state = ?`,
    ),
    abandonBatch: q<void, [string, string, number, number]>(
      `UPDATE batches SET state = 'abandoned', error = ?, error_class = ?, finished_at = ?, next_at = NULL
       WHERE id = ?`,
    ),
    observeBatch: q<
      void,
      [
        string,
        string,
        string | null,
        number | null,
        number | null,
        number | null,
        string | null,
        string | null,
        string | null,
        number | null,
        number | null,
        number,
      ]
    >(
      `UPDATE batches SET status = ?1, phase = ?2, outcome = ?3, total = coalesce(?4, total),
       done = coalesce(?5, done), failed = coalesce(?6, failed), files = coalesce(?7, files), error = ?8,
       error_class = ?9, next_at = ?10, polls = polls + 1,
       ended_at = coalesce(ended_at, ?11),
       state = CASE WHEN ?11 IS NOT NULL AND state = 'submitted' THEN 'downloading' ELSE state END
       WHERE id = ?12`,
    ),
    batchLater: q<void, [number, string | null, number]>(
      "UPDATE batches SET next_at = ?, error = ? WHERE id = ?",
    ),
    downloadedBatch: q<void, [string | null, string | null, number]>(
      "UPDATE batches SET state = 'applying', output = ?, errors = ? WHERE id = ? AND state IN ('downloading', 'applying')",
    ),
    vectorOf: q<void, [Uint8Array, number]>("UPDATE items SET vector = ? WHERE id = ?"),
    batchStarted: q<{ at: number }, [number]>(
      "SELECT coalesce(submitted_at, created_at) AS at FROM batches WHERE id = ?",
    ),
    settleItem: q<
      { run_id: number; attempts: number; cache_key: string | null },
      [
        string,
        string | null,
        string | null,
        string | null,
        number,
        number,
        number,
        number,
        number,
        number,
        number,
      ]
    >(
      `UPDATE items SET state = ?1, output = ?2, error_class = ?3, error = ?4,
       input_tokens = input_tokens + ?5, output_tokens = output_tokens + ?6,
       cached_input_tokens = cached_input_tokens + ?7, batch_input_tokens = batch_input_tokens + ?5,
       batch_output_tokens = batch_output_tokens + ?6, batch_cached_tokens = batch_cached_tokens + ?7,
       cache_write_tokens = cache_write_tokens + ?11, batch_write_tokens = batch_write_tokens + ?11, updated_at = ?8
       WHERE id = ?9 AND batch_id = ?10 AND state = 'submitted' RETURNING run_id, attempts, cache_key`,
    ),
    recordLine: q<
      void,
      [
        number,
        number,
        number,
        string,
        number,
        number,
        string,
        string | null,
        string | null,
        number | null,
        number | null,
        number | null,
        number | null,
        number | null,
        number,
      ]
    >(
      `INSERT INTO attempts (item_id, run_id, n, owner, started_at, ended_at, outcome, error_class, error,
       http_status, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, batch_id)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    finishBatch: q<void, [number, number, number]>(
      "UPDATE batches SET state = 'done', lines = ?, finished_at = ?, next_at = NULL WHERE id = ?",
    ),
    batchItems: q<{ id: number; attempts: number }, [number]>(
      "SELECT id, attempts FROM items WHERE batch_id = ? AND state = 'submitted'",
    ),
    batchLines: q<{ id: number; data: string; line: number; offset: number; bytes: number }, [number]>(
      `SELECT id, data, batch_line AS line, batch_offset AS offset, batch_bytes AS bytes FROM items
       WHERE batch_id = ? AND state = 'queued' ORDER BY batch_line`,
    ),
    batchMembers: q<{ id: number }, [number]>("SELECT id FROM items WHERE batch_id = ?"),
    batchById: q<Batch, [number]>("SELECT * FROM batches WHERE id = ?"),
    batchesOf: q<Batch, [number]>("SELECT * FROM batches WHERE run_id = ? ORDER BY id"),
    recentBatches: q<Batch, [number, number]>(
      `SELECT * FROM (
         SELECT * FROM batches WHERE run_id = ?1 AND state NOT IN ('done', 'abandoned')
         UNION ALL
         SELECT * FROM (SELECT * FROM batches WHERE run_id = ?1 AND state IN ('done', 'abandoned')
           ORDER BY id DESC LIMIT ?2)
       ) ORDER BY id`,
    ),
    batchCount: q<{ n: number }, [number]>("SELECT count(*) AS n FROM batches WHERE run_id = ?"),
    liveBatches: q<Batch, [number]>(
      "SELECT * FROM batches WHERE run_id = ? AND state NOT IN ('done', 'abandoned') ORDER BY id",
    ),
    learnQueue: q<void, [number | null, number | null, number]>(
      `UPDATE runs SET queue_tokens = coalesce(?1, queue_tokens), queue_requests = coalesce(?2, queue_requests)
       WHERE id = ?3`,
    ),
  }
}
