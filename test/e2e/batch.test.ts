/**
 * Batch mode through the compiled binary, against the fake OpenAI and Anthropic batch APIs: the whole life of a
 * batch, SIGKILL at every step of it, salvage of expired batches, queue limits, cancel, pause, the realtime tail,
 * and the artifacts (export, prune).
 */
import { describe, expect, test } from "bun:test"
import { Database } from "bun:sqlite"
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { startFake, type Fake } from "../lib/fake-openai.ts"
import { startFakeAnthropic } from "../lib/fake-anthropic.ts"
import { validateSchema } from "../lib/spec.ts"
import { spool, start, until } from "../lib/spool.ts"
import { tmpdir } from "../lib/tmp.ts"
import type { StatusView } from "../../src/core/report/report.ts"

const KEY = "sk-test-batch-0123456789"
const env = { OPENAI_API_KEY: KEY, ANTHROPIC_API_KEY: KEY }

function job(url: string, extra = "", provider = "openai", model = "gpt-4.1-mini"): string {
  return `name = "batchy"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "${provider}"
model = "${model}"
mode = "batch"
base_url = "${url}"
[request]
prompt = "Item {{n}}: {{text}}"
max_tokens = 50
[limits]
max_attempts = 3
[batch]
poll_s = 0.05
poll_max_s = 0.2
batch_size = 40
${extra}`
}

const prompt = (i: number) => `Item ${i}: t${(i * 7) % 13}`

function input(n: number): string {
  return (
    Array.from({ length: n }, (_, i) =>
      JSON.stringify({ id: `id-${i + 1}`, n: i + 1, text: `t${((i + 1) * 7) % 13}` }),
    ).join("\n") + "\n"
  )
}

type Line = {
  id: string
  state: string
  output: string | null
  error: { class: string; message: string } | null
  cost_usd: number | null
}

async function results(cwd: string, home: string): Promise<Line[]> {
  const out = await spool(["results", "--home", home], { cwd, env })
  expect(out.code).toBe(0)
  return out.stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as Line)
}

/** `spool status --json` of the run in `home`. */
async function statusOf(cwd: string, home: string): Promise<StatusView> {
  const out = await spool(["status", "--json", "--home", home], { cwd, env })
  expect(out.code).toBe(0)
  return JSON.parse(out.stdout) as StatusView
}

function integrity(home: string): string {
  const db = new Database(join(home, "spool.db"), { readonly: true })
  const ok = db.query<{ integrity_check: string }, []>("PRAGMA integrity_check").get()?.integrity_check ?? ""
  db.close()
  return ok
}

function tags(home: string): string[] {
  const db = new Database(join(home, "spool.db"), { readonly: true })
  const rows = db.query<{ tag: string }, []>("SELECT tag FROM batches ORDER BY id").all()
  db.close()
  return rows.map((r) => r.tag)
}

/** Every item completed exactly once with its own answer, no line paid twice, no batch created twice. */
async function allDoneOnce(fake: Fake, cwd: string, home: string, n: number): Promise<void> {
  const lines = await results(cwd, home)
  expect(lines.length).toBe(n)
  for (const [i, line] of lines.entries()) {
    expect(line).toMatchObject({ id: `id-${i + 1}`, state: "completed", output: `echo: ${prompt(i + 1)}` })
  }
  for (let i = 1; i <= n; i++) expect(fake.paid.get(prompt(i))).toBe(1)
  for (const tag of tags(home)) expect(fake.batch.byTag(`${tag}_`).length).toBeLessThanOrEqual(1)
  expect(integrity(home)).toBe("ok")
  expect(fake.invalid).toEqual([])
}

