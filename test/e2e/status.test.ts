/**
 * What `spool status` and `spool runs` show, through real dist/spool processes against the fake OpenAI server: a
 * run whose processes are all gone is shown `interrupted` with the command that goes on with it (stopped with
 * SIGKILL and SIGINT), a run some process still works on `running`; a call a stop cut short does not count; a batch
 * run's batches are all in --json and never dropped unsaid from the text.
 */
import { describe, expect, test } from "bun:test"
import { Database } from "bun:sqlite"
import { existsSync, writeFileSync } from "node:fs"
import { open } from "../../src/core/ledger/open.ts"
import { itemsOf } from "../../src/serve.ts"
import { startFake } from "../lib/fake-openai.ts"
import { spool, start, until } from "../lib/spool.ts"
import { tmpdir } from "../lib/tmp.ts"

const KEY = "sk-test-interrupted-0123456789"
const env = { OPENAI_API_KEY: KEY }
const WHY = "no spool process is working on it"

function job(name: string, url: string, limits = "", mode: "realtime" | "batch" = "realtime"): string {
  return `name = "${name}"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "openai"
model = "gpt-4.1-mini"
mode = "${mode}"
base_url = "${url}"
[request]
prompt = "Item {{n}}"
max_tokens = 20
[batch]
poll_s = 0.05
poll_max_s = 0.2
batch_size = 40
[limits]
concurrency = 2
${limits}
`
}

const input = (n: number) =>
  Array.from({ length: n }, (_, i) => JSON.stringify({ id: `id-${i + 1}`, n: i + 1 })).join("\n") + "\n"

type View = { state: string; workers: number; rate_per_s: number; eta_s: number | null; resume: string }
type Line = { name: string; state: string; workers: number; resume: string | null }

async function statusOf(cwd: string): Promise<View> {
  const out = await spool(["status", "--json"], { cwd })
  expect(out.code).toBe(0)
  return JSON.parse(out.stdout) as View
}

async function runsOf(cwd: string): Promise<Line[]> {
  const out = await spool(["runs", "--json"], { cwd })
  expect(out.code).toBe(0)
  return JSON.parse(out.stdout) as Line[]
}

/** The rows of the worker registry, read straight from the store. */
function workers(cwd: string): string[] {
  const path = `${cwd}/.spool/spool.db`
  if (!existsSync(path)) return []
  const db = new Database(path, { readonly: true })
  try {
    return db
      .query<{ owner: string }, []>("SELECT owner FROM workers ORDER BY owner")
      .all()
      .map((w) => w.owner)
  } catch {
    return []
  } finally {
    db.close()
  }
}

/** What a stopped run shows: interrupted, no rate or ETA, and the command that goes on with it. */
async function expectInterrupted(cwd: string, name: string): Promise<void> {
  const view = await statusOf(cwd)
  expect(view).toMatchObject({ state: "interrupted", workers: 0, rate_per_s: 0, eta_s: null })
  expect(view.resume).toBe("spool run job.toml")
  const text = (await spool(["status"], { cwd })).stdout.split("\n")
  expect(text[0]).toBe(`run ${name} (#1) · interrupted — ${WHY}`)
  expect(text.find((l) => l.startsWith("time"))).toMatch(
    /^time {6}elapsed \d+s · no rate or ETA while nothing runs it$/,
  )
  expect(text.at(-2)).toBe("resume    spool run job.toml")
  expect((await runsOf(cwd)).map((r) => [r.name, r.state, r.workers, r.resume])).toEqual([
    [name, "interrupted", 0, "spool run job.toml"],
  ])
  const list = (await spool(["runs"], { cwd })).stdout.split("\n")
  expect(list[1]).toMatch(new RegExp(`^ {3}1  ${name} +interrupted +\\d+/200 done  `))
  expect(list[2]).toBe("      resume: spool run job.toml")
}

