/**
 * A job's `[[step]]` tables (docs/PIPELINES.md): each step a job of its own, made of the job's top-level tables with
 * the step's laid over them key by key, so that a step can change just the model or the mode. Everything a step can
 * get wrong is found here, before the store is opened: its name, what it needs, its `when`, the earlier steps its
 * prompt reads. The job loader (job.ts) gives the validation of one job, so that this module needs nothing of it.
 */
import * as v from "valibot"
import { JobError } from "../../plugins/api/errors.ts"
import {
  STEP_NAME,
  WhenSyntaxError,
  checkWhen,
  fieldsOfSchema,
  parseWhen,
  type When,
  type WhenFields,
  type WhenScope,
} from "./when.ts"

type Table = Record<string, unknown>

/** The tables a step inherits from the job's top level, each laid over key by key. */
const INHERITED = ["provider", "request", "output", "limits", "batch", "pricing", "cache"] as const
const KEYS = new Set<string>(["name", "needs", "when", "kind", ...INHERITED])

/** A pipeline's step as its run keeps it (`Job.pipeline`): what the page's graph and `spool status` show. */
export interface StepShape {
  name: string
  kind: "model" | "review"
  needs: string[]
  when?: string | undefined
}

/** A `StepShape` as a stored job is checked when it is read back. */
export const StepShapeSchema = v.object({
  name: v.string(),
  kind: v.picklist(["model", "review"]),
  needs: v.array(v.string()),
  when: v.optional(v.string()),
})

/** One step, checked. */
export interface Step<J> {
  name: string
  /** The steps it needs, each one before it in the job. */
  needs: string[]
  when: When | undefined
  /** `model` calls a model; `review` stops the rows that reach it for a person (`spool review`). */
  kind: "model" | "review"
  /** The step's own job (a review step has none: it calls nothing). */
  job: J | undefined
}

/** The least the steps read of a validated job: its output schema, to check what later steps read of it. */
interface Shaped {
  output?: { schema: Record<string, unknown> } | undefined
  request: { prompt: string }
}

/** A prompt's placeholders, as template.ts finds them (which imports job.ts, as job.ts imports this module). */
const PLACEHOLDER = /\{\{\s*([^{}\s]+)\s*\}\}/g

const isTable = (value: unknown): value is Table =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/**
 * The steps of `tables` (the job's `step` value), each validated as a job made of `raw` (the job's top level, flags
 * laid over it) and its own tables. Throws one JobError listing every problem of every step, each named
 * `step.NAME.key` (or `step.N` before a name is known).
 */
export function stepsOf<J extends Shaped>(
  tables: unknown,
  raw: Table,
  validate: (raw: Table) => J,
  file: string,
): Step<J>[] {
  const problems: string[] = []
  /** Problems of the top level's own keys, which every step inherits: listed once, first. */
  const top = new Set<string>()
  if (!Array.isArray(tables) || tables.length === 0 || !tables.every(isTable))
    throw invalid(file, ["step: expected [[step]] tables, one per step"])
  const steps: Step<J>[] = []
  /** What each earlier step's output offers a later step's `when` and prompt. */
  const shapes = new Map<string, WhenFields | "text" | "any">()
  /** Each earlier step's needs, direct or not. */
  const reach = new Map<string, Set<string>>()
  for (const [i, table] of tables.entries()) {
    const name = typeof table.name === "string" ? table.name : undefined
    const at = name && STEP_NAME.test(name) ? `step.${name}` : `step.${i + 1}`
    const before = steps.map((s) => s.name)
    if (name === undefined) problems.push(`${at}.name: missing (required): a name later steps reach it by`)
    else if (!STEP_NAME.test(name))
      problems.push(
        `${at}.name: "${name}" is not a step name (a letter or _, then letters, digits or _; not row, and, or, not, in, true, false or null)`,
      )
    else if (before.includes(name)) problems.push(`${at}.name: a step "${name}" comes before this one`)
    for (const key of Object.keys(table))
      if (!KEYS.has(key)) problems.push(`${at}.${key}: unknown key (a step has ${[...KEYS].join(", ")})`)
    const kind = table.kind ?? "model"
    if (kind !== "model" && kind !== "review")
      problems.push(`${at}.kind: expected "model" or "review", not ${JSON.stringify(kind)}`)
    const needs = needsOf(table.needs, at, before, problems)
    const scope: WhenScope = { steps: {} }
    const reached = new Set<string>()
    for (const n of needs) for (const r of [n, ...(reach.get(n) ?? [])]) reached.add(r)
    for (const r of reached) scope.steps[r] = shapes.get(r) ?? "any"
    const when = whenOf(table.when, at, scope, problems)
    let job: J | undefined
    if (kind === "review") {
      if (needs.length === 0)
        problems.push(`${at}.needs: a review step reviews what earlier steps answered: name them`)
      for (const key of ["provider", "request", "output"])
        if (table[key] !== undefined)
          problems.push(`${at}.${key}: a review step calls no model, so it takes no ${key}`)
    } else {
      try {
        job = validate(layered(raw, table))
      } catch (err) {
        if (!(err instanceof JobError)) throw err
        for (const p of err.problems) {
          if (ownProblem(p, table)) problems.push(`${at}.${p}`)
          else top.add(p)
        }
      }
      if (job) problems.push(...readsOf(job.request.prompt, at, scope, tables, name))
    }
    const step: Step<J> = {
      name: name ?? `${i + 1}`,
      needs,
      when,
      kind: kind === "review" ? "review" : "model",
      job,
    }
    steps.push(step)
    reach.set(step.name, reached)
    shapes.set(step.name, shapeOf(step, shapes))
  }
  if (problems.length || top.size) throw invalid(file, [...top, ...problems])
  return steps
}

