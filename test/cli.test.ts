/**
 * The help texts name the built-in providers and input formats. cli.ts writes them out (loading the registry would
 * slow `--help`), so they are checked here against the registry, which is the one list.
 */
import { describe, expect, test } from "bun:test"
import { join } from "node:path"
import { FORMATS, PROVIDERS, jobFlags } from "../src/cli/flags.ts"
import { COMMANDS } from "../src/cli.ts"
import { plain, usage, wantsColour } from "../src/cli/help.ts"
import type { CommandDef } from "citty"
import * as jobs from "../src/core/job/job.ts"
import * as registry from "../src/plugins/registry.ts"

const builtIn = (kind: "source" | "provider") =>
  registry
    .list()
    .filter((l) => l.kind === kind && l.origin === registry.BUILTIN)
    .map((l) => l.name)

/** `spool <command> --help`, from the source. */
function help(command: string): string {
  const ran = Bun.spawnSync(
    [process.execPath, join(import.meta.dir, "..", "src", "main.ts"), command, "--help"],
    {
      env: { ...process.env, NO_COLOR: "1" },
    },
  )
  expect(ran.exitCode).toBe(0)
  return ran.stdout.toString()
}

describe("the help texts", () => {
  test("list the registry's built-in providers and formats, in its order", () => {
    expect<string[]>([...PROVIDERS]).toEqual(builtIn("provider"))
    expect<string[]>([...FORMATS]).toEqual(builtIn("source"))
    expect([...PROVIDERS]).toEqual(["openai", "anthropic", "openai-compatible", "mock", "gemini"])
    expect([...FORMATS]).toEqual(["jsonl", "csv", "tsv", "parquet"])
  })

  test("`run`, `watch` and `estimate --help` name every provider and format, and that a plugin may add one", () => {
    for (const command of ["run", "watch", "estimate"]) {
      const text = help(command)
      expect(text).toContain(
        "openai | anthropic | openai-compatible | mock | gemini | a plugin's (provider.name)",
      )
      expect(text).toContain("jsonl | csv | tsv | parquet | a plugin's (source.format)")
    }
  })
})

/**
 * Keys no flag sets, and why. Every other key of the job, found by walking its schema, must be a flag of `run`,
 * `watch` and `estimate` ("Every key can also be a flag", README).
 */
const FLAGLESS: Record<string, string> = {
  sources:
    "[[sources]] is a list of tables: --input, repeated, gives the inputs (each taking --id, --format, …)",
  "provider.options":
    "a table of the provider's own options, which differ by provider: [provider.options] in a file",
  "request.params": "a table passed through to the request body as it is: [request.params] in a file",
}

/** Flags a command leaves out, and why. */
const NOT_ON: Record<string, Record<string, string>> = {
  watch: { "limits.canary": "spool watch sends no canary (README, Canary)" },
  estimate: { "limits.canary": "an estimate sends nothing, so there is no canary to ask for" },
}

type Node = { type: string; entries?: Record<string, Node>; wrapped?: Node }

/** Every key of the job's schema, tables walked into, as dotted paths; a source's built-in options too. */
function keysOf(entries: Record<string, Node>, at = ""): string[] {
  return Object.entries(entries).flatMap(([key, schema]) => {
    let s = schema
    while (s.type === "optional" && s.wrapped) s = s.wrapped
    const path = at ? `${at}.${key}` : key
    return s.entries ? keysOf(s.entries, path) : [path]
  })
}

describe("every job key is a flag", () => {
  const keys = [
    ...keysOf(jobs.JobSchema.entries as unknown as Record<string, Node>),
    ...[...new Set(jobs.BUILTIN_SOURCES.flatMap((s) => s.keys))].map((k) => `source.${k}`),
  ]

  test("the walk finds the job's tables and keys", () => {
    expect(keys.length).toBe(59)
    expect(keys).toContain("limits.rpm")
    // issue 20's: the prompt cache, priming, and the prices of cache writes and of the flex tier
    for (const key of [
      "request.cache",
      "request.prime",
      "pricing.cache_write",
      "pricing.cache_write_1h",
      "pricing.flex_discount",
    ])
      expect(keys).toContain(key)
    expect(keys).toContain("source.delimiter")
    expect(keys).toContain("pricing.batch_discount")
  })

  for (const command of ["run", "watch", "estimate"])
    test(`on \`${command}\`, each flag naming its key in its help, but for the keys listed with a reason`, () => {
      const args = COMMANDS[command]?.args as Record<string, { description?: string }>
      const flagOf = (key: string) =>
        Object.entries(args).find(
          ([, a]) => a.description?.endsWith(`(${key})`) || a.description === key,
        )?.[0]
      const missing = keys.filter((k) => !flagOf(k) && !FLAGLESS[k] && !NOT_ON[command]?.[k])
      expect(missing).toEqual([])
      // and each exception really has none, so the list stays honest
      const excepted = [...Object.keys(FLAGLESS), ...Object.keys(NOT_ON[command] ?? {})]
      expect(excepted.filter((k) => flagOf(k))).toEqual([])
    })

  test("the flags given reach the job: --rpm, --delimiter, --keep-raw, --pricing-input and the old ones", () => {
    const flags = jobFlags(
      {
        rpm: "60",
        delimiter: "\\t",
        "keep-raw": false,
        "pricing-input": "0.4",
        model: ["a", "b"],
        canary: "5",
      },
      ["--input", "a.csv", "--input=b.csv", "--rpm", "60"],
    )
    expect(Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined))).toEqual({
      input: ["a.csv", "b.csv"],
      rpm: "60",
      delimiter: "\\t",
      "keep-raw": false,
      "pricing-input": "0.4",
      model: "b",
    })
  })
})

describe("colour", () => {
  const tty = { isTTY: true }
  const pipe = { isTTY: false }

  test("on a terminal unless NO_COLOR (any value but none) or a dumb one; into a pipe only with FORCE_COLOR", () => {
    expect(wantsColour(tty, {})).toBe(true)
    expect(wantsColour(pipe, {})).toBe(false)
    expect(wantsColour(tty, { NO_COLOR: "1" })).toBe(false)
    expect(wantsColour(tty, { NO_COLOR: "false" })).toBe(false)
    expect(wantsColour(tty, { NO_COLOR: "" })).toBe(true)
    expect(wantsColour(tty, { TERM: "dumb" })).toBe(false)
    expect(wantsColour(pipe, { FORCE_COLOR: "1" })).toBe(true)
    expect(wantsColour(pipe, { FORCE_COLOR: "" })).toBe(true)
    expect(wantsColour(tty, { FORCE_COLOR: "0" })).toBe(false)
    expect(wantsColour(pipe, { FORCE_COLOR: "1", NO_COLOR: "1" })).toBe(false)
  })

  test("a help text is the same words either way: colour codes and line-end padding come out", async () => {
    const run = COMMANDS.run as CommandDef
    const main = { meta: { name: "spool", version: "9" } } as CommandDef
    const piped = await usage(run, main, pipe, {})
    const forced = await usage(run, main, pipe, { FORCE_COLOR: "1" })
    expect(piped).not.toContain("\x1b[")
    expect(forced).toContain("\x1b[1;4mOPTIONS\x1b[0m")
    expect(forced).toContain("\x1b[36m--input=<file>\x1b[0m")
    expect(plain(forced)).toBe(piped)
    expect(piped.split("\n")[0]).toBe("Start a run, or resume the run of the same name (spool run v9)")
  })
})
