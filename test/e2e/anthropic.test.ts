import { describe, expect, test } from "bun:test"
import { Database } from "bun:sqlite"
import { readdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { CREDIT_MESSAGE, startFakeAnthropic, type Fake } from "../lib/fake-anthropic.ts"
import { prng, spool, start, until } from "../lib/spool.ts"
import { tmpdir, type Tmp } from "../lib/tmp.ts"

const KEY = "sk-ant-api03-SECRET-do-not-leak-7731"
const SYSTEM = "Answer in one line."

function job(extra = ""): string {
  return `name = "claude"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "anthropic"
model = "claude-haiku-4-5"
[request]
system = "${SYSTEM}"
prompt = "Item {{n}}: {{text}}"
max_tokens = 64
[limits]
concurrency = 8
max_attempts = 20
timeout_s = 2
grace_s = 5
retry_base_s = 0.01
retry_cap_s = 0.1
${extra}`
}

const prompt = (i: number) => `Item ${i}: t${((i - 1) * 7) % 13}`

function input(n: number): string {
  return (
    Array.from({ length: n }, (_, i) =>
      JSON.stringify({ id: `id-${i + 1}`, n: i + 1, text: `t${(i * 7) % 13}` }),
    ).join("\n") + "\n"
  )
}

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)],
  )
}

/** Key and base URL come from the environment, as a user would set them. */
const environment = (fake: Fake, key = KEY) => ({ ANTHROPIC_API_KEY: key, ANTHROPIC_BASE_URL: fake.url })

type Result = {
  id: string
  state: string
  output: string | null
  error: string | null
  attempts: number
  usage: { input_tokens: number; output_tokens: number }
}

