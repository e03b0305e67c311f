/**
 * Parquet inputs in the codecs other tools write by default (issue 17): ZSTD (DuckDB, polars), SNAPPY (pyarrow,
 * Spark), GZIP, BROTLI, LZ4 (Hadoop framing) and LZ4_RAW. The files are written by hyparquet-writer with real
 * compressors (node:zlib, Bun's zstd, LZ4 blocks) and read back by spool's source, row for row.
 */
import { describe, expect, test } from "bun:test"
import { readFileSync, writeFileSync } from "node:fs"
import { brotliCompressSync, gzipSync } from "node:zlib"
import { parquetWriteFile, type ColumnSource } from "hyparquet-writer"
import { compressors as decompressors } from "hyparquet-compressors"
import parquet, { CODECS } from "../../src/sources/parquet.ts"
import { SourceError } from "../../src/plugins/api/errors.ts"
import type { SourceRow } from "../../src/plugins/api/define.ts"
import { startFake } from "../lib/fake-openai.ts"
import { spool } from "../lib/spool.ts"
import { tmpdir } from "../lib/tmp.ts"

/** An LZ4 block of literals only: valid LZ4 (the last sequence of a block is literals), what any decoder reads. */
function lz4Block(input: Uint8Array): Uint8Array {
  const n = input.length
  const extra: number[] = []
  if (n >= 15) {
    let rest = n - 15
    while (rest >= 255) {
      extra.push(255)
      rest -= 255
    }
    extra.push(rest)
  }
  const out = new Uint8Array(1 + extra.length + n)
  out[0] = Math.min(n, 15) << 4
  out.set(extra, 1)
  out.set(input, 1 + extra.length)
  return out
}

/** Hadoop's LZ4 framing, as parquet-java writes LZ4: sizes (big-endian) before the block. */
function lz4Hadoop(input: Uint8Array): Uint8Array {
  const block = lz4Block(input)
  const out = new Uint8Array(8 + block.length)
  const view = new DataView(out.buffer)
  view.setUint32(0, input.length)
  view.setUint32(4, block.length)
  out.set(block, 8)
  return out
}

const COMPRESSORS = {
  GZIP: (b: Uint8Array) => new Uint8Array(gzipSync(b)),
  BROTLI: (b: Uint8Array) => new Uint8Array(brotliCompressSync(b)),
  ZSTD: (b: Uint8Array) => new Uint8Array(Bun.zstdCompressSync(b)),
  LZ4: lz4Hadoop,
  LZ4_RAW: lz4Block,
}

const N = 12_000
const columnData = (): ColumnSource[] => [
  { name: "id", type: "STRING", data: Array.from({ length: N }, (_, i) => `t${i + 1}`) },
  {
    name: "text",
    type: "STRING",
    data: Array.from({ length: N }, (_, i) => `ticket ${i + 1}: ${"the printer is on fire ".repeat(i % 7)}`),
  },
  { name: "n", type: "INT64", data: Array.from({ length: N }, (_, i) => BigInt(i * 1000)) },
  { name: "score", type: "DOUBLE", data: Array.from({ length: N }, (_, i) => (i % 13 === 0 ? null : i / 8)) },
]

function write(file: string, codec: string): string {
  parquetWriteFile({
    filename: file,
    columnData: columnData(),
    rowGroupSize: 5_000,
    codec: codec as "SNAPPY",
    compressors: COMPRESSORS,
  })
  return file
}

async function rowsOf(file: string): Promise<SourceRow[]> {
  const out: SourceRow[] = []
  for await (const b of parquet.read(file, { id: "id", batch_rows: 4_000 }, undefined)) out.push(...b.rows)
  return out
}

/** The codec of every column chunk of a file, read from its footer by the same reader spool uses. */
async function codecsOf(file: string): Promise<string[]> {
  const { parquetMetadata } = await import("hyparquet")
  const bytes = readFileSync(file)
  const meta = parquetMetadata(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength))
  return [...new Set(meta.row_groups.flatMap((g) => g.columns.map((c) => c.meta_data!.codec)))]
}

