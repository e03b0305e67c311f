/** The worker registry on PostgreSQL: the processes working on a run, each with a heartbeat (ledger.ts `Workers`). */
import type { SQL } from "bun"
import type * as api from "../ledger.ts"
import type { Grant, Worker } from "../ledger.ts"
import type { Dead } from "../types.ts"
import { retrying, type Pg } from "./connect.ts"

export class Workers implements api.Workers {
  constructor(readonly pg: Pg) {}

  async beat(run: number, owner: string, at = Date.now()): Promise<void> {
    await retrying(this.pg, () => register(this.pg.sql, run, owner, at))
  }

  async leave(run: number, owner: string): Promise<void> {
    await retrying(this.pg, () => this.pg.sql`DELETE FROM workers WHERE run_id = ${run} AND owner = ${owner}`)
  }

  async list(run: number): Promise<Worker[]> {
    const rows = await retrying(this.pg, () => listed(this.pg.sql, run))
    return rows.map((w) => ({ owner: w.owner, started_at: w.started_at, beat_at: w.beat_at }))
  }

  /** How many items each owner holds now: the run's running items, by their lease (a few rows: the in-flight ones). */
  async held(run: number): Promise<{ owner: string; items: number }[]> {
    const rows: { owner: string; items: number }[] = await retrying(
      this.pg,
      () => this.pg.sql`SELECT lease_owner AS owner, count(*)::int AS items FROM items
        WHERE run_id = ${run} AND state = 'running' AND lease_owner IS NOT NULL
        GROUP BY lease_owner ORDER BY lease_owner COLLATE "C"`,
    )
    return rows.map((r) => ({ owner: r.owner, items: r.items }))
  }

  /** Takes up to `want` from the run's rate bucket `name` (ledger.ts `Workers.take`), on the server's clock. */
  async take(run: number, name: string, limit: number, want: number, at?: number): Promise<Grant> {
    const [row]: { granted: number; wait_ms: number }[] = await retrying(
      this.pg,
      () => this.pg
        .sql`SELECT granted, wait_ms FROM rate_take(${run}, ${name}, ${limit}::float8, ${want}::float8,
        ${at ?? null}::float8)`,
    )
    return { granted: row!.granted, waitMs: row!.wait_ms }
  }

  /** Forgets a run's workers that are known dead or whose last beat is older than `before`. */
  async prune(run: number, dead: Dead, before: number): Promise<number> {
    return retrying(this.pg, () =>
      this.pg.sql.begin(async (tx) => {
        const gone = (await listed(tx, run))
          .filter((w) => w.beat_at < before || dead(w.owner))
          .map((w) => w.owner)
        if (gone.length === 0) return 0
        const rows = await tx`DELETE FROM workers WHERE run_id = ${run}
          AND owner IN (SELECT jsonb_array_elements_text(${JSON.stringify(gone)}::text::jsonb)) RETURNING 1`
        return rows.length
      }),
    )
  }
}

/**
 * Registers `owner` as a worker of `run`, or renews its heartbeat, within `sql` (a transaction of runs.create, or
 * the pool). The host and pid its id names are kept beside it for the page.
 */
export async function register(sql: SQL, run: number, owner: string, at: number): Promise<void> {
  const { host, pid } = origin(owner)
  await sql`INSERT INTO workers (run_id, owner, started_at, beat_at, host, pid)
    VALUES (${run}, ${owner}, ${at}, ${at}, ${host}, ${pid})
    ON CONFLICT (run_id, owner) DO UPDATE SET beat_at = excluded.beat_at`
}

/** The host and pid of an owner id (host:pid:nonce, engine/owner.ts), or nulls when it is not of that form. */
export function origin(owner: string): { host: string | null; pid: number | null } {
  const [host, pid, nonce] = owner.split(":")
  if (!host || !pid || nonce === undefined || !/^\d{1,9}$/.test(pid)) return { host: null, pid: null }
  return { host, pid: Number(pid) }
}

function listed(sql: SQL, run: number): Promise<Worker[]> {
  return sql`SELECT owner, started_at, beat_at FROM workers WHERE run_id = ${run}
    ORDER BY started_at, owner COLLATE "C"`
}
