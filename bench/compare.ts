/**
 * Two builds of spool, measured alternately in one sitting: startup, ingest (JSONL and CSV), realtime and batch.
 *
 *   bun bench/compare.ts --before DIR [--after DIR] [--rounds N] [--only startup,ingest,realtime,batch]
 *                        [--quick] [--build] [--no-write] [--heading TEXT]
 *
 * DIR is a checkout (a git worktree, say) with `bash scripts/setup.sh` done and dist/spool built (`--build` builds
 * both first); --after defaults to this checkout. Each checkout runs its own bench/*.ts with itself as the working
 * directory, and its own dist/spool: the two trees' bench scripts import different paths, so this script imports
 * none of them and only reads the JSON line each prints. The inputs and the fake provider of the realtime section are
 * the --before checkout's and shared by both sides, so the two differ only in the code measured.
 *
 * Each round runs every section for both builds, one right after the other, and swaps which goes first every round
 * (a machine shared with other work drifts minute to minute: only builds measured side by side compare). A figure is
 * the median of its rounds. Any figure worse in the after build by more than 5% is flagged, and so is a failed
 * contender; the exit code is then 1. The table is written into docs/BENCHMARKS.md as one section (--heading, the
 * issue 13 one by default) and every other section is left as it is; --no-write only prints it.
 * Comparing a checkout with itself (--after DIR the same as --before) shows the noise floor, and says so.
 */
import { cpus, loadavg, totalmem } from "node:os"
import { existsSync, mkdirSync, readdirSync, realpathSync, rmSync, statSync } from "node:fs"
import { join, resolve } from "node:path"
import { parseArgs } from "node:util"
import { child, type ChildOptions, fmt, median, root, splice, withFake } from "./shared.ts"

const { values: opts } = parseArgs({
  options: {
    before: { type: "string" },
    after: { type: "string", default: root },
    rounds: { type: "string", default: "3" },
    only: { type: "string", default: "startup,ingest,realtime,batch" },
    quick: { type: "boolean", default: false },
    build: { type: "boolean", default: false },
    "no-write": { type: "boolean", default: false },
    heading: { type: "string", default: "Before and after: the One house refactor (issue 13)" },
  },
})
if (!opts.before) throw new Error("--before DIR is required: the checkout to compare against")
const sides = { before: resolve(opts.before), after: resolve(opts.after) } as const
type Side = keyof typeof sides
const rounds = Number(opts.rounds)
if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`--rounds ${opts.rounds}: a whole number ≥ 1`)
const quick = opts.quick
const heading = `## ${opts.heading}`
const same = realpathSync(sides.before) === realpathSync(sides.after)

// sizes that take a few seconds per contender: large enough to measure spool's work, not its startup
const ROWS = quick ? 100_000 : 500_000
const RT_ITEMS = quick ? 4000 : 20_000
const CONCURRENCY = 64
const BATCH_ITEMS = quick ? 50_000 : 200_000
// a contender that hangs (a tree mid-refactor) is killed and counted as failed, not waited on forever
const run = (cwd: string): ChildOptions => ({ cwd, timeout: 10 * 60_000, capture: true })

const data = join(root, "bench", ".data")
const scratch = join(data, "compare")
mkdirSync(scratch, { recursive: true })

interface Figure {
  key: string
  label: string
  digits: number
  /** which way is better: throughput up, time and memory down */
  better: "higher" | "lower"
}
interface Section {
  name: string
  figures: Figure[]
  /** one run of this section for one build; every figure of `figures`, or it throws */
  measure: (side: Side, dir: string, url: string) => Record<string, number>
}

const rowsPerSec = (key: string, what: string): Figure => ({
  key,
  label: `${what}: rows/s`,
  digits: 0,
  better: "higher",
})
const rssMB = (key: string, what: string): Figure => ({
  key,
  label: `${what}: peak RSS, MB`,
  digits: 0,
  better: "lower",
})

