/** Review decisions (ledger.ts `Reviews`; migration 10): items moved out of needs_review by a person, with history. */
import type { Database } from "bun:sqlite"
import type { Decision, ReviewRow } from "../ledger.ts"
import { decided } from "../rows.ts"
import type { State } from "../states.ts"
import { guard } from "./faults.ts"
import { statements } from "./connect.ts"
import type { Runs } from "./runs.ts"

export class Reviews {
  private readonly q: ReturnType<typeof prepare>

  constructor(
    private readonly db: Database,
    readonly path: string,
    private readonly runs: Runs,
  ) {
    this.q = prepare(db)
  }

  decide(run: number, decisions: Decision[]): { item: number; applied: boolean; state: State }[] {
    return this.db
      .transaction(() => {
        const now = Date.now()
        const out: { item: number; applied: boolean; state: State }[] = []
        for (const d of decisions) {
          const item = this.q.item.get(d.item, run)
          if (!item) throw new Error(`item ${d.item} is not one of run ${run}'s`)
          if (item.state !== "needs_review") {
            out.push({ item: d.item, applied: false, state: item.state })
            continue
          }
          const next = decided(d, item.output)
          this.q.decided.run(next.to, next.output, next.error, now, d.item)
          this.q.record.run(run, d.item, now, d.decision, d.reason ?? null, item.output, next.output, d.by)
          out.push({ item: d.item, applied: true, state: next.to })
        }
        // a finished run is finished again: with failures while any item is failed, left for review, or rejected
        const current = this.runs.get(run)
        if (current?.state === "completed" || current?.state === "completed_with_failures") {
          const left = this.q.unfinished.get(run)?.n ?? 0
          const state = left > 0 ? "completed_with_failures" : "completed"
          if (state !== current.state) this.runs.setState(run, state)
        }
        return out
      })
      .immediate()
  }

  history(item: number): ReviewRow[] {
    return this.q.history.all(item)
  }
}
guard(Reviews)

function prepare(db: Database) {
  const q = statements(db)
  return {
    item: q<{ state: State; output: string | null }, [number, number]>(
      "SELECT state, output FROM items WHERE id = ? AND run_id = ?",
    ),
    decided: q<void, [State, string | null, string | null, number, number]>(
      `UPDATE items SET state = ?, output = ?, error = ?, error_class = NULL, updated_at = ?
       WHERE id = ? AND state = 'needs_review'`,
    ),
    record: q<void, [number, number, number, string, string | null, string | null, string | null, string]>(
      `INSERT INTO reviews (run_id, item_id, at, decision, reason, before, after, by)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    unfinished: q<{ n: number }, [number]>(
      "SELECT count(*) AS n FROM items WHERE run_id = ? AND state IN ('failed', 'needs_review', 'rejected')",
    ),
    history: q<ReviewRow, [number]>(
      `SELECT item_id AS item, at, decision, reason, before, after, by FROM reviews WHERE item_id = ? ORDER BY id`,
    ),
  }
}
