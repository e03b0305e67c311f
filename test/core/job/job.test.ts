import { describe, expect, test } from "bun:test"
import { writeFileSync } from "node:fs"
import { JobError, SourceError } from "../../../src/plugins/api/errors.ts"
import * as jobs from "../../../src/core/job/job.ts"
import { plan, preflight } from "../../../src/core/engine/ingest.ts"
import * as template from "../../../src/core/job/template.ts"
import * as registry from "../../../src/plugins/registry.ts"
import { tmpdir } from "../../lib/tmp.ts"

const GOOD = `
name = "labels"
[source]
path = "in.jsonl"
id = "ticket_id"
[provider]
name = "openai"
model = "gpt-4.1-mini"
[request]
prompt = "Label: {{text}}"
`

/** The rest of a job that reads with the mock provider. */
const REST = `[provider]\nname = "mock"\n[request]\nprompt = "{{text}}"\n`

function problems(fn: () => unknown): string[] {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(JobError)
    expect((err as JobError).exit).toBe(2)
    return (err as JobError).problems
  }
  throw new Error("expected a JobError")
}

describe("loading a job", () => {
  test("reads the file, resolves the input next to it, and fills the defaults", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("job.toml"), GOOD)
    const { job, file } = jobs.load("job.toml", {}, tmp.path)
    expect(file).toBe(tmp.join("job.toml"))
    expect(job.sources).toEqual([
      { path: tmp.join("in.jsonl"), id: "ticket_id", format: undefined, options: {}, at: "source" },
    ])
    expect(job.limits).toEqual({
      concurrency: 32,
      rpm: 0,
      tpm: 0,
      max_attempts: 5,
      timeout_s: 120,
      grace_s: 10,
      retry_base_s: 1,
      retry_cap_s: 60,
      tail_realtime: 0,
    })
    expect(job.provider.mode).toBe("realtime")
    expect(job.batch).toEqual({
      flush_s: 30,
      poll_s: 10,
      poll_max_s: 300,
      max_live: 0,
      keep_raw: true,
      download_tries: 5,
    })
  })

  test("flags override the file, and the input flag is relative to the working directory", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("job.toml"), GOOD)
    const { job } = jobs.load(
      "job.toml",
      {
        input: ["other.jsonl"],
        model: "m2",
        prompt: "P {{x}}",
        concurrency: "4",
        "max-tokens": "9",
        temperature: "0.5",
      },
      tmp.path,
    )
    expect(job.sources.map((s) => [s.path, s.id])).toEqual([[tmp.join("other.jsonl"), "ticket_id"]])
    expect(job.provider.model).toBe("m2")
    expect(job.request).toEqual({
      prompt: "P {{x}}",
      max_tokens: 9,
      temperature: 0.5,
      cache: "auto",
      prime: true,
    })
    expect(job.limits.concurrency).toBe(4)
  })

  test("works from flags alone, naming the run after the input", async () => {
    await using tmp = await tmpdir()
    const { job } = jobs.load(
      undefined,
      { input: ["tickets.jsonl"], prompt: "x", provider: "mock" },
      tmp.path,
    )
    expect(job.name).toBe("tickets")
    expect(job.provider.name).toBe("mock")
  })

  test("from flags alone with a glob, the run is named after the folder it scans", async () => {
    await using tmp = await tmpdir()
    const flags = { input: ["inbox/*.jsonl"], prompt: "x", provider: "mock" }
    expect(jobs.load(undefined, flags, tmp.path).job.name).toBe("inbox")
    expect(jobs.load(undefined, { ...flags, input: ["in/2026-*/part?.csv"] }, tmp.path).job.name).toBe("in")
  })

  test("an unknown key is an error naming its path", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("job.toml"), GOOD.replace('prompt = "', 'promt = "x"\nprompt = "'))
    expect(problems(() => jobs.load("job.toml", {}, tmp.path))).toEqual([
      'request.promt: unknown key; did you mean "prompt"?',
    ])
  })

  test("every unknown key is reported once, beside the other problems: top level, tables, a source's own keys", async () => {
    await using tmp = await tmpdir()
    writeFileSync(
      tmp.join("job.toml"),
      [
        'name = "x"',
        "zzz = 1",
        "yyy = 2",
        "[source]",
        'pth = "in.jsonl"',
        "[provider]",
        'name = "mock"',
        'modle = "m"',
        'mdoe = "batch"',
        "[request]",
        'prompt = "{{text}}"',
        'max_tokens = "x"',
        "[limits]",
        "concurency = 4",
        "[bogus]",
        "a = 1",
      ].join("\n"),
    )
    expect(problems(() => jobs.load("job.toml", {}, tmp.path))).toEqual([
      "source.path: missing (required)",
      "request.max_tokens: expected a number",
      "zzz: unknown key (check its spelling)",
      "yyy: unknown key (check its spelling)",
      'source.pth: unknown key; did you mean "path"?',
      'provider.modle: unknown key; did you mean "model"?',
      'provider.mdoe: unknown key; did you mean "mode"?',
      'limits.concurency: unknown key; did you mean "concurrency"?',
      "bogus: unknown key (check its spelling)",
    ])
    // a source's options are its source's: a csv takes a delimiter, a jsonl file does not; max_malformed is anyone's
    writeFileSync(
      tmp.join("job.toml"),
      `[[sources]]\npath = "a.jsonl"\ndelimiter = ";"\nmax_malformed = "5%"\n[[sources]]\npath = "b.csv"\ndelimiter = ";"\nchunk_byte = 1\n${REST}`,
    )
    expect(problems(() => jobs.load("job.toml", {}, tmp.path))).toEqual([
      "sources.0.delimiter: unknown key (check its spelling)",
      'sources.1.chunk_byte: unknown key; did you mean "chunk_bytes"?',
    ])
    // a source a plugin may read is left to the plugin's schema, checked once the plugins are loaded
    writeFileSync(
      tmp.join("job.toml"),
      `plugins = ["p.ts"]\nzzz = 1\n[source]\npath = "a.db"\ntable = "t"\n${REST}`,
    )
    expect(problems(() => jobs.load("job.toml", {}, tmp.path))).toEqual([
      "zzz: unknown key (check its spelling)",
    ])
  })

  test("the job's list of built-in sources and their option keys is the registry's", () => {
    const listed = registry.list().filter((s) => s.kind === "source" && s.origin === registry.BUILTIN)
    expect(
      listed.map((s) => ({ name: s.name, extensions: s.extensions, keys: s.options.map((o) => o.name) })),
    ).toEqual(jobs.BUILTIN_SOURCES)
  })

  test("max_malformed is a share or a number of rows, kept beside the source's options", async () => {
    await using tmp = await tmpdir()
    const load = (value: string) => {
      writeFileSync(tmp.join("job.toml"), `[source]\npath = "a.csv"\nmax_malformed = ${value}\n${REST}`)
      return jobs.load("job.toml", {}, tmp.path).job.sources[0]
    }
    expect(load('"2.5%"')).toEqual({
      path: tmp.join("a.csv"),
      id: undefined,
      format: undefined,
      options: {},
      at: "source",
      max_malformed: "2.5%",
    })
    expect(load("0")?.max_malformed).toBe(0)
    for (const bad of ['"ten"', '"150%"', '"100.5%"', "-1", "1.5"])
      expect(problems(() => load(bad))).toEqual([
        'source.max_malformed: expected a share of the rows such as "10%", or a number of rows such as 50',
      ])
  })

  test("every problem is listed with its key path at once", async () => {
    await using tmp = await tmpdir()
    writeFileSync(
      tmp.join("job.toml"),
      `name = "x y"\n[source]\nid = 3\n[provider]\nname = "openai"\nmode = "bulk"\n[request]\nmax_tokens = 0\n[limits]\nconcurrency = "many"\n`,
    )
    expect(problems(() => jobs.load("job.toml", {}, tmp.path))).toEqual([
      "name: must be letters, digits, dot, dash or underscore",
      "source.path: missing (required)",
      "source.id: expected a string (the field that holds each row's stable id)",
      `provider.mode: must be "realtime" (direct calls), "batch" (the provider's Batch API) or "flex" (direct calls in the flex tier)`,
      "provider.model: missing (required): the model's name, or --model",
      "request.prompt: missing (required)",
      "request.max_tokens: must be at least 1",
      "limits.concurrency: expected a number",
    ])
  })

  test("a TOML syntax error names the file, the line and the column", async () => {
    await using tmp = await tmpdir()
    const error = (text: string) => {
      writeFileSync(tmp.join("job.toml"), text)
      try {
        jobs.load("job.toml", {}, tmp.path)
      } catch (err) {
        expect(err).toBeInstanceOf(JobError)
        expect((err as JobError).hint).toBe("Fix the TOML syntax there.")
        return (err as Error).message.replace(tmp.join("job.toml"), "job.toml")
      }
      return "parsed"
    }
    expect(error('name = "x\n')).toBe(
      "job.toml:1:8: not valid TOML: Unterminated string; newlines must be escaped in basic strings",
    )
    expect(error('name = "x"\n\n[limits]\nconcurrency = 4\nrpm == 3\n')).toBe(
      "job.toml:5:6: not valid TOML: Expected a value but found '='",
    )
    expect(error("a = 1\r\nb = \r\n")).toBe(
      "job.toml:2:3: not valid TOML: Missing value after '='; values must be on the same line",
    )
    expect(error('[source]\npath = "a"\n[source]\npath = "b"\n')).toBe(
      "job.toml:3:8: not valid TOML: Cannot redefine table 'source'",
    )
    // an array that spans lines parses; the one left open is where the error is, not the first
    expect(error("x = [\n  1,\n]\ny = [2,\n")).toBe(
      "job.toml:4:5: not valid TOML: Unterminated array; expected ']'",
    )
    expect(error('plugins = [\n  "a.ts",\n  "b.ts"\nname = "x"\n')).toMatch(
      /^job\.toml:4:\d+: not valid TOML: /,
    )
  })

  test("a misspelt key gets the key it most likely meant, of those valid in its place", async () => {
    await using tmp = await tmpdir()
    writeFileSync(
      tmp.join("job.toml"),
      [
        "[limit]",
        "concurrency = 4",
        "[source]",
        'path = "in.csv"',
        'delimter = ";"',
        "[provider]",
        'name = "mock"',
        "[provider.options]",
        "latncy_ms = 3",
        "[request]",
        'prompt = "{{text}}"',
        "[batch]",
        "pol_s = 1",
        "flush = 1",
      ].join("\n"),
    )
    expect(problems(() => jobs.load("job.toml", {}, tmp.path))).toEqual([
      'limit: unknown key; did you mean "limits"?',
      'source.delimter: unknown key; did you mean "delimiter"?',
      'provider.options.latncy_ms: unknown key; did you mean "latency_ms"?',
      'batch.pol_s: unknown key; did you mean "poll_s"?',
      // too far from flush_s (two edits in five characters) to guess
      "batch.flush: unknown key (check its spelling)",
    ])
  })

  test("a missing model is listed with the other problems, for a built-in provider that needs one", async () => {
    await using tmp = await tmpdir()
    writeFileSync(
      tmp.join("job.toml"),
      `[source]\npath = "in.jsonl"\n[provider]\nname = "anthropic"\n[request]\nprompt = "{{text}}"\n[limits]\nconcurency = 4\n`,
    )
    expect(problems(() => jobs.load("job.toml", {}, tmp.path))).toEqual([
      "provider.model: missing (required): the model's name, or --model",
      'limits.concurency: unknown key; did you mean "concurrency"?',
    ])
    // openai, the default, needs one too; mock does not
    expect(problems(() => jobs.load(undefined, { input: ["a.jsonl"], prompt: "x" }, tmp.path))).toEqual([
      "provider.model: missing (required): the model's name, or --model",
    ])
    expect(
      jobs.load(undefined, { input: ["a.jsonl"], prompt: "x", provider: "mock" }, tmp.path).job.provider
        .model,
    ).toBe(undefined)
  })

  test("the job's list of built-in providers, their need of a model and their option keys, is the registry's", () => {
    const listed = registry.list().filter((s) => s.kind === "provider" && s.origin === registry.BUILTIN)
    expect(
      listed.map((p) => ({
        name: p.name,
        model: !registry.provider(p.name).modelOptional,
        keys: p.options.map((o) => o.name),
      })),
    ).toEqual(jobs.BUILTIN_PROVIDERS)
  })

  test("a missing job file is a clear error", async () => {
    await using tmp = await tmpdir()
    expect(() => jobs.load("nope.toml", {}, tmp.path)).toThrow(
      `cannot read the job file ${tmp.join("nope.toml")}`,
    )
  })

  test("a non-numeric numeric flag is refused", async () => {
    await using tmp = await tmpdir()
    expect(() =>
      jobs.load(undefined, { input: ["a.jsonl"], prompt: "x", concurrency: "lots" }, tmp.path),
    ).toThrow('--concurrency must be a number, not "lots"')
  })

  test("the fingerprint follows what shapes requests, not the limits", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("job.toml"), GOOD)
    const a = jobs.load("job.toml", {}, tmp.path).job
    const b = jobs.load("job.toml", { concurrency: "2" }, tmp.path).job
    const c = jobs.load("job.toml", { prompt: "Other {{text}}" }, tmp.path).job
    expect(jobs.fingerprint(a)).toBe(jobs.fingerprint(b))
    expect(jobs.fingerprint(a)).not.toBe(jobs.fingerprint(c))
    expect(jobs.changedKeys(a, c)).toEqual(["request.prompt"])
  })

  test(".env is loaded without overriding the real environment", async () => {
    await using tmp = await tmpdir()
    writeFileSync(
      tmp.join(".env"),
      `SPOOL_T_A=from-file\nexport SPOOL_T_B="quoted # not a comment"\nSPOOL_T_C=x # comment\n# SPOOL_T_D=no\n`,
    )
    process.env.SPOOL_T_A = "from-env"
    jobs.loadDotenv(tmp.path)
    expect(process.env.SPOOL_T_A).toBe("from-env")
    expect(process.env.SPOOL_T_B).toBe("quoted # not a comment")
    expect(process.env.SPOOL_T_C).toBe("x")
    expect(process.env.SPOOL_T_D).toBeUndefined()
  })
})

