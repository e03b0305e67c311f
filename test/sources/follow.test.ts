import { describe, expect, test } from "bun:test"
import { appendFileSync, readFileSync, writeFileSync } from "node:fs"
import { parquetWriteFile } from "hyparquet-writer"
import jsonl from "../../src/sources/jsonl.ts"
import { csv } from "../../src/sources/csv.ts"
import parquet from "../../src/sources/parquet.ts"
import { SourceError } from "../../src/plugins/api/errors.ts"
import type { Checkpoint, Source, SourceBatch } from "../../src/plugins/api/define.ts"
import { tmpdir } from "../lib/tmp.ts"

async function read(
  source: Source,
  file: string,
  follow: boolean,
  checkpoint?: Checkpoint,
  options: Record<string, unknown> = {},
): Promise<SourceBatch[]> {
  const out: SourceBatch[] = []
  for await (const b of source.read(file, { ...options, id: "id", follow }, checkpoint)) out.push(b)
  return out
}

const rowsOf = (batches: SourceBatch[]) => batches.flatMap((b) => b.rows).map((r) => [r.key, r.line, r.data])

describe("the follow flag (spool watch)", () => {
  test("jsonl holds back an unterminated last line, following or not, and reads it once its newline comes", async () => {
    await using tmp = await tmpdir()
    const file = tmp.join("a.jsonl")
    const done = '{"id":"1","t":"one"}\n'
    writeFileSync(file, done + '{"id":"2","t":"tw')

    // without follow the half line is not read either, nor reported as malformed: a warning says it waits
    const plain = await read(jsonl, file, false)
    expect(rowsOf(plain)).toEqual([["1", 1, { id: "1", t: "one" }]])
    expect(plain.flatMap((b) => b.problems)).toEqual([])
    expect(plain.flatMap((b) => b.warnings ?? [])).toEqual([
      `${file}:2: the last line has no newline yet; it will be read when it is complete (if the file is complete, end it with a newline)`,
    ])
    expect(plain.at(-1)!.checkpoint.offset).toBe(done.length)

    // following, it waits in silence
    const followed = await read(jsonl, file, true)
    expect(rowsOf(followed)).toEqual([["1", 1, { id: "1", t: "one" }]])
    expect(followed.flatMap((b) => b.problems)).toEqual([])
    expect(followed.flatMap((b) => b.warnings ?? [])).toEqual([])
    const at = followed.at(-1)!.checkpoint
    expect(at.offset).toBe(done.length)
    expect(at.line).toBe(1)

    // still no newline: nothing more, and the checkpoint does not move
    appendFileSync(file, 'o"}')
    const again = await read(jsonl, file, true, at)
    expect(rowsOf(again)).toEqual([])
    expect(again.at(-1)!.checkpoint).toEqual(at)

    appendFileSync(file, '\n{"id":"3","t":"three"}\r')
    const rest = await read(jsonl, file, true, at)
    expect(rowsOf(rest)).toEqual([["2", 2, { id: "2", t: "two" }]])
    // a CR alone is not a line end either
    appendFileSync(file, "\n")
    expect(rowsOf(await read(jsonl, file, true, rest.at(-1)!.checkpoint))).toEqual([
      ["3", 3, { id: "3", t: "three" }],
    ])
  })

  test("jsonl with only a partial first line yields one empty batch at offset 0 when following", async () => {
    await using tmp = await tmpdir()
    const file = tmp.join("a.jsonl")
    writeFileSync(file, '{"id":"1"')
    const batches = await read(jsonl, file, true)
    expect(batches.map((b) => [b.rows.length, b.problems.length, b.checkpoint.offset])).toEqual([[0, 0, 0]])
  })

  test("jsonl reads a line longer than a region once it is whole, in follow mode too", async () => {
    await using tmp = await tmpdir()
    const file = tmp.join("a.jsonl")
    const long = JSON.stringify({ id: "L", t: "x".repeat(100) })
    writeFileSync(file, long.slice(0, 60))
    expect(rowsOf(await read(jsonl, file, true, undefined, { chunk_bytes: 16 }))).toEqual([])
    appendFileSync(file, long.slice(60) + "\n")
    expect(rowsOf(await read(jsonl, file, true, undefined, { chunk_bytes: 16 }))).toEqual([
      ["L", 1, { id: "L", t: "x".repeat(100) }],
    ])
  })

  test("csv holds back an unterminated last record, following or not (with a warning when not)", async () => {
    await using tmp = await tmpdir()
    const file = tmp.join("a.csv")
    writeFileSync(file, "id,text\n1,a\n2,b")
    const plain = await read(csv, file, false)
    expect(rowsOf(plain)).toEqual([["1", 2, { id: "1", text: "a" }]])
    expect(plain.flatMap((b) => b.problems)).toEqual([])
    expect(plain.flatMap((b) => b.warnings ?? [])).toEqual([
      `${file}:3: the last line has no newline yet; it will be read when it is complete (if the file is complete, end it with a newline)`,
    ])
    const followed = await read(csv, file, true)
    expect(rowsOf(followed)).toEqual([["1", 2, { id: "1", text: "a" }]])
    const at = followed.at(-1)!.checkpoint
    expect(at.offset).toBe("id,text\n1,a\n".length)

    // "2,b" goes on: the record is read as it ends, not as it was when first seen
    appendFileSync(file, "ee\n")
    expect(rowsOf(await read(csv, file, true, at))).toEqual([["2", 3, { id: "2", text: "bee" }]])
  })

  test("csv in follow mode waits for a quoted field's closing quote, even past a newline inside it", async () => {
    await using tmp = await tmpdir()
    const file = tmp.join("a.csv")
    writeFileSync(file, 'id,text\n1,a\n2,"two\nli')
    const followed = await read(csv, file, true)
    expect(rowsOf(followed)).toEqual([["1", 2, { id: "1", text: "a" }]])
    const at = followed.at(-1)!.checkpoint
    appendFileSync(file, 'nes"\n3,c\n')
    expect(rowsOf(await read(csv, file, true, at))).toEqual([
      ["2", 3, { id: "2", text: "two\nlines" }],
      ["3", 5, { id: "3", text: "c" }],
    ])
  })

  test("csv in follow mode waits for a header being written before reading any record", async () => {
    await using tmp = await tmpdir()
    const file = tmp.join("a.csv")
    writeFileSync(file, "id,te")
    const first = await read(csv, file, true)
    expect(rowsOf(first)).toEqual([])
    expect(first.at(-1)!.checkpoint.offset).toBe(0)
    appendFileSync(file, "xt\n1,a\n")
    expect(rowsOf(await read(csv, file, true, first.at(-1)!.checkpoint))).toEqual([
      ["1", 2, { id: "1", text: "a" }],
    ])
  })

  test("parquet without its footer yet is an error in a plain read and nothing at all when following", async () => {
    await using tmp = await tmpdir()
    const file = tmp.join("a.parquet")
    parquetWriteFile({
      filename: file,
      columnData: [{ name: "id", type: "STRING", data: ["1", "2"] }],
    })
    const whole = readFileSync(file)
    writeFileSync(file, whole.subarray(0, whole.length - 20))
    await expect(read(parquet, file, false)).rejects.toBeInstanceOf(SourceError)
    expect(await read(parquet, file, true)).toEqual([])
    writeFileSync(file, whole)
    expect(rowsOf(await read(parquet, file, true))).toEqual([
      ["1", 1, { id: "1" }],
      ["2", 2, { id: "2" }],
    ])
  })
})
