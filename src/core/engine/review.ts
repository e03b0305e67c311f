/**
 * Review (README, "Review"): the items a run left for a person (needs_review), listed, and decided on: approved as
 * they are, edited (fields of a structured answer set, or the whole answer replaced), or rejected with a reason.
 * Every decision of one command is checked before any is applied, and then all are applied in one transaction: a
 * decisions file with one bad line changes nothing.
 */
import { UsageError } from "../base/errors.ts"
import * as schemas from "../job/schema.ts"
import { mustFind, type Decision, type Ledger } from "../ledger/ledger.ts"
import type { Run } from "../ledger/types.ts"
import { namespaces } from "../report/report.ts"

/** One decision as a person gives it: by the item's id as `spool results` and `spool review` show it. */
export interface Asked {
  id: string
  decision: Decision["decision"]
  reason?: string | undefined
  /** edit: fields of a structured answer to set (`a.b` reaches into objects), each to a JSON value. */
  set?: Record<string, unknown> | undefined
  /** edit: the whole new answer (text; for a structured job, the JSON value itself or its text). */
  output?: unknown
  /** Where the decision came from, for its messages: "line 3 of decisions.jsonl". */
  where?: string | undefined
}

/** An item waiting for review, as listed. */
export interface Waiting {
  id: string
  /** Why it was left: the gate its answer failed. */
  reason: string | null
  output: string | null
  attempts: number
}

/** The run's items left for review, in ledger order, up to `limit`; and how many there are in all. */
export async function waiting(
  db: Ledger,
  ref: string | undefined,
  limit = Number.POSITIVE_INFINITY,
  step?: string,
): Promise<{ run: Run; items: Waiting[]; total: number }> {
  const run = await reviewed(db, ref, step)
  const idOf = await ids(db, run)
  const items: Waiting[] = []
  const total = (await db.reads.counts(run.id)).needs_review
  for await (const item of db.reads.items(run.id, "needs_review")) {
    if (items.length >= Math.min(limit, total)) break
    items.push({ id: idOf(item), reason: item.error, output: item.output, attempts: item.attempts })
  }
  return { run, items, total }
}

/**
 * The run whose items are reviewed: `ref`'s (its latest, or the latest run), or, for a pipeline, one step's run:
 * `step`, or when it is not given, the one step with rows waiting (docs/PIPELINES.md). A step run can also be named
 * as itself (`triage.check`).
 */
export async function reviewed(db: Ledger, ref: string | undefined, step?: string): Promise<Run> {
  const run = await mustFind(db, ref)
  const steps = await db.runs.steps(run.id)
  if (step !== undefined) {
    const found = steps.find((s) => s.step === step)
    if (found) return found
    throw new UsageError(
      steps.length
        ? `--step: run "${run.name}" has no step "${step}"`
        : `--step: run "${run.name}" is not a pipeline: it has no steps`,
      steps.length ? `Its steps: ${steps.map((s) => s.step).join(", ")}.` : "Drop --step.",
    )
  }
  if (steps.length === 0) return run
  const waiting: { run: Run; n: number }[] = []
  for (const s of steps) {
    const n = (await db.reads.counts(s.id)).needs_review
    if (n > 0) waiting.push({ run: s, n })
  }
  if (waiting.length === 1) return waiting[0]!.run
  if (waiting.length === 0) return run
  throw new UsageError(
    `run "${run.name}" has rows waiting for review at ${waiting.length} steps: ${waiting.map((w) => `${w.run.step} (${w.n})`).join(", ")}`,
    "Name one with --step.",
  )
}

/** How a run's items are named to people: `key`, or `input:key` when the run reads several inputs. */
async function ids(db: Ledger, run: Run): Promise<(item: { input: number; key: string }) => string> {
  const label = namespaces((await db.runs.inputs(run.id)).map((i) => i.path))
  return (item) => (label[item.input] === undefined ? item.key : `${label[item.input]}:${item.key}`)
}

