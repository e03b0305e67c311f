/**
 * Embedding jobs in batch mode through the compiled binary, against the fake OpenAI Batch API (`/v1/embeddings`
 * lines, each checked against CreateEmbeddingRequest, each answer against CreateEmbeddingResponse): vectors exact,
 * exported, priced at the batch price; an expired batch's unrun lines sent again and paid once; an oversize input
 * failed alone and never sent; SIGKILL while polling, downloading and applying; refusals before anything runs.
 */
import { describe, expect, test } from "bun:test"
import { Database } from "bun:sqlite"
import { readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { asyncBufferFromFile, parquetReadObjects } from "hyparquet"
import { fakeVector, startFake, type Fake } from "../lib/fake-openai.ts"
import { pgSchema, SKIP_PG } from "../lib/pg.ts"
import { spool, start } from "../lib/spool.ts"
import { tmpdir } from "../lib/tmp.ts"

const KEY = "sk-test-embeddings-batch-0123456789"
const env = { OPENAI_API_KEY: KEY }
const DIMS = 8
/** text-embedding-3-small's price per token at the Batch API's half (pricing.ts: $0.02 per 1M, batch half). */
const BATCH_PRICE = 0.01 / 1e6

function job(url: string, extra = "", batchSize = 1000): string {
  return `name = "vecs"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "openai"
model = "text-embedding-3-small"
mode = "batch"
base_url = "${url}"
[request]
kind = "embedding"
input = "{{text}}"
dimensions = ${DIMS}
[limits]
max_attempts = 3
[batch]
poll_s = 0.05
poll_max_s = 0.2
batch_size = ${batchSize}
${extra}`
}

const text = (i: number) => `passage ${i}: ${"lorem ipsum ".repeat(i % 7)}end`
const tokens = (s: string) => Math.max(1, Math.ceil(s.length / 4))

function input(n: number, big: Set<number> = new Set()): string {
  const row = (i: number) => ({ id: `id-${i}`, text: big.has(i) ? "w".repeat(40_000) : text(i) })
  return Array.from({ length: n }, (_, i) => JSON.stringify(row(i + 1))).join("\n") + "\n"
}

type Row = {
  key: string
  state: string
  output: string | null
  vector: Uint8Array | null
  error: string | null
}

function rows(home: string): Row[] {
  const db = new Database(join(home, "spool.db"), { readonly: true })
  const out = db.query<Row, []>("SELECT key, state, output, vector, error FROM items ORDER BY id").all()
  db.close()
  return out
}

const floats = (bytes: Uint8Array) => Array.from(new Float32Array(new Uint8Array(bytes).buffer))
const expected = (i: number) => Array.from(fakeVector(text(i), DIMS))

/** Every item but `skip` completed once with the fake's exact vector for its text, each input paid once. */
function allVectorsOnce(fake: Fake, home: string, n: number, skip: Set<number> = new Set()): void {
  const all = rows(home)
  expect(all.length).toBe(n)
  for (const [at, row] of all.entries()) {
    const i = at + 1
    if (skip.has(i)) continue
    expect([row.key, row.state, row.output, row.error]).toEqual([`id-${i}`, "completed", null, null])
    expect(floats(row.vector!)).toEqual(expected(i))
    expect(fake.paid.get(text(i))).toBe(1)
  }
  expect(fake.invalid).toEqual([])
}

function integrity(home: string): string {
  const db = new Database(join(home, "spool.db"), { readonly: true })
  const ok = db.query<{ integrity_check: string }, []>("PRAGMA integrity_check").get()?.integrity_check ?? ""
  db.close()
  return ok
}

describe("embedding jobs in batch mode through dist/spool (OpenAI Batch API, /v1/embeddings)", () => {
  test("2,000 rows: one input a line, every vector exact, exported as parquet and jsonl, priced at the batch price", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, batch: { processingMs: 100 } })
    const N = 2000
    writeFileSync(tmp.join("in.jsonl"), input(N))
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const home = tmp.join("home")
    const run = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(run.stderr).toContain(`run "vecs": ${N} completed, 0 failed of ${N}`)
    expect(run.code).toBe(0)
    allVectorsOnce(fake, home, N)
    expect(integrity(home)).toBe("ok")
    // two batches of embedding lines, each line one input, base64, the job's dimensions
    expect(fake.batch.batches.map((b) => [b.data.endpoint, b.lines.length])).toEqual([
      ["/v1/embeddings", 1000],
      ["/v1/embeddings", 1000],
    ])
    const first = fake.batch.batches[0]!.lines[0]!
    expect(first.body).toEqual({
      model: "text-embedding-3-small",
      input: [text(1)],
      encoding_format: "base64",
      dimensions: DIMS,
    })
    expect(fake.requests).toBe(0)

    // the bill: every input's tokens, at half the realtime price
    const billed = Array.from({ length: N }, (_, i) => tokens(text(i + 1))).reduce((a, b) => a + b, 0)
    const jsonl = await spool(["results", "--home", home, "--out", "r.jsonl"], { cwd: tmp.path, env })
    expect(jsonl.code).toBe(0)
    const lines = readFileSync(tmp.join("r.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { id: string; state: string; vector: number[]; cost_usd: number })
    expect(lines.length).toBe(N)
    let cost = 0
    for (const [at, line] of lines.entries()) {
      expect([line.id, line.state]).toEqual([`id-${at + 1}`, "completed"])
      expect(line.vector).toEqual(expected(at + 1))
      expect(line.cost_usd).toBeCloseTo(tokens(text(at + 1)) * BATCH_PRICE, 15)
      cost += line.cost_usd
    }
    expect(cost).toBeCloseTo(billed * BATCH_PRICE, 12)
    const db = new Database(join(home, "spool.db"), { readonly: true })
    const spent = db
      .query<{ all: number; batch: number }, []>(
        "SELECT sum(input_tokens) AS 'all', sum(batch_input_tokens) AS batch FROM items",
      )
      .get()!
    db.close()
    expect(spent).toEqual({ all: billed, batch: billed })

    const pq = await spool(["results", "--home", home, "--out", "r.parquet"], { cwd: tmp.path, env })
    expect(pq.code).toBe(0)
    const file = await asyncBufferFromFile(tmp.join("r.parquet"))
    // the input's own columns (id, text) come first; spool's, which would clash with them, are prefixed
    const got = (await parquetReadObjects({ file, columns: ["id", "spool.vector", "spool.cost_usd"] })) as {
      id: string
      "spool.vector": number[]
      "spool.cost_usd": number
    }[]
    expect(got.length).toBe(N)
    for (const [at, row] of got.entries()) {
      expect([row.id, row["spool.vector"]]).toEqual([`id-${at + 1}`, expected(at + 1)])
      expect(row["spool.cost_usd"]).toBe(lines[at]!.cost_usd)
    }
  }, 60_000)

  test("an expired batch: its unrun lines go back to pending and complete in the next batch, every input paid once", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, batch: { processingMs: 100 } })
    fake.batch.script = [{ end: { outcome: "expired", after: 0.6 } }]
    const N = 100
    writeFileSync(tmp.join("in.jsonl"), input(N))
    // the endpoint an embedding job may name
    writeFileSync(tmp.join("job.toml"), job(fake.url, '[provider.options]\nendpoint = "embeddings"\n', 100))
    const home = tmp.join("home")
    const run = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(run.stderr).toContain(`run "vecs": ${N} completed, 0 failed of ${N}`)
    expect(run.code).toBe(0)
    allVectorsOnce(fake, home, N)
    expect(fake.batch.batches.map((b) => b.lines.length)).toEqual([100, 40])
    expect(fake.batch.paidLines).toBe(100)
    const db = new Database(join(home, "spool.db"), { readonly: true })
    const batches = db
      .query<{ lines: number; outcome: string }, []>("SELECT lines, outcome FROM batches ORDER BY id")
      .all()
    const attempts = db.query<{ n: number }, []>("SELECT count(*) AS n FROM attempts").get()!.n
    const spent = db.query<{ t: number }, []>("SELECT sum(batch_input_tokens) AS t FROM items").get()!.t
    db.close()
    expect(batches).toEqual([
      { lines: 60, outcome: "expired" },
      { lines: 40, outcome: "completed" },
    ])
    // an expired line was never run: no attempt is counted for it, and no token
    expect(attempts).toBe(N)
    expect(spent).toBe(Array.from({ length: N }, (_, i) => tokens(text(i + 1))).reduce((a, b) => a + b, 0))
  }, 60_000)

  test("the realtime tail after an expired batch embeds through /v1/embeddings, on the same ledger", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, batch: { processingMs: 50 } })
    fake.batch.script = [{ end: { outcome: "expired", after: 0.6 } }]
    const N = 50
    writeFileSync(tmp.join("in.jsonl"), input(N))
    writeFileSync(
      tmp.join("job.toml"),
      job(fake.url, "", 50).replace("[limits]", "[limits]\ntail_realtime = 25"),
    )
    const home = tmp.join("home")
    const run = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(run.code).toBe(0)
    allVectorsOnce(fake, home, N)
    expect(fake.batch.batches.length).toBe(1)
    expect(fake.batch.paidLines).toBe(30)
    // the other 20 in one realtime embeddings request
    expect(fake.requests).toBe(1)
  }, 60_000)

  test("a line whose vector has the wrong length is a bad response: sent again in a later batch, both answers paid and counted", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    const short = Buffer.from(new Float32Array([1, 2, 3, 4]).buffer).toString("base64")
    fake.batch.script = [
      {
        reshape: (customId, answer) => {
          if (!customId.endsWith("_5")) return answer
          const [first] = answer.data as Record<string, unknown>[]
          return { ...answer, data: [{ ...first, embedding: short }] }
        },
      },
    ]
    const N = 10
    writeFileSync(tmp.join("in.jsonl"), input(N))
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const home = tmp.join("home")
    const run = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(run.stderr).toContain(`run "vecs": ${N} completed, 0 failed of ${N}`)
    expect(run.code).toBe(0)
    expect(fake.batch.batches.map((b) => b.lines.map((l) => l.input))).toEqual([
      Array.from({ length: N }, (_, i) => text(i + 1)),
      [text(5)],
    ])
    const all = rows(home)
    for (const [at, row] of all.entries()) expect(floats(row.vector!)).toEqual(expected(at + 1))
    expect(fake.paid.get(text(5))).toBe(2)
    const db = new Database(join(home, "spool.db"), { readonly: true })
    const tries = db
      .query<
        {
          n: number
          outcome: string
          error_class: string | null
          error: string | null
          input_tokens: number
        },
        []
      >(
        "SELECT a.n, a.outcome, a.error_class, a.error, a.input_tokens FROM attempts a JOIN items i ON i.id = a.item_id WHERE i.key = 'id-5' ORDER BY a.n",
      )
      .all()
    const item = db.query<{ t: number }, []>("SELECT input_tokens AS t FROM items WHERE key = 'id-5'").get()!
      .t
    db.close()
    expect(tries).toEqual([
      {
        n: 1,
        outcome: "retry",
        error_class: "bad_response",
        error: "the embedding line's answer does not fit: vector 0 has 4 dimensions, where dimensions is 8",
        input_tokens: tokens(text(5)),
      },
      { n: 2, outcome: "ok", error_class: null, error: null, input_tokens: tokens(text(5)) },
    ])
    expect(item).toBe(2 * tokens(text(5)))
    expect(fake.invalid).toEqual([])
  }, 60_000)

  test("an input over the model's 8,192-token limit fails alone with a clear error and is never sent", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    const N = 30
    const big = new Set([7, 21])
    writeFileSync(tmp.join("in.jsonl"), input(N, big))
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const home = tmp.join("home")
    const run = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(run.stderr).toContain(`run "vecs": ${N - 2} completed, 2 failed of ${N}`)
    expect(run.code).toBe(3)
    allVectorsOnce(fake, home, N, big)
    const all = rows(home)
    for (const i of big) {
      expect(all[i - 1]!.state).toBe("failed")
      expect(all[i - 1]!.vector).toBeNull()
      expect(all[i - 1]!.error).toBe(
        "the input is about 10000 tokens (estimated as UTF-8 bytes / 4), over text-embedding-3-small's limit of " +
          "8192 tokens per input; it was not sent, and spool never truncates: shorten it and run it again",
      )
    }
    // one batch of the 28 others; no line carries a big input
    expect(fake.batch.batches.map((b) => b.lines.length)).toEqual([N - 2])
    expect(fake.batch.batches[0]!.lines.some((l) => l.input.startsWith("www"))).toBe(false)
  }, 60_000)

  for (const point of ["poll", "download", "apply"] as const) {
    test(`SIGKILL at "${point}": nothing lost, no batch created twice, no input paid twice`, async () => {
      await using tmp = await tmpdir()
      await using fake = await startFake({ apiKey: KEY, batch: { processingMs: 100 } })
      const N = 300
      writeFileSync(tmp.join("in.jsonl"), input(N))
      writeFileSync(tmp.join("job.toml"), job(fake.url, "", 120))
      const home = tmp.join("home")
      const killed = start(["run", "job.toml", "--home", home], {
        cwd: tmp.path,
        env: { ...env, SPOOL_CRASH_AT: point },
      })
      await killed.exited
      expect(killed.signalCode).toBe("SIGKILL")
      expect(fake.batch.batches.length).toBeGreaterThanOrEqual(1)
      const last = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
      expect(last.stderr).toContain(`run "vecs": ${N} completed, 0 failed of ${N}`)
      expect(last.code).toBe(0)
      allVectorsOnce(fake, home, N)
      expect(integrity(home)).toBe("ok")
      // 120 + 120 + 60 lines, each batch created once and every line paid once
      expect(fake.batch.batches.map((b) => b.lines.length)).toEqual([120, 120, 60])
      expect(fake.batch.paidLines).toBe(N)
      const db = new Database(join(home, "spool.db"), { readonly: true })
      const ok = db.query<{ n: number }, []>("SELECT count(*) AS n FROM attempts WHERE outcome = 'ok'").get()!
        .n
      db.close()
      expect(ok).toBe(N)
    }, 60_000)
  }

  test("refused before anything runs: a provider whose Batch API cannot embed, and a chat endpoint", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("in.jsonl"), input(3))
    const anthropic = job("http://127.0.0.1:9/v1")
      .replace('name = "openai"', 'name = "anthropic"')
      .replace("text-embedding-3-small", "claude-haiku-4-5")
    writeFileSync(tmp.join("job.toml"), anthropic)
    const home = tmp.join("home")
    const a = await spool(["run", "job.toml", "--home", home], {
      cwd: tmp.path,
      env: { ANTHROPIC_API_KEY: KEY },
    })
    expect(a.code).toBe(2)
    expect(a.stderr).toContain(`provider.mode: provider "anthropic"'s Batch API does not run embedding jobs`)
    writeFileSync(
      tmp.join("job.toml"),
      job("http://127.0.0.1:9/v1", '[provider.options]\nendpoint = "chat"\n'),
    )
    const c = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(c.code).toBe(2)
    expect(c.stderr).toContain(
      'provider.options.endpoint: "chat" is not for embedding jobs, which send /v1/embeddings; remove it (or set "embeddings")',
    )
  }, 30_000)
})