describe("a run that stopped does not look alive", () => {
  test("killed with SIGKILL: running while it works, interrupted at once after, running again when resumed", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, latencyMs: 100 })
    writeFileSync(tmp.join("in.jsonl"), input(200))
    writeFileSync(tmp.join("job.toml"), job("killed", fake.url))
    const child = start(["run", "job.toml"], { cwd: tmp.path, env })
    await until(() => fake.paid.size >= 4, 20_000, "4 completions")
    const live = await statusOf(tmp.path)
    expect([live.state, live.workers]).toEqual(["running", 1])
    expect((await runsOf(tmp.path)).map((r) => [r.state, r.resume])).toEqual([["running", null]])
    child.kill("SIGKILL")
    await child.exited
    // its row is still in the registry, but its process is gone
    const killed = workers(tmp.path)
    expect(killed).toHaveLength(1)
    await expectInterrupted(tmp.path, "killed")
    // the command it gives goes on with the run, which is running again while it does
    const again = start(["run", "job.toml"], { cwd: tmp.path, env })
    // the killed one's row is forgotten as the new one registers
    await until(
      () => workers(tmp.path).length === 1 && workers(tmp.path)[0] !== killed[0],
      20_000,
      "the new worker",
    )
    expect((await statusOf(tmp.path)).state).toBe("running")
    expect(await again.exited).toBe(0)
    expect((await statusOf(tmp.path)).state).toBe("completed")
    expect(workers(tmp.path)).toEqual([])
  }, 60_000)

  test("stopped with SIGINT: it leaves the registry on its way out, and is shown interrupted", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, latencyMs: 100 })
    writeFileSync(tmp.join("in.jsonl"), input(200))
    writeFileSync(tmp.join("job.toml"), job("stopped", fake.url))
    const child = start(["run", "job.toml"], { cwd: tmp.path, env })
    await until(() => fake.paid.size >= 4, 20_000, "4 completions")
    expect(workers(tmp.path)).toHaveLength(1)
    child.kill("SIGINT")
    expect(await child.exited).toBe(130)
    expect(workers(tmp.path)).toEqual([])
    await expectInterrupted(tmp.path, "stopped")
  }, 60_000)

  test("two workers on one run, one killed: still running with one worker; both gone: interrupted", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, latencyMs: 100 })
    writeFileSync(tmp.join("in.jsonl"), input(200))
    writeFileSync(tmp.join("job.toml"), job("shared", fake.url))
    const first = start(["run", "job.toml"], { cwd: tmp.path, env })
    await until(() => workers(tmp.path).length === 1, 20_000, "the first worker")
    const second = start(["run", "job.toml"], { cwd: tmp.path, env })
    await until(() => workers(tmp.path).length === 2, 20_000, "the second worker")
    const both = await statusOf(tmp.path)
    expect([both.state, both.workers]).toEqual(["running", 2])
    expect((await spool(["status"], { cwd: tmp.path })).stdout.split("\n")[0]).toBe(
      "run shared (#1) · running (2 workers)",
    )
    first.kill("SIGKILL")
    await first.exited
    const one = await statusOf(tmp.path)
    expect([one.state, one.workers]).toEqual(["running", 1])
    expect((await runsOf(tmp.path)).map((r) => [r.state, r.workers, r.resume])).toEqual([
      ["running", 1, null],
    ])
    second.kill("SIGKILL")
    await second.exited
    await expectInterrupted(tmp.path, "shared")
  }, 60_000)

  test("a call Ctrl+C cut short does not count: kept as attempt 0 with a note, and the item's result says 1 attempt", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, latencyMs: 5_000 })
    writeFileSync(tmp.join("in.jsonl"), input(3))
    // two calls in flight (limits given: none waits for the first answer) and one item claimed ahead; no grace:
    // the stop cuts the calls short at once
    writeFileSync(tmp.join("job.toml"), job("cut", fake.url, "grace_s = 0\nrpm = 600\ntpm = 1000000"))
    const child = start(["run", "job.toml"], { cwd: tmp.path, env })
    await until(() => fake.requests >= 2, 20_000, "two calls in flight")
    child.kill("SIGINT")
    expect(await child.exited).toBe(130)
    const attempts = (where: string) => {
      const db = new Database(`${tmp.path}/.spool/spool.db`, { readonly: true })
      try {
        return db
          .query<{ key: string; n: number; outcome: string }, []>(
            `SELECT i.key, a.n, a.outcome FROM attempts a JOIN items i ON i.id = a.item_id ${where} ORDER BY a.id`,
          )
          .all()
          .map((a) => [a.key, a.n, a.outcome])
      } finally {
        db.close()
      }
    }
    expect(attempts("")).toEqual([
      ["id-1", 0, "interrupted"],
      ["id-2", 0, "interrupted"],
      ["id-3", 0, "unsent"],
    ])
    const stopped = JSON.parse((await spool(["status", "--json"], { cwd: tmp.path })).stdout) as {
      attempts: number
      counts: Record<string, number>
    }
    expect([stopped.attempts, stopped.counts.pending]).toEqual([0, 3])

    fake.latencyMs = 0
    expect((await spool(["run", "job.toml"], { cwd: tmp.path, env })).code).toBe(0)
    const results = (await spool(["results"], { cwd: tmp.path })).stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { id: string; state: string; attempts: number })
    expect(results.map((r) => [r.id, r.state, r.attempts])).toEqual([
      ["id-1", "completed", 1],
      ["id-2", "completed", 1],
      ["id-3", "completed", 1],
    ])
    expect(attempts("WHERE i.key = 'id-1'")).toEqual([
      ["id-1", 0, "interrupted"],
      ["id-1", 1, "ok"],
    ])
    // the item's history, as the status page's API gives it, says why the first did not count
    const db = await open(`${tmp.path}/.spool`, { access: "read" })
    try {
      const run = (await db.runs.latest("cut"))!
      const { items } = await itemsOf(db, run, { limit: 10 })
      expect(items.map((i) => [i.id, i.attempts, i.history.map((h) => [h.n, h.outcome, h.note])])).toEqual([
        [
          "id-1",
          1,
          [
            [0, "interrupted", "interrupted by Ctrl+C or a stop signal; not counted"],
            [1, "ok", null],
          ],
        ],
        [
          "id-2",
          1,
          [
            [0, "interrupted", "interrupted by Ctrl+C or a stop signal; not counted"],
            [1, "ok", null],
          ],
        ],
        [
          "id-3",
          1,
          [
            [0, "unsent", "claimed but not sent before the run stopped; not counted"],
            [1, "ok", null],
          ],
        ],
      ])
    } finally {
      await db.close()
    }
  }, 60_000)
})

