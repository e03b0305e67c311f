import { describe, expect, test } from "bun:test"
import { Database } from "bun:sqlite"
import { writeFileSync } from "node:fs"
import * as engine from "../../../src/core/engine/run.ts"
import { Embedder, OPENAI_LIMITS, split, check } from "../../../src/core/engine/embed.ts"
import * as jobs from "../../../src/core/job/job.ts"
import { cost, priceOf } from "../../../src/core/job/pricing.ts"
import type { Claimed } from "../../../src/core/ledger/types.ts"
import { embedReplyOf } from "../../../src/plugins/providers/openai/embed.ts"
import { fakeVector, startFake } from "../../lib/fake-openai.ts"
import { tmpdir } from "../../lib/tmp.ts"
import { pgSchema, SKIP_PG } from "../../lib/pg.ts"
import { SQL } from "bun"

const KEY = "sk-test-embed-0123456789"

async function embeddingJob(extra = "", model = "text-embedding-3-small") {
  const tmp = await tmpdir()
  writeFileSync(
    tmp.join("job.toml"),
    `name = "vecs"\n[source]\npath = "in.jsonl"\n[provider]\nname = "openai"\nmodel = "${model}"\n[request]\nkind = "embedding"\ninput = "{{text}}"\n${extra}`,
  )
  const { job } = jobs.load("job.toml", {}, tmp.path)
  await tmp[Symbol.asyncDispose]()
  return job
}

const item = (id: number, text: unknown): Claimed => ({
  id,
  key: String(id),
  data: JSON.stringify({ text }),
  attempt: 1,
})

describe("cutting embedding requests", () => {
  test("by count: 5,000 short inputs make requests of 2,048, 2,048 and 904, in the queue's order", async () => {
    const embedder = new Embedder(await embeddingJob())
    const queue = Array.from({ length: 5000 }, (_, i) => item(i + 1, `text ${i}`))
    const sizes: number[] = []
    const ids: number[] = []
    for (;;) {
      const { group, failed } = embedder.take(queue, Number.POSITIVE_INFINITY)
      expect(failed).toEqual([])
      if (!group) break
      sizes.push(group.items.length)
      ids.push(...group.items.map((i) => i.id))
      expect(group.inputs[0]).toBe(`text ${group.items[0]!.id - 1}`)
    }
    expect(sizes).toEqual([2048, 2048, 904])
    expect(ids).toEqual(Array.from({ length: 5000 }, (_, i) => i + 1))
  })

  test("by tokens: inputs of 4,000 estimated tokens, 60 to a request under the 240,000 cut", async () => {
    const embedder = new Embedder(await embeddingJob())
    const queue = Array.from({ length: 100 }, (_, i) => item(i + 1, "x".repeat(16_000)))
    const first = embedder.take(queue, 10_000).group!
    expect(first.items.length).toBe(60)
    expect(first.tokens).toBe(240_000)
    expect(first.estimates.every((e) => e === 4000)).toBe(true)
    expect(embedder.take(queue, 10_000).group!.items.length).toBe(40)
    expect(queue.length).toBe(0)
  })

  test("`most` caps a request (the queue shared among free slots)", async () => {
    const embedder = new Embedder(await embeddingJob())
    const queue = Array.from({ length: 10 }, (_, i) => item(i + 1, "a"))
    expect(embedder.take(queue, 3).group!.items.map((i) => i.id)).toEqual([1, 2, 3])
  })

  test("an input over the model's 8,192 tokens fails alone, never sent; the others go", async () => {
    const embedder = new Embedder(await embeddingJob())
    const queue = [
      item(1, "short"),
      item(2, "y".repeat(8193 * 4)),
      item(3, "also short"),
      item(4, "z".repeat(8192 * 4)),
    ]
    const { group, failed } = embedder.take(queue, 100)
    expect(group!.items.map((i) => i.id)).toEqual([1, 3, 4])
    expect(group!.inputs).toEqual(["short", "also short", "z".repeat(8192 * 4)])
    expect(failed.length).toBe(1)
    expect(failed[0]).toMatchObject({ item: 2, to: "failed", errorClass: "bad_request" })
    expect(failed[0]!.error).toBe(
      "the input is about 8193 tokens (estimated as UTF-8 bytes / 4), over text-embedding-3-small's limit of 8192 " +
        "tokens per input; it was not sent, and spool never truncates: shorten it and run it again",
    )
  })

  test("a row without the input's field fails as a template error", async () => {
    const embedder = new Embedder(await embeddingJob())
    const queue: Claimed[] = [
      { id: 1, key: "1", data: JSON.stringify({ other: 1 }), attempt: 1 },
      item(2, "ok"),
    ]
    const { group, failed } = embedder.take(queue, 100)
    expect(group!.items.map((i) => i.id)).toEqual([2])
    expect(failed[0]).toMatchObject({ item: 1, errorClass: "template" })
  })

  test("the limits are OpenAI's (spec: 2,048 inputs, 8,192 tokens each, 300,000 summed, cut at 80%)", () => {
    expect(OPENAI_LIMITS).toEqual({ inputs: 2048, tokens: 240_000, perInput: 8192 })
  })
})