describe.skipIf(SKIP_PG)("embedding jobs in batch mode on a PostgreSQL store", () => {
  test('vectors written as their bytes by the batch lines, a SIGKILL at "apply" included; every input paid once', async () => {
    await using tmp = await tmpdir()
    await using pg = await pgSchema()
    await using fake = await startFake({ apiKey: KEY, batch: { processingMs: 50 } })
    const N = 200
    writeFileSync(tmp.join("in.jsonl"), input(N))
    writeFileSync(tmp.join("job.toml"), job(fake.url, "", 120))
    const args = ["run", "job.toml", "--store", pg.url, "--home", tmp.join("home")]
    const killed = start(args, { cwd: tmp.path, env: { ...env, SPOOL_CRASH_AT: "apply" } })
    await killed.exited
    expect(killed.signalCode).toBe("SIGKILL")
    const last = await spool(args, { cwd: tmp.path, env })
    expect(last.stderr).toContain(`run "vecs": ${N} completed, 0 failed of ${N}`)
    expect(last.code).toBe(0)
    const out = await spool(["results", "--store", pg.url], { cwd: tmp.path, env })
    expect(out.code).toBe(0)
    const lines = out.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { id: string; state: string; vector: number[] })
    expect(lines.map((l) => [l.id, l.state, l.vector])).toEqual(
      Array.from({ length: N }, (_, i) => [`id-${i + 1}`, "completed", expected(i + 1)]),
    )
    for (let i = 1; i <= N; i++) expect(fake.paid.get(text(i))).toBe(1)
    expect(fake.batch.paidLines).toBe(N)
    expect(fake.invalid).toEqual([])
  }, 60_000)
})
