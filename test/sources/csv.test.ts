import { describe, expect, test } from "bun:test"
import { appendFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import Papa from "papaparse"
import { boundary, csv, tsv } from "../../src/sources/csv.ts"
import { SourceError } from "../../src/core/errors.ts"
import type { Checkpoint, SourceBatch } from "../../src/plugins/define.ts"
import { prng } from "../lib/spool.ts"
import { testSource } from "../lib/source-contract.ts"
import { tmpdir } from "../lib/tmp.ts"

/** RFC 4180 quoting of one field. */
function field(value: unknown): string {
  const text = String(value)
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text
}

function toCsv(rows: Record<string, unknown>[], eol = "\n"): string {
  const header = Object.keys(rows[0] ?? { id: "" })
  return [header.join(","), ...rows.map((r) => header.map((h) => field(r[h])).join(","))].join(eol) + eol
}

testSource(
  csv,
  {
    async write(dir, rows) {
      const file = join(dir, "rows.csv")
      writeFileSync(file, toCsv(rows))
      return file
    },
    async malformed(dir, a, b) {
      const path = join(dir, "bad.csv")
      const text = toCsv([...a, ...b])
      const lines = text.split("\n")
      // a ragged row after the header and the rows of `a`
      lines.splice(1 + a.length, 0, "only,two")
      writeFileSync(path, lines.join("\n"))
      return { path, at: a.length + 2 }
    },
    invalid: { delimiter: "#" },
  },
  { chunk_bytes: 8192 },
)

async function read(
  file: string,
  options: Record<string, unknown> = {},
  checkpoint?: Checkpoint,
  source = csv,
): Promise<SourceBatch[]> {
  const out: SourceBatch[] = []
  const given = { delimiter: source === tsv ? "\t" : ",", chunk_bytes: 1 << 20, ...options } as const
  for await (const b of source.read(file, given as Parameters<typeof csv.read>[1], checkpoint)) out.push(b)
  return out
}

describe("the csv source", () => {
  test("reads every quoting hazard: commas, quotes, newlines, CRLF inside quotes, a BOM, CRLF line ends", async () => {
    await using tmp = await tmpdir()
    const rows = [
      { id: "1", text: "plain" },
      { id: "2", text: "with, comma" },
      { id: "3", text: 'say "hi"' },
      { id: "4", text: "two\nlines" },
      { id: "5", text: "crlf\r\ninside" },
      { id: "6", text: "" },
      { id: "7", text: '"' },
      { id: "8", text: "ünïcødé 🎉" },
    ]
    writeFileSync(tmp.join("h.csv"), `\ufeff${toCsv(rows, "\r\n")}`)
    const batches = await read(tmp.join("h.csv"), { id: "id" })
    const got = batches.flatMap((b) => b.rows)
    expect(got.map((r) => r.data)).toEqual(rows)
    expect(got.map((r) => r.line)).toEqual([2, 3, 4, 5, 7, 9, 10, 11])
    expect(batches.flatMap((b) => b.problems)).toEqual([])
  })

  test("keys rows by their record number when no id is named; the header is not a record", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("a.csv"), 'a,b\n1,"x\ny"\n\n2,z\n')
    const rows = (await read(tmp.join("a.csv"))).flatMap((b) => b.rows)
    expect(rows.map((r) => [r.key, r.line, r.id])).toEqual([
      ["1", 2, undefined],
      ["2", 5, undefined],
    ])
  })

  test("ragged rows and broken quotes are reported with their line and skipped; a blank last line is fine", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("r.csv"), 'id,t\na,1\nb\nc,3,extra\nd,"ok"\ne,"bad"x,"y"\nf,6\n\n')
    const batches = await read(tmp.join("r.csv"), { id: "id" })
    expect(batches.flatMap((b) => b.rows).map((r) => r.key)).toEqual(["a", "d", "f"])
    const problems = batches.flatMap((b) => b.problems)
    expect(problems.map((p) => [p.line, p.reason])).toEqual([
      [3, "has 1 fields; the header has 2"],
      [4, "has 3 fields; the header has 2"],
      [6, expect.stringContaining("malformed quotes")],
    ])
    expect(problems[1]?.excerpt).toBe("c,3,extra")
  })

  test("the delimiter option reads semicolon and pipe files; .tsv is read with tabs", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("s.csv"), 'id;t\n1;"a;b"\n')
    writeFileSync(tmp.join("p.csv"), "id|t\n1|a,b\n")
    writeFileSync(tmp.join("t.tsv"), "id\tt\n1\ta,b;c\n")
    expect((await read(tmp.join("s.csv"), { delimiter: ";" }))[0]?.rows[0]?.data).toEqual({
      id: "1",
      t: "a;b",
    })
    expect((await read(tmp.join("p.csv"), { delimiter: "|" }))[0]?.rows[0]?.data).toEqual({
      id: "1",
      t: "a,b",
    })
    expect((await read(tmp.join("t.tsv"), {}, undefined, tsv))[0]?.rows[0]?.data).toEqual({
      id: "1",
      t: "a,b;c",
    })
  })

  test("a missing id column and a repeated header name are errors naming the file", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("a.csv"), "a,b\n1,2\n")
    writeFileSync(tmp.join("d.csv"), "a,b,a\n1,2,3\n")
    const missing = read(tmp.join("a.csv"), { id: "id" })
    await expect(missing).rejects.toBeInstanceOf(SourceError)
    await expect(missing).rejects.toThrow(
      `${tmp.join("a.csv")}: no "id" column for the id field; the header has a, b`,
    )
    await expect(read(tmp.join("d.csv"))).rejects.toThrow('the header names "a" twice (columns 1 and 3)')
    await expect(read(tmp.join("none.csv"))).rejects.toThrow(
      `cannot read ${tmp.join("none.csv")}: no such file`,
    )
  })

  test("an empty file and a header-only file give no rows", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("e.csv"), "")
    writeFileSync(tmp.join("h.csv"), "a,b\n")
    for (const f of ["e.csv", "h.csv"]) {
      const batches = await read(tmp.join(f))
      expect(batches.flatMap((b) => b.rows)).toEqual([])
      expect(batches.length).toBe(1)
    }
  })

  test("rows appended after a full read are picked up from the last checkpoint, with the header kept", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("a.csv"), "id,t\n1,a\n")
    const first = await read(tmp.join("a.csv"), { id: "id" })
    appendFileSync(tmp.join("a.csv"), '2,"b\nb"\n3,c\n')
    const more = (await read(tmp.join("a.csv"), { id: "id" }, first.at(-1)?.checkpoint)).flatMap(
      (b) => b.rows,
    )
    expect(more.map((r) => [r.key, r.line, r.data.t])).toEqual([
      ["2", 3, "b\nb"],
      ["3", 5, "c"],
    ])
  })

  test("tiny regions cut only between records: 300 random hazardous files read the same as one papaparse pass", async () => {
    await using tmp = await tmpdir()
    const random = prng(42)
    const pieces = ["a", "b", ",", '"', "\n", "\r\n", " ", "é", '""', "x,y"]
    for (let round = 0; round < 300; round++) {
      const rows = Array.from({ length: 1 + Math.floor(random() * 12) }, (_, i) => ({
        id: `k${i}`,
        t: Array.from(
          { length: Math.floor(random() * 8) },
          () => pieces[Math.floor(random() * pieces.length)],
        ).join(""),
      }))
      const text = toCsv(rows, random() < 0.5 ? "\n" : "\r\n")
      writeFileSync(tmp.join("f.csv"), text)
      const chunk = 1 + Math.floor(random() * 40)
      const got = (await read(tmp.join("f.csv"), { id: "id", chunk_bytes: chunk })).flatMap((b) => b.rows)
      expect(got.map((r) => r.data)).toEqual(rows)
      const whole = Papa.parse<Record<string, string>>(text, { header: true, skipEmptyLines: true }).data
      expect(got.map((r) => r.data)).toEqual(whole)
    }
  })

  test("600 random files of loose quoting (bare quotes, spaces after a closing quote) read as one papaparse pass", async () => {
    await using tmp = await tmpdir()
    const random = prng(7)
    // a file's line ends are all one kind (a bare LF in a CRLF file is cut as a line end, as papaparse would not)
    const pieces = ["a", ",", '"', '" ', '"\t', "EOL", "EOL", " ", "\t", "ü", "\u2028", "\\", '""', "😀"]
    for (let round = 0; round < 600; round++) {
      const eol = random() < 0.5 ? "\n" : "\r\n"
      const body = Array.from({ length: Math.floor(random() * 40) }, () =>
        pieces[Math.floor(random() * pieces.length)]!.replace("EOL", eol),
      )
      const text = `id,t${eol}${body.join("")}${eol}`
      writeFileSync(tmp.join("f.csv"), text)
      const chunk = 1 + Math.floor(random() * 30)
      const batches = await read(tmp.join("f.csv"), { chunk_bytes: chunk })
      const got = batches.flatMap((b) => b.rows)
      // what one pass over the whole file gives: records with two fields and no quote error, after the header
      const whole = Papa.parse<string[]>(text, { delimiter: ",", newline: eol, skipEmptyLines: false })
      const broken = new Set(whole.errors.map((e) => e.row))
      const expected = whole.data
        .map((fields, i) => ({ fields, i }))
        .filter(({ fields, i }) => i > 0 && !broken.has(i) && fields.length === 2)
        .map(({ fields }) => ({ id: fields[0], t: fields[1] }))
      expect(got.map((r) => r.data)).toEqual(expected)
    }
  })

  test("boundary() finds the end of the last whole record", () => {
    const bytes = (s: string) => new TextEncoder().encode(s)
    expect(boundary(bytes("a,b\nc,d"), 44)).toBe(4)
    expect(boundary(bytes('a,"b\nc'), 44)).toBe(-1)
    expect(boundary(bytes('a,"b\nc"\nd'), 44)).toBe(8)
    expect(boundary(bytes('a,"x""\ny"\n'), 44)).toBe(10)
    expect(boundary(bytes('5" screen\nnext'), 44)).toBe(10)
  })
})
