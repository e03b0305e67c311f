/**
 * The one list of sources and providers, built-in and loaded from plugin files, and the only place a plugin
 * is resolved by name.
 */
import { existsSync } from "node:fs"
import { extname } from "node:path"
import * as v from "valibot"
import { JobError } from "./api/errors.ts"
import * as api from "./api/define.ts"
import type { Plugin, Provider, Source } from "./api/define.ts"
import jsonl from "../sources/jsonl.ts"
import { csv, tsv } from "../sources/csv.ts"
import parquet from "../sources/parquet.ts"
import openai from "./providers/openai/openai.ts"
import anthropic from "./providers/anthropic/anthropic.ts"
import openaiCompatible from "./providers/openai-compatible/openai-compatible.ts"
import {
  addProfile,
  profileProblems,
  profiles,
  type Profile,
} from "./providers/openai-compatible/profiles.ts"
import mock from "./providers/mock/mock.ts"
import gemini from "./providers/gemini/gemini.ts"

/** Where a source or provider came from: "built-in", or the plugin file's path. */
export type Origin = string

export const BUILTIN: Origin = "built-in"

const sources = new Map<string, { source: Source; origin: Origin }>()
const providers = new Map<string, { provider: Provider; origin: Origin }>()
for (const s of [jsonl, csv, tsv, parquet] as Source[]) sources.set(s.name, { source: s, origin: BUILTIN })
for (const p of [openai, anthropic, openaiCompatible, mock, gemini] as Provider[])
  providers.set(p.name, { provider: p, origin: BUILTIN })

export function provider(name: string): Provider {
  const found = providers.get(name)
  if (found) return found.provider
  throw new JobError(
    `provider.name: unknown provider "${name}"`,
    [],
    `Known providers: ${[...providers.keys()].join(", ")}. A plugin's provider needs its file in plugins = [...].`,
  )
}

/** The source for a file: named by `format`, or chosen by the file's extension. */
export function source(path: string, format: string | undefined, at = "source"): Source {
  if (format) {
    const found = sources.get(format)
    if (found) return found.source
    throw new JobError(
      `${at}.format: unknown format "${format}"`,
      [],
      `Known formats: ${[...sources.keys()].join(", ")}. A plugin's source needs its file in plugins = [...].`,
    )
  }
  const ext = extname(path).toLowerCase()
  for (const { source } of sources.values()) if (ext && source.extensions.includes(ext)) return source
  const known = [...sources.values()].flatMap((s) => s.source.extensions).join(", ")
  throw new JobError(
    `${at}.path: cannot tell the format of ${path} from its name`,
    [],
    `Use a file ending in ${known}, or set format = "…" in the job (${[...sources.keys()].join(", ")}).`,
  )
}

/**
 * Validates a plugin's options, naming each problem by its key path under `prefix`. Keys the schema does not
 * name are refused even when the schema is a plain `v.object` (which would drop them silently).
 */
export function options<S extends v.GenericSchema>(
  schema: S,
  value: unknown,
  prefix: string,
): v.InferOutput<S> {
  const given = (value ?? {}) as Record<string, unknown>
  const entries = (schema as { entries?: Record<string, unknown> }).entries
  const unknown = entries ? Object.keys(given).filter((k) => !(k in entries)) : []
  const parsed = v.safeParse(schema, given)
  const problems = [
    ...unknown.map((k) => `${prefix}.${k}: unknown key (check its spelling)`),
    ...(parsed.success
      ? []
      : // a strict schema's own unknown-key issue is the one listed above: each key once
        parsed.issues
          .filter(
            (i) =>
              !(i.expected === "never" && i.path?.length === 1 && unknown.includes(String(i.path[0]?.key))),
          )
          .map((i) => {
            const path = [prefix, ...(i.path?.map((p) => String(p.key)) ?? [])].join(".")
            return `${path}: ${i.expected === "never" ? "unknown key (check its spelling)" : i.message}`
          })),
  ]
  if (problems.length === 0 && parsed.success) return parsed.output
  throw new JobError("the job is not valid", problems, "Fix the keys listed above; nothing was run.")
}

