/**
 * The ledger, as the engine, the reports and the server speak to it: asynchronous, so that a network database can
 * be a driver as well as SQLite. A driver keeps DESIGN §4's rules: each method that changes state commits it, whole,
 * before its promise resolves, and a state change is refused (TransitionError) unless states.ts has its edge.
 * Errors of the store itself are a StoreError or StoreCorruptError naming it. test/lib/ledger-contract.ts is the
 * behaviour every driver must show.
 */
import { type ErrorClass } from "../../plugins/api/errors.ts"
import { UsageError } from "../base/errors.ts"
import { gone } from "../base/process.ts"
import type { Job } from "../job/job.ts"
import type { SourceBatch } from "../../plugins/api/define.ts"
import type { RunState, State } from "./states.ts"
import type {
  AttemptError,
  AttemptRow,
  Batch,
  CachedUsage,
  Claimed,
  Dead,
  ExportMark,
  ExportRow,
  Input,
  Intent,
  Item,
  LineOutcome,
  NewRun,
  Outcome,
  Packable,
  PagedItem,
  Prime,
  Problem,
  Ready,
  RemoteView,
  Run,
  StepItem,
  Summary,
} from "./types.ts"

export type { Ready, StepItem } from "./types.ts"

export interface Ledger {
  readonly runs: Runs
  readonly ingest: Ingest
  readonly claims: Claims
  readonly batches: Batches
  readonly reads: Reads
  readonly canaries: Canaries
  readonly workers: Workers
  readonly cache: Cache
  readonly reviews: Reviews
  readonly steps: Steps
  readonly primes: Primes
  /**
   * Calls `onNotice` whenever another process changes something a worker waits for (items to claim, a run's
   * state), as long as the returned stop has not been called. Only a store shared over a network has it
   * (PostgreSQL's LISTEN/NOTIFY); without it, workers look every second.
   */
  listen?(onNotice: (notice: Notice) => void): Promise<() => Promise<void>>
  close(): Promise<void>
}

/**
 * What a store tells its listeners: which run, and what changed. `items`: items became claimable (ingested, a retry
 * due, failed items sent back, a batch's items given back); `state`: the run's state changed (pause, resume, cancel).
 */
export interface Notice {
  run: number
  kind: "items" | "state"
}

export interface OpenOptions {
  /** The durability level of every commit but the batch lines' (FULL unless a benchmark compares). */
  synchronous?: "FULL" | "NORMAL"
  /**
   * `read`: the caller only reads (status, results, runs), so a store that cannot be written — the file, its
   * directory — is opened read-only instead of refused. Default `write`.
   */
  access?: "read" | "write"
}

/** Runs and their inputs. */
export interface Runs {
  /** The latest run of a name: "the" run of a job. */
  latest(name: string): Promise<Run | null>
  get(id: number): Promise<Run | null>
  /** A run by name (its latest) or by numeric id. */
  find(ref: string): Promise<Run | null>
  /** Every run, oldest first. */
  list(): Promise<Run[]>
  /** Creates a run with its inputs, in one transaction, unless another process made one since `seen`. */
  create(run: NewRun): Promise<{ run: Run; created: boolean }>
  /** Sets a run's state; a final one (completed, completed_with_failures, cancelled) also sets `finished_at`. */
  setState(id: number, state: RunState, reason?: string | null): Promise<void>
  setResume(id: number, resume: string): Promise<void>
  /** Keeps the latest job of a resumed run (same fingerprint: only limits and pricing can differ). */
  updateJob(id: number, job: Job): Promise<void>
  markExported(id: number): Promise<void>
  /** A run's inputs, in their order (an item's id depends on its input's index). */
  inputs(run: number): Promise<Input[]>
  /** Appends a file to a run's inputs at the next index; a path already an input is kept as it is. */
  addInput(run: number, path: string, format: string): Promise<Input>
  /** The step runs of a pipeline run (`NewRun.parent`): the latest of each step name, in the order they were made. */
  steps(parent: number): Promise<Run[]>
}

