/**
 * The columns of a results export (docs/RESULTS.md): the input row's own (their kinds learned from the rows), then
 * spool's, then the output's (from the job's `[output] schema`), each with its shape, and the values of one item.
 */
import type { ExportRow } from "../ledger/types.ts"

/** A leaf's kind: what a CSV cell and a Parquet column of it hold. `json`: any value, as JSON text. */
export type Kind = "string" | "integer" | "number" | "boolean" | "json"

/** What a column holds: a leaf, a struct of named fields, a list of one shape, or an embedding's float32 list. */
export type Shape =
  | { kind: Kind }
  | { kind: "struct"; fields: { name: string; shape: Shape }[] }
  | { kind: "list"; item: Shape }
  | { kind: "vector"; dimensions: number }

/** One column of an export: its name, its shape, and where its value comes from. */
export interface Column {
  name: string
  shape: Shape
  /** input: a field of the input row; spool: one of spool's fields; output: a property of the answer (or all of it). */
  from: { part: "input" | "spool" | "output"; field: string | null }
}

/**
 * spool's own columns, in their order; `cached` only when the run used the response cache, `vector` with vectors.
 * `prompt_cache_saved_usd` and `cache_write_tokens` are the provider's prompt cache's (ResultLine's), always there:
 * a provider may cache prompts whatever the job asks (OpenAI does by itself).
 */
export const SPOOL_COLUMNS = [
  "id",
  "state",
  "attempts",
  "cost_usd",
  "prompt_cache_saved_usd",
  "cache_write_tokens",
  "cached",
  "error",
  "vector",
] as const
export type SpoolField = (typeof SPOOL_COLUMNS)[number]

const SPOOL_SHAPES: Record<Exclude<SpoolField, "vector">, Shape> = {
  id: { kind: "string" },
  state: { kind: "string" },
  attempts: { kind: "integer" },
  cost_usd: { kind: "number" },
  prompt_cache_saved_usd: { kind: "number" },
  cache_write_tokens: { kind: "integer" },
  cached: { kind: "boolean" },
  error: { kind: "string" },
}

/** What spool's columns are named when an input column already has one of their names (all of them, together). */
export const SPOOL_QUALIFIED = "spool."

/** The kind of one JSON value, or null for null. */
function kindOf(value: unknown): Kind | null {
  if (value === null || value === undefined) return null
  if (typeof value === "string") return "string"
  if (typeof value === "boolean") return "boolean"
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number"
  return "json"
}

/**
 * The input rows' columns, learned from every row an export writes: the union of their fields in the order first
 * seen, each of the one kind all its values have (integers and numbers together are numbers; anything else mixed,
 * and objects and arrays, JSON), and the length of the items' vectors.
 */
export class Learned {
  private readonly kinds = new Map<string, Set<Kind>>()
  /** The vectors' length (dimensions), or null while no item had one. */
  dimensions: number | null = null

  see(row: ExportRow, join: boolean): void {
    if (row.vector) {
      const dims = row.vector.byteLength / 4
      if (this.dimensions !== null && this.dimensions !== dims) throw mixedVectors(this.dimensions, dims, row)
      this.dimensions = dims
    }
    if (!join) return
    const data = JSON.parse(row.data) as Record<string, unknown>
    for (const [name, value] of Object.entries(data)) {
      let kinds = this.kinds.get(name)
      if (!kinds) this.kinds.set(name, (kinds = new Set()))
      const kind = kindOf(value)
      if (kind) kinds.add(kind)
    }
  }

  columns(): Column[] {
    return [...this.kinds].map(([name, kinds]) => ({
      name,
      shape: { kind: merged(kinds) },
      from: { part: "input", field: name },
    }))
  }
}

/** Vectors of two lengths in one run: a Parquet list column must have one. */
export function mixedVectors(dims: number, other: number, row: { key: string }): Error {
  return new Error(
    `the run's vectors have different lengths: ${dims} and ${other} (item ${row.key}); an export writes one length`,
  )
}

function merged(kinds: Set<Kind>): Kind {
  if (kinds.size === 0) return "string"
  if (kinds.size === 1) return [...kinds][0]!
  if (kinds.size === 2 && kinds.has("integer") && kinds.has("number")) return "number"
  return "json"
}

const isObject = (x: unknown): x is Record<string, unknown> =>
  typeof x === "object" && x !== null && !Array.isArray(x)

/** The shape a JSON Schema describes: its one type (`["string", "null"]` is a string); JSON when it has no one type. */
export function shapeOf(schema: unknown): Shape {
  if (!isObject(schema)) return { kind: "json" }
  let type = schema.type
  if (Array.isArray(type)) {
    const some = type.filter((t) => t !== "null")
    type = some.length === 1 ? some[0] : undefined
  }
  if (type === undefined && Array.isArray(schema.enum) && schema.enum.every((e) => typeof e === "string"))
    return { kind: "string" }
  switch (type) {
    case "string":
    case "integer":
    case "number":
    case "boolean":
      return { kind: type }
    case "object": {
      const props = schema.properties
      if (!isObject(props) || Object.keys(props).length === 0) return { kind: "json" }
      return {
        kind: "struct",
        fields: Object.entries(props).map(([name, s]) => ({ name, shape: shapeOf(s) })),
      }
    }
    case "array":
      return isObject(schema.items) ? { kind: "list", item: shapeOf(schema.items) } : { kind: "json" }
    default:
      return { kind: "json" }
  }
}

