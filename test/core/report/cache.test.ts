/** The response cache as the reports show it: result lines of hits, the status's cache figures, a hit's attempt. */
import { describe, expect, test } from "bun:test"
import type { Job } from "../../../src/core/job/job.ts"
import type { CacheEntry, Ledger } from "../../../src/core/ledger/ledger.ts"
import * as sqlite from "../../../src/core/ledger/sqlite/sqlite.ts"
import type { Item, Run } from "../../../src/core/ledger/types.ts"
import { attemptNote, resultLine, status, statusText } from "../../../src/core/report/report.ts"
import { JOB, rows, seed } from "../../lib/ledger.ts"
import { tmpdir } from "../../lib/tmp.ts"

/** An answer the cache holds: paid 30 tokens in (5 of them cached) and 20 out, for $0.25. */
const entry = (key: string): CacheEntry => ({
  key,
  output: "cached answer",
  provider: "openai",
  model: "gpt-4o-mini",
  input_tokens: 30,
  output_tokens: 20,
  cached_input_tokens: 5,
  cost_usd: 0.25,
  created_at: Date.now(),
})

/** A run of `job` with 3 rows (k1…k3), its inputs read to their end. */
async function runOf(l: Ledger, job: Job): Promise<Run> {
  const { run } = await l.runs.create({
    name: job.name,
    job,
    fingerprint: "fp",
    resume: "spool run job.toml",
    inputs: [{ path: "/in.jsonl", format: "jsonl" }],
  })
  const input = (await l.runs.inputs(run.id))[0]!
  await l.ingest.add(run.id, input, { rows: rows(3), problems: [], checkpoint: { offset: 3 } }, true)
  await l.ingest.done(run.id)
  return run
}

/** k1 served from the cache; k2 a miss, then paid for by a call (10 in, 4 out); k3 not looked up yet. */
async function serveOne(l: Ledger, run: Run): Promise<void> {
  const [k1, k2] = await l.cache.pending(run.id, { after: 0, limit: 2 })
  expect(
    await l.cache.serve(
      run.id,
      "w",
      [{ id: k1!.id, key: "key-1", entry: entry("key-1") }],
      [{ id: k2!.id, key: "key-2" }],
    ),
  ).toEqual({ hits: 1, misses: 1 })
  const [claimed] = await l.claims.step(run.id, "w", [], 10, 60_000, { looked: true })
  const ended = { item: claimed!.id, attempt: claimed!.attempt, latencyMs: 5, endedAt: Date.now() }
  const paid = { ...ended, to: "completed" as const, label: "ok", output: "paid answer" }
  await l.claims.step(run.id, "w", [{ ...paid, inputTokens: 10, outputTokens: 4 }], 0, 60_000)
}

async function lines(l: Ledger, run: Run) {
  const line = await resultLine(l, run)
  const out = []
  for await (const item of l.reads.items(run.id)) out.push(line(item as Item))
  return out
}

const source = (row: number) => ({ file: "/in.jsonl", row, id: null })
const none = { input_tokens: 0, output_tokens: 0, cached_input_tokens: 0, cache_write_tokens: 0 }

