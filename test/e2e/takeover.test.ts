/**
 * A worker that takes over another's batches with none of its files: the other worker ran on another host (here:
 * its artifacts folder is gone). An intent is created from a request file written again from the ledger, byte for
 * byte; a batch killed while applying is downloaded again here, and every item is paid once.
 */
import { describe, expect, test } from "bun:test"
import { readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { startFake } from "../lib/fake-openai.ts"
import { spool, start } from "../lib/spool.ts"
import { tmpdir } from "../lib/tmp.ts"

const KEY = "sk-test-takeover-0123456789"
const env = { OPENAI_API_KEY: KEY }
const N = 60

const job = (url: string) => `name = "takeover"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "openai"
model = "gpt-4.1-mini"
mode = "batch"
base_url = "${url}"
[request]
prompt = "Row {{n}}: {{text}} ✓"
max_tokens = 40
[batch]
poll_s = 0.05
poll_max_s = 0.2
batch_size = 25
`

const input = (n: number) =>
  Array.from({ length: n }, (_, i) =>
    JSON.stringify({ id: `r${i + 1}`, n: i + 1, text: `x${"é".repeat(i % 5)}` }),
  )
    .join("\n")
    .concat("\n")

const prompt = (i: number) => `Row ${i}: x${"é".repeat((i - 1) % 5)} ✓`

describe("taking over batches with none of the other worker's files", () => {
  test("an intent whose request file is elsewhere is created from the ledger, byte for byte, and nothing is paid twice", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, batch: { processingMs: 50 } })
    writeFileSync(tmp.join("in.jsonl"), input(N))
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const home = tmp.join("home")
    const killed = start(["run", "job.toml", "--home", home], {
      cwd: tmp.path,
      env: { ...env, SPOOL_CRASH_AT: "intent" },
    })
    await killed.exited
    expect(killed.signalCode).toBe("SIGKILL")
    expect(fake.batch.batches.length).toBe(0)
    const dir = join(home, "artifacts", "takeover")
    const [file, ...more] = readdirSync(dir).filter((f) => f.endsWith(".requests.jsonl"))
    expect(more).toEqual([])
    const original = readFileSync(join(dir, file!), "utf8")
    // the worker that wrote it was on another host: none of its files are here
    rmSync(dir, { recursive: true })
    const run = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(run.stderr).toContain(`run "takeover": ${N} completed, 0 failed of ${N}`)
    expect(run.code).toBe(0)
    expect(run.stderr).toContain("batch request file written again from the ledger")
    // the intent's batch was created once, from a file the same to the byte
    const tag = file!.replace(".requests.jsonl", "")
    const created = fake.batch.batches.filter((b) => b.metadata?.spool_tag === tag)
    expect(created.length).toBe(1)
    expect(created[0]!.lines.length).toBe(25)
    expect(readFileSync(join(dir, file!), "utf8")).toBe(original)
    for (let i = 1; i <= N; i++) expect(fake.paid.get(prompt(i))).toBe(1)
    expect(fake.invalid).toEqual([])
  }, 60_000)

  test("a batch killed while applying, its result files elsewhere, is downloaded again here and every item paid once", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, batch: { processingMs: 50 } })
    writeFileSync(tmp.join("in.jsonl"), input(N))
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const home = tmp.join("home")
    const killed = start(["run", "job.toml", "--home", home], {
      cwd: tmp.path,
      env: { ...env, SPOOL_CRASH_AT: "apply" },
    })
    await killed.exited
    expect(killed.signalCode).toBe("SIGKILL")
    const downloads = fake.batch.downloads
    expect(downloads).toBeGreaterThan(0)
    rmSync(join(home, "artifacts"), { recursive: true })
    const run = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(run.stderr).toContain(`run "takeover": ${N} completed, 0 failed of ${N}`)
    expect(run.code).toBe(0)
    // the applying batch's file came down again, and no line of it was sent again
    expect(fake.batch.downloads).toBeGreaterThan(downloads)
    for (let i = 1; i <= N; i++) expect(fake.paid.get(prompt(i))).toBe(1)
    const out = await spool(["results", "--home", home], { cwd: tmp.path, env })
    const lines = out.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { id: string; state: string; output: string })
    expect(lines.map((l) => l.id)).toEqual(Array.from({ length: N }, (_, i) => `r${i + 1}`))
    for (const [i, l] of lines.entries())
      expect(l).toMatchObject({ state: "completed", output: `echo: ${prompt(i + 1)}` })
  }, 60_000)
})
