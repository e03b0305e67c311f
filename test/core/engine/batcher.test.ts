/**
 * The batcher against the fake OpenAI Batch API, in process: what needs a hand on the ledger or on the client's
 * limits (a request too large for any batch; a batch that is not full while the inputs are still being read).
 */
import { describe, expect, test } from "bun:test"
import { writeFileSync } from "node:fs"
import { Batcher } from "../../../src/core/engine/batcher.ts"
import { packOne } from "../../../src/core/engine/pack.ts"
import * as template from "../../../src/core/job/template.ts"
import { client } from "../../../src/core/engine/run.ts"
import { ingest, plan } from "../../../src/core/engine/ingest.ts"
import * as jobs from "../../../src/core/job/job.ts"
import * as log from "../../../src/core/base/log.ts"
import { open } from "../../../src/core/ledger/open.ts"
import type { BatchClient, ProviderClient } from "../../../src/plugins/api/define.ts"
import { startFake } from "../../lib/fake-openai.ts"
import { itemsOf } from "../../lib/ledger-contract.ts"
import { tmpdir, type Tmp } from "../../lib/tmp.ts"

const KEY = "sk-test-batcher-0123456789"

async function setup(tmp: Tmp, url: string, rows: Record<string, unknown>[], batch = "") {
  process.env.OPENAI_API_KEY = KEY
  writeFileSync(tmp.join("in.jsonl"), rows.map((r) => JSON.stringify(r)).join("\n") + "\n")
  writeFileSync(
    tmp.join("job.toml"),
    `name = "b"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "openai"
model = "gpt-4.1-mini"
mode = "batch"
base_url = "${url}"
[request]
prompt = "Say {{text}}"
[batch]
poll_s = 0.02
poll_max_s = 0.05
${batch}`,
  )
  const { job } = jobs.load(tmp.join("job.toml"), {})
  const home = tmp.join(".spool")
  const db = await open(home)
  log.init(home)
  const planned = plan(job)
  const { run } = await db.runs.create({
    name: job.name,
    job,
    fingerprint: jobs.fingerprint(job),
    resume: "spool run job.toml",
    inputs: planned.map((p) => ({ path: p.path, format: p.source.name })),
  })
  const provider = client(job) as ProviderClient & { batch: BatchClient }
  return { job, db, run, planned, provider, home }
}

