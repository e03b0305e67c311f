/**
 * `spool results` as JSONL, CSV and Parquet through dist/spool (issue 17; docs/RESULTS.md), on the OpenAI fake with a
 * strict output schema: the input rows joined as columns or left out, the prefix and a clash it cannot resolve, the
 * state filters, two exports since the last one, the cost column's sum against `status --json`, and bad flags.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test"
import { appendFileSync, existsSync, readFileSync, statSync, writeFileSync } from "node:fs"
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects } from "hyparquet"
import Papa from "papaparse"
import { startFake, type Fake } from "../lib/fake-openai.ts"
import { pgSchema, SKIP_PG } from "../lib/pg.ts"
import { spool } from "../lib/spool.ts"
import { tmpdir, type Tmp } from "../lib/tmp.ts"

const KEY = "sk-test-results-0123456789"

const SCHEMA = {
  type: "object",
  additionalProperties: false,
  required: ["label", "confidence", "tags", "extra"],
  properties: {
    label: { type: "string" },
    confidence: { type: "number" },
    tags: { type: "array", items: { type: "string" } },
    extra: {
      type: "object",
      additionalProperties: false,
      required: ["ok"],
      properties: { ok: { type: "boolean" } },
    },
  },
}

/** Input rows: a string, an integer, a number, a boolean and an object column. `bad` gets an answer that is not JSON. */
const row = (i: number, text: string) => ({
  id: `r${i}`,
  text,
  n: i,
  score: i / 4,
  flag: i % 2 === 0,
  extra: { i },
})
const TEXTS = ["alpha", "beta", "bad", "boom", "gamma"]

interface Line {
  id: string
  state: string
  output: unknown
  error: { class: string | null; message: string } | null
  attempts: number
  usage: { input_tokens: number; output_tokens: number }
  cost_usd: number | null
  cached: boolean
  input?: Record<string, unknown>
}

let tmp: Tmp
let fake: Fake
const cli = (...args: string[]) =>
  spool(args, { cwd: tmp.path, env: { OPENAI_API_KEY: KEY, SPOOL_EXPORT_MARGIN_S: "0" } })
const csv = (text: string) => Papa.parse<string[]>(text.trimEnd(), { header: false }).data
const lines = (text: string) =>
  text
    .trim()
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Line)

beforeAll(async () => {
  tmp = await tmpdir()
  fake = await startFake({
    apiKey: KEY,
    reply: (input) => {
      const text = input.replace(/^Label: /, "")
      if (text === "bad") return "not json at all"
      return JSON.stringify({
        label: text.toUpperCase(),
        confidence: text.length / 8,
        tags: ["t", text],
        extra: { ok: text !== "beta" },
      })
    },
  })
  // the first request for "boom" fails with a 500; its second (after `spool retry`) is answered
  fake.script.set("Label: boom", ["500", "ok"])
  writeFileSync(tmp.join("label.json"), JSON.stringify(SCHEMA))
  writeFileSync(tmp.join("in.jsonl"), TEXTS.map((t, i) => JSON.stringify(row(i + 1, t))).join("\n") + "\n")
  writeFileSync(
    tmp.join("job.toml"),
    `name = "labels"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "openai"
model = "gpt-4o-mini"
base_url = "${fake.url}"
[request]
prompt = "Label: {{text}}"
max_tokens = 50
[output]
schema = "label.json"
name = "label"
[limits]
max_attempts = 1
retry_base_s = 0
retry_cap_s = 0
`,
  )
  const ran = await cli("run", "job.toml")
  expect(ran.stderr).toContain("3 completed, 1 failed, 1 need review of 5")
})

afterAll(async () => {
  await fake?.stop()
  await tmp?.[Symbol.asyncDispose]()
})

