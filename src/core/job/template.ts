/** `{{field}}` prompt templates, parsed once and rendered per row. */
import type { Request } from "../../plugins/api/define.ts"
import type { Job } from "./job.ts"

type Part = string | { field: string; path: string[] }

export interface Template {
  source: string
  parts: Part[]
  /** Every distinct placeholder, in order of first use. */
  fields: string[]
}

const PLACEHOLDER = /\{\{\s*([^{}\s]+)\s*\}\}/g

export function parse(source: string): Template {
  const parts: Part[] = []
  const fields: string[] = []
  let last = 0
  for (const m of source.matchAll(PLACEHOLDER)) {
    const field = m[1] as string
    if (m.index > last) parts.push(source.slice(last, m.index))
    parts.push({ field, path: field.split(".") })
    if (!fields.includes(field)) fields.push(field)
    last = m.index + m[0].length
  }
  if (last < source.length) parts.push(source.slice(last))
  return { source, parts, fields }
}

/**
 * A field of the row. `row.x` is the row's `x` (a pipeline step's prompt names the row so, beside `classify.label`),
 * unless the row has a field `row` of its own.
 */
export function lookup(row: Record<string, unknown>, path: string[]): unknown {
  if (path[0] === "row" && path.length > 1 && !Object.hasOwn(row, "row")) path = path.slice(1)
  let value: unknown = row
  for (const key of path) {
    if (value === null || typeof value !== "object" || !Object.hasOwn(value, key)) return undefined
    value = (value as Record<string, unknown>)[key]
  }
  return value
}

/** Whether the row has every field the template names. */
export function missing(template: Template, row: Record<string, unknown>): string[] {
  return template.fields.filter((f) => lookup(row, f.split(".")) === undefined)
}

/** Renders the template for a row; returns the missing fields instead when any is absent. */
export function render(template: Template, row: Record<string, unknown>): string | { missing: string[] } {
  let out = ""
  let absent: string[] | undefined
  for (const part of template.parts) {
    if (typeof part === "string") {
      out += part
      continue
    }
    const value = lookup(row, part.path)
    if (value === undefined) {
      ;(absent ??= []).push(part.field)
      continue
    }
    out += typeof value === "string" ? value : JSON.stringify(value)
  }
  return absent ? { missing: absent } : out
}

/**
 * The neutral request for one item (its row as JSON text): the job's request with the row's prompt; or, when the row
 * cannot fill every placeholder, why (the item fails with it, as a `template` error). With `cache` (engine/prefix.ts),
 * the request says where its shared prefix ends, for the provider's prompt cache.
 */
export function requestOf(
  job: Job,
  prompt: Template,
  data: string,
  cache?: { of(row: Record<string, unknown>, prompt: string): Request["cache"] },
): Request | { unfilled: string } {
  const row = JSON.parse(data) as Record<string, unknown>
  const text = render(prompt, row)
  if (typeof text !== "string") {
    const fields = text.missing.map((f) => `"${f}"`).join(", ")
    const s = text.missing.length > 1 ? "s" : ""
    return { unfilled: `the row has no field ${fields} for the prompt's placeholder${s}` }
  }
  const { request } = job
  return {
    system: request.system,
    prompt: text,
    max_tokens: request.max_tokens,
    temperature: request.temperature,
    params: request.params,
    schema: job.output,
    ...(cache && { cache: cache.of(row, text) }),
  }
}