describe("batch mode through dist/spool (OpenAI Batch API)", () => {
  test("packs, uploads, polls, downloads and applies: every item completed once at the batch price, files kept owner-only", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({
      apiKey: KEY,
      batch: { validatingMs: 50, processingMs: 200, finalizingMs: 50 },
    })
    const N = 100
    writeFileSync(tmp.join("in.jsonl"), input(N))
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const home = tmp.join("home")
    const run = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(run.stderr).toContain(`run "batchy": ${N} completed, 0 failed of ${N}`)
    expect(run.code).toBe(0)
    await allDoneOnce(fake, tmp.path, home, N)
    // 40 + 40 + 20, each one provider batch with the run's metadata, results out of order
    expect(fake.batch.batches.map((b) => b.lines.length)).toEqual([40, 40, 20])
    for (const b of fake.batch.batches) {
      expect(b.metadata).toMatchObject({ spool_run: "batchy" })
      expect(b.custom_ids.every((c) => /^[a-zA-Z0-9_-]{1,64}$/.test(c))).toBe(true)
    }
    // the batch price is half the realtime price: gpt-4.1-mini is $0.40 / $1.60 per million
    const lines = await results(tmp.path, home)
    const db = new Database(join(home, "spool.db"), { readonly: true })
    const tokens = db
      .query<{ i: number; o: number; bi: number }, []>(
        "SELECT input_tokens AS i, output_tokens AS o, batch_input_tokens AS bi FROM items WHERE key = 'id-1'",
      )
      .get()!
    db.close()
    expect(tokens.bi).toBe(tokens.i)
    expect(lines[0]!.cost_usd).toBeCloseTo(((tokens.i * 0.4 + tokens.o * 1.6) / 1e6) * 0.5, 6)
    // every request line is valid against the spec's chat completions request, and the files are 0600
    const dir = join(home, "artifacts", "batchy")
    const files = readdirSync(dir).sort()
    expect(files.filter((f) => f.endsWith(".requests.jsonl")).length).toBe(3)
    expect(files.filter((f) => f.endsWith(".output.jsonl")).length).toBe(3)
    let requestLines = 0
    for (const f of files) {
      expect(statSync(join(dir, f)).mode & 0o777).toBe(0o600)
      if (!f.endsWith(".requests.jsonl")) continue
      for (const text of readFileSync(join(dir, f), "utf8").trim().split("\n")) {
        const line = JSON.parse(text) as { custom_id: string; method: string; url: string; body: unknown }
        expect(Object.keys(line).sort()).toEqual(["body", "custom_id", "method", "url"])
        expect(line.method).toBe("POST")
        expect(line.url).toBe("/v1/chat/completions")
        expect(validateSchema("CreateChatCompletionRequest", line.body)).toEqual([])
        requestLines++
      }
    }
    expect(requestLines).toBe(N)
    expect(statSync(dir).mode & 0o777).toBe(0o700)
    // status shows the batches and where each one ended
    const view = await statusOf(tmp.path, home)
    expect(view.batches.map((b) => [b.phase, b.outcome, b.items])).toEqual([
      ["ended", "completed", 40],
      ["ended", "completed", 40],
      ["ended", "completed", 20],
    ])
  }, 60_000)

  for (const point of ["pack", "intent", "created", "poll", "download", "apply"] as const) {
    test(`SIGKILL at "${point}": the next run creates no batch twice, pays no line twice, and finishes every item once`, async () => {
      await using tmp = await tmpdir()
      await using fake = await startFake({ apiKey: KEY, batch: { processingMs: 100 } })
      const N = 90
      writeFileSync(tmp.join("in.jsonl"), input(N))
      writeFileSync(tmp.join("job.toml"), job(fake.url))
      const home = tmp.join("home")
      const killed = start(["run", "job.toml", "--home", home], {
        cwd: tmp.path,
        env: { ...env, SPOOL_CRASH_AT: point },
      })
      await killed.exited
      expect(killed.signalCode).toBe("SIGKILL")
      const before = fake.batch.batches.length
      const last = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
      expect(last.stderr).toContain(`run "batchy": ${N} completed, 0 failed of ${N}`)
      expect(last.code).toBe(0)
      await allDoneOnce(fake, tmp.path, home, N)
      // what the killed process did at the provider, and what the next one found there
      if (point === "pack" || point === "intent") expect(before).toBe(0)
      else expect(before).toBeGreaterThanOrEqual(1)
      if (point === "created") {
        expect(last.stderr).toContain("batch adopted")
        expect(fake.batch.batches.length).toBe(3)
      }
      if (point === "intent") expect(last.stderr).not.toContain("batch adopted")
      // every batch the provider has is one of the ledger's, and each of the ledger's is there at most once
      const known = new Set(tags(home))
      for (const b of fake.batch.batches) expect(known.has(String(b.metadata?.spool_tag))).toBe(true)
    }, 60_000)
  }

  test("a batch that expires with 60% done leaves exactly those completed and resubmits only the rest", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, batch: { processingMs: 100 } })
    fake.batch.script = [{ end: { outcome: "expired", after: 0.6 } }]
    writeFileSync(tmp.join("in.jsonl"), input(100))
    writeFileSync(tmp.join("job.toml"), job(fake.url).replace("batch_size = 40", "batch_size = 100"))
    const home = tmp.join("home")
    const run = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(run.code).toBe(0)
    await allDoneOnce(fake, tmp.path, home, 100)
    const [first, second] = fake.batch.batches
    expect(fake.batch.batches.length).toBe(2)
    expect(first!.lines.length).toBe(100)
    expect(second!.lines.length).toBe(40)
    // the second batch holds exactly the 40 lines the first one never ran
    const db = new Database(join(home, "spool.db"), { readonly: true })
    const rows = db
      .query<{ lines: number; outcome: string }, []>("SELECT lines, outcome FROM batches ORDER BY id")
      .all()
    const attempts = db.query<{ n: number }, []>("SELECT count(*) AS n FROM attempts").get()!.n
    db.close()
    expect(rows).toEqual([
      { lines: 60, outcome: "expired" },
      { lines: 40, outcome: "completed" },
    ])
    // an expired line was never run: no attempt is counted for it
    expect(attempts).toBe(100)
    const rerun = new Set(second!.lines.map((l) => l.input))
    const firstPaid = first!.lines.filter((l) => !rerun.has(l.input))
    expect(firstPaid.length).toBe(60)
    expect(fake.batch.paidLines).toBe(100)
  }, 60_000)

  test("errored lines: retryable ones go round again, permanent ones fail with their error; exit 3", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    const seen = new Map<string, number>()
    fake.batch.faults = {
      lineError: (_id, input) => {
        const n = (seen.get(input) ?? 0) + 1
        seen.set(input, n)
        if (input === prompt(3)) return { status: 400, message: "Invalid 'messages': too long." }
        if (input === prompt(5) && n === 1) return { status: 500 }
        return undefined
      },
    }
    writeFileSync(tmp.join("in.jsonl"), input(10))
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const home = tmp.join("home")
    const run = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(run.code).toBe(3)
    const lines = await results(tmp.path, home)
    expect(lines.filter((l) => l.state === "completed").length).toBe(9)
    expect(lines[2]).toMatchObject({ state: "failed", error: { class: "bad_request" } })
    expect(lines[2]!.error!.message).toContain("Invalid 'messages': too long.")
    expect(lines[4]).toMatchObject({ state: "completed", output: `echo: ${prompt(5)}` })
    expect(seen.get(prompt(5))).toBe(2)
    expect(fake.batch.batches.map((b) => b.lines.length)).toEqual([10, 1])
  }, 60_000)

  test("batches the provider fails with no result three times in a row pause the run with its reason; nothing fails", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    const failed = { end: { outcome: "failed" as const, after: 0 } }
    fake.batch.script = [failed, failed, failed]
    writeFileSync(tmp.join("in.jsonl"), input(30))
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const home = tmp.join("home")
    const run = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(run.code).toBe(1)
    expect(run.stderr).toContain(
      'run "batchy" paused: 3 batches in a row failed at the provider with no result',
    )
    expect(fake.batch.batches.length).toBe(3)
    const status = await statusOf(tmp.path, home)
    expect(status).toMatchObject({ state: "paused", counts: { pending: 30, failed: 0 } })
    // the provider works again: the same command finishes the run
    const again = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(again.code).toBe(0)
    await allDoneOnce(fake, tmp.path, home, 30)
  }, 60_000)

  test("max_cost_usd: no batch goes out that would pass the cap at the batch price; a higher cap finishes the run", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    writeFileSync(tmp.join("in.jsonl"), input(100))
    writeFileSync(
      tmp.join("job.toml"),
      job(fake.url).replace("batch_size = 40", "batch_size = 20") +
        "[pricing]\ninput = 1000\noutput = 1000\n",
    )
    const home = tmp.join("home")
    const capped = await spool(["run", "job.toml", "--home", home, "--max-cost-usd", "0.4"], {
      cwd: tmp.path,
      env,
    })
    expect(capped.code).toBe(1)
    expect(capped.stderr).toContain('run "batchy" paused: the spend cap of $0.4 is reached')
    const paused = await statusOf(tmp.path, home)
    expect(paused.state).toBe("paused")
    expect(paused.counts.completed).toBeGreaterThan(20)
    expect(paused.counts.completed).toBeLessThan(100)
    expect(paused.counts.pending).toBe(100 - paused.counts.completed)
    // spent within the cap: once one batch has ended, each next one is sized at 1.25× the most one item has cost so far (README, Batch mode)
    expect(paused.spend.usd).toBeLessThanOrEqual(0.4)
    // the batch price: half of what the same tokens cost in direct calls
    const lines = await results(tmp.path, home)
    const db = new Database(join(home, "spool.db"), { readonly: true })
    const t = db
      .query<{ i: number; o: number }, []>(
        "SELECT input_tokens AS i, output_tokens AS o FROM items WHERE key = 'id-1'",
      )
      .get()!
    db.close()
    expect(lines[0]!.cost_usd).toBeCloseTo(((t.i + t.o) * 1000 * 0.5) / 1e6, 6)
    const more = await spool(["run", "job.toml", "--home", home, "--max-cost-usd", "10"], {
      cwd: tmp.path,
      env,
    })
    expect(more.code).toBe(0)
    await allDoneOnce(fake, tmp.path, home, 100)
  }, 60_000)

  test("max_cost_usd holds for the realtime tail too: its direct calls start from what the batches spent", async () => {
    await using tmp = await tmpdir()
    // the batch expires half-way; the first direct call of the tail finds the quota spent, which pauses the run
    await using fake = await startFake({ apiKey: KEY, faults: { rate: 1, kinds: ["quota"] } })
    fake.batch.script = [{ end: { outcome: "expired", after: 0.5 } }]
    writeFileSync(tmp.join("in.jsonl"), input(80))
    writeFileSync(
      tmp.join("job.toml"),
      job(fake.url)
        .replace("batch_size = 40", "batch_size = 80")
        .replace("[limits]", "[limits]\ntail_realtime = 40\nconcurrency = 2") +
        "[pricing]\ninput = 1000\noutput = 1000\n",
    )
    const home = tmp.join("home")
    const first = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(first.code).toBe(1)
    expect(first.stderr).toContain("You exceeded your current quota")
    const batched = await statusOf(tmp.path, home)
    expect(batched.counts.completed).toBe(40)
    expect(fake.batch.paidLines).toBe(40)
    // the quota is back; a cap 0.2 USD above what the batch spent lets only some of the 40 direct calls go out
    fake.faults = undefined
    const cap = Math.round((batched.spend.usd! + 0.2) * 1000) / 1000
    const run = await spool(["run", "job.toml", "--home", home, "--max-cost-usd", String(cap)], {
      cwd: tmp.path,
      env,
    })
    expect(run.code).toBe(1)
    expect(run.stderr).toContain(`run "batchy" paused: the spend cap of $${cap} is reached`)
    const capped = await statusOf(tmp.path, home)
    expect(fake.served.length).toBeGreaterThan(0)
    expect(capped.counts.completed).toBe(40 + fake.served.length)
    expect(capped.counts.completed).toBeLessThan(80)
    expect(capped.counts.pending).toBe(80 - capped.counts.completed)
    // past the cap by no more than the calls in flight (concurrency 2, one claimed ahead) at ~0.016 USD each
    expect(capped.spend.usd).toBeLessThanOrEqual(cap + 3 * 0.02)
    expect(fake.batch.batches.length).toBe(1)
  }, 60_000)

  test("a 404 right after create is waited out; out-of-order results map back to their items", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, batch: { processingMs: 100 } })
    fake.batch.faults = { notFoundOnce: true, shuffle: true }
    writeFileSync(tmp.join("in.jsonl"), input(30))
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const home = tmp.join("home")
    const run = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(run.code).toBe(0)
    await allDoneOnce(fake, tmp.path, home, 30)
    expect(fake.batch.batches.length).toBe(1)
  }, 60_000)

  test("the enqueued-token limit: the refused batch's items wait, the limit is learned and kept, batches fit under it", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, batch: { processingMs: 300 } })
    // room for about two batches of 20 at once
    fake.batch.enqueuedTokenLimit = 500
    writeFileSync(tmp.join("in.jsonl"), input(100))
    writeFileSync(tmp.join("job.toml"), job(fake.url).replace("batch_size = 40", "batch_size = 20"))
    const home = tmp.join("home")
    const run = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(run.code).toBe(0)
    await allDoneOnce(fake, tmp.path, home, 100)
    const refused = fake.batch.batches.filter((b) =>
      b.data.errors.some((e) => e.code === "token_limit_exceeded"),
    )
    expect(refused.length).toBeGreaterThanOrEqual(1)
    const status = await statusOf(tmp.path, home)
    expect(status.queue.tokens).toBe(500)
    expect(status.counts.failed).toBe(0)
    expect(status.batches.filter((b) => b.phase === "abandoned").length).toBe(refused.length)
  }, 60_000)

  test("tail_realtime: the last items after an expired batch go through direct calls, on the same ledger", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, batch: { processingMs: 50 } })
    fake.batch.script = [{ end: { outcome: "expired", after: 0.6 } }]
    writeFileSync(tmp.join("in.jsonl"), input(50))
    writeFileSync(
      tmp.join("job.toml"),
      job(fake.url)
        .replace("batch_size = 40", "batch_size = 50")
        .replace("[limits]", "[limits]\ntail_realtime = 25"),
    )
    const home = tmp.join("home")
    const run = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(run.code).toBe(0)
    await allDoneOnce(fake, tmp.path, home, 50)
    expect(fake.batch.batches.length).toBe(1)
    expect(fake.batch.paidLines).toBe(30)
    expect(fake.served.length).toBe(20)
  }, 60_000)

  test("spool cancel cancels the live batch at the provider and keeps what it finished; the rest stay pending", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, batch: { processingMs: 4000, cancelMs: 100 } })
    writeFileSync(tmp.join("in.jsonl"), input(40))
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const home = tmp.join("home")
    const child = start(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    await until(() => fake.batch.paidLines >= 5, 20_000, "some lines done")
    const cancel = await spool(["cancel", "--home", home], { cwd: tmp.path, env })
    expect(cancel.code).toBe(0)
    const [stderr, code] = await Promise.all([new Response(child.stderr).text(), child.exited])
    expect(code).toBe(1)
    expect(stderr).toContain('run "batchy" was cancelled')
    const lines = await results(tmp.path, home)
    const done = lines.filter((l) => l.state === "completed")
    expect(done.length).toBe(fake.batch.paidLines)
    expect(done.length).toBeLessThan(40)
    expect(lines.filter((l) => l.state === "pending").length).toBe(40 - done.length)
    expect(fake.batch.batches[0]!.status).toBe("cancelled")
    const runs = JSON.parse(
      (await spool(["runs", "--json", "--home", home], { cwd: tmp.path, env })).stdout,
    ) as {
      state: string
    }[]
    expect(runs[0]!.state).toBe("cancelled")
  }, 60_000)

  test("spool status shows each live batch's progress as the provider reports it", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, batch: { validatingMs: 800, processingMs: 3000 } })
    writeFileSync(tmp.join("in.jsonl"), input(40))
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const home = tmp.join("home")
    const child = start(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    const seen = new Set<string>()
    const phases: string[] = []
    while (child.exitCode === null) {
      await Bun.sleep(50)
      const status = await spool(["status", "--json", "--home", home], { cwd: tmp.path, env })
      // before the run is created there is nothing to show
      if (status.code !== 0) continue
      const view = JSON.parse(status.stdout) as {
        batches: { phase: string; done: number | null; items: number }[]
      }
      const b = view.batches[0]
      if (b && !seen.has(b.phase)) {
        seen.add(b.phase)
        phases.push(b.phase)
      }
      if (b?.phase === "in_progress") {
        // the text view, read on its own: the batch may have moved on in between
        const text = await spool(["status", "--home", home], { cwd: tmp.path, env })
        const n = /#1 batch_\w+ {2}in progress (\d+)\/40\n/.exec(text.stdout)?.[1]
        if (n !== undefined && Number(n) > 0 && Number(n) < 40) seen.add("n of m")
      }
    }
    expect(await child.exited).toBe(0)
    const last = await statusOf(tmp.path, home)
    phases.push(last.batches[0]!.phase)
    expect(last.batches[0]).toMatchObject({ outcome: "completed", done: 40 })
    // the provider's phases in order, with a count part-way through
    expect([...new Set(phases.filter((p) => ["validating", "in_progress", "ended"].includes(p)))]).toEqual([
      "validating",
      "in_progress",
      "ended",
    ])
    expect(seen.has("n of m")).toBe(true)
  }, 60_000)

  test("spool cancel with no process running cancels the batches itself and salvages them", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, batch: { processingMs: 3000 } })
    writeFileSync(tmp.join("in.jsonl"), input(40))
    writeFileSync(tmp.join("job.toml"), job(fake.url).replace("batch_size = 40", "batch_size = 20"))
    const home = tmp.join("home")
    const child = start(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    await until(() => fake.batch.batches.length === 2, 20_000, "two batches created")
    child.kill("SIGKILL")
    await child.exited
    // the fake moves a batch on when it is looked at: look, as a person at the console would
    await until(
      () => fake.batch.batches.every((b) => b.status !== "") && fake.batch.paidLines >= 4,
      20_000,
      "some lines done",
    )
    const cancel = await spool(["cancel", "--home", home], { cwd: tmp.path, env })
    expect(cancel.code).toBe(0)
    expect(cancel.stderr).toContain("cancelling 2 live batch(es)")
    const lines = await results(tmp.path, home)
    const done = lines.filter((l) => l.state === "completed").length
    expect(done).toBe(fake.batch.paidLines)
    expect(lines.filter((l) => l.state === "pending").length).toBe(40 - done)
    expect(fake.batch.batches.map((b) => b.status)).toEqual(["cancelled", "cancelled"])
    expect(integrity(home)).toBe("ok")
  }, 60_000)

  test("spool pause stops new batches while the live one is still followed; spool resume goes on", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, batch: { processingMs: 600 } })
    writeFileSync(tmp.join("in.jsonl"), input(60))
    writeFileSync(
      tmp.join("job.toml"),
      job(fake.url).replace("batch_size = 40", "batch_size = 20").replace("[batch]", "[batch]\nmax_live = 1"),
    )
    const home = tmp.join("home")
    const child = start(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    await until(() => fake.batch.batches.length >= 1, 20_000, "a batch")
    const paused = await spool(["pause", "--home", home], { cwd: tmp.path, env })
    expect(paused.code).toBe(0)
    const created = fake.batch.batches.length
    // the live batch ends and is applied; nothing new is sent
    await until(() => fake.batch.paidLines >= created * 20, 20_000, "the live batches to finish")
    await Bun.sleep(800)
    expect(fake.batch.batches.length).toBe(created)
    expect(child.exitCode).toBeNull()
    const resumed = await spool(["resume", "--home", home], { cwd: tmp.path, env })
    expect(resumed.code).toBe(0)
    expect(await child.exited).toBe(0)
    await allDoneOnce(fake, tmp.path, home, 60)
  }, 60_000)

  test("export writes a self-describing bundle; prune keeps raw outputs until then, keep_raw = false keeps none", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    writeFileSync(tmp.join("in.jsonl"), input(50))
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const home = tmp.join("home")
    expect((await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })).code).toBe(0)
    const dir = join(home, "artifacts", "batchy")
    const early = await spool(["prune", "--home", home], { cwd: tmp.path, env })
    expect(early.stderr).toContain('pruned run "batchy": 2 file(s)')
    expect(early.stderr).toContain("kept 2 raw output file(s)")
    expect(readdirSync(dir).filter((f) => f.endsWith(".requests.jsonl"))).toEqual([])
    const out = tmp.join("bundle")
    const exported = await spool(["export", "batchy", "--dir", out, "--home", home], { cwd: tmp.path, env })
    expect(exported.code).toBe(0)
    const manifest = JSON.parse(readFileSync(join(out, "manifest.json"), "utf8")) as {
      format: string
      run: { name: string; state: string }
      batches: { provider_id: string; files: { requests: string | null; output: string | null } }[]
      files: { path: string; lines: number; sha256: string }[]
      missing: string[]
      job: unknown
    }
    expect(manifest.format).toBe("spool-export/1")
    expect(manifest.run).toMatchObject({ name: "batchy", state: "completed" })
    expect(manifest.batches.length).toBe(2)
    expect(manifest.batches.every((b) => b.files.requests === null && b.files.output !== null)).toBe(true)
    expect(manifest.missing.length).toBe(2)
    const results = manifest.files.find((f) => f.path === "results.jsonl")!
    expect(results.lines).toBe(50)
    expect(results.sha256).toBe(
      new Bun.CryptoHasher("sha256").update(readFileSync(join(out, "results.jsonl"))).digest("hex"),
    )
    expect(JSON.stringify(manifest)).not.toContain(KEY)
    // the bundle is the owner's only: files 0600, directories 0700
    for (const rel of ["", "requests", "outputs"]) expect(statSync(join(out, rel)).mode & 0o777).toBe(0o700)
    for (const f of [...manifest.files.map((f) => f.path), "manifest.json"])
      expect(statSync(join(out, f)).mode & 0o777).toBe(0o600)
    const outputs = manifest.files.filter((f) => f.path.startsWith("outputs/"))
    expect(outputs.reduce((a, f) => a + f.lines, 0)).toBe(50)
    // exported: now prune deletes the raw outputs too
    const after = await spool(["prune", "--home", home], { cwd: tmp.path, env })
    expect(after.stderr).toContain('pruned run "batchy": 2 file(s)')
    expect(readdirSync(dir)).toEqual([])

    await using tmp2 = await tmpdir()
    writeFileSync(tmp2.join("in.jsonl"), input(10))
    writeFileSync(tmp2.join("job.toml"), job(fake.url).replace("[batch]", "[batch]\nkeep_raw = false"))
    expect((await spool(["run", "job.toml", "--home", tmp2.join("h")], { cwd: tmp2.path, env })).code).toBe(0)
    expect(
      readdirSync(join(tmp2.join("h"), "artifacts", "batchy")).map((f) => f.replace(/^sp\w+\./, "")),
    ).toEqual(["requests.jsonl"])
  }, 60_000)
})

