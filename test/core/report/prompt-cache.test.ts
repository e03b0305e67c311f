/**
 * The provider's prompt cache and the priming calls as the reports show them: `spool status` (view and text), the
 * result lines and the export's columns, from a real SQLite ledger. Prices: claude-sonnet-4-5, $3 input, $0.30 a
 * cached read, $3.75 a 5-minute cache write ($6 a 1-hour one), $15 output, per million tokens.
 */
import { describe, expect, test } from "bun:test"
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects } from "hyparquet"
import Papa from "papaparse"
import type { Job } from "../../../src/core/job/job.ts"
import type { Ledger } from "../../../src/core/ledger/ledger.ts"
import * as sqlite from "../../../src/core/ledger/sqlite/sqlite.ts"
import type { Item, Prime, Run, Summary } from "../../../src/core/ledger/types.ts"
import { csvLines, jsonlLines, plan, type ExportOptions } from "../../../src/core/report/export.ts"
import { writeParquet } from "../../../src/core/report/parquet.ts"
import { pipelineOf, pipelineText } from "../../../src/core/report/pipeline.ts"
import { pricesOf, resultLine, status, statusText } from "../../../src/core/report/report.ts"
import { primingOf, promptCacheOf } from "../../../src/core/report/savings.ts"
import { views } from "../../../src/page/views.ts"
import { JOB, rows } from "../../lib/ledger.ts"
import { tmpdir } from "../../lib/tmp.ts"

const SONNET: Job = { ...JOB, name: "pc", provider: { ...JOB.provider, model: "claude-sonnet-4-5" } }

/** A run of `job` with `n` rows (k1…kn), its inputs read to their end. */
async function runOf(l: Ledger, job: Job, n: number): Promise<Run> {
  const { run } = await l.runs.create({
    name: job.name,
    job,
    fingerprint: "fp",
    resume: "spool run job.toml",
    inputs: [{ path: "/in.jsonl", format: "jsonl" }],
  })
  const input = (await l.runs.inputs(run.id))[0]!
  await l.ingest.add(run.id, input, { rows: rows(n), problems: [], checkpoint: { offset: n } }, true)
  await l.ingest.done(run.id)
  return run
}

/**
 * Three items of a million input tokens and 100 out each: k1 wrote the 3,000-token prefix and read 997,000; k2 and
 * k3 read all of theirs. 2,997,000 read and 3,000 written in all.
 */
async function cachedRun(l: Ledger, job = SONNET): Promise<Run> {
  const run = await runOf(l, job, 3)
  const claimed = await l.claims.step(run.id, "w", [], 3, 60_000)
  expect(claimed).toHaveLength(3)
  const used = [
    { cachedTokens: 997_000, writeTokens: 3_000 },
    { cachedTokens: 1_000_000, writeTokens: 0 },
    { cachedTokens: 1_000_000, writeTokens: 0 },
  ]
  await l.claims.step(
    run.id,
    "w",
    claimed.map((c, i) => ({
      item: c.id,
      attempt: c.attempt,
      to: "completed" as const,
      label: "ok",
      output: `answer ${i + 1}`,
      inputTokens: 1_000_000,
      outputTokens: 100,
      ...used[i]!,
      latencyMs: 5,
      endedAt: Date.now(),
    })),
    0,
    60_000,
  )
  return run
}

const prime = (o: Partial<Prime>): Prime => ({
  prefix: "p1",
  batch: null,
  owner: "w",
  startedAt: 500,
  endedAt: 1_000,
  outcome: "ok",
  inputTokens: 3_010,
  outputTokens: 1,
  cachedTokens: 0,
  writeTokens: 3_000,
  latencyMs: 40,
  ...o,
})

async function lines(l: Ledger, run: Run) {
  const line = await resultLine(l, run)
  const out = []
  for await (const item of l.reads.items(run.id)) out.push(line(item as Item))
  return out
}

