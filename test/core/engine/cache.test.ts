/**
 * The response cache as a run uses it (engine/cache.ts): look-ups before claims and packing, answers that no longer
 * pass the job's gates, refresh, ttl, and rows asked for before they are stored. On a real SQLite store.
 */
import { describe, expect, test } from "bun:test"
import { cacheUse, cacheWrite, Lookup, type CacheUse } from "../../../src/core/engine/cache.ts"
import { identity } from "../../../src/core/engine/run.ts"
import { keyer } from "../../../src/core/job/cache.ts"
import * as registry from "../../../src/plugins/registry.ts"
import * as jobs from "../../../src/core/job/job.ts"
import * as schemas from "../../../src/core/job/schema.ts"
import type { Ledger } from "../../../src/core/ledger/ledger.ts"
import * as sqlite from "../../../src/core/ledger/sqlite/sqlite.ts"
import type { Item, Run } from "../../../src/core/ledger/types.ts"
import { pay, rows } from "../../lib/ledger.ts"
import { tmpdir } from "../../lib/tmp.ts"

const WHO = { provider: "openai", baseUrl: undefined, model: "gpt-4o-mini", options: {} }

const job = (flags: jobs.Flags = {}) =>
  jobs.load(undefined, {
    name: "r",
    input: ["/in.jsonl"],
    prompt: "Say {{text}}",
    model: "gpt-4o-mini",
    ...flags,
  }).job

/** A run of `n` rows t1…tn, ingested with the cache off (its items not looked up). */
async function runOf(l: Ledger, name: string, n: number, j = job()): Promise<Run> {
  const { run } = await l.runs.create({
    name,
    job: { ...j, name },
    fingerprint: "fp",
    resume: "",
    inputs: [{ path: "/in.jsonl", format: "jsonl" }],
  })
  const input = (await l.runs.inputs(run.id))[0]!
  await l.ingest.add(run.id, input, { rows: rows(n), problems: [], checkpoint: { offset: n } }, true)
  await l.ingest.done(run.id)
  return run
}

async function itemsOf(l: Ledger, run: number): Promise<Item[]> {
  const out: Item[] = []
  for await (const i of l.reads.items(run)) out.push(i)
  return out
}

