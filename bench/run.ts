/**
 * Runs every benchmark, each contender in its own process, and writes docs/BENCHMARKS.md.
 * `bun run bench` (after `bun run build`). Ratios compare contenders measured in the same run.
 */
import { cpus, totalmem } from "node:os"
import { existsSync, mkdirSync, rmSync } from "node:fs"
import { join } from "node:path"

const root = join(import.meta.dir, "..")
const data = join(import.meta.dir, ".data")
const quick = process.argv.includes("--quick")
mkdirSync(data, { recursive: true })

function child(args: string[]): Record<string, number | string> {
  const out = Bun.spawnSync(["bun", ...args], { cwd: root, stderr: "inherit" })
  const line = out.stdout.toString().trim().split("\n").at(-1) ?? ""
  if (out.exitCode !== 0) throw new Error(`bun ${args.join(" ")} failed (exit ${out.exitCode}): ${line}`)
  return JSON.parse(line) as Record<string, number | string>
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}
const fmt = (x: number, digits = 0) =>
  x.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })

// ---- startup
const bin = join(root, "dist", "spool")
if (!existsSync(bin)) throw new Error("dist/spool is missing: run `bun run build` first")
const startups: number[] = []
for (let i = 0; i < 21; i++) {
  const t = performance.now()
  Bun.spawnSync([bin, "--version"])
  if (i > 0) startups.push(performance.now() - t)
}
const bunStartups: number[] = []
for (let i = 0; i < 21; i++) {
  const t = performance.now()
  Bun.spawnSync([process.execPath, "--version"])
  if (i > 0) bunStartups.push(performance.now() - t)
}
const startup = median(startups)
console.error(`startup: ${startup.toFixed(1)} ms`)

// ---- ingest
const rowsWanted = quick ? 100_000 : 1_000_000
const file = join(data, `rows-${rowsWanted}.jsonl`)
if (!existsSync(file)) {
  const writer = Bun.file(file).writer()
  for (let i = 0; i < rowsWanted; i++) {
    writer.write(
      `${JSON.stringify({ id: `t-${i}`, subject: `Ticket ${i} about billing`, body: "The invoice shows the wrong VAT rate." })}\n`,
    )
  }
  await writer.end()
}
const runs = (mode: string) => {
  const dir = join(data, `ingest-${mode}`)
  rmSync(dir, { recursive: true, force: true })
  return child(["bench/ingest.ts", mode, file, dir])
}
// alternate the contenders and keep each one's median run: this machine's speed drifts minute to minute
function medianRun(rs: Record<string, number | string>[], key: string): Record<string, number | string> {
  return [...rs].sort((a, b) => Number(a[key]) - Number(b[key]))[Math.floor(rs.length / 2)]!
}
const REPEAT = 3
const ingestRuns: Record<string, Record<string, number | string>[]> = { baseline: [], spool: [] }
for (let i = 0; i < REPEAT; i++) for (const mode of ["baseline", "spool"]) ingestRuns[mode]!.push(runs(mode))
const baseline = medianRun(ingestRuns.baseline!, "rowsPerSec")
const spoolIngest = medianRun(ingestRuns.spool!, "rowsPerSec")
const ingestRatio = Number(spoolIngest.rowsPerSec) / Number(baseline.rowsPerSec)
console.error(
  `ingest: ${fmt(Number(spoolIngest.rowsPerSec))} rows/s vs ${fmt(Number(baseline.rowsPerSec))} (${ingestRatio.toFixed(2)}×)`,
)

// ---- realtime
async function withFake<T>(latency: number, fn: (url: string) => T): Promise<T> {
  const server = Bun.spawn(["bun", "bench/fake.ts", String(latency)], {
    cwd: root,
    stdout: "pipe",
    stderr: "inherit",
  })
  const reader = server.stdout.getReader()
  const { value } = await reader.read()
  const url = new TextDecoder().decode(value).trim()
  try {
    return fn(url)
  } finally {
    server.kill("SIGTERM")
    await server.exited
  }
}
const items = quick ? 4000 : 20_000
const contender = (url: string, mode: string, n: number, sync?: string) => {
  const dir = join(data, `rt-${mode}-${sync ?? ""}`)
  rmSync(dir, { recursive: true, force: true })
  return child(["bench/realtime.ts", mode, url, String(n), "64", dir, ...(sync ? [sync] : [])])
}
const zero = await withFake(0, (url) => {
  const spool: Record<string, number | string>[] = []
  const sdk: Record<string, number | string>[] = []
  for (let i = 0; i < REPEAT; i++) {
    spool.push(contender(url, "spool", items))
    sdk.push(contender(url, "sdk", items))
  }
  return {
    spool: medianRun(spool, "itemsPerSec"),
    sdk: medianRun(sdk, "itemsPerSec"),
    spoolNormal: contender(url, "spool", items, "NORMAL"),
    bare: contender(url, "bare", items),
    bareNormal: contender(url, "bare", items, "NORMAL"),
    fetch: contender(url, "fetch", items),
  }
})
const rate = (r: Record<string, number | string>) => Number(r.itemsPerSec)
console.error(
  `realtime: spool ${fmt(rate(zero.spool))}/s, bare ${fmt(rate(zero.bare))}/s, bare NORMAL ${fmt(rate(zero.bareNormal))}/s, sdk ${fmt(rate(zero.sdk))}/s`,
)
const latencyItems = quick ? 2000 : 5000
const slow = await withFake(50, (url) =>
  medianRun(
    [0, 1, 2].map(() => contender(url, "spool", latencyItems)),
    "itemsPerSec",
  ),
)
const ideal = 64 / 0.05
console.error(`at 50 ms: ${fmt(rate(slow))}/s of ${ideal}/s ideal`)

