/** Runs and their inputs: made, found, and changed; the run-wide leases (ingestion, batches) kept on a run's row. */
import type { Database } from "bun:sqlite"
import { StoreError } from "../../../plugins/api/errors.ts"
import type { Job } from "../../job/job.ts"
import type { RunState } from "../states.ts"
import type { Dead, Input, NewRun, Run } from "../types.ts"
import { RowDecoder, type InputRow, type RunRow } from "../rows.ts"
import { guard } from "./faults.ts"
import { statements } from "./connect.ts"

export type { InputRow, RunRow }

export class Runs {
  readonly q: ReturnType<typeof prepare>
  private readonly rows: RowDecoder

  constructor(
    private readonly db: Database,
    readonly path: string,
  ) {
    this.q = prepare(db)
    this.rows = new RowDecoder(path)
  }

  latest(name: string): Run | null {
    return this.decoded(this.q.latestRun.get(name))
  }

  get(id: number): Run | null {
    return this.decoded(this.q.runById.get(id))
  }

  /** A run by name (its latest) or by numeric id. */
  find(ref: string): Run | null {
    return this.latest(ref) ?? (/^\d+$/.test(ref) ? this.get(Number(ref)) : null)
  }

  list(): Run[] {
    return this.q.runs.all().map((row) => this.run(row))
  }

  create(o: NewRun): { run: Run; created: boolean } {
    const made = this.insert(
      o.name,
      JSON.stringify(o.job),
      o.fingerprint,
      o.resume,
      o.inputs,
      o.seen ?? null,
      o.parent,
    )
    return { run: this.run(made.run), created: made.created }
  }

  /**
   * Creates a run, unless another process created a run of this name after the caller last looked (`seen`:
   * the id of the latest such run then, or null). Workers started together thus share one run. With `parent`, the
   * run is a pipeline step's (its pipeline run and its step's name).
   */
  insert(
    name: string,
    job: string,
    fingerprint: string,
    resume: string,
    inputs: { path: string; format: string }[],
    seen: number | null,
    parent?: NewRun["parent"],
  ): { run: RunRow; created: boolean } {
    const now = Date.now()
    return this.db
      .transaction(() => {
        const latest = this.q.latestRun.get(name)
        if (latest && latest.id !== seen) return { run: latest, created: false }
        const run = this.q.insertRun.get(
          name,
          job,
          fingerprint,
          resume,
          now,
          now,
          parent?.run ?? null,
          parent?.step ?? null,
        )
        if (!run) throw new StoreError("the run could not be created")
        inputs.forEach((input, idx) => this.q.insertInput.run(run.id, idx, input.path, input.format))
        return { run, created: true }
      })
      .immediate()
  }

  setState(id: number, state: RunState, reason: string | null = null): void {
    const finished = state === "completed" || state === "completed_with_failures" || state === "cancelled"
    this.q.setRunState.run(state, reason, Date.now(), finished ? Date.now() : null, id)
  }

  setResume(id: number, resume: string): void {
    this.q.setResume.run(resume, id)
  }

  /** Keeps the latest job of a resumed run (same fingerprint: only limits and pricing can differ). */
  updateJob(id: number, job: Job): void {
    this.q.updateJob.run(JSON.stringify(job), Date.now(), id)
  }

  markExported(id: number): void {
    this.q.markExported.run(Date.now(), id)
  }

  inputs(run: number): Input[] {
    return this.q.inputs.all(run).map((row) => this.input(row))
  }

  /**
   * Appends a file to a run's inputs at the next index (a new match of a glob: the indexes of the others, and so
   * their items' ids, never move). A path already an input of the run is kept as it is. Returns its input.
   */
  addInput(run: number, path: string, format: string): Input {
    return this.input(this.addRow(run, path, format))
  }

  /** The step runs of the pipeline run `parent`: the latest of each step's name, in the order they were made. */
  steps(parent: number): Run[] {
    return this.q.steps.all(parent).map((row) => this.run(row))
  }

  addRow(run: number, path: string, format: string): InputRow {
    return this.db
      .transaction(() => {
        this.q.addInput.run(run, path, format)
        const input = this.q.inputs.all(run).find((i) => i.path === path)
        if (!input) throw new StoreError(`the input ${path} could not be added`)
        return input
      })
      .immediate()
  }

