import { describe, expect, test } from "bun:test"
import { Database } from "bun:sqlite"
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { parquetMetadata } from "hyparquet"
import { parquetWriteFile } from "hyparquet-writer"
import { peakRss, prng, spool, start, until } from "../lib/spool.ts"
import { tmpdir } from "../lib/tmp.ts"

/** What the mock provider answers: its reply template with the rendered prompt. */
const reply = (prompt: string) => `mock reply to: ${prompt}`

interface Line {
  id: string
  state: string
  output: string | null
  error: { class: string; message: string } | null
  attempts: number
  usage: { input_tokens: number; output_tokens: number }
  cost_usd: number | null
  source: { file: string; row: number; id: string | null }
}

/** RFC 4180 quoting of one field. */
function field(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value
}

function toCsv(columns: string[], rows: Record<string, string>[]): string {
  return [columns.join(","), ...rows.map((r) => columns.map((c) => field(r[c] ?? "")).join(","))]
    .map((l) => `${l}\n`)
    .join("")
}

/** The line each data record of a CSV starts on: the header is line 1, a quoted newline adds one. */
function csvLines(rows: Record<string, string>[]): number[] {
  let line = 2
  return rows.map((r) => {
    const at = line
    line += Object.values(r).join("").split("\n").length
    return at
  })
}

/** A job file reading `sources` ([[sources]] tables) with the mock provider. */
function jobFile(o: {
  name: string
  sources: Record<string, string | number>[]
  prompt: string
  latencyMs?: number
}): string {
  const lines = [`name = ${JSON.stringify(o.name)}`]
  for (const s of o.sources) {
    lines.push("[[sources]]")
    for (const [k, v] of Object.entries(s)) lines.push(`${k} = ${JSON.stringify(v)}`)
  }
  lines.push("[provider]", 'name = "mock"')
  if (o.latencyMs !== undefined) lines.push("[provider.options]", `latency_ms = ${o.latencyMs}`)
  lines.push("[request]", `prompt = ${JSON.stringify(o.prompt)}`)
  return `${lines.join("\n")}\n`
}

const homeArgs = (home?: string) => (home ? ["--home", home] : [])

async function results(cwd: string, home?: string): Promise<Line[]> {
  const out = await spool(["results", ...homeArgs(home)], { cwd })
  expect(out.code).toBe(0)
  return out.stdout
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as Line)
}

async function status(cwd: string, home?: string) {
  const out = await spool(["status", "--json", ...homeArgs(home)], { cwd })
  expect(out.code).toBe(0)
  return JSON.parse(out.stdout) as {
    state: string
    total: number
    attempts: number
    counts: Record<string, number>
    malformed: { count: number; duplicates: number; sample: { file: string; line: number; reason: string }[] }
  }
}

/** A result line without what the mock's token count adds: what the sources decide. */
const parsed = ({ usage: _, ...line }: Line) => line

/** A result line of a row the mock completed at its first attempt (without its usage: see `parsed`). */
const completed = (id: string, text: string, file: string, row: number) => ({
  id,
  state: "completed",
  output: reply(text),
  error: null,
  attempts: 1,
  cost_usd: null,
  prompt_cache_saved_usd: null,
  cached: false,
  source: { file, row, id },
})

/** Runs a read-only query on a store. */
function query<T>(home: string, sql: string): T[] {
  const db = new Database(join(home, "spool.db"), { readonly: true })
  try {
    return db.query<T, []>(sql).all()
  } finally {
    db.close()
  }
}

/** A query for polling a store another process is writing: undefined until the store and its tables exist. */
function peek<T>(home: string, sql: string): T | undefined {
  if (!existsSync(join(home, "spool.db"))) return undefined
  try {
    return query<T>(home, sql)[0]
  } catch {
    return undefined
  }
}