describe("batch mode through dist/spool (Anthropic Message Batches)", () => {
  test("runs a batch, and after a SIGKILL between create and commit adopts it by its custom_id prefix", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFakeAnthropic({ apiKey: KEY, batch: { processingMs: 150 } })
    writeFileSync(tmp.join("in.jsonl"), input(60))
    writeFileSync(tmp.join("job.toml"), job(fake.url, "", "anthropic", "claude-haiku-4-5"))
    const home = tmp.join("home")
    const killed = start(["run", "job.toml", "--home", home], {
      cwd: tmp.path,
      env: { ...env, SPOOL_CRASH_AT: "created" },
    })
    await killed.exited
    expect(killed.signalCode).toBe("SIGKILL")
    expect(fake.batch.batches.length).toBe(1)
    const last = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(last.code).toBe(0)
    expect(last.stderr).toContain("batch adopted")
    const lines = await results(tmp.path, home)
    expect(lines.length).toBe(60)
    for (const [i, line] of lines.entries())
      expect(line).toMatchObject({ state: "completed", output: `echo: ${prompt(i + 1)}` })
    for (let i = 1; i <= 60; i++) expect(fake.paid.get(prompt(i))).toBe(1)
    expect(fake.batch.batches.map((b) => b.lines.length)).toEqual([40, 20])
    expect(fake.invalid).toEqual([])
    expect(integrity(home)).toBe("ok")
  }, 60_000)
})