describe("spool status of a batch run", () => {
  test("five batches: --json has all five; the text the last three and 'and 2 more', never dropping one unsaid", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, batch: { processingMs: 50 } })
    writeFileSync(tmp.join("in.jsonl"), input(200))
    writeFileSync(tmp.join("job.toml"), job("five", fake.url, "", "batch"))
    expect((await spool(["run", "job.toml"], { cwd: tmp.path, env })).code).toBe(0)
    expect(fake.batch.batches).toHaveLength(5)
    const json = JSON.parse((await spool(["status", "--json"], { cwd: tmp.path })).stdout) as {
      batches: { id: number; phase: string; items: number; provider_id: string }[]
      batches_total: number
    }
    expect(json.batches_total).toBe(5)
    expect(json.batches.map((b) => [b.id, b.phase, b.items])).toEqual(
      [1, 2, 3, 4, 5].map((id) => [id, "ended", 40]),
    )
    const text = (await spool(["status"], { cwd: tmp.path })).stdout.split("\n")
    const from = text.indexOf("batches   5: 0 live, 5 ended or given up")
    expect(from).toBeGreaterThan(0)
    expect(text.slice(from + 1, from + 5)).toEqual([
      ...json.batches.slice(2).map((b) => `  #${b.id} ${b.provider_id}  ended (completed) 40/40`),
      "  … and 2 more ended (spool status --json lists every batch)",
    ])
  }, 60_000)
})

describe("spool status of a run that primed the prompt cache", () => {
  test("its priming calls counted, their cost in spend, their writes in the prompt cache's figures; text and --json", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    writeFileSync(tmp.join("in.jsonl"), input(3))
    writeFileSync(tmp.join("job.toml"), job("primed", fake.url))
    expect((await spool(["run", "job.toml"], { cwd: tmp.path, env })).code).toBe(0)
    type Json = {
      spend: { usd: number }
      prompt_cache: Record<string, unknown>
      priming: { cost_usd: number } & Record<string, unknown>
    }
    const json = async () => JSON.parse((await spool(["status", "--json"], { cwd: tmp.path })).stdout) as Json
    const before = await json()
    // short prompts: nothing cached, nothing primed, and no line of either
    expect([before.prompt_cache, before.priming]).toEqual([
      { read_tokens: 0, write_tokens: 0, saved_usd: 0, saved_share: null },
      { calls: 0, failed: 0, cost_usd: 0, last_at: null },
    ])
    expect((await spool(["status"], { cwd: tmp.path })).stdout).not.toMatch(/^(caching|priming) /m)
    // a priming call that wrote 1,000 tokens, and one that failed, as the runner records them
    const db = await open(`${tmp.path}/.spool`)
    try {
      const run = (await db.runs.latest("primed"))!
      const prime = {
        prefix: "p1",
        batch: null,
        owner: "w",
        startedAt: 1_000,
        endedAt: 2_000,
        outcome: "ok" as const,
        inputTokens: 1_000,
        outputTokens: 1,
        cachedTokens: 0,
        writeTokens: 1_000,
        latencyMs: 40,
      }
      await db.primes.record(run.id, prime)
      await db.primes.record(run.id, {
        ...prime,
        endedAt: 3_000,
        outcome: "failed",
        inputTokens: 0,
        outputTokens: 0,
        writeTokens: 0,
      })
    } finally {
      await db.close()
    }
    const after = await json()
    // gpt-4.1-mini: $0.40 input (a write costs the same: OpenAI charges no premium), $1.60 output, per million
    expect([after.prompt_cache, after.priming]).toEqual([
      { read_tokens: 0, write_tokens: 1_000, saved_usd: 0, saved_share: 0 },
      { calls: 2, failed: 1, cost_usd: after.priming.cost_usd, last_at: "1970-01-01T00:00:02.000Z" },
    ])
    expect(after.priming.cost_usd).toBeCloseTo(0.0004016, 15)
    expect(after.spend.usd - before.spend.usd).toBeCloseTo(0.0004016, 12)
    const text = (await spool(["status"], { cwd: tmp.path })).stdout.split("\n")
    expect(text.filter((t) => /^(caching|priming) /.test(t))).toEqual([
      "caching   0 tokens read, 1,000 written · saved $0.00 (0% of input)",
      "priming   2 calls (1 failed) · $0.0004",
    ])
  }, 60_000)
})
