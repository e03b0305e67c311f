/**
 * Parquet: read one row group at a time, so memory follows the row-group size and not the file size. A
 * checkpoint is a row group and the rows of it already yielded, plus a SHA-256 of the raw bytes of every
 * row group read so far, so a resumed read can tell whether the part already ingested changed.
 */
import * as v from "valibot"
import {
  parquetMetadataAsync,
  parquetReadObjects,
  parquetSchema,
  type AsyncBuffer,
  type FileMetaData,
  type RowGroup,
} from "hyparquet"
import { compressors } from "hyparquet-compressors"
import { defineSource, type SourceProblem, type SourceRow } from "../plugins/api/define.ts"
import { SourceChangedError, SourceError } from "../plugins/api/errors.ts"
import { check } from "./prefix.ts"

const BATCH_ROWS = 10_000
const MB = 1 << 20
/** A decoded row group takes about this many times its uncompressed size in memory. */
const MEMORY_FACTOR = 4
const MEMORY_LIMIT = 300 * MB
const decoder = new TextDecoder()

interface Position {
  /** Row-group index. */
  group: number
  /** Rows of that group already yielded; 0 means the group has not started. */
  row: number
  sha256: string
}

/** A row group as the memory warning sees it: its row count and the uncompressed bytes of the columns read. */
export interface GroupSize {
  rows: number
  bytes: number
}

/**
 * The warning for a file whose largest row group needs more than 300 MB to decode (about four times its
 * uncompressed size), or undefined when every group is small enough.
 */
export function memoryWarning(file: string, groups: readonly GroupSize[]): string | undefined {
  let largest: GroupSize | undefined
  for (const g of groups) if (!largest || g.bytes > largest.bytes) largest = g
  if (!largest || largest.bytes * MEMORY_FACTOR <= MEMORY_LIMIT) return undefined
  const mb = (bytes: number) => Math.ceil(bytes / MB).toLocaleString("en-US")
  return (
    `${file}: its largest row group holds ${largest.rows.toLocaleString("en-US")} rows and ` +
    `${mb(largest.bytes)} MB uncompressed, so reading it takes about ${mb(largest.bytes * MEMORY_FACTOR)} MB ` +
    `of memory. Rewrite the file with smaller row groups (e.g. 10,000 rows) to read it in less.`
  )
}

function position(checkpoint: Record<string, unknown> | undefined): Position | undefined {
  if (!checkpoint) return undefined
  const { group, row, sha256 } = checkpoint
  if (typeof group !== "number" || typeof row !== "number" || typeof sha256 !== "string") return undefined
  if (!Number.isInteger(group) || !Number.isInteger(row) || group < 0 || row < 0) return undefined
  return { group, row, sha256 }
}