/** Reading inputs into the ledger (DESIGN §4 rule 5). */
export interface Ingest {
  /** Takes or renews the right to ingest a run's inputs: free, ours, lapsed, or held by a dead process. */
  lease(run: number, owner: string, ms: number, dead: Dead): Promise<boolean>
  /**
   * Stores one source batch in one transaction: its rows as pending items (a key already in the run is kept, and
   * is a duplicate unless it is the same row read again), its problems, and its checkpoint. With `asked` (the
   * response cache was asked for the rows before they were stored), each row's item keeps its key, and a row the
   * cache answered is stored completed, as `Cache.serve` completes a hit, and counted so: a run of hits is ingest.
   */
  add(
    run: number,
    input: Pick<Input, "idx" | "path">,
    batch: SourceBatch,
    last: boolean,
    asked?: Asked,
  ): Promise<{ added: number; duplicates: number }>
  /** Every input is read to its end; the ingest lease is let go. */
  done(run: number): Promise<void>
  /** The next ingester reads every input on from its checkpoint. */
  reopen(run: number): Promise<void>
  /** Forgets the checkpoints and problems (`--reingest`); items are kept. */
  reset(run: number): Promise<void>
}

/** Claims and outcomes of direct calls (DESIGN §4 rules 1, 2 and 7). */
export interface Claims {
  /**
   * Records finished attempts and claims up to `limit` more, in one transaction (group commit): due retries first,
   * then pending items, in ledger order, each with its attempt opened. An outcome for an item whose lease this owner
   * lost is recorded on the attempt only. A completed outcome with `cache` writes its answer to the response cache
   * under the item's key, in the same transaction. With `looked`, only pending items the cache was asked for
   * (`Cache.serve`) are claimed: none is called before the cache could answer it.
   */
  step(
    run: number,
    owner: string,
    outcomes: Outcome[],
    limit: number,
    leaseMs: number,
    o?: Looked,
  ): Promise<Claimed[]>
  /** Extends the leases of every item this owner holds. */
  renew(run: number, owner: string, leaseMs: number): Promise<void>
  /** Puts back to pending every running item whose lease lapsed or whose owner is dead; the attempt is `lost`. */
  recover(run: number, dead: Dead): Promise<number>
  /** When the earliest waiting retry falls due, or null. */
  nextRetryAt(run: number): Promise<number | null>
  /**
   * Moves every failed (or needs_review, or rejected) item back to pending, and reopens the run. Their cache keys are forgotten:
   * the cache is asked for them again (another run may have paid for their answer since).
   */
  retry(run: number, from: Extract<State, "failed" | "needs_review" | "rejected">): Promise<number>
  /** The processes that hold a lease on the run: items in flight, ingestion, batches. */
  holders(run: number): Promise<string[]>
}

/**
 * A person's decision on an item left for review (`spool review`, the page): approve its answer as it is, replace it
 * (`edit`, with the new `output`), or reject it (`reason`). `by` says where it was taken (cli, page, a file).
 */
export interface Decision {
  item: number
  decision: "approve" | "edit" | "reject"
  output?: string | undefined
  reason?: string | undefined
  by: string
}

/** A decision as the ledger keeps it: when, and the item's output before and after. */
export interface ReviewRow {
  item: number
  at: number
  decision: Decision["decision"]
  reason: string | null
  before: string | null
  after: string | null
  by: string
}

/** Review decisions (README, "Review"): each one moves an item out of needs_review, and is kept as history. */
export interface Reviews {
  /**
   * Applies the decisions in one transaction: approved and edited items become completed (an edit's output replaces
   * the answer), rejected ones `rejected` with the reason as their error. A decision on an item no longer in
   * needs_review (decided meanwhile, or retried) changes nothing and says so (`applied: false`, its state now).
   */
  decide(run: number, decisions: Decision[]): Promise<{ item: number; applied: boolean; state: State }[]>
  /** An item's decisions, oldest first. */
  history(item: number): Promise<ReviewRow[]>
}

/**
 * Pipelines (README, "Pipelines"): a row's step is an item of the step's run, made once the row's needed steps have
 * ended. There is no barrier: a row goes on as soon as its own needs are done.
 */
export interface Steps {
  /**
   * The rows of the pipeline run `parent` with an id above `after`, in ledger order, at most `limit`: those that have
   * no item yet in the step run `step` and, for each run of `needs`, an item (same input and key) that has ended
   * (completed, failed, skipped or rejected; not needs_review: a person may still let it through). With no needs,
   * every row without an item in `step`.
   */
  ready(parent: number, step: number, needs: number[], o: { after: number; limit: number }): Promise<Ready[]>
  /**
   * Stores a step's items in one transaction, each in its given state (a pending one not yet asked of the cache);
   * an item the run has already (same input and key) is kept as it is. Counts them in the run's tallies and its
   * inputs' rows, and tells listeners that items came. How many were stored.
   */
  add(step: number, items: StepItem[]): Promise<number>
}

