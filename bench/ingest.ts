/**
 * One ingest contender per process: `bun bench/ingest.ts spool|baseline FILE DIR`. Prints JSON.
 * spool reads FILE through the source its extension names (.jsonl, .csv, .parquet); the baseline inserts the lines
 * of a JSONL FILE as they are.
 */
import { Database } from "bun:sqlite"
import { mkdirSync } from "node:fs"
import { join } from "node:path"
import { open } from "../src/core/ledger/open.ts"
import { ingest, plan } from "../src/core/engine/ingest.ts"
import * as jobs from "../src/core/job/job.ts"

const [mode, file, dir] = process.argv.slice(2) as [string, string, string]
mkdirSync(dir, { recursive: true })
const started = performance.now()
let rows = 0

if (mode === "baseline") {
  // the plainest bulk insert of the same rows: whole file in memory, one prepared statement, big transactions
  const db = new Database(join(dir, "plain.db"), { create: true })
  db.run("PRAGMA journal_mode = WAL")
  db.run("PRAGMA synchronous = FULL")
  db.run("CREATE TABLE items (id INTEGER PRIMARY KEY, key TEXT NOT NULL, data TEXT NOT NULL, UNIQUE (key))")
  const insert = db.prepare("INSERT INTO items (key, data) VALUES (?, ?)")
  const lines = (await Bun.file(file).text()).split("\n")
  const chunk = db.transaction((part: string[], base: number) => {
    for (const [i, line] of part.entries()) if (line) insert.run(String(base + i + 1), line)
  })
  for (let i = 0; i < lines.length; i += 2000) chunk(lines.slice(i, i + 2000), i)
  rows = (db.query("SELECT count(*) AS n FROM items").get() as { n: number }).n
  db.close()
} else {
  const db = await open(dir)
  const { job } = jobs.load(undefined, { name: "bench", input: [file], prompt: "x", provider: "mock" })
  const inputs = plan(job)
  const { run } = await db.runs.create({
    name: "bench",
    job,
    fingerprint: "fp",
    resume: "",
    inputs: [{ path: inputs[0]!.path, format: inputs[0]!.source.name }],
  })
  await ingest(db, run, inputs, async () => {})
  rows = (await db.reads.counts(run.id)).pending
  await db.close()
}

const ms = performance.now() - started
console.log(
  JSON.stringify({
    mode,
    rows,
    ms,
    rowsPerSec: rows / (ms / 1000),
    maxRssMB: process.resourceUsage().maxRSS / 1024,
  }),
)
