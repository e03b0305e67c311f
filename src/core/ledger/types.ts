/** The ledger's rows as every driver gives them: what the engine, the reports and the server read and hand back. */
import type { ErrorClass } from "../../plugins/api/errors.ts"
import type { Job } from "../job/job.ts"
import type { Checkpoint, RemoteBatch } from "../../plugins/api/define.ts"
import type { RunState, State } from "./states.ts"

export interface Run {
  id: number
  name: string
  state: RunState
  /** The job the run was made with (the latest one, for a resumed run), checked when the ledger read it. */
  job: Job
  fingerprint: string
  resume: string
  reason: string | null
  ingested: number
  created_at: number
  updated_at: number
  finished_at: number | null
  /** Queue limits learned from the provider (batch mode): enqueued tokens, and requests. */
  queue_tokens: number | null
  queue_requests: number | null
  exported_at: number | null
  /**
   * A pipeline step's run (README, "Pipelines"): the id of the pipeline run it belongs to, and the step's name; both
   * null for any other run. A pipeline run holds the rows (its items are the input rows, never called); each of its
   * steps is a run of its own, whose items are made as the rows' needed steps end.
   */
  parent: number | null
  step: string | null
}

/** One input file of a run, and how far it has been read. */
export interface Input {
  run_id: number
  idx: number
  path: string
  format: string
  /** The source's own checkpoint after the last batch stored, checked when the ledger read it. */
  checkpoint: Checkpoint | undefined
  rows: number
  problems: number
  duplicates: number
  done: number
}

/** An item as the runner needs it to make a request. `attempt` is this attempt's number (1 for the first). */
export interface Claimed {
  id: number
  key: string
  data: string
  attempt: number
}

export interface Item {
  id: number
  run_id: number
  input: number
  key: string
  row: number
  source_id: string | null
  data: string
  state: State
  attempts: number
  next_at: number | null
  output: string | null
  error_class: string | null
  error: string | null
  input_tokens: number
  output_tokens: number
  cached_input_tokens: number
  /** Input tokens written to the provider's prompt cache (part of `input_tokens`), priced at the cache-write price. */
  cache_write_tokens: number
  batch_id: number | null
  batch_line: number | null
  batch_input_tokens: number
  batch_output_tokens: number
  batch_cached_tokens: number
  batch_write_tokens: number
  /**
   * The response cache's key of the item's request (README, "Cache"), once the cache was asked for it ("" when no
   * request can be made of its row); null while it has not been. A completed answer is stored under it.
   */
  cache_key: string | null
  /**
   * A hit: the usage and cost the answer had when it was paid for (`CachedUsage` as `usageText` writes it: read it
   * with `usageOf`); the item itself was completed without a call, and its own usage and cost stay 0. Null for an
   * item not served from the cache.
   */
  cached_usage: string | null
  /** An embedding item's vector: float32 bytes, little-endian, 4 a dimension; null for any other item. */
  vector: Uint8Array | null
  path: string
}

/** What a cached answer cost when it was paid for: kept on an item served from the cache, for reference. */
export interface CachedUsage {
  input_tokens: number
  output_tokens: number
  cached_input_tokens: number
  /** USD at the price it was paid (batch or not); null when the model's price was unknown. */
  cost_usd: number | null
}

/**
 * A completed answer to write to the response cache under its item's key (`Item.cache_key`), in the transaction
 * that completes the item: who answered, and what it cost (USD at the price paid; null when unknown).
 */
export interface CacheWrite {
  provider: string
  model: string
  cost: number | null
}

/** How one attempt ended, as the runner hands it to the ledger. */
export interface Outcome {
  item: number
  /** The attempt's number, as claimed. */
  attempt: number
  to: Extract<State, "completed" | "retry_wait" | "failed" | "pending" | "needs_review">
  /** ok, retry, failed, needs_review, interrupted, paused */
  label: string
  output?: string
  errorClass?: ErrorClass
  error?: string
  status?: number
  nextAt?: number
  inputTokens?: number
  outputTokens?: number
  cachedTokens?: number
  /** Input tokens written to the provider's prompt cache (`Usage.cache_write_tokens`). */
  writeTokens?: number
  latencyMs: number
  endedAt: number
  /** A completed answer that goes into the response cache (the job's cache writes). */
  cache?: CacheWrite | undefined
  /** An embedding job's answer: the vector, stored as float32 bytes in `Item.vector` (`output` stays unset). */
  vector?: Float32Array | undefined
}

