import { describe, expect, test } from "bun:test"
import { appendFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import jsonl from "../../src/sources/jsonl.ts"
import { SourceChangedError, SourceError } from "../../src/core/errors.ts"
import type { Checkpoint, Source, SourceBatch } from "../../src/plugins/define.ts"
import { testSource } from "../lib/source-contract.ts"
import { tmpdir } from "../lib/tmp.ts"

testSource(
  jsonl,
  {
    async write(dir, rows) {
      const file = join(dir, "rows.jsonl")
      writeFileSync(file, rows.map((r) => JSON.stringify(r)).join("\n") + "\n")
      return file
    },
    async malformed(dir, a, b) {
      const path = join(dir, "bad.jsonl")
      writeFileSync(
        path,
        [...a.map((r) => JSON.stringify(r)), "{oops", ...b.map((r) => JSON.stringify(r))].join("\n"),
      )
      return { path, at: a.length + 1 }
    },
    invalid: { chunk_bytes: 0 },
  },
  { chunk_bytes: 16_384 },
)

async function read(
  file: string,
  id?: string,
  checkpoint?: Checkpoint,
  chunk_bytes?: number,
): Promise<SourceBatch[]> {
  const out: SourceBatch[] = []
  for await (const b of jsonl.read(file, { id, chunk_bytes: chunk_bytes ?? 1 << 20 }, checkpoint)) out.push(b)
  return out
}

describe("the jsonl source", () => {
  test("keys rows by line number, or by a string or number id field", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("a.jsonl"), '{"id":"x","t":1}\n{"id":7,"t":2}\n')
    const byLine = (await read(tmp.join("a.jsonl"))).flatMap((b) => b.rows)
    expect(byLine.map((r) => [r.key, r.line, r.id])).toEqual([
      ["1", 1, undefined],
      ["2", 2, undefined],
    ])
    const byId = (await read(tmp.join("a.jsonl"), "id")).flatMap((b) => b.rows)
    expect(byId.map((r) => [r.key, r.line, r.id, r.data])).toEqual([
      ["x", 1, "x", { id: "x", t: 1 }],
      ["7", 2, "7", { id: 7, t: 2 }],
    ])
  })

  test("skips blank lines but counts them, and handles a BOM, CRLF and a last line without a newline", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("a.jsonl"), '\uFEFF{"a":1}\r\n\r\n   \n{"a":2}\r\n{"a":3}')
    const [batch] = await read(tmp.join("a.jsonl"))
    expect(batch!.problems).toEqual([])
    expect(batch!.rows.map((r) => [r.line, r.data.a])).toEqual([
      [1, 1],
      [4, 2],
      [5, 3],
    ])
  })

  test("reports malformed lines with line, reason and a 200-byte excerpt, and reads the rest", async () => {
    await using tmp = await tmpdir()
    const long = `{"broken": "${"x".repeat(300)}`
    writeFileSync(
      tmp.join("a.jsonl"),
      ['{"id":"a"}', "{nope", "[1,2]", "42", long, '{"noid":1}', '{"id":null}', '{"id":"b"}'].join("\n"),
    )
    const [batch] = await read(tmp.join("a.jsonl"), "id")
    expect(batch!.rows.map((r) => r.key)).toEqual(["a", "b"])
    expect(batch!.problems.map((p) => [p.line, p.reason.split(":")[0]])).toEqual([
      [2, "not valid JSON"],
      [3, "not a JSON object (array)"],
      [4, "not a JSON object (number)"],
      [5, "not valid JSON"],
      [6, 'no "id" field (the id field)'],
      [7, 'the "id" field is not a string or number'],
    ])
    expect(batch!.problems[0]!.excerpt).toBe("{nope")
    expect(batch!.problems[3]!.excerpt).toBe(long.slice(0, 200))
  })

  test("yields one batch per chunk of bytes, each ending at a line boundary, with exact offsets", async () => {
    await using tmp = await tmpdir()
    const text = Array.from({ length: 5000 }, (_, i) => `{"i":${i}}`).join("\n") + "\n"
    writeFileSync(tmp.join("a.jsonl"), text)
    const batches = await read(tmp.join("a.jsonl"), undefined, undefined, 4096)
    expect(batches.flatMap((b) => b.rows).map((r) => r.data.i)).toEqual([...Array(5000).keys()])
    let previous = 0
    for (const b of batches) {
      const offset = b.checkpoint.offset as number
      expect(offset - previous).toBeLessThanOrEqual(4096)
      expect(text[offset - 1]).toBe("\n")
      const lines = text.slice(0, offset).split("\n").length - 1
      expect(b.checkpoint.line).toBe(lines)
      previous = offset
    }
    expect(previous).toBe(text.length)
    expect(batches.length).toBeGreaterThanOrEqual(Math.ceil(text.length / 4096))
  })

  test("a line longer than the chunk is read whole", async () => {
    await using tmp = await tmpdir()
    const long = JSON.stringify({ t: "x".repeat(10_000) })
    writeFileSync(tmp.join("a.jsonl"), `{"a":1}\n${long}\n{"a":2}\n`)
    const rows = (await read(tmp.join("a.jsonl"), undefined, undefined, 100)).flatMap((b) => b.rows)
    expect(rows.map((r) => r.line)).toEqual([1, 2, 3])
    expect(rows[1]!.raw).toBe(long)
  })

  test("refuses a file whose ingested part changed or shrank, naming the file", async () => {
    await using tmp = await tmpdir()
    const file = tmp.join("a.jsonl")
    writeFileSync(file, '{"a":1}\n{"a":2}\n')
    const [batch] = await read(file)
    writeFileSync(file, '{"a":9}\n{"a":2}\n')
    expect(read(file, undefined, batch!.checkpoint)).rejects.toThrow(SourceChangedError)
    expect(read(file, undefined, batch!.checkpoint)).rejects.toThrow(`${file} changed since it was ingested`)
    writeFileSync(file, '{"a":1}\n')
    expect(read(file, undefined, batch!.checkpoint)).rejects.toThrow(SourceChangedError)
  })

  test("rows appended after the last checkpoint are read on resume, with line numbers going on", async () => {
    await using tmp = await tmpdir()
    const file = tmp.join("a.jsonl")
    writeFileSync(file, '{"a":1}\n{"a":2}\n')
    const [batch] = await read(file)
    appendFileSync(file, '{"a":3}\n\n{"a":4}\n')
    const rest = (await read(file, undefined, batch!.checkpoint)).flatMap((b) => b.rows)
    expect(rest.map((r) => [r.key, r.data.a])).toEqual([
      ["3", 3],
      ["5", 4],
    ])
  })

  test("a missing file is a SourceError naming it", async () => {
    await using tmp = await tmpdir()
    expect(read(tmp.join("nope.jsonl"))).rejects.toThrow(SourceError)
    expect(read(tmp.join("nope.jsonl"))).rejects.toThrow(
      `cannot read ${tmp.join("nope.jsonl")}: no such file`,
    )
  })
})
