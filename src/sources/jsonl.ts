/**
 * JSON Lines: one object per line. Read in regions of about a megabyte that end at a newline, so each region
 * is decoded and hashed once and every checkpoint is an exact byte offset at a line boundary.
 */
import * as v from "valibot"
import { defineSource, type SourceProblem, type SourceRow } from "../plugins/define.ts"
import { open, verify } from "./prefix.ts"

const REGION = 1 << 20
const NEWLINE = 10
const decoder = new TextDecoder()
const encoder = new TextEncoder()

interface Position {
  offset: number
  line: number
  sha256: string
}

function position(checkpoint: Record<string, unknown> | undefined): Position | undefined {
  if (!checkpoint) return undefined
  const { offset, line, sha256 } = checkpoint
  if (typeof offset !== "number" || typeof line !== "number" || typeof sha256 !== "string") return undefined
  return { offset, line, sha256 }
}

function problem(line: number, text: string, reason: string): SourceProblem {
  return { line, reason, excerpt: decoder.decode(encoder.encode(text.slice(0, 200)).subarray(0, 200)) }
}

function idOf(value: unknown): string | undefined {
  if (typeof value === "string") return value
  if (typeof value === "number" && Number.isFinite(value)) return String(value)
  return undefined
}

/** Parses one non-blank line into a row, or says why it is not one. */
function parse(text: string, line: number, id: string | undefined): SourceRow | SourceProblem {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    return problem(line, text, `not valid JSON: ${(err as Error).message}`)
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    const kind = Array.isArray(value) ? "array" : value === null ? "null" : typeof value
    return problem(line, text, `not a JSON object (${kind})`)
  }
  const data = value as Record<string, unknown>
  if (id === undefined) return { key: String(line), line, data, raw: text }
  if (!(id in data)) return problem(line, text, `no "${id}" field (the id field)`)
  const key = idOf(data[id])
  if (key === undefined) return problem(line, text, `the "${id}" field is not a string or number`)
  return { key, line, id: key, data, raw: text }
}

/**
 * The next region to parse: whole lines from `offset`, or the rest of the file at its end. Following a file
 * that is still being written (`follow`), a last line without its newline is left for a later read.
 */
// prettier-ignore
async function region(handle: Bun.BunFile, offset: number, size: number, bytes: number, follow: boolean) {
  let want = bytes
  for (;;) {
    if (offset >= size) return undefined
    const read = new Uint8Array(await handle.slice(offset, Math.min(size, offset + want)).arrayBuffer())
    if (offset + read.length >= size) {
      if (!follow || read.at(-1) === NEWLINE) return read
      const last = read.lastIndexOf(NEWLINE)
      return last >= 0 ? read.subarray(0, last + 1) : undefined
    }
    const last = read.lastIndexOf(NEWLINE)
    if (last >= 0) return read.subarray(0, last + 1)
    want *= 2 // a line longer than the region: read more
  }
}

export default defineSource({
  name: "jsonl",
  extensions: [".jsonl", ".ndjson"],
  options: v.object({
    /** Bytes read (and committed) per batch; a batch always ends at a line boundary. */
    chunk_bytes: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1)), REGION),
  }),
  async *read(file, options, checkpoint, signal) {
    const hasher = new Bun.CryptoHasher("sha256")
    const start = position(checkpoint)
    if (start) await verify(file, start, hasher)
    const handle = await open(file)
    const size = handle.size
    let offset = start?.offset ?? 0
    let line = start?.line ?? 0
    let yielded = false
    const chunk = options.chunk_bytes ?? REGION
    const follow = options.follow === true
    for (
      let bytes = await region(handle, offset, size, chunk, follow);
      bytes;
      bytes = await region(handle, offset, size, chunk, follow)
    ) {
      if (signal?.aborted) return
      let body = bytes
      if (offset === 0 && body[0] === 0xef && body[1] === 0xbb && body[2] === 0xbf) body = body.subarray(3)
      const lines = decoder.decode(body).split("\n")
      if (lines.at(-1) === "") lines.pop()
      const rows: SourceRow[] = []
      const problems: SourceProblem[] = []
      for (const raw of lines) {
        line++
        const text = raw.endsWith("\r") ? raw.slice(0, -1) : raw
        if (text.trim() === "") continue
        const parsed = parse(text, line, options.id)
        if ("key" in parsed) rows.push(parsed)
        else problems.push(parsed)
      }
      hasher.update(bytes)
      offset += bytes.length
      yielded = true
      yield { rows, problems, checkpoint: { offset, line, sha256: hasher.copy().digest("hex") } }
    }
    if (!yielded)
      yield { rows: [], problems: [], checkpoint: { offset, line, sha256: hasher.copy().digest("hex") } }
  },
})