describe("sharing a request's usage", () => {
  test("in proportion to the estimates, whole numbers summing to the usage exactly, the remainder to the last", () => {
    expect(split(100, [1, 1, 1])).toEqual([33, 33, 34])
    expect(split(10, [1, 3, 6])).toEqual([1, 3, 6])
    expect(split(7, [5, 5])).toEqual([3, 4])
    expect(split(0, [2, 2])).toEqual([0, 0])
    expect(split(5, [0, 0])).toEqual([2, 3])
    for (const total of [1, 17, 999, 123_457]) {
      const estimates = Array.from({ length: 37 }, (_, i) => ((i * 7919) % 97) + 1)
      const shares = split(total, estimates)
      expect(shares.reduce((a, b) => a + b, 0)).toBe(total)
      expect(shares.every((s) => Number.isInteger(s) && s >= 0)).toBe(true)
    }
  })

  test("settle hands each item its vector and share; vectors of unequal length are refused", async () => {
    const embedder = new Embedder(await embeddingJob())
    const queue = [item(1, "aaaa"), item(2, "bbbbbbbb")]
    const group = embedder.take(queue, 10).group!
    const v = [Float32Array.from([1, 2]), Float32Array.from([3, 4])]
    const out = embedder.settle(
      group,
      { vectors: v, usage: { input_tokens: 7, output_tokens: 0 } },
      { latencyMs: 1, endedAt: 2 },
    )
    expect(out.map((o) => [o.item, o.to, o.inputTokens, Array.from(o.vector!)])).toEqual([
      [1, "completed", 2, [1, 2]],
      [2, "completed", 5, [3, 4]],
    ])
    expect(() => check([Float32Array.from([1, 2]), Float32Array.from([1])], 2, undefined)).toThrow(
      "vector 1 has 1 dimensions, where the first has 2",
    )
    expect(() => check([Float32Array.from([1, 2])], 2, undefined)).toThrow("1 vectors came back for 2 inputs")
    expect(() => check([Float32Array.from([1, 2])], 1, 3)).toThrow(
      "vector 0 has 2 dimensions, where dimensions is 3",
    )
  })
})

describe("pricing embeddings", () => {
  test("text-embedding-3-small $0.02 and -large $0.13 per 1M input tokens, the Batch API at half that", () => {
    const small = priceOf("text-embedding-3-small", undefined)!
    const large = priceOf("text-embedding-3-large-2026-01-01", undefined)!
    const million = { input_tokens: 1_000_000, output_tokens: 0 }
    expect([cost(small, million), cost(small, million, true)]).toEqual([0.02, 0.01])
    expect([cost(large, million), cost(large, million, true)]).toEqual([0.13, 0.065])
  })
})

describe("reading an embeddings answer", () => {
  const entry = (index: unknown, embedding: unknown) => ({ object: "embedding", index, embedding })
  const usage = { prompt_tokens: 9, total_tokens: 9 }

  test("data[].index puts the vectors back in the inputs' order; base64 and float lists alike", () => {
    const b64 = Buffer.from(Float32Array.from([0.5, -1]).buffer).toString("base64")
    const got = embedReplyOf(200, { data: [entry(1, b64), entry(0, [1, 2])], usage }, 2, {})
    expect(got.vectors.map((v) => Array.from(v))).toEqual([
      [1, 2],
      [0.5, -1],
    ])
    expect(got.usage).toEqual({ input_tokens: 9, output_tokens: 0 })
  })

  test("an index that is no permutation, a count that differs, or a wrong length is a bad response", () => {
    const read = (data: unknown[], n: number, dims?: number) => () =>
      embedReplyOf(200, { data, usage }, n, { dimensions: dims })
    expect(read([entry(0, [1]), entry(0, [2])], 2)).toThrow("has index 0 twice")
    expect(read([entry(0, [1]), entry(2, [2])], 2)).toThrow("has data[1].index 2, not one of 0…1")
    expect(read([entry(0, [1])], 2)).toThrow("has 1 embeddings for 2 inputs")
    expect(read([entry(0, [1, 2]), entry(1, [1])], 2)).toThrow("has a vector of 1 dimensions for input 1")
    expect(read([entry(0, [1, 2])], 1, 3)).toThrow("where dimensions asks for 3")
    expect(() => embedReplyOf(200, { data: [entry(0, [1])] }, 1, {})).toThrow("has no usage")
  })
})

