/**
 * The canary's report (README, "Canary"): what a run's first items, sent as direct calls, say of the whole job before
 * the rest goes out: their outputs, the gates their answers passed, how they ended and why, the errors met, what one
 * item cost and what the job will.
 */
import type { Job } from "../job/job.ts"
import { jobPrice, paidCost } from "../job/pricing.ts"
import type { Ledger } from "../ledger/ledger.ts"
import type { State } from "../ledger/states.ts"
import type { AttemptRow, Item, Run } from "../ledger/types.ts"
import { namespaces, usd } from "./report.ts"

/** How many of the canary's outputs the report shows. */
export const SHOWN = 5
/** How long a shown output may be, in characters, on its one line. */
const WIDTH = 100

export interface CanaryReport {
  run: string
  /** The canary's items: the run's first `items` in ledger order (all of them, when the run has no more). */
  items: number
  /** Every item of the run, its inputs read to the end; and how many come after the canary. */
  total: number
  rest: number
  /** flex: the canary's calls are the flex tier's too, at its price (a batch job's are direct, at the full one). */
  mode: "realtime" | "batch" | "flex"
  /** The first few items, each on one line: its id, how it ended, and its output or error. */
  outputs: { id: string; state: State; text: string }[]
  /**
   * Every answer the canary's calls got, and the gates it passed in their order: whole (not cut at max_tokens, not
   * refused), then, with an output schema, JSON, then valid against the schema (null without one: not checked).
   */
  gates: {
    answers: number
    truncated: number
    refused: number
    notJson: number | null
    invalid: number | null
  }
  /** The canary's items by how they ended: needs_review by the gate failed, failed by error class. */
  ended: {
    completed: number
    review: { reason: string; count: number }[]
    failed: { reason: string; count: number }[]
    open: number
  }
  /** The error classes of every attempt, most frequent first, each with its first example. */
  errors: { class: string; count: number; example: string }[]
  /** USD; null when the model has no price. `each` is null until an item has ended. */
  cost: {
    /** What the canary's items cost (their direct calls, at the realtime price). */
    spent: number
    each: number | null
    /** One item in the job's mode: at the batch price for a batch job. */
    eachInMode: number | null
    /** The items after the canary, in the job's mode; and the whole job: those and the canary's. */
    rest: number | null
    whole: number | null
    prices: string
  } | null
}

/** Which gate an answer failed, from its `output` error (job/schema.ts `gate` writes them). */
function gateOf(error: string): "truncated" | "refused" | "notJson" | "invalid" {
  if (error.startsWith("truncated at max_tokens")) return "truncated"
  if (error.startsWith("refused")) return "refused"
  if (error.startsWith("not JSON")) return "notJson"
  return "invalid"
}

const REASONS = {
  truncated: "truncated at max_tokens",
  refused: "refused",
  notJson: "not JSON",
  invalid: "schema violation",
} as const

/** Counts of each key, most frequent first. */
function ranked(keys: string[]): { reason: string; count: number }[] {
  const counts = new Map<string, number>()
  for (const k of keys) counts.set(k, (counts.get(k) ?? 0) + 1)
  return [...counts].map(([reason, count]) => ({ reason, count })).sort((a, b) => b.count - a.count)
}

/** One line of at most WIDTH characters. */
export function oneLine(text: string): string {
  const flat = text.replace(/\s+/g, " ").trim()
  return flat.length > WIDTH ? `${flat.slice(0, WIDTH - 1)}…` : flat
}

function shown(item: Item): string {
  if (item.state === "completed") return oneLine(item.output ?? "")
  if (item.state === "needs_review")
    return oneLine(`[${REASONS[gateOf(item.error ?? "")]}] ${item.output ?? ""}`)
  if (item.state === "failed") return oneLine(`[${item.error_class}] ${item.error ?? ""}`)
  return "(not ended)"
}

/**
 * Reads the report of the run's first `first` items from the ledger; `job` is the job as this process runs it (its
 * mode and prices). Call it once the canary's items have ended and the inputs are read to their end.
 */
export async function canaryReport(db: Ledger, run: Run, job: Job, first: number): Promise<CanaryReport> {
  const label = namespaces((await db.runs.inputs(run.id)).map((i) => i.path))
  const items: Item[] = []
  for await (const item of db.reads.items(run.id)) {
    if (items.length >= first) break
    items.push(item)
  }
  const attempts: AttemptRow[] = []
  for (const item of items) attempts.push(...(await db.reads.attempts(item.id)))
  const total = Object.values(await db.reads.counts(run.id)).reduce((a, b) => a + b, 0)
  const mode = job.provider.mode
  return {
    run: run.name,
    items: items.length,
    total,
    rest: total - items.length,
    mode,
    outputs: items.slice(0, SHOWN).map((item) => ({
      id: label[item.input] === undefined ? item.key : `${label[item.input]}:${item.key}`,
      state: item.state,
      text: shown(item),
    })),
    gates: gatesOf(attempts, job.output !== undefined),
    ended: {
      completed: items.filter((i) => i.state === "completed").length,
      review: ranked(
        items.filter((i) => i.state === "needs_review").map((i) => REASONS[gateOf(i.error ?? "")]),
      ),
      failed: ranked(items.filter((i) => i.state === "failed").map((i) => i.error_class ?? "unknown")),
      open: items.filter((i) => !["completed", "needs_review", "failed"].includes(i.state)).length,
    },
    errors: errorsOf(attempts),
    cost: costOf(job, items, total),
  }
}

