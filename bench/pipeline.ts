/**
 * What a pipeline's steps cost beyond the calls (issue 18): the same rows through a one-step job, and through a
 * pipeline of three steps (a model step, a second model step after it, a review gate after that), all on the offline
 * mock provider with no latency, the cache off, so that only spool's own work is measured: claims, outcomes, and the
 * promoter that makes each row's item of the next step. `bun bench/pipeline.ts [--quick]` writes the section
 * "Pipelines (issue 18)" of docs/BENCHMARKS.md (100,000 rows; 20,000 with --quick). Each contender runs in a process
 * of its own and prints JSON:
 *
 *   bun bench/pipeline.ts one FILE DIR     a one-step job over FILE, start to done
 *   bun bench/pipeline.ts steps FILE DIR   the pipeline over FILE, start to done
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs"
import { cpus } from "node:os"
import { join } from "node:path"
import { prepare } from "../src/core/engine/run.ts"
import { open } from "../src/core/ledger/open.ts"
import { child, dataDir, type Figures, fmt, median, medianRun, root, rowsFile, splice } from "./shared.ts"

const HEADING = "## Pipelines (issue 18)"

const [mode, file, dir] = process.argv.slice(2) as [string, string, string]
if (mode === undefined || mode === "--quick") {
  await report(mode === "--quick")
  process.exit(0)
}
mkdirSync(dir, { recursive: true })

const TOP = `name = "bench"
[source]
path = "${file}"
id = "id"
[provider]
name = "mock"
[request]
prompt = "Ticket: {{subject}}"
max_tokens = 50
[limits]
concurrency = 64
[cache]
enabled = false
`
const STEPS = `
[[step]]
name = "classify"
provider = { options = { reply = '{"label": "bug", "confidence": 0.9}' } }
output.schema = { type = "object", properties = { label = { type = "string" }, confidence = { type = "number" } }, required = ["label", "confidence"], additionalProperties = false }

[[step]]
name = "summary"
needs = ["classify"]
when = "classify.label == 'bug'"
request = { prompt = "Summarise this {{classify.label}}: {{row.body}}" }

[[step]]
name = "check"
kind = "review"
needs = ["summary"]
when = "classify.confidence < 0.5"
`
const jobFile = join(dir, "job.toml")
writeFileSync(jobFile, mode === "steps" ? TOP + STEPS : TOP)

const started = performance.now()
const session = await prepare({
  file: jobFile,
  flags: {},
  home: dir,
  newRun: false,
  reingest: false,
  resume: "",
})
const code = await session.execute()
const ms = performance.now() - started
if (code !== 0) throw new Error(`the run ended with ${code}`)
const db = await open(dir)
// the items every step made (a pipeline's rows are not counted: they are never called)
const runs = mode === "steps" ? await db.runs.steps(session.run.id) : [session.run]
let items = 0
for (const run of runs) items += Object.values(await db.reads.counts(run.id)).reduce((a, b) => a + b, 0)
await db.close()
console.log(
  JSON.stringify({
    mode,
    items,
    ms,
    itemsPerSec: items / (ms / 1000),
    maxRssMB: process.resourceUsage().maxRSS / 1024,
  }),
)

/** Runs both contenders, alternating, three times, and writes the section of docs/BENCHMARKS.md. */
async function report(quick: boolean): Promise<void> {
  const rows = quick ? 20_000 : 100_000
  const data = dataDir()
  const input = rowsFile(rows)
  const runs: Record<string, Figures[]> = { one: [], steps: [] }
  for (let i = 0; i < 3; i++)
    for (const m of ["one", "steps"]) {
      const at = join(data, `pipeline-${m}`)
      rmSync(at, { recursive: true, force: true })
      runs[m]!.push(child(["bench/pipeline.ts", m, input, at]))
    }
  const one = medianRun(runs.one!, "itemsPerSec")
  const steps = medianRun(runs.steps!, "itemsPerSec")
  const rate = (r: Figures) => Number(r.itemsPerSec)
  const ratio = rate(steps) / rate(one)
  const pairs = runs.steps!.map((r, i) => rate(r) / rate(runs.one![i]!))
  const s = (r: Figures) => `${fmt(Number(r.ms) / 1000, 2)} s`
  const rss = (r: Figures[]) => `${fmt(median(r.map((x) => Number(x.maxRssMB))))} MB`
  console.error(
    `pipeline: ${fmt(rate(steps))} item-steps/s vs one step ${fmt(rate(one))} items/s (${ratio.toFixed(2)}×)`,
  )
  const md = `${HEADING}

Measured ${new Date().toISOString().slice(0, 10)} on ${cpus().length} × ${cpus()[0]?.model ?? "unknown CPU"}, Bun ${Bun.version}${quick ? " (quick mode)" : ""}, by
\`bun bench/pipeline.ts\`: ${fmt(rows)} JSONL rows (bench/data.ts), the offline mock provider with no latency and the
cache off, \`concurrency = 64\`; each contender in a process of its own, alternated three times, the median shown.

| contender | items | items/s | time | peak RSS |
| --- | ---: | ---: | ---: | ---: |
| a one-step job over the rows | ${fmt(Number(one.items))} | ${fmt(rate(one))} | ${s(one)} | ${rss(runs.one!)} |
| a pipeline over the rows: \`classify\` (structured), \`summary\` after it (\`when\` true for every row), a review gate \`check\` (\`when\` false for every row: let through) | ${fmt(Number(steps.items))} | ${fmt(rate(steps))} | ${s(steps)} | ${rss(runs.steps!)} |

A step's item goes through the pipeline at **${ratio.toFixed(2)}×** the rate of a one-step job's item (each round:
${pairs.map((x) => `${x.toFixed(2)}×`).join(", ")}): what the promoter adds (a pass over the rows whose steps are not yet
decided, their needs' answers read and laid over the row, the step's items stored) beside what every item costs in
both (a claim, a call of the mock, an outcome). The review gate's items are made by the promoter alone, with no claim.
`
  const path = join(root, "docs", "BENCHMARKS.md")
  await Bun.write(path, splice(await Bun.file(path).text(), HEADING, md))
  console.error("wrote the pipelines' section into docs/BENCHMARKS.md")
}
