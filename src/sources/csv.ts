/**
 * CSV and TSV (RFC 4180): a header row, quoted fields holding delimiters, quotes and newlines, CRLF or LF, a BOM.
 * Read in regions of about a megabyte that end at a record boundary, so each region is parsed (papaparse) and
 * hashed once and every checkpoint is an exact byte offset between records. Same layout as the jsonl source.
 */
import Papa from "papaparse"
import * as v from "valibot"
import { defineSource, type Checkpoint, type SourceProblem, type SourceRow } from "../plugins/api/define.ts"
import { SourceError } from "../plugins/api/errors.ts"
import { excerpt as head, open, pass, region, unfinished, verify } from "./prefix.ts"

/** 256 KiB regions: as fast as 1 MiB in the benchmark, with a third less peak memory. */
const REGION = 1 << 18
/** 16 MiB: a record is held whole, several times over (bytes, text, fields), while it is read. */
const MAX_RECORD = 1 << 24
const QUOTE = 0x22
const LF = 0x0a
const CR = 0x0d
const SPACE = 0x20
const TAB = 0x09
const DELIMITERS = [",", ";", "\t", "|"] as const
type Delimiter = (typeof DELIMITERS)[number]
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })
const lenient = new TextDecoder("utf-8", { ignoreBOM: true })

interface Position {
  offset: number
  /** Lines consumed so far (a record with embedded newlines spans several). */
  line: number
  /** Data records seen so far: the key of a row when the job names no id field. */
  record: number
  sha256: string
  header: string[]
  newline: "\n" | "\r\n"
  /**
   * The delimiter the header was read with (given, or sniffed from it), so a resumed read splits the rows the same
   * way. Absent from the checkpoints of spool versions that did not sniff: they read with the format's own.
   */
  delimiter?: Delimiter
}

const isDelimiter = (x: unknown): x is Delimiter => DELIMITERS.some((d) => d === x)

function position(checkpoint: Checkpoint | undefined): Position | undefined {
  if (!checkpoint) return undefined
  const { offset, line, record, sha256, header, newline, delimiter } = checkpoint
  if (typeof offset !== "number" || typeof line !== "number" || typeof record !== "number") return undefined
  if (typeof sha256 !== "string" || typeof header !== "string") return undefined
  return {
    offset,
    line,
    record,
    sha256,
    header: JSON.parse(header) as string[],
    newline: newline === "\r\n" ? "\r\n" : "\n",
    ...(isDelimiter(delimiter) ? { delimiter } : {}),
  }
}

function checkpointOf(p: Position): Checkpoint {
  return { ...p, header: JSON.stringify(p.header) }
}

/** Where a walk over CSV bytes stands, between two pieces of a file. Offsets are the file's. */
interface Walk {
  /** Where the current record began. */
  start: number
  /** Inside a quoted field, opened by the quote at `open`. */
  quoted: boolean
  open: number
  /** The first line end after `open`, or -1 while none is known. */
  lf: number
  /** Whether the next piece starts at a field's start (the byte before it is a delimiter or a line end). */
  fieldStart: boolean
  /** Why the current record is malformed, once a quoted field on one line had bytes after its closing quote. */
  broken: string | undefined
}

const fresh = (offset: number): Walk => ({
  start: offset,
  quoted: false,
  open: -1,
  lf: -1,
  fieldStart: true,
  broken: undefined,
})

/** A malformed record: its bytes [start, stop) and why. */
interface Bad {
  start: number
  stop: number
  reason: string
}

/** Why a record is malformed: the byte at `k` follows a closing quote. (Only its first byte is sure to be read.) */
function junk(bytes: Uint8Array, k: number): string {
  const byte = bytes[k]!
  const what = byte < 0x80 ? JSON.stringify(String.fromCharCode(byte)) : "a non-ASCII character"
  return (
    `malformed quotes: ${what} after the closing quote of a quoted field ` +
    '(a quote inside a quoted field is written twice: "")'
  )
}