function input(kind: "csv" | "jsonl", name: string): string {
  const path = join(data, name)
  // in a process of its own: on Linux a child starts with its parent's peak RSS, so this one must stay small
  if (!existsSync(path)) child(["bench/data.ts", kind, path, String(ROWS)], { cwd: sides.before })
  return path
}

function ingest(
  side: Side,
  dir: string,
  file: string,
  tag: string,
): { rowsPerSec: number; maxRssMB: number } {
  const store = join(scratch, `${side}-ingest-${tag}`)
  rmSync(store, { recursive: true, force: true })
  const r = child(["bench/ingest.ts", "spool", file, store], run(dir))
  if (Number(r.rows) !== ROWS) throw new Error(`${dir}: ingested ${r.rows} of ${ROWS} ${tag} rows`)
  return { rowsPerSec: Number(r.rowsPerSec), maxRssMB: Number(r.maxRssMB) }
}

const sections: Section[] = [
  {
    name: "startup",
    figures: [
      { key: "ms", label: "startup: `dist/spool --version`, ms (median of 50)", digits: 1, better: "lower" },
    ],
    measure(_side, dir) {
      const bin = join(dir, "dist", "spool")
      const times: number[] = []
      // the first is untimed: it pays for the page cache. 50, not run.ts's 20: a median of 20 moved ±5% between
      // back-to-back runs of the same binary here, the size of what is to be told apart
      for (let i = 0; i < 51; i++) {
        const t = performance.now()
        const out = Bun.spawnSync([bin, "--version"], { stderr: "pipe" })
        if (i > 0) times.push(performance.now() - t)
        if (out.exitCode !== 0) throw new Error(`${bin} --version exited ${out.exitCode}: ${out.stderr}`)
      }
      return { ms: median(times) }
    },
  },
  {
    name: "ingest",
    figures: [
      rowsPerSec("jsonl", `ingest ${fmt(ROWS)} JSONL rows`),
      rssMB("jsonlRss", `ingest ${fmt(ROWS)} JSONL rows`),
      rowsPerSec("csv", `ingest ${fmt(ROWS)} CSV rows`),
      rssMB("csvRss", `ingest ${fmt(ROWS)} CSV rows`),
    ],
    measure(side, dir) {
      // the files bench/run.ts writes for its CSV section, so its cache serves both
      const jsonl = ingest(side, dir, input("jsonl", `rows-${ROWS}-csv.jsonl`), "jsonl")
      const csv = ingest(side, dir, input("csv", `rows-${ROWS}.csv`), "csv")
      return { jsonl: jsonl.rowsPerSec, jsonlRss: jsonl.maxRssMB, csv: csv.rowsPerSec, csvRss: csv.maxRssMB }
    },
  },
  {
    name: "realtime",
    figures: [
      {
        key: "itemsPerSec",
        label: `realtime, zero-latency fake, ${fmt(RT_ITEMS)} items at concurrency ${CONCURRENCY}: items/s`,
        digits: 0,
        better: "higher",
      },
    ],
    measure(side, dir, url) {
      const store = join(scratch, `${side}-realtime`)
      rmSync(store, { recursive: true, force: true })
      const args = ["bench/realtime.ts", "spool", url, String(RT_ITEMS), String(CONCURRENCY), store]
      const r = child(args, run(dir))
      if (Number(r.items) !== RT_ITEMS)
        throw new Error(`${dir}: ${r.items} of ${RT_ITEMS} realtime items completed`)
      return { itemsPerSec: Number(r.itemsPerSec) }
    },
  },
  {
    name: "batch",
    figures: [
      {
        key: "itemsPerSecond",
        label: `batch, fake Batch API, ${fmt(BATCH_ITEMS)} items: items/s (wall)`,
        digits: 0,
        better: "higher",
      },
      {
        key: "itemsPerCpuSecond",
        label: `batch, ${fmt(BATCH_ITEMS)} items: items per CPU second of \`dist/spool\``,
        digits: 0,
        better: "higher",
      },
      rssMB("maxRssMB", `batch, ${fmt(BATCH_ITEMS)} items, \`dist/spool\``),
    ],
    measure(side, dir) {
      // bench/batch.ts checks that every item completed in one attempt, and starts its own fake
      const r = child(["bench/batch.ts", String(BATCH_ITEMS), join(scratch, `${side}-batch`)], run(dir))
      return {
        itemsPerSecond: Number(r.itemsPerSecond),
        itemsPerCpuSecond: Number(r.itemsPerCpuSecond),
        maxRssMB: Number(r.maxRssMB),
      }
    },
  },
]