describe("inputs through dist/spool", () => {
  test("a CSV with every quoting hazard: each field read exactly, ragged rows reported by line and skipped", async () => {
    await using tmp = await tmpdir()
    // [a record as written, and its text and note fields, or (a ragged row) the reason it is skipped]
    const records: [string, [string, string] | string][] = [
      ["1,plain,a", ["plain", "a"]],
      // a space after a closing quote (papaparse allows it), then a quoted field opening on a newline
      ['2,"spaced quote" ,b', ["spaced quote", "b"]],
      ['3,"\nstarts with a newline",c', ["\nstarts with a newline", "c"]],
      ['4,"with, comma",d', ["with, comma", "d"]],
      ['5,"say ""hi""",e', ['say "hi"', "e"]],
      ['6,"lf\ninside",f', ["lf\ninside", "f"]],
      ['7,"crlf\r\ninside\r\n",g', ["crlf\r\ninside\r\n", "g"]],
      ["8,,h", ["", "h"]],
      ["9,too,many,fields", "has 4 fields; the header has 3"],
      ['10,",",i', [",", "i"]],
      ['11,"""quoted"", then ""more""",j', ['"quoted", then "more"', "j"]],
      ["12,few", "has 2 fields; the header has 3"],
      ['13,"日本語 ünïcødé 🎉 \u202e",k', ["日本語 ünïcødé 🎉 \u202e", "k"]],
      ['14,"",', ["", ""]],
      ['15,"  padded  ",  spaces  ', ["  padded  ", "  spaces  "]],
    ]
    // a BOM, CRLF line ends, and a blank line at the end
    const file = tmp.join("hazards.csv")
    writeFileSync(file, `\ufeffid,text,note\r\n${records.map(([raw]) => `${raw}\r\n`).join("")}\r\n`)
    let line = 2
    const lineOf = records.map(([raw]) => {
      const at = line
      line += raw.split("\n").length
      return at
    })
    const good = records.flatMap(([raw, value], i) =>
      typeof value === "string" ? [] : [{ id: raw.split(",")[0]!, value, line: lineOf[i]! }],
    )
    const ragged = records.flatMap(([, value], i) =>
      typeof value === "string" ? [{ file, line: lineOf[i]!, reason: value }] : [],
    )
    expect(good.length).toBe(13)

    // read whole, and in regions so small that most records span several
    for (const chunk of [undefined, 16, 61]) {
      const home = tmp.join(`home-${chunk ?? "whole"}`)
      const source = { path: "hazards.csv", id: "id", ...(chunk ? { chunk_bytes: chunk } : {}) }
      writeFileSync(
        tmp.join("job.toml"),
        jobFile({ name: "hazards", sources: [source], prompt: "{{text}}|{{note}}" }),
      )
      const run = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path })
      expect(run.code).toBe(0)
      expect(run.stderr).toContain("input lines skipped")
      expect(run.stderr).toContain('run "hazards": 13 completed, 0 failed of 13')
      expect((await results(tmp.path, home)).map(parsed)).toEqual(
        good.map(({ id, value: [text, note], line }) => ({
          id,
          state: "completed",
          output: reply(`${text}|${note}`),
          error: null,
          attempts: 1,
          cost_usd: null,
          prompt_cache_saved_usd: null,
          cached: false,
          source: { file, row: line, id },
        })),
      )
      const view = await status(tmp.path, home)
      expect(view.total).toBe(13)
      expect(view.counts.completed).toBe(13)
      expect(view.malformed).toEqual({ count: 2, duplicates: 0, sample: ragged })
      const text = await spool(["status", "--home", home], { cwd: tmp.path })
      for (const r of ragged) expect(text.stdout).toContain(`${file}:${r.line}  ${r.reason}`)
    }
  })

  test("100,000 Parquet rows in row groups of 10,000 all complete at concurrency 256, each once and exactly", async () => {
    await using tmp = await tmpdir()
    const n = 100_000
    const file = tmp.join("big.parquet")
    const text = (i: number) => `row ${i} ${["α", "β", "γ", "δ"][i % 4]}`
    parquetWriteFile({
      filename: file,
      rowGroupSize: 10_000,
      columnData: [
        { name: "id", type: "STRING", data: Array.from({ length: n }, (_, i) => `p${i}`) },
        { name: "text", type: "STRING", data: Array.from({ length: n }, (_, i) => text(i)) },
        { name: "n", type: "INT32", data: Array.from({ length: n }, (_, i) => i) },
      ],
    })
    const groups = parquetMetadata(await Bun.file(file).arrayBuffer()).row_groups
    expect(groups.map((g) => Number(g.num_rows))).toEqual(Array(10).fill(10_000))

    const run = await spool(
      [
        "run",
        "--input",
        "big.parquet",
        "--id",
        "id",
        "--prompt",
        "{{n}}: {{text}}",
        "--provider",
        "mock",
        "--concurrency",
        "256",
      ],
      { cwd: tmp.path },
    )
    expect(run.code).toBe(0)
    expect(run.stderr).toContain(`run "big": ${n} completed, 0 failed of ${n}`)

    const lines = await results(tmp.path)
    expect(lines.length).toBe(n)
    expect(new Set(lines.map((l) => l.id)).size).toBe(n)
    const expected = (i: number) => ({
      id: `p${i}`,
      state: "completed",
      output: reply(`${i}: ${text(i)}`),
      error: null,
      attempts: 1,
      cost_usd: null,
      prompt_cache_saved_usd: null,
      cached: false,
      source: { file, row: i + 1, id: `p${i}` },
    })
    for (const i of [0, 1, 9_999, 10_000, 54_321, n - 1]) expect(parsed(lines[i]!)).toEqual(expected(i))
    const wrong = lines.filter((l, i) => JSON.stringify(parsed(l)) !== JSON.stringify(expected(i)))
    expect(wrong).toEqual([])
  }, 180_000)

  test("two inputs with the same ids: results are namespaced by file name, each with its exact lineage", async () => {
    await using tmp = await tmpdir()
    writeFileSync(
      tmp.join("a.jsonl"),
      [1, 2, 3].map((i) => JSON.stringify({ id: i, text: `a ${i}` })).join("\n") + "\n",
    )
    writeFileSync(tmp.join("b.csv"), "id,text\n1,b 1\n2,b 2\n3,b 3\n")
    writeFileSync(
      tmp.join("job.toml"),
      jobFile({
        name: "clash",
        sources: [
          { path: "a.jsonl", id: "id" },
          { path: "b.csv", id: "id" },
        ],
        prompt: "{{text}}",
      }),
    )
    const run = await spool(["run", "job.toml"], { cwd: tmp.path })
    expect(run.code).toBe(0)
    expect(run.stderr).toContain('run "clash": 6 completed, 0 failed of 6')
    const line = (file: string, key: number, row: number) => ({
      id: `${file}:${key}`,
      state: "completed",
      output: reply(`${file[0]} ${key}`),
      error: null,
      attempts: 1,
      cost_usd: null,
      prompt_cache_saved_usd: null,
      cached: false,
      source: { file: tmp.join(file), row, id: String(key) },
    })
    expect((await results(tmp.path)).map(parsed)).toEqual([
      line("a.jsonl", 1, 1),
      line("a.jsonl", 2, 2),
      line("a.jsonl", 3, 3),
      line("b.csv", 1, 2),
      line("b.csv", 2, 3),
      line("b.csv", 3, 4),
    ])
    // an id seen in another file is no duplicate
    expect((await status(tmp.path)).malformed.count).toBe(0)

    // two inputs of the same name (through --input, twice): prefixed by position as well
    for (const dir of ["x", "y"]) {
      mkdirSync(tmp.join(dir))
      writeFileSync(tmp.join(dir, "in.jsonl"), `{"id":"1","text":"${dir}1"}\n{"id":"2","text":"${dir}2"}\n`)
    }
    const home = tmp.join("twins")
    const twins = await spool(
      [
        ...["run", "--input", "x/in.jsonl", "--input", "y/in.jsonl", "--id", "id"],
        ...["--prompt", "{{text}}", "--provider", "mock", "--home", home],
      ],
      { cwd: tmp.path },
    )
    expect(twins.code).toBe(0)
    expect(
      (await results(tmp.path, home)).map((l) => [l.id, l.output, l.source.file, l.source.row, l.source.id]),
    ).toEqual([
      ["1.in.jsonl:1", reply("x1"), tmp.join("x", "in.jsonl"), 1, "1"],
      ["1.in.jsonl:2", reply("x2"), tmp.join("x", "in.jsonl"), 2, "2"],
      ["2.in.jsonl:1", reply("y1"), tmp.join("y", "in.jsonl"), 1, "1"],
      ["2.in.jsonl:2", reply("y2"), tmp.join("y", "in.jsonl"), 2, "2"],
    ])
  })

  test("a run's inputs are fixed: another order or set is refused (exit 2) with --new-run as the way out", async () => {
    await using tmp = await tmpdir()
    const home = tmp.join(".spool")
    writeFileSync(tmp.join("a.jsonl"), '{"id":1,"text":"a1"}\n{"id":2,"text":"a2"}\n{"id":3,"text":"a3"}\n')
    writeFileSync(tmp.join("b.csv"), "id,text\n1,b1\n2,b2\n3,b3\n")
    writeFileSync(tmp.join("c.jsonl"), '{"id":1,"text":"c1"}\n')
    const job = (...paths: string[]) =>
      jobFile({
        name: "mix",
        sources: paths.map((path) => ({ path, id: "id" })),
        prompt: "{{text}}",
        latencyMs: 100,
      })
    writeFileSync(tmp.join("job.toml"), job("a.jsonl", "b.csv"))
    writeFileSync(tmp.join("swapped.toml"), job("b.csv", "a.jsonl"))

    // a run that does not finish: killed once its first call is under way
    const child = start(["run", "job.toml", "--concurrency", "1"], { cwd: tmp.path })
    await until(
      () => (peek<{ n: number }>(home, "SELECT count(*) AS n FROM attempts")?.n ?? 0) > 0,
      30_000,
      "the first call",
    )
    child.kill("SIGKILL")
    await child.exited
    const before = await status(tmp.path)
    // killed: no process works on it any more
    expect(before.state).toBe("interrupted")
    expect(before.counts.completed).toBeLessThan(6)

    const refusals: [string[], string, string][] = [
      [
        ["swapped.toml"],
        'run "mix" reads a.jsonl, b.csv in that order; this job gives b.csv, a.jsonl',
        "× the same files in another order",
      ],
      [
        ["job.toml", "--input", "a.jsonl", "--id", "id"],
        'run "mix" reads a.jsonl, b.csv; this job gives a.jsonl',
        `× ${tmp.join("b.csv")} is no longer listed`,
      ],
      [
        ["job.toml", "--input", "a.jsonl", "--input", "b.csv", "--input", "c.jsonl", "--id", "id"],
        'run "mix" reads a.jsonl, b.csv; this job gives a.jsonl, b.csv, c.jsonl',
        `× ${tmp.join("c.jsonl")} was not an input of the run`,
      ],
      [
        ["job.toml", "--input", "c.jsonl", "--input", "b.csv", "--id", "id"],
        'run "mix" reads a.jsonl, b.csv; this job gives c.jsonl, b.csv',
        `× ${tmp.join("a.jsonl")} is no longer listed\n  × ${tmp.join("c.jsonl")} was not an input of the run`,
      ],
    ]
    for (const [args, message, problem] of refusals) {
      const out = await spool(["run", ...args], { cwd: tmp.path })
      expect(out.code).toBe(2)
      expect(out.stderr).toContain(`spool: ${message}\n`)
      expect(out.stderr).toContain(problem)
      expect(out.stderr).toContain("--new-run")
    }
    // nothing was touched: the same run, in the same state
    const after = await status(tmp.path)
    expect([after.state, after.counts, after.attempts]).toEqual([
      before.state,
      before.counts,
      before.attempts,
    ])
    expect(JSON.parse((await spool(["runs", "--json"], { cwd: tmp.path })).stdout).length).toBe(1)

    // the inputs as they were: it resumes and finishes
    const resumed = await spool(["run", "job.toml"], { cwd: tmp.path })
    expect(resumed.code).toBe(0)
    expect(resumed.stderr).toContain('run "mix": 6 completed, 0 failed of 6')

    // a finished run is held to its inputs as well; --new-run starts a fresh one in the new order
    const again = await spool(["run", "swapped.toml"], { cwd: tmp.path })
    expect(again.code).toBe(2)
    expect(again.stderr).toContain("this job gives b.csv, a.jsonl")
    const fresh = await spool(["run", "swapped.toml", "--new-run"], { cwd: tmp.path })
    expect(fresh.code).toBe(0)
    expect((await results(tmp.path)).map((l) => l.id)).toEqual([
      ...["b.csv:1", "b.csv:2", "b.csv:3"],
      ...["a.jsonl:1", "a.jsonl:2", "a.jsonl:3"],
    ])
    const runs = JSON.parse((await spool(["runs", "--json"], { cwd: tmp.path })).stdout)
    expect(runs.map((r: { state: string; total: number }) => [r.state, r.total])).toEqual([
      ["completed", 6],
      ["completed", 6],
    ])
  })

  test("the same rows as CSV, JSONL and Parquet give the same results, apart from lineage", async () => {
    await using tmp = await tmpdir()
    const texts = [
      "plain",
      "with, comma",
      'say "hi"',
      "two\nlines",
      "crlf\r\nline",
      "",
      "  padded  ",
      "日本語 🎉",
    ]
    const rows = Array.from({ length: 50 }, (_, i) => ({
      id: `r${i + 1}`,
      text: `${texts[i % texts.length]}`,
      lang: ["en", "", "fr;be", "de\t"][i % 4]!,
    }))
    writeFileSync(tmp.join("rows.csv"), toCsv(["id", "text", "lang"], rows))
    writeFileSync(tmp.join("rows.jsonl"), rows.map((r) => JSON.stringify(r)).join("\n") + "\n")
    parquetWriteFile({
      filename: tmp.join("rows.parquet"),
      rowGroupSize: 16,
      columnData: (["id", "text", "lang"] as const).map((name) => ({
        name,
        type: "STRING" as const,
        data: rows.map((r) => r[name]),
      })),
    })
    const rowOf: Record<string, number[]> = {
      "rows.csv": csvLines(rows),
      "rows.jsonl": rows.map((_, i) => i + 1),
      "rows.parquet": rows.map((_, i) => i + 1),
    }
    const got: Record<string, Omit<Line, "source">[]> = {}
    for (const name of Object.keys(rowOf)) {
      const home = tmp.join(`home-${name}`)
      const run = await spool(
        [
          "run",
          "--input",
          name,
          "--id",
          "id",
          "--prompt",
          "{{id}}: {{text}} [{{lang}}]",
          "--provider",
          "mock",
        ].concat("--home", home),
        { cwd: tmp.path },
      )
      expect(run.code).toBe(0)
      expect(run.stderr).toContain('run "rows": 50 completed, 0 failed of 50')
      const lines = await results(tmp.path, home)
      expect(lines.map((l) => l.source)).toEqual(
        rows.map((r, i) => ({ file: tmp.join(name), row: rowOf[name]![i]!, id: r.id })),
      )
      got[name] = lines.map(({ source: _, ...rest }) => rest)
    }
    expect(got["rows.csv"]!.map((l) => [l.id, l.state, l.output])).toEqual(
      rows.map((r) => [r.id, "completed", reply(`${r.id}: ${r.text} [${r.lang}]`)]),
    )
    expect(got["rows.jsonl"]).toEqual(got["rows.csv"]!)
    expect(got["rows.parquet"]).toEqual(got["rows.csv"]!)
  })

  test("SIGKILL while a large CSV is being ingested, at seeded moments: every row becomes one item, completed once", async () => {
    await using tmp = await tmpdir()
    const n = 300_000
    const home = tmp.join(".spool")
    const text = (i: number) => `row ${i}, text`
    const body: string[] = ["id,text\n"]
    for (let i = 0; i < n; i++) body.push(`k${i},"${text(i)}"\n`)
    writeFileSync(tmp.join("big.csv"), body.join(""))
    writeFileSync(
      tmp.join("job.toml"),
      // quarter-megabyte batches: about 35 checkpoints to die between
      jobFile({
        name: "bulk",
        sources: [{ path: "big.csv", id: "id", chunk_bytes: 262_144 }],
        prompt: "{{text}}",
      }),
    )
    const ingested = () =>
      peek<{ rows: number; done: number }>(
        home,
        "SELECT coalesce(sum(i.rows), 0) AS rows, max(r.ingested) AS done FROM inputs i JOIN runs r ON r.id = i.run_id",
      ) ?? { rows: 0, done: 0 }

    const random = prng(20_261_127)
    let kills = 0
    for (let round = 0; round < 5; round++) {
      const from = ingested().rows
      // one call at a time, so that reading the file is most of what the process does
      const child = start(["run", "job.toml", "--concurrency", "1"], { cwd: tmp.path })
      await until(
        () => ingested().rows > from || child.exitCode !== null,
        60_000,
        "a batch of rows to be ingested",
      )
      await Bun.sleep(Math.floor(random() * 150))
      if (child.exitCode !== null) break
      child.kill("SIGKILL")
      await child.exited
      const now = ingested()
      if (now.done) break
      expect(now.rows).toBeGreaterThan(from)
      expect(now.rows).toBeLessThan(n)
      kills++
    }
    expect(kills).toBeGreaterThanOrEqual(3)

    const last = await spool(["run", "job.toml", "--concurrency", "256"], { cwd: tmp.path })
    expect(last.code).toBe(0)
    expect(last.stderr).toContain(`run "bulk": ${n} completed, 0 failed of ${n}`)

    const items = query<{ key: string; row: number; state: string; output: string; attempts: number }>(
      home,
      "SELECT key, row, state, output, attempts FROM items ORDER BY id",
    )
    expect(items.length).toBe(n)
    // in file order, each row once: nothing read twice, nothing skipped across the kills
    const wrong = items.filter(
      (it, i) =>
        it.key !== `k${i}` || it.row !== i + 2 || it.state !== "completed" || it.output !== reply(text(i)),
    )
    expect(wrong).toEqual([])
    expect(query(home, "SELECT rows, problems, duplicates FROM inputs")).toEqual([
      { rows: n, problems: 0, duplicates: 0 },
    ])
    expect(query(home, "SELECT count(*) AS n FROM problems")).toEqual([{ n: 0 }])
    // one successful call per item, and it is the item's last attempt
    const outcomes = query<{ outcome: string; n: number }>(
      home,
      "SELECT outcome, count(*) AS n FROM attempts GROUP BY outcome ORDER BY outcome",
    )
    expect(outcomes.find((o) => o.outcome === "ok")?.n).toBe(n)
    expect(query(home, "SELECT count(DISTINCT item_id) AS n FROM attempts WHERE outcome = 'ok'")).toEqual([
      { n },
    ])
    expect(
      query(
        home,
        `SELECT count(*) AS n FROM attempts a
         WHERE a.n > (SELECT b.n FROM attempts b WHERE b.item_id = a.item_id AND b.outcome = 'ok')`,
      ),
    ).toEqual([{ n: 0 }])
    // the only other attempts are the calls a kill cut short: one in flight and one claimed ahead, at most
    const cut = outcomes.filter((o) => o.outcome !== "ok")
    for (const o of cut) expect(["lost", "unsent"]).toContain(o.outcome)
    expect(cut.reduce((a, o) => a + o.n, 0)).toBeLessThanOrEqual(2 * kills)
    expect(query(home, "PRAGMA integrity_check")).toEqual([{ integrity_check: "ok" }])
  }, 240_000)

  test("rows appended to a CSV are read by the next run; the rows done before are not requested again", async () => {
    await using tmp = await tmpdir()
    const file = tmp.join("grow.csv")
    writeFileSync(file, "id,text\r\nA,one\r\nB,two\r\nC,three\r\n")
    const args = ["run", "--input", "grow.csv", "--id", "id", "--prompt", "{{text}}", "--provider", "mock"]
    const first = await spool(args, { cwd: tmp.path })
    expect(first.code).toBe(0)
    expect(first.stderr).toContain('run "grow": 3 completed, 0 failed of 3')

    appendFileSync(file, 'D,"four, with\r\na newline"\r\nE,five\r\n')
    const second = await spool(args, { cwd: tmp.path })
    expect(second.code).toBe(0)
    expect(second.stderr).toContain('run "grow": 5 completed, 0 failed of 5')
    expect((await results(tmp.path)).map(parsed)).toEqual([
      completed("A", "one", file, 2),
      completed("B", "two", file, 3),
      completed("C", "three", file, 4),
      completed("D", "four, with\r\na newline", file, 5),
      completed("E", "five", file, 7),
    ])
    // one call per row over both runs
    const view = await status(tmp.path)
    expect([view.total, view.attempts, view.malformed.count]).toEqual([5, 5, 0])

    // and a third run with nothing new has nothing to do
    const third = await spool(args, { cwd: tmp.path })
    expect(third.code).toBe(0)
    expect((await status(tmp.path)).attempts).toBe(5)
  })

  test("an edited CSV under an unfinished run is refused, naming the file and offering --reingest", async () => {
    await using tmp = await tmpdir()
    const home = tmp.join(".spool")
    const file = tmp.join("edit.csv")
    const original = `id,text\n${Array.from({ length: 20 }, (_, i) => `${i + 1},t${i + 1}\n`).join("")}`
    writeFileSync(file, original)
    writeFileSync(
      tmp.join("job.toml"),
      jobFile({
        name: "edit",
        sources: [{ path: "edit.csv", id: "id" }],
        prompt: "{{text}}",
        latencyMs: 100,
      }),
    )
    // a run that does not finish: killed after its first two items
    const child = start(["run", "job.toml", "--concurrency", "1"], { cwd: tmp.path })
    const completed = () =>
      peek<{ n: number }>(home, "SELECT count(*) AS n FROM items WHERE state = 'completed'")?.n ?? 0
    await until(() => completed() >= 2, 30_000, "two completed items")
    child.kill("SIGKILL")
    await child.exited
    const done = (await results(tmp.path)).filter((l) => l.state === "completed")
    expect(done.length).toBeGreaterThanOrEqual(2)
    expect(done.length).toBeLessThan(20)
    const attempts = (await status(tmp.path)).attempts

    // the first row, long since read, changes
    writeFileSync(file, original.replace("\n1,t1\n", "\n1,EDITED\n"))
    const out = await spool(["run", "job.toml"], { cwd: tmp.path })
    expect(out.code).toBe(2)
    expect(out.stderr).toContain(
      `spool: ${file} changed since it was ingested: its first ${original.length} bytes (21 lines) are not the same\n`,
    )
    expect(out.stderr).toContain("--reingest")
    // refused before any call: the run is as the kill left it
    const view = await status(tmp.path)
    expect([view.state, view.attempts, view.counts.completed]).toEqual(["interrupted", attempts, done.length])

    // --reingest reads it again: every row completes, and what was done is kept as it was
    const reread = await spool(["run", "job.toml", "--reingest"], { cwd: tmp.path })
    expect(reread.code).toBe(0)
    expect(reread.stderr).toContain('run "edit": 20 completed, 0 failed of 20')
    const lines = await results(tmp.path)
    expect(lines.map((l) => [l.id, l.state])).toEqual(
      Array.from({ length: 20 }, (_, i) => [String(i + 1), "completed"]),
    )
    for (const before of done) expect(lines.find((l) => l.id === before.id)).toEqual(before)
    expect(readFileSync(file, "utf8")).toContain("1,EDITED")
  })
})

