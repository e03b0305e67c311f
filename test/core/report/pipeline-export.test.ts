/**
 * A pipeline run's results (src/core/report/pipeline-export.ts) on real stores: one row per input row, in ledger
 * order, each step's state, answer, error and cost beside it, as JSONL, CSV and Parquet; a row a step has not reached;
 * the same key in two inputs kept apart; step items made in another order than the rows (past the read-ahead window,
 * looked up by key); names that would clash. The pipeline is built with the ledger's own calls (runs, ingest, steps,
 * claims), so the same test runs on SQLite and on PostgreSQL.
 */
import { describe, expect, test } from "bun:test"
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects } from "hyparquet"
import type { Job } from "../../../src/core/job/job.ts"
import type { Ledger, StepItem } from "../../../src/core/ledger/ledger.ts"
import { open } from "../../../src/core/ledger/open.ts"
import type { Item, Outcome, Run } from "../../../src/core/ledger/types.ts"
import { Clash } from "../../../src/core/report/columns.ts"
import { csvOf, type ExportOptions } from "../../../src/core/report/export.ts"
import { writeTable } from "../../../src/core/report/parquet.ts"
import { joined, Reader } from "../../../src/core/report/pipeline-export.ts"
import { JOB } from "../../lib/ledger.ts"
import { pgSchema, SKIP_PG } from "../../lib/pg.ts"
import { tmpdir } from "../../lib/tmp.ts"

const INPUTS = [
  { path: "/a.jsonl", format: "jsonl" },
  { path: "/b.jsonl", format: "jsonl" },
]

const LABEL = {
  name: "label",
  schema: {
    type: "object",
    properties: { label: { type: "string" }, confidence: { type: "number" } },
  },
}

async function itemsOf(l: Ledger, run: number): Promise<Item[]> {
  const out: Item[] = []
  for await (const i of l.reads.items(run)) out.push(i)
  return out
}

/** A step's item for the row `i`, in `state`. */
const made = (i: Item, state: StepItem["state"], extra: Partial<StepItem> = {}): StepItem => ({
  input: i.input,
  key: i.key,
  row: i.row,
  source_id: i.source_id,
  data: i.data,
  state,
  ...extra,
})

/** Claims every pending item of `run` and ends each as `end` says (by its key and input). */
async function settle(l: Ledger, run: Run, end: (key: string) => Partial<Outcome> & Pick<Outcome, "to">) {
  const claimed = await l.claims.step(run.id, "w", [], 1_000, 60_000)
  const outcomes = claimed.map((c): Outcome => ({
    item: c.id,
    attempt: c.attempt,
    label: "ok",
    latencyMs: 5,
    endedAt: Date.now(),
    ...end(`${JSON.parse(c.data).text}`),
  }))
  await l.claims.step(run.id, "w", outcomes, 0, 60_000)
}

/**
 * A pipeline run "t" of /a.jsonl (k1…k4, source ids s1…) and /b.jsonl (k1), with its steps' runs:
 * - classify (structured): a:k1 bug 0.25, a:k2 billing, a:k3 failed, b:k1 bug 0.75; a:k4 not reached.
 * - summary (text, bugs only): a:k1 completed, a:k2 skipped (when), a:k3 skipped (blocked), b:k1 pending.
 * - check (review of summary): a:k1 waits for review, a:k2 and a:k3 skipped (blocked).
 * The steps' items are made in another order than the rows (b:k1 first in classify, last in summary), as the waves of
 * a running pipeline make them. `names` renames the three steps.
 */