/** What deciding did: per decision, its item's id and what became of it. */
export interface Outcome {
  id: string
  decision: Decision["decision"]
  applied: boolean
  state: string
}

/**
 * Checks every decision (its item exists and waits for review; an approved or edited answer passes the job's
 * gates), then applies them all at once. Throws a UsageError naming every problem, and then applies none.
 */
export async function decide(
  db: Ledger,
  ref: string | undefined,
  asked: Asked[],
  by: string,
  step?: string,
): Promise<{ run: Run; outcomes: Outcome[]; left: number }> {
  const run = await reviewed(db, ref, step)
  if (asked.length === 0)
    throw new UsageError("no decision given", "Name an item: `spool review approve ID`.")
  const inputs = await db.runs.inputs(run.id)
  const label = namespaces(inputs.map((i) => i.path))
  const validate = run.job.output ? schemas.validator(run.job.output.schema) : undefined
  const problems: string[] = []
  const decisions: Decision[] = []
  const named: string[] = []
  const seen = new Set<number>()
  for (const a of asked) {
    const where = a.where ? `${a.where}: ` : ""
    const item = await find(db, run, label, a.id)
    if (typeof item === "string") {
      problems.push(`${where}${item}`)
      continue
    }
    if (seen.has(item.id)) {
      problems.push(`${where}item "${a.id}" is decided twice`)
      continue
    }
    seen.add(item.id)
    const made = decision(a, item.output, validate)
    if (typeof made === "string") problems.push(`${where}item "${a.id}": ${made}`)
    else {
      decisions.push({ item: item.id, by, ...made })
      named.push(a.id)
    }
  }
  if (problems.length > 0)
    throw new UsageError(
      `nothing was decided: ${problems.length === 1 ? problems[0] : `\n  ${problems.join("\n  ")}`}`,
      "Fix the decision(s) named and give them again; no item was changed.",
    )
  const done = await db.reviews.decide(run.id, decisions)
  const outcomes = done.map((d, i) => ({
    id: named[i]!,
    decision: decisions[i]!.decision,
    applied: d.applied,
    state: d.state,
  }))
  return { run, outcomes, left: (await db.reads.counts(run.id)).needs_review }
}

/** The item an id names (`key`, or `input:key`), or why none can be decided on. */
async function find(
  db: Ledger,
  run: Run,
  label: (string | undefined)[],
  id: string,
): Promise<{ id: number; output: string | null } | string> {
  let input: number | undefined
  let key = id
  const colon = id.indexOf(":")
  if (label.some((l) => l !== undefined) && colon > 0) {
    const at = label.indexOf(id.slice(0, colon))
    if (at >= 0) {
      input = at
      key = id.slice(colon + 1)
    }
  }
  const items = (await db.reads.keyed(run.id, key)).filter((i) => input === undefined || i.input === input)
  if (items.length === 0) return `run "${run.name}" has no item "${id}"`
  if (items.length > 1) {
    const names = items.map((i) => `${label[i.input]}:${i.key}`)
    return `"${id}" names ${items.length} items (one per input): say which, as ${names.join(" or ")}`
  }
  const item = items[0]!
  if (item.state !== "needs_review")
    return `item "${id}" is ${item.state}, not waiting for review (\`spool review\` lists those that are)`
  return { id: item.id, output: item.output }
}