async function all(text: AsyncIterable<string>): Promise<string> {
  let out = ""
  for await (const t of text) out += t
  return out
}

describe("the prompt cache in spool status", () => {
  test("reads and writes, what they saved (reads at $3 less $0.30, writes' $0.75 premium), its share of the input", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const run = await cachedRun(l)
    const v = await status(l, run)
    // 2,997,000 × 2.70 − 3,000 × 0.75 = 8,091,900 − 2,250 per million: $8.08965, of $9.00 the input costs uncached
    expect(v.prompt_cache).toEqual({
      read_tokens: 2_997_000,
      write_tokens: 3_000,
      saved_usd: 8.08965,
      saved_share: 0.8989,
    })
    expect(v.priming).toEqual({ calls: 0, failed: 0, cost_usd: 0, last_at: null })
    // spend: the reads at $0.30, the writes at $3.75, the output at $15: 899,100 + 11,250 + 4,500 per million
    expect(v.spend.usd).toBeCloseTo(0.91485, 12)
    const text = statusText(v).split("\n")
    expect(text.filter((t) => /^(caching|priming|spend) /.test(t))).toEqual([
      "spend     $0.9149 so far (built-in prices for claude-sonnet-4-5 (2025-11))",
      "caching   2,997,000 tokens read, 3,000 written · saved $8.09 (89% of input)",
    ])
    await l.close()
  })

  test("priming calls: counted with the failed ones, the answered ones' tokens at the full price, in spend and in the cache's figures", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const run = await cachedRun(l)
    await l.primes.record(run.id, prime({}))
    await l.primes.record(run.id, prime({ endedAt: 2_000, cachedTokens: 3_000, writeTokens: 0 }))
    await l.primes.record(
      run.id,
      prime({
        endedAt: 3_000,
        outcome: "failed",
        error: "HTTP 529",
        status: 529,
        inputTokens: 0,
        outputTokens: 0,
        writeTokens: 0,
      }),
    )
    const v = await status(l, run)
    // 20 uncached at $3, 3,000 read at $0.30, 3,000 written at $3.75, 2 out at $15: 60 + 900 + 11,250 + 30 per million
    expect(v.priming).toEqual({ calls: 3, failed: 1, cost_usd: 0.01224, last_at: "1970-01-01T00:00:02.000Z" })
    expect(v.spend.usd).toBeCloseTo(0.91485 + 0.01224, 12)
    // 3,000,000 read and 6,000 written: 8,100,000 − 4,500 per million, of 3,006,020 input tokens at $3 ($9.01806)
    // USD at full precision: to the float's last digits (8.095500000000001), so compared as near as they can be
    expect({ ...v.prompt_cache, saved_usd: 0 }).toEqual({
      read_tokens: 3_000_000,
      write_tokens: 6_000,
      saved_usd: 0,
      saved_share: 0.8977,
    })
    expect(v.prompt_cache.saved_usd).toBeCloseTo(8.0955, 12)
    const text = statusText(v).split("\n")
    expect(text.filter((t) => /^(caching|priming) /.test(t))).toEqual([
      "caching   3,000,000 tokens read, 6,000 written · saved $8.10 (89% of input)",
      "priming   3 calls (1 failed) · $0.0122",
    ])
    // the --json shape: plain numbers and strings
    expect(JSON.parse(JSON.stringify({ prompt_cache: v.prompt_cache, priming: v.priming }))).toEqual({
      prompt_cache: {
        read_tokens: 3_000_000,
        write_tokens: 6_000,
        saved_usd: v.prompt_cache.saved_usd,
        saved_share: 0.8977,
      },
      priming: { calls: 3, failed: 1, cost_usd: 0.01224, last_at: "1970-01-01T00:00:02.000Z" },
    })
    await l.close()
  })

  test("a run that never used the prompt cache or primed: no line of either, zeros in the view", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const run = await runOf(l, SONNET, 1)
    const [c] = await l.claims.step(run.id, "w", [], 1, 60_000)
    const done = { item: c!.id, attempt: c!.attempt, to: "completed" as const, label: "ok", output: "a" }
    await l.claims.step(
      run.id,
      "w",
      [{ ...done, inputTokens: 10, outputTokens: 2, latencyMs: 1, endedAt: 1 }],
      0,
      60_000,
    )
    const v = await status(l, run)
    expect([v.prompt_cache, v.priming]).toEqual([
      { read_tokens: 0, write_tokens: 0, saved_usd: 0, saved_share: null },
      { calls: 0, failed: 0, cost_usd: 0, last_at: null },
    ])
    expect(statusText(v)).not.toMatch(/^(caching|priming) /m)
    await l.close()
  })
})

