/**
 * Pipelines through dist/spool and the fake (docs/PIPELINES.md): a batch step, a conditional realtime step after it
 * and a review gate, over 1,000 rows with SIGKILLs while each step works; a changed prompt and `--rerun-from`;
 * review decisions that let rows on to the step after the gate; a failed step that blocks only its row's dependants.
 */
import { describe, expect, test } from "bun:test"
import { Database } from "bun:sqlite"
import { cpSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { startFake, type Fake } from "../lib/fake-openai.ts"
import { pgSchema, SKIP_PG } from "../lib/pg.ts"
import { prng, spool, start, until } from "../lib/spool.ts"
import { tmpdir, type Tmp } from "../lib/tmp.ts"

const KEY = "sk-test-pipeline-0123456789"
const env = { OPENAI_API_KEY: KEY }
const LABELS = ["bug", "billing", "question"]

/** The fake's answers: a classify prompt gets {label, confidence} from the row's number; any other, a summary. */
function reply(input: string): string {
  const n = Number(/t(\d+)/.exec(input)?.[1] ?? 0)
  if (input.startsWith("Classify")) return JSON.stringify({ label: LABELS[n % 3], confidence: (n % 10) / 10 })
  return `${input.split(":")[0]} of t${n}`
}

function rows(tmp: Tmp, n: number): void {
  const lines = Array.from({ length: n }, (_, i) => JSON.stringify({ id: `r${i}`, text: `t${i}` }))
  writeFileSync(tmp.join("in.jsonl"), `${lines.join("\n")}\n`)
}

const SCHEMA = `output.schema = { type = "object", properties = { label = { type = "string" }, confidence = { type = "number" } }, required = ["label", "confidence"], additionalProperties = false }`

/** classify (batch) → summary (realtime, bugs only) → check (review, the unsure ones), and `extra` after. */
function job(url: string, o: { summary?: string; extra?: string; mode?: string } = {}): string {
  return `name = "triage"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "openai"
model = "gpt-4.1-mini"
base_url = "${url}"
mode = "${o.mode ?? "batch"}"
[request]
prompt = "Classify: {{text}}"
max_tokens = 50
[limits]
concurrency = 2
max_attempts = 20
timeout_s = 2
grace_s = 1
retry_base_s = 0.01
retry_cap_s = 0.1
[batch]
poll_s = 0.05
poll_max_s = 0.2
batch_size = 50

[[step]]
name = "classify"
${SCHEMA}

[[step]]
name = "summary"
needs = ["classify"]
when = "classify.label == 'bug'"
provider = { mode = "realtime" }
request = { prompt = "${o.summary ?? "Summary"}: {{row.text}} is a {{classify.label}}" }

[[step]]
name = "check"
kind = "review"
needs = ["summary"]
when = "classify.confidence < 0.5"
${o.extra ?? ""}`
}

interface StepView {
  name: string
  counts: Record<string, number>
  not_reached: number
}

async function steps(tmp: Tmp, home: string): Promise<Record<string, Record<string, number>>> {
  const out = await spool(["status", "triage", "--json", "--home", home], { cwd: tmp.path })
  expect(out.code).toBe(0)
  const view = JSON.parse(out.stdout) as { steps: StepView[] }
  return Object.fromEntries(
    view.steps.map((s) => [
      s.name,
      {
        ...Object.fromEntries(Object.entries(s.counts).filter(([, n]) => n > 0)),
        ...(s.not_reached ? { not_reached: s.not_reached } : {}),
      },
    ]),
  )
}

/** Rows whose number n is a bug (n % 3 == 0) and unsure (n % 10 < 5), of 0..n-1. */
const unsure = (n: number) => Array.from({ length: n }, (_, i) => i).filter((i) => i % 3 === 0 && i % 10 < 5)
const bugs = (n: number) => Array.from({ length: n }, (_, i) => i).filter((i) => i % 3 === 0)

type Attempt = { run: string; key: string; n: number; outcome: string | null; error_class: string | null }

function attempts(home: string): Map<string, Attempt[]> {
  const db = new Database(`${home}/spool.db`, { readonly: true })
  const all = db
    .query<Attempt, []>(
      `SELECT r.name AS run, i.key, a.n, a.outcome, a.error_class FROM attempts a
       JOIN items i ON i.id = a.item_id JOIN runs r ON r.id = i.run_id ORDER BY i.id, a.n`,
    )
    .all()
  db.close()
  return Map.groupBy(all, (a) => `${a.run}/${a.key}`)
}

const summaries = (fake: Fake) => [...fake.seen.keys()].filter((k) => k.startsWith("Summary")).length

describe("pipelines through dist/spool", () => {
  test("1,000 rows through batch classify → realtime summary → review, SIGKILLed while each step works: every row ends in its expected state, no answer paid twice", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, latencyMs: 40, reply, batch: { processingMs: 1500 } })
    rows(tmp, 1000)
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const home = tmp.join("home")
    const random = prng(20261205)
    const kills = { classify: 0, summary: 0 }
    for (let round = 0; round < 10; round++) {
      const child = start(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
      const asked = summaries(fake)
      // the first rounds are cut while classify's batches are made or wait at the provider; the others while
      // summary's calls go out (the rows of the batches that ended go on while the others wait)
      const step = round < 4 ? "classify" : "summary"
      if (step === "classify") await Bun.sleep(150 + Math.floor(random() * 400))
      else {
        await until(() => child.exitCode !== null || summaries(fake) > asked, 30_000, "summary to work")
        await Bun.sleep(Math.floor(random() * 150))
      }
      if (child.exitCode !== null) break
      child.kill("SIGKILL")
      await child.exited
      kills[step]++
    }
    expect(kills.classify).toBeGreaterThanOrEqual(3)
    expect(kills.summary).toBeGreaterThanOrEqual(2)
    const last = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(last.code).toBe(0)
    const waiting = unsure(1000).length
    expect(waiting).toBe(167)
    expect(last.stderr).toContain(
      `run "triage", 1000 row(s): classify: 1000 completed; summary: 334 completed, 666 skipped; check: 167 completed, 666 skipped, 167 wait for review`,
    )
    expect(last.stderr).toContain(
      `167 row(s) wait for review: 167 at check (spool review triage --step check); approve, edit or reject them, then \`spool run job.toml --home ${home}\` takes them on`,
    )
    expect(await steps(tmp, home)).toEqual({
      classify: { completed: 1000 },
      summary: { completed: 334, skipped: 666 },
      check: { completed: 167, skipped: 666, needs_review: 167 },
    })

    // the batch step: every line paid exactly once, kills or not (intents, adopted batches)
    for (let n = 0; n < 1000; n++) expect(fake.paid.get(`Classify: t${n}`)).toBe(1)
    // the realtime step: nothing asked again once answered; a second payment only for a call cut off by a kill
    const tried = attempts(home)
    let repaid = 0
    for (const n of bugs(1000)) {
      const mine = tried.get(`triage.summary/r${n}`) ?? []
      expect(mine.at(-1)?.outcome).toBe("ok")
      expect(mine.filter((a) => a.outcome === "ok").length).toBe(1)
      const cut = mine.filter(
        (a) => a.outcome === "lost" || a.outcome === "interrupted" || a.error_class === "timeout",
      )
      const paid = fake.paid.get(`Summary: t${n} is a bug`) ?? 0
      expect(paid - 1).toBeLessThanOrEqual(cut.length)
      repaid += paid - 1
    }
    // a kill cuts at most `concurrency` (2) calls in flight, whichever step's round it falls in: summary's calls go
    // out while classify's later batches still wait, so a kill in a classify round can cut them too
    expect(repaid).toBeLessThanOrEqual(2 * (kills.classify + kills.summary))
    expect([...fake.paid.keys()].filter((k) => k.startsWith("Summary")).length).toBe(334)
    expect(fake.invalid).toEqual([])

    // a run again has nothing left to call: it says the same and pays nothing
    const paid = fake.requests
    const again = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(again.code).toBe(0)
    expect(fake.requests).toBe(paid)
  }, 240_000)

  test("a changed prompt in step 2 is refused, naming it and what follows; --rerun-from runs them again, step 1 untouched, unchanged requests free", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, reply })
    rows(tmp, 30)
    const home = tmp.join("home")
    const run = (...args: string[]) =>
      spool(["run", "job.toml", "--home", home, ...args], { cwd: tmp.path, env })
    writeFileSync(tmp.join("job.toml"), job(fake.url, { mode: "realtime" }))
    expect((await run()).code).toBe(0)
    const first = { classify: { completed: 30 }, summary: { completed: 10, skipped: 20 } }
    expect(await steps(tmp, home)).toEqual({
      ...first,
      check: { completed: 5, skipped: 20, needs_review: 5 },
    })
    expect(fake.requests).toBe(40)

    writeFileSync(tmp.join("job.toml"), job(fake.url, { mode: "realtime", summary: "Brief" }))
    const refused = await run()
    expect(refused.code).toBe(2)
    expect(refused.stderr).toContain(
      'step "summary" of run "triage" changed since its answers were made; going on would mix old and new answers',
    )
    expect(refused.stderr).toContain("step.summary: request.prompt changed")
    expect(refused.stderr).toContain("step.check reaches it, so it changes too")
    expect(refused.stderr).toContain("add --rerun-from summary (earlier steps are kept")
    expect(fake.requests).toBe(40)

    const rerun = await run("--rerun-from", "summary")
    expect(rerun.code).toBe(0)
    // classify is kept: not one request of it again; summary's 10 new requests are paid, once each
    expect(fake.requests).toBe(50)
    for (const n of bugs(30)) {
      expect(fake.paid.get(`Classify: t${n}`)).toBe(1)
      expect(fake.paid.get(`Brief: t${n} is a bug`)).toBe(1)
    }
    expect(await steps(tmp, home)).toEqual({
      ...first,
      check: { completed: 5, skipped: 20, needs_review: 5 },
    })
    const results = await spool(["results", "triage.summary", "--home", home], { cwd: tmp.path })
    const outputs = results.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { id: string; output: string | null })
    expect(outputs.filter((o) => o.output !== null).map((o) => o.output)).toEqual(
      bugs(30).map((n) => `Brief of t${n}`),
    )
    // the old answers are kept, in the step's earlier run
    const list = await spool(["runs", "--json", "--home", home], { cwd: tmp.path })
    const names = (JSON.parse(list.stdout) as { name: string }[]).map((r) => r.name)
    expect(names.filter((n) => n === "triage.summary").length).toBe(2)
    expect(names.filter((n) => n === "triage.classify").length).toBe(1)

    // resuming never runs a completed step again
    expect((await run()).code).toBe(0)
    expect(fake.requests).toBe(50)
    // back to the first prompt, run again from summary: its answers come from the cache, nothing is paid
    writeFileSync(tmp.join("job.toml"), job(fake.url, { mode: "realtime" }))
    const back = await run("--rerun-from", "summary")
    expect(back.code).toBe(0)
    expect(fake.requests).toBe(50)
    expect(await steps(tmp, home)).toEqual({
      ...first,
      check: { completed: 5, skipped: 20, needs_review: 5 },
    })

    // --new-run: a new pipeline run with new step runs (never the old pipeline's), every answer from the cache
    const fresh = await run("--new-run")
    expect(fresh.code).toBe(0)
    expect(fake.requests).toBe(50)
    expect(await steps(tmp, home)).toEqual({
      ...first,
      check: { completed: 5, skipped: 20, needs_review: 5 },
    })
    const after = await spool(["runs", "--json", "--home", home], { cwd: tmp.path })
    const count = (name: string) =>
      (JSON.parse(after.stdout) as { name: string }[]).filter((r) => r.name === name).length
    expect(["triage", "triage.classify", "triage.summary", "triage.check"].map(count)).toEqual([2, 2, 4, 4])

    // a pipeline under the name of a run made by a job without steps is refused
    const oneStep = job(fake.url, { mode: "realtime" }).split("[[step]]")[0]!
    writeFileSync(tmp.join("one.toml"), oneStep.replace('name = "triage"', 'name = "one"'))
    expect((await spool(["run", "one.toml", "--home", home], { cwd: tmp.path, env })).code).toBe(0)
    const piped = job(fake.url, { mode: "realtime" }).replace('name = "triage"', 'name = "one"')
    writeFileSync(tmp.join("job2.toml"), piped)
    const mixed = await spool(["run", "job2.toml", "--home", home], { cwd: tmp.path, env })
    expect(mixed.code).toBe(2)
    expect(mixed.stderr).toContain(
      'run "one" was started with a job without steps; resuming it would mix two kinds of rows',
    )
  }, 60_000)

  test("review decisions let rows on to the step after the gate; rejected rows end rejected, and the step after skips them", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, reply })
    rows(tmp, 30)
    const home = tmp.join("home")
    const cli = (...args: string[]) => spool([...args, "--home", home], { cwd: tmp.path, env })
    const extra = `
[[step]]
name = "answer"
needs = ["check"]
request = { prompt = "Answer: t{{row.text}} after {{check}}" }
`
    writeFileSync(tmp.join("job.toml"), job(fake.url, { mode: "realtime", extra }))
    const first = await cli("run", "job.toml")
    expect(first.code).toBe(0)
    expect(first.stderr).toContain(
      'run "triage", 30 row(s): classify: 30 completed; summary: 10 completed, 20 skipped; check: 5 completed, 20 skipped, 5 wait for review; answer: 5 completed, 20 skipped, 5 not reached yet',
    )
    const listed = await cli("review", "--json")
    expect(JSON.parse(listed.stdout)).toEqual({
      run: "triage.check",
      waiting: 5,
      items: unsure(30).map((n) => ({
        id: `r${n}`,
        reason: "step check: classify.confidence < 0.5",
        output: `Summary of t${n}`,
        attempts: 0,
      })),
    })
    expect((await cli("review", "approve", "r0", "--run", "triage", "--step", "check")).code).toBe(0)
    expect((await cli("review", "edit", "r3", "--output", "a crash at login", "--step", "check")).code).toBe(
      0,
    )
    const rejected = await cli("review", "reject", "r12", "--reason", "not a bug")
    expect(rejected.code).toBe(0)
    expect(rejected.stderr).toContain('run "triage.check": 1 rejected')
    writeFileSync(
      tmp.join("decisions.jsonl"),
      '{"id": "r21", "decision": "approve"}\n{"id": "r24", "decision": "reject", "reason": "spam"}\n',
    )
    const applied = await cli("review", "apply", "decisions.jsonl", "--step", "check")
    expect(applied.code).toBe(0)
    expect(applied.stderr).toContain("the rows let through go on to the next steps with: spool run job.toml")

    const asked = fake.requests
    const second = await cli("run", "job.toml")
    expect(second.code).toBe(0)
    expect(second.stderr).toContain(
      'run "triage", 30 row(s): classify: 30 completed; summary: 10 completed, 20 skipped; check: 8 completed, 20 skipped, 2 rejected; answer: 8 completed, 22 skipped',
    )
    expect(second.stderr).not.toContain("wait for review")
    expect(fake.requests).toBe(asked + 3)
    expect(fake.paid.get("Answer: tt0 after Summary of t0")).toBe(1)
    expect(fake.paid.get("Answer: tt3 after a crash at login")).toBe(1)
    expect(fake.paid.get("Answer: tt21 after Summary of t21")).toBe(1)
    const answers = await cli("results", "triage.answer")
    const byId = new Map(
      answers.stdout
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as { id: string; state: string; error: { message: string } | null })
        .map((l) => [l.id, [l.state, l.error?.message ?? null]]),
    )
    expect(byId.get("r12")).toEqual(["skipped", "check rejected"])
    expect(byId.get("r24")).toEqual(["skipped", "check rejected"])
    expect(byId.get("r1")).toEqual(["skipped", "check was skipped"])
    expect(byId.get("r3")?.[0]).toBe("completed")
    const status = await cli("status", "triage", "--json")
    expect((JSON.parse(status.stdout) as { run: { state: string } }).run.state).toBe("completed")
  }, 60_000)

  test("a step that fails for a row blocks only that row's steps after it; the run ends with failures (exit 3)", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, reply })
    fake.script.set("Classify: t6", ["500"])
    rows(tmp, 12)
    const home = tmp.join("home")
    writeFileSync(
      tmp.join("job.toml"),
      job(fake.url, { mode: "realtime" }).replace("max_attempts = 20", "max_attempts = 1"),
    )
    const out = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(out.code).toBe(3)
    expect(await steps(tmp, home)).toEqual({
      classify: { completed: 11, failed: 1 },
      summary: { completed: 3, skipped: 9 },
      check: { completed: 1, skipped: 9, needs_review: 2 },
    })
    const summary = await spool(["results", "triage.summary", "--home", home], { cwd: tmp.path })
    const six = summary.stdout
      .trim()
      .split("\n")
      .map(
        (l) =>
          JSON.parse(l) as { id: string; state: string; error: { class: string; message: string } | null },
      )
      .find((l) => l.id === "r6")
    expect(six).toMatchObject({ state: "skipped", error: { class: "blocked", message: "classify failed" } })
    expect(fake.paid.get("Summary: t6 is a bug")).toBeUndefined()
    const status = await spool(["status", "triage", "--json", "--home", home], { cwd: tmp.path })
    expect((JSON.parse(status.stdout) as { run: { state: string } }).run.state).toBe("paused")

    // a step's failed row is not retried alone (its later steps decided on it): the step is run again instead
    const retry = await spool(["retry", "triage.classify", "--home", home], { cwd: tmp.path })
    expect(retry.code).toBe(2)
    expect(retry.stderr).toContain(
      `run "triage.classify" is a pipeline's step: its items are not retried one by one`,
    )
    expect(retry.stderr).toContain(`--rerun-from classify`)
    const asked = fake.requests
    const again = await spool(["run", "job.toml", "--home", home, "--rerun-from", "classify"], {
      cwd: tmp.path,
      env,
    })
    expect(again.code).toBe(0)
    // the answers paid for come from the cache: only the row that failed is asked again, and its summary
    expect(fake.requests).toBe(asked + 2)
    expect(fake.paid.get("Classify: t6")).toBe(1)
    expect(fake.paid.get("Summary: t6 is a bug")).toBe(1)
    expect(await steps(tmp, home)).toEqual({
      classify: { completed: 12 },
      summary: { completed: 4, skipped: 8 },
      check: { completed: 2, skipped: 8, needs_review: 2 },
    })
  }, 60_000)
})