/**
 * The length of the whitespace character at `k` (not the delimiter, not a line end), 0 for none, -1 when the bytes
 * end inside one. Whitespace as JavaScript's `trim()` has it, which papaparse uses between a closing quote and the
 * delimiter or line end: space, tab, VT, FF, and the Unicode spaces (NBSP, U+2000–U+200A, U+2028, BOM, …).
 */
function space(bytes: Uint8Array, k: number, delimiter: number): number {
  const b = bytes[k]
  if (b === undefined || b === delimiter) return 0
  if (b === SPACE || b === TAB || b === 0x0b || b === 0x0c) return 1
  if (b < 0xc2) return 0
  const need = b < 0xe0 ? 2 : 3
  if (k + need > bytes.length)
    return b === 0xc2 || b === 0xe1 || b === 0xe2 || b === 0xe3 || b === 0xef ? -1 : 0
  const c = bytes[k + 1]!
  const d = bytes[k + 2]!
  if (b === 0xc2) return c === 0xa0 ? 2 : 0
  if (b === 0xe1) return c === 0x9a && d === 0x80 ? 3 : 0
  if (b === 0xe2 && c === 0x80)
    return (d >= 0x80 && d <= 0x8a) || d === 0xa8 || d === 0xa9 || d === 0xaf ? 3 : 0
  if (b === 0xe2) return c === 0x81 && d === 0x9f ? 3 : 0
  if (b === 0xe3) return c === 0x80 && d === 0x80 ? 3 : 0
  if (b === 0xef) return c === 0xbb && d === 0xbf ? 3 : 0
  return 0
}

/** Notes the first line end in a quoted field's bytes [from, to), if none is known yet. */
function note(bytes: Uint8Array, base: number, w: Walk, from: number, to: number): void {
  if (w.lf >= 0) return
  const lf = bytes.indexOf(LF, from)
  if (lf >= 0 && lf < to) w.lf = base + lf
}

/**
 * Walks CSV `bytes` (at file offset `base`) from the state `w`, finding where records end: the last end in the
 * bytes (`first`: the first one) and the malformed records before it. `safe` is where the walk stopped deciding:
 * a piece that follows must start there (the bytes after it, a quote and spaces, depend on what comes next).
 *
 * The rules are papaparse's reading of quotes, with RFC 4180's closing quote: a quote opens a quoted field only at
 * a field's start; inside it `""` is a quote and the first other quote closes it; whitespace (`space()`) may follow
 * before the delimiter or the line end. Anything else after a closing quote makes the record malformed, and it ends
 *  - when the quoted field was on one line, at the next line end outside quotes (`2,"bad"x` is one record);
 *  - when the field ran over a line end first, at that line end: the quote was most likely never closed (the
 *    quote that "closed" it opens a field on a later line), and the lines after it are records of their own.
 * With `eof`, the bytes end at the end of the file, so a quote there closes its field.
 */
