import { describe, expect, test } from "bun:test"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import * as v from "valibot"
import { parquetWriteFile, type ColumnSource } from "hyparquet-writer"
import parquet, { memoryWarning } from "../../src/sources/parquet.ts"
import { SourceChangedError, SourceError } from "../../src/plugins/api/errors.ts"
import type { Checkpoint, SourceBatch } from "../../src/plugins/api/define.ts"
import { testSource } from "../lib/source-contract.ts"
import { tmpdir } from "../lib/tmp.ts"

/** Writes the contract's rows (id, text, n) as Parquet with several row groups. */
function writeRows(file: string, rows: Record<string, unknown>[], rowGroupSize = 1500): string {
  parquetWriteFile({
    filename: file,
    rowGroupSize,
    columnData: [
      { name: "id", type: "STRING", data: rows.map((r) => r.id ?? null) },
      { name: "text", type: "STRING", data: rows.map((r) => r.text ?? null) },
      { name: "n", type: "INT32", data: rows.map((r) => r.n ?? null) },
    ],
  })
  return file
}

function write(file: string, columnData: ColumnSource[], rowGroupSize?: number): string {
  parquetWriteFile({ filename: file, columnData, ...(rowGroupSize ? { rowGroupSize } : {}) })
  return file
}

testSource(
  parquet,
  {
    async write(dir, rows) {
      return writeRows(join(dir, "rows.parquet"), rows)
    },
    invalid: { batch_rows: 0 },
  },
  { batch_rows: 1000 },
)

async function read(
  file: string,
  options: { id?: string; columns?: string[]; batch_rows?: number } = {},
  checkpoint?: Checkpoint,
): Promise<SourceBatch[]> {
  const out: SourceBatch[] = []
  for await (const b of parquet.read(
    file,
    { ...options, batch_rows: options.batch_rows ?? 10_000 },
    checkpoint,
  ))
    out.push(b)
  return out
}

const ten = Array.from({ length: 10 }, (_, i) => ({ id: `r${i + 1}`, text: `row ${i + 1}`, n: i + 1 }))

