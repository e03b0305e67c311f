/**
 * Where CSV ingest spends its time, one process: `bun bench/csv-profile.ts FILE DIR`. Prints JSON.
 *
 * Pass 1 is `ingest()`'s loop (src/core/ingest.ts) written out so each step can be timed: waiting for the
 * source's next batch, turning each row's fields into its JSON text (what `ledger.ingest.add` does for a row without
 * `raw`; done here first, so the store stores the same text), and `ledger.ingest.add` (SQLite).
 * Pass 2 repeats the csv source's steps for one region at a time (src/sources/csv.ts: read 256 KiB, find the last
 * record boundary, decode, papaparse, hash) to split the source's time; the rest of the source's time is turning
 * papaparse's records into rows (header, line count, row objects) and the generator itself.
 */
import Papa from "papaparse"
import { mkdirSync } from "node:fs"
import { open } from "../src/core/ledger/open.ts"
import { plan } from "../src/core/engine/ingest.ts"
import * as jobs from "../src/core/job/job.ts"
import { boundary } from "../src/sources/csv.ts"
import { PARSE_OPTIONS } from "./data.ts"

const [file, dir] = process.argv.slice(2) as [string, string]
mkdirSync(dir, { recursive: true })

// ---- pass 1: the real source and store, each step timed
const db = await open(dir)
const { job } = jobs.load(undefined, { name: "bench", input: [file], prompt: "x", provider: "mock" })
const inputs = plan(job)
const planned = inputs[0]!
const { run } = await db.runs.create({
  name: "bench",
  job,
  fingerprint: "fp",
  resume: "",
  inputs: [{ path: planned.path, format: planned.source.name }],
})
const input = (await db.runs.inputs(run.id))[0]!
const started = performance.now()
let source = 0
let json = 0
let insert = 0
let batches = 0
const batchesOf = planned.source.read(input.path, planned.options, undefined)[Symbol.asyncIterator]()
for (;;) {
  let t = performance.now()
  const next = await batchesOf.next()
  source += performance.now() - t
  if (next.done) break
  batches++
  t = performance.now()
  for (const row of next.value.rows) row.raw ??= JSON.stringify(row.data)
  json += performance.now() - t
  t = performance.now()
  await db.ingest.add(run.id, input, next.value, false)
  insert += performance.now() - t
}
await db.ingest.done(run.id)
const total = performance.now() - started
const rows = (await db.reads.counts(run.id)).pending
await db.close()

// ---- pass 2: the source's steps on their own
const REGION = 1 << 18
const handle = Bun.file(file)
const size = handle.size
const decoder = new TextDecoder()
const hasher = new Bun.CryptoHasher("sha256")
const options = PARSE_OPTIONS
const step = { read: 0, boundary: 0, decode: 0, parse: 0, hash: 0 }
for (let offset = 0; offset < size;) {
  let t = performance.now()
  let bytes = new Uint8Array(await handle.slice(offset, Math.min(size, offset + REGION)).arrayBuffer())
  step.read += performance.now() - t
  t = performance.now()
  if (offset + bytes.length < size) bytes = bytes.subarray(0, boundary(bytes, 44))
  step.boundary += performance.now() - t
  t = performance.now()
  const text = decoder.decode(bytes)
  step.decode += performance.now() - t
  t = performance.now()
  Papa.parse<string[]>(text, options)
  step.parse += performance.now() - t
  t = performance.now()
  hasher.update(bytes)
  hasher.copy().digest("hex")
  step.hash += performance.now() - t
  offset += bytes.length
}

console.log(
  JSON.stringify({
    rows,
    batches,
    ms: total,
    rowsPerSec: rows / (total / 1000),
    sourceMs: source,
    jsonMs: json,
    storeMs: insert,
    readMs: step.read,
    boundaryMs: step.boundary,
    decodeMs: step.decode,
    parseMs: step.parse,
    hashMs: step.hash,
    rowsMs: Math.max(0, source - step.read - step.boundary - step.decode - step.parse - step.hash),
  }),
)