export function walk(
  bytes: Uint8Array,
  base: number,
  w: Walk,
  delimiter: number,
  o: { first?: boolean; eof?: boolean } = {},
): { end: number; safe: number; bad: Bad[] } {
  const bad: Bad[] = []
  const n = bytes.length
  let end = -1
  let i = 0
  for (;;) {
    if (!w.quoted) {
      // the next quote that opens a quoted field: one at a field's start
      let open = bytes.indexOf(QUOTE, i)
      while (
        open >= 0 &&
        !(open === 0 ? w.fieldStart : bytes[open - 1] === delimiter || bytes[open - 1] === LF)
      )
        open = bytes.indexOf(QUOTE, open + 1)
      const stop = open < 0 ? n : open
      const last = stop > i ? bytes.lastIndexOf(LF, stop - 1) : -1
      if (last >= i) {
        const lf = w.broken !== undefined || o.first ? bytes.indexOf(LF, i) : last
        if (w.broken !== undefined) bad.push({ start: w.start, stop: base + lf + 1, reason: w.broken })
        w.broken = undefined
        end = base + (o.first ? lf : last) + 1
        w.start = end
        if (o.first) {
          w.fieldStart = true
          return { end, safe: end, bad }
        }
      }
      if (open < 0) {
        if (n > 0) w.fieldStart = bytes[n - 1] === delimiter || bytes[n - 1] === LF
        return { end, safe: base + n, bad }
      }
      w.quoted = true
      w.open = base + open
      w.lf = -1
      i = open + 1
    }
    // inside a quoted field: its first quote that is not doubled closes it
    let q = bytes.indexOf(QUOTE, i)
    while (q >= 0 && bytes[q + 1] === QUOTE) q = bytes.indexOf(QUOTE, q + 2)
    if (q < 0 || (q + 1 >= n && !o.eof)) {
      // it goes on past these bytes (or its last byte may be the first of a doubled quote)
      const at = q < 0 ? n : q
      note(bytes, base, w, i, at)
      return { end, safe: base + at, bad }
    }
    let k = q + 1
    for (let m = space(bytes, k, delimiter); m > 0; m = space(bytes, k, delimiter)) k += m
    if ((k >= n || space(bytes, k, delimiter) < 0) && !o.eof) {
      note(bytes, base, w, i, q)
      return { end, safe: base + q, bad }
    }
    w.quoted = false
    const next = bytes[k]
    i = k
    if (next === undefined || next === delimiter || next === LF || next === CR) continue
    // bytes after the closing quote: the record is malformed
    const reason = w.broken ?? junk(bytes, k)
    note(bytes, base, w, Math.max(w.open - base + 1, 0), q)
    if (w.lf < 0) {
      w.broken = reason
      continue
    }
    bad.push({ start: w.start, stop: w.lf + 1, reason })
    w.broken = undefined
    end = w.lf + 1
    w.start = end
    w.fieldStart = true
    if (o.first || w.lf < base) return { end, safe: end, bad }
    i = w.lf + 1 - base
  }
}

/** The end of the last whole record in `bytes` (just past its line end), or -1: `walk` from a record's start. */
export function boundary(bytes: Uint8Array, delimiter: number): number {
  return walk(bytes, 0, fresh(0), delimiter).end
}

/** What is left at the end of the file that is not a whole record. */
interface Tail {
  /** `line`: a last line with no line end yet. `quote`: a quoted field that opened before the last line never closes. */
  tail: "line" | "quote"
  /** Where that quote opened. */
  open: number
  blank: boolean
}

function tail(w: Walk, bytes: Uint8Array | undefined): Tail {
  const blank = bytes !== undefined && !w.quoted && lenient.decode(bytes).trim() === ""
  return { tail: w.quoted && w.lf >= 0 ? "quote" : "line", open: w.open, blank }
}

/**
 * Where a region read from `offset` (a record's start) is cut: after its last whole record, with the malformed
 * ones among them; or, at the end of the file, what is left when it is not a whole record.
 */
function cut(offset: number, delimiter: number) {
  return (read: Uint8Array, eof: boolean): { bytes: Uint8Array; bad: Bad[] } | Tail | undefined => {
    const w = fresh(offset)
    const { end, bad } = walk(read, offset, w, delimiter, { eof })
    if (end > offset) return { bytes: read.subarray(0, end - offset), bad }
    return eof ? tail(w, read) : undefined
  }
}

/** Walks past the record at `offset`, too long to hold, `step` bytes at a time: where it ends, and why if it is broken. */
async function skip(
  handle: Bun.BunFile,
  offset: number,
  size: number,
  step: number,
  delimiter: number,
): Promise<{ end: number; reason: string | undefined } | Tail> {
  const w = fresh(offset)
  let at = offset
  let want = step
  for (;;) {
    const read = new Uint8Array(await handle.slice(at, Math.min(size, at + want)).arrayBuffer())
    const eof = at + read.length >= size
    const r = walk(read, at, w, delimiter, { first: true, eof })
    if (r.end >= 0) return { end: r.end, reason: r.bad[0]?.reason }
    if (eof) return tail(w, undefined)
    // a piece that decided nothing (a quote, then only spaces) is read again, longer
    want = r.safe > at ? step : want * 2
    at = r.safe
  }
}

