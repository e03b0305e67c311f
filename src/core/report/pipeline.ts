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
  /** The steps' prompt cache together (their `status`'s): what it saved is null when a step's price is unknown. */
  prompt_cache: { read_tokens: number; write_tokens: number; saved_usd: number | null }
  /** The steps' priming calls together; their cost null when a step's price is unknown. */
  priming: { calls: number; failed: number; cost_usd: number | null }
}

/** The pipeline view of `run`, or null when it is not a pipeline run. */
export async function pipelineOf(db: Ledger, run: Run, now = Date.now()): Promise<PipelineView | null> {
  const shapes = run.job.pipeline
  if (!shapes) return null
  const runs = new Map((await db.runs.steps(run.id)).map((r) => [r.step!, r]))
  const view = await status(db, run, now)
  const steps: StepView[] = []
  let spend: number | null = 0
  const cache: PipelineView["prompt_cache"] = { read_tokens: 0, write_tokens: 0, saved_usd: 0 }
  const priming: PipelineView["priming"] = { calls: 0, failed: 0, cost_usd: 0 }
  for (const shape of shapes) {
    const r = runs.get(shape.name)
    if (!r) continue
    const s = await status(db, r, now)
    spend = spend === null || s.spend.usd === null ? null : spend + s.spend.usd
    cache.read_tokens += s.prompt_cache.read_tokens
    cache.write_tokens += s.prompt_cache.write_tokens
    cache.saved_usd = sum(cache.saved_usd, s.prompt_cache.saved_usd)
    priming.calls += s.priming.calls
    priming.failed += s.priming.failed
    priming.cost_usd = sum(priming.cost_usd, s.priming.cost_usd)
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
  return { run: view, rows: view.total, steps, spend_usd: spend, prompt_cache: cache, priming }
}

/** Two amounts added up; unknown (null) when either is. */
const sum = (a: number | null, b: number | null) => (a === null || b === null ? null : a + b)

const n = (x: number) => x.toLocaleString("en-US")

/** The text of `spool status` for a pipeline run. */
export function pipelineText(v: PipelineView): string {
  const r = v.run
  const lines = [
    `run ${r.name} (#${r.id}) · pipeline of ${v.steps.length} step(s) · ${r.state}${r.reason ? ` (${r.reason})` : ""}`,
    `rows      ${v.rows.toLocaleString("en-US")}`,
    `spend     ${v.spend_usd === null ? "unknown (a step's model has no price)" : usd(v.spend_usd)}`,
  ]
  const { read_tokens: read, write_tokens: written, saved_usd: saved } = v.prompt_cache
  if (read + written > 0) {
    const kept =
      saved === null ? "unknown (a step's model has no price)" : saved < 0 ? `-${usd(-saved)}` : usd(saved)
    lines.push(`caching   ${n(read)} tokens read, ${n(written)} written · saved ${kept}`)
  }
  const p = v.priming
  if (p.calls > 0) {
    const paid = p.cost_usd === null ? "cost unknown (a step's model has no price)" : usd(p.cost_usd)
    lines.push(
      `priming   ${n(p.calls)} call${p.calls === 1 ? "" : "s"}${p.failed ? ` (${n(p.failed)} failed)` : ""} · ${paid}`,
    )
  }
  lines.push("steps")
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