// ---- plugin files

let hooked = false

/**
 * Makes `spool/plugin` (and `valibot`, which plugins use for option schemas) resolve to this binary's own
 * modules, so a plugin file needs no install: its errors are our classes and its schemas our valibot.
 */
function hook(): void {
  if (hooked) return
  hooked = true
  Bun.plugin({
    name: "spool",
    setup(build) {
      build.module("spool/plugin", () => ({ exports: { ...api }, loader: "object" }))
      build.module("valibot", () => ({ exports: { ...v }, loader: "object" }))
    },
  })
}

const NAME = /^[a-z][a-z0-9-]{0,39}$/

function isSchema(value: unknown): boolean {
  return typeof value === "object" && value !== null && (value as { kind?: unknown }).kind === "schema"
}

/** What is wrong with a source's shape, or nothing. */
function sourceProblems(s: Record<string, unknown>): string[] {
  const problems: string[] = []
  if (typeof s.name !== "string" || !NAME.test(s.name))
    problems.push("name must be lowercase letters, digits or dashes")
  if (!Array.isArray(s.extensions) || s.extensions.some((e) => typeof e !== "string" || !e.startsWith(".")))
    problems.push('extensions must be a list of endings with their dot, such as [".txt"]')
  if (!isSchema(s.options)) problems.push("options must be a valibot schema, such as v.object({})")
  if (typeof s.read !== "function") problems.push("read must be an async generator method")
  return problems
}

function providerProblems(p: Record<string, unknown>): string[] {
  const problems: string[] = []
  if (typeof p.name !== "string" || !NAME.test(p.name))
    problems.push("name must be lowercase letters, digits or dashes")
  if (!isSchema(p.options)) problems.push("options must be a valibot schema, such as v.object({})")
  if (p.keyEnv !== undefined && typeof p.keyEnv !== "string")
    problems.push("keyEnv must be an environment variable name, or undefined")
  if (typeof p.create !== "function") problems.push("create must be a method that returns a client")
  return problems
}

type Members = Record<"sources" | "providers" | "profiles", Record<string, unknown>[]>

/** Splits a default export into sources, providers and batch profiles, telling them apart by shape. */
function members(value: unknown): Members | null {
  if (typeof value !== "object" || value === null) return null
  const o = value as Record<string, unknown>
  // by the keys only one kind has, so a source with a broken `read` is reported as a source of the wrong shape
  if ("read" in o || "extensions" in o) return { sources: [o], providers: [], profiles: [] }
  if ("create" in o || "keyEnv" in o) return { sources: [], providers: [o], profiles: [] }
  const plugin = o as Plugin
  const lists = [plugin.sources, plugin.providers, plugin.profiles]
  if (lists.every((l) => l === undefined) || lists.some((l) => l !== undefined && !Array.isArray(l)))
    return null
  return {
    sources: (plugin.sources ?? []) as unknown as Record<string, unknown>[],
    providers: (plugin.providers ?? []) as unknown as Record<string, unknown>[],
    profiles: (plugin.profiles ?? []) as unknown as Record<string, unknown>[],
  }
}

/** The plugin files loaded, each once. */
const loaded = new Set<string>()

/**
 * Loads plugin files (absolute paths) and registers what they export. Every problem names its file; nothing
 * is registered from a file that has one. Loading the same file twice is a no-op.
 */
