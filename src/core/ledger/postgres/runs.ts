/** Runs and their inputs on PostgreSQL: made, found, and changed; the run-wide leases (ingestion, batches) kept on a run's row. */
import type { SQL } from "bun"
import { StoreError } from "../../../plugins/api/errors.ts"
import type { Job } from "../../job/job.ts"
import type * as api from "../ledger.ts"
import type { RunState } from "../states.ts"
import type { Dead, Input, NewRun, Run } from "../types.ts"
import { RowDecoder, type InputRow, type RunRow } from "../rows.ts"
import { notify, retrying, type Pg } from "./connect.ts"
import { register } from "./workers.ts"

export type { InputRow, RunRow }

type Lease = { owner: string | null; expires: number | null }

export class Runs implements api.Runs {
  private readonly rows: RowDecoder

  constructor(readonly pg: Pg) {
    this.rows = new RowDecoder(pg.shown)
  }

  async latest(name: string): Promise<Run | null> {
    const [row] = await retrying(this.pg, () => latestRow(this.pg.sql, name))
    return row ? this.run(row) : null
  }

  async get(id: number): Promise<Run | null> {
    // an id beyond int4 names no run (and must not reach the server as an out-of-range parameter)
    if (!Number.isSafeInteger(id) || id < 1 || id > 2 ** 31 - 1) return null
    const [row] = await retrying(
      this.pg,
      (): Promise<RunRow[]> => this.pg.sql`SELECT * FROM runs WHERE id = ${id}`,
    )
    return row ? this.run(row) : null
  }

  /** A run by name (its latest) or by numeric id. */
  async find(ref: string): Promise<Run | null> {
    return (await this.latest(ref)) ?? (/^\d+$/.test(ref) ? this.get(Number(ref)) : null)
  }

  async list(): Promise<Run[]> {
    const rows = await retrying(this.pg, (): Promise<RunRow[]> => this.pg.sql`SELECT * FROM runs ORDER BY id`)
    return rows.map((row) => this.run(row))
  }

  /**
   * Creates a run with its inputs (and its first worker, when given; with `parent`, as a pipeline step's run), unless
   * another process created a run of this name after the caller last looked (`seen`): workers started together thus
   * share one run. A lock on the name, held to the commit, makes the look and the insert one step for every process.
   */
  async create(o: NewRun): Promise<{ run: Run; created: boolean }> {
    const seen = o.seen ?? null
    const job = JSON.stringify(o.job)
    const made = await retrying(this.pg, () =>
      this.pg.sql.begin(async (tx) => {
        await tx`SELECT pg_advisory_xact_lock(hashtext(${`spool:${this.pg.schema}:run:${o.name}`}))`
        const [latest] = await latestRow(tx, o.name)
        if (latest && latest.id !== seen) return { row: latest, created: false }
        const now = Date.now()
        const [row]: RunRow[] = await tx`
          INSERT INTO runs (name, state, job, fingerprint, resume, created_at, updated_at, parent, step)
          VALUES (${o.name}, 'running', ${job}, ${o.fingerprint}, ${o.resume}, ${now}, ${now},
            ${o.parent?.run ?? null}::int, ${o.parent?.step ?? null}::text) RETURNING *`
        if (!row) throw new StoreError(`the run "${o.name}" could not be created in ${this.pg.shown}`)
        if (o.inputs.length > 0)
          await tx`
            INSERT INTO inputs (run_id, idx, path, format)
            SELECT ${row.id}, r.idx, r.path, r.format
            FROM jsonb_to_recordset(${JSON.stringify(o.inputs.map((input, idx) => ({ idx, ...input })))}::text::jsonb)
              AS r(idx int, path text, format text)`
        // a new run's first worker comes with it: the run is never seen without one before it has begun
        if (o.worker) await register(tx, row.id, o.worker, now)
        return { row, created: true }
      }),
    )
    return { run: this.run(made.row), created: made.created }
  }

  /** Sets a run's state (a final one stamps `finished_at`) and tells the other workers. */
  async setState(id: number, state: RunState, reason: string | null = null): Promise<void> {
    const finished = state === "completed" || state === "completed_with_failures" || state === "cancelled"
    await retrying(this.pg, () =>
      this.pg.sql.begin(async (tx) => {
        const now = Date.now()
        await tx`UPDATE runs SET state = ${state}, reason = ${reason}, updated_at = ${now},
          finished_at = ${finished ? now : null} WHERE id = ${id}`
        await notify(tx, this.pg, { run: id, kind: "state" })
      }),
    )
  }

  async setResume(id: number, resume: string): Promise<void> {
    await retrying(this.pg, () => this.pg.sql`UPDATE runs SET resume = ${resume} WHERE id = ${id}`)
  }

  /** Keeps the latest job of a resumed run (same fingerprint: only limits and pricing can differ). */
  async updateJob(id: number, job: Job): Promise<void> {
    const text = JSON.stringify(job)
    await retrying(
      this.pg,
      () => this.pg.sql`UPDATE runs SET job = ${text}, updated_at = ${Date.now()} WHERE id = ${id}`,
    )
  }