const wanted = opts.only.split(",").filter(Boolean)
const unknown = wanted.filter((n) => !sections.some((s) => s.name === n))
if (!wanted.length || unknown.length)
  throw new Error(
    `--only: no section "${unknown.join(", ")}"; these exist: ${sections.map((s) => s.name).join(", ")}`,
  )
const chosen = sections.filter((s) => wanted.includes(s.name))

/** The commit a checkout is at, and whether its tracked files differ from it. */
function commit(dir: string): string {
  const git = (...args: string[]) =>
    Bun.spawnSync(["git", "-C", dir, ...args])
      .stdout.toString()
      .trim()
  const head = git("rev-parse", "--short", "HEAD") || "(not a git checkout)"
  return git("status", "--porcelain", "--untracked-files=no") ? `${head} with uncommitted changes` : head
}

/** The newest file under `dir`, to tell a dist/spool built before its sources last changed. */
function newest(dir: string): number {
  let t = 0
  for (const name of readdirSync(dir, { recursive: true, encoding: "utf8" }))
    t = Math.max(t, statSync(join(dir, name)).mtimeMs)
  return t
}

for (const [side, dir] of Object.entries(sides)) {
  if (opts.build) {
    const out = Bun.spawnSync(["bun", "run", "build"], { cwd: dir, stdout: "ignore", stderr: "inherit" })
    if (out.exitCode !== 0) throw new Error(`bun run build failed in ${dir} (the ${side} checkout)`)
  }
  const bin = join(dir, "dist", "spool")
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run \`bun run build\` there, or pass --build`)
  if (statSync(bin).mtimeMs < newest(join(dir, "src")))
    console.error(
      `warning: ${bin} is older than a file in ${dir}/src: rebuild it (--build) to measure the sources`,
    )
}

// samples[side][key][round]: NaN where the contender failed
const samples: Record<Side, Record<string, number[]>> = { before: {}, after: {} }
const failures: string[] = []
const load = [loadavg()[0]!]
const started = performance.now()

for (let round = 0; round < rounds; round++) {
  const order: Side[] = round % 2 ? ["after", "before"] : ["before", "after"]
  for (const section of chosen) {
    const both = (url: string) => {
      for (const side of order) {
        let got: Record<string, number> = {}
        try {
          got = section.measure(side, sides[side], url)
        } catch (e) {
          failures.push(`${section.name}, ${side}, round ${round + 1}: ${(e as Error).message}`)
        }
        for (const f of section.figures) (samples[side][f.key] ??= []).push(got[f.key] ?? Number.NaN)
        console.error(
          `round ${round + 1}/${rounds} ${section.name} ${side}: ${section.figures.map((f) => `${f.key} ${fmt(got[f.key] ?? Number.NaN, f.digits)}`).join(", ")}`,
        )
      }
    }
    // one fake for both builds, the before checkout's: the server is not what is compared
    if (section.name === "realtime") await withFake(0, both, sides.before)
    else both("")
  }
  load.push(loadavg()[0]!)
}
const minutes = (performance.now() - started) / 60_000
// the stores the contenders wrote (~850 MB at the default sizes); the inputs stay in bench/.data for the next run
rmSync(scratch, { recursive: true, force: true })