describe("what the prompt cache saved, from a run's totals", () => {
  /** A real summary of an empty run, its token figures then set. */
  async function summaryWith(o: Partial<Summary>): Promise<Summary> {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const s = await l.reads.summary((await runOf(l, SONNET, 1)).id)
    await l.close()
    return { ...s, ...o }
  }
  const price = pricesOf({ job: SONNET } as Run)!

  test("writes that outweigh the reads: a negative saving, said as a loss", async () => {
    const s = await summaryWith({ inputTokens: 10_000, writeTokens: 10_000, cachedTokens: 0 })
    const v = promptCacheOf(s, price)
    // 10,000 written at $0.75 over the input price, of $0.03 uncached
    expect(v).toEqual({ read_tokens: 0, write_tokens: 10_000, saved_usd: -0.0075, saved_share: -0.25 })
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const view = { ...(await status(l, await runOf(l, SONNET, 1))), prompt_cache: v }
    await l.close()
    expect(statusText(view)).toContain(
      "\ncaching   0 tokens read, 10,000 written · saved -$0.0075 (-25% of input): the cache writes cost more than its reads saved\n",
    )
  })

  test("the batch part at the batch price: half the saving, and half the input it is a share of", async () => {
    const batch = { inputTokens: 1_000_000, outputTokens: 0, cachedTokens: 1_000_000, writeTokens: 0 }
    const s = await summaryWith({ inputTokens: 1_000_000, cachedTokens: 1_000_000, batch })
    expect(promptCacheOf(s, price)).toEqual({
      read_tokens: 1_000_000,
      write_tokens: 0,
      saved_usd: 1.35,
      saved_share: 0.9,
    })
  })

  test("a job with the 1-hour cache: its writes at $6, twice the input price", async () => {
    const s = await summaryWith({ inputTokens: 10_000, writeTokens: 10_000 })
    const hour = pricesOf({ job: { ...SONNET, request: { ...SONNET.request, cache: "1h" } } } as Run)!
    expect(hour.cache_write).toBe(6)
    expect(promptCacheOf(s, hour).saved_usd).toBe(-0.03)
    expect(
      primingOf(
        { ...s, primes: { ...s.primes, count: 1, inputTokens: 1_000_000, writeTokens: 1_000_000 } },
        hour,
      ).cost_usd,
    ).toBe(6)
  })

  test("no price for the model: the tokens said, the saving and the priming's cost unknown (null), never $0", async () => {
    const s = await summaryWith({ inputTokens: 5_000, cachedTokens: 4_000, writeTokens: 1_000 })
    const primed = { ...s, primes: { ...s.primes, count: 2, failed: 0, lastAt: 5_000, inputTokens: 100 } }
    const v = promptCacheOf(primed, undefined)
    const p = primingOf(primed, undefined)
    expect([v, p]).toEqual([
      { read_tokens: 4_000, write_tokens: 1_000, saved_usd: null, saved_share: null },
      { calls: 2, failed: 0, cost_usd: null, last_at: "1970-01-01T00:00:05.000Z" },
    ])
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const view = { ...(await status(l, await runOf(l, SONNET, 1))), prompt_cache: v, priming: p }
    await l.close()
    const text = statusText(view).split("\n")
    expect(text.filter((t) => /^(caching|priming) /.test(t))).toEqual([
      "caching   4,000 tokens read, 1,000 written · saved unknown (no price)",
      "priming   2 calls · cost unknown (no price)",
    ])
  })
})