  async markExported(id: number): Promise<void> {
    await retrying(this.pg, () => this.pg.sql`UPDATE runs SET exported_at = ${Date.now()} WHERE id = ${id}`)
  }

  async inputs(run: number): Promise<Input[]> {
    const rows = await retrying(
      this.pg,
      (): Promise<InputRow[]> => this.pg.sql`SELECT * FROM inputs WHERE run_id = ${run} ORDER BY idx`,
    )
    return rows.map((row) => this.input(row))
  }

  /** The step runs of the pipeline run `parent`: the latest of each step's name, in the order they were made. */
  async steps(parent: number): Promise<Run[]> {
    if (!Number.isSafeInteger(parent) || parent < 1 || parent > 2 ** 31 - 1) return []
    // each step's latest run: runs_parent gives the parent's runs, few (a run per step, and one per step made again)
    const rows = await retrying(
      this.pg,
      (): Promise<RunRow[]> => this.pg.sql`SELECT * FROM runs WHERE id IN
        (SELECT max(id) FROM runs WHERE parent = ${parent} GROUP BY step) ORDER BY id`,
    )
    return rows.map((row) => this.run(row))
  }

  /**
   * Appends a file to a run's inputs at the next index (a new match of a glob: the indexes of the others, and so
   * their items' ids, never move). A path already an input of the run is kept as it is. Returns its input.
   */
  async addInput(run: number, path: string, format: string): Promise<Input> {
    const row = await retrying(this.pg, () =>
      this.pg.sql.begin(async (tx) => {
        // the run's row, locked: two workers adding inputs at once take the next index one after the other
        await tx`SELECT 1 FROM runs WHERE id = ${run} FOR UPDATE`
        await tx`
          INSERT INTO inputs (run_id, idx, path, format)
          SELECT ${run}, (SELECT coalesce(max(idx) + 1, 0) FROM inputs WHERE run_id = ${run}), ${path}, ${format}
          WHERE NOT EXISTS (SELECT 1 FROM inputs WHERE run_id = ${run} AND path = ${path})`
        const [input]: InputRow[] = await tx`SELECT * FROM inputs WHERE run_id = ${run} AND path = ${path}`
        if (!input)
          throw new StoreError(`the input ${path} could not be added to run ${run} in ${this.pg.shown}`)
        return input
      }),
    )
    return this.input(row)
  }

  /**
   * A run-wide lease (ingestion, or driving its batches): taken when nobody holds it, the holder is `owner`, or the
   * holder's lease has lapsed or its process is known dead. The run's row is locked from the look to the write.
   */
  async lease(
    kind: "ingest" | "batch",
    run: number,
    owner: string,
    ms: number,
    dead: Dead,
  ): Promise<boolean> {
    return retrying(this.pg, () =>
      this.pg.sql.begin(async (tx) => {
        const [row]: Lease[] =
          kind === "ingest"
            ? await tx`SELECT ingest_owner AS owner, ingest_expires AS expires FROM runs WHERE id = ${run} FOR UPDATE`
            : await tx`SELECT batch_owner AS owner, batch_expires AS expires FROM runs WHERE id = ${run} FOR UPDATE`
        if (!row) return false
        const now = Date.now()
        const free = row.owner === null || row.owner === owner || (row.expires ?? 0) < now || dead(row.owner)
        if (!free) return false
        if (kind === "ingest")
          await tx`UPDATE runs SET ingest_owner = ${owner}, ingest_expires = ${now + ms} WHERE id = ${run}`
        else await tx`UPDATE runs SET batch_owner = ${owner}, batch_expires = ${now + ms} WHERE id = ${run}`
        return true
      }),
    )
  }

  /** Who holds the batch lease, while it is held. */
  async batchHolder(run: number): Promise<string | null> {
    const [row] = await retrying(
      this.pg,
      (): Promise<Lease[]> =>
        this.pg.sql`SELECT batch_owner AS owner, batch_expires AS expires FROM runs WHERE id = ${run}`,
    )
    return row?.owner && (row.expires ?? 0) >= Date.now() ? row.owner : null
  }

  /** Lets the batch lease go, if `owner` holds it. */
  async releaseBatches(run: number, owner: string): Promise<void> {
    await retrying(
      this.pg,
      () => this.pg.sql`UPDATE runs SET batch_owner = NULL, batch_expires = NULL
        WHERE id = ${run} AND batch_owner = ${owner}`,
    )
  }

  private run(row: RunRow): Run {
    return this.rows.run(row)
  }

  private input(row: InputRow): Input {
    return this.rows.input(row)
  }
}

/** The latest run of a name, as its row holds it. */
function latestRow(sql: SQL, name: string): Promise<RunRow[]> {
  return sql`SELECT * FROM runs WHERE name = ${name} ORDER BY id DESC LIMIT 1`
}
