/**
 * The job's keys as flags: `--rpm 60` sets `[limits] rpm`. The list is made from the job's own schema (job.ts), so a
 * key added there is a flag at once; test/core/job/flags.test.ts walks the schema and names the keys that have none.
 */
import { resolve } from "node:path"
import type * as v from "valibot"
import { JobError } from "../../plugins/api/errors.ts"

/** How a flag's text becomes its key's value. */
export type Kind = "text" | "number" | "switch" | "count" | "paths" | "names"

export interface Flag {
  /** The flag, without its dashes: `max-tokens`. */
  name: string
  /** The job key it sets: `request.max_tokens`; a source's key is set on every input. */
  key: string
  kind: Kind
}

/** What the command line gives: each flag's text (a switch's true or false; the repeatable ones, every value). */
export type Given = Record<string, string | string[] | boolean | undefined>

/**
 * Flags whose name is not their key's own (kebab-case, a trailing `_s` dropped): the names spool has always had,
 * the plural `plugins`, given one file a flag, `[store] url`, which is `--store` on every command, and the
 * cache's (`--no-cache`, `--cache-ttl`, `--refresh-cache`; the provider's prompt cache is `--prompt-cache`), and an embedding's `--embed-input` (`--input` is an input
 * file). `input` and `plugin` may be repeated.
 */
const NAMED: Record<string, string> = {
  "source.path": "input",
  "request.input": "embed-input",
  "provider.name": "provider",
  plugins: "plugin",
  "store.url": "store",
  "cache.enabled": "cache",
  "cache.ttl": "cache-ttl",
  "cache.refresh": "refresh-cache",
  "request.cache": "prompt-cache",
}

/** Tables whose keys would clash or mislead alone (`pricing.input` beside `--input`): their flags take its name. */
const PREFIXED = new Set(["pricing", "output"])

/** Values that are paths: relative to the working directory, as `--input` is (in a job file: to the job file). */
const PATHS = new Set(["source.path", "plugins", "output.schema"])

/** Flags given once for each value, in order: `--input a.csv --input b.csv`. */
const REPEATED = new Set(["source.path", "plugins"])

type Entries = Record<string, v.GenericSchema>

/** The kind of a schema's values, or undefined for a table (a record), which no flag sets. */
function kindOf(schema: v.GenericSchema, key: string): Kind | undefined {
  type Node = v.GenericSchema & { wrapped?: Node; options?: Node[]; item?: Node }
  if (REPEATED.has(key)) return "paths"
  let s = schema as Node
  while (s.type === "optional" && s.wrapped) s = s.wrapped
  if (s.type === "number") return "number"
  if (s.type === "boolean") return "switch"
  if (s.type === "array" && s.item?.type === "string") return "names"
  if (s.type === "union") return s.options?.some((o) => o.type === "number") ? "count" : "text"
  if (s.type === "string" || s.type === "picklist") return "text"
  return undefined
}

export function nameOf(key: string): string {
  const named = NAMED[key]
  if (named) return named
  const [table, leaf] = key.includes(".") ? (key.split(".") as [string, string]) : ["", key]
  const own = leaf.replace(/_s$/, "").replaceAll("_", "-")
  return PREFIXED.has(table) ? `${table}-${own}` : own
}

/**
 * Every key of the given tables that a flag can set, in the order of the schema. `tables` maps a table's name
 * ("" for the top level) to its entries; an entry with no kind of value a flag can give is left out.
 */
export function flagsOf(tables: Record<string, Entries>): Flag[] {
  const out: Flag[] = []
  for (const [table, entries] of Object.entries(tables))
    for (const [leaf, schema] of Object.entries(entries)) {
      const key = table ? `${table}.${leaf}` : leaf
      const kind = kindOf(schema, key)
      if (kind) out.push({ name: nameOf(key), key, kind })
    }
  return out
}

/** The value a flag's text gives its key, or undefined when the flag was not given. */
export function valueOf(flag: Flag, given: Given, cwd: string): unknown {
  const raw = given[flag.name]
  if (raw === undefined) return undefined
  if (flag.kind === "switch" || typeof raw === "boolean") return raw
  if (flag.kind === "paths") return (Array.isArray(raw) ? raw : [raw]).map((p) => resolve(cwd, p))
  if (Array.isArray(raw)) return raw
  if (flag.kind === "number") return numeric(flag.name, raw)
  if (flag.kind === "count") return raw.trim().endsWith("%") ? raw.trim() : numeric(flag.name, raw)
  if (flag.kind === "names")
    return raw
      .split(",")
      .map((n) => n.trim())
      .filter(Boolean)
  if (PATHS.has(flag.key)) return resolve(cwd, raw)
  // a shell hands `--delimiter "\t"` over as a backslash and a t: that is the tab the hints print it as
  if (flag.key === "source.delimiter" && raw === "\\t") return "\t"
  return raw
}

function numeric(flag: string, value: string): number {
  const n = Number(value)
  if (value.trim() === "" || !Number.isFinite(n))
    throw new JobError(`--${flag} must be a number, not "${value}"`)
  return n
}