export async function load(files: string[]): Promise<void> {
  hook()
  for (const file of files) {
    const fail = (problem: string, hint: string): never => {
      throw new JobError(`plugin ${file}: ${problem}`, [], hint)
    }
    if (loaded.has(file)) continue
    if (!existsSync(file)) fail("no such file", "Paths in plugins = [...] are relative to the job file.")
    if (![".ts", ".js", ".mts", ".mjs"].includes(extname(file)))
      fail("not a .ts or .js file", "A plugin is one TypeScript or JavaScript module.")
    let mod: { default?: unknown }
    try {
      mod = (await import(file)) as { default?: unknown }
    } catch (err) {
      fail(`failed to load: ${(err as Error).message ?? String(err)}`, "Fix the error in the plugin file.")
      return
    }
    const found = members(mod.default)
    if (!found)
      fail(
        "its default export is not a source, a provider or a plugin",
        "Export default defineSource(…), defineProvider(…) or definePlugin({ sources, providers, profiles }) from spool/plugin.",
      )
    const { sources: ss, providers: ps, profiles: bs } = found!
    const problems = [
      ...ss.flatMap((s) => sourceProblems(s).map((p) => `source ${String(s.name ?? "?")}: ${p}`)),
      ...ps.flatMap((p) => providerProblems(p).map((q) => `provider ${String(p.name ?? "?")}: ${q}`)),
      ...bs.flatMap((b) => profileProblems(b).map((q) => `profile ${String(b.name ?? "?")}: ${q}`)),
      ...bs
        .filter((b, i) => bs.findIndex((c) => c.name === b.name) !== i)
        .map((b) => `profile ${String(b.name)}: the file gives its name twice`),
    ]
    if (problems.length)
      throw new JobError(`plugin ${file}: wrong shape`, problems, "See docs/PLUGINS.md for the contract.")
    const clash = (kind: string, taken: { origin: Origin } | undefined, name: unknown) => {
      if (taken)
        fail(
          `${kind} "${String(name)}" clashes with the ${taken.origin === BUILTIN ? "built-in" : `one in ${taken.origin}`} of that name`,
          `Give the plugin's ${kind} another name.`,
        )
    }
    for (const s of ss) clash("source", sources.get(s.name as string), s.name)
    for (const p of ps) clash("provider", providers.get(p.name as string), p.name)
    for (const s of ss) sources.set(s.name as string, { source: s as unknown as Source, origin: file })
    for (const p of ps) providers.set(p.name as string, { provider: p as unknown as Provider, origin: file })
    for (const b of bs) addProfile(b)
    loaded.add(file)
  }
}

// ---- listing

export interface OptionInfo {
  name: string
  type: string
  required: boolean
  default?: unknown
}

export interface Listed {
  kind: "source" | "provider"
  name: string
  origin: Origin
  extensions?: string[]
  keyEnv?: string | null
  options: OptionInfo[]
  /**
   * openai-compatible's batch profiles, by name, with every setting (`[provider.options.batch] profile = …`): the
   * built-in ones, then those the job's plugins added.
   */
  profiles?: Record<string, Readonly<Profile>>
}

function describe(schema: unknown): OptionInfo[] {
  const entries = (schema as { entries?: Record<string, v.GenericSchema> }).entries ?? {}
  return Object.entries(entries).map(([name, entry]) => {
    const wrapped = entry as unknown as {
      type: string
      wrapped?: { type: string; pipe?: unknown }
      default?: unknown
    }
    const optional = ["optional", "nullish", "exact_optional"].includes(wrapped.type)
    const inner = optional && wrapped.wrapped ? wrapped.wrapped : wrapped
    const info: OptionInfo = { name, type: inner.type, required: !optional }
    const fallback = optional ? v.getDefault(entry as never) : undefined
    if (fallback !== undefined) info.default = fallback
    return info
  })
}

/** Every source and provider, built-in first, with its options. */
export function list(): Listed[] {
  return [
    ...[...sources.values()].map(({ source, origin }): Listed => ({
      kind: "source",
      name: source.name,
      origin,
      extensions: source.extensions,
      options: describe(source.options),
    })),
    ...[...providers.values()].map(({ provider, origin }): Listed => ({
      kind: "provider",
      name: provider.name,
      origin,
      keyEnv: provider.keyEnv ?? null,
      options: describe(provider.options),
      ...(provider === openaiCompatible && { profiles: profiles() }),
    })),
  ]
}