describe("the response cache in the reports", () => {
  test("a hit's result line: cached, cost 0, and what its answer cost when it was paid for; the others not cached", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const run = await runOf(l, JOB)
    await serveOne(l, run)
    const [hit, paid, pending] = await lines(l, run)
    expect(hit).toEqual({
      id: "k1",
      state: "completed",
      output: "cached answer",
      error: null,
      attempts: 0,
      usage: none,
      cost_usd: 0,
      prompt_cache_saved_usd: 0,
      cached: true,
      cached_usage: { input_tokens: 30, output_tokens: 20, cached_input_tokens: 5, cost_usd: 0.25 },
      source: source(1),
    })
    // cached right after what the item cost, the source last
    expect(Object.keys(hit!)).toEqual([
      "id",
      "state",
      "output",
      "error",
      "attempts",
      "usage",
      "cost_usd",
      "prompt_cache_saved_usd",
      "cached",
      "cached_usage",
      "source",
    ])
    // gpt-4o-mini at $0.15 and $0.60 per million: 10 in and 4 out, $0.0000039 at full precision (issue 17: not 0.000004)
    expect(paid).toEqual({
      id: "k2",
      state: "completed",
      output: "paid answer",
      error: null,
      attempts: 1,
      usage: { input_tokens: 10, output_tokens: 4, cached_input_tokens: 0, cache_write_tokens: 0 },
      cost_usd: 0.0000039,
      prompt_cache_saved_usd: 0,
      cached: false,
      source: source(2),
    })
    expect(pending).toEqual({
      id: "k3",
      state: "pending",
      output: null,
      error: null,
      attempts: 0,
      usage: none,
      cost_usd: 0,
      prompt_cache_saved_usd: 0,
      cached: false,
      source: source(3),
    })
    await l.close()
  })

  test("a model without a price: a hit still costs 0 (no call was made), a paid item's cost is unknown", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const job: Job = { ...JOB, name: "own", provider: { ...JOB.provider, model: "my-own-model" } }
    const run = await runOf(l, job)
    await serveOne(l, run)
    const [hit, paid] = await lines(l, run)
    expect([hit!.cost_usd, hit!.cached, paid!.cost_usd, paid!.cached]).toEqual([0, true, null, false])
    // what the hits saved counts answers of a known price only: with none for the model, 0 is not said as $0.00
    const v = await status(l, run)
    expect(v.cache).toEqual({ hits: 1, misses: 1, saved_usd: 0.25 })
    const unpriced = { ...v, cache: { hits: 1, misses: 1, saved_usd: 0 } }
    expect(statusText(unpriced)).toContain("\ncache     1 hit · 1 miss · saved unknown (no price)\n")
    // nothing served: nothing saved, price or not
    const missed = { ...v, cache: { hits: 0, misses: 2, saved_usd: 0 } }
    expect(statusText(missed)).toContain("\ncache     0 hits · 2 misses · saved $0.00\n")
    await l.close()
  })

  test("status: the run's hits, misses and savings in --json always, as a text line once the cache was asked", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const { run: never } = await seed(l, 2, "never")
    const untouched = await status(l, never)
    expect(untouched.cache).toEqual({ hits: 0, misses: 0, saved_usd: 0 })
    expect(statusText(untouched)).not.toContain("cache")

    const run = await runOf(l, { ...JOB, name: "served" })
    await serveOne(l, run)
    const v = await status(l, run)
    expect(v.cache).toEqual({ hits: 1, misses: 1, saved_usd: 0.25 })
    // the hit's usage is 0: only the paid item counts in the run's spend, and in the average the rest is priced at
    expect([v.spend.usd, v.spend.remaining_usd]).toEqual([0.0000039, 0.000004])
    const text = statusText(v).split("\n")
    expect(text.slice(3, 6)).toEqual([
      "spend     $0.00 so far · ~$0.00 for the rest (built-in prices for gpt-4o-mini (2025-11))",
      "cache     1 hit · 1 miss · saved $0.25",
      text[5]!,
    ])
    expect(text[5]).toStartWith("time      ")
    await l.close()
  })

  test("the status line writes counts with thousands separators, and what was saved in dollars", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const { run } = await seed(l, 2)
    const v = { ...(await status(l, run)), cache: { hits: 1200, misses: 34, saved_usd: 1.23456 } }
    expect(statusText(v)).toContain("\ncache     1,200 hits · 34 misses · saved $1.23\n")
    await l.close()
  })

  test("a hit's attempt is numbered 0, of outcome cached, and says why it did not count", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const run = await runOf(l, JOB)
    await serveOne(l, run)
    const [page] = await l.reads.page(run.id, { after: 0, limit: 1 })
    const [attempt] = page!.attempts_list
    expect([attempt!.n, attempt!.outcome, attempt!.input_tokens]).toEqual([0, "cached", null])
    expect(attemptNote(attempt!)).toBe("served from the response cache: no call, not counted")
    expect(attemptNote({ n: 1, outcome: "ok" })).toBeNull()
    await l.close()
  })
})