// ---- report
const cpu = cpus()[0]?.model ?? "unknown CPU"
const mark = (ok: boolean) => (ok ? "met" : "**missed**")
const md = `# Benchmarks

Measured ${new Date().toISOString().slice(0, 10)} on ${cpus().length} × ${cpu}, ${Math.round(totalmem() / 2 ** 30)} GiB, Bun ${Bun.version}${quick ? " (quick mode: smaller sizes)" : ""}.
Regenerate with \`bun run build && bun run bench\`. Every contender runs in its own process; the fake provider runs in
another. Absolute numbers drift on shared machines; the ratios compare contenders measured in the same run. spool, the
ingest baseline and the SDK loop run three times, alternating, and their median run is shown.

## Startup

| what | median of 20 |
| --- | --- |
| \`dist/spool --version\` | ${startup.toFixed(1)} ms |
| \`bun --version\` (the runtime alone, for scale) | ${median(bunStartups).toFixed(1)} ms |

Goal ≤ 25 ms: ${mark(startup <= 25)}.

## Ingest: ${fmt(rowsWanted)} JSONL rows into the ledger

| contender | rows/s | time | peak RSS |
| --- | --- | --- | --- |
| spool (\`ingest\`: streaming read, parse, checkpoint + sha256 per batch, \`synchronous=FULL\`) | ${fmt(Number(spoolIngest.rowsPerSec))} | ${fmt(Number(spoolIngest.ms) / 1000, 2)} s | ${fmt(Number(spoolIngest.maxRssMB))} MB |
| baseline: plain bun:sqlite bulk insert of the same lines (whole file in memory) | ${fmt(Number(baseline.rowsPerSec))} | ${fmt(Number(baseline.ms) / 1000, 2)} s | ${fmt(Number(baseline.maxRssMB))} MB |

Ratio ${ingestRatio.toFixed(2)}× (goal ≥ 0.7: ${mark(ingestRatio >= 0.7)}); peak RSS ${fmt(Number(spoolIngest.maxRssMB))} MB (goal ≤ 150 MB: ${mark(Number(spoolIngest.maxRssMB) <= 150)}).

What bounds ingest: the source reads and parses at ~1.4 M rows/s (0.7 s per million); the rest is SQLite inserting
into the items table with its two indexes (the unique key per run and input, and the claim index on run, state and
id), against the baseline's one. Tried, measured in this run's way, and kept: 1 MiB regions decoded and hashed once
(was per line), the line's own JSON text stored (no re-serialisation), 50-row INSERT statements (−30–45% insert
time), WAL checkpoints every ~40 MB (~5%). Tried and dropped: a larger page cache (no gain); parsing on a worker
thread to overlap the inserts (no gain — structured cloning ate it — and RSS rose to ~170 MB); replacing the claim
index with a rowid cursor plus partial indexes (within noise here, and it made claims on a 1M-row run depend on the
query planner). The ratio has ranged 0.64–0.72 across runs on this machine.

## Realtime: ${fmt(items)} items, concurrency 64, zero-latency local fake

| contender | items/s | spool ÷ contender |
| --- | --- | --- |
| spool (durable: claim, attempt row, result; group commit, \`synchronous=FULL\`) | ${fmt(rate(zero.spool))} | — |
| spool with \`synchronous=NORMAL\` (not shipped; for the choice in ARCHITECTURE.md) | ${fmt(rate(zero.spoolNormal))} | ${(rate(zero.spool) / rate(zero.spoolNormal)).toFixed(2)}× |
| bare claim→fetch→write loop, one commit per step, \`synchronous=FULL\` | ${fmt(rate(zero.bare))} | ${(rate(zero.spool) / rate(zero.bare)).toFixed(2)}× |
| bare loop with \`synchronous=NORMAL\` | ${fmt(rate(zero.bareNormal))} | ${(rate(zero.spool) / rate(zero.bareNormal)).toFixed(2)}× |
| naive loop of the official \`openai\` SDK, no persistence | ${fmt(rate(zero.sdk))} | ${(rate(zero.spool) / rate(zero.sdk)).toFixed(2)}× |
| the same requests over plain \`fetch\`, no persistence (the ceiling) | ${fmt(rate(zero.fetch))} | ${(rate(zero.spool) / rate(zero.fetch)).toFixed(2)}× |

Goals: ≥ 0.5× the bare loop (${mark(rate(zero.spool) / rate(zero.bare) >= 0.5)}), ≥ 1.0× the naive SDK loop (${mark(rate(zero.spool) / rate(zero.sdk) >= 1)}).

## Realtime at 50 ms latency: ${fmt(latencyItems)} items, concurrency 64

spool: ${fmt(rate(slow))} items/s = ${((rate(slow) / ideal) * 100).toFixed(1)}% of concurrency ÷ latency (${ideal}/s). Goal ≥ 95%: ${mark(rate(slow) / ideal >= 0.95)}.
`
await Bun.write(join(root, "docs", "BENCHMARKS.md"), md)
console.error("wrote docs/BENCHMARKS.md")