async function pipeline(
  l: Ledger,
  names = ["classify", "summary", "check"],
  schema: Job["output"] = LABEL,
): Promise<Run> {
  const [c, s, k] = names as [string, string, string]
  const shapes = [
    { name: c, kind: "model" as const, needs: [] },
    { name: s, kind: "model" as const, needs: [c], when: `${c}.label == 'bug'` },
    { name: k, kind: "review" as const, needs: [s] },
  ]
  const { run } = await l.runs.create({
    name: "t",
    job: { ...JOB, name: "t", pipeline: shapes },
    fingerprint: "fp",
    resume: "spool run job.toml",
    inputs: INPUTS,
  })
  const inputs = await l.runs.inputs(run.id)
  const rows = (n: number, input: number) =>
    Array.from({ length: n }, (_, i) => ({
      key: `k${i + 1}`,
      line: i + 1,
      data: { text: `${"ab"[input]}${i + 1}` },
      ...(input === 0 ? { id: `s${i + 1}` } : {}),
    }))
  await l.ingest.add(run.id, inputs[0]!, { rows: rows(4, 0), problems: [], checkpoint: { offset: 4 } }, true)
  await l.ingest.add(run.id, inputs[1]!, { rows: rows(1, 1), problems: [], checkpoint: { offset: 1 } }, true)
  await l.ingest.done(run.id)
  const step = async (name: string, job: Job) =>
    (
      await l.runs.create({
        name: `t.${name}`,
        job: { ...job, name: `t.${name}` },
        fingerprint: "fp",
        resume: "",
        inputs: INPUTS,
        parent: { run: run.id, step: name },
      })
    ).run
  const classify = await step(c, { ...JOB, output: schema })
  const summary = await step(s, JOB)
  const check = await step(k, JOB)
  const [a1, a2, a3, , b1] = await itemsOf(l, run.id)
  await l.steps.add(classify.id, [
    made(b1!, "pending"),
    made(a1!, "pending"),
    made(a2!, "pending"),
    made(a3!, "pending"),
  ])
  const answers: Record<string, string> = {
    a1: JSON.stringify({ label: "bug", confidence: 0.25 }),
    a2: JSON.stringify({ label: "billing", confidence: 0.5 }),
    b1: JSON.stringify({ label: "bug", confidence: 0.75 }),
  }
  await settle(l, classify, (text) =>
    answers[text]
      ? { to: "completed", output: answers[text], inputTokens: 100, outputTokens: 10 }
      : { to: "failed", label: "failed", errorClass: "server", error: "HTTP 500: down", inputTokens: 0 },
  )
  await l.steps.add(summary.id, [
    made(a1!, "pending"),
    made(a2!, "skipped", { error_class: "when", error: "when is false: classify.label == 'bug'" }),
    made(a3!, "skipped", { error_class: "blocked", error: "classify failed" }),
  ])
  const claimed = await l.claims.step(summary.id, "w", [], 1, 60_000)
  expect(claimed.map((x) => x.data)).toEqual([a1!.data])
  await l.claims.step(
    summary.id,
    "w",
    [
      {
        item: claimed[0]!.id,
        attempt: claimed[0]!.attempt,
        to: "completed",
        label: "ok",
        output: "a bug, says a1",
        inputTokens: 200,
        outputTokens: 20,
        latencyMs: 5,
        endedAt: Date.now(),
      },
    ],
    0,
    60_000,
  )
  // b:k1's summary is made later, in a wave of its own: still pending
  await l.steps.add(summary.id, [made(b1!, "pending")])
  await l.steps.add(check.id, [
    made(a1!, "needs_review", { output: "a bug, says a1", error_class: "review", error: "step check" }),
    made(a2!, "skipped", { error_class: "blocked", error: "summary was skipped" }),
    made(a3!, "skipped", { error_class: "blocked", error: "summary was skipped" }),
  ])
  return run
}

async function all(lines: AsyncIterable<string>): Promise<string> {
  let text = ""
  for await (const line of lines) text += line
  return text
}

const none = { input_tokens: 0, output_tokens: 0, cached_input_tokens: 0, cache_write_tokens: 0 }
const source = (file: string, row: number, id: string | null) => ({ file, row, id })

