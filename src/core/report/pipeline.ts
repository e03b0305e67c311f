/**
 * `spool status` of a pipeline run (docs/PIPELINES.md): the rows, and per step its counts, its spend and its state,
 * each step's own view being its run's (`status`). The page draws the same view as a graph.
 */
import type { StepShape } from "../job/job.ts"
import type { Ledger } from "../ledger/ledger.ts"
import type { State } from "../ledger/states.ts"
import type { Run } from "../ledger/types.ts"
import { STATE_ORDER, status, usd, type StatusView } from "./report.ts"

/** One step of a pipeline as shown: its shape, its run, and that run's counts and spend. */
export interface StepView extends StepShape {
  /** Its run's id and name (`spool status NAME.STEP` shows it whole). */
  run: number
  run_name: string
  state: string
  reason: string | null
  counts: Record<State, number>
  /** Its items: the rows that reached it so far. */
  total: number
  /** Rows that have not reached it yet (their needed steps have not ended, or wait for review). */
  not_reached: number
  spend_usd: number | null
}

export interface PipelineView {
  /** The pipeline run's own view: its rows are its items. */
  run: StatusView
  rows: number
  steps: StepView[]
  /** The steps' spend together; null when a step's price is unknown. */
  spend_usd: number | null
}

/** The pipeline view of `run`, or null when it is not a pipeline run. */
export async function pipelineOf(db: Ledger, run: Run, now = Date.now()): Promise<PipelineView | null> {
  const shapes = run.job.pipeline
  if (!shapes) return null
  const runs = new Map((await db.runs.steps(run.id)).map((r) => [r.step!, r]))
  const view = await status(db, run, now)
  const steps: StepView[] = []
  let spend: number | null = 0
  for (const shape of shapes) {
    const r = runs.get(shape.name)
    if (!r) continue
    const s = await status(db, r, now)
    spend = spend === null || s.spend.usd === null ? null : spend + s.spend.usd
    steps.push({
      ...shape,
      run: r.id,
      run_name: r.name,
      state: s.state,
      reason: s.reason,
      counts: s.counts,
      total: s.total,
      not_reached: Math.max(0, view.total - s.total),
      spend_usd: s.spend.usd,
    })
  }
  return { run: view, rows: view.total, steps, spend_usd: spend }
}

/** The text of `spool status` for a pipeline run. */
export function pipelineText(v: PipelineView): string {
  const r = v.run
  const lines = [
    `run ${r.name} (#${r.id}) · pipeline of ${v.steps.length} step(s) · ${r.state}${r.reason ? ` (${r.reason})` : ""}`,
    `rows      ${v.rows.toLocaleString("en-US")}`,
    `spend     ${v.spend_usd === null ? "unknown (a step's model has no price)" : usd(v.spend_usd)}`,
    "steps",
  ]
  const heads = v.steps.map(
    (s) => `${s.name} (${[s.kind, ...(s.needs.length ? [`after ${s.needs.join(", ")}`] : [])].join(", ")})`,
  )
  const width = Math.max(...heads.map((h) => h.length))
  for (const [i, s] of v.steps.entries()) {
    const counts = STATE_ORDER.filter((st) => s.counts[st] > 0).map(
      (st) => `${st === "needs_review" ? "needs review" : st} ${s.counts[st].toLocaleString("en-US")}`,
    )
    if (s.not_reached) counts.push(`not reached ${s.not_reached.toLocaleString("en-US")}`)
    lines.push(`  ${heads[i]!.padEnd(width)}  ${counts.join(" · ") || "nothing yet"}`)
  }
  if (r.malformed.count) lines.push(`input     ${r.malformed.count} line(s) skipped`)
  if (r.state === "paused" || r.state === "running" || r.state === "interrupted")
    lines.push(`resume    ${r.resume}`)
  lines.push(`each step whole: spool status ${r.name}.STEP`)
  return `${lines.join("\n")}\n`
}