describe("spool results as csv, parquet and jsonl", () => {
  test("csv, joined by default: the input's columns, spool's (qualified: the input has an id), the schema's; exact cells", async () => {
    const ref = lines((await cli("results", "labels")).stdout)
    const out = await cli("results", "labels", "--out", "r.csv")
    expect(out.stderr).toBe("wrote 5 results to r.csv\n")
    expect(statSync(tmp.join("r.csv")).mode & 0o777).toBe(0o600)
    const [head, ...rows] = csv(readFileSync(tmp.join("r.csv"), "utf8"))
    expect(head).toEqual([
      "id",
      "text",
      "n",
      "score",
      "flag",
      "extra",
      "spool.id",
      "spool.state",
      "spool.attempts",
      "spool.cost_usd",
      "spool.prompt_cache_saved_usd",
      "spool.cache_write_tokens",
      "spool.cached",
      "spool.error",
      "output.label",
      "output.confidence",
      "output.tags",
      "output.extra",
    ])
    expect(rows).toHaveLength(5)
    expect(rows[0]).toEqual([
      "r1",
      "alpha",
      "1",
      "0.25",
      "false",
      '{"i":1}',
      "r1",
      "completed",
      "1",
      String(ref[0]!.cost_usd),
      "0",
      "0",
      "false",
      "",
      "ALPHA",
      "0.625",
      '["t","alpha"]',
      '{"ok":true}',
    ])
    expect(rows[1]!.slice(14)).toEqual(["BETA", "0.5", '["t","beta"]', '{"ok":false}'])
    // left for review: its answer is not JSON, so no column of the schema holds it (jsonl keeps it)
    expect(rows[2]!.slice(6, 18)).toEqual([
      "r3",
      "needs_review",
      "1",
      String(ref[2]!.cost_usd),
      "0",
      "0",
      "false",
      ref[2]!.error!.message,
      "",
      "",
      "",
      "",
    ])
    expect(ref[2]!.output).toBe("not json at all")
    expect(rows[3]!.slice(6, 14)).toEqual([
      "r4",
      "failed",
      "1",
      "0",
      "0",
      "0",
      "false",
      ref[3]!.error!.message,
    ])
    expect(ref[3]!.error!.message.length).toBeGreaterThan(0)
  })

  test("cost_usd at full precision: each is its tokens at gpt-4o-mini's price, and the column's sum is status --json's spend", async () => {
    const ref = lines((await cli("results", "labels")).stdout)
    for (const l of ref.filter((x) => x.state !== "failed"))
      expect(l.cost_usd).toBeCloseTo((l.usage.input_tokens * 0.15 + l.usage.output_tokens * 0.6) / 1e6, 15)
    // a cost of 6 decimals or fewer would be a rounded one (what results wrote before)
    expect(ref.some((l) => l.cost_usd! > 0 && Math.round(l.cost_usd! * 1e6) / 1e6 !== l.cost_usd)).toBe(true)
    await cli("results", "labels", "--out", "sum.csv")
    const [head, ...rows] = csv(readFileSync(tmp.join("sum.csv"), "utf8"))
    const at = head!.indexOf("spool.cost_usd")
    const sum = rows.reduce((a, r) => a + Number(r[at]), 0)
    const status = JSON.parse((await cli("status", "labels", "--json")).stdout) as { spend: { usd: number } }
    expect(sum).toBeGreaterThan(0)
    expect(sum).toBeCloseTo(status.spend.usd, 18)
  })

  test("--no-join: spool's columns bare; --prefix names the output's; a clash it cannot resolve fails and says which", async () => {
    const bare = await cli("results", "labels", "--format", "csv", "--no-join", "--prefix", "")
    expect(bare.code).toBe(0)
    const [head, first] = csv(bare.stdout)
    expect(head).toEqual([
      "id",
      "state",
      "attempts",
      "cost_usd",
      "prompt_cache_saved_usd",
      "cache_write_tokens",
      "cached",
      "error",
      "label",
      "confidence",
      "tags",
      "extra",
    ])
    expect(first!.slice(0, 3)).toEqual(["r1", "completed", "1"])
    expect(first!.slice(8)).toEqual(["ALPHA", "0.625", '["t","alpha"]', '{"ok":true}'])
    const llm = csv((await cli("results", "labels", "--format", "csv", "--prefix", "llm_")).stdout)[0]!
    expect(llm.slice(-4)).toEqual(["llm_label", "llm_confidence", "llm_tags", "llm_extra"])
    // the input has a column `extra`, as the schema has a property: bare names clash, and nothing is written
    const clash = await cli("results", "labels", "--format", "csv", "--prefix", "", "--out", "c.csv")
    expect([clash.code, clash.stderr]).toEqual([
      2,
      'spool: results: two columns would be named "extra": an input column and the output\'s property extra\n' +
        "  Name the output's columns otherwise with --prefix (e.g. --prefix llm_), or leave the input's out with --no-join.\n",
    ])
    expect(existsSync(tmp.join("c.csv"))).toBe(false)
  })

  test("parquet: read back by hyparquet with its column types: strings, int64, double, boolean, JSON, list, struct", async () => {
    const out = await cli("results", "labels", "--out", "r.parquet")
    expect(out.code).toBe(0)
    const file = await asyncBufferFromFile(tmp.join("r.parquet"))
    const meta = await parquetMetadataAsync(file)
    const types = Object.fromEntries(
      meta.schema.slice(1).map((s) => [s.name, [s.type ?? null, s.converted_type ?? null]]),
    )
    expect(types).toEqual({
      id: ["BYTE_ARRAY", "UTF8"],
      text: ["BYTE_ARRAY", "UTF8"],
      n: ["INT64", null],
      score: ["DOUBLE", null],
      flag: ["BOOLEAN", null],
      extra: ["BYTE_ARRAY", "JSON"],
      "spool.id": ["BYTE_ARRAY", "UTF8"],
      "spool.state": ["BYTE_ARRAY", "UTF8"],
      "spool.attempts": ["INT64", null],
      "spool.cost_usd": ["DOUBLE", null],
      "spool.prompt_cache_saved_usd": ["DOUBLE", null],
      "spool.cache_write_tokens": ["INT64", null],
      "spool.cached": ["BOOLEAN", null],
      "spool.error": ["BYTE_ARRAY", "UTF8"],
      "output.label": ["BYTE_ARRAY", "UTF8"],
      "output.confidence": ["DOUBLE", null],
      "output.tags": [null, "LIST"],
      list: [null, null],
      element: ["BYTE_ARRAY", "UTF8"],
      "output.extra": [null, null],
      ok: ["BOOLEAN", null],
    })
    const rows = (await parquetReadObjects({ file })) as Record<string, unknown>[]
    expect(rows).toHaveLength(5)
    const ref = lines((await cli("results", "labels")).stdout)
    expect(rows[0]).toEqual({
      id: "r1",
      text: "alpha",
      n: 1n,
      score: 0.25,
      flag: false,
      extra: '{"i":1}',
      "spool.id": "r1",
      "spool.state": "completed",
      "spool.attempts": 1n,
      "spool.cost_usd": ref[0]!.cost_usd,
      "spool.prompt_cache_saved_usd": 0,
      "spool.cache_write_tokens": 0n,
      "spool.cached": false,
      "spool.error": null,
      "output.label": "ALPHA",
      "output.confidence": 0.625,
      "output.tags": ["t", "alpha"],
      "output.extra": { ok: true },
    })
    expect(rows.map((r) => r["spool.state"])).toEqual(ref.map((l) => l.state))
    // no answer: null leaves, and null nested columns (hyparquet gives a null list or struct as undefined)
    for (const r of [rows[2]!, rows[3]!]) {
      expect([r["output.label"], r["output.confidence"]]).toEqual([null, null])
      expect([r["output.tags"], r["output.extra"]]).toEqual([undefined, undefined])
    }
    expect(rows[3]!["spool.error"]).toBe(ref[3]!.error!.message)
  })

  test("jsonl keeps its line shape; --join adds the input row as `input`", async () => {
    const plain = lines((await cli("results", "labels")).stdout)
    expect(Object.keys(plain[0]!)).toEqual([
      "id",
      "state",
      "output",
      "error",
      "attempts",
      "usage",
      "cost_usd",
      "prompt_cache_saved_usd",
      "cached",
      "source",
    ])
    const joined = lines((await cli("results", "labels", "--join")).stdout)
    expect(joined[0]!.input).toEqual(row(1, "alpha"))
    expect(joined.map((l) => ({ ...l, input: undefined }))).toEqual(
      plain.map((l) => ({ ...l, input: undefined })),
    )
  })

  test("--state takes one state or several, --failed-only is failed and needs_review", async () => {
    const ids = async (...args: string[]) =>
      lines((await cli("results", "labels", ...args)).stdout).map((l) => l.id)
    expect(await ids("--state", "completed")).toEqual(["r1", "r2", "r5"])
    expect(await ids("--state", "failed,needs_review")).toEqual(["r3", "r4"])
    expect(await ids("--failed-only")).toEqual(["r3", "r4"])
    expect(await ids("--state", "pending")).toEqual([])
    const csvRows = csv(
      (await cli("results", "labels", "--format", "csv", "--state", "completed,failed")).stdout,
    )
    expect(csvRows.slice(1).map((r) => r[0])).toEqual(["r1", "r2", "r4", "r5"])
  })

  test("bad flags exit 2 and say what to do", async () => {
    const cases: [string[], string][] = [
      [["--format", "xml"], 'spool: --format: unknown format "xml"\n  Use one of: jsonl, csv, parquet.\n'],
      [["--format", "parquet"], "spool: --format parquet needs --out"],
      [["--state", "done"], 'spool: --state: unknown state "done"'],
      [["--state", "completed,nope"], 'spool: --state: unknown state "nope"'],
      [["--failed-only", "--state", "failed"], "spool: --failed-only and --state: give one of them"],
      [["--prefix", "x"], "spool: --prefix names the columns of csv and parquet"],
      [
        ["--since-last-export", "--state", "pending"],
        "spool: --since-last-export writes finished items only",
      ],
    ]
    for (const [args, said] of cases) {
      const out = await cli("results", "labels", ...args)
      expect([args, out.code, out.stdout]).toEqual([args, 2, ""])
      expect(out.stderr).toStartWith(said)
    }
  })
})