/** The decision to store, or what is wrong with it. */
function decision(
  a: Asked,
  current: string | null,
  validate: ((value: unknown) => string | undefined) | undefined,
): Omit<Decision, "item" | "by"> | string {
  const structured = validate !== undefined
  if (a.decision === "reject") return { decision: "reject", reason: a.reason }
  if (a.decision === "approve") {
    if (a.set !== undefined || a.output !== undefined) return "approve takes no new answer: use edit"
    const failed = structured ? gate(current ?? "", validate) : undefined
    if (failed)
      return `its answer cannot be approved as it is (${failed}); edit it instead (\`spool review edit ID --set field=value\`)`
    return { decision: "approve", reason: a.reason }
  }
  if (a.set === undefined && a.output === undefined)
    return "edit needs the new answer: --set field=value, or --output"
  if (a.set !== undefined && a.output !== undefined) return "edit takes --set or --output, not both"
  let output: string
  if (a.output !== undefined) {
    output = typeof a.output === "string" ? a.output : JSON.stringify(a.output)
  } else {
    if (!structured)
      return "--set sets fields of a structured answer; this job's answers are text: use --output"
    let value: unknown
    try {
      value = JSON.parse(current ?? "")
    } catch {
      return "its answer is not JSON, so no field of it can be set: give the whole answer with --output"
    }
    if (typeof value !== "object" || value === null || Array.isArray(value))
      return "its answer is not a JSON object, so no field of it can be set: give the whole answer with --output"
    for (const [path, v] of Object.entries(a.set!)) {
      const set = setPath(value as Record<string, unknown>, path, v)
      if (set) return set
    }
    output = JSON.stringify(value)
  }
  const failed = structured ? gate(output, validate) : undefined
  if (failed) return `the edited answer fails the job's output schema (${failed})`
  return { decision: "edit", output, reason: a.reason }
}

/** Why a structured answer fails the job's gates, or undefined when it passes them. */
function gate(text: string, validate: (value: unknown) => string | undefined): string | undefined {
  const checked = schemas.gate({ text, usage: { input_tokens: 0, output_tokens: 0 } }, validate)
  return checked.ok ? undefined : checked.gate
}

/** Sets `path` (`a.b.c`) in `target`, making objects on the way; or says why it cannot. */
function setPath(target: Record<string, unknown>, path: string, value: unknown): string | undefined {
  const parts = path.split(".")
  if (parts.some((p) => p === "")) return `"${path}" is not a field path (a, or a.b)`
  let at = target
  for (const part of parts.slice(0, -1)) {
    const next = at[part]
    if (next === undefined) at[part] = {}
    else if (typeof next !== "object" || next === null || Array.isArray(next))
      return `"${path}": ${part} is not an object`
    at = at[part] as Record<string, unknown>
  }
  at[parts.at(-1)!] = value
  return undefined
}

/** `field=value` as `--set` gives it: the value as JSON when it is JSON (3, true, "x", [1]), else as text. */
export function assignment(text: string): [string, unknown] {
  const eq = text.indexOf("=")
  if (eq <= 0)
    throw new UsageError(
      `--set "${text}": not field=value`,
      "Give --set label=bug (a.b=1 reaches into objects).",
    )
  const raw = text.slice(eq + 1)
  try {
    return [text.slice(0, eq), JSON.parse(raw) as unknown]
  } catch {
    return [text.slice(0, eq), raw]
  }
}

/** What decisions did, in words: the command line's answer, and the page's message. */
export function told(run: string, outcomes: Outcome[], left: number, goOn?: string): string {
  const verbs = { approve: "approved", edit: "edited", reject: "rejected" } as const
  const counts = (["approve", "edit", "reject"] as const)
    .map((d) => [verbs[d], outcomes.filter((o) => o.applied && o.decision === d).length] as const)
    .filter(([, n]) => n > 0)
    .map(([verb, n]) => `${n} ${verb}`)
  const lines = [`run "${run}": ${counts.length ? counts.join(", ") : "nothing changed"}`]
  for (const o of outcomes.filter((x) => !x.applied))
    lines.push(`  ${o.id}: left as it is (it is ${o.state} now, decided or retried meanwhile)`)
  lines.push(
    left > 0
      ? `${left} item(s) still wait for review: spool review ${quoteRun(run)}`
      : "no item waits for review",
  )
  // a pipeline step's rows go on to the steps after it at the pipeline's next run
  if (goOn && outcomes.some((o) => o.applied && o.decision !== "reject"))
    lines.push(`the rows let through go on to the next steps with: ${goOn}`)
  return `${lines.join("\n")}\n`
}

/** A run's name as a shell word. */
export const quoteRun = (name: string) =>
  /^[\w.-]+$/.test(name) ? name : `'${name.replaceAll("'", "'\\''")}'`
