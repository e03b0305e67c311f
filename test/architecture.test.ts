/** The dependency rule of docs/ARCHITECTURE.md, checked on src/'s import graph: who may import whom, and no cycles. */
import { describe, expect, test } from "bun:test"
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { breaches, cycles, graph, moduleUsers, roomOf, type Graph, type Room } from "./lib/imports.ts"

const root = join(import.meta.dir, "..")

/** The rule, as docs/ARCHITECTURE.md states it (its first list); each room may also import itself. */
export const ROOMS: Room[] = [
  { name: "plugin api", prefix: "src/plugins/api/", may: [] },
  { name: "sources", prefix: "src/sources/", may: ["plugin api"] },
  { name: "openai", prefix: "src/plugins/providers/openai/", may: ["plugin api"] },
  { name: "anthropic", prefix: "src/plugins/providers/anthropic/", may: ["plugin api"] },
  {
    name: "openai-compatible",
    prefix: "src/plugins/providers/openai-compatible/",
    may: ["plugin api", "openai"],
  },
  { name: "mock", prefix: "src/plugins/providers/mock/", may: ["plugin api"] },
  { name: "gemini", prefix: "src/plugins/providers/gemini/", may: ["plugin api"] },
  {
    name: "registry",
    prefix: "src/plugins/registry.ts",
    may: ["plugin api", "sources", "openai", "anthropic", "openai-compatible", "mock", "gemini", "base"],
  },
  { name: "base", prefix: "src/core/base/", may: ["plugin api"] },
  { name: "job", prefix: "src/core/job/", may: ["base", "plugin api"] },
  { name: "ledger", prefix: "src/core/ledger/", may: ["base", "job", "plugin api"] },
  { name: "report", prefix: "src/core/report/", may: ["ledger", "job", "base", "plugin api", "registry"] },
  {
    name: "engine",
    prefix: "src/core/engine/",
    may: ["ledger", "job", "report", "base", "plugin api", "registry"],
  },
  {
    name: "front doors",
    prefix: "src/cli",
    may: ["engine", "report", "ledger", "job", "base", "plugin api", "registry", "server"],
  },
  { name: "main", prefix: "src/main.ts", may: ["front doors"] },
  {
    name: "server",
    prefix: "src/serve.ts",
    may: ["engine", "report", "ledger", "job", "base", "plugin api", "page"],
  },
  { name: "page", prefix: "src/page", may: ["report", "ledger", "job", "base", "plugin api"] },
]

/** Where SQL may be written: the SQLite driver's folder, and the PostgreSQL driver's. */
const SQLITE_DRIVER = "src/core/ledger/sqlite/"
const POSTGRES_DRIVER = "src/core/ledger/postgres/"