/** Provider batches (DESIGN §4 rules 3 and 4). */
export interface Batches {
  /** The right to drive a run's batches: one process at a time. */
  lease(run: number, owner: string, ms: number, dead: Dead): Promise<boolean>
  /** Who holds the batch lease, while it is held. */
  holder(run: number): Promise<string | null>
  release(run: number, owner: string): Promise<void>
  /**
   * Items that may go into the next batch: due retries first, then pending ones, in ledger order. With `looked`,
   * only pending items the cache was asked for: a cached answer never goes into a batch file.
   */
  packable(run: number, limit: number, o?: Looked & { now?: number }): Promise<Packable[]>
  /**
   * Commits a submission intent in one transaction: the batch (state `intent`), its items `queued` with their line
   * and a new attempt each, and the items no request could be made of `failed`. Refuses, committing nothing, when
   * an item is no longer claimable. Null when there are no lines.
   */
  intend(
    run: number,
    intent: Intent,
    lines: { id: number; line: number; offset: number; bytes: number }[],
    failed: { id: number; errorClass: ErrorClass; error: string }[],
    owner: string,
  ): Promise<Batch | null>
  /** The provider has the batch: its items are `submitted`. */
  submitted(batch: number, remote: RemoteView): Promise<void>
  /** The batch never reached the provider, or was refused whole: its items go back to pending, attempt taken back. */
  abandon(batch: number, why: { errorClass: string; error: string }): Promise<number>
  /** What the provider said; `nextAt` is when to ask again. An ended batch moves on to downloading. */
  observe(batch: number, remote: RemoteView, nextAt: number | null): Promise<void>
  /** When to look at a batch again, with the error that made us wait. */
  later(batch: number, nextAt: number, error?: string | null): Promise<void>
  /**
   * The result files are on disk: the batch is `applying`. Also for a batch already applying, downloaded again by a
   * worker that took it over from one whose files are on another host.
   */
  downloaded(
    batch: number,
    files: { output?: string | undefined; errors?: string | undefined },
  ): Promise<void>
  /**
   * Settles items by their lines in one transaction; a line whose item is no longer submitted there is skipped. A
   * completed line with `cache` writes its answer to the response cache under the item's key.
   */
  apply(batch: number, outcomes: LineOutcome[], owner: string): Promise<void>
  /** Every line applied: items without one go back to pending, unpaid; the batch is done. */
  finish(batch: number, lines: number): Promise<number>
  /** The items a batch still has at the provider, with their attempt numbers. */
  items(batch: number): Promise<{ id: number; attempts: number }[]>
  /**
   * The lines of a batch not yet created (`intent`), in line order: each item's input row and where its request is
   * in the request file. A worker that takes over another's intent (another host, no such file here) renders the
   * file again from them, byte for byte.
   */
  lines(batch: number): Promise<{ id: number; data: string; line: number; offset: number; bytes: number }[]>
  /** Every item whose last request went in this batch, whatever its state: whose lines its result files may hold. */
  members(batch: number): Promise<number[]>
  get(id: number): Promise<Batch | null>
  list(run: number): Promise<Batch[]>
  /** A run's live batches and the last `n` that ended, oldest first; and how many it has in all. */
  recent(run: number, n: number): Promise<{ batches: Batch[]; total: number }>
  /** Batches not yet done or abandoned. */
  live(run: number): Promise<Batch[]>
  /** Remembers a queue limit the provider reported (enqueued tokens, or requests). */
  learnQueue(
    run: number,
    limit: { tokens?: number | undefined; requests?: number | undefined },
  ): Promise<void>
}

/** A run's priming calls (README, "Paying less"): recorded once each ends, answered or not. */
export interface Primes {
  /** Records one priming call; an answered one's tokens count in the run's spend (`Summary.primes`). */
  record(run: number, prime: Prime): Promise<void>
  /** When the last answered priming of `prefix` in this run ended (ms), or null: a batch re-primes when it is old. */
  last(run: number, prefix: string): Promise<number | null>
}