export interface Plan {
  input: Column[]
  /** Whether the run used the response cache: the `cached` column is written. */
  cached: boolean
  /** The vectors' length, or null: no `vector` column. */
  dimensions: number | null
  /** The job's output schema, or undefined: one `output` column. */
  schema: Record<string, unknown> | undefined
  /** The output columns' prefix (`--prefix`); undefined: `output.` (and `output` without a schema). */
  prefix: string | undefined
}

/** A clash of names that the prefix did not resolve. */
export class Clash extends Error {
  constructor(
    readonly column: string,
    readonly between: string,
  ) {
    super(`two columns would be named "${column}": ${between}`)
  }
}

/**
 * The export's columns in their order: the input's, spool's, the output's. spool's are named as they are unless an
 * input column has one of their names: then all of them are `spool.id`, `spool.state`, … The output's are named
 * `output.NAME` or, with a prefix P, `P` + NAME. A name that still clashes throws a Clash.
 */
export function columnsOf(plan: Plan): Column[] {
  const input = plan.input
  const taken = new Set(input.map((c) => c.name))
  const fields = SPOOL_COLUMNS.filter(
    (f) => (f !== "cached" || plan.cached) && (f !== "vector" || plan.dimensions !== null),
  )
  const qualify = fields.some((f) => taken.has(f))
  const spool: Column[] = fields.map((f) => ({
    name: qualify ? `${SPOOL_QUALIFIED}${f}` : f,
    shape: f === "vector" ? { kind: "vector", dimensions: plan.dimensions! } : SPOOL_SHAPES[f],
    from: { part: "spool", field: f },
  }))
  const props =
    plan.schema?.type === "object" && isObject(plan.schema.properties) ? plan.schema.properties : {}
  const names = Object.keys(props)
  const output: Column[] =
    plan.schema && names.length
      ? names.map((name) => ({
          name: `${plan.prefix ?? "output."}${name}`,
          shape: shapeOf(props[name]),
          from: { part: "output", field: name },
        }))
      : [
          {
            name: `${plan.prefix ?? ""}output`,
            shape: plan.schema ? { kind: "json" } : { kind: "string" },
            from: { part: "output", field: null },
          },
        ]
  return distinct([...input, ...spool, ...output])
}

/** The columns as they are, when no two of them have one name; else a Clash naming the first two that do. */
export function distinct(all: Column[]): Column[] {
  const seen = new Map<string, Column>()
  for (const c of all) {
    const before = seen.get(c.name)
    if (before) throw new Clash(c.name, `${describe(before)} and ${describe(c)}`)
    seen.set(c.name, c)
  }
  return all
}

function describe(c: Column): string {
  if (c.from.part === "input") return `an input column`
  if (c.from.part === "spool") return `spool's ${c.from.field}`
  return c.from.field === null ? "the output" : `the output's property ${c.from.field}`
}

/** An item's fields that columns take their values from. */
export interface Values {
  input: Record<string, unknown> | null
  spool: Record<SpoolField, unknown>
  /** The parsed answer (an object with a schema), the answer's text without one, or null. */
  output: unknown
}

/** The value of one column for an item, as it is (undefined: none). */
export function valueOf(c: Column, v: Values): unknown {
  if (c.from.part === "input") return v.input?.[c.from.field!]
  if (c.from.part === "spool") return v.spool[c.from.field as SpoolField]
  if (c.from.field === null) return v.output
  return isObject(v.output) ? v.output[c.from.field] : undefined
}

/**
 * A value as a column of `shape` holds it in Parquet, or null when it does not fit (an answer left for review that
 * does not follow the schema; a row whose field changed kind since its kind was learned is refused before).
 */
export function fit(shape: Shape, value: unknown): unknown {
  if (value === null || value === undefined) return null
  switch (shape.kind) {
    case "string":
      return typeof value === "string" ? value : null
    case "integer":
      return typeof value === "number" && Number.isInteger(value) ? BigInt(value) : null
    case "number":
      return typeof value === "number" ? value : null
    case "boolean":
      return typeof value === "boolean" ? value : null
    case "json":
      return JSON.stringify(value)
    case "vector":
      return value
    case "struct": {
      if (!isObject(value)) return null
      const out: Record<string, unknown> = {}
      for (const f of shape.fields) out[f.name] = fit(f.shape, value[f.name])
      return out
    }
    case "list":
      return Array.isArray(value) ? value.map((x) => fit(shape.item, x)) : null
  }
}

/** A value as a CSV cell: text as it is, other scalars as JSON has them, objects and arrays as JSON text. */
export function cell(value: unknown): string {
  if (value === null || value === undefined) return ""
  if (typeof value === "string") return value
  if (typeof value === "number" || typeof value === "boolean") return String(value)
  if (value instanceof Float32Array) return JSON.stringify(Array.from(value))
  return JSON.stringify(value)
}
