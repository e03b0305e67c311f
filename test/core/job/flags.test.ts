/** The job's keys as flags: the names made from the schema, and how each flag's text becomes its key's value. */
import { describe, expect, test } from "bun:test"
import { writeFileSync } from "node:fs"
import * as jobs from "../../../src/core/job/job.ts"
import * as registry from "../../../src/plugins/registry.ts"
import { tmpdir } from "../../lib/tmp.ts"

const REST = { provider: "mock", prompt: "{{text}}" }

describe("the job's flags", () => {
  test("every flag spool has always had keeps its name and its key", () => {
    const byName = Object.fromEntries(jobs.FLAGS.map((f) => [f.name, f.key]))
    expect({
      input: byName.input,
      id: byName.id,
      format: byName.format,
      provider: byName.provider,
      model: byName.model,
      mode: byName.mode,
      "base-url": byName["base-url"],
      "api-key-env": byName["api-key-env"],
      system: byName.system,
      prompt: byName.prompt,
      "max-tokens": byName["max-tokens"],
      temperature: byName.temperature,
      concurrency: byName.concurrency,
      "max-attempts": byName["max-attempts"],
      timeout: byName.timeout,
      grace: byName.grace,
      "max-cost-usd": byName["max-cost-usd"],
      name: byName.name,
    }).toEqual({
      input: "source.path",
      id: "source.id",
      format: "source.format",
      provider: "provider.name",
      model: "provider.model",
      mode: "provider.mode",
      "base-url": "provider.base_url",
      "api-key-env": "provider.api_key_env",
      system: "request.system",
      prompt: "request.prompt",
      "max-tokens": "request.max_tokens",
      temperature: "request.temperature",
      concurrency: "limits.concurrency",
      "max-attempts": "limits.max_attempts",
      timeout: "limits.timeout_s",
      grace: "limits.grace_s",
      "max-cost-usd": "limits.max_cost_usd",
      name: "name",
    })
    // no two keys share a flag
    expect(new Set(jobs.FLAGS.map((f) => f.name)).size).toBe(jobs.FLAGS.length)
  })

  test("the new ones: a key's own name in kebab-case, `_s` dropped; pricing and output take their table's name", () => {
    const names = (keys: string[]) => keys.map((k) => jobs.FLAGS.find((f) => f.key === k)?.name)
    expect(
      names([
        "plugins",
        "source.delimiter",
        "source.max_malformed",
        "source.columns",
        "limits.rpm",
        "limits.tpm",
        "limits.retry_base_s",
        "limits.tail_realtime",
        "batch.poll_max_s",
        "batch.keep_raw",
        "pricing.input",
        "pricing.batch_discount",
        "output.schema",
        "output.name",
      ]),
    ).toEqual([
      "plugin",
      "delimiter",
      "max-malformed",
      "columns",
      "rpm",
      "tpm",
      "retry-base",
      "tail-realtime",
      "poll-max",
      "keep-raw",
      "pricing-input",
      "pricing-batch-discount",
      "output-schema",
      "output-name",
    ])
  })

  test("the built-in sources' options, as flags know them, are the sources' own, of the same kinds", () => {
    const kinds: Record<string, string> = {
      string: "text",
      number: "number",
      array: "names",
      picklist: "text",
    }
    const own = ["path", "id", "format", "max_malformed"]
    const flagged = jobs.FLAGS.filter((f) => f.key.startsWith("source.") && !own.includes(f.key.slice(7)))
    const listed = new Map<string, string>()
    for (const s of registry.list().filter((l) => l.kind === "source" && l.origin === registry.BUILTIN))
      for (const o of s.options) listed.set(o.name, kinds[o.type] ?? o.type)
    expect(Object.fromEntries(flagged.map((f) => [f.key.slice(7), f.kind as string]))).toEqual(
      Object.fromEntries(listed),
    )
  })

  test("numbers, switches, shares, lists and paths become the key's values; flags win over the file", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("job.toml"), `[source]\npath = "in.csv"\n[limits]\nrpm = 10\n`)
    const { job } = jobs.load(
      "job.toml",
      {
        ...REST,
        rpm: "600",
        tpm: "1e6",
        "retry-cap": "2.5",
        "keep-raw": false,
        "max-malformed": "5%",
        "chunk-bytes": "4096",
        plugin: ["p.ts"],
        "pricing-input": "0.4",
        "pricing-output": "1.6",
      },
      tmp.path,
    )
    expect([job.limits.rpm, job.limits.tpm, job.limits.retry_cap_s, job.batch.keep_raw]).toEqual([
      600,
      1_000_000,
      2.5,
      false,
    ])
    expect(job.sources).toEqual([
      {
        path: tmp.join("in.csv"),
        id: undefined,
        format: undefined,
        options: { chunk_bytes: 4096 },
        max_malformed: "5%",
        at: "source",
      },
    ])
    expect(job.plugins).toEqual([tmp.join("p.ts")])
    expect(job.pricing).toEqual({ input: 0.4, output: 1.6 })
    const parquet = jobs.load(undefined, { ...REST, input: ["t.parquet"], columns: "a, b,c" }, tmp.path).job
    expect(parquet.sources[0]?.options).toEqual({ columns: ["a", "b", "c"] })
    const rows = jobs.load(undefined, { ...REST, input: ["a.jsonl"], "max-malformed": "0" }, tmp.path).job
    expect(rows.sources[0]?.max_malformed).toBe(0)
  })

  test('--delimiter takes `\\t` written as a backslash and a t, as the hints print it ("\\t" in a shell)', async () => {
    await using tmp = await tmpdir()
    const delimiter = (value: string) =>
      jobs
        .load(undefined, { ...REST, input: ["a.csv", "b.csv"], delimiter: value }, tmp.path)
        .job.sources.map((s) => s.options.delimiter)
    expect(delimiter("\\t")).toEqual(["\t", "\t"])
    expect(delimiter(";")).toEqual([";", ";"])
  })

  test("--output-schema is a file relative to the working directory", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("s.json"), '{"type":"object"}')
    const flags = { ...REST, input: ["a.jsonl"], "output-schema": "s.json", "output-name": "label" }
    expect(jobs.load(undefined, flags, tmp.path).job.output).toEqual({
      name: "label",
      schema: { type: "object" },
    })
  })

  test("a name that is no flag is refused, not ignored", () => {
    expect(() => jobs.load(undefined, { ...REST, input: ["a.jsonl"], maxTokens: "5" })).toThrow(
      'jobs.load: no flag is named "maxTokens"',
    )
  })

  test("a numeric flag that is not a number names the flag and what it was given", async () => {
    await using tmp = await tmpdir()
    for (const [flag, value] of [
      ["rpm", "fast"],
      ["poll-max", ""],
      ["pricing-input", "$1"],
      ["max-malformed", "ten"],
    ] as const)
      expect(() => jobs.load(undefined, { ...REST, input: ["a.jsonl"], [flag]: value }, tmp.path)).toThrow(
        `--${flag} must be a number, not "${value}"`,
      )
  })
})