describe("the cache's look-ups", () => {
  test("a sweep completes what the cache holds and keys the rest; an answer that no longer passes the schema is a miss, and its new answer replaces it", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const j = job({ "output-schema": undefined })
    const structured = {
      ...j,
      output: {
        name: "o",
        schema: { type: "object", properties: { label: { type: "string" } }, required: ["label"] },
      },
    }
    const use = cacheUse(structured, WHO)!
    const validate = schemas.validator(structured.output.schema)
    const a = await runOf(l, "a", 3, structured)
    await pay(l, a, use, (t) => JSON.stringify({ label: `L-${t}` }))
    // an entry damaged in the store: its answer no longer parses
    l.db.run("UPDATE cache SET output = '{\"label\":' WHERE output LIKE '%L-t2%'")
    const b = await runOf(l, "b", 4, structured)
    const swept = await new Lookup(l, b, "w2", use, validate).sweep(Infinity)
    expect(swept).toEqual({ hits: 2, looked: 4, more: false })
    const items = await itemsOf(l, b.id)
    expect(items.map((i) => [i.key, i.state, i.output])).toEqual([
      ["k1", "completed", '{"label":"L-t1"}'],
      ["k2", "pending", null],
      ["k3", "completed", '{"label":"L-t3"}'],
      ["k4", "pending", null],
    ])
    expect((await l.reads.summary(b.id)).cache).toEqual({ hits: 2, misses: 2, savedUsd: expect.any(Number) })
    // the miss is called and its answer written over the damaged entry: a third run is served it
    const [c2] = await l.claims.step(b.id, "w2", [], 1, 60_000, { looked: true })
    expect(c2!.key).toBe("k2")
    await l.claims.step(
      b.id,
      "w2",
      [
        {
          item: c2!.id,
          attempt: 1,
          to: "completed",
          label: "ok",
          output: '{"label":"new"}',
          latencyMs: 1,
          endedAt: Date.now(),
          cache: cacheWrite(use, { input_tokens: 1, output_tokens: 1 }, false),
        },
      ],
      0,
      60_000,
    )
    const c = await runOf(l, "c", 2, structured)
    expect((await new Lookup(l, c, "w3", use, validate).sweep(Infinity)).hits).toBe(2)
    expect((await itemsOf(l, c.id)).map((i) => i.output)).toEqual(['{"label":"L-t1"}', '{"label":"new"}'])
    await l.close()
  })

  test("a sweep looks up at most about `max` items a turn, and says when some are left", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const use = cacheUse(job(), WHO)!
    const run = await runOf(l, "a", 4500)
    const lookup = new Lookup(l, run, "w", use, undefined)
    expect(await lookup.sweep(2000)).toEqual({ hits: 0, looked: 2000, more: true })
    expect(await lookup.sweep(2000)).toEqual({ hits: 0, looked: 2000, more: true })
    expect(await lookup.sweep(2000)).toEqual({ hits: 0, looked: 500, more: false })
    expect(await l.cache.pending(run.id, { after: 0, limit: 10 })).toEqual([])
    await l.close()
  })

  test("with refresh nothing is served, every item keyed; a ttl serves only answers young enough", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const use = cacheUse(job(), WHO)!
    await pay(l, await runOf(l, "a", 2), use, (t) => `A-${t}`)
    const refresh = cacheUse(job({ "refresh-cache": true }), WHO)!
    expect(refresh.read).toBe(false)
    const b = await runOf(l, "b", 2)
    expect(await new Lookup(l, b, "w", refresh, undefined).sweep(Infinity)).toEqual({
      hits: 0,
      looked: 2,
      more: false,
    })
    expect(
      (await itemsOf(l, b.id)).map((i) => [
        i.state,
        i.cache_key === use.keyOf({ text: i.key.replace("k", "t") }),
      ]),
    ).toEqual([
      ["pending", true],
      ["pending", true],
    ])
    // the entries are an hour old: a ttl of 30 minutes does not serve them, one of 2 hours does
    l.db.run("UPDATE cache SET created_at = created_at - 3600000")
    const c = await runOf(l, "c", 2)
    expect(
      (await new Lookup(l, c, "w", cacheUse(job({ "cache-ttl": "30m" }), WHO)!, undefined).sweep(Infinity))
        .hits,
    ).toBe(0)
    const d = await runOf(l, "d", 2)
    expect(
      (await new Lookup(l, d, "w", cacheUse(job({ "cache-ttl": "2h" }), WHO)!, undefined).sweep(Infinity))
        .hits,
    ).toBe(2)
    expect(cacheUse(job({ cache: false }), WHO)).toBeUndefined()
    await l.close()
  })

  test("a process's first sweep asks again for the pending items an earlier one looked up", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const use = cacheUse(job(), WHO)!
    const b = await runOf(l, "b", 2)
    // b's items are looked up (both miss) before a pays for them
    expect((await new Lookup(l, b, "w", use, undefined).sweep(Infinity)).hits).toBe(0)
    await pay(l, await runOf(l, "a", 2), use, (t) => `A-${t}`)
    // b resumed: a new process's sweep serves them
    expect((await new Lookup(l, b, "w", use, undefined).sweep(Infinity)).hits).toBe(2)
    expect((await itemsOf(l, b.id)).map((i) => i.output)).toEqual(["A-t1", "A-t2"])
    await l.close()
  })

  test("rows asked for before they are stored: the keys of all, the entries of those the cache answers", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const use = cacheUse(job(), WHO)!
    await pay(l, await runOf(l, "a", 2), use, (t) => `A-${t}`)
    const b = await runOf(l, "b", 0)
    const asked = await new Lookup(l, b, "w", use, undefined).ask([
      ...rows(3),
      { key: "k9", line: 9, data: { other: 1 } },
    ])
    expect(asked.owner).toBe("w")
    expect(asked.keys).toEqual([
      use.keyOf({ text: "t1" }),
      use.keyOf({ text: "t2" }),
      use.keyOf({ text: "t3" }),
      "",
    ])
    expect([...asked.hits.entries()].map(([i, e]) => [i, e.output])).toEqual([
      [0, "A-t1"],
      [1, "A-t2"],
    ])
    await l.close()
  })

  test("a run's identity holds no API key, so the key is the same whatever key the run calls with; the base URL variable is in it", async () => {
    await registry.load([])
    const saved = { key: process.env.OPENAI_API_KEY, url: process.env.OPENAI_BASE_URL }
    try {
      delete process.env.OPENAI_BASE_URL
      process.env.OPENAI_API_KEY = "sk-first-0123456789"
      const first = identity(job())
      process.env.OPENAI_API_KEY = "sk-second-9876543210"
      const second = identity(job())
      expect(JSON.stringify(first)).not.toContain("sk-first")
      expect(second).toEqual(first)
      expect(keyer(job(), second)({ text: "x" })).toBe(keyer(job(), first)({ text: "x" }))
      process.env.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"
      const elsewhere = identity(job())
      expect(elsewhere.baseUrl).toBe("http://127.0.0.1:9/v1")
      expect(keyer(job(), elsewhere)({ text: "x" })).not.toBe(keyer(job(), first)({ text: "x" }))
    } finally {
      for (const [name, value] of [
        ["OPENAI_API_KEY", saved.key],
        ["OPENAI_BASE_URL", saved.url],
      ] as const)
        if (value === undefined) delete process.env[name]
        else process.env[name] = value
    }
  })
})