/** The records of `bytes` (whole records at file offset `base`) that are not valid UTF-8. */
function unreadable(bytes: Uint8Array, base: number, delimiter: number): Bad[] {
  const out: Bad[] = []
  for (let s = 0; s < bytes.length;) {
    const { end } = walk(bytes.subarray(s), base + s, fresh(base + s), delimiter, { first: true, eof: true })
    const e = end < 0 ? bytes.length : end - base
    try {
      decoder.decode(bytes.subarray(s, e))
    } catch {
      out.push({ start: base + s, stop: base + e, reason: UTF8 })
    }
    s = e
  }
  return out
}

const UTF8 = "not valid UTF-8: the file must be UTF-8 text (convert it, e.g. with iconv)"

const blank = (fields: string[]) => fields.length === 1 && fields[0] === ""

function lines(fields: string[]): number {
  let n = 1
  for (const f of fields) {
    if (f.length < 1 || !f.includes("\n")) continue
    for (let i = f.indexOf("\n"); i >= 0; i = f.indexOf("\n", i + 1)) n++
  }
  return n
}

function header(fields: string[], file: string): string[] {
  const names = fields.map((f, i) => f.trim() || `column_${i + 1}`)
  const seen = new Map<string, number>()
  for (const [i, name] of names.entries()) {
    const first = seen.get(name)
    if (first !== undefined)
      throw new SourceError(
        `${file}: the header names "${name}" twice (columns ${first + 1} and ${i + 1})`,
        "Rename one of the columns; every field of a row needs its own name.",
      )
    seen.set(name, i)
  }
  return names
}

function excerpt(fields: string[], delimiter: string): string {
  return fields.join(delimiter).slice(0, 200)
}

/**
 * The id field names no column of the header. When the header's names hold another delimiter (the most often,
 * if several), the file is most likely split by it: the hint says how to choose it.
 */
function noColumn(r: Reading, names: string[]): SourceError {
  const message = `${r.file}: no "${r.id}" column for the id field; the header has ${names.join(", ")}`
  const fix = "id to one of those columns, or leave it out to key rows by their number."
  const text = names.join("")
  const other = DELIMITERS.filter((d) => d !== r.delimiter)
    .map((d) => ({ d, n: text.split(d).length - 1 }))
    .filter((c) => c.n > 0)
    .sort((x, y) => y.n - x.n)[0]?.d
  if (!other) return new SourceError(message, `Set ${fix}`)
  const d = JSON.stringify(other)
  return new SourceError(
    message,
    `The header looks separated by ${d}: set delimiter = ${d} in [source] (or pass --delimiter ${d}). Otherwise set ${fix}`,
  )
}

/** What reading one file needs besides its position. */
interface Reading {
  file: string
  delimiter: Delimiter
  id: string | undefined
  rows: SourceRow[]
  problems: SourceProblem[]
}

/** Parses whole, well-quoted records (papaparse) into rows and problems, moving `at` past them. */
function records(text: string, at: Position, r: Reading): void {
  const parsed = Papa.parse<string[]>(text, {
    delimiter: r.delimiter,
    newline: at.newline,
    quoteChar: '"',
    header: false,
    skipEmptyLines: false,
  })
  const records = parsed.data
  // text ending in a newline leaves one empty record after it, which is no line of the file
  if (text.endsWith("\n") && records.length > 0 && blank(records.at(-1)!)) records.pop()
  const broken = new Map<number, string>()
  for (const e of parsed.errors) if (e.row !== undefined && !broken.has(e.row)) broken.set(e.row, e.message)
  // without a quote in the text no field holds a newline: every record is one line
  const multiline = text.includes('"')
  for (let i = 0; i < records.length; i++) {
    const fields = records[i]!
    const line = at.line + 1
    at.line += multiline ? lines(fields) : 1
    if (blank(fields)) continue
    if (at.header.length === 0) {
      at.header = header(fields, r.file)
      at.delimiter = r.delimiter
      if (r.id !== undefined && !at.header.includes(r.id)) throw noColumn(r, at.header)
      continue
    }
    at.record++
    const reason = broken.get(i)
    const problem = (why: string) =>
      r.problems.push({ line, reason: why, excerpt: excerpt(fields, r.delimiter) })
    if (reason) {
      problem(`malformed quotes: ${reason}`)
      continue
    }
    if (fields.length !== at.header.length) {
      problem(`has ${fields.length} fields; the header has ${at.header.length}`)
      continue
    }
    const data: Record<string, string> = {}
    for (let f = 0; f < fields.length; f++) data[at.header[f]!] = fields[f]!
    if (r.id === undefined) {
      r.rows.push({ key: String(at.record), line, data })
      continue
    }
    const key = data[r.id] ?? ""
    if (key === "") {
      problem(`the "${r.id}" field is empty`)
      continue
    }
    r.rows.push({ key, line, id: key, data })
  }
}