// ---- the table
const THRESHOLD = 0.05
const flagged: string[] = []
const rows = chosen.flatMap((section) =>
  section.figures.map((f) => {
    const b = samples.before[f.key]!
    const a = samples.after[f.key]!
    const ok = (xs: number[]) => xs.filter((x) => !Number.isNaN(x))
    const [mb, ma] = [ok(b), ok(a)]
    const value = (xs: number[]) => (xs.length ? fmt(median(xs), f.digits) : "failed")
    if (!mb.length || !ma.length) {
      flagged.push(`${f.label}: failed`)
      return `| ${f.label} | ${value(mb)} | ${value(ma)} | — | — | **failed** |`
    }
    const ratio = median(ma) / median(mb)
    const perRound = b.map((x, i) => a[i]! / x).map((r) => (Number.isNaN(r) ? "failed" : `${fmt(r, 2)}×`))
    // worse: slower, or more time or memory
    const worse = f.better === "higher" ? 1 - ratio : ratio - 1
    const verdict =
      worse > THRESHOLD
        ? `**worse by ${fmt(worse * 100, 1)}%**`
        : worse < -THRESHOLD
          ? `better by ${fmt(-worse * 100, 1)}%`
          : "within 5%"
    if (worse > THRESHOLD) flagged.push(`${f.label}: worse by ${fmt(worse * 100, 1)}%`)
    return `| ${f.label} | ${value(mb)} | ${value(ma)} | ${fmt(ratio, 3)}× | ${perRound.join(", ")} | ${verdict} |`
  }),
)

const command = `bun bench/compare.ts ${process.argv.slice(2).join(" ")}`
const cpu = cpus()[0]?.model ?? "unknown CPU"
const noise = same
  ? `**Noise floor, not a comparison:** both columns are the same checkout (${sides.before}, ${commit(sides.before)}),
measured against itself the same way. The ratios show how far two runs of the same code differ on this machine;
the before/after figures replace this section when the comparison is run.

`
  : ""
const md = `${heading}

${noise}Measured ${new Date().toISOString().slice(0, 10)} on ${cpus().length} × ${cpu}, ${Math.round(totalmem() / 2 ** 30)} GiB, Bun ${Bun.version}${quick ? " (quick mode: smaller sizes)" : ""};
load average (1 min) ${load.map((l) => fmt(l, 1)).join(" → ")} over the rounds (other work on the machine shows here).
before: \`${sides.before}\` at ${commit(sides.before)}; after: \`${sides.after}\` at ${commit(sides.after)}.
\`${command}\` (${rounds} round${rounds > 1 ? "s" : ""}, ${fmt(minutes, 1)} min). Each build runs its own
\`bench/ingest.ts\`, \`bench/realtime.ts\` and \`bench/batch.ts\` (spool's contender only) and its own \`dist/spool\`, each
in a process of its own; in every round the two builds run back to back, the first swapped every round. A figure
is the median of its rounds; "per round" is after ÷ before within each round. Worse means slower, or more time or
memory, by more than 5%. \`bun run bench\` rewrites this file but keeps this section as it is.

| figure | before | after | after/before | per round | verdict |
| --- | --- | --- | --- | --- | --- |
${rows.join("\n")}

Worse by more than 5% or failed: ${flagged.length ? flagged.map((f) => `**${f}**`).join("; ") : "none"}.
${failures.length ? `\nFailed contenders:\n\n${failures.map((f) => `- ${f.replaceAll("\n", " ").slice(0, 400)}`).join("\n")}\n` : ""}`

console.error(`\n${md}`)
if (!opts["no-write"]) {
  const docPath = join(root, "docs", "BENCHMARKS.md")
  await Bun.write(docPath, splice(await Bun.file(docPath).text(), heading, md))
  console.error(`wrote "${heading}" into docs/BENCHMARKS.md (${fmt(minutes, 1)} min)`)
}
process.exit(flagged.length ? 1 : 0)