describe("the prompt cache in the results", () => {
  // k1: 997,000 read × $2.70 less 3,000 written × $0.75; k2 and k3: 1,000,000 read × $2.70
  const SAVED = [2.68965, 2.7, 2.7]

  test("each result line: its cache writes in usage, and what the cache saved it", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const run = await cachedRun(l)
    const got = await lines(l, run)
    expect(got.map((r) => r.usage)).toEqual([
      {
        input_tokens: 1_000_000,
        output_tokens: 100,
        cached_input_tokens: 997_000,
        cache_write_tokens: 3_000,
      },
      { input_tokens: 1_000_000, output_tokens: 100, cached_input_tokens: 1_000_000, cache_write_tokens: 0 },
      { input_tokens: 1_000_000, output_tokens: 100, cached_input_tokens: 1_000_000, cache_write_tokens: 0 },
    ])
    got.forEach((r, i) => expect(r.prompt_cache_saved_usd).toBeCloseTo(SAVED[i]!, 12))
    // the lines' savings add up to the run's (no priming here)
    const sum = got.reduce((a, r) => a + r.prompt_cache_saved_usd!, 0)
    expect(sum).toBeCloseTo((await status(l, run)).prompt_cache.saved_usd!, 6)
    // with no price for the model: unknown, not 0
    const own = await cachedRun(l, {
      ...SONNET,
      name: "own",
      provider: { ...SONNET.provider, model: "my-own" },
    })
    expect((await lines(l, own)).map((r) => [r.cost_usd, r.prompt_cache_saved_usd])).toEqual([
      [null, null],
      [null, null],
      [null, null],
    ])
    await l.close()
  })

  test("jsonl, csv and parquet: cache_write_tokens and prompt_cache_saved_usd, after cost_usd", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const run = await cachedRun(l)
    try {
      const json = (await all(jsonlLines(l, run, { format: "jsonl", join: false })))
        .trim()
        .split("\n")
        .map((x) => JSON.parse(x) as Record<string, unknown>)
      expect(Object.keys(json[0]!)).toEqual([
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
      expect(json.map((j) => (j.usage as { cache_write_tokens: number }).cache_write_tokens)).toEqual([
        3_000, 0, 0,
      ])

      const o: ExportOptions = { format: "csv", join: true }
      const columns = await plan(l, run, o)
      const csv = Papa.parse<string[]>((await all(csvLines(l, run, o, columns))).trimEnd()).data
      expect(csv[0]).toEqual([
        "text",
        "id",
        "state",
        "attempts",
        "cost_usd",
        "prompt_cache_saved_usd",
        "cache_write_tokens",
        "cached",
        "error",
        "output",
      ])
      expect(csv.slice(1).map((r) => [r[1], r[6]])).toEqual([
        ["k1", "3000"],
        ["k2", "0"],
        ["k3", "0"],
      ])
      csv.slice(1).forEach((r, i) => expect(Number(r[5])).toBeCloseTo(SAVED[i]!, 12))

      const p: ExportOptions = { format: "parquet", join: true }
      const path = tmp.join("r.parquet")
      expect(await writeParquet(l, run, p, await plan(l, run, p), path)).toBe(3)
      const file = await asyncBufferFromFile(path)
      const meta = await parquetMetadataAsync(file)
      expect(
        meta.schema
          .filter((s) => s.name === "prompt_cache_saved_usd" || s.name === "cache_write_tokens")
          .map((s) => [s.name, s.type, s.repetition_type]),
      ).toEqual([
        ["prompt_cache_saved_usd", "DOUBLE", "OPTIONAL"],
        ["cache_write_tokens", "INT64", "OPTIONAL"],
      ])
      const back = (await parquetReadObjects({
        file,
        columns: ["id", "prompt_cache_saved_usd", "cache_write_tokens"],
      })) as { id: string; prompt_cache_saved_usd: number; cache_write_tokens: bigint }[]
      expect(back.map((r) => [r.id, r.cache_write_tokens])).toEqual([
        ["k1", 3_000n],
        ["k2", 0n],
        ["k3", 0n],
      ])
      back.forEach((r, i) => expect(r.prompt_cache_saved_usd).toBeCloseTo(SAVED[i]!, 12))
    } finally {
      await l.close()
    }
  })
})