describe("stopping a pipeline", () => {
  test("spool cancel of a pipeline run stops the process running it; the next run goes on, paying nothing twice", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, reply, batch: { processingMs: 1500 } })
    rows(tmp, 60)
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const home = tmp.join("home")
    const child = start(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    await until(() => fake.batch.batches.length > 0, 20_000, "classify's first batch")
    const cancel = await spool(["cancel", "triage", "--home", home], { cwd: tmp.path, env })
    expect(cancel.code).toBe(0)
    const [code, stderr] = await Promise.all([child.exited, new Response(child.stderr).text()])
    expect(code).toBe(1)
    expect(stderr).toContain('run "triage" was cancelled')
    const status = await spool(["status", "triage", "--json", "--home", home], { cwd: tmp.path })
    expect((JSON.parse(status.stdout) as { run: { state: string } }).run.state).toBe("cancelled")
    const again = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(again.code).toBe(0)
    expect(await steps(tmp, home)).toEqual({
      classify: { completed: 60 },
      summary: { completed: 20, skipped: 40 },
      check: { completed: 10, skipped: 40, needs_review: 10 },
    })
    // every batch is classify's (the cancel packed none of the pipeline run's own rows), each of its lines once
    const db = new Database(`${home}/spool.db`, { readonly: true })
    const owners = db
      .query<{ name: string }, []>("SELECT DISTINCT r.name FROM batches b JOIN runs r ON r.id = b.run_id")
      .all()
    db.close()
    expect(owners.map((o) => o.name)).toEqual(["triage.classify"])
    expect(fake.batch.batches.flatMap((b) => b.custom_ids).length).toBe(60)
    for (let n = 0; n < 60; n++) expect(fake.paid.get(`Classify: t${n}`)).toBe(1)
  }, 60_000)
})

