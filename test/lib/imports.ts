/**
 * The import graph of src/, and the dependency rule docs/ARCHITECTURE.md opens with: which room may import which,
 * and no cycles. test/architecture.test.ts checks the real tree with these; they are tested on made-up graphs too,
 * so a checker that stopped finding anything would fail.
 */
import { readdirSync, readFileSync } from "node:fs"
import { dirname, join, relative, resolve } from "node:path"

/** file (relative to the root, with `/`) → the files and modules it imports (`bun:sqlite`, `valibot`, …) */
export type Graph = Map<string, string[]>

const IMPORT =
  /(?:^|[\s;])(?:import|export)\s[^"'`]*?from\s*["']([^"']+)["']|import\s*\(\s*["']([^"']+)["']\s*\)|^import\s*["']([^"']+)["']/gm

/** Every import of every .ts file under `dir` (relative specifiers resolved to files relative to `root`). */
export function graph(root: string, dir = "src"): Graph {
  const g: Graph = new Map()
  const walk = (d: string) => {
    for (const entry of readdirSync(join(root, d), { withFileTypes: true })) {
      const path = `${d}/${entry.name}`
      if (entry.isDirectory()) walk(path)
      else if (entry.name.endsWith(".ts")) g.set(path, importsOf(root, path))
    }
  }
  walk(dir)
  return g
}

function importsOf(root: string, file: string): string[] {
  const text = readFileSync(join(root, file), "utf8")
  const out: string[] = []
  for (const m of text.matchAll(IMPORT)) {
    const spec = m[1] ?? m[2] ?? m[3]
    if (!spec) continue
    out.push(
      spec.startsWith(".")
        ? relative(root, resolve(root, dirname(file), spec))
            .split("\\")
            .join("/")
        : spec,
    )
  }
  return [...new Set(out)]
}

/** Each import cycle once, as the files around it (the first file repeated at the end). */
export function cycles(g: Graph): string[][] {
  const found: string[][] = []
  const state = new Map<string, "open" | "done">()
  const stack: string[] = []
  const visit = (file: string) => {
    state.set(file, "open")
    stack.push(file)
    for (const next of g.get(file) ?? []) {
      if (!g.has(next)) continue
      const s = state.get(next)
      if (s === "open") found.push([...stack.slice(stack.indexOf(next)), next])
      else if (s === undefined) visit(next)
    }
    stack.pop()
    state.set(file, "done")
  }
  for (const file of [...g.keys()].sort()) if (!state.has(file)) visit(file)
  return found
}

/** A room: the files whose path starts with `prefix` (a folder ending in `/`, or one file). */
export interface Room {
  name: string
  prefix: string
  /** rooms (by name) this room may import, besides itself */
  may: string[]
}

/** The room a file belongs to: the one with the longest matching prefix. */
export function roomOf(rooms: Room[], file: string): Room | undefined {
  let best: Room | undefined
  for (const r of rooms)
    if ((file === r.prefix || file.startsWith(r.prefix)) && r.prefix.length > (best?.prefix.length ?? -1))
      best = r
  return best
}

/** Every import that breaks the rule, as "from → to (room → room)"; files in no room are a break too. */
export function breaches(g: Graph, rooms: Room[]): string[] {
  const out: string[] = []
  for (const [file, imports] of g) {
    const from = roomOf(rooms, file)
    if (!from) {
      out.push(`${file} is in no room`)
      continue
    }
    for (const target of imports) {
      if (!g.has(target)) continue
      const to = roomOf(rooms, target)
      if (!to) continue
      if (to.name !== from.name && !from.may.includes(to.name))
        out.push(`${file} → ${target} (${from.name} may not import ${to.name})`)
    }
  }
  return out.sort()
}

/** The files that import a module (e.g. `bun:sqlite`) outside the rooms allowed to. */
export function moduleUsers(g: Graph, module: string, allowed: string[]): string[] {
  return [...g]
    .filter(([file, imports]) => imports.includes(module) && !allowed.some((p) => file.startsWith(p)))
    .map(([file]) => file)
    .sort()
}