describe("the prompt cache of a pipeline run", () => {
  test("its steps' reads, writes, savings and priming together, in the text and on the page", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const shapes = [{ name: "classify", kind: "model" as const, needs: [] }]
    const { run: p } = await l.runs.create({
      name: "p",
      job: { ...SONNET, name: "p", pipeline: shapes },
      fingerprint: "fp",
      resume: "spool run job.toml",
      inputs: [{ path: "/in.jsonl", format: "jsonl" }],
    })
    const input = (await l.runs.inputs(p.id))[0]!
    await l.ingest.add(p.id, input, { rows: rows(3), problems: [], checkpoint: { offset: 3 } }, true)
    await l.ingest.done(p.id)
    const { run: step } = await l.runs.create({
      name: "p.classify",
      job: { ...SONNET, name: "p.classify" },
      fingerprint: "fp",
      resume: "spool run job.toml",
      inputs: [{ path: "/in.jsonl", format: "jsonl" }],
      parent: { run: p.id, step: "classify" },
    })
    const items = []
    for await (const i of l.reads.items(p.id)) items.push(i)
    await l.steps.add(
      step.id,
      items.map((i) => ({
        input: i.input,
        key: i.key,
        row: i.row,
        source_id: null,
        data: i.data,
        state: "pending" as const,
      })),
    )
    const claimed = await l.claims.step(step.id, "w", [], 3, 60_000)
    await l.claims.step(
      step.id,
      "w",
      claimed.map((c, i) => ({
        item: c.id,
        attempt: c.attempt,
        to: "completed" as const,
        label: "ok",
        output: "a",
        inputTokens: 1_000_000,
        outputTokens: 100,
        cachedTokens: i === 0 ? 997_000 : 1_000_000,
        writeTokens: i === 0 ? 3_000 : 0,
        latencyMs: 5,
        endedAt: Date.now(),
      })),
      0,
      60_000,
    )
    await l.primes.record(step.id, prime({}))
    const v = (await pipelineOf(l, p))!
    // the step's 2,997,000 read and 3,000 + 3,000 (the priming's) written: 8,091,900 − 4,500 per million
    expect({ ...v.prompt_cache, saved_usd: 0 }).toEqual({
      read_tokens: 2_997_000,
      write_tokens: 6_000,
      saved_usd: 0,
    })
    expect(v.prompt_cache.saved_usd).toBeCloseTo(8.0874, 12)
    // 10 in at $3, 3,000 written at $3.75, 1 out at $15
    expect({ ...v.priming, cost_usd: 0 }).toEqual({ calls: 1, failed: 0, cost_usd: 0 })
    expect(v.priming.cost_usd).toBeCloseTo(0.011295, 15)
    expect(
      pipelineText(v)
        .split("\n")
        .filter((t) => /^(caching|priming) /.test(t)),
    ).toEqual(["caching   2,997,000 tokens read, 6,000 written · saved $8.09", "priming   1 call · $0.0113"])
    const page = views().figures({ ...v.run, chart: null, step: null, pipeline: v } as never)
    expect(
      [...page.matchAll(/<dd data-k="(prompt cache|priming)">([^<]*)<\/dd>/g)].map((m) => [m[1], m[2]]),
    ).toEqual([
      ["prompt cache", "2,997,000 read · 6,000 written · saved $8.09"],
      ["priming", "1 call · $0.0113"],
    ])
    await l.close()
  })
})