/** What the ledger keeps of a provider batch's state. */
export type RemoteView = Pick<
  RemoteBatch,
  "id" | "status" | "phase" | "outcome" | "counts" | "files" | "error"
>

export type BatchState = "intent" | "submitted" | "downloading" | "applying" | "done" | "abandoned"

/** A provider batch as the ledger keeps it: from the intent committed before `create` to the last line applied. */
export interface Batch {
  id: number
  run_id: number
  tag: string
  /** intent → submitted → downloading → applying → done; or abandoned (never reached the provider, or refused). */
  state: BatchState
  provider_id: string | null
  status: string | null
  phase: string | null
  outcome: string | null
  count: number
  bytes: number
  tokens: number
  total: number | null
  done: number | null
  failed: number | null
  files: string | null
  requests: string
  output: string | null
  errors: string | null
  error: string | null
  error_class: string | null
  lines: number
  polls: number
  next_at: number | null
  created_at: number
  submitted_at: number | null
  ended_at: number | null
  finished_at: number | null
}

/** A submission intent: the batch's tag, its request file, and that file's size and estimated tokens. */
export interface Intent {
  tag: string
  requests: string
  bytes: number
  tokens: number
}

/** An item that may go into the next batch, with where its last request is, when it has been in a batch. */
export interface Packable {
  id: number
  key: string
  data: string
  attempts: number
  batch_id: number | null
  batch_offset: number | null
  batch_bytes: number | null
}

/** How one line of an ended batch settles its item. */
export interface LineOutcome {
  item: number
  to: Extract<State, "completed" | "pending" | "failed" | "needs_review">
  label: string
  output?: string | undefined
  errorClass?: ErrorClass | undefined
  error?: string | undefined
  status?: number | undefined
  inputTokens?: number | undefined
  outputTokens?: number | undefined
  cachedTokens?: number | undefined
  writeTokens?: number | undefined
  endedAt: number
  /** A completed answer that goes into the response cache (the job's cache writes). */
  cache?: CacheWrite | undefined
  /** An embedding job's answer: the vector, stored as float32 bytes in `Item.vector` (`output` stays unset). */
  vector?: Float32Array | undefined
}

export interface Summary {
  counts: Record<State, number>
  total: number
  attempts: number
  inputTokens: number
  outputTokens: number
  cachedTokens: number
  /** Input tokens written to the provider's prompt cache (part of `inputTokens`). */
  writeTokens: number
  /**
   * The part of the tokens paid at the batch price (a flex call's tokens too: flex costs the batch price). Priming
   * calls are never in it.
   */
  batch: { inputTokens: number; outputTokens: number; cachedTokens: number; writeTokens: number }
  /**
   * The run's priming calls (README, "Paying less"): how many were sent, how many failed, when the last one that
   * answered ended, and their tokens. Their tokens are also in the totals above (at the full price), so that spend
   * and the spend cap count them.
   */
  primes: {
    count: number
    failed: number
    lastAt: number | null
    inputTokens: number
    outputTokens: number
    cachedTokens: number
    writeTokens: number
  }
  errors: { class: string; count: number; example: string; key: string }[]
  problems: { count: number; duplicates: number; sample: { file: string; line: number; reason: string }[] }
  firstStarted: number | null
  lastEnded: number | null
  recentCompleted: number
  recentWindowMs: number
  /**
   * The response cache for this run: items served from it (`hits`), items it was asked for and could not serve
   * (`misses`), and what the answers served had cost when they were paid (`savedUsd`; answers of unknown price
   * count 0).
   */
  cache: { hits: number; misses: number; savedUsd: number }
}

/** One attempt of an item, as the page and the API show it. */
export interface AttemptRow {
  n: number
  started_at: number
  ended_at: number | null
  outcome: string | null
  error_class: string | null
  error: string | null
  http_status: number | null
  input_tokens: number | null
  output_tokens: number | null
  cached_input_tokens: number | null
  cache_write_tokens: number | null
  latency_ms: number | null
  batch_id: number | null
}

/** A failed attempt, with its item, as the page lists it. */
export type AttemptError = Pick<AttemptRow, "n" | "outcome" | "error" | "http_status"> & {
  id: number
  item_id: number
  key: string
  ended_at: number
  error_class: string
}