function gatesOf(attempts: AttemptRow[], schema: boolean): CanaryReport["gates"] {
  const answers = attempts.filter((a) => a.outcome === "ok" || a.error_class === "output")
  const failed = answers.filter((a) => a.error_class === "output").map((a) => gateOf(a.error ?? ""))
  const count = (g: ReturnType<typeof gateOf>) => failed.filter((f) => f === g).length
  return {
    answers: answers.length,
    truncated: count("truncated"),
    refused: count("refused"),
    notJson: schema ? count("notJson") : null,
    invalid: schema ? count("invalid") : null,
  }
}

function errorsOf(attempts: AttemptRow[]): CanaryReport["errors"] {
  const classes = new Map<string, { count: number; example: string }>()
  for (const a of attempts) {
    if (!a.error_class) continue
    const seen = classes.get(a.error_class)
    if (seen) seen.count++
    else classes.set(a.error_class, { count: 1, example: oneLine(a.error ?? "") })
  }
  return [...classes].map(([c, e]) => ({ class: c, ...e })).sort((a, b) => b.count - a.count)
}

function costOf(job: Job, items: Item[], total: number): CanaryReport["cost"] {
  const price = jobPrice(job)
  if (!price) return null
  const spent = items.reduce((sum, item) => sum + paidCost(price, item), 0)
  const ended = items.filter((i) => ["completed", "needs_review", "failed"].includes(i.state)).length
  if (ended === 0)
    return { spent, each: null, eachInMode: null, rest: null, whole: null, prices: price.source }
  const each = spent / ended
  // the canary paid the realtime price; a batch pays the same tokens less the provider's discount (pricing.ts cost)
  const eachInMode = job.provider.mode === "batch" ? each * (1 - price.batch_discount) : each
  const rest = eachInMode * (total - items.length)
  return { spent, each, eachInMode, rest, whole: spent + rest, prices: price.source }
}

/** Dollars for people: as `usd` from a cent up; below, three significant digits ($0.0000160), never 0 for a cost. */
export function money(x: number): string {
  if (x === 0) return "$0"
  if (x >= 0.01) return usd(x)
  return `$${x.toFixed(Math.min(20, 2 - Math.floor(Math.log10(x))))}`
}

const n = (x: number) => x.toLocaleString("en-US")

export function canaryText(r: CanaryReport): string {
  const lines = [
    `canary    the first ${n(r.items)} of ${n(r.total)} item(s), sent as direct calls${r.mode === "batch" ? " (the rest goes in batches)" : r.mode === "flex" ? " in the flex tier" : ""}`,
    "outputs",
    ...r.outputs.map((o) => `  ${o.id}  ${o.state}  ${o.text}`),
    `gates     ${gatesText(r.gates)}`,
    `items     ${endedText(r.ended)}`,
    `errors    ${r.errors.length ? r.errors.map((e) => `${e.class} ×${n(e.count)}`).join(" · ") : "none"}`,
    ...r.errors.map((e) => `  ${e.class}: ${e.example}`),
    ...costText(r),
  ]
  return `${lines.join("\n")}\n`
}

function gatesText(g: CanaryReport["gates"]): string {
  const whole = g.answers - g.truncated - g.refused
  const parts = [
    `${n(g.answers)} answer(s): ${n(whole)} whole (${n(g.truncated)} truncated at max_tokens, ${n(g.refused)} refused)`,
  ]
  if (g.notJson === null || g.invalid === null) parts.push("JSON and schema not checked (no output schema)")
  else {
    const json = whole - g.notJson
    parts.push(
      `${n(json)} JSON (${n(g.notJson)} not)`,
      `${n(json - g.invalid)} valid against the schema (${n(g.invalid)} not)`,
    )
  }
  return parts.join(" · ")
}

function endedText(e: CanaryReport["ended"]): string {
  const why = (list: { reason: string; count: number }[]) =>
    list.length ? ` (${list.map((l) => `${l.reason} ${n(l.count)}`).join(", ")})` : ""
  const count = (list: { count: number }[]) => list.reduce((a, b) => a + b.count, 0)
  const parts = [
    `${n(e.completed)} completed`,
    `${n(count(e.review))} needs_review${why(e.review)}`,
    `${n(count(e.failed))} failed${why(e.failed)}`,
  ]
  if (e.open) parts.push(`${n(e.open)} not ended`)
  return parts.join(" · ")
}

function costText(r: CanaryReport): string[] {
  const c = r.cost
  if (!c)
    return [
      "cost      unknown (no price for this model: set input and output in [pricing], USD per million tokens)",
    ]
  if (c.each === null || c.eachInMode === null || c.rest === null || c.whole === null)
    return [`cost      ${money(c.spent)} so far; per item unknown until one has ended (${c.prices})`]
  const lines = [
    `cost      ${money(c.each)} per item, measured: ${money(c.spent)} for ${n(r.items)} item(s) at the realtime price (${c.prices})`,
  ]
  const price =
    r.mode === "batch"
      ? `${money(c.eachInMode)} per item at the batch price`
      : `${money(c.eachInMode)} per item`
  lines.push(
    `projected ~${money(c.whole)} for the whole job of ${n(r.total)} item(s) in ${r.mode} mode: ~${money(c.rest)} for the other ${n(r.rest)} (${price}) and ${money(c.spent)} spent`,
  )
  return lines
}
