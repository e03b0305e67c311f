/**
 * Gemini batch mode through dist/spool, on the fake Gemini Batch API (test/lib/fake-gemini.ts): a whole run of
 * inline batches at the batch price, and a SIGKILL at every step of a batch's life, after which the next run creates
 * no batch twice (a batch created just before the kill is adopted by its display name), pays no line twice and
 * finishes every item once.
 */
import { describe, expect, test } from "bun:test"
import { Database } from "bun:sqlite"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { promptTokens, startFakeGemini, type Fake } from "../lib/fake-gemini.ts"
import { spool, start } from "../lib/spool.ts"
import { tmpdir } from "../lib/tmp.ts"

const KEY = "AIzaSy-gemini-batch-0123456789"
const env = { GEMINI_API_KEY: KEY }

function job(url: string): string {
  return `name = "gembatch"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "gemini"
model = "gemini-2.5-flash"
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
`
}

const prompt = (i: number) => `Item ${i}: t${(i * 7) % 13}`

function input(n: number): string {
  return (
    Array.from({ length: n }, (_, i) =>
      JSON.stringify({ id: `id-${i + 1}`, n: i + 1, text: `t${((i + 1) * 7) % 13}` }),
    ).join("\n") + "\n"
  )
}

type Line = { id: string; state: string; output: string | null; cost_usd: number | null }

async function results(cwd: string, home: string): Promise<Line[]> {
  const out = await spool(["results", "--home", home], { cwd, env })
  expect(out.code).toBe(0)
  return out.stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as Line)
}

/** Every item completed with its answer, and each line paid exactly once at the provider. */
async function allDoneOnce(fake: Fake, cwd: string, home: string, n: number) {
  const lines = await results(cwd, home)
  expect(lines.length).toBe(n)
  for (const [i, line] of lines.entries())
    expect([line.state, line.output]).toEqual(["completed", `echo: ${prompt(i + 1)}`])
  for (let i = 1; i <= n; i++) expect([i, fake.paid.get(prompt(i))]).toEqual([i, 1])
  expect(fake.invalid).toEqual([])
  const db = new Database(join(home, "spool.db"), { readonly: true })
  expect(db.query<{ integrity_check: string }, []>("PRAGMA integrity_check").get()?.integrity_check).toBe(
    "ok",
  )
  db.close()
}

describe("gemini batch mode through dist/spool", () => {
  test("packs, creates inline batches named by their tags, polls, downloads and applies: every item once, at the batch price", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFakeGemini({ apiKey: KEY, processingMs: 100 })
    const N = 90
    writeFileSync(tmp.join("in.jsonl"), input(N))
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const home = tmp.join("home")
    const run = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(run.stderr).toContain(`run "gembatch": ${N} completed, 0 failed of ${N}`)
    expect(run.code).toBe(0)
    await allDoneOnce(fake, tmp.path, home, N)
    expect(fake.batches.map((b) => [b.via, b.lines.length])).toEqual([
      ["inline", 40],
      ["inline", 40],
      ["inline", 10],
    ])
    // each batch's display name is its tag, the prefix of its keys
    for (const b of fake.batches)
      expect(b.lines.every((l) => l.key.startsWith(`${b.displayName}_`))).toBe(true)
    // gemini-2.5-flash at half price ($0.30 in, $2.50 out per million tokens, less 50%), on the usage the fake reports
    const [first] = await results(tmp.path, home)
    const body = fake.batches[0]!.lines[0]!.request
    const tokens = (text: string) => Math.max(1, Math.ceil(text.length / 4))
    const cost = ((promptTokens(body) * 0.3 + tokens(`echo: ${prompt(1)}`) * 2.5) / 1e6) * 0.5
    expect(first!.cost_usd).toBeCloseTo(cost, 12)
  }, 60_000)

  for (const point of ["pack", "intent", "created", "poll", "download", "apply"] as const) {
    test(`SIGKILL at "${point}": the next run creates no batch twice, pays no line twice, and finishes every item once`, async () => {
      await using tmp = await tmpdir()
      await using fake = await startFakeGemini({ apiKey: KEY, processingMs: 100 })
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
      const before = fake.batches.length
      const last = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
      expect(last.stderr).toContain(`run "gembatch": ${N} completed, 0 failed of ${N}`)
      expect(last.code).toBe(0)
      await allDoneOnce(fake, tmp.path, home, N)
      if (point === "pack" || point === "intent") expect(before).toBe(0)
      else expect(before).toBeGreaterThanOrEqual(1)
      if (point === "created") {
        expect(last.stderr).toContain("batch adopted")
        expect(fake.batches.length).toBe(3)
      }
      if (point === "intent") expect(last.stderr).not.toContain("batch adopted")
      // no display name twice: no batch was created twice
      const names = fake.batches.map((b) => b.displayName)
      expect(new Set(names).size).toBe(names.length)
    }, 60_000)
  }
})