describe("inputs and plugins in a job", () => {
  test("[[sources]] keep their order, their own id, format and options, relative to the job file", async () => {
    await using tmp = await tmpdir()
    writeFileSync(
      tmp.join("job.toml"),
      `plugins = ["p/folder.ts"]\n[[sources]]\npath = "a.csv"\nid = "ref"\ndelimiter = ";"\n[[sources]]\npath = "data/b.txt"\nformat = "jsonl"\n${REST}`,
    )
    const { job } = jobs.load("job.toml", {}, tmp.path)
    expect(job.plugins).toEqual([tmp.join("p", "folder.ts")])
    expect(job.sources).toEqual([
      { path: tmp.join("a.csv"), id: "ref", format: undefined, options: { delimiter: ";" }, at: "sources.0" },
      { path: tmp.join("data", "b.txt"), id: undefined, format: "jsonl", options: {}, at: "sources.1" },
    ])
  })

  test("repeated --input replaces the file's inputs, each taking the single [source]'s other keys", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("job.toml"), `[source]\npath = "x.csv"\nid = "ref"\ndelimiter = "|"\n${REST}`)
    const { job } = jobs.load("job.toml", { input: ["one.csv", "two.csv"], format: "csv" }, tmp.path)
    expect(job.sources.map((s) => [s.path, s.id, s.format, s.options, s.at])).toEqual([
      [tmp.join("one.csv"), "ref", "csv", { delimiter: "|" }, "sources.0"],
      [tmp.join("two.csv"), "ref", "csv", { delimiter: "|" }, "sources.1"],
    ])
  })

  test("both [source] and [[sources]], or neither, is an error", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("both.toml"), `[source]\npath = "a.csv"\n[[sources]]\npath = "b.csv"\n${REST}`)
    expect(problems(() => jobs.load("both.toml", {}, tmp.path))).toEqual([
      "source: give either [source] or [[sources]], not both",
    ])
    writeFileSync(tmp.join("none.toml"), REST)
    expect(problems(() => jobs.load("none.toml", {}, tmp.path))).toEqual([
      "source: missing (required): a [source] table with a path, or --input",
    ])
  })

  test("source options are checked against the chosen source before anything is read", async () => {
    await using tmp = await tmpdir()
    for (const f of ["a.csv", "b.parquet"]) writeFileSync(tmp.join(f), "")
    // a misspelt key is found as the job is loaded
    writeFileSync(
      tmp.join("job.toml"),
      `[[sources]]\npath = "a.csv"\ndelimeter = ";"\n[[sources]]\npath = "b.parquet"\nbatch_rows = 0\n${REST}`,
    )
    expect(problems(() => jobs.load("job.toml", {}, tmp.path))).toEqual([
      'sources.0.delimeter: unknown key; did you mean "delimiter"?',
    ])
    // a value, against the source's schema, once its plugins could be loaded
    writeFileSync(
      tmp.join("job.toml"),
      `[[sources]]\npath = "a.csv"\ndelimiter = "#"\n[[sources]]\npath = "b.parquet"\nbatch_rows = 0\n${REST}`,
    )
    const { job } = jobs.load("job.toml", {}, tmp.path)
    expect(problems(() => plan(job))).toEqual([
      'sources.0.delimiter: must be one of ",", ";", "\\t" (tab) or "|"',
      "sources.1.batch_rows: Invalid value: Expected >=1 but received 0",
    ])
  })

  test("an unknown format, an unknown extension, a missing file and a repeated input are refused", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("a.csv"), "id\n1\n")
    const attempt = (flags: jobs.Flags) => {
      try {
        plan(jobs.load(undefined, { prompt: "x", provider: "mock", ...flags }, tmp.path).job)
      } catch (e) {
        return (e as Error).message
      }
      return "no error"
    }
    expect(attempt({ input: ["a.csv"], format: "xlsx" })).toContain('sources.0.format: unknown format "xlsx"')
    expect(attempt({ input: ["a.xlsx"] })).toContain("sources.0.path: cannot tell the format of")
    expect(attempt({ input: ["gone.csv"] })).toContain(`the input ${tmp.join("gone.csv")} does not exist`)
    expect(attempt({ input: ["a.csv", "./a.csv"] })).toContain(
      `sources.1.path: ${tmp.join("a.csv")} is given twice`,
    )
  })
})

