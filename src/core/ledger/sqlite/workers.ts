/** The worker registry: the processes working on a run, each with a heartbeat (ledger.ts `Workers`). */
import type { Database } from "bun:sqlite"
import type { Grant, Worker } from "../ledger.ts"
import type { Dead } from "../types.ts"
import { guard } from "./faults.ts"
import { statements } from "./connect.ts"

export class Workers {
  private readonly q: ReturnType<typeof prepare>

  constructor(
    private readonly db: Database,
    readonly path: string,
  ) {
    this.q = prepare(db)
  }

  beat(run: number, owner: string, at = Date.now()): void {
    this.q.beat.run(run, owner, at)
  }

  leave(run: number, owner: string): void {
    this.q.leave.run(run, owner)
  }

  list(run: number): Worker[] {
    return this.q.list.all(run)
  }

  /** How many items each owner holds now: the run's running items, by their lease (a few rows: the in-flight ones). */
  held(run: number): { owner: string; items: number }[] {
    return this.q.held.all(run)
  }

  /** Takes up to `want` from the run's rate bucket `name` (ledger.ts `Workers.take`), on this host's clock. */
  take(run: number, name: string, limit: number, want: number, at = Date.now()): Grant {
    return this.db
      .transaction(() => {
        const row = this.q.rate.get(run, name)
        const level = row ? Math.min(limit, row.level + (Math.max(0, at - row.at) * limit) / 60_000) : limit
        const granted = Math.min(want, Math.max(0, level))
        this.q.setRate.run(run, name, level - granted, Math.max(row?.at ?? at, at))
        const waitMs = granted < want ? Math.ceil(((want - level) * 60_000) / limit) : 0
        return { granted, waitMs }
      })
      .immediate()
  }

  /** Forgets a run's workers that are known dead or whose last beat is older than `before`. */
  prune(run: number, dead: Dead, before: number): number {
    return this.db
      .transaction(() => {
        let n = 0
        for (const w of this.q.list.all(run)) {
          if (w.beat_at >= before && !dead(w.owner)) continue
          this.q.leave.run(run, w.owner)
          n++
        }
        return n
      })
      .immediate()
  }
}
guard(Workers)

function prepare(db: Database) {
  const q = statements(db)
  return {
    beat: q<void, [number, string, number]>(
      `INSERT INTO workers (run_id, owner, started_at, beat_at) VALUES (?1, ?2, ?3, ?3)
       ON CONFLICT (run_id, owner) DO UPDATE SET beat_at = excluded.beat_at`,
    ),
    leave: q<void, [number, string]>("DELETE FROM workers WHERE run_id = ? AND owner = ?"),
    held: q<{ owner: string; items: number }, [number]>(
      `SELECT lease_owner AS owner, count(*) AS items FROM items
       WHERE run_id = ? AND state = 'running' AND lease_owner IS NOT NULL GROUP BY lease_owner ORDER BY lease_owner`,
    ),
    rate: q<{ level: number; at: number }, [number, string]>(
      "SELECT level, at FROM rates WHERE run_id = ? AND name = ?",
    ),
    setRate: q<void, [number, string, number, number]>(
      `INSERT INTO rates VALUES (?1, ?2, ?3, ?4)
       ON CONFLICT (run_id, name) DO UPDATE SET level = excluded.level, at = excluded.at`,
    ),
    list: q<Worker, [number]>(
      "SELECT owner, started_at, beat_at FROM workers WHERE run_id = ? ORDER BY started_at, owner",
    ),
  }
}
