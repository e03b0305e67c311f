/** JSON Lines: one object per line, streamed at the byte level so checkpoints are exact byte offsets. */
import * as v from "valibot"
import { defineSource, type SourceBatch, type SourceProblem, type SourceRow } from "../plugins/define.ts"
import { SourceChangedError, SourceError } from "../core/errors.ts"

const BATCH = 2000
const NEWLINE = 10
const decoder = new TextDecoder()

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

async function open(file: string) {
  const handle = Bun.file(file)
  if (!(await handle.exists())) {
    throw new SourceError(
      `cannot read ${file}: no such file`,
      "Check source.path (relative to the job file).",
    )
  }
  return handle
}

/** Re-reads the part already ingested and checks it is byte for byte what was ingested. */
async function verify(file: string, at: Position, hasher: Bun.CryptoHasher): Promise<void> {
  const handle = await open(file)
  const changed = () =>
    new SourceChangedError(
      `${file} changed since it was ingested: its first ${at.offset} bytes (${at.line} lines) are not the same`,
      "Restore the file, or run again with --reingest to read it from the start (finished items are kept).",
    )
  if (handle.size < at.offset) throw changed()
  for await (const chunk of handle.slice(0, at.offset).stream()) hasher.update(chunk)
  if (hasher.copy().digest("hex") !== at.sha256) throw changed()
}

function problem(line: number, bytes: Uint8Array, reason: string): SourceProblem {
  return { line, reason, excerpt: decoder.decode(bytes.subarray(0, 200)) }
}

function idOf(value: unknown): string | undefined {
  if (typeof value === "string") return value
  if (typeof value === "number" && Number.isFinite(value)) return String(value)
  return undefined
}

/** Parses one non-blank line into a row, or says why it is not one. */
function parse(bytes: Uint8Array, line: number, id: string | undefined): SourceRow | SourceProblem {
  let value: unknown
  try {
    value = JSON.parse(decoder.decode(bytes))
  } catch (err) {
    return problem(line, bytes, `not valid JSON: ${(err as Error).message}`)
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    const kind = Array.isArray(value) ? "array" : value === null ? "null" : typeof value
    return problem(line, bytes, `not a JSON object (${kind})`)
  }
  const data = value as Record<string, unknown>
  if (id === undefined) return { key: String(line), line, data }
  if (!(id in data)) return problem(line, bytes, `no "${id}" field (the id field)`)
  const key = idOf(data[id])
  if (key === undefined) return problem(line, bytes, `the "${id}" field is not a string or number`)
  return { key, line, id: key, data }
}

function blank(bytes: Uint8Array): boolean {
  for (const b of bytes) if (b !== 32 && b !== 9 && b !== 13) return false
  return true
}

export default defineSource({
  name: "jsonl",
  extensions: [".jsonl", ".ndjson"],
  options: v.object({}),
  async *read(file, options, checkpoint, signal) {
    const hasher = new Bun.CryptoHasher("sha256")
    const start = position(checkpoint)
    if (start) await verify(file, start, hasher)
    const handle = await open(file)
    let offset = start?.offset ?? 0
    let line = start?.line ?? 0
    let rows: SourceRow[] = []
    let problems: SourceProblem[] = []
    let carry: Uint8Array | undefined
    const flush = (): SourceBatch => {
      const batch = { rows, problems, checkpoint: { offset, line, sha256: hasher.copy().digest("hex") } }
      rows = []
      problems = []
      return batch
    }
    const take = (bytes: Uint8Array) => {
      line++
      let body = bytes
      if (offset === 0 && body[0] === 0xef && body[1] === 0xbb && body[2] === 0xbf) body = body.subarray(3)
      hasher.update(bytes)
      offset += bytes.length
      const end = body.length > 0 && body[body.length - 1] === NEWLINE ? body.length - 1 : body.length
      const content = body.subarray(0, end > 0 && body[end - 1] === 13 ? end - 1 : end)
      if (blank(content)) return
      const parsed = parse(content, line, options.id)
      if ("key" in parsed) rows.push(parsed)
      else problems.push(parsed)
    }
    for await (const chunk of handle.slice(offset).stream()) {
      if (signal?.aborted) return
      let from = 0
      let data = chunk
      if (carry) {
        const joined = new Uint8Array(carry.length + chunk.length)
        joined.set(carry)
        joined.set(chunk, carry.length)
        data = joined
        carry = undefined
      }
      for (let nl = data.indexOf(NEWLINE, from); nl !== -1; nl = data.indexOf(NEWLINE, from)) {
        take(data.subarray(from, nl + 1))
        from = nl + 1
        if (rows.length + problems.length >= BATCH) yield flush()
      }
      if (from < data.length) carry = data.slice(from)
    }
    if (carry && carry.length > 0) take(carry)
    yield flush()
  },
})
