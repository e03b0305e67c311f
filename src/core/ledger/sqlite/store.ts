/**
 * The synchronous store of before the `Ledger` interface, kept while its callers move to the interface (issue 13):
 * every method delegates to the SQLite driver's parts. It goes when the last caller has moved.
 */
import type { Database } from "bun:sqlite"
import { UsageError, type ErrorClass } from "../../base/errors.ts"
import type { Checkpoint, SourceBatch } from "../../../plugins/api/define.ts"
import type { RunState, State } from "../states.ts"
import type { OpenOptions } from "../ledger.ts"
import type {
  AttemptError,
  AttemptRow,
  Batch,
  Claimed,
  Item,
  LineOutcome,
  Outcome,
  Packable,
  PagedItem,
  RemoteView,
  Summary,
} from "../types.ts"
import { guard } from "./faults.ts"
import { Batches } from "./batches.ts"
import { open as openLedger, type SqliteLedger } from "./sqlite.ts"
import type { InputRow, RunRow } from "./runs.ts"

export type {
  AttemptError,
  AttemptRow,
  Batch,
  BatchState,
  Claimed,
  Item,
  LineOutcome,
  Outcome,
  Packable,
  PagedItem,
  PageRow,
  RemoteView,
  ResultRow,
  Summary,
} from "../types.ts"
export { PROGRESS_BUCKET_MS } from "../types.ts"
export { DB_FILE } from "./faults.ts"
export { CHECK_BYTES } from "./connect.ts"
export type { OpenOptions } from "../ledger.ts"
export type Run = RunRow
export type Input = InputRow

export function open(home: string, options: OpenOptions = {}): Store {
  return new Store(openLedger(home, options))
}

export class Store {
  readonly db: Database
  readonly path: string
  private readonly p: SqliteLedger["parts"]

  constructor(readonly ledger: SqliteLedger) {
    this.db = ledger.db
    this.path = ledger.path
    this.p = ledger.parts
  }

  close(): void {
    this.db.close()
  }

  latestRun(name: string): Run | null {
    return this.p.runs.q.latestRun.get(name)
  }

  run(id: number): Run | null {
    return this.p.runs.q.runById.get(id)
  }

  findRun(ref: string): Run | null {
    return this.latestRun(ref) ?? (/^\d+$/.test(ref) ? this.run(Number(ref)) : null)
  }

  runs(): Run[] {
    return this.p.runs.q.runs.all()
  }

  createRun(
    name: string,
    job: string,
    fingerprint: string,
    resume: string,
    inputs: { path: string; format: string }[],
    seen: number | null = null,
  ): { run: Run; created: boolean } {
    return this.p.runs.insert(name, job, fingerprint, resume, inputs, seen)
  }

  setRunState(id: number, state: RunState, reason: string | null = null): void {
    this.p.runs.setState(id, state, reason)
  }

  setResume(id: number, resume: string): void {
    this.p.runs.setResume(id, resume)
  }

  inputs(run: number): Input[] {
    return this.p.runs.q.inputs.all(run)
  }

  addInput(run: number, path: string, format: string): Input {
    return this.p.runs.addRow(run, path, format)
  }

  leaseIngest(run: number, owner: string, ms: number, dead: (owner: string) => boolean): boolean {
    return this.p.ingest.lease(run, owner, ms, dead)
  }

  ingest(
    run: number,
    input: Input,
    batch: SourceBatch,
    last: boolean,
  ): { added: number; duplicates: number } {
    return this.p.ingest.add(run, input, batch, last)
  }

  updateJob(run: number, job: string): void {
    this.p.runs.q.updateJob.run(job, Date.now(), run)
  }

  markIngested(run: number): void {
    this.p.ingest.done(run)
  }

  reopenIngest(run: number): void {
    this.p.ingest.reopen(run)
  }

  resetIngest(run: number): void {
    this.p.ingest.reset(run)
  }

  static checkpoint(input: Input): Checkpoint | undefined {
    return input.checkpoint ? (JSON.parse(input.checkpoint) as Checkpoint) : undefined
  }

  recover(run: number, dead: (owner: string) => boolean): number {
    return this.p.claims.recover(run, dead)
  }

  step(run: number, owner: string, outcomes: Outcome[], limit: number, leaseMs: number): Claimed[] {
    return this.p.claims.step(run, owner, outcomes, limit, leaseMs)
  }

  renew(run: number, owner: string, leaseMs: number): void {
    this.p.claims.renew(run, owner, leaseMs)
  }

  nextRetryAt(run: number): number | null {
    return this.p.claims.nextRetryAt(run)
  }

  retry(run: number, from: Extract<State, "failed" | "needs_review">): number {
    return this.p.claims.retry(run, from)
  }

  leaseBatches(run: number, owner: string, ms: number, dead: (owner: string) => boolean): boolean {
    return this.p.batches.lease(run, owner, ms, dead)
  }

