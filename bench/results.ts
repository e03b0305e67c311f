/**
 * Results export (issue 17): `spool results` of a finished run of N items as JSONL, CSV and Parquet, joined to the
 * input rows, against reading the same items from the ledger alone (the baseline: the export's reads, nothing
 * written). `bun bench/results.ts [--quick]` (after `bun run build`) measures and writes the section "Results export
 * (issue 17)" of docs/BENCHMARKS.md: 1,000,000 items (100,000 with --quick), each contender in a process of its own,
 * the formats and the baseline alternated three times, the median of each kept, peak RSS read from /proc (VmHWM).
 *
 *   bun bench/results.ts fill DIR N   untimed: a store with one run of N completed items (bench/data.ts rows, a
 *                                     structured answer each, gpt-4o-mini's tokens), written straight into its tables
 *   bun bench/results.ts read DIR     the baseline: every item of the run read as the export reads them, in pages
 */
import { Database } from "bun:sqlite"
import { existsSync, mkdirSync, rmSync, statSync } from "node:fs"
import { cpus } from "node:os"
import { join } from "node:path"
import * as jobs from "../src/core/job/job.ts"
import { open } from "../src/core/ledger/open.ts"
import { exportRows } from "../src/core/report/export.ts"
import { row } from "./data.ts"
import { fmt, median, medianRun, root, splice, type Figures } from "./shared.ts"

const HEADING = "## Results export (issue 17)"
const SCHEMA = {
  type: "object",
  additionalProperties: false,
  required: ["label", "confidence", "tags"],
  properties: {
    label: { type: "string" },
    confidence: { type: "number" },
    tags: { type: "array", items: { type: "string" } },
  },
}

const [mode, dir, n] = process.argv.slice(2) as [string | undefined, string, string]
if (mode === undefined || mode === "--quick") {
  await report(mode === "--quick")
  process.exit(0)
}

if (mode === "fill") {
  mkdirSync(dir, { recursive: true })
  const rows = Number(n)
  const { job } = jobs.load(undefined, {
    name: "bench",
    input: ["/bench/in.jsonl"],
    prompt: "Ticket: {{subject}}",
    model: "gpt-4o-mini",
  })
  const l = await open(dir)
  const { run } = await l.runs.create({
    name: "bench",
    job: { ...job, output: { name: "label", schema: SCHEMA } },
    fingerprint: "fp",
    resume: "",
    inputs: [{ path: "/bench/in.jsonl", format: "jsonl" }],
  })
  await l.close()
  const db = new Database(join(dir, "spool.db"))
  const insert = db.prepare(
    `INSERT INTO items (run_id, input, key, row, source_id, data, state, attempts, output, input_tokens,
     output_tokens, updated_at) VALUES (?, 0, ?, ?, ?, ?, 'completed', 1, ?, ?, ?, ?)`,
  )
  const now = Date.now()
  for (let from = 0; from < rows; from += 50_000) {
    db.transaction(() => {
      for (let i = from; i < Math.min(rows, from + 50_000); i++) {
        const r = row(i)
        const output = JSON.stringify({
          label: i % 3 ? "billing" : "bug",
          confidence: (i % 100) / 100,
          tags: ["t", r.id],
        })
        insert.run(run.id, r.id, i + 1, r.id, JSON.stringify(r), output, 40 + (i % 7), 12 + (i % 5), now)
      }
    })()
  }
  db.close()
  console.log(JSON.stringify({ rows }))
  process.exit(0)
}

if (mode === "read") {
  const l = await open(dir, { access: "read" })
  const run = (await l.runs.find("bench"))!
  const t = performance.now()
  let rows = 0
  for await (const _ of exportRows(l, run, { format: "csv", join: true })) rows++
  const ms = performance.now() - t
  await l.close()
  console.log(JSON.stringify({ rows, ms }))
  process.exit(0)
}
throw new Error(`bench/results.ts: unknown mode "${mode}"; modes: fill, read, --quick, or none`)

/** Runs `cmd` in a process of its own; its time (ms, from spawn to exit), its peak RSS (MB) and its last JSON line. */
async function timed(cmd: string[]): Promise<Figures> {
  const t = performance.now()
  const child = Bun.spawn(cmd, { cwd: root, stdout: "pipe", stderr: "pipe" })
  let peak = 0
  const status = `/proc/${child.pid}/status`
  while (child.exitCode === null && child.signalCode === null) {
    const text = await Bun.file(status)
      .text()
      .catch(() => "")
    peak = Math.max(peak, Number(/^VmHWM:\s+(\d+) kB/m.exec(text)?.[1] ?? 0) * 1024)
    await Bun.sleep(5)
  }
  const ms = performance.now() - t
  const [stdout, stderr] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
  ])
  if ((await child.exited) !== 0) throw new Error(`${cmd.join(" ")} failed: ${stderr.trim()}`)
  const last = stdout.trim().split("\n").at(-1) ?? ""
  return { ...(last.startsWith("{") ? (JSON.parse(last) as Figures) : {}), ms, maxRssMB: peak / 1e6 }
}

