import { describe, expect, test } from "bun:test"
import { Database } from "bun:sqlite"
import { writeFileSync } from "node:fs"
import { fakeVector, startFake, type Fake } from "../lib/fake-openai.ts"
import { prng, spool, start, until } from "../lib/spool.ts"
import { tmpdir } from "../lib/tmp.ts"

const KEY = "sk-test-embeddings-0123456789"

function job(url: string, extra = ""): string {
  return `name = "vecs"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "openai"
model = "text-embedding-3-small"
base_url = "${url}"
[request]
kind = "embedding"
input = "{{text}}"
[limits]
max_attempts = 20
timeout_s = 5
grace_s = 5
retry_base_s = 0.01
retry_cap_s = 0.1
${extra}`
}

const text = (i: number) => `passage ${i}: ${"lorem ipsum ".repeat(i % 7)}end`

function input(n: number): string {
  return (
    Array.from({ length: n }, (_, i) => JSON.stringify({ id: `id-${i + 1}`, text: text(i + 1) })).join("\n") +
    "\n"
  )
}

type Row = {
  key: string
  state: string
  output: string | null
  vector: Uint8Array | null
  input_tokens: number
}

/** Every item's row, in ledger order, and a check that each holds the fake's vector for its text. */
function stored(home: string, n: number, dimensions: number): Row[] {
  const db = new Database(`${home}/spool.db`, { readonly: true })
  const rows = db
    .query<Row, []>("SELECT key, state, output, vector, input_tokens FROM items ORDER BY id")
    .all()
  db.close()
  expect(rows.length).toBe(n)
  for (const [i, row] of rows.entries()) {
    expect([row.key, row.state, row.output]).toEqual([`id-${i + 1}`, "completed", null])
    expect(row.vector!.byteLength).toBe(dimensions * 4)
    const got = new Float32Array(new Uint8Array(row.vector!).buffer)
    expect(Array.from(got)).toEqual(Array.from(fakeVector(text(i + 1), dimensions)))
  }
  return rows
}

/** What the fake billed for the run's inputs, in its own token count. */
const billed = (fake: Fake, n: number) =>
  Array.from(
    { length: n },
    (_, i) => Math.max(1, Math.ceil(text(i + 1).length / 4)) * (fake.paid.get(text(i + 1)) ?? 0),
  ).reduce((a, b) => a + b, 0)

describe("embedding runs of dist/spool", () => {
  test("2,000 rows: every vector stored as float32 bytes, each input billed once, tokens summing to the bill", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, latencyMs: 5 })
    const N = 2000
    writeFileSync(tmp.join("in.jsonl"), input(N))
    writeFileSync(tmp.join("job.toml"), job(fake.url, "concurrency = 4\n"))
    const home = tmp.join("home")
    const ran = await spool(["run", "job.toml", "--home", home], {
      cwd: tmp.path,
      env: { OPENAI_API_KEY: KEY },
    })
    expect(ran.stderr).toContain(`run "vecs": ${N} completed, 0 failed of ${N}`)
    expect(ran.stderr).toContain("the response cache is off for embedding jobs")
    expect(ran.code).toBe(0)
    const rows = stored(home, N, 1536)
    for (let i = 1; i <= N; i++) expect(fake.paid.get(text(i))).toBe(1)
    // many inputs a request (a chat run would have made 2,000): the queue shared among the slots open, at most 4
    expect(fake.requests).toBeGreaterThanOrEqual(1)
    expect(fake.requests).toBeLessThanOrEqual(4)
    expect(rows.reduce((sum, r) => sum + r.input_tokens, 0)).toBe(billed(fake, N))
    expect(fake.invalid).toEqual([])
  }, 120_000)

  test("survives SIGKILL mid-run: every item completed once, none paid twice beyond the requests in flight at a kill", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({
      apiKey: KEY,
      latencyMs: 150,
      faults: { rate: 0.1, kinds: ["429", "500"], seed: 5, retryAfter: "0" },
    })
    const N = 12_000
    writeFileSync(tmp.join("in.jsonl"), input(N))
    // 2 slots: requests of 2,048, six waves of them
    writeFileSync(
      tmp.join("job.toml"),
      job(fake.url, "concurrency = 2\n").replace('input = "{{text}}"', 'input = "{{text}}"\ndimensions = 8'),
    )
    const home = tmp.join("home")
    const env = { OPENAI_API_KEY: KEY }
    const random = prng(20261205)
    let kills = 0
    for (let round = 0; round < 6; round++) {
      const child = start(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
      const before = fake.requests
      await until(() => fake.requests > before || child.exitCode !== null, 10_000, "the run to start calling")
      await Bun.sleep(Math.floor(random() * 300))
      if (child.exitCode !== null) break
      child.kill("SIGKILL")
      await child.exited
      kills++
    }
    expect(kills).toBeGreaterThanOrEqual(3)
    const last = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(last.stderr).toContain(`run "vecs": ${N} completed, 0 failed of ${N}`)
    expect(last.code).toBe(0)
    stored(home, N, 8)

    const db = new Database(`${home}/spool.db`, { readonly: true })
    const attempts = db
      .query<{ key: string; outcome: string | null }, []>(
        "SELECT i.key, a.outcome FROM attempts a JOIN items i ON i.id = a.item_id ORDER BY i.id, a.n",
      )
      .all()
    db.close()
    const byKey = Map.groupBy(attempts, (a) => a.key)
    let lost = 0
    let repaid = 0
    for (let i = 1; i <= N; i++) {
      const mine = byKey.get(`id-${i}`) ?? []
      expect(mine.at(-1)?.outcome).toBe("ok")
      expect(mine.filter((a) => a.outcome === "ok").length).toBe(1)
      // in flight at a kill: taken back as lost when the next process found the lease of a dead one
      const lostHere = mine.filter((a) => a.outcome === "lost" || a.outcome === "interrupted").length
      lost += lostHere
      const paid = fake.paid.get(text(i)) ?? 0
      expect(paid).toBeGreaterThanOrEqual(1)
      expect(paid - 1).toBeLessThanOrEqual(lostHere)
      repaid += paid - 1
    }
    expect(lost).toBeGreaterThan(0)
    expect(repaid).toBeLessThanOrEqual(lost)
    expect(fake.invalid).toEqual([])
  }, 180_000)
})