describe("the pipeline example", () => {
  test("examples/pipeline runs offline: counts per step in the closing lines and in status; estimate, watch and --canary say what they do with a pipeline", async () => {
    await using tmp = await tmpdir()
    cpSync(join(import.meta.dir, "../../examples/pipeline"), tmp.path, { recursive: true })
    const run = await spool(["run", "job.toml"], { cwd: tmp.path })
    expect(run.code).toBe(0)
    expect(run.stderr).toContain(
      'run "pipeline-demo", 6 row(s): classify: 6 completed; summary: 6 completed; check: 3 completed, 3 wait for review\n' +
        "3 row(s) wait for review: 3 at check (spool review pipeline-demo --step check); approve, edit or reject them, then `spool run job.toml` takes them on\n",
    )
    const status = await spool(["status"], { cwd: tmp.path })
    expect(status.stdout).toBe(
      [
        "run pipeline-demo (#1) · pipeline of 3 step(s) · paused (3 row(s) wait for review)",
        "rows      6",
        "spend     unknown (a step's model has no price)",
        "steps",
        "  classify (model)                 completed 6",
        "  summary (model, after classify)  completed 6",
        "  check (review, after summary)    completed 3 · needs review 3",
        "resume    spool run job.toml",
        "each step whole: spool status pipeline-demo.STEP",
        "",
      ].join("\n"),
    )
    const review = await spool(["review", "--json"], { cwd: tmp.path })
    expect((JSON.parse(review.stdout) as { items: { id: string }[] }).items.map((i) => i.id)).toEqual([
      "T-2001",
      "T-2003",
      "T-2005",
    ])
    const estimate = await spool(["estimate", "job.toml"], { cwd: tmp.path })
    expect(estimate.code).toBe(0)
    expect(estimate.stderr).toContain(
      "a pipeline: this is its first step (classify) alone; the 2 after it depend on its answers",
    )
    const watch = await spool(["watch", "job.toml"], { cwd: tmp.path })
    expect(watch.code).toBe(2)
    expect(watch.stderr).toContain("`spool watch` does not run pipelines yet")
    const canary = await spool(["run", "job.toml", "--canary", "2"], { cwd: tmp.path })
    expect(canary.code).toBe(2)
    expect(canary.stderr).toContain("--canary does not apply to pipelines yet")
  }, 30_000)
})