/** The JSONL lines of the pipeline above, without the input rows. */
const LINES = [
  {
    id: "a.jsonl:k1",
    classify: {
      state: "completed",
      output: { label: "bug", confidence: 0.25 },
      error: null,
      attempts: 1,
      usage: { input_tokens: 100, output_tokens: 10, cached_input_tokens: 0, cache_write_tokens: 0 },
      cost_usd: 0.000021,
      prompt_cache_saved_usd: 0,
      cached: false,
    },
    summary: {
      state: "completed",
      output: "a bug, says a1",
      error: null,
      attempts: 1,
      usage: { input_tokens: 200, output_tokens: 20, cached_input_tokens: 0, cache_write_tokens: 0 },
      cost_usd: 0.000042,
      prompt_cache_saved_usd: 0,
      cached: false,
    },
    check: {
      state: "needs_review",
      output: "a bug, says a1",
      error: { class: "review", message: "step check" },
      attempts: 0,
      usage: none,
      cost_usd: 0,
      prompt_cache_saved_usd: 0,
      cached: false,
    },
    source: source("/a.jsonl", 1, "s1"),
  },
  {
    id: "a.jsonl:k2",
    classify: {
      state: "completed",
      output: { label: "billing", confidence: 0.5 },
      error: null,
      attempts: 1,
      usage: { input_tokens: 100, output_tokens: 10, cached_input_tokens: 0, cache_write_tokens: 0 },
      cost_usd: 0.000021,
      prompt_cache_saved_usd: 0,
      cached: false,
    },
    summary: {
      state: "skipped",
      output: null,
      error: { class: "when", message: "when is false: classify.label == 'bug'" },
      attempts: 0,
      usage: none,
      cost_usd: 0,
      prompt_cache_saved_usd: 0,
      cached: false,
    },
    check: {
      state: "skipped",
      output: null,
      error: { class: "blocked", message: "summary was skipped" },
      attempts: 0,
      usage: none,
      cost_usd: 0,
      prompt_cache_saved_usd: 0,
      cached: false,
    },
    source: source("/a.jsonl", 2, "s2"),
  },
  {
    id: "a.jsonl:k3",
    classify: {
      state: "failed",
      output: null,
      error: { class: "server", message: "HTTP 500: down" },
      attempts: 1,
      usage: none,
      cost_usd: 0,
      prompt_cache_saved_usd: 0,
      cached: false,
    },
    summary: {
      state: "skipped",
      output: null,
      error: { class: "blocked", message: "classify failed" },
      attempts: 0,
      usage: none,
      cost_usd: 0,
      prompt_cache_saved_usd: 0,
      cached: false,
    },
    check: {
      state: "skipped",
      output: null,
      error: { class: "blocked", message: "summary was skipped" },
      attempts: 0,
      usage: none,
      cost_usd: 0,
      prompt_cache_saved_usd: 0,
      cached: false,
    },
    source: source("/a.jsonl", 3, "s3"),
  },
  { id: "a.jsonl:k4", classify: null, summary: null, check: null, source: source("/a.jsonl", 4, "s4") },
  {
    id: "b.jsonl:k1",
    classify: {
      state: "completed",
      output: { label: "bug", confidence: 0.75 },
      error: null,
      attempts: 1,
      usage: { input_tokens: 100, output_tokens: 10, cached_input_tokens: 0, cache_write_tokens: 0 },
      cost_usd: 0.000021,
      prompt_cache_saved_usd: 0,
      cached: false,
    },
    summary: {
      state: "pending",
      output: null,
      error: null,
      attempts: 0,
      usage: none,
      cost_usd: 0,
      prompt_cache_saved_usd: 0,
      cached: false,
    },
    check: null,
    source: source("/b.jsonl", 1, null),
  },
]

const CSV = [
  "text,id,classify.state,classify.cost_usd,classify.error,classify.label,classify.confidence,summary.state,summary.cost_usd,summary.error,summary.output,check.state,check.cost_usd,check.error,check.output",
  'a1,a.jsonl:k1,completed,0.000021,,bug,0.25,completed,0.000042,,"a bug, says a1",needs_review,0,step check,"a bug, says a1"',
  "a2,a.jsonl:k2,completed,0.000021,,billing,0.5,skipped,0,when is false: classify.label == 'bug',,skipped,0,summary was skipped,",
  "a3,a.jsonl:k3,failed,0,HTTP 500: down,,,skipped,0,classify failed,,skipped,0,summary was skipped,",
  "a4,a.jsonl:k4,,,,,,,,,,,,,",
  "b1,b.jsonl:k1,completed,0.000021,,bug,0.75,pending,0,,,,,,",
]

/** Each test, on a store of its own: a SQLite file, or a PostgreSQL schema. */
const STORES: [string, boolean, () => Promise<{ l: Ledger; dir: string } & AsyncDisposable>][] = [
  [
    "SQLite",
    false,
    async () => {
      const tmp = await tmpdir()
      const l = await open(tmp.path)
      return {
        l,
        dir: tmp.path,
        async [Symbol.asyncDispose]() {
          await l.close()
          await tmp[Symbol.asyncDispose]()
        },
      }
    },
  ],
  [
    "PostgreSQL",
    SKIP_PG,
    async () => {
      const tmp = await tmpdir()
      const pg = await pgSchema()
      const l = await open(pg.url)
      return {
        l,
        dir: tmp.path,
        async [Symbol.asyncDispose]() {
          await l.close()
          await pg[Symbol.asyncDispose]()
          await tmp[Symbol.asyncDispose]()
        },
      }
    },
  ],
]

