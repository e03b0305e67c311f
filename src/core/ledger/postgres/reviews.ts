/** Review decisions on PostgreSQL (ledger.ts `Reviews`; migration 5; sqlite/reviews.ts is the same in SQLite). */
import type * as api from "../ledger.ts"
import type { Decision, ReviewRow } from "../ledger.ts"
import { decided } from "../rows.ts"
import type { State } from "../states.ts"
import { notify, retrying, type Pg } from "./connect.ts"

export class Reviews implements api.Reviews {
  constructor(readonly pg: Pg) {}

  async decide(
    run: number,
    decisions: Decision[],
  ): Promise<{ item: number; applied: boolean; state: State }[]> {
    return retrying(this.pg, () =>
      this.pg.sql.begin(async (tx) => {
        const now = Date.now()
        const out: { item: number; applied: boolean; state: State }[] = []
        for (const d of decisions) {
          const [item]: { state: State; output: string | null }[] = await tx`
            SELECT state, output FROM items WHERE id = ${d.item} AND run_id = ${run} FOR UPDATE`
          if (!item) throw new Error(`item ${d.item} is not one of run ${run}'s`)
          if (item.state !== "needs_review") {
            out.push({ item: d.item, applied: false, state: item.state })
            continue
          }
          const next = decided(d, item.output)
          await tx`UPDATE items SET state = ${next.to}, output = ${next.output}, error = ${next.error},
            error_class = NULL, updated_at = ${now}::float8 WHERE id = ${d.item}`
          await tx`INSERT INTO reviews (run_id, item_id, at, decision, reason, before, after, by)
            VALUES (${run}, ${d.item}, ${now}::float8, ${d.decision}, ${d.reason ?? null}, ${item.output},
            ${next.output}, ${d.by})`
          out.push({ item: d.item, applied: true, state: next.to })
        }
        // a finished run is finished again: with failures while any item is failed, left for review, or rejected
        const [current]: { state: string }[] = await tx`SELECT state FROM runs WHERE id = ${run} FOR UPDATE`
        if (current?.state === "completed" || current?.state === "completed_with_failures") {
          const [left]: { n: number }[] = await tx`SELECT count(*)::int AS n FROM items
            WHERE run_id = ${run} AND state IN ('failed', 'needs_review', 'rejected')`
          const state = (left?.n ?? 0) > 0 ? "completed_with_failures" : "completed"
          if (state !== current.state) {
            await tx`UPDATE runs SET state = ${state}, updated_at = ${now}::float8 WHERE id = ${run}`
            await notify(tx, this.pg, { run, kind: "state" })
          }
        }
        return out
      }),
    )
  }

  async history(item: number): Promise<ReviewRow[]> {
    const rows: (Omit<ReviewRow, "at"> & { at: number | string })[] = await retrying(
      this.pg,
      () => this.pg.sql`SELECT item_id AS item, at, decision, reason, before, after, by FROM reviews
        WHERE item_id = ${item} ORDER BY id`,
    )
    return rows.map((r) => ({ ...r, at: Number(r.at) }))
  }
}
