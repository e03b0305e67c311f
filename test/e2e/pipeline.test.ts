/**
 * Pipelines through dist/spool and the fake (docs/PIPELINES.md): a batch step, a conditional realtime step after it
 * and a review gate, over 1,000 rows with SIGKILLs while each step works; a changed prompt and `--rerun-from`;
 * review decisions that let rows on to the step after the gate; a failed step that blocks only its row's dependants.
 */
import { describe, expect, test } from "bun:test"
import { Database } from "bun:sqlite"
import { writeFileSync } from "node:fs"
import { startFake, type Fake } from "../lib/fake-openai.ts"
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
    expect(repaid).toBeLessThanOrEqual(2 * kills.summary)
    expect([...fake.paid.keys()].filter((k) => k.startsWith("Summary")).length).toBe(334)
    expect(fake.invalid).toEqual([])

    // a run again has nothing left to call: it says the same and pays nothing
    const paid = fake.requests
    const again = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(again.code).toBe(0)
    expect(fake.requests).toBe(paid)
  }, 240_000)
})
