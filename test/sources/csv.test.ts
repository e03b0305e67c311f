import { describe, expect, test } from "bun:test"
import { appendFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import Papa from "papaparse"
import { boundary, csv, likely, tsv, walk } from "../../src/sources/csv.ts"
import { SourceError } from "../../src/plugins/api/errors.ts"
import type { Checkpoint, SourceBatch } from "../../src/plugins/api/define.ts"
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

/**
 * The record rule of walk(), written the plain way: a character at a time over a whole text (ASCII, so a
 * character is a byte). Each record's end (just past its line end) and whether it is malformed, and what is left
 * after the last one: nothing, a last line with no line end, or a quote that opens before the last line and never
 * closes.
 */
function plain(text: string): { records: [number, boolean][]; rest: "none" | "line" | "quote" } {
  const records: [number, boolean][] = []
  let p = 0
  while (p < text.length) {
    let broken = false
    let fieldStart = true
    for (;;) {
      if (p >= text.length) return { records, rest: "line" }
      const c = text[p]
      if (c === "\n") {
        records.push([p + 1, broken])
        p++
        break
      }
      if (c === ",") {
        fieldStart = true
        p++
        continue
      }
      if (!fieldStart || c !== '"') {
        fieldStart = false
        p++
        continue
      }
      const open = p
      let q = text.indexOf('"', open + 1)
      while (q >= 0 && text[q + 1] === '"') q = text.indexOf('"', q + 2)
      if (q < 0) return { records, rest: text.includes("\n", open) ? "quote" : "line" }
      let k = q + 1
      while (text[k] === " " || text[k] === "\t") k++
      p = k
      fieldStart = false
      if ([undefined, ",", "\n", "\r"].includes(text[k])) continue
      const lf = text.indexOf("\n", open)
      if (lf < 0 || lf > q) {
        broken = true
        continue
      }
      records.push([lf + 1, true])
      p = lf + 1
      break
    }
  }
  return { records, rest: "none" }
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
    async unfinished(dir, rows) {
      const path = join(dir, "partial.csv")
      const text = toCsv(rows)
      writeFileSync(path, text.slice(0, -3))
      return { path, finish: () => appendFileSync(path, text.slice(-3)) }
    },
    invalid: { delimiter: "#" },
  },
  { chunk_bytes: 8192 },
)