describe("batch mode through dist/spool (Anthropic queue limit)", () => {
  test("a queue-full 429 sends the batch's items back unsent; the limit is learned and later batches fit under it", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFakeAnthropic({ apiKey: KEY, batch: { processingMs: 300, queueLimit: 50 } })
    writeFileSync(tmp.join("in.jsonl"), input(100))
    writeFileSync(
      tmp.join("job.toml"),
      job(fake.url, "", "anthropic", "claude-haiku-4-5").replace("batch_size = 40", "batch_size = 30"),
    )
    const home = tmp.join("home")
    const run = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(run.code).toBe(0)
    const lines = await results(tmp.path, home)
    expect(lines.filter((l) => l.state === "completed").length).toBe(100)
    for (let i = 1; i <= 100; i++) expect(fake.paid.get(prompt(i))).toBe(1)
    const refused = fake.batch.creates.filter((c) => c.status === 429)
    expect(refused.length).toBeGreaterThanOrEqual(1)
    const status = await statusOf(tmp.path, home)
    // the message gives no number: the limit learned is what was enqueued when the queue was full
    expect(status.queue.requests).toBe(30)
    expect(status.counts.failed).toBe(0)
    // once learned, no batch pushed the queue past it
    expect(fake.batch.batches.every((b) => b.lines.length <= 30)).toBe(true)
    expect(fake.invalid).toEqual([])
  }, 60_000)
})

