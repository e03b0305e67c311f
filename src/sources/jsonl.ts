/**
 * JSON Lines: one object per line. Read in regions of about a megabyte that end at a newline, so each region
 * is decoded and hashed once and every checkpoint is an exact byte offset at a line boundary. A line longer than
 * `max_line_bytes` is a problem row, walked past without being held; a last line with no newline yet is left
 * for a later read (its writer may still be on it).
 */
import * as v from "valibot"
import { defineSource, type SourceProblem, type SourceRow } from "../plugins/api/define.ts"
import { excerpt, open, pass, region, unfinished, verify } from "./prefix.ts"

const REGION = 1 << 20
/** 16 MiB: a line is held whole, several times over (bytes, text, parsed object), while it is read. */
const MAX_LINE = 1 << 24
const NEWLINE = 10
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })
const lenient = new TextDecoder("utf-8", { ignoreBOM: true })
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
  return { line, reason, excerpt: lenient.decode(encoder.encode(text.slice(0, 200)).subarray(0, 200)) }
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

/** The next part of the file: whole lines; or a last line with no newline yet (or `long`, see `region`). */
type Region = { lines: Uint8Array } | { tail: Uint8Array }

const lines = (read: Uint8Array, eof: boolean): Region | undefined => {
  const last = read.lastIndexOf(NEWLINE)
  if (last >= 0) return { lines: read.subarray(0, last + 1) }
  return eof ? { tail: read } : undefined
}

/** Just past the next newline at or after `from`, looking `step` bytes at a time; undefined if the file ends first. */
async function lineEnd(
  handle: Bun.BunFile,
  from: number,
  size: number,
  step: number,
): Promise<number | undefined> {
  for (let at = from; at < size; at += step) {
    const bytes = new Uint8Array(await handle.slice(at, Math.min(size, at + step)).arrayBuffer())
    const i = bytes.indexOf(NEWLINE)
    if (i >= 0) return at + i + 1
  }
  return undefined
}

/** A line that is not valid UTF-8, as text with U+FFFD in place of its bad bytes (for the excerpt). */
interface Invalid {
  invalid: string
}

/** The lines of a region (which ends with a newline); one that is not valid UTF-8 is `Invalid`. */
function split(bytes: Uint8Array): (string | Invalid)[] {
  try {
    const lines: (string | Invalid)[] = decoder.decode(bytes).split("\n")
    lines.pop()
    return lines
  } catch {
    // rare: decode line by line to find the bad ones
    const lines: (string | Invalid)[] = []
    for (
      let start = 0, i = bytes.indexOf(NEWLINE);
      i >= 0;
      start = i + 1, i = bytes.indexOf(NEWLINE, start)
    ) {
      const line = bytes.subarray(start, i)
      try {
        lines.push(decoder.decode(line))
      } catch {
        lines.push({ invalid: lenient.decode(line) })
      }
    }
    return lines
  }
}

export default defineSource({
  name: "jsonl",
  extensions: [".jsonl", ".ndjson"],
  options: v.object({
    /** Bytes read (and committed) per batch; a batch always ends at a line boundary. At most max_line_bytes. */
    chunk_bytes: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1)), REGION),
    /** The longest line read, in bytes with its newline; a longer one is a problem row, read past without being held. */
    max_line_bytes: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1)), MAX_LINE),
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
    const max = options.max_line_bytes ?? MAX_LINE
    const follow = options.follow === true
    const here = () => ({ offset, line, sha256: hasher.copy().digest("hex") })
    for (
      let r = await region(handle, offset, chunk, max, lines);
      r;
      r = await region(handle, offset, chunk, max, lines)
    ) {
      if (signal?.aborted) return
      if ("long" in r) {
        const end = await lineEnd(handle, offset + max, size, chunk)
        // a long last line with no newline yet is left for later, like a short one
        if (end === undefined) {
          if (follow) break
          yielded = true
          yield { rows: [], problems: [], checkpoint: here(), warnings: [unfinished(file, line + 1)] }
          return
        }
        line++
        const skipped = {
          line,
          reason: `the line is ${end - offset} bytes, longer than max_line_bytes (${max}); raise max_line_bytes to read it`,
          excerpt: await excerpt(handle, offset),
        }
        await pass(handle, offset, end, hasher)
        offset = end
        yielded = true
        yield { rows: [], problems: [skipped], checkpoint: here() }
        continue
      }
      if ("tail" in r) {
        // its writer may still be on it: the checkpoint stays before it, and a later read takes it whole
        if (follow || lenient.decode(r.tail).trim() === "") break
        yielded = true
        yield { rows: [], problems: [], checkpoint: here(), warnings: [unfinished(file, line + 1)] }
        return
      }
      const bytes = r.lines
      const body =
        offset === 0 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf
          ? bytes.subarray(3)
          : bytes
      const rows: SourceRow[] = []
      const problems: SourceProblem[] = []
      for (const raw of split(body)) {
        line++
        if (typeof raw !== "string") {
          problems.push(
            problem(
              line,
              raw.invalid,
              "not valid UTF-8: the file must be UTF-8 text (convert it, e.g. with iconv)",
            ),
          )
          continue
        }
        const text = raw.endsWith("\r") ? raw.slice(0, -1) : raw
        if (text.trim() === "") continue
        const parsed = parse(text, line, options.id)
        if ("key" in parsed) rows.push(parsed)
        else problems.push(parsed)
      }
      hasher.update(bytes)
      offset += bytes.length
      yielded = true
      yield { rows, problems, checkpoint: here() }
    }
    if (!yielded) yield { rows: [], problems: [], checkpoint: here() }
  },
})