describe("Parquet inputs in every common codec", () => {
  test("the codecs read are the ones other tools write by default", () => {
    expect([...CODECS].sort()).toEqual(["BROTLI", "GZIP", "LZ4", "LZ4_RAW", "SNAPPY", "UNCOMPRESSED", "ZSTD"])
    expect(Object.keys(decompressors).sort()).toEqual(["BROTLI", "GZIP", "LZ4", "LZ4_RAW", "SNAPPY", "ZSTD"])
  })

  test("ZSTD, GZIP, BROTLI, LZ4 and LZ4_RAW files give exactly the rows of the uncompressed one", async () => {
    await using tmp = await tmpdir()
    const plain = await rowsOf(write(tmp.join("plain.parquet"), "UNCOMPRESSED"))
    expect(plain).toHaveLength(N)
    expect(plain[N - 1]!.data).toEqual({
      id: `t${N}`,
      text: `ticket ${N}: ${"the printer is on fire ".repeat((N - 1) % 7)}`,
      n: (N - 1) * 1000,
      score: null, // every 13th is null: 11,999 is
    })
    expect(plain[N - 2]!.data).toMatchObject({ n: (N - 2) * 1000, score: (N - 2) / 8 })
    for (const codec of ["SNAPPY", "ZSTD", "GZIP", "BROTLI", "LZ4", "LZ4_RAW"]) {
      const file = write(tmp.join(`${codec}.parquet`), codec)
      expect(await codecsOf(file)).toEqual([codec])
      const rows = await rowsOf(file)
      expect(rows.length).toBe(N)
      expect(rows.map((r) => [r.key, r.line, r.raw])).toEqual(plain.map((r) => [r.key, r.line, r.raw]))
    }
  })

  test("a codec spool cannot decompress (LZO) is refused before any row, naming the codec, the column and the file", async () => {
    await using tmp = await tmpdir()
    const file = tmp.join("old.parquet")
    // a file written in LZO: the same bytes as an uncompressed one but for the codec its footer names, which is all
    // spool looks at before refusing
    parquetWriteFile({
      filename: file,
      columnData: [{ name: "id", type: "STRING", data: ["a", "b"] }],
      codec: "LZO",
      compressors: { LZO: (b: Uint8Array) => b },
    })
    expect(await codecsOf(file)).toEqual(["LZO"])
    const err = await rowsOf(file).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(SourceError)
    expect((err as SourceError).message).toBe(
      `cannot read ${file}: column "id" of row group 0 is compressed with LZO, which spool cannot decompress`,
    )
    expect((err as SourceError).hint).toContain("UNCOMPRESSED, SNAPPY, GZIP, BROTLI, ZSTD, LZ4, LZ4_RAW")
  })

  test("dist/spool runs a job over a ZSTD file: every row sent once and completed", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: "sk-codecs-0123" })
    write(tmp.join("tickets.parquet"), "ZSTD")
    writeFileSync(
      tmp.join("job.toml"),
      `name = "zstd"\n[source]\npath = "tickets.parquet"\nid = "id"\n[provider]\nmodel = "m"\nbase_url = "${fake.url}"\n[request]\nprompt = "{{text}}"\n[limits]\nconcurrency = 32\n`,
    )
    const ran = await spool(["run", "job.toml", "--home", tmp.join("home")], {
      cwd: tmp.path,
      env: { OPENAI_API_KEY: "sk-codecs-0123" },
    })
    expect(ran.code).toBe(0)
    expect(ran.stderr).toContain(`run "zstd": ${N} completed, 0 failed of ${N}`)
    expect(fake.paid.size).toBe(N)
    expect([...fake.paid.values()].every((n) => n === 1)).toBe(true)
  }, 60_000)
})