for (const [name, skip, store] of STORES)
  describe.skipIf(skip)(`a pipeline run's results on ${name}`, () => {
    test("jsonl: a line per row in ledger order, each step's result line (no id or source) or null where not reached", async () => {
      await using s = await store()
      const run = await pipeline(s.l)
      const o: ExportOptions = { format: "jsonl", join: false }
      const lines = (await all((await joined(s.l, run, o)).jsonl())).trim().split("\n")
      expect(lines.map((x) => JSON.parse(x) as unknown)).toEqual(LINES)
      // joined: the input row as `input`, after the source
      const withInput = (
        await all(await joined(s.l, run, { ...o, join: true }).then((x) => x.jsonl()))
      ).trim()
      const parsed = withInput.split("\n").map((x) => JSON.parse(x) as Record<string, unknown>)
      expect(parsed.map((p) => Object.keys(p))).toEqual(
        LINES.map(() => ["id", "classify", "summary", "check", "source", "input"]),
      )
      expect(parsed.map((p) => p.input)).toEqual(["a1", "a2", "a3", "a4", "b1"].map((text) => ({ text })))
    })

    test("csv: the input's columns, id, then per step its state, cost, error and answer's columns; empty where not reached", async () => {
      await using s = await store()
      const run = await pipeline(s.l)
      const x = await joined(s.l, run, { format: "csv", join: true })
      const columns = await x.columns()
      expect(await all(csvOf(columns, x.rows(columns)))).toBe(CSV.map((l) => `${l}\r\n`).join(""))
      const bare = await joined(s.l, run, { format: "csv", join: false })
      const fewer = await bare.columns()
      const text = await all(csvOf(fewer, bare.rows(fewer)))
      expect(text.split("\r\n")[0]).toBe(CSV[0]!.slice("text,".length))
      expect(text.split("\r\n")[1]).toBe(CSV[1]!.slice("a1,".length))
    })

    test("parquet: the same columns, typed from each step's schema, null where a row has no value", async () => {
      await using s = await store()
      const run = await pipeline(s.l)
      const x = await joined(s.l, run, { format: "parquet", join: false })
      const columns = await x.columns()
      const path = `${s.dir}/t.parquet`
      expect(await writeTable(path, run.name, columns, x.rows(columns))).toBe(5)
      const file = await asyncBufferFromFile(path)
      const meta = await parquetMetadataAsync(file)
      expect(meta.schema.slice(1).map((e) => `${e.name}:${e.type}`)).toEqual([
        "id:BYTE_ARRAY",
        "classify.state:BYTE_ARRAY",
        "classify.cost_usd:DOUBLE",
        "classify.error:BYTE_ARRAY",
        "classify.label:BYTE_ARRAY",
        "classify.confidence:DOUBLE",
        "summary.state:BYTE_ARRAY",
        "summary.cost_usd:DOUBLE",
        "summary.error:BYTE_ARRAY",
        "summary.output:BYTE_ARRAY",
        "check.state:BYTE_ARRAY",
        "check.cost_usd:DOUBLE",
        "check.error:BYTE_ARRAY",
        "check.output:BYTE_ARRAY",
      ])
      expect(meta.key_value_metadata).toContainEqual({ key: "spool.run", value: "t" })
      const rows = (await parquetReadObjects({ file })) as Record<string, unknown>[]
      expect(rows.map((r) => [r.id, r["classify.state"], r["summary.state"], r["check.state"]])).toEqual([
        ["a.jsonl:k1", "completed", "completed", "needs_review"],
        ["a.jsonl:k2", "completed", "skipped", "skipped"],
        ["a.jsonl:k3", "failed", "skipped", "skipped"],
        ["a.jsonl:k4", null, null, null],
        ["b.jsonl:k1", "completed", "pending", null],
      ])
      expect(rows[0]).toEqual({
        id: "a.jsonl:k1",
        "classify.state": "completed",
        "classify.cost_usd": 0.000021,
        "classify.error": null,
        "classify.label": "bug",
        "classify.confidence": 0.25,
        "summary.state": "completed",
        "summary.cost_usd": 0.000042,
        "summary.error": null,
        "summary.output": "a bug, says a1",
        "check.state": "needs_review",
        "check.cost_usd": 0,
        "check.error": "step check",
        "check.output": "a bug, says a1",
      })
      expect(rows[3]).toEqual({
        id: "a.jsonl:k4",
        ...Object.fromEntries(columns.slice(1).map((c) => [c.name, null])),
      })
    })

    test("a step's answer property named as one of its own columns is refused, naming both", async () => {
      await using s = await store()
      const clashing = {
        name: "c",
        schema: { type: "object", properties: { state: { type: "string" } } },
      }
      const run = await pipeline(s.l, ["classify", "summary", "check"], clashing)
      const x = await joined(s.l, run, { format: "csv", join: false })
      const err = await x.columns().catch((e: unknown) => e)
      expect(err).toBeInstanceOf(Clash)
      expect((err as Error).message).toBe(
        `two columns would be named "classify.state": spool's state and the output's property state`,
      )
    })
  })

