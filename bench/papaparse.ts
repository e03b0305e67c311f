/**
 * CSV parser throughput, one process: `bun bench/papaparse.ts MB`. Builds an in-memory CSV text of about MB
 * megabytes (10^6 bytes; the ingest rows, every 10th with a quoted field) and times papaparse on it with the
 * options the csv source uses: once whole, then again in 1 MiB pieces ending at a line end, as the source
 * reads a file. Prints JSON.
 */
import Papa from "papaparse"
import { csvText, PARSE_OPTIONS } from "./data.ts"

const mb = Number(process.argv[2] ?? 100)
const text = csvText(mb * 1e6)
const options = PARSE_OPTIONS
const bytes = text.length // ASCII: one byte per character

let started = performance.now()
const whole = Papa.parse<string[]>(text, options)
const wholeMs = performance.now() - started
const records = whole.data.length
if (whole.errors.length) throw new Error(`papaparse reported ${whole.errors.length} errors`)
whole.data.length = 0

const REGION = 1 << 20
started = performance.now()
let pieceRecords = 0
for (let from = 0; from < text.length;) {
  const nl = text.lastIndexOf("\n", from + REGION - 1)
  const end = nl >= from ? nl + 1 : text.length
  pieceRecords += Papa.parse<string[]>(text.slice(from, end), options).data.length - 1 // the empty one after the last newline
  from = end
}
const piecesMs = performance.now() - started
if (pieceRecords !== records - 1) throw new Error(`pieces gave ${pieceRecords} records, whole ${records - 1}`)

console.log(
  JSON.stringify({
    mb: bytes / 1e6,
    records: records - 1,
    wholeMs,
    mbPerSec: bytes / 1e6 / (wholeMs / 1000),
    piecesMs,
    piecesMbPerSec: bytes / 1e6 / (piecesMs / 1000),
    maxRssMB: process.resourceUsage().maxRSS / 1024,
  }),
)