describe("bad input through dist/spool (issue 12)", () => {
  const job = (name: string, path: string, extra: Record<string, string | number> = {}) =>
    jobFile({ name, sources: [{ path, id: "id", ...extra }], prompt: "{{text}}" })

  test("a malformed CSV quote costs its record alone; a quote that never closes stops with exit 2 and resumes once fixed", async () => {
    await using tmp = await tmpdir()
    const file = tmp.join("in.csv")
    writeFileSync(file, 'id,text\n1,a\n2,"bad"x\n3,c\n4,d\n')
    writeFileSync(tmp.join("job.toml"), job("quotes", "in.csv"))
    const run = await spool(["run", "job.toml"], { cwd: tmp.path })
    expect(run.code).toBe(0)
    expect(run.stderr).toContain('run "quotes": 3 completed, 0 failed of 3')
    expect((await results(tmp.path)).map(parsed)).toEqual([
      completed("1", "a", file, 2),
      completed("3", "c", file, 4),
      completed("4", "d", file, 5),
    ])
    const reason = `malformed quotes: "x" after the closing quote of a quoted field (a quote inside a quoted field is written twice: "")`
    expect((await status(tmp.path)).malformed).toEqual({
      count: 1,
      duplicates: 0,
      sample: [{ file, line: 3, reason }],
    })

    // a quote left open to the end of the file: the rows before it are kept, the rest is not read, and it says so
    const home = tmp.join("open")
    writeFileSync(file, 'id,text\n1,a\n2,"oops\n3,c\n4,d\n')
    const open = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path })
    expect(open.code).toBe(2)
    expect(open.stderr).toContain(
      `spool: ${file}:3: a quoted field opens here and never closes: the last 16 bytes of the file (from line 3) cannot be read\n`,
    )
    expect(open.stderr).toContain("Close the quote")
    // closing it changes nothing already read: the run goes on from line 3
    writeFileSync(file, 'id,text\n1,a\n2,"oops"\n3,c\n4,d\n')
    const fixed = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path })
    expect(fixed.code).toBe(0)
    expect(fixed.stderr).toContain('run "quotes": 4 completed, 0 failed of 4')
    expect((await results(tmp.path, home)).map(parsed)).toEqual([
      completed("1", "a", file, 2),
      completed("2", "oops", file, 3),
      completed("3", "c", file, 4),
      completed("4", "d", file, 5),
    ])
    expect((await status(tmp.path, home)).malformed.count).toBe(0)
  })

  test("a row its writer is still on waits, unreported as malformed; the run finishes with the rest and reads it once complete", async () => {
    await using tmp = await tmpdir()
    const file = tmp.join("in.jsonl")
    const line = (i: number) => `{"id":"k${i}","text":"row ${i}"}\n`
    writeFileSync(file, [1, 2, 3, 4, 5].map(line).join(""))
    writeFileSync(tmp.join("job.toml"), job("tail", "in.jsonl"))
    expect((await spool(["run", "job.toml"], { cwd: tmp.path })).code).toBe(0)

    appendFileSync(file, '{"id":"k6","text":"row')
    const waiting = await spool(["run", "job.toml"], { cwd: tmp.path })
    expect(waiting.code).toBe(0)
    expect(waiting.stderr).toContain(
      `${file}:6: the last line has no newline yet; it will be read when it is complete (if the file is complete, end it with a newline)`,
    )
    expect(waiting.stderr).toContain('run "tail": 5 completed, 0 failed of 5')
    expect(waiting.stderr).not.toContain("input lines skipped")
    expect((await status(tmp.path)).malformed.count).toBe(0)

    appendFileSync(file, ' 6"}\n')
    const complete = await spool(["run", "job.toml"], { cwd: tmp.path })
    expect(complete.code).toBe(0)
    expect(complete.stderr).not.toContain("no newline yet")
    expect(complete.stderr).toContain('run "tail": 6 completed, 0 failed of 6')
    expect((await results(tmp.path)).map(parsed).at(-1)).toEqual(completed("k6", "row 6", file, 6))
    const view = await status(tmp.path)
    expect([view.total, view.attempts, view.malformed.count]).toEqual([6, 6, 0])
  })

  test("random bytes named .jsonl, and a file a fifth malformed, are refused with exit 2 naming the file; max_malformed lets one through", async () => {
    await using tmp = await tmpdir()
    const random = prng(756)
    const noise = new Uint8Array(300_000).map(() => Math.floor(random() * 256))
    writeFileSync(tmp.join("noise.jsonl"), noise)
    writeFileSync(tmp.join("job.toml"), job("noise", "noise.jsonl"))
    const refused = await spool(["run", "job.toml"], { cwd: tmp.path })
    expect(refused.code).toBe(2)
    expect(refused.stderr).toContain(
      `spool: ${tmp.join("noise.jsonl")}: its first 100 rows are all malformed, so it does not look like jsonl data; the first is line 1: `,
    )
    expect(refused.stderr).toContain("raise sources.0.max_malformed")
    // refused before a run was made of it
    expect(JSON.parse((await spool(["runs", "--json"], { cwd: tmp.path })).stdout)).toEqual([])

    // 1,500 rows, every 5th not JSON and one not UTF-8
    const rows = Array.from({ length: 1500 }, (_, i) =>
      i % 5 === 4 ? Buffer.from(`{"id":"m${i}",\n`) : Buffer.from(`{"id":"m${i}","text":"row ${i}"}\n`),
    )
    rows[0] = Buffer.concat([Buffer.from('{"id":"m0","text":"caf'), Buffer.from([0xe9]), Buffer.from('"}\n')])
    const file = tmp.join("mixed.jsonl")
    writeFileSync(file, Buffer.concat(rows))
    writeFileSync(tmp.join("mixed.toml"), job("mixed", "mixed.jsonl"))
    const share = await spool(["run", "mixed.toml"], { cwd: tmp.path })
    expect(share.code).toBe(2)
    expect(share.stderr).toContain(
      `spool: ${file}: 301 of its first 1500 rows are malformed (20.1%), more than max_malformed allows (10%), so it does not look like jsonl data; the first is line 1: not valid UTF-8`,
    )
    writeFileSync(tmp.join("mixed.toml"), job("mixed", "mixed.jsonl", { max_malformed: "25%" }))
    const let_through = await spool(["run", "mixed.toml"], { cwd: tmp.path })
    expect(let_through.code).toBe(0)
    expect(let_through.stderr).toContain('run "mixed": 1199 completed, 0 failed of 1199')
    const view = await status(tmp.path)
    expect(view.malformed.count).toBe(301)
    expect(view.malformed.sample[0]).toEqual({
      file,
      line: 1,
      reason: "not valid UTF-8: the file must be UTF-8 text (convert it, e.g. with iconv)",
    })
    expect(view.malformed.sample[1]?.line).toBe(5)
  })

  test("a 50 MB line is a problem row, read past in bounded memory, and the rows after it are ingested", async () => {
    await using tmp = await tmpdir()
    const file = tmp.join("in.jsonl")
    const big = `{"id":"big","text":"${"x".repeat(50 * 1024 * 1024)}"}`
    writeFileSync(
      file,
      `{"id":"a","text":"one"}\n${big}\n{"id":"c","text":"three"}\n{"id":"d","text":"four"}\n`,
    )
    writeFileSync(tmp.join("job.toml"), job("long", "in.jsonl"))
    const child = start(["run", "job.toml"], { cwd: tmp.path })
    const [stderr, code, peak] = await Promise.all([
      new Response(child.stderr).text(),
      child.exited,
      peakRss(child),
    ])
    expect(code).toBe(0)
    expect(stderr).toContain('run "long": 3 completed, 0 failed of 3')
    // the line was never held whole (a 50 MB line peaked at 1.25 GB before)
    expect(peak).toBeGreaterThan(0)
    expect(peak).toBeLessThan(400 * 1024 * 1024)
    expect((await results(tmp.path)).map(parsed)).toEqual([
      completed("a", "one", file, 1),
      completed("c", "three", file, 3),
      completed("d", "four", file, 4),
    ])
    expect((await status(tmp.path)).malformed.sample).toEqual([
      {
        file,
        line: 2,
        reason: `the line is ${big.length + 1} bytes, longer than max_line_bytes (16777216); raise max_line_bytes to read it`,
      },
    ])
  }, 60_000)

  test("an input that is a directory, a device or a FIFO is refused for what it is, at once", async () => {
    await using tmp = await tmpdir()
    mkdirSync(tmp.join("d.jsonl"))
    Bun.spawnSync(["mkfifo", tmp.join("f.jsonl")])
    const cases: [string, string][] = [
      ["d.jsonl", `spool: cannot read ${tmp.join("d.jsonl")}: it is a directory\n`],
      ["/dev/null", "spool: cannot read /dev/null: it is not a regular file (character device)\n"],
      ["f.jsonl", `spool: cannot read ${tmp.join("f.jsonl")}: it is not a regular file (FIFO)\n`],
    ]
    for (const [input, message] of cases) {
      const args = ["run", "--input", input, "--format", "jsonl", "--prompt", "x", "--provider", "mock"]
      const out = await spool(args, { cwd: tmp.path })
      expect(out.code).toBe(2)
      expect(out.stderr).toContain(message)
    }
  })

  test("every unknown key is reported beside the other problems, with exit 2 and nothing written", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("in.jsonl"), '{"id":"1","text":"a"}\n')
    writeFileSync(
      tmp.join("job.toml"),
      'name = "keys"\nzzz = 1\n[source]\npth = "in.jsonl"\n[provider]\nname = "mock"\n[request]\nprompt = "{{text}}"\nmax_tokens = 0\n[bogus]\na = 1\n',
    )
    const out = await spool(["run", "job.toml"], { cwd: tmp.path })
    expect(out.code).toBe(2)
    expect(out.stderr).toContain(
      [
        `spool: ${tmp.join("job.toml")}: the job is not valid`,
        "  × source.path: missing (required)",
        "  × request.max_tokens: must be at least 1",
        "  × zzz: unknown key (check its spelling)",
        '  × source.pth: unknown key; did you mean "path"?',
        "  × bogus: unknown key (check its spelling)",
        "  Fix the keys listed above; nothing was run.",
      ].join("\n"),
    )
    expect(existsSync(tmp.join(".spool"))).toBe(false)
  })
})