/** Fills a store, runs every contender three times alternated, and writes the section of docs/BENCHMARKS.md. */
async function report(quick: boolean): Promise<void> {
  const rows = quick ? 100_000 : 1_000_000
  const bin = join(root, "dist", "spool")
  if (!existsSync(bin)) throw new Error("dist/spool is missing: run `bun run build` first")
  const data = join(import.meta.dir, ".data")
  const home = join(data, `results-${rows}`)
  rmSync(home, { recursive: true, force: true })
  await timed(["bun", "bench/results.ts", "fill", home, String(rows)])
  const formats = ["jsonl", "csv", "parquet"] as const
  const runs: Record<string, Figures[]> = { read: [], jsonl: [], csv: [], parquet: [] }
  const sizes: Record<string, number> = {}
  for (let i = 0; i < 3; i++) {
    runs.read!.push(await timed(["bun", "bench/results.ts", "read", home]))
    for (const f of formats) {
      const out = join(data, `results.${f}`)
      // jsonl joined too, so that every format writes the input rows
      const joined = f === "jsonl" ? ["--join"] : []
      runs[f]!.push(await timed([bin, "results", "bench", "--home", home, "--out", out, ...joined]))
      sizes[f] = statSync(out).size
      rmSync(out, { force: true })
    }
  }
  const rate = (r: Figures) => rows / (Number(r.ms) / 1000)
  const read = medianRun(runs.read!, "ms")
  const rss = (r: Figures[]) => median(r.map((x) => Number(x.maxRssMB)))
  const line = (f: (typeof formats)[number]) => {
    const m = medianRun(runs[f]!, "ms")
    return `| \`spool results --out results.${f}${f === "jsonl" ? " --join" : ""}\` | ${fmt(rate(m))} | ${fmt(Number(m.ms) / 1000, 2)} s | ${(rate(m) / rate(read)).toFixed(2)}× | ${fmt(rss(runs[f]!))} MB | ${fmt(sizes[f]! / 1e6)} MB |`
  }
  const worst = Math.max(...formats.map((f) => rss(runs[f]!)))
  for (const f of formats)
    console.error(`${f}: ${fmt(rate(medianRun(runs[f]!, "ms")))} rows/s, ${fmt(rss(runs[f]!))} MB`)
  console.error(`read: ${fmt(rate(read))} rows/s, ${fmt(rss(runs.read!))} MB`)
  const md = `${HEADING}

Measured ${new Date().toISOString().slice(0, 10)} on ${cpus().length} × ${cpus()[0]?.model ?? "unknown CPU"}, Bun ${Bun.version}${quick ? " (quick mode)" : ""}, by
\`bun bench/results.ts\`: a SQLite store with one finished run of ${fmt(rows)} items (bench/data.ts rows \`id, subject, body\`;
a structured answer each, \`label\`, \`confidence\`, \`tags\`), exported by \`dist/spool\` joined to the input rows, each
contender in a process of its own, the three formats and the baseline alternated three times, the median run of each shown
(peak RSS: the median of the three, the process's VmHWM). Time is from spawn to exit, startup included. The baseline reads
every item from the ledger as the export does (pages of 2,000, each with its input row) and writes nothing.

| contender | rows/s | time | vs reading alone | peak RSS | file |
| --- | ---: | ---: | ---: | ---: | ---: |
| reading the ledger alone (the baseline) | ${fmt(rate(read))} | ${fmt(Number(read.ms) / 1000, 2)} s | 1.00× | ${fmt(rss(runs.read!))} MB | — |
${formats.map(line).join("\n")}

The goal was a 1,000,000-item export under 200 MB peak RSS: the largest here is ${fmt(worst)} MB${quick ? " (at 100,000 items; run without --quick for the 1M figure)" : `: **${worst < 200 ? "met" : "missed"}**`}.
CSV and Parquet read the run twice (the first read learns the input's columns and their kinds, which a header and a
Parquet schema need before the first row); JSONL once. Parquet holds a row group (25,000 rows) in memory at a time.
`
  const docPath = join(root, "docs", "BENCHMARKS.md")
  await Bun.write(docPath, splice(await Bun.file(docPath).text(), HEADING, md))
  rmSync(home, { recursive: true, force: true })
  console.error("wrote the results export's section into docs/BENCHMARKS.md")
}
