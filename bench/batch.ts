/**
 * Batch mode's local work: `bun bench/batch.ts ITEMS DIR`. The items are ingested into a store first (in a process
 * of their own, with spool's own ingest), then `dist/spool run` drives them through the fake OpenAI Batch API (in a
 * process of its own, instant processing): pack, write the request files, upload, create, poll, download, parse and
 * apply. The figure is that process's whole wall time (its startup and its check of the already-read input
 * included), and its peak RSS. This process stays small: a child starts with its parent's peak RSS on Linux.
 * Prints JSON.
 */
import { Database } from "bun:sqlite"
import { mkdirSync, rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"

const root = join(import.meta.dir, "..")

if (process.argv[2] === "prepare") {
  // the ledger as `spool run` would leave it after reading the input, before any batch
  const [, , , itemsArg, dir, url] = process.argv as [string, string, string, string, string, string]
  const jobs = await import("../src/core/job/job.ts")
  const { open } = await import("../src/core/ledger/open.ts")
  const { ingest, plan } = await import("../src/core/engine/ingest.ts")
  const writer = Bun.file(join(dir, "in.jsonl")).writer()
  for (let i = 0; i < Number(itemsArg); i++)
    writer.write(`${JSON.stringify({ id: `t-${i}`, subject: `Ticket ${i} about billing` })}\n`)
  await writer.end()
  const jobFile = join(dir, "job.toml")
  writeFileSync(
    jobFile,
    `name = "bench-batch"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "openai"
model = "gpt-4.1-mini"
mode = "batch"
base_url = "${url}"
[request]
prompt = "Label: {{subject}}"
max_tokens = 5
[batch]
poll_s = 0.02
poll_max_s = 0.1
`,
  )
  const { job } = jobs.load(jobFile, {})
  const db = await open(join(dir, ".spool"))
  const planned = plan(job)
  const { run } = await db.runs.create({
    name: job.name,
    job,
    fingerprint: jobs.fingerprint(job),
    resume: `spool run ${jobFile}`,
    inputs: planned.map((p) => ({ path: p.path, format: p.source.name })),
  })
  await ingest(db, run, planned, async () => {})
  await db.close()
  process.exit(0)
}

const [itemsArg, dir] = process.argv.slice(2) as [string, string]
const items = Number(itemsArg)
rmSync(dir, { recursive: true, force: true })
mkdirSync(dir, { recursive: true })

// the fake in a process of its own (instant batches, no schema validation: it is not what is measured)
const fake = Bun.spawn(["bun", join(import.meta.dir, "fake.ts"), "0"], { stdout: "pipe", stderr: "inherit" })
const reader = fake.stdout.getReader()
let url = ""
while (!url.includes("\n")) {
  const { value, done } = await reader.read()
  if (done) throw new Error("the fake did not start")
  url += new TextDecoder().decode(value)
}
url = url.trim()

try {
  const prep = Bun.spawnSync(["bun", import.meta.path, "prepare", String(items), dir, url], {
    stderr: "inherit",
  })
  if (prep.exitCode !== 0) throw new Error("preparing the store failed")

  const home = join(dir, ".spool")
  const started = performance.now()
  const child = Bun.spawn([join(root, "dist", "spool"), "run", join(dir, "job.toml"), "--home", home], {
    cwd: dir,
    env: { ...process.env, OPENAI_API_KEY: "sk-bench", SPOOL_QUIET: "1" },
    stdout: "ignore",
    stderr: "pipe",
  })
  const stderr = await new Response(child.stderr).text()
  const code = await child.exited
  const seconds = (performance.now() - started) / 1000
  if (code !== 0) throw new Error(`dist/spool exited ${code}: ${stderr.slice(-2000)}`)
  // Bun reports a child's peak RSS in bytes, and its CPU time in microseconds
  const usage = child.resourceUsage()
  const maxRssMB = (usage?.maxRSS ?? 0) / 2 ** 20
  const cpuSeconds = Number(usage?.cpuTime.total ?? 0) / 1e6

  const db = new Database(join(home, "spool.db"), { readonly: true })
  const completed = db
    .query<{ n: number }, []>("SELECT count(*) AS n FROM items WHERE state = 'completed'")
    .get()!.n
  const batches = db.query<{ n: number }, []>("SELECT count(*) AS n FROM batches").get()!.n
  const attempts = db.query<{ n: number }, []>("SELECT count(*) AS n FROM attempts").get()!.n
  db.close()
  if (completed !== items || attempts !== items)
    throw new Error(`expected ${items} items completed in one attempt each, got ${completed} and ${attempts}`)
  console.log(
    JSON.stringify({
      items,
      seconds,
      itemsPerSecond: items / seconds,
      cpuSeconds,
      itemsPerCpuSecond: items / cpuSeconds,
      maxRssMB,
      batches,
      selfMaxRssMB: process.resourceUsage().maxRSS / 1024,
    }),
  )
} finally {
  fake.kill("SIGTERM")
  await fake.exited
}