describe("the dependency rule", () => {
  const g = graph(root)

  test("every file of src/ is in a room, and every import goes where the rule lets it", () => {
    expect(g.size).toBeGreaterThan(30)
    expect(breaches(g, ROOMS)).toEqual([])
  })

  test("src/ has no import cycle", () => {
    expect(cycles(g)).toEqual([])
  })

  test("only the SQLite driver imports bun:sqlite; the engine, report, server and page reach the ledger through its interface", () => {
    expect(moduleUsers(g, "bun:sqlite", [SQLITE_DRIVER])).toEqual([])
    const outside = [...g]
      .filter(([file]) => !file.startsWith("src/core/ledger/"))
      .flatMap(([file, imports]) =>
        imports.filter((i) => i.startsWith(SQLITE_DRIVER)).map((i) => `${file} → ${i}`),
      )
    expect(outside).toEqual([])
  })

  test('only the PostgreSQL driver uses Bun.SQL (import { SQL } from "bun")', () => {
    expect(moduleUsers(g, "bun", [POSTGRES_DRIVER])).toEqual([])
    const global = [...g.keys()].filter(
      (file) =>
        !file.startsWith(POSTGRES_DRIVER) && /\bBun\.SQL\b/.test(readFileSync(join(root, file), "utf8")),
    )
    expect(global).toEqual([])
  })

  test("the plugin API imports no file of spool outside itself", () => {
    const api = [...g].filter(([file]) => file.startsWith("src/plugins/api/"))
    expect(api.length).toBeGreaterThan(0)
    expect(
      api.flatMap(([, imports]) =>
        imports.filter((i) => i.startsWith("src/") && !i.startsWith("src/plugins/api/")),
      ),
    ).toEqual([])
  })

  test("no file of src/ is over 600 lines", () => {
    const long = [...g.keys()]
      .map((file) => ({ file, lines: readFileSync(join(root, file), "utf8").split("\n").length }))
      .filter((f) => f.lines > 600)
    expect(long).toEqual([])
  })

  test("docs/ARCHITECTURE.md opens with this rule: each room's line names what it may import", () => {
    const doc = readFileSync(join(root, "docs/ARCHITECTURE.md"), "utf8")
    const rule = doc.slice(0, doc.indexOf("\n## ", doc.indexOf("## Who may import whom") + 1))
    const lines = rule.split("\n- ")
    const wrong = ROOMS.flatMap((room) => {
      const line = lines.find((l) => l.startsWith(`\`${room.prefix}\``))
      if (!line) return [`no line for ${room.prefix}`]
      return room.may.filter((m) => !line.includes(m)).map((m) => `${room.prefix}'s line does not name ${m}`)
    })
    expect(wrong).toEqual([])
  })
})

describe("the checker itself", () => {
  const made = (edges: Record<string, string[]>): Graph => new Map(Object.entries(edges))

  test("finds a cycle of three files and one of two, once each, and none in a tree", () => {
    const g = made({
      "a.ts": ["b.ts"],
      "b.ts": ["c.ts"],
      "c.ts": ["a.ts"],
      "d.ts": ["e.ts"],
      "e.ts": ["d.ts", "x"],
    })
    expect(cycles(g)).toEqual([
      ["a.ts", "b.ts", "c.ts", "a.ts"],
      ["d.ts", "e.ts", "d.ts"],
    ])
    expect(cycles(made({ "a.ts": ["b.ts", "c.ts"], "b.ts": ["c.ts"], "c.ts": [] }))).toEqual([])
  })

  test("reports an import a room may not make, and a file in no room, and allows the ones it may", () => {
    const rooms: Room[] = [
      { name: "low", prefix: "src/low/", may: [] },
      { name: "high", prefix: "src/high/", may: ["low"] },
    ]
    const g = made({
      "src/low/a.ts": ["src/high/b.ts"],
      "src/high/b.ts": ["src/low/a.ts", "src/high/c.ts"],
      "src/high/c.ts": [],
      "src/stray.ts": [],
    })
    expect(breaches(g, rooms)).toEqual([
      "src/low/a.ts → src/high/b.ts (low may not import high)",
      "src/stray.ts is in no room",
    ])
    expect(roomOf(rooms, "src/high/c.ts")?.name).toBe("high")
  })

  test("reads static, type-only, re-export and dynamic imports from a real file", () => {
    const g = graph(root, "test/lib")
    const self = g.get("test/lib/imports.ts")
    expect(self).toEqual(["node:fs", "node:path"])
    const src = graph(root, "src")
    // dynamic: import("./plugins/registry.ts"), and the server's
    expect(src.get("src/cli.ts")).toContain("src/plugins/registry.ts")
    expect(src.get("src/cli.ts")).toContain("src/serve.ts")
    // re-export: export { … } from "./http.ts"; type-only: import type { Ledger } from "../ledger/ledger.ts"
    expect(src.get("src/plugins/api/define.ts")).toContain("src/plugins/api/http.ts")
    expect(src.get("src/core/engine/pack.ts")).toContain("src/core/ledger/ledger.ts")
  })
})