describe("the batcher", () => {
  test("once the inputs are read, no batch is live and at most tail_realtime items are left, they go through direct calls: no batch is packed for them", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    const rows = Array.from({ length: 6 }, (_, i) => ({ id: `r${i}`, text: `t${i}` }))
    const { job, db, run, planned, provider, home } = await setup(tmp, fake.url, rows, "flush_s = 0")
    const tailed = { ...job, limits: { ...job.limits, tail_realtime: 6 } }
    await ingest(db, run, planned, async () => {})
    const batcher = new Batcher({ ledger: db, run, job: tailed, client: provider, owner: "me", home })
    expect(await batcher.loop()).toBe("done")
    expect(fake.batch.batches).toEqual([])
    expect(fake.served.length).toBe(6)
    expect((await itemsOf(db, run.id)).map((i) => [i.key, i.state, i.output])).toEqual(
      rows.map((r) => [r.id, "completed", `echo: Say ${r.text}`]),
    )
    await db.close()
  })

  test("a request larger than any batch fails its item with a clear error; the others go on", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    const rows = [
      { id: "a", text: "short" },
      { id: "big", text: "x".repeat(5000) },
      { id: "c", text: "also short" },
    ]
    const { job, db, run, planned, provider, home } = await setup(tmp, fake.url, rows)
    await ingest(db, run, planned, async () => {})
    // the real client, with a provider limit small enough for this test (OpenAI's is 200 MB)
    provider.batch.limits = { maxRequests: 50_000, maxBytes: 2000 }
    const batcher = new Batcher({ ledger: db, run, job, client: provider, owner: "me", home })
    expect(await batcher.loop()).toBe("done")
    const items = await itemsOf(db, run.id)
    expect(items.map((i) => [i.key, i.state])).toEqual([
      ["a", "completed"],
      ["big", "failed"],
      ["c", "completed"],
    ])
    const big = items[1]!
    expect(big.error_class).toBe("bad_request")
    expect(big.error).toMatch(/^the request is 5\d{3} bytes; a provider batch holds at most 2000 bytes$/)
    expect(await db.reads.attempts(big.id)).toMatchObject([
      { n: 1, outcome: "failed", error_class: "bad_request", error: big.error },
    ])
    expect(fake.batch.batches.map((b) => b.lines.length)).toEqual([2])
    expect(fake.paid.get("Say " + "x".repeat(5000))).toBeUndefined()
    await db.close()
  })

  test("packing under a learned queue limit: a request larger than the whole queue fails alone; one that only looked too large for a room read before a batch of ours ended waits", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    // "Say " and 2,000 x's: about 500 tokens a line, as packing estimates them (bytes / 4)
    const rows = [
      { id: "a", text: "x".repeat(1600) },
      { id: "big", text: "x".repeat(2400) },
    ]
    const { job, db, run, planned, provider, home } = await setup(tmp, fake.url, rows)
    await ingest(db, run, planned, async () => {})
    await db.batches.learnQueue(run.id, { tokens: 500 })
    const o = {
      ledger: db,
      run,
      job,
      owner: "me",
      api: provider.batch,
      dir: home,
      prompt: template.parse(job.request.prompt),
    }
    const [a, big] = await db.batches.packable(run.id, 10)
    // a room of 100 tokens, read while a batch of ours held the rest, is stale once none is live: "a" fits the queue
    // (about 420 tokens of 500) and waits for the next pack, unfailed
    expect(await packOne(o, [a!], 100)).toEqual({ batch: null, failed: 0, marked: new Map() })
    // "big" (about 620 tokens) is larger than the whole queue, and none of ours is in it: it can never be sent
    expect(await packOne(o, [big!], 500)).toEqual({ batch: null, failed: 1, marked: new Map() })
    const items = await itemsOf(db, run.id)
    expect(items.map((i) => [i.key, i.state])).toEqual([
      ["a", "pending"],
      ["big", "failed"],
    ])
    expect(items[1]!.error_class).toBe("queue_limit")
    expect(items[1]!.error).toMatch(
      /^the request \(~6\d\d tokens\) is larger than the provider's whole batch queue \(500 tokens\)$/,
    )
    expect(fake.batch.batches).toEqual([])
    await db.close()
  })

  test("while inputs are still being read, a batch that is not full goes once flush_s has passed, not before", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    const rows = Array.from({ length: 5 }, (_, i) => ({ id: `r${i}`, text: `t${i}` }))
    const { job, db, run, planned, provider, home } = await setup(
      tmp,
      fake.url,
      rows,
      "batch_size = 40\nflush_s = 0.4",
    )
    // read the rows, but leave the run "still ingesting", as a slow source would
    await ingest(db, run, planned, async () => {})
    await db.ingest.reopen(run.id)
    const batcher = new Batcher({ ledger: db, run, job, client: provider, owner: "me", home })
    const started = Date.now()
    const ending = batcher.loop()
    while (fake.batch.batches.length === 0) await Bun.sleep(10)
    const waited = Date.now() - started
    expect(waited).toBeGreaterThanOrEqual(400)
    expect(fake.batch.batches[0]!.lines.length).toBe(5)
    // the inputs end: the loop finishes once the batch is applied
    await db.ingest.done(run.id)
    batcher.poke()
    expect(await ending).toBe("done")
    expect(await db.reads.counts(run.id)).toMatchObject({ completed: 5, pending: 0 })
    await db.close()
  })
})
