import { describe, expect, test } from "bun:test"
import { appendFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import jsonl from "../../src/sources/jsonl.ts"
import { SourceChangedError, SourceError } from "../../src/plugins/api/errors.ts"
import type { Checkpoint, Source, SourceBatch } from "../../src/plugins/api/define.ts"
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
        [...a.map((r) => JSON.stringify(r)), "{oops", ...b.map((r) => JSON.stringify(r))].join("\n") + "\n",
      )
      return { path, at: a.length + 1 }
    },
    async unfinished(dir, rows) {
      const path = join(dir, "partial.jsonl")
      const text = rows.map((r) => JSON.stringify(r)).join("\n") + "\n"
      writeFileSync(path, text.slice(0, -5))
      return { path, finish: () => appendFileSync(path, text.slice(-5)) }
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
  max?: number,
): Promise<SourceBatch[]> {
  const out: SourceBatch[] = []
  const options = { id, chunk_bytes: chunk_bytes ?? 1 << 20, max_line_bytes: max ?? 1 << 24 }
  for await (const b of jsonl.read(file, options, checkpoint)) out.push(b)
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

  test("skips blank lines but counts them, and handles a BOM and CRLF; a last line without a newline waits", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("a.jsonl"), '\uFEFF{"a":1}\r\n\r\n   \n{"a":2}\r\n{"a":3}')
    const batches = await read(tmp.join("a.jsonl"))
    expect(batches.flatMap((b) => b.problems)).toEqual([])
    expect(batches.flatMap((b) => b.rows).map((r) => [r.line, r.data.a])).toEqual([
      [1, 1],
      [4, 2],
    ])
    expect(batches.flatMap((b) => b.warnings ?? [])).toEqual([
      `${tmp.join("a.jsonl")}:5: the last line has no newline yet; it will be read when it is complete (if the file is complete, end it with a newline)`,
    ])
    appendFileSync(tmp.join("a.jsonl"), "\n")
    const rest = await read(tmp.join("a.jsonl"), undefined, batches.at(-1)!.checkpoint)
    expect(rest.flatMap((b) => b.rows).map((r) => [r.line, r.data.a])).toEqual([[5, 3]])
  })

  test("reports malformed lines with line, reason and a 200-byte excerpt, and reads the rest", async () => {
    await using tmp = await tmpdir()
    const long = `{"broken": "${"x".repeat(300)}`
    writeFileSync(
      tmp.join("a.jsonl"),
      ['{"id":"a"}', "{nope", "[1,2]", "42", long, '{"noid":1}', '{"id":null}', '{"id":"b"}'].join("\n") +
        "\n",
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

  test("a row appended by a writer still mid-line waits, is not malformed, and is read once its line is complete", async () => {
    await using tmp = await tmpdir()
    const file = tmp.join("in.jsonl")
    const done = [1, 2, 3, 4, 5].map((i) => `{"id":"k${i}","text":"row ${i}"}\n`).join("")
    writeFileSync(file, done)
    const first = await read(file, "id")
    appendFileSync(file, '{"id":"k6","text":"row')
    const waiting = await read(file, "id", first.at(-1)!.checkpoint)
    expect(waiting.flatMap((b) => b.rows)).toEqual([])
    expect(waiting.flatMap((b) => b.problems)).toEqual([])
    expect(waiting.flatMap((b) => b.warnings ?? [])).toEqual([
      `${file}:6: the last line has no newline yet; it will be read when it is complete (if the file is complete, end it with a newline)`,
    ])
    expect(waiting.at(-1)!.checkpoint).toEqual(first.at(-1)!.checkpoint)
    // the same from the start: five rows, and the sixth waits
    const whole = await read(file, "id")
    expect(whole.flatMap((b) => b.rows).map((r) => r.key)).toEqual(["k1", "k2", "k3", "k4", "k5"])
    expect(whole.at(-1)!.checkpoint.offset).toBe(done.length)
    appendFileSync(file, ' 6"}\n')
    const rest = await read(file, "id", waiting.at(-1)!.checkpoint)
    expect(rest.flatMap((b) => b.rows).map((r) => [r.key, r.line, r.data.text])).toEqual([["k6", 6, "row 6"]])
    expect(rest.flatMap((b) => [...b.problems, ...(b.warnings ?? [])])).toEqual([])
  })

  test("a line longer than max_line_bytes is one problem, walked past, and the lines after it are read", async () => {
    await using tmp = await tmpdir()
    const file = tmp.join("a.jsonl")
    const long = JSON.stringify({ id: "long", t: "x".repeat(1100) })
    const lines = ['{"id":"a"}', long, '{"id":"b"}', long, long, '{"id":"c"}']
    writeFileSync(file, lines.join("\n") + "\n")
    for (const chunk of [100, 1 << 20]) {
      const batches = await read(file, "id", undefined, chunk, 1024)
      expect(batches.flatMap((b) => b.rows).map((r) => [r.key, r.line])).toEqual([
        ["a", 1],
        ["b", 3],
        ["c", 6],
      ])
      const reason = `the line is ${long.length + 1} bytes, longer than max_line_bytes (1024); raise max_line_bytes to read it`
      expect(batches.flatMap((b) => b.problems)).toEqual(
        [2, 4, 5].map((line) => ({ line, reason, excerpt: long.slice(0, 200) })),
      )
      expect(batches.at(-1)!.checkpoint.offset).toBe(lines.join("\n").length + 1)
      expect(batches.at(-1)!.checkpoint.line).toBe(6)
    }
    // a line of exactly max_line_bytes (its newline included) is read
    const exact = JSON.stringify({ id: "e", t: "y".repeat(1024 - 18) })
    writeFileSync(file, `${exact}\n`)
    expect(exact.length + 1).toBe(1024)
    expect((await read(file, "id", undefined, 100, 1024)).flatMap((b) => b.rows).map((r) => r.key)).toEqual([
      "e",
    ])
  })

  test("a line that is not valid UTF-8 is a problem of its line, not read with replacement characters", async () => {
    await using tmp = await tmpdir()
    const file = tmp.join("a.jsonl")
    const text = (s: string) => Buffer.from(s, "latin1")
    writeFileSync(
      file,
      Buffer.concat([text('{"id":"a"}\n{"id":"b","t":"caf'), Buffer.from([0xe9]), text('"}\n{"id":"c"}\n')]),
    )
    const [batch] = await read(file, "id")
    expect(batch!.rows.map((r) => [r.key, r.line])).toEqual([
      ["a", 1],
      ["c", 3],
    ])
    expect(batch!.problems).toEqual([
      {
        line: 2,
        reason: "not valid UTF-8: the file must be UTF-8 text (convert it, e.g. with iconv)",
        excerpt: '{"id":"b","t":"caf\ufffd"}',
      },
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