async function results(tmp: Tmp, home: string): Promise<Result[]> {
  const out = await spool(["results", "--home", home, "--out", tmp.join("r.jsonl")], { cwd: tmp.path })
  expect(out.code).toBe(0)
  return readFileSync(tmp.join("r.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as Result)
}

type Attempt = { key: string; outcome: string | null; error_class: string | null; http_status: number | null }

function attempts(home: string): Map<string, Attempt[]> {
  const db = new Database(`${home}/spool.db`, { readonly: true })
  expect(db.query<{ integrity_check: string }, []>("PRAGMA integrity_check").get()?.integrity_check).toBe(
    "ok",
  )
  const rows = db
    .query<Attempt, []>(
      "SELECT i.key, a.outcome, a.error_class, a.http_status FROM attempts a JOIN items i ON i.id = a.item_id ORDER BY i.id, a.n",
    )
    .all()
  db.close()
  return Map.groupBy(rows, (a) => a.key)
}

describe("dist/spool with the anthropic provider", () => {
  test("300 items with 20% faults (429, 529, 500, reset) all complete with exact outputs, each paid once, and the key never reaches the store, the logs or the results", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFakeAnthropic({
      apiKey: KEY,
      faults: { rate: 0.2, kinds: ["429", "529", "500", "reset"], seed: 7, retryAfter: "0" },
    })
    const N = 300
    writeFileSync(tmp.join("in.jsonl"), input(N))
    writeFileSync(tmp.join("job.toml"), job())
    const home = tmp.join("home")
    const out = await spool(["run", "job.toml", "--home", home, "--verbose"], {
      cwd: tmp.path,
      env: environment(fake),
    })
    expect(out.stderr).toContain(`run "claude": ${N} completed, 0 failed of ${N}`)
    expect(out.code).toBe(0)

    const lines = await results(tmp, home)
    expect(lines.length).toBe(N)
    const byKey = attempts(home)
    let faulted = 0
    const classes = new Set<string>()
    for (const [i, line] of lines.entries()) {
      const p = prompt(i + 1)
      const text = `echo: ${p}`
      expect(line).toMatchObject({
        id: `id-${i + 1}`,
        state: "completed",
        output: text,
        error: null,
        usage: {
          input_tokens: Math.ceil(JSON.stringify([SYSTEM, [{ role: "user", content: p }]]).length / 4),
          output_tokens: Math.ceil(text.length / 4),
        },
      })
      const mine = byKey.get(`id-${i + 1}`) ?? []
      // every request the fake saw is an attempt in the ledger, and the last one is the only success
      expect(fake.seen.get(p)).toBe(mine.length)
      expect(line.attempts).toBe(mine.length)
      expect(mine.at(-1)?.outcome).toBe("ok")
      expect(mine.filter((a) => a.outcome === "ok").length).toBe(1)
      for (const a of mine.slice(0, -1)) classes.add(`${a.error_class}:${a.http_status ?? "-"}`)
      faulted += mine.length - 1
      // paid once; a second payment could only follow a timeout of ours, where the answer was lost
      const timeouts = mine.filter((a) => a.error_class === "timeout").length
      expect(fake.paid.get(p)! - 1).toBeLessThanOrEqual(timeouts)
      expect(fake.paid.get(p)).toBeGreaterThanOrEqual(1)
    }
    expect(fake.paid.size).toBe(N)
    expect(faulted).toBe(fake.requests - N)
    expect(faulted).toBeGreaterThan(30)
    expect([...classes].sort()).toEqual(["network:-", "rate_limit:429", "server:500", "server:529"])
    expect(fake.invalid).toEqual([])
    expect(fake.headers?.get("x-api-key")).toBe(KEY)

    const files = [...walk(home), tmp.join("r.jsonl")]
    expect(files.some((f) => f.endsWith("spool.log"))).toBe(true)
    for (const file of files) expect(readFileSync(file).includes(KEY)).toBe(false)
    expect(out.stderr.includes(KEY)).toBe(false)
    expect(out.stdout.includes(KEY)).toBe(false)
  }, 120_000)

  test("survives SIGKILL at 12 seeded moments: every id has one correct result, no completed item was requested again", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFakeAnthropic({
      apiKey: KEY,
      latencyMs: 20,
      faults: { rate: 0.05, kinds: ["429", "529", "500", "reset"], seed: 5, retryAfter: "0" },
    })
    const N = 1500
    writeFileSync(tmp.join("in.jsonl"), input(N))
    writeFileSync(tmp.join("job.toml"), job())
    const home = tmp.join("home")
    const env = environment(fake)
    const random = prng(20261127)
    let kills = 0
    let finished = false
    for (let round = 0; round < 12; round++) {
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
    expect(finished).toBe(false)
    expect(kills).toBe(12)
    // the kills cut a run that was under way: some items were done before the last run, not all
    const before = fake.paid.size
    expect(before).toBeGreaterThan(0)
    expect(before).toBeLessThan(N)
    const last = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(last.stderr).toContain(`run "claude": ${N} completed, 0 failed of ${N}`)
    expect(last.code).toBe(0)

    const lines = await results(tmp, home)
    expect(lines.length).toBe(N)
    expect(new Set(lines.map((l) => l.id)).size).toBe(N)
    const byKey = attempts(home)
    let lost = 0
    let repaid = 0
    for (const [i, line] of lines.entries()) {
      const p = prompt(i + 1)
      expect(line).toMatchObject({ id: `id-${i + 1}`, state: "completed", output: `echo: ${p}` })
      const mine = byKey.get(`id-${i + 1}`) ?? []
      // write-before-call: every request the fake saw has a committed attempt
      expect(fake.seen.get(p) ?? 0).toBeLessThanOrEqual(mine.length)
      // the completing attempt is the last one: nothing was requested after completion
      expect(mine.at(-1)?.outcome).toBe("ok")
      expect(mine.filter((a) => a.outcome === "ok").length).toBe(1)
      // attempts whose fate is unknown: cut off by a kill, or timed out at our end
      const lostHere = mine.filter(
        (a) => a.outcome === "lost" || a.outcome === "interrupted" || a.error_class === "timeout",
      ).length
      lost += lostHere
      // a second payment can only come from an attempt that was in flight at a kill
      const paid = fake.paid.get(p) ?? 0
      expect(paid).toBeGreaterThanOrEqual(1)
      expect(paid - 1).toBeLessThanOrEqual(lostHere)
      repaid += paid - 1
    }
    expect(lost).toBeGreaterThan(0)
    expect(repaid).toBeLessThanOrEqual(lost)
    expect(fake.invalid).toEqual([])
  }, 180_000)

  test("a too-low credit balance pauses the run without failing an item, and a resume finishes the rest", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFakeAnthropic({ apiKey: KEY })
    const N = 40
    fake.script.set(prompt(3), ["credit"])
    writeFileSync(tmp.join("in.jsonl"), input(N))
    writeFileSync(tmp.join("job.toml"), job().replace("concurrency = 8", "concurrency = 1"))
    const home = tmp.join("home")
    const env = environment(fake)
    const out = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(out.code).toBe(1)
    expect(out.stderr).toContain(`paused: HTTP 400: ${CREDIT_MESSAGE}`)
    expect(fake.requests).toBe(3)
    const status = JSON.parse((await spool(["status", "--json", "--home", home], { cwd: tmp.path })).stdout)
    expect(status.state).toBe("paused")
    expect(status.counts).toMatchObject({ completed: 2, failed: 0, pending: N - 2, running: 0 })

    const again = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(again.stderr).toContain(`run "claude": ${N} completed, 0 failed of ${N}`)
    expect(again.code).toBe(0)
    expect(fake.paid.size).toBe(N)
    expect([...fake.paid.values()].every((n) => n === 1)).toBe(true)
    expect(fake.seen.get(prompt(3))).toBe(2)
    expect(fake.invalid).toEqual([])
  }, 60_000)
})