/** The fields of an item a result line (DESIGN §7) is made of. */
export type ResultRow = Pick<
  Item,
  | "input"
  | "key"
  | "state"
  | "output"
  | "error"
  | "error_class"
  | "attempts"
  | "input_tokens"
  | "output_tokens"
  | "cached_input_tokens"
  | "cache_write_tokens"
  | "batch_input_tokens"
  | "batch_output_tokens"
  | "batch_cached_tokens"
  | "batch_write_tokens"
  | "cached_usage"
  | "path"
  | "row"
  | "source_id"
>

/**
 * An item as `spool results` exports it (src/core/report/export.ts): its result line's fields, its id (the cursor), its
 * input row (`data`, JSON text), its vector (an embedding's float32 bytes, or null) and when it last changed (ms).
 */
export type ExportRow = ResultRow & {
  id: number
  data: string
  vector: Uint8Array | null
  updated_at: number
}

/**
 * A remembered export of a run (`spool results --since-last-export`): when it read the run (`at`, ms), the mark the
 * next such export starts after (items whose `updated_at` is above it), how many rows it wrote, its format and file.
 */
export interface ExportMark {
  at: number
  mark: number
  rows: number
  format: string
  path: string | null
}

/** An item of a page: its result line's fields, and its id (the cursor). */
export type PageRow = ResultRow & { id: number }

export interface PagedItem extends PageRow {
  attempts_list: AttemptRow[]
}

/** A problem line of an input (malformed, or a duplicate id), with the first 200 bytes of it. */
export interface Problem {
  file: string
  line: number
  reason: string
  excerpt: string
}

/** The length of a progress bucket: completions are counted per run and per 10 s. */
export const PROGRESS_BUCKET_MS = 10_000

/** Whether the process that holds a lease (its owner id) is known to be gone: its lease is taken at once. */
export type Dead = (owner: string) => boolean

/** A run to create: its job, what resumes it, its inputs in order, and the latest run of its name the caller saw. */
export interface NewRun {
  name: string
  job: Job
  fingerprint: string
  resume: string
  inputs: { path: string; format: string }[]
  /**
   * The id of the latest run of this name when the caller last looked, or null: a run made by another process
   * since is returned instead of a new one, so workers started together share one run.
   */
  seen?: number | null
  /**
   * The process that will work on a new run: registered as its first worker in the same transaction, so the run is
   * never seen without one (and shown `interrupted`) before it has begun. A run found instead is left as it is.
   */
  worker?: string
  /** A pipeline step's run: the pipeline run it belongs to, and the step's name. */
  parent?: { run: number; step: string } | undefined
}

/**
 * A row of a pipeline run whose step may be decided now (`Steps.ready`): the row (the pipeline run's item), and the
 * item of each needed step, in the order the needs were given.
 */
export interface Ready {
  /** The pipeline run's item: the cursor. */
  id: number
  input: number
  key: string
  row: number
  source_id: string | null
  /** The input row, JSON text. */
  data: string
  needs: { state: State; data: string; output: string | null; error: string | null }[]
}

/** A step's item as the pipeline makes it: the row's, in the state the step's `when` and its needs decided. */
export interface StepItem {
  input: number
  key: string
  row: number
  source_id: string | null
  /** What the step's request is made of (JSON text): the row, and the answers of the steps it reaches. */
  data: string
  /**
   * pending: to call; skipped: its `when` was false, or a step it needs did not complete; needs_review: a review
   * step's row waiting for a person; completed: a review step's row let through (its `when` false).
   */
  state: Extract<State, "pending" | "skipped" | "needs_review" | "completed">
  output?: string | null | undefined
  error?: string | null | undefined
  error_class?: string | null | undefined
}

/**
 * A priming call (README, "Paying less"): one small request sent before a batch so that its requests read their
 * shared prefix from the provider's prompt cache. It belongs to the run, not to an item.
 */
export interface Prime {
  /** The prefix it primed (`PromptCache.key`). */
  prefix: string
  /** The local batch it was sent for, when it was. */
  batch: number | null
  owner: string
  startedAt: number
  endedAt: number
  /** "ok" (answered: its tokens are paid) or "failed" (no answer; `error` says why). */
  outcome: "ok" | "failed"
  error?: string | undefined
  status?: number | undefined
  inputTokens: number
  outputTokens: number
  cachedTokens: number
  writeTokens: number
  latencyMs: number
}