describe("--since-last-export", () => {
  test("the first export has every finished item, the next only those finished since, then none; marks in the store", async () => {
    const ids = (file: string) =>
      csv(readFileSync(tmp.join(file), "utf8"))
        .slice(1)
        .map((r) => r[6])
    const first = await cli("results", "labels", "--since-last-export", "--out", "e1.csv")
    expect(first.stderr).toBe("wrote 5 results to e1.csv\n")
    expect(ids("e1.csv")).toEqual(["r1", "r2", "r3", "r4", "r5"])

    // two rows more, and the failed item retried: the three finish after the first export
    appendFileSync(
      tmp.join("in.jsonl"),
      [row(6, "delta"), row(7, "epsilon")].map((r) => JSON.stringify(r)).join("\n") + "\n",
    )
    expect((await cli("retry", "labels")).code).toBe(0)
    // exit 3: the run ends with an item still left for review
    expect((await cli("run", "job.toml")).code).toBe(3)
    const second = await cli("results", "labels", "--since-last-export", "--out", "e2.csv")
    expect(second.code).toBe(0)
    expect(second.stderr).toMatch(
      /^wrote 3 results finished since the export of \d{4}-\d\d-\d\dT.*Z to e2\.csv\n$/,
    )
    expect(ids("e2.csv")).toEqual(["r4", "r6", "r7"])
    expect(csv(readFileSync(tmp.join("e2.csv"), "utf8"))[1]!.slice(7, 8)).toEqual(["completed"])

    const third = await cli("results", "labels", "--since-last-export", "--format", "jsonl")
    expect([third.code, third.stdout]).toEqual([0, ""])

    // a failed write records nothing: the next export still has what the failed one would have had
    appendFileSync(tmp.join("in.jsonl"), JSON.stringify(row(8, "zeta")) + "\n")
    expect((await cli("run", "job.toml")).code).toBe(3)
    const failed = await cli("results", "labels", "--since-last-export", "--out", "missing/dir/e.csv")
    expect([failed.code, failed.stderr]).toEqual([
      2,
      "spool: cannot write missing/dir/e.csv: its folder does not exist\n" +
        "  Give --out a file in a folder that exists and that you can write to. Nothing was written.\n",
    ])
    const fourth = await cli("results", "labels", "--since-last-export", "--out", "e4.csv")
    expect(fourth.code).toBe(0)
    expect(ids("e4.csv")).toEqual(["r8"])
  })

  test("with the default margin (120 s) an item finished just before an export is in the next one too, never missed", async () => {
    // a run of its own: its exports' marks are apart from the run above
    writeFileSync(
      tmp.join("margin.toml"),
      readFileSync(tmp.join("job.toml"), "utf8").replace('name = "labels"', 'name = "margin"'),
    )
    const margin = (...args: string[]) => spool(args, { cwd: tmp.path, env: { OPENAI_API_KEY: KEY } })
    expect((await margin("run", "margin.toml")).code).toBe(3)
    const first = lines((await margin("results", "margin", "--since-last-export")).stdout).map((l) => l.id)
    expect(first).toEqual(["r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8"])
    appendFileSync(tmp.join("in.jsonl"), JSON.stringify(row(9, "eta")) + "\n")
    expect((await margin("run", "margin.toml")).code).toBe(3)
    // every item of the first export finished less than 120 s before it: all are written again, with the new one
    const second = lines((await margin("results", "margin", "--since-last-export")).stdout).map((l) => l.id)
    expect(second).toEqual([...first, "r9"])
  })
})