/** Reads: counts and totals from maintained tallies, charts, errors, and items a page or a stream at a time. */
export interface Reads {
  /** Items per state. */
  counts(run: number): Promise<Record<State, number>>
  /** A run's totals; `recentCompleted` counts the last `windowMs` before `now`. */
  summary(run: number, now?: number, windowMs?: number): Promise<Summary>
  /** Error classes of a run's attempts, most frequent first, each with its first example. */
  errorClasses(run: number): Promise<Summary["errors"]>
  /** Items ended since `from`, in slots of `slotMs`: the completions chart. */
  progress(
    run: number,
    from: number,
    slotMs: number,
  ): Promise<{ at: number; completed: number; failed: number }[]>
  /** When the first item of a run ended, or null. */
  firstProgress(run: number): Promise<number | null>
  /**
   * Attempts that ended at or after `from`, in slots of `slotMs` (only the slots that have one): how many completed
   * an item (`ok`), failed one (`failed`, `needs_review`), and ended in an error of any class (a retried one too).
   * Reads each such attempt, so it reads none and gives null when more than `max` ended since `from`.
   */
  endings(
    run: number,
    from: number,
    slotMs: number,
    max: number,
  ): Promise<{ at: number; completed: number; failed: number; errors: number }[] | null>
  /**
   * Failed attempts (of any error class, retried ones too) in each of `slots` slots of `slotMs` from `from`, each
   * counted up to `cap` (only the slots that have one): where the chart marks errors, at a cost of slots × cap at
   * most, whatever the run's size.
   */
  errorMarks(
    run: number,
    from: number,
    slotMs: number,
    slots: number,
    cap: number,
  ): Promise<{ at: number; errors: number }[]>
  /** The last `limit` failed attempts, newest first. */
  latestErrors(run: number, limit: number): Promise<AttemptError[]>
  /** Failed attempts that ended at or after `since`, oldest first. */
  errorsSince(run: number, since: number, limit?: number): Promise<AttemptError[]>
  /** A page of items in ledger order after the id `after`, optionally of one state, each with its attempts. */
  page(run: number, o: { state?: State | undefined; after?: number; limit: number }): Promise<PagedItem[]>
  /**
   * A run's items in ledger order, optionally of one state. In a damaged store every item that can still be read is
   * given, then a StoreCorruptError names the ids that could not be.
   */
  items(run: number, state?: State): AsyncIterable<Item>
  /**
   * A page of a run's items for an export, in ledger order after the id `after`: of the given states only (all when
   * none are given), and with `since`, only those whose `updated_at` is above it. Each with its input row and vector.
   */
  exportPage(
    run: number,
    o: { states?: State[] | undefined; since?: number | null; after: number; limit: number },
  ): Promise<ExportRow[]>
  /** The run's last remembered export (`--since-last-export`), or null when it has none. */
  lastExport(run: number): Promise<ExportMark | null>
  /** Remembers an export of the run (a write: the store must be open for writing). */
  recordExport(run: number, e: ExportMark): Promise<void>
  /** An item's attempts, oldest first. */
  attempts(item: number): Promise<AttemptRow[]>
  /** One item of a run by its id, with its input row (`data`, JSON text) and every attempt; null if the run has none. */
  item(run: number, id: number): Promise<(PagedItem & { data: string }) | null>
  /** The run's items whose key is `key` (at most one per input), each with its attempts: an index look-up. */
  keyed(run: number, key: string): Promise<PagedItem[]>
  /**
   * A bounded search: reads at most `scan` of the run's items (of one state, if given) after the id `after`, in
   * ledger order, and gives the first `limit` whose input row, output or error contains `text` (ASCII letters in
   * either case), each with its attempts. `scanned` is how many items it read; `next` is the id to go on after, or
   * null when it reached the run's last item. Its cost is bounded by `scan`, never by the run's size.
   */
  search(
    run: number,
    o: { text: string; state?: State | undefined; after?: number; limit: number; scan: number },
  ): Promise<{ items: PagedItem[]; scanned: number; next: number | null }>
  problems(run: number, limit?: number): Promise<Problem[]>
  /** Whether any item of the run is not yet finished. */
  hasOpen(run: number): Promise<boolean>
  /** The most input and output tokens one attempt of the run has used. */
  largestAttempt(run: number): Promise<{ input: number; output: number } | null>
  /** A number that changes whenever anyone commits to the ledger: a cheap "anything new?". */
  version(): Promise<number>
}

/** A run's canary: how many of its first items it covers, when it started, and when its report was given. */
export interface Canary {
  items: number
  started_at: number
  reported_at: number | null
}

/**
 * A run's canary (README, "Canary"): its first items in ledger order, sent as direct calls before the rest, then a
 * report and a stop until a person goes on.
 */
