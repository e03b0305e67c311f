/**
 * What the status page shows of pipelines (docs/PIPELINES.md): a step run's place in its pipeline, and a row's items
 * at every step, side by side. A row's item at a step is found by its key in the step's run (an index look-up, then
 * its input), so a page of 50 rows costs 50 look-ups per step, however many rows the run has.
 */
import * as report from "../core/report/report.ts"
import type { StepShape } from "../core/job/job.ts"
import type { Ledger } from "../core/ledger/ledger.ts"
import type { PagedItem, Run } from "../core/ledger/types.ts"
import { itemView } from "./data.ts"
import type { ItemDetail, RowSteps, StepCell, StepOf } from "./types.ts"

type Line = Awaited<ReturnType<typeof report.resultLine>>

/** A pipeline run's steps in the job's order, each with its latest run and how its items read as result lines. */
async function stepsOf(db: Ledger, run: Run): Promise<{ shape: StepShape; run: Run; line: Line }[]> {
  const runs = new Map((await db.runs.steps(run.id)).map((r) => [r.step, r]))
  const out: { shape: StepShape; run: Run; line: Line }[] = []
  for (const shape of run.job.pipeline ?? []) {
    const r = runs.get(shape.name)
    // a step whose run is not made yet has no row: it is left out, as `spool status` leaves it out
    if (r) out.push({ shape, run: r, line: await report.resultLine(db, r) })
  }
  return out
}

/** The row's item in a step's run: same input and key; null when the row has not reached that step. */
async function at(db: Ledger, step: Run, row: { input: number; key: string }): Promise<PagedItem | null> {
  return (await db.reads.keyed(step.id, row.key)).find((i) => i.input === row.input) ?? null
}

/**
 * For a pipeline run, what gives a row its cells (its state, output and error at each step) for the item list; for
 * any other run, undefined.
 */
export async function cellsOf(
  db: Ledger,
  run: Run,
): Promise<((row: { input: number; key: string }) => Promise<StepCell[]>) | undefined> {
  if (!run.job.pipeline) return undefined
  const steps = await stepsOf(db, run)
  return async (row) => {
    const cells: StepCell[] = []
    for (const s of steps) {
      const item = await at(db, s.run, row)
      const line = item && s.line(item)
      cells.push({
        step: s.shape.name,
        run: s.run.id,
        item_id: item?.id ?? null,
        state: line?.state ?? null,
        output: line?.output ?? null,
        error: line?.error ?? null,
      })
    }
    return cells
  }
}

/** A pipeline run's row `id` at every step, each item whole with its attempts; null when the run has no such item. */
export async function rowSteps(db: Ledger, run: Run, id: number): Promise<RowSteps | null> {
  const row = await db.reads.item(run.id, id)
  if (!row) return null
  const line = (await report.resultLine(db, run))(row)
  const steps: RowSteps["steps"] = []
  for (const s of await stepsOf(db, run)) {
    const item = await at(db, s.run, row)
    steps.push({
      ...s.shape,
      run: s.run.id,
      run_name: s.run.name,
      item: item && itemView(s.line, item),
    })
  }
  return {
    row: { id: line.id, item_id: row.id, source: line.source, input: JSON.parse(row.data) as unknown },
    steps,
  }
}

/** Which step of which pipeline run `run` is; null for a run that is not a pipeline's step. */
export async function stepOf(db: Ledger, run: Run): Promise<StepOf | null> {
  if (run.parent === null || run.step === null) return null
  const parent = await db.runs.get(run.parent)
  const shape = parent?.job.pipeline?.find((s) => s.name === run.step)
  if (!parent || !shape) return null
  return { ...shape, parent: parent.id, parent_name: parent.name }
}

/**
 * What an item opened shows of its pipeline: a pipeline run's row, its items at every step; a step's item, its step
 * and the row's item id in the pipeline run (to open the row there). Nothing for any other run's item.
 */
export async function placed(db: Ledger, run: Run, id: number): Promise<Pick<ItemDetail, "steps" | "step">> {
  if (run.job.pipeline) return { steps: (await rowSteps(db, run, id))?.steps ?? [] }
  const step = await stepOf(db, run)
  const item = step && (await db.reads.item(run.id, id))
  if (!step || !item) return {}
  const row = (await db.reads.keyed(step.parent, item.key)).find((i) => i.input === item.input)
  return { step: { ...step, row_item: row?.id ?? null } }
}
