/**
 * Batch mode's local work: `bun bench/batch.ts ITEMS DIR`. The items are ingested into a store first (in this
 * process, with spool's own ingest), then `dist/spool run` drives them through the fake OpenAI Batch API with
 * instant processing: pack, write the request files, upload, create, poll, download, parse and apply. The figure is
 * that process's whole wall time (its startup and its check of the already-read input included), and its peak RSS.
 * Prints JSON.
 */
import { Database } from "bun:sqlite"
import { mkdirSync, rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { startFake } from "../test/lib/fake-openai.ts"
import * as jobs from "../src/core/job.ts"
import * as store from "../src/core/store.ts"
import { ingest, plan } from "../src/core/ingest.ts"

const [itemsArg, dir] = process.argv.slice(2) as [string, string]
const items = Number(itemsArg)
rmSync(dir, { recursive: true, force: true })
mkdirSync(dir, { recursive: true })
const bin = join(import.meta.dir, "..", "dist", "spool")

// the fake answers in this process: instant batches, no schema validation (it is not what is measured)
await using fake = await startFake({ apiKey: "sk-bench", validate: false, batch: {} })

const input = join(dir, "in.jsonl")
const writer = Bun.file(input).writer()
for (let i = 0; i < items; i++)
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
base_url = "${fake.url}"
[request]
prompt = "Label: {{subject}}"
max_tokens = 5
[batch]
poll_s = 0.02
poll_max_s = 0.1
keep_raw = true
`,
)
const home = join(dir, ".spool")

// the ledger as `spool run` would leave it after reading the input, before any batch
{
  const { job } = jobs.load(jobFile, {})
  const db = store.open(home)
  const planned = plan(job)
  const { run } = db.createRun(
    job.name,
    JSON.stringify(job),
    jobs.fingerprint(job),
    `spool run ${jobFile}`,
    planned.map((p) => ({ path: p.path, format: p.source.name })),
  )
  await ingest(db, run, planned, () => {})
  db.close()
}

const started = performance.now()
const child = Bun.spawn(
  [
    ...(process.env.BENCH_SRC
      ? [
          "bun",
          ...(process.env.BENCH_PROF ? ["--cpu-prof", "--cpu-prof-dir", process.env.BENCH_PROF] : []),
          join(import.meta.dir, "..", "src", "main.ts"),
        ]
      : [bin]),
    "run",
    jobFile,
    "--home",
    home,
  ],
  {
    cwd: dir,
    env: { ...process.env, OPENAI_API_KEY: "sk-bench", SPOOL_QUIET: "1" },
    stdout: "ignore",
    stderr: "pipe",
  },
)
const stderr = await new Response(child.stderr).text()
const code = await child.exited
if (process.env.SPOOL_TIMING) console.error(stderr)
const seconds = (performance.now() - started) / 1000

if (code !== 0) throw new Error(`dist/spool exited ${code}: ${stderr.slice(-2000)}`)
const rssMB = (child.resourceUsage()?.maxRSS ?? 0) / 1024

const db = new Database(join(home, "spool.db"), { readonly: true })
const completed = db
  .query<{ n: number }, []>("SELECT count(*) AS n FROM items WHERE state = 'completed'")
  .get()!.n
const batches = db.query<{ n: number }, []>("SELECT count(*) AS n FROM batches").get()!.n
db.close()
if (completed !== items || fake.batch.paidLines !== items)
  throw new Error(`expected ${items} completed and paid once, got ${completed} and ${fake.batch.paidLines}`)

console.log(
  JSON.stringify({
    items,
    seconds,
    itemsPerSecond: items / seconds,
    maxRssMB: rssMB,
    batches,
  }),
)