describe("an embedding run against the fake OpenAI server", () => {
  test("500 rows with 429s and 500s: every item completed once with the fake's vector, usage summing to the billed", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({
      apiKey: KEY,
      faults: { rate: 0.3, kinds: ["429", "500"], seed: 3, retryAfter: "0" },
    })
    process.env.OPENAI_API_KEY = KEY
    const rows = Array.from({ length: 500 }, (_, i) => ({
      id: `r${i}`,
      text: `document number ${i} ${"w".repeat(i % 50)}`,
    }))
    writeFileSync(tmp.join("in.jsonl"), rows.map((r) => JSON.stringify(r)).join("\n") + "\n")
    writeFileSync(
      tmp.join("job.toml"),
      `name = "vecs"\n[source]\npath = "in.jsonl"\nid = "id"\n[provider]\nname = "openai"\nmodel = "text-embedding-3-small"\nbase_url = "${fake.url}"\n[request]\nkind = "embedding"\ninput = "{{text}}"\ndimensions = 64\n[limits]\nconcurrency = 4\nmax_attempts = 20\nretry_base_s = 0.01\nretry_cap_s = 0.02\n`,
    )
    const home = tmp.join(".spool")
    const session = await engine.prepare({
      file: tmp.join("job.toml"),
      flags: {},
      home,
      newRun: false,
      reingest: false,
      resume: "spool run job.toml",
    })
    expect(await session.execute()).toBe(0)
    expect(fake.invalid).toEqual([])
    const db = new Database(tmp.join(".spool", "spool.db"), { readonly: true })
    const items = db
      .query<
        { key: string; state: string; output: string | null; vector: Uint8Array; input_tokens: number },
        []
      >("SELECT key, state, output, vector, input_tokens FROM items ORDER BY id")
      .all()
    expect(items.length).toBe(500)
    let tokens = 0
    for (const [i, it] of items.entries()) {
      expect([it.key, it.state, it.output]).toEqual([`r${i}`, "completed", null])
      expect(it.vector.byteLength).toBe(64 * 4)
      const got = new Float32Array(new Uint8Array(it.vector).buffer)
      expect(Array.from(got)).toEqual(Array.from(fakeVector(rows[i]!.text, 64)))
      tokens += it.input_tokens
      expect(fake.paid.get(rows[i]!.text)).toBe(1)
    }
    // each request's usage shared among its items exactly: their sum is what the fake billed for the inputs
    const billed = rows.reduce((sum, r) => sum + Math.max(1, Math.ceil(r.text.length / 4)), 0)
    expect(tokens).toBe(billed)
    db.close()
  })
})

describe.skipIf(SKIP_PG)("an embedding run on PostgreSQL", () => {
  test("300 rows: every vector stored as float32 bytes in items.vector, output null", async () => {
    await using tmp = await tmpdir()
    await using pg = await pgSchema()
    await using fake = await startFake({ apiKey: KEY })
    process.env.OPENAI_API_KEY = KEY
    const rows = Array.from({ length: 300 }, (_, i) => ({ id: `p${i}`, text: `pg text ${i}` }))
    writeFileSync(tmp.join("in.jsonl"), rows.map((r) => JSON.stringify(r)).join("\n") + "\n")
    writeFileSync(
      tmp.join("job.toml"),
      `name = "pgvecs"\n[source]\npath = "in.jsonl"\nid = "id"\n[provider]\nname = "openai"\nmodel = "text-embedding-3-small"\nbase_url = "${fake.url}"\n[request]\nkind = "embedding"\ninput = "{{text}}"\n[limits]\nconcurrency = 3\n`,
    )
    const session = await engine.prepare({
      file: tmp.join("job.toml"),
      flags: { store: pg.url },
      home: tmp.join(".spool"),
      newRun: false,
      reingest: false,
      resume: "spool run job.toml",
    })
    expect(await session.execute()).toBe(0)
    const sql = new SQL(pg.url.replace(/\?.*$/, ""))
    const items: { key: string; state: string; output: string | null; vector: Uint8Array }[] =
      await sql.unsafe(`SELECT key, state, output, vector FROM "${pg.schema}".items ORDER BY id`)
    await sql.close()
    expect(items.length).toBe(300)
    for (const [i, it] of items.entries()) {
      expect([it.key, it.state, it.output]).toEqual([`p${i}`, "completed", null])
      expect(it.vector.byteLength).toBe(1536 * 4)
      const got = new Float32Array(new Uint8Array(it.vector).buffer)
      expect(Array.from(got)).toEqual(Array.from(fakeVector(rows[i]!.text, 1536)))
    }
  }, 60_000)
})
