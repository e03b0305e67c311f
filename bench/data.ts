/**
 * The benchmark inputs, written once into bench/.data and reused. Every format holds the same logical rows as
 * the JSONL ingest file (id, subject, body), except that every 10th row's subject holds a comma and a quote, so
 * the CSV parser takes its quoted-field path.
 *
 * Run as `bun bench/data.ts csv|jsonl|parquet FILE ROWS [GROUP_ROWS]` to write one file in a process of its own:
 * on Linux a child's peak RSS starts at its parent's peak (it is carried across fork and exec), so the runner
 * must not build a million rows in its own memory.
 */
import { existsSync, renameSync } from "node:fs"
import { parquetWriteFile } from "hyparquet-writer"

export interface Row {
  id: string
  subject: string
  body: string
}

const BODY = "The invoice shows the wrong VAT rate."

/** Row `i` (0-based). Every 10th one has a subject CSV must quote: a comma and a quote in it. */
export function row(i: number): Row {
  const subject = i % 10 === 9 ? `Ticket ${i} about billing, "urgent"` : `Ticket ${i} about billing`
  return { id: `t-${i}`, subject, body: BODY }
}

const csvField = (s: string) => (/[",\n\r]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s)

/** Row `i` as a CSV record (no newline). */
export function csvLine(i: number): string {
  const r = row(i)
  return `${csvField(r.id)},${csvField(r.subject)},${csvField(r.body)}`
}

/** An in-memory CSV text of about `bytes` bytes (header included), whole records. */
export function csvText(bytes: number): string {
  const parts = ["id,subject,body"]
  let size = parts[0]!.length + 1
  for (let i = 0; size < bytes; i++) {
    const line = csvLine(i)
    parts.push(line)
    size += line.length + 1
  }
  return `${parts.join("\n")}\n`
}

/** Writes `file` with `write` unless it exists; writes a temporary file first so a killed run leaves none. */
async function once(file: string, write: (tmp: string) => Promise<void> | void): Promise<string> {
  if (existsSync(file)) return file
  const tmp = `${file}.tmp`
  await write(tmp)
  renameSync(tmp, file)
  return file
}

/** `rows` rows as CSV, header `id,subject,body`, LF line ends. */
export function csvFile(file: string, rows: number): Promise<string> {
  return once(file, async (tmp) => {
    const writer = Bun.file(tmp).writer()
    writer.write("id,subject,body\n")
    for (let i = 0; i < rows; i++) writer.write(`${csvLine(i)}\n`)
    await writer.end()
  })
}

/**
 * The same rows as JSON lines, each exactly the JSON text spool stores for the CSV row (`JSON.stringify` of
 * its fields in header order): what the plain-insert baseline inserts.
 */
export function jsonlFile(file: string, rows: number): Promise<string> {
  return once(file, async (tmp) => {
    const writer = Bun.file(tmp).writer()
    for (let i = 0; i < rows; i++) writer.write(`${JSON.stringify(row(i))}\n`)
    await writer.end()
  })
}

/** The same rows as Parquet: three STRING columns, `groupRows` rows per row group, SNAPPY (the default). */
export function parquetFile(file: string, rows: number, groupRows: number): Promise<string> {
  return once(file, (tmp) => {
    const all = Array.from({ length: rows }, (_, i) => row(i))
    parquetWriteFile({
      filename: tmp,
      rowGroupSize: groupRows,
      columnData: [
        { name: "id", type: "STRING", data: all.map((r) => r.id) },
        { name: "subject", type: "STRING", data: all.map((r) => r.subject) },
        { name: "body", type: "STRING", data: all.map((r) => r.body) },
      ],
    })
  })
}

if (import.meta.main) {
  const [kind, file, rows, group] = process.argv.slice(2) as [string, string, string, string?]
  const n = Number(rows)
  if (kind === "csv") await csvFile(file, n)
  else if (kind === "jsonl") await jsonlFile(file, n)
  else if (kind === "parquet") await parquetFile(file, n, Number(group ?? 10_000))
  else throw new Error(`unknown kind ${kind}: csv, jsonl or parquet`)
  console.log(JSON.stringify({ file, bytes: Bun.file(file).size }))
}

/** The options the csv source gives papaparse (src/sources/csv.ts), for the benchmarks that time it alone. */
export const PARSE_OPTIONS = {
  delimiter: ",",
  newline: "\n" as const,
  quoteChar: '"',
  header: false,
  skipEmptyLines: false,
}