/** Reports a malformed record, `lines` lines long, as one problem; the header cannot be one. */
function malformed(at: Position, r: Reading, reason: string, text: string, lines: number): void {
  const line = at.line + 1
  at.line += lines
  if (at.header.length === 0)
    throw new SourceError(
      `${r.file}:${line}: the header row cannot be read: ${reason}`,
      "Fix the header (the first line): it names the columns of every row.",
    )
  at.record++
  r.problems.push({ line, reason, excerpt: text })
}

const count = (bytes: Uint8Array): number => {
  let n = 0
  for (let i = bytes.indexOf(LF); i >= 0; i = bytes.indexOf(LF, i + 1)) n++
  return n
}

/**
 * One region of whole records: its well-formed stretches go to papaparse, each malformed record (`bad`, and any
 * record that is not valid UTF-8) is one problem.
 */
function parse(bytes: Uint8Array, bad: Bad[], at: Position, r: Reading, sep: number): void {
  const base = at.offset
  // a BOM is not part of the first field's name
  const from = base === 0 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? 3 : 0
  if (base === 0) {
    const lf = bytes.indexOf(LF)
    at.newline = lf > 0 && bytes[lf - 1] === CR ? "\r\n" : "\n"
  }
  let text: string | undefined
  try {
    text = decoder.decode(bytes.subarray(from))
  } catch {
    const seen = new Set(bad.map((b) => b.start))
    bad = [...bad, ...unreadable(bytes, base, sep).filter((b) => !seen.has(b.start))]
    bad.sort((a, b) => a.start - b.start)
  }
  if (text !== undefined && bad.length === 0) return records(text, at, r)
  let cursor = from
  for (const b of bad) {
    const start = b.start - base
    if (start > cursor) records(decoder.decode(bytes.subarray(cursor, start)), at, r)
    cursor = b.stop - base
    const record = bytes.subarray(start, cursor)
    const first = lenient.decode(record.subarray(0, 200)).split("\n")[0]!.replace(/\r$/, "")
    malformed(at, r, b.reason, first, count(record))
  }
  if (cursor < bytes.length) records(decoder.decode(bytes.subarray(cursor)), at, r)
}

/** How much of a file's start is read to find its header line, when the delimiter is sniffed. */
const SNIFF_BYTES = 1 << 16

/**
 * The delimiter a header line is written with: of `,` `;` tab `|`, the one that splits its first line (outside
 * quotes) into the most fields; a tie goes to `fallback` (the format's own), then to the earlier in that list.
 */
export function likely(text: string, fallback: Delimiter): Delimiter {
  const fields: Record<Delimiter, number> = { ",": 1, ";": 1, "\t": 1, "|": 1 }
  let quoted = false
  // blank lines before the header are skipped, as the reader skips them
  for (const c of text.replace(/^[\ufeff\r\n]+/, "")) {
    if (c === '"') quoted = !quoted
    else if (quoted) continue
    else if (c === "\n") break
    else if (c in fields) fields[c as Delimiter]++
  }
  let best = fallback
  for (const d of DELIMITERS) if (fields[d] > fields[best]) best = d
  return best
}

/** The delimiter of a file's header line, sniffed from the start of the file (once per read from the top). */
async function sniff(handle: Bun.BunFile, fallback: Delimiter): Promise<Delimiter> {
  return likely(lenient.decode(await handle.slice(0, SNIFF_BYTES).arrayBuffer()), fallback)
}