describe("max_malformed: a file with too many malformed rows is refused before a run is made of it", () => {
  /** Reads `lines` (a JSONL file) as a new run would, under `max_malformed`; the refusal's message, or "read". */
  async function refusal(lines: string[], max_malformed?: string | number): Promise<string> {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("in.jsonl"), lines.map((l) => `${l}\n`).join(""))
    const table = max_malformed === undefined ? "" : `max_malformed = ${JSON.stringify(max_malformed)}\n`
    writeFileSync(tmp.join("job.toml"), `[source]\npath = "in.jsonl"\n${table}${REST}`)
    try {
      await preflight(plan(jobs.load("job.toml", {}, tmp.path).job), template.parse("{{text}}"))
      return "read"
    } catch (err) {
      expect(err).toBeInstanceOf(SourceError)
      expect((err as SourceError).exit).toBe(2)
      return (err as SourceError).message.replace(tmp.path, "DIR")
    }
  }
  const good = (i: number) => JSON.stringify({ text: `row ${i}` })
  const rows = (n: number, bad: (i: number) => boolean) =>
    Array.from({ length: n }, (_, i) => (bad(i) ? `{broken ${i}` : good(i)))
  const why = "not valid JSON: JSON Parse error: Expected '}'"

  test("by default: more than 10% once 1,000 rows are read", async () => {
    // every 9th row: 111 of 1,000 (11.1%)
    expect(await refusal(rows(1000, (i) => i % 9 === 4))).toBe(
      `DIR/in.jsonl: 111 of its first 1000 rows are malformed (11.1%), more than max_malformed allows (10%), so it does not look like jsonl data; the first is line 5: ${why}`,
    )
    // every 10th: 100 of 1,000 is not more than 10%
    expect(await refusal(rows(1000, (i) => i % 10 === 4))).toBe("read")
    // more than 10% of fewer than 1,000 rows is not judged yet
    expect(await refusal(rows(999, (i) => i % 3 === 0))).toBe("read")
  })

  test("by default: the first 100 rows all malformed, or every row of a shorter file", async () => {
    expect(await refusal(rows(150, (i) => i < 100))).toBe(
      `DIR/in.jsonl: its first 100 rows are all malformed, so it does not look like jsonl data; the first is line 1: ${why}`,
    )
    expect(await refusal(rows(150, (i) => i < 99))).toBe("read")
    expect(await refusal(rows(3, () => true))).toBe(
      `DIR/in.jsonl: all 3 of its rows are malformed, so it does not look like jsonl data; the first is line 1: ${why}`,
    )
    expect(await refusal(["{"])).toStartWith("DIR/in.jsonl: its only row is malformed,")
  })

  test("a share, a number of rows, or 100% for never", async () => {
    const mixed = rows(2000, (i) => i % 4 === 0)
    expect(await refusal(mixed, "30%")).toBe("read")
    expect(await refusal(mixed, "20%")).toStartWith(
      "DIR/in.jsonl: 500 of its first 2000 rows are malformed (25%), more than max_malformed allows (20%)",
    )
    expect(await refusal(mixed, 500)).toBe("read")
    expect(await refusal(mixed, 499)).toStartWith(
      "DIR/in.jsonl: 500 rows are malformed, more than max_malformed allows (499)",
    )
    expect(
      await refusal(
        rows(3, (i) => i === 1),
        0,
      ),
    ).toStartWith("DIR/in.jsonl: 1 rows are malformed, more than max_malformed allows (0)")
    expect(
      await refusal(
        rows(300, () => true),
        "100%",
      ),
    ).toBe("read")
  })
})