export interface Canaries {
  /** The run's canary, or null when it has none. */
  get(run: number): Promise<Canary | null>
  /** Starts the canary, or widens it to the run's first `items` items; either way its report is due. */
  start(run: number, items: number): Promise<Canary>
  /** The canary's report was given: what comes next is the rest of the run. */
  reported(run: number): Promise<void>
  /** How many items after the run's first `first` (in ledger order) were ever attempted, or are not pending. */
  beyond(run: number, first: number): Promise<number>
  /** The states of the run's first `first` items. */
  counts(run: number, first: number): Promise<Record<State, number>>
  /**
   * `claims.step`, its claims kept among the run's first `first` items: in the same transaction, the limit is cut to
   * how many of them may be claimed now.
   */
  step(
    run: number,
    owner: string,
    outcomes: Outcome[],
    limit: number,
    leaseMs: number,
    first: number,
    o?: Looked,
  ): Promise<Claimed[]>
}

/** What the response cache answered for a source batch's rows, asked before they are stored (`Ingest.add`). */
export interface Asked {
  /** The process that asked: the owner of the hits' `cached` attempts. */
  owner: string
  /** Each row's key, in the batch's order ("" when no request can be made of the row). */
  keys: string[]
  /** The entries served, by the row's index in the batch. */
  hits: Map<number, CacheEntry>
}

/** Claims and packing that take only the pending items the response cache was asked for (README, "Cache"). */
export interface Looked {
  looked?: boolean | undefined
}

/** An answer the response cache holds, under the key of its request. */
export interface CacheEntry {
  key: string
  /** The accepted answer, as an item's `output` holds it. */
  output: string
  provider: string
  model: string
  input_tokens: number
  output_tokens: number
  cached_input_tokens: number
  /** What it cost when it was paid for (USD); null when the model's price was unknown. */
  cost_usd: number | null
  /** When it was paid for and written (ms): what a `ttl` is counted from. */
  created_at: number
}

/** The whole response cache of a store, as `spool cache stats` shows it. */
export interface CacheStats {
  entries: number
  /** Bytes of the answers held. */
  bytes: number
  /** Items served from the cache, items it could not serve, and what the hits saved, over every run of the store. */
  hits: number
  misses: number
  saved_usd: number
  /** When the oldest and the newest entries were written (ms), or null for an empty cache. */
  oldest: number | null
  newest: number | null
  /** Entries and bytes per provider and model, the most entries first. */
  models: { provider: string; model: string; entries: number; bytes: number }[]
}

/**
 * The response cache (README, "Cache"): accepted answers by the key of their request, shared by every run of the
 * store (every worker, on PostgreSQL). Answers are written where the items they complete are (`claims.step`,
 * `batches.apply`); a hit completes an item with no call. Nobody waits on a lock across a network call: two workers
 * missing one key at once may both pay for it, and the later answer is the one kept.
 */
export interface Cache {
  /**
   * A run's pending items after the id `after`, in ledger order, at most `limit`: those the cache was never asked
   * for (`key` null), or, with `all`, every pending one (with the key it was asked for, when it was).
   */
  pending(
    run: number,
    o: { after: number; limit: number; all?: boolean },
  ): Promise<{ id: number; data: string; key: string | null }[]>
  /** The entries of these keys written at or after `since` (ms), in no order; a key without one is left out. */
  get(keys: string[], since: number): Promise<CacheEntry[]>
  /**
   * In one transaction: completes each of `hits` that is still pending with its entry's answer, no call made (its
   * usage kept as `cached_usage`, an attempt of outcome `cached`, not counted toward max_attempts), and records
   * each of `misses` as asked for under its key; an item asked for before (another worker was first) is left as it
   * is. Counts what it changed in the run's hits, misses and savings, and gives those counts.
   */
  serve(
    run: number,
    owner: string,
    hits: { id: number; key: string; entry: CacheEntry }[],
    misses: { id: number; key: string }[],
  ): Promise<{ hits: number; misses: number }>
  stats(): Promise<CacheStats>
  /** Removes the entries written before `before` (ms); what went. */
  prune(before: number): Promise<{ entries: number; bytes: number }>
  /** Removes every entry, or those of one model; what went. */
  clear(model?: string): Promise<{ entries: number; bytes: number }>
}

