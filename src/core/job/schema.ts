/**
 * Structured output: the job's JSON Schema, checked before any call against what the provider accepts, and every
 * answer checked against it. The gates an answer can fail are named for people: not JSON, a schema violation at a
 * path, refused, truncated at max_tokens.
 */
import Ajv from "ajv"
import type { Reply } from "../../plugins/api/define.ts"
import { JobError } from "../../plugins/api/errors.ts"
import type { Job } from "./job.ts"

export type JsonSchema = Record<string, unknown>

const isObject = (x: unknown): x is Record<string, unknown> =>
  typeof x === "object" && x !== null && !Array.isArray(x)

/**
 * What OpenAI's strict structured outputs refuse, each by path: the root must be an object; every object must set
 * `additionalProperties: false` and list every property in `required` (an optional field is written as required and
 * nullable: `"type": ["string", "null"]`).
 */
export function strictProblems(schema: JsonSchema, at = "output.schema"): string[] {
  const problems: string[] = []
  if (schema.type !== "object") problems.push(`${at}: the root must be "type": "object"`)
  const walk = (node: unknown, path: string) => {
    if (!isObject(node)) return
    const properties = isObject(node.properties) ? node.properties : undefined
    const isObj =
      node.type === "object" || (Array.isArray(node.type) && node.type.includes("object")) || properties
    if (isObj) {
      if (node.additionalProperties !== false)
        problems.push(
          `${path}: set "additionalProperties": false (strict structured outputs allow no other keys)`,
        )
      const required = new Set(Array.isArray(node.required) ? node.required : [])
      for (const key of Object.keys(properties ?? {}))
        if (!required.has(key))
          problems.push(
            `${path}.properties.${key}: must be listed in "required" (for an optional field, make its type nullable)`,
          )
    }
    for (const [key, value] of Object.entries(properties ?? {})) walk(value, `${path}.properties.${key}`)
    if (isObject(node.items)) walk(node.items, `${path}.items`)
    for (const list of ["anyOf", "allOf", "oneOf"] as const)
      if (Array.isArray(node[list]))
        (node[list] as unknown[]).forEach((n, i) => walk(n, `${path}.${list}.${i}`))
    for (const defs of ["$defs", "definitions"] as const)
      if (isObject(node[defs]))
        for (const [key, value] of Object.entries(node[defs] as Record<string, unknown>))
          walk(value, `${path}.${defs}.${key}`)
  }
  walk(schema, at)
  return problems
}

/** What any provider needs: a JSON Schema that compiles, with an object at its root (Anthropic's tool input). */
export function basicProblems(schema: JsonSchema, at = "output.schema"): string[] {
  const problems: string[] = []
  if (schema.type !== "object") problems.push(`${at}: the root must be "type": "object"`)
  try {
    new Ajv({ strict: false }).compile(schema)
  } catch (err) {
    problems.push(`${at}: not a usable JSON Schema: ${(err as Error).message}`)
  }
  return problems
}

export type Gate = { ok: true; value: unknown } | { ok: false; gate: string }

/** Checks one answer: whole (not truncated, not refused), and, with a schema, JSON valid against it. */
export function gate(reply: Reply, validate: ((value: unknown) => string | undefined) | undefined): Gate {
  if (reply.finish === "length") return { ok: false, gate: "truncated at max_tokens" }
  if (reply.finish === "refusal") return { ok: false, gate: `refused: ${reply.text.slice(0, 200)}` }
  if (!validate) return { ok: true, value: reply.text }
  let value: unknown
  try {
    value = JSON.parse(reply.text)
  } catch {
    return { ok: false, gate: `not JSON: ${reply.text.slice(0, 120)}` }
  }
  const violation = validate(value)
  return violation ? { ok: false, gate: violation } : { ok: true, value }
}

/**
 * An answer in the ledger's terms, for a direct call and a batch line alike: its usage, and either its output (every
 * gate passed) or why it failed one (an `output` error, with the answer kept for review).
 */
export function judge(
  reply: Reply,
  validate: ((value: unknown) => string | undefined) | undefined,
):
  | { ok: true; usage: Usage; output: string }
  | { ok: false; usage: Usage; failed: { errorClass: "output"; error: string; output: string } } {
  const usage = {
    status: 200,
    inputTokens: reply.usage.input_tokens,
    outputTokens: reply.usage.output_tokens,
    cachedTokens: reply.usage.cached_input_tokens ?? 0,
    writeTokens: reply.usage.cache_write_tokens ?? 0,
  }
  const checked = gate(reply, validate)
  if (checked.ok) return { ok: true, usage, output: reply.text }
  return { ok: false, usage, failed: { errorClass: "output", error: checked.gate, output: reply.text } }
}

type Usage = {
  status: number
  inputTokens: number
  outputTokens: number
  cachedTokens: number
  writeTokens: number
}

/** A validator that names the first violation: "schema violation at /label: must be equal to one of …". */
export function validator(schema: JsonSchema): (value: unknown) => string | undefined {
  const check = new Ajv({ strict: false, allErrors: false }).compile(schema)
  return (value) => {
    if (check(value)) return undefined
    const e = check.errors?.[0]
    const where = e?.instancePath || "/"
    const extra =
      e?.keyword === "enum"
        ? `: ${(e.params as { allowedValues: unknown[] }).allowedValues.map((x) => JSON.stringify(x)).join(", ")}`
        : e?.keyword === "additionalProperties"
          ? ` (${JSON.stringify((e.params as { additionalProperty: string }).additionalProperty)})`
          : ""
    return `schema violation at ${where}: ${e?.message ?? "invalid"}${extra}`
  }
}

/**
 * Refuses, before any call, a job's schema that its provider cannot use: OpenAI (and servers that copy its strict
 * mode) refuse one strict mode cannot enforce; every provider needs an object at the root.
 */
export function assertUsable(job: Job): void {
  if (!job.output) return
  const strict = job.provider.name === "openai" || job.provider.name === "openai-compatible"
  const problems = [
    ...new Set([...basicProblems(job.output.schema), ...(strict ? strictProblems(job.output.schema) : [])]),
  ]
  if (problems.length)
    throw new JobError(
      "the output schema cannot be used",
      problems,
      "Fix the schema listed above; nothing was run.",
    )
}