/** The same rows as TSV: tab-separated, a field quoted only when it holds a tab, a quote or a line end. */
function toTsv(rows: Record<string, unknown>[]): string {
  const cell = (value: unknown) => {
    const text = String(value)
    return /["\t\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text
  }
  const header = Object.keys(rows[0] ?? { id: "" })
  return [header.join("\t"), ...rows.map((r) => header.map((h) => cell(r[h])).join("\t"))].join("\n") + "\n"
}

// the tsv source is the csv reader with a tab for its default delimiter: it runs the same contract, on .tsv files
testSource(
  tsv,
  {
    async write(dir, rows) {
      const file = join(dir, "rows.tsv")
      writeFileSync(file, toTsv(rows))
      return file
    },
    async malformed(dir, a, b) {
      const path = join(dir, "bad.tsv")
      const lines = toTsv([...a, ...b]).split("\n")
      // a ragged row after the header and the rows of `a`
      lines.splice(1 + a.length, 0, "only\ttwo")
      writeFileSync(path, lines.join("\n"))
      return { path, at: a.length + 2 }
    },
    async unfinished(dir, rows) {
      const path = join(dir, "partial.tsv")
      const text = toTsv(rows)
      writeFileSync(path, text.slice(0, -3))
      return { path, finish: () => appendFileSync(path, text.slice(-3)) }
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

  test("without a delimiter, the header line tells: the one that splits it into the most fields, quotes aside", async () => {
    await using tmp = await tmpdir()
    const sniffed = async (name: string, text: string, source = csv) => {
      writeFileSync(tmp.join(name), text)
      // small regions: several batches, and the warning in only one of them
      const batches = await read(
        tmp.join(name),
        { id: "id", delimiter: undefined, chunk_bytes: 8 },
        undefined,
        source,
      )
      return {
        rows: batches.flatMap((b) => b.rows).map((r) => r.data),
        warnings: batches.flatMap((b) => b.warnings ?? []),
        problems: batches.flatMap((b) => b.problems),
        delimiter: batches.at(-1)?.checkpoint.delimiter,
      }
    }
    const told = (name: string, d: string) =>
      `${tmp.join(name)}: read with delimiter ${d}, sniffed from its header line (set delimiter in [source] to choose)`

    // the file of the issue: semicolons, and a comma inside a field
    expect(await sniffed("s.csv", "id;name;note\n1;Ann;a, b\n2;Bo;c\n")).toEqual({
      rows: [
        { id: "1", name: "Ann", note: "a, b" },
        { id: "2", name: "Bo", note: "c" },
      ],
      warnings: [told("s.csv", '";"')],
      problems: [],
      delimiter: ";",
    })
    // a tab-separated file named .csv, and a pipe file
    const tab = await sniffed("t.csv", "id\tname\n1\tx,y\n")
    expect([tab.rows, tab.warnings, tab.delimiter]).toEqual([
      [{ id: "1", name: "x,y" }],
      [told("t.csv", '"\\t"')],
      "\t",
    ])
    const pipe = await sniffed("p.csv", "id|name\n1|x;y\n")
    expect([pipe.rows, pipe.warnings, pipe.delimiter]).toEqual([
      [{ id: "1", name: "x;y" }],
      [told("p.csv", '"|"')],
      "|",
    ])
    // delimiters inside a quoted header name do not count: three fields by commas, not four by semicolons
    const quoted = await sniffed("q.csv", 'id,"a;b;c;d",x\n1,2,3\n')
    expect([quoted.rows, quoted.warnings, quoted.delimiter]).toEqual([
      [{ id: "1", "a;b;c;d": "2", x: "3" }],
      [],
      ",",
    ])
    // and a quoted comma does not make a semicolon file a comma file; a BOM and blank lines before the header are skipped
    const named = await sniffed("n.csv", '\ufeff\n\nid;"last, first"\n1;"Doe, J"\n')
    expect([named.rows, named.delimiter]).toEqual([[{ id: "1", "last, first": "Doe, J" }], ";"])
    // a tie goes to the format's own: "," for csv, tab for tsv; a plain comma file says nothing
    expect((await sniffed("tie.csv", "id,a;b\n1,2;3\n")).rows).toEqual([{ id: "1", "a;b": "2;3" }])
    const tsvTie = await sniffed("tie.tsv", "id\ta,b\n1\t2,3\n", tsv)
    expect([tsvTie.rows, tsvTie.warnings]).toEqual([[{ id: "1", "a,b": "2,3" }], []])
    expect((await sniffed("c.csv", "id,t\n1,a\n")).warnings).toEqual([])

    expect(likely("a;b;c\n1,2,3,4,5,6\n", ",")).toBe(";") // the header line only
    expect(likely("", ",")).toBe(",")
    expect(likely("a|b\tc|d", "\t")).toBe("|")
  })

  test("a sniffed delimiter is kept in the checkpoint; a checkpoint written before sniffing reads on with the format's own", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("s.csv"), "id;t\n1;a\n")
    const first = await read(tmp.join("s.csv"), { id: "id", delimiter: undefined })
    appendFileSync(tmp.join("s.csv"), "2;b\n")
    const after = first.at(-1)!.checkpoint
    expect(after.delimiter).toBe(";")
    const more = await read(tmp.join("s.csv"), { id: "id", delimiter: undefined }, after)
    // read on from the checkpoint: not sniffed again, and not said again
    expect(more.flatMap((b) => b.rows).map((r) => r.data)).toEqual([{ id: "2", t: "b" }])
    expect(more.flatMap((b) => b.warnings ?? [])).toEqual([])

    // an older spool's checkpoint of a comma file whose header happens to hold semicolons: still commas
    writeFileSync(tmp.join("old.csv"), "n,a;b\n1,x\n")
    const old = (await read(tmp.join("old.csv"), { delimiter: "," })).at(-1)!.checkpoint
    const { delimiter: _, ...before } = old
    appendFileSync(tmp.join("old.csv"), "2,y;z\n")
    const rest = await read(tmp.join("old.csv"), { delimiter: undefined }, before)
    expect(rest.flatMap((b) => b.rows).map((r) => r.data)).toEqual([{ n: "2", "a;b": "y;z" }])
  })

  test("a missing id column whose header holds another delimiter suggests it", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("s.csv"), "id;name;note\n1;a;b\n")
    // a delimiter given is used as given: the header is then one name
    const given = read(tmp.join("s.csv"), { id: "id", delimiter: "," })
    await expect(given).rejects.toThrow(
      `${tmp.join("s.csv")}: no "id" column for the id field; the header has id;name;note`,
    )
    const err = (await given.catch((e: unknown) => e)) as SourceError
    expect(err.hint).toBe(
      'The header looks separated by ";": set delimiter = ";" in [source] (or pass --delimiter ";"). Otherwise set id to one of those columns, or leave it out to key rows by their number.',
    )
    // a tie sniffed as ",": the semicolon is suggested
    writeFileSync(tmp.join("t.csv"), "id;name,note\n1;a,b\n")
    const tie = (await read(tmp.join("t.csv"), { id: "id", delimiter: undefined }).catch(
      (e: unknown) => e,
    )) as SourceError
    expect(tie.message).toBe(
      `${tmp.join("t.csv")}: no "id" column for the id field; the header has id;name, note`,
    )
    expect(tie.hint).toStartWith('The header looks separated by ";": set delimiter = ";" in [source]')
    // a tab, written as TOML and JSON write it
    writeFileSync(tmp.join("tab.csv"), "id\tname\n1\ta\n")
    const tab = (await read(tmp.join("tab.csv"), { id: "id", delimiter: "|" }).catch(
      (e: unknown) => e,
    )) as SourceError
    expect(tab.hint).toStartWith('The header looks separated by "\\t": set delimiter = "\\t" in [source]')
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
    expect(((await missing.catch((e: unknown) => e)) as SourceError).hint).toBe(
      "Set id to one of those columns, or leave it out to key rows by their number.",
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

  test("600 random files of loose quoting read the same at any region size, and as papaparse where it finds no error", async () => {
    await using tmp = await tmpdir()
    const random = prng(7)
    // a file's line ends are all one kind (a bare LF in a CRLF file is cut as a line end, as papaparse would not)
    const pieces = ["a", ",", '"', '" ', '"\t', "EOL", "EOL", " ", "\t", "ü", "\u2028", "\\", '""', "😀"]
    const outcome = async (file: string, chunk: number) => {
      try {
        const batches = await read(file, { chunk_bytes: chunk })
        return {
          rows: batches.flatMap((b) => b.rows).map((r) => [r.line, r.data]),
          problems: batches.flatMap((b) => b.problems).map((p) => [p.line, p.reason, p.excerpt]),
        }
      } catch (err) {
        return { error: (err as Error).message }
      }
    }
    let clean = 0
    for (let round = 0; round < 600; round++) {
      const eol = random() < 0.5 ? "\n" : "\r\n"
      const body = Array.from({ length: Math.floor(random() * 40) }, () =>
        pieces[Math.floor(random() * pieces.length)]!.replace("EOL", eol),
      )
      const text = `id,t${eol}${body.join("")}${eol}`
      writeFileSync(tmp.join("f.csv"), text)
      const got = await outcome(tmp.join("f.csv"), 1 + Math.floor(random() * 30))
      expect(got).toEqual(await outcome(tmp.join("f.csv"), 1 << 20))
      // what one papaparse pass over the whole file gives, when it finds no quote error: records with two fields
      const whole = Papa.parse<string[]>(text, { delimiter: ",", newline: eol, skipEmptyLines: false })
      if (whole.errors.length > 0) continue
      clean++
      const expected = whole.data
        .filter((fields, i) => i > 0 && fields.length === 2)
        .map((fields) => ({ id: fields[0], t: fields[1] }))
      expect(got.rows?.map(([, data]) => data)).toEqual(expected)
    }
    expect(clean).toBeGreaterThan(100)
    expect(clean).toBeLessThan(500)
  })

  test("walk() finds the records the plain rule finds, whole, in pieces of any size, and in any prefix", () => {
    const random = prng(1212)
    const pieces = ["a", "b", ",", '"', '""', '" ', "\n", "\r\n", " ", '"x', 'x"', ',"', '"\n']
    const fresh = (at: number) => ({
      start: at,
      quoted: false,
      open: -1,
      lf: -1,
      fieldStart: true,
      broken: undefined,
    })
    let bad = 0
    for (let round = 0; round < 3000; round++) {
      const text = Array.from(
        { length: Math.floor(random() * 30) },
        () => pieces[Math.floor(random() * pieces.length)],
      ).join("")
      const bytes = new TextEncoder().encode(text)
      const { records, rest } = plain(text)
      bad += records.filter(([, b]) => b).length
      // record by record, fed in random pieces as the csv source walks past a record too long to hold
      const found: [number, boolean][] = []
      let left: string = "none"
      for (let start = 0; start < bytes.length && left === "none";) {
        const w = fresh(start)
        for (let at = start; ;) {
          const piece = bytes.subarray(at, at + 1 + Math.floor(random() * 6))
          const eof = at + piece.length >= bytes.length
          const r = walk(piece, at, w, 44, { first: true, eof })
          if (r.end >= 0) {
            found.push([r.end, r.bad.length > 0])
            start = r.end
            break
          }
          if (eof) {
            left = w.quoted && w.lf >= 0 ? "quote" : "line"
            break
          }
          at = r.safe
        }
      }
      expect([found, left]).toEqual([records, rest])
      // the whole text at once: the last end and every malformed record
      const starts = [0, ...records.map(([end]) => end)]
      const expectBad = records.flatMap(([end, b], i): [number, number][] => (b ? [[starts[i]!, end]] : []))
      const whole = walk(bytes, 0, fresh(0), 44, { eof: true })
      expect(whole.end).toBe(records.at(-1)?.[0] ?? -1)
      expect(whole.bad.map((b) => [b.start, b.stop])).toEqual(expectBad)
      // a prefix, as a region cut short: an end of the plain rule, with the malformed records before it
      const cut = Math.floor(random() * (bytes.length + 1))
      const part = walk(bytes.subarray(0, cut), 0, fresh(0), 44)
      expect(part.end <= cut).toBe(true)
      if (part.end >= 0) expect(records.map(([end]) => end)).toContain(part.end)
      expect(part.bad.map((b) => [b.start, b.stop])).toEqual(expectBad.filter(([, stop]) => stop <= part.end))
    }
    expect(bad).toBeGreaterThan(300)
  })

  test('a malformed quote is one problem with its line, and every record after it is read ("bad"x, an unclosed quote)', async () => {
    await using tmp = await tmpdir()
    const reason = (char: string) =>
      `malformed quotes: "${char}" after the closing quote of a quoted field (a quote inside a quoted field is written twice: "")`
    // the file: a closing quote with an x after it
    writeFileSync(tmp.join("a.csv"), 'id,text\n1,a\n2,"bad"x\n3,c\n4,d\n')
    const a = await read(tmp.join("a.csv"), { id: "id" })
    expect(a.flatMap((b) => b.rows).map((r) => [r.key, r.line, r.data.text])).toEqual([
      ["1", 2, "a"],
      ["3", 4, "c"],
      ["4", 5, "d"],
    ])
    expect(a.flatMap((b) => b.problems)).toEqual([{ line: 3, reason: reason("x"), excerpt: '2,"bad"x' }])

    // a quote that is never closed, with quoted fields on later lines: it ends at its own line end
    writeFileSync(tmp.join("b.csv"), 'id,text\n1,a\n2,"oops\n3,"c"\n4,"d, e"\n5,"f ""g"""\n')
    for (const chunk of [1 << 20, 7]) {
      const b = await read(tmp.join("b.csv"), { id: "id", chunk_bytes: chunk })
      expect(b.flatMap((x) => x.rows).map((r) => [r.key, r.line, r.data.text])).toEqual([
        ["1", 2, "a"],
        ["3", 4, "c"],
        ["4", 5, "d, e"],
        ["5", 6, 'f "g"'],
      ])
      expect(b.flatMap((x) => x.problems)).toEqual([{ line: 3, reason: reason("c"), excerpt: '2,"oops' }])
    }

    // on one line, the record goes on to its line end: its later fields, quoted or not, are part of it
    writeFileSync(tmp.join("c.csv"), 'id,text,n\n1,"He said "hi"",x\n2,"b","multi\nline"\n3,c,"z"\n')
    const c = await read(tmp.join("c.csv"), { id: "id" })
    expect(c.flatMap((x) => x.rows).map((r) => [r.key, r.line, r.data.n])).toEqual([
      ["2", 3, "multi\nline"],
      ["3", 5, "z"],
    ])
    expect(c.flatMap((x) => x.problems).map((p) => [p.line, p.reason])).toEqual([[2, reason("h")]])
  })

  test("a bad field at row 100 of a 50,000-row CSV costs that row alone", async () => {
    await using tmp = await tmpdir()
    const rows = Array.from({ length: 50_000 }, (_, i) => `k${i},"row ${i}, quoted"\n`)
    rows[99] = 'k99,"row 99" oops\n'
    writeFileSync(tmp.join("big.csv"), `id,text\n${rows.join("")}`)
    const batches = await read(tmp.join("big.csv"), { id: "id", chunk_bytes: 1 << 18 })
    const got = batches.flatMap((b) => b.rows)
    expect(got.length).toBe(49_999)
    const wrong = got.filter((r, n) => {
      const i = n < 99 ? n : n + 1
      return r.key !== `k${i}` || r.line !== i + 2 || r.data.text !== `row ${i}, quoted`
    })
    expect(wrong).toEqual([])
    expect(batches.flatMap((b) => b.problems).map((p) => [p.line, p.excerpt])).toEqual([
      [101, 'k99,"row 99" oops'],
    ])
  })

  test("a quote that opens before the last line and never closes stops the read, naming its line and the bytes left", async () => {
    await using tmp = await tmpdir()
    const file = tmp.join("u.csv")
    const rest = '2,"oops\n3,c\n4,d\n'
    writeFileSync(file, `id,text\n1,a\n${rest}`)
    for (const chunk of [1 << 20, 5]) {
      const batches: SourceBatch[] = []
      const reading = (async () => {
        for await (const b of csv.read(
          file,
          { id: "id", delimiter: ",", chunk_bytes: chunk, max_line_bytes: 1 << 24 },
          undefined,
        ))
          batches.push(b)
      })()
      await expect(reading).rejects.toBeInstanceOf(SourceError)
      await expect(reading).rejects.toThrow(
        `${file}:3: a quoted field opens here and never closes: the last ${rest.length} bytes of the file (from line 3) cannot be read`,
      )
      // the rows before it were read, and the last checkpoint is before the record that opens the quote
      expect(batches.flatMap((b) => b.rows).map((r) => r.key)).toEqual(["1"])
      expect(batches.at(-1)!.checkpoint.offset).toBe("id,text\n1,a\n".length)
    }
    // the quote opens on the second line of its record, which begins at line 3
    writeFileSync(file, 'id,text,n\n1,a,b\n2,"x\ny","z\n3,c,d\n')
    await expect(read(file)).rejects.toThrow(
      `${file}:4: a quoted field opens here and never closes: the last 17 bytes of the file (from line 3)`,
    )
  })

  test("a last record with no line end yet waits, quoted or not, and is read once it ends", async () => {
    await using tmp = await tmpdir()
    const file = tmp.join("w.csv")
    const warning = `${file}:3: the last line has no newline yet; it will be read when it is complete (if the file is complete, end it with a newline)`
    for (const [partial, end, text] of [
      ["2,b", "\n", "b"],
      ['2,"b', 'ee"\n', "bee"],
      ['2,"b"', "\r\n", "b"],
      ['2,"b" ', "\n", "b"],
    ]) {
      writeFileSync(file, `id,text\n1,a\n${partial}`)
      const first = await read(file, { id: "id" })
      expect(first.flatMap((b) => b.rows).map((r) => r.key)).toEqual(["1"])
      expect(first.flatMap((b) => b.problems)).toEqual([])
      expect(first.flatMap((b) => b.warnings ?? [])).toEqual([warning])
      appendFileSync(file, end!)
      const rest = await read(file, { id: "id" }, first.at(-1)!.checkpoint)
      expect(rest.flatMap((b) => b.rows).map((r) => [r.key, r.line, r.data.text])).toEqual([["2", 3, text]])
      expect(rest.flatMap((b) => b.warnings ?? [])).toEqual([])
    }
  })

  test("a record longer than max_line_bytes is one problem, walked past, and the records after it are read", async () => {
    await using tmp = await tmpdir()
    const file = tmp.join("l.csv")
    const long = "y".repeat(1500)
    // a long unquoted record, then a long quoted one spanning lines, then a well-formed rest
    writeFileSync(file, `id,text\n1,a\n2,${long}\n3,"${long}\n${long}"\n4,d\n5,"e\nf"\n`)
    for (const chunk of [256, 1 << 20]) {
      const batches = await read(file, { id: "id", chunk_bytes: chunk, max_line_bytes: 1024 })
      expect(batches.flatMap((b) => b.rows).map((r) => [r.key, r.line, r.data.text])).toEqual([
        ["1", 2, "a"],
        ["4", 6, "d"],
        ["5", 7, "e\nf"],
      ])
      expect(batches.flatMap((b) => b.problems)).toEqual([
        {
          line: 3,
          reason:
            "the record is 1503 bytes, longer than max_line_bytes (1024); raise max_line_bytes to read it",
          excerpt: `2,${long}`.slice(0, 200),
        },
        {
          line: 4,
          reason:
            "the record is 3006 bytes, longer than max_line_bytes (1024); raise max_line_bytes to read it",
          excerpt: `3,"${long}`.slice(0, 200),
        },
      ])
      // read from its checkpoint, the rest is the same
      const after = batches.find((b) => b.problems.some((p) => p.line === 4))!.checkpoint
      expect(
        (await read(file, { id: "id", max_line_bytes: 1024 }, after))
          .flatMap((b) => b.rows)
          .map((r) => r.key),
      ).toEqual(["4", "5"])
    }
  })

  test("a record that is not valid UTF-8 is a problem of its line; the others are read", async () => {
    await using tmp = await tmpdir()
    const file = tmp.join("b.csv")
    const bytes = (s: string) => Buffer.from(s, "latin1")
    writeFileSync(
      file,
      Buffer.concat([bytes('id,text\n1,"caf'), Buffer.from([0xe9]), bytes('"\n2,"two\nlines"\n3,ok\n')]),
    )
    const batches = await read(file, { id: "id" })
    expect(batches.flatMap((b) => b.rows).map((r) => [r.key, r.line, r.data.text])).toEqual([
      ["2", 3, "two\nlines"],
      ["3", 5, "ok"],
    ])
    expect(batches.flatMap((b) => b.problems)).toEqual([
      {
        line: 2,
        reason: "not valid UTF-8: the file must be UTF-8 text (convert it, e.g. with iconv)",
        excerpt: '1,"caf\ufffd"',
      },
    ])
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