describe("a run whose requests share a long prefix", () => {
  test("the fake's automatic prompt cache: each line's reads and saving, summing to status --json's; the csv column too", async () => {
    await using dir = await tmpdir()
    await using cached = await startFake({ apiKey: KEY })
    // about 2,700 tokens of instructions before each row: past OpenAI's 1,024, so the fake caches them
    const system = "You label support tickets by their topic. ".repeat(260)
    writeFileSync(
      dir.join("in.jsonl"),
      TEXTS.map((t, i) => JSON.stringify({ id: `r${i + 1}`, text: t })).join("\n") + "\n",
    )
    writeFileSync(
      dir.join("job.toml"),
      `name = "prefix"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "openai"
model = "gpt-4.1-mini"
base_url = "${cached.url}"
[request]
system = "${system}"
prompt = "Ticket: {{text}}"
max_tokens = 20
[limits]
concurrency = 1
`,
    )
    const at = (...args: string[]) => spool(args, { cwd: dir.path, env: { OPENAI_API_KEY: KEY } })
    expect((await at("run", "job.toml")).code).toBe(0)
    const out = lines((await at("results", "prefix")).stdout) as (Line & {
      usage: { cached_input_tokens: number; cache_write_tokens: number }
      prompt_cache_saved_usd: number
    })[]
    const read = out.reduce((a, l) => a + l.usage.cached_input_tokens, 0)
    const input = out.reduce((a, l) => a + l.usage.input_tokens, 0)
    // the first request wrote the prefix, the four after it read it: what the fake served is what the lines say
    expect(read).toBe(cached.cache.cachedTokens)
    expect(out.map((l) => l.usage.cached_input_tokens > 0)).toEqual([false, true, true, true, true])
    expect(out.map((l) => l.usage.cache_write_tokens)).toEqual([0, 0, 0, 0, 0])
    // gpt-4.1-mini: $0.40 input, $0.10 cached: each cached token saved $0.30 a million
    for (const l of out)
      expect(l.prompt_cache_saved_usd).toBeCloseTo((l.usage.cached_input_tokens * 0.3) / 1e6, 15)
    const status = JSON.parse((await at("status", "prefix", "--json")).stdout) as {
      prompt_cache: { read_tokens: number; write_tokens: number; saved_usd: number; saved_share: number }
    }
    const share = Math.round(((read * 0.3) / (input * 0.4)) * 1e4) / 1e4
    expect({ ...status.prompt_cache, saved_usd: 0 }).toEqual({
      read_tokens: read,
      write_tokens: 0,
      saved_usd: 0,
      saved_share: share,
    })
    expect(status.prompt_cache.saved_usd).toBeCloseTo((read * 0.3) / 1e6, 6)
    const sum = out.reduce((a, l) => a + l.prompt_cache_saved_usd, 0)
    expect(sum).toBeCloseTo(status.prompt_cache.saved_usd, 6)
    const text = (await at("status", "prefix")).stdout.split("\n")
    // the text says the JSON's figure, as `usd` shows dollars
    const usd = status.prompt_cache.saved_usd
    const saved = `$${usd.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: usd < 1 ? 4 : 2 })}`
    expect(text.filter((t) => t.startsWith("caching "))).toEqual([
      `caching   ${read.toLocaleString("en-US")} tokens read, 0 written · saved ${saved} (${Math.trunc(share * 100)}% of input)`,
    ])
    const [head, ...rows] = csv((await at("results", "prefix", "--format", "csv", "--no-join")).stdout)
    const col = head!.indexOf("prompt_cache_saved_usd")
    expect(head!.slice(col, col + 2)).toEqual(["prompt_cache_saved_usd", "cache_write_tokens"])
    expect(rows.map((r) => Number(r[col]))).toEqual(out.map((l) => l.prompt_cache_saved_usd))
  })
})

