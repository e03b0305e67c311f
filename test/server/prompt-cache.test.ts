/**
 * The provider's prompt cache and the priming calls on the status page, in process through `app.request()`: the run's
 * figures (beside the response cache's), an item's tokens and its attempts' written tokens. Prices: claude-sonnet-4-5,
 * $3 input, $0.30 a cached read, $3.75 a cache write, $15 output, per million tokens.
 */
import { expect, test } from "bun:test"
import type { Job } from "../../src/core/job/job.ts"
import { open } from "../../src/core/ledger/open.ts"
import { createApp } from "../../src/serve.ts"
import { views } from "../../src/page/views.ts"
import { JOB, rows } from "../lib/ledger.ts"
import { tmpdir } from "../lib/tmp.ts"
import { end } from "./fixture.ts"

const SONNET: Job = { ...JOB, name: "pc", provider: { ...JOB.provider, model: "claude-sonnet-4-5" } }

/** The figures of a run as the page draws them: each `<dd>` by its key. */
const figures = (html: string) =>
  Object.fromEntries([...html.matchAll(/<dd data-k="([^"]+)">([^<]*)<\/dd>/g)].map((m) => [m[1], m[2]]))

test("the run's prompt cache and priming figures beside its spend; an item's and its attempts' cached and written tokens", async () => {
  await using tmp = await tmpdir()
  const writer = await open(tmp.path)
  const { run } = await writer.runs.create({
    name: "pc",
    job: SONNET,
    fingerprint: "fp",
    resume: "spool run job.toml",
    inputs: [{ path: "/in.jsonl", format: "jsonl" }],
  })
  const input = (await writer.runs.inputs(run.id))[0]!
  await writer.ingest.add(run.id, input, { rows: rows(3), problems: [], checkpoint: { offset: 3 } }, true)
  await writer.ingest.done(run.id)
  const [a, b] = (await writer.claims.step(run.id, "w", [], 2, 60_000)).map((c) => c.id) as [number, number]
  const million = { inputTokens: 1_000_000, outputTokens: 100 }
  await writer.claims.step(
    run.id,
    "w",
    [
      end(a, "completed", { ...million, cachedTokens: 997_000, writeTokens: 3_000 }),
      end(b, "completed", { ...million, cachedTokens: 1_000_000 }),
    ],
    0,
    60_000,
  )
  const prime = {
    prefix: "p1",
    batch: null,
    owner: "w",
    startedAt: 500,
    endedAt: 1_000,
    outcome: "ok" as const,
    inputTokens: 3_010,
    outputTokens: 1,
    cachedTokens: 0,
    writeTokens: 3_000,
    latencyMs: 40,
  }
  await writer.primes.record(run.id, prime)
  await writer.primes.record(run.id, {
    ...prime,
    endedAt: 2_000,
    outcome: "failed",
    inputTokens: 0,
    outputTokens: 0,
    writeTokens: 0,
  })
  const reader = await open(tmp.path)
  try {
    const app = createApp({ ledger: reader, home: tmp.path, version: "test" })
    const detail = (await (await app.request(`/api/runs/${run.id}`)).json()) as Record<string, unknown>
    // 1,997,000 read (× $2.70 saved) and 6,000 written (× $0.75 more): $5.3874, of 2,003,010 input tokens at $3 ($6.00903): 89.655%
    expect([detail.prompt_cache, detail.priming]).toEqual([
      { read_tokens: 1_997_000, write_tokens: 6_000, saved_usd: 5.3874, saved_share: 0.8966 },
      // the answered one: 10 in at $3, 3,000 written at $3.75, 1 out at $15
      { calls: 2, failed: 1, cost_usd: 0.011295, last_at: "1970-01-01T00:00:01.000Z" },
    ])
    const page = await (await app.request("/")).text()
    const shown = figures(/id="figures">(.*?)<\/dl>/.exec(page)![1]!)
    expect([shown["prompt cache"], shown.priming]).toEqual([
      "1,997,000 read · 6,000 written · saved $5.39 (89% of input)",
      "2 calls (1 failed) · $0.0113",
    ])
    // the page's own renderer draws the same from the API's answer (the browser's updates)
    expect(figures(views().figures(detail as never))).toMatchObject({
      "prompt cache": "1,997,000 read · 6,000 written · saved $5.39 (89% of input)",
      priming: "2 calls (1 failed) · $0.0113",
    })

    const item = async (id: number) => {
      const res = await app.request(`/api/runs/${run.id}/items/${id}`)
      expect(res.status).toBe(200)
      return (await res.json()) as { usage: unknown; prompt_cache_saved_usd: number; history: unknown[] }
    }
    const first = await item(a)
    expect(first.usage).toEqual({
      input_tokens: 1_000_000,
      output_tokens: 100,
      cached_input_tokens: 997_000,
      cache_write_tokens: 3_000,
    })
    expect(first.prompt_cache_saved_usd).toBeCloseTo(2.68965, 12)
    const drawn = views().item(first as never)
    expect(drawn).toMatch(
      / · 1 attempt\(s\) · 1,000,000 in · 100 out \(997,000 cached, 3,000 written\) · \$0\.311\d \(the prompt cache saved \$2\.69\)<\/p>/,
    )
    const cells = /<table id="item-attempts">.*?<tbody><tr>(.*?)<\/tr>/.exec(drawn)![1]!
    expect(cells).toEndWith("<td>1,000,000 in · 100 out (997,000 cached, 3,000 written)</td>")
    // nothing written: the cached tokens alone, as before
    const second = views().item((await item(b)) as never)
    expect(second).toMatch(
      / · 1,000,000 in · 100 out \(1,000,000 cached\) · \$0\.3015 \(the prompt cache saved \$2\.70\)<\/p>/,
    )
    expect(second).toContain("<td>1,000,000 in · 100 out (1,000,000 cached)</td></tr>")
  } finally {
    await reader.close()
    await writer.close()
  }
})