  /**
   * A run-wide lease (ingestion, or driving its batches): taken when nobody holds it, the holder is `owner`, or the
   * holder's lease has lapsed or its process is known dead.
   */
  lease(kind: "ingest" | "batch", run: number, owner: string, ms: number, dead: Dead): boolean {
    const [get, set] =
      kind === "ingest"
        ? [this.q.ingestLease, this.q.setIngestLease]
        : [this.q.batchLease, this.q.setBatchLease]
    return this.db
      .transaction(() => {
        const row = get.get(run)
        if (!row) return false
        const now = Date.now()
        const free = row.owner === null || row.owner === owner || (row.expires ?? 0) < now || dead(row.owner)
        if (!free) return false
        set.run(owner, now + ms, run)
        return true
      })
      .immediate()
  }

  /** Who holds the batch lease, while it is held. */
  batchHolder(run: number): string | null {
    const row = this.q.batchLease.get(run)
    return row?.owner && (row.expires ?? 0) >= Date.now() ? row.owner : null
  }

  releaseBatches(run: number, owner: string): void {
    this.q.releaseBatchLease.run(run, owner)
  }

  /** The processes that hold a lease on the run: items in flight, ingestion, batches. */
  holders(run: number): string[] {
    return this.q.leaseHolders.all(run).map((r) => r.owner)
  }

  private decoded(row: RunRow | null): Run | null {
    return row && this.run(row)
  }

  private run(row: RunRow): Run {
    return this.rows.run(row)
  }

  private input(row: InputRow): Input {
    return this.rows.input(row)
  }
}
guard(Runs)

type Lease = { owner: string | null; expires: number | null }

function prepare(db: Database) {
  const q = statements(db)
  return {
    latestRun: q<RunRow, [string]>("SELECT * FROM runs WHERE name = ? ORDER BY id DESC LIMIT 1"),
    runById: q<RunRow, [number]>("SELECT * FROM runs WHERE id = ?"),
    runs: q<RunRow, []>("SELECT * FROM runs ORDER BY id"),
    insertRun: q<RunRow, [string, string, string, string, number, number, number | null, string | null]>(
      `INSERT INTO runs (name, state, job, fingerprint, resume, created_at, updated_at, parent, step)
       VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?) RETURNING *`,
    ),
    // each step's latest run: runs_parent gives the parent's runs, few (a run per step, and one per step made again)
    steps: q<RunRow, [number]>(
      `SELECT * FROM runs WHERE id IN (SELECT max(id) FROM runs WHERE parent = ? GROUP BY step) ORDER BY id`,
    ),
    insertInput: q<void, [number, number, string, string]>(
      "INSERT INTO inputs (run_id, idx, path, format) VALUES (?, ?, ?, ?)",
    ),
    setRunState: q<void, [RunState, string | null, number, number | null, number]>(
      "UPDATE runs SET state = ?, reason = ?, updated_at = ?, finished_at = ? WHERE id = ?",
    ),
    setResume: q<void, [string, number]>("UPDATE runs SET resume = ? WHERE id = ?"),
    updateJob: q<void, [string, number, number]>("UPDATE runs SET job = ?, updated_at = ? WHERE id = ?"),
    markExported: q<void, [number, number]>("UPDATE runs SET exported_at = ? WHERE id = ?"),
    inputs: q<InputRow, [number]>("SELECT * FROM inputs WHERE run_id = ? ORDER BY idx"),
    addInput: q<void, [number, string, string]>(
      `INSERT INTO inputs (run_id, idx, path, format)
       SELECT ?1, (SELECT coalesce(max(idx) + 1, 0) FROM inputs WHERE run_id = ?1), ?2, ?3
       WHERE NOT EXISTS (SELECT 1 FROM inputs WHERE run_id = ?1 AND path = ?2)`,
    ),
    ingestLease: q<Lease, [number]>(
      "SELECT ingest_owner AS owner, ingest_expires AS expires FROM runs WHERE id = ?",
    ),
    setIngestLease: q<void, [string, number, number]>(
      "UPDATE runs SET ingest_owner = ?, ingest_expires = ? WHERE id = ?",
    ),
    batchLease: q<Lease, [number]>(
      "SELECT batch_owner AS owner, batch_expires AS expires FROM runs WHERE id = ?",
    ),
    setBatchLease: q<void, [string, number, number]>(
      "UPDATE runs SET batch_owner = ?, batch_expires = ? WHERE id = ?",
    ),
    releaseBatchLease: q<void, [number, string]>(
      "UPDATE runs SET batch_owner = NULL, batch_expires = NULL WHERE id = ? AND batch_owner = ?",
    ),
    leaseHolders: q<{ owner: string }, [number]>(
      `SELECT DISTINCT lease_owner AS owner FROM items WHERE run_id = ?1 AND state = 'running'
       UNION SELECT ingest_owner FROM runs WHERE id = ?1 AND ingest_owner IS NOT NULL
       UNION SELECT batch_owner FROM runs WHERE id = ?1 AND batch_owner IS NOT NULL`,
    ),
  }
}
