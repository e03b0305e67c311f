/**
 * The help texts name the built-in providers and input formats. cli.ts writes them out (loading the registry would
 * slow `--help`), so they are checked here against the registry, which is the one list.
 */
import { describe, expect, test } from "bun:test"
import { join } from "node:path"
import { FORMATS, PROVIDERS } from "../src/cli.ts"
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
    expect([...PROVIDERS]).toEqual(["openai", "anthropic", "openai-compatible", "mock"])
    expect([...FORMATS]).toEqual(["jsonl", "csv", "tsv", "parquet"])
  })

  test("`run`, `watch` and `estimate --help` name every provider and format, and that a plugin may add one", () => {
    for (const command of ["run", "watch", "estimate"]) {
      const text = help(command)
      expect(text).toContain("openai | anthropic | openai-compatible | mock | a plugin's (provider.name)")
      expect(text).toContain("jsonl | csv | tsv | parquet | a plugin's (source.format)")
    }
  })
})
