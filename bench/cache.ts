/**
 * The response cache at full hit rate (issue 16): a run of N rows whose every request the cache already answers,
 * against ingesting the same N rows. One contender per process, prints JSON:
 *
 *   bun bench/cache.ts fill FILE DIR     untimed: a store whose cache holds an answer for every row of FILE, written
 *                                        straight into its `cache` table under the keys spool makes (job/cache.ts)
 *   bun bench/cache.ts ingest FILE DIR   the rows ingested into a fresh store (what bench/ingest.ts's spool does)
 *   bun bench/cache.ts run FILE DIR      on a filled store: `spool run` of a job over FILE (the mock provider, which
 *                                        no hit calls): ingest and hits, start to done
 *   bun bench/cache.ts sweep FILE DIR    on a filled store: the rows ingested with the cache off, then the look-ups
 *                                        of the pending items alone (a resumed run's path)
 */
import { Database } from "bun:sqlite"
import { mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { open } from "../src/core/ledger/open.ts"
import { ingest, plan } from "../src/core/engine/ingest.ts"
import { identity, prepare } from "../src/core/engine/run.ts"
import { Lookup, cacheUse } from "../src/core/engine/cache.ts"
import { keyer } from "../src/core/job/cache.ts"
import { slot } from "../src/core/ledger/sqlite/cache.ts"
import * as jobs from "../src/core/job/job.ts"
import * as registry from "../src/plugins/registry.ts"

const [mode, file, dir] = process.argv.slice(2) as [string, string, string]
mkdirSync(dir, { recursive: true })

const JOB = `name = "hits"
[source]
path = "${file}"
id = "id"
[provider]
name = "mock"
[request]
system = "You label support tickets."
prompt = "Ticket: {{subject}}\\n\\n{{body}}"
max_tokens = 50
`
const jobFile = join(dir, "job.toml")
writeFileSync(jobFile, JOB)
const { job } = jobs.load(jobFile, {})
await registry.load([])

/** Writes an answer for every row of FILE into the store's cache, as a paid run would have. */
async function fill(): Promise<number> {
  await (await open(dir)).close()
  const keyOf = keyer(job, identity(job))
  const db = new Database(join(dir, "spool.db"))
  const insert = db.prepare(
    `INSERT OR REPLACE INTO cache (id, key, provider, model, output, input_tokens, output_tokens, cached_input_tokens,
     cost_usd, bytes, created_at) VALUES (?, ?, 'mock', 'mock', ?, 40, 12, 0, 0.00002, 20, ?)`,
  )
  let n = 0
  const lines = (await Bun.file(file).text()).split("\n")
  const chunk = db.transaction((part: string[]) => {
    for (const line of part) {
      if (!line) continue
      const answer = `label for ${n++}`
      const key = keyOf(JSON.parse(line) as Record<string, unknown>)
      insert.run(slot(key), key, answer, Date.now())
    }
  })
  for (let i = 0; i < lines.length; i += 10_000) chunk(lines.slice(i, i + 10_000))
  db.close()
  return n
}

let rows = 0
let hits = 0
let ms = 0
if (mode === "ingest") {
  const db = await open(dir)
  const started = performance.now()
  const inputs = plan(job)
  const { run } = await db.runs.create({
    name: "ingest",
    job,
    fingerprint: "fp",
    resume: "",
    inputs: [{ path: inputs[0]!.path, format: inputs[0]!.source.name }],
  })
  await ingest(db, run, inputs, async () => {})
  ms = performance.now() - started
  rows = (await db.reads.counts(run.id)).pending
  await db.close()
} else if (mode === "fill") {
  rows = await fill()
} else if (mode === "run") {
  const started = performance.now()
  const session = await prepare({
    file: jobFile,
    flags: {},
    home: dir,
    newRun: false,
    reingest: false,
    resume: "",
  })
  const code = await session.execute()
  ms = performance.now() - started
  if (code !== 0) throw new Error(`the run ended with ${code}`)
  const db = await open(dir)
  const summary = await db.reads.summary(session.run.id)
  rows = summary.counts.completed
  hits = summary.cache.hits
  await db.close()
} else if (mode === "sweep") {
  const db = await open(dir)
  const inputs = plan(job)
  const { run } = await db.runs.create({
    name: "hits",
    job,
    fingerprint: jobs.fingerprint(job),
    resume: "",
    inputs: [{ path: inputs[0]!.path, format: inputs[0]!.source.name }],
  })
  await ingest(db, run, inputs, async () => {})
  const use = cacheUse(job, identity(job))!
  const started = performance.now()
  const lookup = new Lookup(db, run, "bench", use, undefined)
  for (;;) {
    const swept = await lookup.sweep(Number.POSITIVE_INFINITY)
    hits += swept.hits
    if (!swept.more) break
  }
  ms = performance.now() - started
  rows = (await db.reads.counts(run.id)).completed
  await db.close()
} else throw new Error(`bench/cache.ts: no mode "${mode}" (fill, ingest, run, sweep)`)

console.log(
  JSON.stringify({
    mode,
    rows,
    hits,
    ms,
    rowsPerSec: rows / (ms / 1000),
    maxRssMB: process.resourceUsage().maxRSS / 1024,
  }),
)