/**
 * What a hit's item keeps of the answer's first cost, as `Item.cached_usage` holds it: a JSON list
 * `[input_tokens, output_tokens, cached_input_tokens, cost_usd]`, a fifth of the object's bytes (a run of a million
 * hits writes each). `usageOf` reads it back.
 */
export function usageText(entry: CachedUsage): string {
  return `[${entry.input_tokens},${entry.output_tokens},${entry.cached_input_tokens},${JSON.stringify(entry.cost_usd)}]`
}

/** `Item.cached_usage` read: the list `usageText` writes, or the object stores written before it hold. */
export function usageOf(text: string): CachedUsage {
  const value = JSON.parse(text) as CachedUsage | [number, number, number, number | null]
  if (!Array.isArray(value)) return value
  const [input_tokens, output_tokens, cached_input_tokens, cost_usd] = value
  return { input_tokens, output_tokens, cached_input_tokens, cost_usd }
}

/** A process working on a run, as the worker registry keeps it. */
export interface Worker {
  /** Its owner id (host:pid:nonce), the one its leases carry. */
  owner: string
  started_at: number
  /** Its last heartbeat. */
  beat_at: number
}

/**
 * The worker registry: which processes work on a run, each with a heartbeat. It is how a run that stopped (Ctrl+C,
 * a kill, a lost machine) is told from one under way: its stored state stays `running`, and it is shown as
 * `interrupted` when `alive()` finds no worker (docs/ARCHITECTURE.md, "The worker registry").
 */
export interface Workers {
  /** Registers `owner` as working on `run`, or renews its heartbeat; `at` is the beat's time. */
  beat(run: number, owner: string, at?: number): Promise<void>
  /** `owner` no longer works on `run` (a clean exit): its row goes. */
  leave(run: number, owner: string): Promise<void>
  /** A run's registered workers, the first started first, alive or not. */
  list(run: number): Promise<Worker[]>
  /** Forgets a run's workers that are known dead or whose last beat is older than `before`; how many went. */
  prune(run: number, dead: Dead, before: number): Promise<number>
  /** How many items each owner holds now (running, under its lease): what the page lists beside each worker. */
  held(run: number): Promise<{ owner: string; items: number }[]>
  /**
   * Takes up to `want` from the run's bucket `name` (the job's "rpm" or "tpm"): `limit` a minute, refilled
   * continuously, full when first taken from, and one for all the run's workers, so that together they stay under
   * the job's limits. What it granted (a fraction when the bucket holds less than asked) and, when less than `want`,
   * how long until the rest is there. `at`: the time to take at (tests); by default the store's clock (PostgreSQL's
   * own: one clock for every host).
   */
  take(run: number, name: string, limit: number, want: number, at?: number): Promise<Grant>
}

/** What a rate bucket gave (`Workers.take`), and how long until the rest of what was asked is there (0: none left). */
export interface Grant {
  granted: number
  waitMs: number
}

/** A worker renews its heartbeat this often. */
export const HEARTBEAT_MS = 5_000
/**
 * A heartbeat counts this long: four beats, so that a beat held up by a busy store or a slow disk does not make a
 * live run look stopped. Workers of other hosts are judged by it alone (and by their clocks: keep them in sync).
 */
export const FRESH_MS = 20_000

/**
 * How many of these workers are alive at `now`: a heartbeat younger than FRESH_MS, from a process that is not known
 * gone. A process of this host that no longer exists is gone at once, whatever its last beat (a kill -9 leaves its
 * row behind).
 */
export function alive(workers: Worker[], now = Date.now()): number {
  return workers.filter((w) => now - w.beat_at < FRESH_MS && !gone(w.owner)).length
}

/** The run `ref` names (a name: its latest; or an id), or the latest run when none is given; else a UsageError. */
export async function mustFind(ledger: Ledger, ref: string | undefined): Promise<Run> {
  if (ref) {
    const run = await ledger.runs.find(ref)
    if (run) return run
  }
  const runs = await ledger.runs.list()
  // a pipeline's step runs are made after it: "the latest run" is the latest that is not a step
  const last = runs.filter((r) => r.parent === null).at(-1)
  if (!ref && last) return last
  if (!ref) throw new UsageError("there are no runs yet", "Start one with `spool run job.toml`.")
  const names = [...new Set(runs.map((r) => r.name))]
  throw new UsageError(
    `no run named "${ref}"`,
    names.length ? `Known runs: ${names.join(", ")}.` : "Start one with `spool run job.toml`.",
  )
}
