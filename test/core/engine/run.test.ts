import { describe, expect, test } from "bun:test"
import { writeFileSync } from "node:fs"
import * as engine from "../../../src/core/engine/run.ts"
import * as sqlite from "../../../src/core/ledger/sqlite/sqlite.ts"
import * as report from "../../../src/core/report/report.ts"
import { startFake } from "../../lib/fake-openai.ts"
import { itemsOf } from "../../lib/ledger-contract.ts"
import { tmpdir, type Tmp } from "../../lib/tmp.ts"
import { RunPausedError } from "../../../src/core/base/errors.ts"

const KEY = "sk-test-engine-0123456789"

function lines(n: number, row: (i: number) => Record<string, unknown>): string {
  return Array.from({ length: n }, (_, i) => JSON.stringify(row(i + 1))).join("\n") + "\n"
}

describe("the engine, realtime, against the fake OpenAI server", () => {
  test("1,000 items with 20% faults all complete with the right output, every attempt recorded, none paid twice", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({
      apiKey: KEY,
      faults: {
        rate: 0.2,
        kinds: ["429", "500", "503", "hang", "reset", "garbage"],
        seed: 7,
        retryAfter: "0",
      },
    })
    process.env.OPENAI_API_KEY = KEY
    writeFileSync(
      tmp.join("in.jsonl"),
      lines(1000, (i) => ({ id: `q${i}`, text: `question ${i}` })),
    )
    writeFileSync(
      tmp.join("job.toml"),
      `name = "faults"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "openai"
model = "gpt-4.1-mini"
base_url = "${fake.url}"
[request]
system = "Answer briefly."
prompt = "Q: {{text}}"
max_tokens = 20
[limits]
concurrency = 32
max_attempts = 10
timeout_s = 1
retry_base_s = 0.01
retry_cap_s = 0.05
`,
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

    const db = sqlite.open(home)
    const run = (await db.runs.latest("faults"))!
    expect(run.state).toBe("completed")
    const items = await itemsOf(db, run.id)
    expect(items.length).toBe(1000)
    // an answer is paid once; only a call that timed out on our side (its fate unknown: on a loaded machine the
    // server may have answered just after) can have been paid again
    const timeouts = new Map(
      db.db
        .query<{ item_id: number; n: number }, []>(
          "SELECT item_id, count(*) AS n FROM attempts WHERE error_class = 'timeout' GROUP BY item_id",
        )
        .all()
        .map((r) => [r.item_id, r.n]),
    )
    for (const [i, item] of items.entries()) {
      expect(item.key).toBe(`q${i + 1}`)
      expect(item.state).toBe("completed")
      expect(item.output).toBe(`echo: Q: question ${i + 1}`)
      const paid = fake.paid.get(`Q: question ${i + 1}`) ?? 0
      expect(paid).toBeGreaterThanOrEqual(1)
      expect(paid).toBeLessThanOrEqual(1 + (timeouts.get(item.id) ?? 0))
    }
    const attempts = db.db.query<{ n: number }, []>("SELECT count(*) AS n FROM attempts").get()!.n
    const faulted = db.db
      .query<{ n: number }, []>("SELECT count(*) AS n FROM attempts WHERE outcome = 'retry'")
      .get()!.n
    expect(attempts).toBe(fake.requests)
    expect(faulted).toBe(fake.requests - 1000)
    expect(faulted).toBeGreaterThan(150)
    const classes = (await db.reads.summary(run.id)).errors.map((e) => e.class).sort()
    expect(classes).toEqual(["bad_response", "network", "rate_limit", "server", "timeout"])
    expect(fake.invalid).toEqual([])
    expect(db.integrity()).toBe("ok")
    await db.close()
  })

  async function small(tmp: Tmp, url: string, n: number, limits = "") {
    process.env.OPENAI_API_KEY = KEY
    writeFileSync(
      tmp.join("in.jsonl"),
      lines(n, (i) => ({ id: `s${i}`, text: `s${i}` })),
    )
    writeFileSync(
      tmp.join("job.toml"),
      `name = "small"\n[source]\npath = "in.jsonl"\nid = "id"\n[provider]\nmodel = "m"\nbase_url = "${url}"\n[request]\nprompt = "{{text}}"\n[limits]\n${limits}\n`,
    )
    return engine.prepare({
      file: tmp.join("job.toml"),
      flags: {},
      home: tmp.join(".spool"),
      newRun: false,
      reingest: false,
      resume: "spool run job.toml",
    })
  }

  test("a 429's Retry-After is honoured before the next attempt", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    fake.faults = { rate: 0, kinds: [], retryAfter: "1" }
    fake.script.set("s1", ["429"])
    const session = await small(tmp, fake.url, 1, "retry_base_s = 0\nretry_cap_s = 0")
    expect(await session.execute()).toBe(0)
    const db = sqlite.open(tmp.join(".spool"))
    const rows = db.db
      .query<{ n: number; outcome: string; started_at: number; ended_at: number; http_status: number }, []>(
        "SELECT n, outcome, started_at, ended_at, http_status FROM attempts ORDER BY n",
      )
      .all()
    await db.close()
    expect(rows.map((r) => [r.n, r.outcome, r.http_status])).toEqual([
      [1, "retry", 429],
      [2, "ok", 200],
    ])
    expect(rows[1]!.started_at - rows[0]!.ended_at).toBeGreaterThanOrEqual(990)
  })

  test("exhausted quota pauses the run: no item fails, the rest stay pending, and a resume finishes them", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    fake.script.set("s3", ["quota"])
    const session = await small(tmp, fake.url, 40, "concurrency = 1")
    await expect(session.execute()).rejects.toThrow(RunPausedError)
    const db = sqlite.open(tmp.join(".spool"))
    const run = (await db.runs.latest("small"))!
    expect(run.state).toBe("paused")
    expect(run.reason).toContain("You exceeded your current quota")
    expect(await db.reads.counts(run.id)).toMatchObject({ completed: 2, failed: 0, pending: 38, running: 0 })
    await db.close()
    const again = await small(tmp, fake.url, 40, "concurrency = 1")
    expect(await again.execute()).toBe(0)
    expect(fake.paid.size).toBe(40)
    expect([...fake.paid.values()].every((n) => n === 1)).toBe(true)
  })

  test("max_cost_usd: at concurrency 64 new work stops before the cap; the overshoot stays within what was in flight; a higher cap finishes the run", async () => {
    await using tmp = await tmpdir()
    writeFileSync(
      tmp.join("in.jsonl"),
      lines(2000, (i) => ({
        id: `c${i}`,
        text: `a ticket about an invoice, number ${String(i).padStart(5, "0")}`,
      })),
    )
    const job = (cap: number) =>
      `name = "capped"\n[source]\npath = "in.jsonl"\nid = "id"\n[provider]\nname = "mock"\nmodel = "gpt-4.1-mini"\n[provider.options]\nlatency_ms = 5\n[request]\nprompt = "{{text}}"\nmax_tokens = 50\n[limits]\nconcurrency = 64\nmax_cost_usd = ${cap}\n`
    // every item costs the same: the mock's usage is a function of the prompt's length, and all prompts are equally long
    const price = { input: 0.4, output: 1.6 }
    const open = async (cap: number) => {
      writeFileSync(tmp.join("job.toml"), job(cap))
      return engine.prepare({
        file: tmp.join("job.toml"),
        flags: {},
        home: tmp.join(".spool"),
        newRun: false,
        reingest: false,
        resume: "spool run job.toml",
      })
    }
    const cap = 0.02
    await expect((await open(cap)).execute()).rejects.toThrow(RunPausedError)
    const db = sqlite.open(tmp.join(".spool"))
    const run = (await db.runs.latest("capped"))!
    const s = await db.reads.summary(run.id)
    const spent = (s.inputTokens * price.input + s.outputTokens * price.output) / 1e6
    const each = spent / s.counts.completed
    expect(run.state).toBe("paused")
    expect(run.reason).toContain("the spend cap of $0.02 is reached")
    expect(s.counts.failed).toBe(0)
    expect(s.counts.running).toBe(0)
    expect(s.counts.completed + s.counts.pending).toBe(2000)
    // it used the budget, and went past it by less than one in-flight window (64 items) at most
    expect(spent).toBeGreaterThan(cap - 65 * each)
    expect(spent).toBeLessThanOrEqual(cap + 64 * each)
    expect(s.counts.completed).toBeLessThan(2000)
    await db.close()

    expect(await (await open(1)).execute()).toBe(0)
    const after = sqlite.open(tmp.join(".spool"))
    expect((await after.reads.counts((await after.runs.latest("capped"))!.id)).completed).toBe(2000)
    await after.close()
  })

  test("structured output: valid answers complete as parsed objects; not JSON and schema violations are retried, then left for review with their gate", async () => {
    await using tmp = await tmpdir()
    const labels = ["billing", "bug", "spam", 'say "hi"', "question"]
    writeFileSync(
      tmp.join("in.jsonl"),
      lines(5, (i) => ({ id: `s${i}`, label: labels[i - 1] })),
    )
    writeFileSync(
      tmp.join("label.schema.json"),
      JSON.stringify({
        type: "object",
        properties: { label: { type: "string", enum: ["billing", "bug", "question"] } },
        required: ["label"],
        additionalProperties: false,
      }),
    )
    writeFileSync(
      tmp.join("job.toml"),
      `name = "typed"\n[source]\npath = "in.jsonl"\nid = "id"\n[provider]\nname = "mock"\n[provider.options]\nreply = '{"label": "{{prompt}}"}'\n[request]\nprompt = "{{label}}"\n[output]\nschema = "label.schema.json"\n[limits]\nmax_attempts = 2\nretry_base_s = 0\nretry_cap_s = 0\n`,
    )
    const session = await engine.prepare({
      file: tmp.join("job.toml"),
      flags: {},
      home: tmp.join(".spool"),
      newRun: false,
      reingest: false,
      resume: "spool run job.toml",
    })
    expect(await session.execute()).toBe(3)
    const db = sqlite.open(tmp.join(".spool"))
    const run = (await db.runs.latest("typed"))!
    const results: Record<string, unknown>[] = []
    for await (const line of report.results(db, run)) results.push(JSON.parse(line))
    expect(results.map((r) => [r.id, r.state, r.output, r.error, r.attempts])).toEqual([
      ["s1", "completed", { label: "billing" }, null, 1],
      ["s2", "completed", { label: "bug" }, null, 1],
      [
        "s3",
        "needs_review",
        '{"label": "spam"}',
        {
          class: "output",
          message:
            'schema violation at /label: must be equal to one of the allowed values: "billing", "bug", "question"',
        },
        2,
      ],
      [
        "s4",
        "needs_review",
        '{"label": "say "hi""}',
        { class: "output", message: 'not JSON: {"label": "say "hi""}' },
        2,
      ],
      ["s5", "completed", { label: "question" }, null, 1],
    ])
    const outcomes = db.db
      .query<{ outcome: string }, []>("SELECT outcome FROM attempts ORDER BY item_id, n")
      .all()
      .map((a) => a.outcome)
    expect(outcomes).toEqual(["ok", "ok", "retry", "needs_review", "retry", "needs_review", "ok"])
    await db.close()
  })

  test("rpm not set: the limit is learned from the first answer's headers, and a run at concurrency 64 meets at most one 429", async () => {
    await using tmp = await tmpdir()
    // 6,000 requests a minute, enforced over a tenth of a second: 10 at once, then 100 a second
    await using fake = await startFake({
      apiKey: KEY,
      rateLimit: { rpm: 6000, burstSeconds: 0.1 },
      latencyMs: 20,
    })
    const session = await small(tmp, fake.url, 300, "concurrency = 64")
    expect(await session.execute()).toBe(0)
    expect(fake.paid.size).toBe(300)
    expect(fake.limited).toBeLessThanOrEqual(1) // how close it keeps to the limit is measured in bench/ratelimit.ts
  })

  test("rpm set in the job: kept to, and synced with the provider's remaining count; no 429 at all", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, rateLimit: { rpm: 6000, burstSeconds: 0.1 } })
    const session = await small(tmp, fake.url, 200, "concurrency = 64\nrpm = 5400")
    expect(await session.execute()).toBe(0)
    expect(fake.paid.size).toBe(200)
    expect(fake.limited).toBe(0)
  })
})