describe("a pipeline's step named as a JSONL line's own key", () => {
  test("is refused for JSONL (naming --step), `input` only when joined; csv takes it", async () => {
    await using tmp = await tmpdir()
    const l = await open(tmp.path)
    try {
      const run = await pipeline(l, ["source", "input", "check"])
      const err = await joined(l, run, { format: "jsonl", join: false }).catch((e: unknown) => e)
      expect((err as Error).message).toBe(`step "source" has the name of a JSONL line's own key "source"`)
      expect((err as { hint: string }).hint).toContain("--step source")
      const x = await joined(l, run, { format: "csv", join: false })
      expect((await x.columns()).map((c) => c.name).slice(0, 3)).toEqual([
        "id",
        "source.state",
        "source.cost_usd",
      ])
    } finally {
      await l.close()
    }
  })
})

describe("joining rows to steps whose items are in another order", () => {
  test("5,000 rows, a step's items made in reverse: past the window each is looked up by key, and every row gets its own", async () => {
    await using tmp = await tmpdir()
    const l = await open(tmp.path)
    try {
      const { run } = await l.runs.create({
        name: "big",
        job: { ...JOB, name: "big", pipeline: [{ name: "s", kind: "model", needs: [] }] },
        fingerprint: "fp",
        resume: "",
        inputs: [INPUTS[0]!],
      })
      const input = (await l.runs.inputs(run.id))[0]!
      const n = 5_000
      const rows = Array.from({ length: n }, (_, i) => ({
        key: `k${i}`,
        line: i + 1,
        data: { text: `t${i}` },
      }))
      await l.ingest.add(run.id, input, { rows, problems: [], checkpoint: { offset: n } }, true)
      const step = (
        await l.runs.create({
          name: "big.s",
          job: { ...JOB, name: "big.s" },
          fingerprint: "fp",
          resume: "",
          inputs: [INPUTS[0]!],
          parent: { run: run.id, step: "s" },
        })
      ).run
      // every row but the last 10 has an item, made last row first, each answered with its own row's text
      const items = (await itemsOf(l, run.id)).slice(0, n - 10).reverse()
      await l.steps.add(
        step.id,
        items.map((i) => made(i, "completed", { output: `answer to ${JSON.parse(i.data).text}` })),
      )
      const expected = Array.from(
        { length: n },
        (_, i) => `k${i},${i < n - 10 ? `completed,0,,answer to t${i}` : ",,,"}`,
      )
      for (const window of [10_000, 2_000]) {
        const x = await joined(l, run, { format: "csv", join: false }, window)
        const columns = await x.columns()
        const text = await all(csvOf(columns, x.rows(columns)))
        expect(text).toBe(
          ["id,s.state,s.cost_usd,s.error,s.output", ...expected].map((r) => `${r}\r\n`).join(""),
        )
      }
      // the reader itself: with a window of a page, the first 2,990 rows' items are past it (looked up), the next
      // 2,000 in it, and the last 10 rows find none once the run is read to its end
      for (const [window, lookups] of [
        [10_000, 0],
        [2_000, 2_990],
      ] as const) {
        const reader = new Reader(l, step.id, window)
        const found: (string | null)[] = []
        for (const i of await itemsOf(l, run.id))
          found.push((await reader.find(i.input, i.key))?.output ?? null)
        expect(found).toEqual(Array.from({ length: n }, (_, i) => (i < n - 10 ? `answer to t${i}` : null)))
        expect(reader.lookups).toBe(lookups)
      }
    } finally {
      await l.close()
    }
  })
})
