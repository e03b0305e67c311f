import { describe, expect, test } from "bun:test"
import { Database } from "bun:sqlite"
import { writeFileSync } from "node:fs"
import { startFake } from "../lib/fake-openai.ts"
import { prng, spool, start, until } from "../lib/spool.ts"
import { tmpdir } from "../lib/tmp.ts"

const KEY = "sk-test-crash-abcdef0123456789"
const N = 3000

function job(url: string, extra = ""): string {
  return `name = "crashy"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "openai"
model = "gpt-4.1-mini"
base_url = "${url}"
[request]
prompt = "Item {{n}}: {{text}}"
[limits]
concurrency = 8
max_attempts = 20
timeout_s = 2
grace_s = 5
retry_base_s = 0.01
retry_cap_s = 0.1
${extra}`
}

function input(n: number): string {
  return (
    Array.from({ length: n }, (_, i) =>
      JSON.stringify({ id: `id-${i + 1}`, n: i + 1, text: `t${(i * 7) % 13}` }),
    ).join("\n") + "\n"
  )
}

type Attempt = { key: string; n: number; outcome: string | null; error_class: string | null }

describe("crash safety of dist/spool", () => {
  test("survives SIGKILL at 24 seeded moments: every id has one correct result, no completed item was requested again", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({
      apiKey: KEY,
      latencyMs: 20,
      faults: { rate: 0.05, kinds: ["429", "500", "reset"], seed: 3, retryAfter: "0" },
    })
    writeFileSync(tmp.join("in.jsonl"), input(N))
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const home = tmp.join("home")
    const env = { OPENAI_API_KEY: KEY }
    const random = prng(20261124)
    let kills = 0
    let finished = false
    for (let round = 0; round < 24; round++) {
      const child = start(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
      const before = fake.requests
      // kill at a seeded moment after the process has started sending requests
      await until(() => fake.requests > before || child.exitCode !== null, 10_000, "the run to start calling")
      await Bun.sleep(Math.floor(random() * 250))
      if (child.exitCode !== null) {
        finished = true
        break
      }
      child.kill("SIGKILL")
      await child.exited
      kills++
    }
    expect(kills).toBeGreaterThanOrEqual(20)
    const last = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(last.stderr).toContain(`run "crashy": ${N} completed, 0 failed of ${N}`)
    expect(last.code).toBe(0)
    expect(finished).toBe(false)

    const results = await spool(["results", "--home", home], { cwd: tmp.path, env })
    expect(results.code).toBe(0)
    const lines = results.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { id: string; state: string; output: string })
    expect(lines.length).toBe(N)
    expect(new Set(lines.map((l) => l.id)).size).toBe(N)
    for (const [i, line] of lines.entries()) {
      expect(line).toMatchObject({
        id: `id-${i + 1}`,
        state: "completed",
        output: `echo: Item ${i + 1}: t${(i * 7) % 13}`,
      })
    }

    const db = new Database(`${home}/spool.db`, { readonly: true })
    expect(db.query<{ integrity_check: string }, []>("PRAGMA integrity_check").get()?.integrity_check).toBe(
      "ok",
    )
    const attempts = db
      .query<Attempt, []>(
        "SELECT i.key, a.n, a.outcome, a.error_class FROM attempts a JOIN items i ON i.id = a.item_id ORDER BY i.id, a.n",
      )
      .all()
    db.close()
    const byKey = Map.groupBy(attempts, (a) => a.key)
    let lost = 0
    let repaid = 0
    for (let i = 1; i <= N; i++) {
      const mine = byKey.get(`id-${i}`) ?? []
      const prompt = `Item ${i}: t${((i - 1) * 7) % 13}`
      // write-before-call: every request the fake saw has a committed attempt
      expect(fake.seen.get(prompt) ?? 0).toBeLessThanOrEqual(mine.length)
      // the completing attempt is the last one: nothing was requested after completion
      expect(mine.at(-1)?.outcome).toBe("ok")
      expect(mine.filter((a) => a.outcome === "ok").length).toBe(1)
      // attempts whose fate is unknown: cut off by a kill, or timed out at our end (the provider may have answered)
      const lostHere = mine.filter(
        (a) => a.outcome === "lost" || a.outcome === "interrupted" || a.error_class === "timeout",
      ).length
      lost += lostHere
      // a second payment can only come from an attempt that was in flight at a kill
      const paid = fake.paid.get(prompt) ?? 0
      expect(paid - 1).toBeLessThanOrEqual(lostHere)
      repaid += paid - 1
    }
    expect(lost).toBeGreaterThan(0)
    expect(repaid).toBeLessThanOrEqual(lost)
    expect(fake.invalid).toEqual([])
  }, 180_000)

  test("SIGINT finishes in-flight calls, re-queues nothing it finished, exits 130, and the printed resume command works", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, latencyMs: 30 })
    writeFileSync(tmp.join("in.jsonl"), input(600))
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const home = tmp.join("home")
    const env = { OPENAI_API_KEY: KEY }
    const child = start(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    await until(() => fake.paid.size >= 50, 20_000, "50 completions")
    child.kill("SIGINT")
    const [stderr, code] = await Promise.all([new Response(child.stderr).text(), child.exited])
    expect(code).toBe(130)
    const resume = /Resume with:\n {2}(.+)\n/.exec(stderr)?.[1]
    expect(resume).toBe(`spool run job.toml --home ${home}`)

    const db = new Database(`${home}/spool.db`, { readonly: true })
    const counts = Object.fromEntries(
      db
        .query<{ state: string; n: number }, []>("SELECT state, count(*) AS n FROM items GROUP BY state")
        .all()
        .map((r) => [r.state, r.n]),
    )
    db.close()
    expect(counts.running).toBeUndefined()
    expect(counts.completed).toBe(fake.paid.size)

    const args = resume!.split(" ").slice(1)
    const again = await spool(args, { cwd: tmp.path, env })
    expect(again.code).toBe(0)
    expect(again.stderr).toContain('run "crashy": 600 completed, 0 failed of 600')
    expect(fake.paid.size).toBe(600)
    expect([...fake.paid.values()].every((n) => n === 1)).toBe(true)
  }, 60_000)

  test("SIGTERM stops as cleanly as SIGINT", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, latencyMs: 30 })
    writeFileSync(tmp.join("in.jsonl"), input(300))
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const home = tmp.join("home")
    const child = start(["run", "job.toml", "--home", home], { cwd: tmp.path, env: { OPENAI_API_KEY: KEY } })
    await until(() => fake.paid.size >= 20, 20_000, "20 completions")
    child.kill("SIGTERM")
    const [stderr, code] = await Promise.all([new Response(child.stderr).text(), child.exited])
    expect(code).toBe(130)
    expect(stderr).toContain("SIGTERM: finishing in-flight calls")
    const db = new Database(`${home}/spool.db`, { readonly: true })
    const running = db
      .query<{ n: number }, []>("SELECT count(*) AS n FROM items WHERE state = 'running'")
      .get()
    const completed = db
      .query<{ n: number }, []>("SELECT count(*) AS n FROM items WHERE state = 'completed'")
      .get()
    db.close()
    expect(running?.n).toBe(0)
    expect(completed?.n).toBe(fake.paid.size)
  }, 60_000)

  test("a second SIGINT exits at once, and the next run still completes everything exactly once", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, latencyMs: 3000 })
    writeFileSync(tmp.join("in.jsonl"), input(40))
    writeFileSync(tmp.join("job.toml"), job(fake.url, "").replace("grace_s = 5", "grace_s = 60"))
    const home = tmp.join("home")
    const env = { OPENAI_API_KEY: KEY }
    const child = start(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    await until(() => fake.requests >= 8, 10_000, "8 requests in flight")
    child.kill("SIGINT")
    await Bun.sleep(200)
    child.kill("SIGINT")
    const code = await child.exited
    expect(code).toBe(130)
    expect(fake.paid.size).toBe(0)
    fake.latencyMs = 0
    const again = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(again.code).toBe(0)
    expect(fake.paid.size).toBe(40)
  }, 60_000)
})
