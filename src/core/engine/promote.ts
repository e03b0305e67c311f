/**
 * Pipelines (docs/PIPELINES.md): what a row's step becomes once the steps it needs have ended. A model step's item is
 * pending (to call) or skipped; a review step's waits for a person or lets the row through. The ledger finds the rows
 * (`Steps.ready`) and stores the items (`Steps.add`); this module only decides, from the row and its needs' items.
 */
import { evalWhen, type When } from "../job/when.ts"
import type { Ready, StepItem } from "../ledger/ledger.ts"

/** A step as the promoter sees it: its name, kind and `when`, the steps it needs, and whether they answer JSON. */
export interface Promoted {
  name: string
  kind: "model" | "review"
  when: When | undefined
  /** The `when` as written, for a skipped item's reason. */
  whenText: string | undefined
  needs: string[]
  /** Per need (same order): whether its answer is structured (JSON text, parsed for later steps) or plain text. */
  structured: boolean[]
}

/**
 * A row's item for `step`, from the row and its needs' items (in `step.needs` order):
 * - a need that did not complete (failed, skipped, rejected) skips the step: `blocked`;
 * - a `when` that is false skips a model step (`when`), and lets a review step's row through unreviewed;
 * - else a model step's item is pending, and a review step's waits for a person with the answer it reviews (its
 *   last need's).
 * Its data is the row with the answer of every step it reaches laid over it: each need's own data (the row and the
 * steps that need reached), then each need's answer under its name.
 */
export function promote(step: Promoted, ready: Ready): StepItem {
  const row = parse(ready.data)
  const base = { input: ready.input, key: ready.key, row: ready.row, source_id: ready.source_id }
  const stuck = ready.needs.findIndex((n) => n.state !== "completed")
  if (stuck >= 0) {
    const need = ready.needs[stuck]!
    return {
      ...base,
      data: ready.data,
      state: "skipped",
      error_class: "blocked",
      error: `${step.needs[stuck]} ${need.state === "skipped" ? "was skipped" : need.state}`,
    }
  }
  const data: Record<string, unknown> = { ...row }
  ready.needs.forEach((need, i) => {
    Object.assign(data, parse(need.data))
    data[step.needs[i]!] = answer(need.output, step.structured[i]!)
  })
  const text = JSON.stringify(data)
  const passes = !step.when || evalWhen(step.when, { row, steps: data })
  if (step.kind === "review") {
    const reviewed = ready.needs.at(-1)?.output ?? null
    if (!passes) return { ...base, data: text, state: "completed", output: reviewed }
    return {
      ...base,
      data: text,
      state: "needs_review",
      output: reviewed,
      error_class: "review",
      error: `step ${step.name}${step.whenText ? `: ${step.whenText}` : ""}`,
    }
  }
  if (!passes)
    return {
      ...base,
      data: text,
      state: "skipped",
      error_class: "when",
      error: `when is false: ${step.whenText}`,
    }
  return { ...base, data: text, state: "pending" }
}

/** A step's answer as later steps read it: a structured one parsed, a text one as it is. */
export function answer(output: string | null, structured: boolean): unknown {
  if (output === null || !structured) return output
  try {
    return JSON.parse(output) as unknown
  } catch {
    return output
  }
}

function parse(text: string): Record<string, unknown> {
  const value = JSON.parse(text) as unknown
  return value !== null && typeof value === "object" && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : {}
}