function reason(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

const NOT_PARQUET_HINT =
  "Check that the file is Parquet (it ends with the bytes PAR1), or set source.format to the format it is in."
const DECODE_HINT =
  "spool reads Parquet column chunks that are UNCOMPRESSED or SNAPPY-compressed; rewrite the file with one of " +
  "those (e.g. pyarrow: write_table(..., compression='snappy'))."

/** The file as hyparquet reads it: byte ranges on demand, never the whole file. */
async function open(file: string): Promise<AsyncBuffer> {
  check(file)
  const handle = Bun.file(file)
  const size = handle.size
  return { byteLength: size, slice: (start, end) => handle.slice(start, end ?? size).arrayBuffer() }
}

async function metadataOf(file: string, buffer: AsyncBuffer): Promise<FileMetaData> {
  // hyparquet fails on a file shorter than its footer with a bare RangeError, so say it here.
  if (buffer.byteLength < 12) {
    throw new SourceError(
      `cannot read ${file} as Parquet: the file is too short (${buffer.byteLength} bytes)`,
      NOT_PARQUET_HINT,
    )
  }
  try {
    const metadata = await parquetMetadataAsync(buffer)
    parquetSchema(metadata) // a schema hyparquet cannot build fails here, before any row is read
    unreadableCodec(file, metadata)
    return metadata
  } catch (err) {
    if (err instanceof SourceError) throw err
    throw new SourceError(`cannot read ${file} as Parquet: ${reason(err)}`, NOT_PARQUET_HINT, { cause: err })
  }
}

/**
 * The codecs spool decompresses: hyparquet's own (SNAPPY) and hyparquet-compressors' (GZIP, BROTLI, ZSTD, LZ4 and
 * LZ4_RAW), the defaults of pyarrow, polars, DuckDB, Spark and parquet-java. LZO, which none of them write by default,
 * is not among them.
 */
export const CODECS = [...new Set(["UNCOMPRESSED", "SNAPPY", ...Object.keys(compressors)])]

/** A column chunk in a codec spool cannot decompress: named with its file, column and row group, before any row is read. */
function unreadableCodec(file: string, metadata: FileMetaData): void {
  for (const [g, group] of metadata.row_groups.entries())
    for (const chunk of group.columns) {
      const codec = chunk.meta_data?.codec
      if (codec === undefined || CODECS.includes(codec)) continue
      throw new SourceError(
        `cannot read ${file}: column "${chunk.meta_data?.path_in_schema.join(".")}" of row group ${g} is compressed with ${codec}, which spool cannot decompress`,
        `Write the file again with one of ${CODECS.join(", ")} (e.g. pyarrow's default, SNAPPY, or compression="zstd").`,
      )
    }
}

/** The byte range of a row group: from the first byte of its first column chunk to the end of its last. */
function byteRange(group: RowGroup): { start: number; end: number } {
  let start = Infinity
  let end = 0
  for (const chunk of group.columns) {
    const meta = chunk.meta_data
    if (!meta) continue
    const offset = Number(meta.dictionary_page_offset || meta.data_page_offset)
    start = Math.min(start, offset)
    end = Math.max(end, offset + Number(meta.total_compressed_size))
  }
  return start < end ? { start, end } : { start: 0, end: 0 }
}

/** Streams a row group's raw bytes into the hash. */
async function hashGroup(file: string, group: RowGroup, hasher: Bun.CryptoHasher): Promise<void> {
  const { start, end } = byteRange(group)
  if (end > start) for await (const chunk of Bun.file(file).slice(start, end).stream()) hasher.update(chunk)
}

/** Re-hashes the row groups the checkpoint covers and checks they are what was ingested. */
async function verify(file: string, metadata: FileMetaData, at: Position, hasher: Bun.CryptoHasher) {
  const covered = at.group + (at.row > 0 ? 1 : 0)
  const changed = () =>
    new SourceChangedError(
      `${file} changed since it was ingested: its first ${covered} row group(s), already read, are not the same`,
      "Restore the file, or run again with --reingest to read it from the start (finished items are kept).",
    )
  const groups = metadata.row_groups
  if (covered > groups.length) throw changed()
  if (at.row > 0 && Number(groups[at.group]?.num_rows ?? 0) < at.row) throw changed()
  for (const group of groups.slice(0, covered)) await hashGroup(file, group, hasher)
  if (hasher.copy().digest("hex") !== at.sha256) throw changed()
  return covered
}

function idOf(value: unknown): string | undefined {
  if (typeof value === "string") return value
  if (typeof value === "number" && Number.isFinite(value)) return String(value)
  if (typeof value === "bigint") return String(value)
  return undefined
}

/** A decoded Parquet value as JSON can hold it. */
function jsonSafe(value: unknown): unknown {
  if (value === undefined || value === null) return null
  switch (typeof value) {
    case "string":
    case "boolean":
      return value
    case "number":
      return Number.isFinite(value) ? (Object.is(value, -0) ? 0 : value) : null
    case "bigint": {
      const n = Number(value)
      return Number.isSafeInteger(n) ? n : String(value)
    }
    case "object":
      break
    default:
      return String(value)
  }
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : value.toISOString()
  if (value instanceof Uint8Array) return decoder.decode(value)
  if (Array.isArray(value)) return value.map(jsonSafe)
  if (ArrayBuffer.isView(value) && !(value instanceof DataView)) {
    return Array.from(value as unknown as ArrayLike<unknown>, jsonSafe)
  }
  const out: Record<string, unknown> = {}
  for (const [key, field] of Object.entries(value)) out[key] = jsonSafe(field)
  return out
}

/** Turns one decoded row into a source row, or says why it is not one. */
function toRow(
  value: Record<string, unknown>,
  line: number,
  id: string | undefined,
): SourceRow | SourceProblem {
  const data = jsonSafe(value) as Record<string, unknown>
  const raw = JSON.stringify(data)
  if (id === undefined) return { key: String(line), line, data, raw }
  const problem = (why: string): SourceProblem => ({ line, reason: why, excerpt: raw.slice(0, 200) })
  if (!(id in value) || value[id] === undefined) return problem(`no "${id}" field (the id field)`)
  if (value[id] === null) return problem(`the "${id}" field (the id field) is null`)
  const key = idOf(value[id])
  if (key === undefined) return problem(`the "${id}" field is not a string or number`)
  return { key, line, id: key, data, raw }
}

/** The columns to read: all (undefined), or the named ones plus the id field; refuses names the file lacks. */
function projection(
  file: string,
  metadata: FileMetaData,
  columns: string[] | undefined,
  id: string | undefined,
) {
  const available = parquetSchema(metadata).children.map((c) => c.element.name)
  const missing = (name: string, what: string) =>
    new SourceError(
      `${file} has no column "${name}" (${what}); its columns are: ${available.join(", ")}`,
      "Name columns as the file's schema does; they are case-sensitive.",
    )
  if (id !== undefined && !available.includes(id)) throw missing(id, "the id field")
  if (!columns) return undefined
  for (const name of columns) if (!available.includes(name)) throw missing(name, "in source.columns")
  return id === undefined || columns.includes(id) ? [...columns] : [...columns, id]
}

/** Uncompressed size of each row group's projected columns, for the memory warning. */
function sizes(metadata: FileMetaData, columns: string[] | undefined): GroupSize[] {
  return metadata.row_groups.map((group) => {
    let bytes = 0
    for (const chunk of group.columns) {
      const meta = chunk.meta_data
      if (!meta || (columns && !columns.includes(meta.path_in_schema[0] ?? ""))) continue
      bytes += Number(meta.total_uncompressed_size)
    }
    return { rows: Number(group.num_rows), bytes }
  })
}

export default defineSource({
  name: "parquet",
  extensions: [".parquet"],
  options: v.object({
    /** Columns to read (the id field is always read); default: all. */
    columns: v.optional(v.array(v.pipe(v.string(), v.nonEmpty()))),
    /** Most rows per batch; a row group is yielded in slices of this many rows. */
    batch_rows: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1)), BATCH_ROWS),
  }),
  async *read(file, options, checkpoint, signal) {
    const buffer = await open(file)
    let metadata: FileMetaData
    try {
      metadata = await metadataOf(file, buffer)
    } catch (err) {
      // followed (`spool watch`), a file with no footer yet is still being written: it is read at a later pass
      if (options.follow) return
      throw err
    }
    const columns = projection(file, metadata, options.columns, options.id)
    const groups = metadata.row_groups
    const hasher = new Bun.CryptoHasher("sha256")
    const start = position(checkpoint)
    let hashed = start ? await verify(file, metadata, start, hasher) : 0
    const batchRows = options.batch_rows ?? BATCH_ROWS
    const warning = memoryWarning(file, sizes(metadata, columns))
    let warnings = warning ? [warning] : undefined
    let line = 0
    for (const group of groups.slice(0, start?.group ?? 0)) line += Number(group.num_rows)
    let yielded = false

    for (let g = start?.group ?? 0; g < groups.length; g++) {
      if (signal?.aborted) return
      const group = groups[g]!
      const groupRows = Number(group.num_rows)
      const skip = g === start?.group ? start.row : 0
      if (g >= hashed) {
        await hashGroup(file, group, hasher)
        hashed = g + 1
      }
      let decoded: Record<string, unknown>[] = []
      if (skip < groupRows) {
        try {
          decoded = await parquetReadObjects({
            file: buffer,
            metadata,
            rowStart: line + skip,
            rowEnd: line + groupRows,
            compressors,
            ...(columns ? { columns } : {}),
          })
        } catch (err) {
          throw new SourceError(
            `cannot decode ${file} (row group ${g}, rows ${line + 1} to ${line + groupRows}): ${reason(err)}`,
            DECODE_HINT,
            { cause: err },
          )
        }
        if (decoded.length !== groupRows - skip) {
          throw new SourceError(
            `cannot decode ${file} (row group ${g}): expected ${groupRows - skip} rows, got ${decoded.length}`,
            DECODE_HINT,
          )
        }
      }
      for (let from = 0; from < decoded.length; from += batchRows) {
        if (signal?.aborted) return
        const slice = decoded.slice(from, from + batchRows)
        const rows: SourceRow[] = []
        const problems: SourceProblem[] = []
        slice.forEach((value, i) => {
          const parsed = toRow(value, line + skip + from + i + 1, options.id)
          if ("key" in parsed) rows.push(parsed)
          else problems.push(parsed)
        })
        const done = skip + from + slice.length
        const at = done >= groupRows ? { group: g + 1, row: 0 } : { group: g, row: done }
        yielded = true
        yield {
          rows,
          problems,
          checkpoint: { ...at, sha256: hasher.copy().digest("hex") },
          ...(warnings && { warnings }),
        }
        warnings = undefined
      }
      line += groupRows
    }
    if (!yielded && !signal?.aborted) {
      // Nothing left to read (no rows, or resumed at the end): every group is hashed by now.
      yield {
        rows: [],
        problems: [],
        checkpoint: { group: groups.length, row: 0, sha256: hasher.copy().digest("hex") },
        ...(warnings && { warnings }),
      }
    }
  },
})