describe.skipIf(SKIP_PG)("a pipeline on PostgreSQL", () => {
  test("three workers share one pipeline: every row's every step is made once and answered once", async () => {
    await using tmp = await tmpdir()
    await using pg = await pgSchema()
    await using fake = await startFake({ apiKey: KEY, latencyMs: 20, reply })
    rows(tmp, 300)
    writeFileSync(tmp.join("job.toml"), job(fake.url, { mode: "realtime" }))
    const workers = [0, 1, 2].map((w) =>
      start(["run", "job.toml", "--store", pg.url, "--home", tmp.join(`h${w}`)], { cwd: tmp.path, env }),
    )
    const codes = await Promise.all(workers.map((w) => w.exited))
    expect(codes).toEqual([0, 0, 0])
    const status = await spool(["status", "triage", "--json", "--store", pg.url], { cwd: tmp.path })
    const view = JSON.parse(status.stdout) as { rows: number; steps: StepView[] }
    expect(view.rows).toBe(300)
    expect(
      Object.fromEntries(
        view.steps.map((s) => [
          s.name,
          Object.fromEntries(Object.entries(s.counts).filter(([, n]) => n > 0)),
        ]),
      ),
    ).toEqual({
      classify: { completed: 300 },
      summary: { completed: 100, skipped: 200 },
      check: { completed: 50, skipped: 200, needs_review: 50 },
    })
    expect(fake.paid.size).toBe(400)
    expect([...fake.paid.values()].every((n) => n === 1)).toBe(true)
  }, 60_000)
})