describe("the parquet source", () => {
  test("keys rows by row number when there is no id field", async () => {
    await using tmp = await tmpdir()
    const file = writeRows(tmp.join("a.parquet"), ten.slice(0, 3), 2)
    const rows = (await read(file)).flatMap((b) => b.rows)
    expect(rows.map((r) => [r.key, r.line, r.id])).toEqual([
      ["1", 1, undefined],
      ["2", 2, undefined],
      ["3", 3, undefined],
    ])
    expect(rows[0]!.data).toEqual({ id: "r1", text: "row 1", n: 1 })
    expect(rows[0]!.raw).toBe('{"id":"r1","text":"row 1","n":1}')
  })

  test("keys rows by a string, INT32 or INT64 id field", async () => {
    await using tmp = await tmpdir()
    const file = write(tmp.join("a.parquet"), [
      { name: "s", type: "STRING", data: ["x", "y"] },
      { name: "i", type: "INT32", data: [7, 8] },
      { name: "l", type: "INT64", data: [9n, 2n ** 60n] },
    ])
    const keys = async (id: string) =>
      (await read(file, { id })).flatMap((b) => b.rows.map((r) => [r.key, r.id]))
    expect(await keys("s")).toEqual([
      ["x", "x"],
      ["y", "y"],
    ])
    expect(await keys("i")).toEqual([
      ["7", "7"],
      ["8", "8"],
    ])
    expect(await keys("l")).toEqual([
      ["9", "9"],
      ["1152921504606846976", "1152921504606846976"],
    ])
  })

  test("reads only the named columns, plus the id field", async () => {
    await using tmp = await tmpdir()
    const file = writeRows(tmp.join("a.parquet"), ten.slice(0, 2))
    const byId = (await read(file, { id: "id", columns: ["text"] })).flatMap((b) => b.rows)
    expect(byId.map((r) => r.data)).toEqual([
      { text: "row 1", id: "r1" },
      { text: "row 2", id: "r2" },
    ])
    const plain = (await read(file, { columns: ["n"] })).flatMap((b) => b.rows)
    expect(plain.map((r) => [r.key, r.data, r.raw])).toEqual([
      ["1", { n: 1 }, '{"n":1}'],
      ["2", { n: 2 }, '{"n":2}'],
    ])
  })

  test("a column the file does not have is a SourceError listing the ones it has", async () => {
    await using tmp = await tmpdir()
    const file = writeRows(tmp.join("a.parquet"), ten)
    const err = await read(file, { columns: ["text", "nope"] }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(SourceError)
    expect((err as Error).message).toBe(
      `${file} has no column "nope" (in source.columns); its columns are: id, text, n`,
    )
    const noId = await read(file, { id: "key" }).catch((e: unknown) => e)
    expect(noId).toBeInstanceOf(SourceError)
    expect((noId as Error).message).toBe(
      `${file} has no column "key" (the id field); its columns are: id, text, n`,
    )
  })

  test("a file that is not Parquet is a SourceError naming it, with hyparquet's reason", async () => {
    await using tmp = await tmpdir()
    const text = tmp.join("a.parquet")
    writeFileSync(text, '{"id":"a","text":"not parquet at all"}\n')
    const err = await read(text).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(SourceError)
    expect((err as Error).message).toBe(
      `cannot read ${text} as Parquet: parquet file invalid (footer != PAR1)`,
    )
    expect((err as SourceError).hint).toContain("PAR1")
    const short = tmp.join("b.parquet")
    writeFileSync(short, "PAR1")
    await expect(read(short)).rejects.toThrow(
      `cannot read ${short} as Parquet: the file is too short (4 bytes)`,
    )
    const empty = tmp.join("c.parquet")
    writeFileSync(empty, "")
    await expect(read(empty)).rejects.toThrow(SourceError)
  })

  test("a GZIP file, which hyparquet alone cannot decode, is read (parquet-codecs.test.ts has every codec)", async () => {
    await using tmp = await tmpdir()
    const file = tmp.join("a.parquet")
    parquetWriteFile({
      filename: file,
      codec: "GZIP",
      compressors: { GZIP: (bytes) => Bun.gzipSync(new Uint8Array(bytes)) },
      columnData: [{ name: "id", type: "STRING", data: ["a", "b"] }],
    })
    const rows = (await read(file)).flatMap((b) => b.rows)
    expect(rows.map((r) => r.data)).toEqual([{ id: "a" }, { id: "b" }])
  })

  test("a missing file is a SourceError naming it", async () => {
    await using tmp = await tmpdir()
    const file = tmp.join("nope.parquet")
    await expect(read(file)).rejects.toThrow(SourceError)
    await expect(read(file)).rejects.toThrow(`cannot read ${file}: no such file`)
  })

  test("makes values JSON-safe: INT64 to numbers (or strings past 2^53), dates to ISO text", async () => {
    await using tmp = await tmpdir()
    const file = write(tmp.join("a.parquet"), [
      { name: "big", type: "INT64", data: [1n, -42n, 2n ** 60n, null] },
      {
        name: "at",
        type: "TIMESTAMP",
        data: [new Date(0), null, null, new Date("2024-05-06T07:08:09.010Z")],
      },
      { name: "obj", type: "JSON", data: [{ a: [1, { b: "c" }] }, null, null, null] },
      { name: "f", type: "DOUBLE", data: [1.5, Number.NaN, -0, null] },
    ])
    const rows = (await read(file)).flatMap((b) => b.rows)
    expect(rows.map((r) => r.data)).toEqual([
      { big: 1, at: "1970-01-01T00:00:00.000Z", obj: { a: [1, { b: "c" }] }, f: 1.5 },
      { big: -42, at: null, obj: null, f: null },
      { big: "1152921504606846976", at: null, obj: null, f: 0 },
      { big: null, at: "2024-05-06T07:08:09.010Z", obj: null, f: null },
    ])
    expect(typeof rows[0]!.data.big).toBe("number")
    for (const r of rows) expect(JSON.parse(r.raw!)).toEqual(r.data)
  })

  test("a row whose id is null is a problem at its row number, and is skipped", async () => {
    await using tmp = await tmpdir()
    const rows = [
      { id: "a", text: "one", n: 1 },
      { id: "b", text: "two", n: 2 },
      { id: null, text: "three", n: 3 },
      { id: "d", text: "four", n: 4 },
    ]
    const file = writeRows(tmp.join("a.parquet"), rows, 2)
    const batches = await read(file, { id: "id" })
    expect(batches.flatMap((b) => b.rows).map((r) => [r.key, r.line])).toEqual([
      ["a", 1],
      ["b", 2],
      ["d", 4],
    ])
    expect(batches.flatMap((b) => b.problems)).toEqual([
      {
        line: 3,
        reason: 'the "id" field (the id field) is null',
        excerpt: '{"id":null,"text":"three","n":3}',
      },
    ])
  })

  test("a problem's excerpt is the first 200 characters of the row's JSON", async () => {
    await using tmp = await tmpdir()
    const long = "x".repeat(300)
    const file = writeRows(tmp.join("a.parquet"), [{ id: null, text: long, n: 1 }])
    const [batch] = await read(file, { id: "id" })
    expect(batch!.problems[0]!.excerpt).toBe(JSON.stringify({ id: null, text: long, n: 1 }).slice(0, 200))
  })

  test("yields each row group in slices of batch_rows, with (group, row) checkpoints", async () => {
    await using tmp = await tmpdir()
    const file = writeRows(tmp.join("a.parquet"), ten, 4)
    const batches = await read(file, { id: "id", batch_rows: 3 })
    expect(batches.map((b) => [b.rows.map((r) => r.line), b.checkpoint.group, b.checkpoint.row])).toEqual([
      [[1, 2, 3], 0, 3],
      [[4], 1, 0],
      [[5, 6, 7], 1, 3],
      [[8], 2, 0],
      [[9, 10], 3, 0],
    ])
    for (const b of batches) expect(b.checkpoint.sha256).toMatch(/^[0-9a-f]{64}$/)
    // the hash covers the groups read so far, so it changes only when a new group starts
    expect(batches[0]!.checkpoint.sha256).not.toBe(batches[2]!.checkpoint.sha256)
    expect(batches[1]!.checkpoint.sha256).toBe(batches[0]!.checkpoint.sha256)
    expect(batches[2]!.checkpoint.sha256).toBe(batches[3]!.checkpoint.sha256)
  })

  test("resuming mid-group yields exactly the rows after the checkpoint", async () => {
    await using tmp = await tmpdir()
    const file = writeRows(tmp.join("a.parquet"), ten, 4)
    const batches = await read(file, { id: "id", batch_rows: 3 })
    const mid = batches[2]!.checkpoint // group 1, row 3: rows 1..7 done
    const rest = await read(file, { id: "id", batch_rows: 3 }, mid)
    expect(rest.flatMap((b) => b.rows).map((r) => [r.key, r.line])).toEqual([
      ["r8", 8],
      ["r9", 9],
      ["r10", 10],
    ])
    expect(rest.map((b) => [b.checkpoint.group, b.checkpoint.row])).toEqual([
      [2, 0],
      [3, 0],
    ])
    expect(rest.at(-1)!.checkpoint).toEqual(batches.at(-1)!.checkpoint)
    // resuming at the end yields one empty batch with the same checkpoint
    const end = await read(file, { id: "id" }, batches.at(-1)!.checkpoint)
    expect(end).toEqual([{ rows: [], problems: [], checkpoint: batches.at(-1)!.checkpoint }])
  })

  test("refuses to resume when a row group already read changed, naming the file, but not for later ones", async () => {
    await using tmp = await tmpdir()
    const file = writeRows(tmp.join("a.parquet"), ten, 4)
    const batches = await read(file, { batch_rows: 3 })
    const mid = batches[2]!.checkpoint // group 1 partly read
    writeRows(
      file,
      ten.map((r, i) => (i === 9 ? { ...r, text: "edited" } : r)),
      4,
    ) // group 2 changes
    expect((await read(file, { batch_rows: 3 }, mid)).flatMap((b) => b.rows).map((r) => r.data.text)).toEqual(
      ["row 8", "row 9", "edited"],
    )
    writeRows(
      file,
      ten.map((r, i) => (i === 5 ? { ...r, text: "edited" } : r)),
      4,
    ) // group 1 changes
    const err = await read(file, { batch_rows: 3 }, mid).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(SourceChangedError)
    expect((err as Error).message).toStartWith(`${file} changed since it was ingested`)
    expect((err as SourceChangedError).hint).toBe(
      "Restore the file, or run again with --reingest to read it from the start (finished items are kept).",
    )
    writeRows(file, ten.slice(0, 4), 4) // shrank to one group
    await expect(read(file, { batch_rows: 3 }, mid)).rejects.toThrow(SourceChangedError)
  })

  test("an empty file yields one batch with no rows and a checkpoint", async () => {
    await using tmp = await tmpdir()
    const file = writeRows(tmp.join("a.parquet"), [])
    const batches = await read(file, { id: "id" })
    expect(batches).toEqual([
      {
        rows: [],
        problems: [],
        checkpoint: { group: 0, row: 0, sha256: new Bun.CryptoHasher("sha256").digest("hex") },
      },
    ])
    expect(await read(file, { id: "id" }, batches[0]!.checkpoint)).toEqual(batches)
  })

  test("small row groups give no memory warning", async () => {
    await using tmp = await tmpdir()
    const file = writeRows(tmp.join("a.parquet"), ten, 4)
    for (const b of await read(file)) expect(b.warnings).toBeUndefined()
  })

  test("warns when the largest row group needs more than 300 MB to decode", () => {
    const mb = 1 << 20
    expect(memoryWarning("a.parquet", [])).toBeUndefined()
    expect(memoryWarning("a.parquet", [{ rows: 1_000_000, bytes: 75 * mb }])).toBeUndefined()
    expect(
      memoryWarning("a.parquet", [
        { rows: 10, bytes: 1 },
        { rows: 2_500_000, bytes: 120 * mb },
        { rows: 5, bytes: 76 * mb },
      ]),
    ).toBe(
      "a.parquet: its largest row group holds 2,500,000 rows and 120 MB uncompressed, so reading it takes " +
        "about 480 MB of memory. Rewrite the file with smaller row groups (e.g. 10,000 rows) to read it in less.",
    )
    expect(memoryWarning("a.parquet", [{ rows: 1, bytes: 75 * mb + 1 }])).toContain("e.g. 10,000 rows")
  })

  test("its options schema takes columns and batch_rows, and refuses bad ones", () => {
    const ok = (o: Record<string, unknown>) => v.safeParse(parquet.options, o).success
    expect(ok({ columns: ["a", "b"], batch_rows: 1 })).toBe(true)
    expect(ok({ columns: [""] })).toBe(false)
    expect(ok({ columns: "a" })).toBe(false)
    expect(ok({ batch_rows: 1.5 })).toBe(false)
    expect(ok({ batch_rows: 0 })).toBe(false)
  })
})