describe("batch mode refusals", () => {
  test("a provider without a Batch API is refused before anything runs", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("in.jsonl"), input(3))
    writeFileSync(tmp.join("job.toml"), job("http://127.0.0.1:9/v1", "", "mock"))
    const run = await spool(["run", "job.toml", "--home", tmp.join("h")], { cwd: tmp.path, env })
    expect(run.code).toBe(2)
    expect(run.stderr).toContain('provider.mode: provider "mock" has no batch mode')
    expect(existsSync(tmp.join("h", "spool.db"))).toBe(false)
  })
})

describe("pause, resume and cancel of a realtime run", () => {
  const realtime = (url: string) =>
    job(url).replace('mode = "batch"', 'mode = "realtime"').replace("[limits]", "[limits]\nconcurrency = 4")

  test("pause lets the calls in flight end and sends nothing more; resume finishes the run in the same process", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, latencyMs: 40 })
    writeFileSync(tmp.join("in.jsonl"), input(200))
    writeFileSync(tmp.join("job.toml"), realtime(fake.url))
    const home = tmp.join("home")
    const child = start(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    await until(() => fake.paid.size >= 20, 20_000, "20 completions")
    expect((await spool(["pause", "--home", home], { cwd: tmp.path, env })).code).toBe(0)
    // within a second the process stops sending; then nothing more goes out
    await Bun.sleep(1200)
    const sent = fake.requests
    await Bun.sleep(800)
    expect(fake.requests).toBe(sent)
    expect(sent).toBeLessThan(200)
    expect(child.exitCode).toBeNull()
    const status = await statusOf(tmp.path, home)
    expect(status.state).toBe("paused")
    expect(status.counts.running).toBe(0)
    expect(status.counts.completed).toBe(fake.paid.size)
    const resumed = await spool(["resume", "--home", home], { cwd: tmp.path, env })
    expect(resumed.stderr).toContain('run "batchy" resumed')
    expect(await child.exited).toBe(0)
    expect(fake.paid.size).toBe(200)
    expect([...fake.paid.values()].every((n) => n === 1)).toBe(true)
  }, 60_000)

  test("cancel stops a realtime run: the process ends with the run cancelled, finished items kept, the rest pending", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, latencyMs: 40 })
    writeFileSync(tmp.join("in.jsonl"), input(200))
    writeFileSync(tmp.join("job.toml"), realtime(fake.url))
    const home = tmp.join("home")
    const child = start(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    await until(() => fake.paid.size >= 20, 20_000, "20 completions")
    const cancel = await spool(["cancel", "--home", home], { cwd: tmp.path, env })
    expect(cancel.code).toBe(0)
    expect(cancel.stderr).toContain('run "batchy" cancelled')
    const [stderr, code] = await Promise.all([new Response(child.stderr).text(), child.exited])
    expect(code).toBe(1)
    expect(stderr).toContain('run "batchy" was cancelled')
    const lines = await results(tmp.path, home)
    const done = lines.filter((l) => l.state === "completed").length
    expect(done).toBe(fake.paid.size)
    expect(lines.filter((l) => l.state === "pending").length).toBe(200 - done)
    // a cancelled run is finished: it cannot be paused, and prune may now clean it
    const pause = await spool(["pause", "--home", home], { cwd: tmp.path, env })
    expect(pause.code).toBe(2)
    expect(pause.stderr).toContain('run "batchy" is cancelled: there is nothing to pause')
  }, 60_000)
})