describe.skipIf(SKIP_PG)("on PostgreSQL (--store)", () => {
  test("csv and parquet from a PostgreSQL store; --since-last-export's marks kept there", async () => {
    await using pg = await pgSchema()
    writeFileSync(
      tmp.join("pg.jsonl"),
      ["alpha", "beta"].map((t, i) => JSON.stringify(row(i + 1, t))).join("\n") + "\n",
    )
    writeFileSync(
      tmp.join("pg.toml"),
      readFileSync(tmp.join("job.toml"), "utf8")
        .replace('name = "labels"', 'name = "pg"')
        .replace("in.jsonl", "pg.jsonl"),
    )
    const at = (...args: string[]) => cli(...args, "--store", pg.url)
    expect((await at("run", "pg.toml")).code).toBe(0)
    const [head, ...rows] = csv((await at("results", "pg", "--format", "csv", "--no-join")).stdout)
    expect(head).toEqual([
      "id",
      "state",
      "attempts",
      "cost_usd",
      "prompt_cache_saved_usd",
      "cache_write_tokens",
      "cached",
      "error",
      "output.label",
      "output.confidence",
      "output.tags",
      "output.extra",
    ])
    expect(rows.map((r) => [r[0], r[1], r[8], r[10]])).toEqual([
      ["r1", "completed", "ALPHA", '["t","alpha"]'],
      ["r2", "completed", "BETA", '["t","beta"]'],
    ])
    const sum = rows.reduce((a, r) => a + Number(r[3]), 0)
    const status = JSON.parse((await at("status", "pg", "--json")).stdout) as { spend: { usd: number } }
    expect(sum).toBeCloseTo(status.spend.usd, 18)
    expect((await at("results", "pg", "--since-last-export", "--out", "pg1.parquet")).stderr).toBe(
      "wrote 2 results to pg1.parquet\n",
    )
    appendFileSync(tmp.join("pg.jsonl"), JSON.stringify(row(3, "gamma")) + "\n")
    expect((await at("run", "pg.toml")).code).toBe(0)
    expect((await at("results", "pg", "--since-last-export", "--out", "pg2.parquet")).code).toBe(0)
    const read = async (name: string) =>
      (await parquetReadObjects({
        file: await asyncBufferFromFile(tmp.join(name)),
        columns: ["id", "output.label"],
      })) as Record<string, unknown>[]
    expect(await read("pg1.parquet")).toEqual([
      { id: "r1", "output.label": "ALPHA" },
      { id: "r2", "output.label": "BETA" },
    ])
    expect(await read("pg2.parquet")).toEqual([{ id: "r3", "output.label": "GAMMA" }])
  })
})
