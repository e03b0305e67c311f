/** The workers of a run as `status` and the page list them: where each runs, what it holds, whether it is alive. */
import { alive, type Ledger, type Worker } from "../ledger/ledger.ts"
import type { Run } from "../ledger/types.ts"

export interface WorkerView {
  host: string
  pid: number | null
  items: number
  started_at: string
  beat_at: string
  alive: boolean
}

/** A run's workers as `status` and the page list them (ledger.ts `Workers`, `alive`). */
export async function workersOf(db: Ledger, run: Run, now = Date.now()): Promise<WorkerView[]> {
  const [list, held] = await Promise.all([db.workers.list(run.id), db.workers.held(run.id)])
  return workerViews(list, held, now)
}

export function workerViews(
  list: Worker[],
  holds: { owner: string; items: number }[],
  now: number,
): WorkerView[] {
  const held = new Map(holds.map((h) => [h.owner, h.items]))
  return list.map((w) => {
    const [host, pid] = w.owner.split(":")
    return {
      host: host ?? w.owner,
      pid: pid && /^\d+$/.test(pid) ? Number(pid) : null,
      items: held.get(w.owner) ?? 0,
      started_at: new Date(w.started_at).toISOString(),
      beat_at: new Date(w.beat_at).toISOString(),
      alive: alive([w], now) === 1,
    }
  })
}