  batchHolder(run: number): string | null {
    return this.p.batches.holder(run)
  }

  releaseBatches(run: number, owner: string): void {
    this.p.batches.release(run, owner)
  }

  hasOpen(run: number): boolean {
    return this.p.reads.hasOpen(run)
  }

  largestAttempt(run: number): { input: number; output: number } | null {
    return this.p.reads.largestAttempt(run)
  }

  leaseHolders(run: number): string[] {
    return this.p.runs.holders(run)
  }

  packable(run: number, limit: number, now = Date.now()): Packable[] {
    return this.p.batches.packable(run, limit, now)
  }

  intend(
    run: number,
    intent: { tag: string; requests: string; bytes: number; tokens: number },
    lines: { id: number; line: number; offset: number; bytes: number }[],
    failed: { id: number; errorClass: ErrorClass; error: string }[],
    owner: string,
  ): Batch | null {
    return this.p.batches.intend(run, intent, lines, failed, owner)
  }

  submitted(batch: number, remote: RemoteView): void {
    this.p.batches.submitted(batch, remote)
  }

  abandon(batch: number, why: { errorClass: string; error: string }): number {
    return this.p.batches.abandon(batch, why)
  }

  observe(batch: number, remote: RemoteView, nextAt: number | null): void {
    this.p.batches.observe(batch, remote, nextAt)
  }

  later(batch: number, nextAt: number, error: string | null = null): void {
    this.p.batches.later(batch, nextAt, error)
  }

  downloaded(batch: number, files: { output?: string | undefined; errors?: string | undefined }): void {
    this.p.batches.downloaded(batch, files)
  }

  apply(batch: number, outcomes: LineOutcome[], owner: string): void {
    this.p.batches.apply(batch, outcomes, owner)
  }

  finishBatch(batch: number, lines: number): number {
    return this.p.batches.finish(batch, lines)
  }

  batchItems(batch: number): { id: number; attempts: number }[] {
    return this.p.batches.items(batch)
  }

  batch(id: number): Batch | null {
    return this.p.batches.get(id)
  }

  batches(run: number): Batch[] {
    return this.p.batches.list(run)
  }

  recentBatches(run: number, n: number): { batches: Batch[]; total: number } {
    return this.p.batches.recent(run, n)
  }

  liveBatches(run: number): Batch[] {
    return this.p.batches.live(run)
  }

  learnQueue(run: number, limit: { tokens?: number | undefined; requests?: number | undefined }): void {
    this.p.batches.learnQueue(run, limit)
  }

  markExported(run: number): void {
    this.p.runs.markExported(run)
  }

  static requestOf(file: string, offset: number, bytes: number): Promise<string> {
    return Batches.requestOf(file, offset, bytes)
  }

  counts(run: number): Record<State, number> {
    return this.p.reads.counts(run)
  }

  summary(run: number, now = Date.now(), windowMs = 60_000): Summary {
    return this.p.reads.summary(run, now, windowMs)
  }

  errorClasses(run: number): Summary["errors"] {
    return this.p.reads.errorClasses(run)
  }

  progress(run: number, from: number, slotMs: number): { at: number; completed: number; failed: number }[] {
    return this.p.reads.progress(run, from, slotMs)
  }

  firstProgress(run: number): number | null {
    return this.p.reads.firstProgress(run)
  }

  latestErrors(run: number, limit: number): AttemptError[] {
    return this.p.reads.latestErrors(run, limit)
  }

  errorsSince(run: number, since: number, limit = 50): AttemptError[] {
    return this.p.reads.errorsSince(run, since, limit)
  }

  page(run: number, o: { state?: State | undefined; after?: number; limit: number }): PagedItem[] {
    return this.p.reads.page(run, o)
  }

  dataVersion(): number {
    return this.p.reads.version()
  }

  items(run: number, state?: State): Generator<Item> {
    return this.p.reads.items(run, state)
  }

  attemptsOf(item: number): AttemptRow[] {
    return this.p.reads.attempts(item)
  }

  problems(run: number, limit = 1000): { file: string; line: number; reason: string; excerpt: string }[] {
    return this.p.reads.problems(run, limit)
  }

  integrity(): string {
    return this.p.reads.integrity()
  }
}
guard(Store)

/** Refuses a ref that names no run, with the list of what exists. */
export function mustFindRun(store: Store, ref: string | undefined): Run {
  const runs = store.runs()
  if (!ref) {
    const last = runs.at(-1)
    if (!last) throw new UsageError("there are no runs yet", "Start one with `spool run job.toml`.")
    return last
  }
  const run = store.findRun(ref)
  if (run) return run
  const names = [...new Set(runs.map((r) => r.name))]
  throw new UsageError(
    `no run named "${ref}"`,
    names.length ? `Known runs: ${names.join(", ")}.` : "Start one with `spool run job.toml`.",
  )
}