function make(name: string, extensions: string[], fallback: Delimiter) {
  return defineSource({
    name,
    extensions,
    options: v.object({
      /** The field separator; without one it is sniffed from the header line, the format's own on a tie. */
      delimiter: v.optional(v.picklist(DELIMITERS, 'must be one of ",", ";", "\\t" (tab) or "|"')),
      /** Bytes read (and committed) per batch; a batch always ends between records. At most max_line_bytes. */
      chunk_bytes: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1)), REGION),
      /** The longest record read, in bytes with its line end; a longer one is a problem row, read past without being held. */
      max_line_bytes: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1)), MAX_RECORD),
    }),
    async *read(file, options, checkpoint, signal) {
      const hasher = new Bun.CryptoHasher("sha256")
      const start = position(checkpoint)
      if (start) await verify(file, start, hasher)
      const handle = await open(file)
      const size = handle.size
      const at: Position = start ?? { offset: 0, line: 0, record: 0, sha256: "", header: [], newline: "\n" }
      // a header already read keeps the delimiter it was read with; before it, the header line tells
      const known = at.header.length > 0
      const delimiter =
        options.delimiter ?? (known ? (at.delimiter ?? fallback) : await sniff(handle, fallback))
      // said once, with the batch that reads the header
      let sniffed =
        options.delimiter === undefined && !known && delimiter !== fallback
          ? `${file}: read with delimiter ${JSON.stringify(delimiter)}, sniffed from its header line (set delimiter in [source] to choose)`
          : undefined
      const chunk = options.chunk_bytes ?? REGION
      const max = options.max_line_bytes ?? MAX_RECORD
      const sep = delimiter.charCodeAt(0)
      const follow = options.follow === true
      const here = () => {
        at.sha256 = hasher.copy().digest("hex")
        return checkpointOf(at)
      }
      const reading = (): Reading => ({ file, delimiter, id: options.id, rows: [], problems: [] })
      let yielded = false
      for (;;) {
        if (signal?.aborted) return
        let next = await region(handle, at.offset, chunk, max, cut(at.offset, sep))
        if (next && "long" in next) {
          const skipped = await skip(handle, at.offset, size, chunk, sep)
          if ("tail" in skipped) next = skipped
          else {
            const r = reading()
            const length = skipped.end - at.offset
            const reason =
              skipped.reason ??
              `the record is ${length} bytes, longer than max_line_bytes (${max}); raise max_line_bytes to read it`
            const text = await head(handle, at.offset)
            malformed(at, r, reason, text, await pass(handle, at.offset, skipped.end, hasher))
            at.offset = skipped.end
            yielded = true
            yield { rows: r.rows, problems: r.problems, checkpoint: here() }
            continue
          }
        }
        if (!next) break
        if ("tail" in next) {
          // a writer may still be on it: the checkpoint stays before it, and a later read takes it whole
          if (follow || next.blank) break
          if (next.tail === "quote") {
            const opened = at.line + 1 + (await pass(handle, at.offset, next.open))
            throw new SourceError(
              `${file}:${opened}: a quoted field opens here and never closes: the last ${size - at.offset} bytes ` +
                `of the file (from line ${at.line + 1}) cannot be read`,
              `Close the quote (a quote inside a quoted field is written twice: ""), then run again: the rows ` +
                `before line ${at.line + 1} are kept, and reading goes on from there.`,
            )
          }
          yielded = true
          yield { rows: [], problems: [], checkpoint: here(), warnings: [unfinished(file, at.line + 1)] }
          return
        }
        const r = reading()
        parse(next.bytes, next.bad, at, r, sep)
        hasher.update(next.bytes)
        at.offset += next.bytes.length
        yielded = true
        const warnings = sniffed && at.header.length > 0 ? [sniffed] : undefined
        if (warnings) sniffed = undefined
        yield { rows: r.rows, problems: r.problems, checkpoint: here(), ...(warnings ? { warnings } : {}) }
      }
      if (!yielded) yield { rows: [], problems: [], checkpoint: here() }
    },
  })
}

export const csv = make("csv", [".csv"], ",")
export const tsv = make("tsv", [".tsv", ".tab"], "\t")