/**
 * Whether a problem of a step's job (`path: message`) is the step's own: at a key the step sets, or a required key
 * missing (the step, or the top level, can give it). Any other is the top level's, which every step inherits.
 */
function ownProblem(problem: string, step: Table): boolean {
  const [path = "", message = ""] = problem.split(/: (.*)/s)
  if (message.startsWith("missing")) return true
  const [table, key] = path.split(".") as [string, string | undefined]
  const own = step[table]
  return own !== undefined && (key === undefined || !isTable(own) || Object.hasOwn(own, key))
}

function invalid(file: string, problems: string[]): JobError {
  return new JobError(
    `${file}: the job is not valid`,
    problems,
    "Fix the keys listed above; nothing was run.",
  )
}

/** The job's top level with a step's tables laid over it, key by key; a step naming another provider starts afresh. */
function layered(raw: Table, step: Table): Table {
  const out: Table = structuredClone(raw)
  for (const key of INHERITED) {
    const own = step[key]
    if (own === undefined) continue
    const base = isTable(out[key]) ? (out[key] as Table) : {}
    const fresh = key === "provider" && isTable(own) && own.name !== undefined && own.name !== base.name
    out[key] = isTable(own) ? { ...(fresh ? {} : base), ...own } : own
  }
  return out
}

function needsOf(value: unknown, at: string, before: string[], problems: string[]): string[] {
  if (value === undefined) return []
  if (!Array.isArray(value) || !value.every((n) => typeof n === "string")) {
    problems.push(`${at}.needs: expected a list of step names, such as ["classify"]`)
    return []
  }
  const out: string[] = []
  for (const n of value as string[]) {
    if (before.includes(n)) out.push(n)
    else
      problems.push(
        `${at}.needs: "${n}" is not a step before this one (${before.length ? `before it: ${before.join(", ")}` : "it is the first"}); a step needs only steps above it in the job`,
      )
  }
  return out
}

function whenOf(value: unknown, at: string, scope: WhenScope, problems: string[]): When | undefined {
  if (value === undefined) return undefined
  if (typeof value !== "string") {
    problems.push(`${at}.when: expected an expression in quotes, such as "classify.label == 'bug'"`)
    return undefined
  }
  try {
    const when = parseWhen(value)
    problems.push(...checkWhen(when, scope).map((p) => `${at}.when: ${p}`))
    return when
  } catch (err) {
    if (!(err instanceof WhenSyntaxError)) throw err
    problems.push(`${at}.when: ${err.message}`)
    return undefined
  }
}

/**
 * The prompt's placeholders that read a step: each must be one this step needs, and a field its output has. A
 * placeholder naming no step is a row field, as in a one-step job.
 */
function readsOf(
  prompt: string,
  at: string,
  scope: WhenScope,
  tables: Table[],
  self: string | undefined,
): string[] {
  const names = new Set(
    tables.map((t) => t.name).filter((n): n is string => typeof n === "string" && n !== self),
  )
  const out: string[] = []
  for (const field of new Set([...prompt.matchAll(PLACEHOLDER)].map((m) => m[1]!))) {
    const head = field.split(".")[0]!
    if (head === "row" || !names.has(head)) continue
    if (!(head in scope.steps)) {
      out.push(
        `${at}.request.prompt: {{${field}}} reads the step ${head}, which this step does not need (add it to needs)`,
      )
      continue
    }
    try {
      out.push(
        ...checkWhen(parseWhen(field), scope).map(
          (p) => `${at}.request.prompt: {{${field}}}: ${p.replace(/^column \d+: /, "")}`,
        ),
      )
    } catch {
      // a placeholder with characters no path has: the template renders it as a row field
    }
  }
  return out
}

/** What a step's output offers later steps: its schema's fields, plain text, or (a review) what it reviews. */
function shapeOf<J extends Shaped>(step: Step<J>, shapes: Map<string, WhenFields | "text" | "any">) {
  if (step.kind === "review") return step.needs.length === 1 ? (shapes.get(step.needs[0]!) ?? "any") : "any"
  // a step whose job is not valid is reported as such; what later steps read of it is not held against them too
  if (!step.job) return "any"
  const schema = step.job.output?.schema
  return schema ? fieldsOfSchema(schema) : "text"
}
