/**
 * `spool results` of a pipeline run through dist/spool and the fake (docs/RESULTS.md, "Pipelines"): seven rows through
 * classify → summary (bugs only) → check (a review of the unsure ones), then the rows with every step beside them as
 * JSONL, CSV and Parquet, exactly; `--step` writing one step as a one-step run's results; the flags that do not apply
 * to the joined rows, an unknown step and `--step` on a run that is no pipeline refused with exit 2.
 */
import { describe, expect, test } from "bun:test"
import { writeFileSync } from "node:fs"
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects } from "hyparquet"
import { startFake } from "../lib/fake-openai.ts"
import { spool } from "../lib/spool.ts"
import { tmpdir } from "../lib/tmp.ts"

const env = { OPENAI_API_KEY: "k" }
const LABELS = ["bug", "billing", "question"]

/** classify: t4 is not JSON (left for review), the others {label, confidence} from their number; else a summary. */
function reply(input: string): string {
  const n = Number(/t(\d+)/.exec(input)?.[1] ?? 0)
  if (!input.startsWith("Classify")) return `Summary of t${n}`
  return n === 4 ? "not sure" : JSON.stringify({ label: LABELS[n % 3], confidence: (n % 10) / 10 })
}

/** The job's top level: a one-step job as it is, the pipeline's tables that every step inherits. */
const top = (name: string, url: string) => `name = "${name}"
source = { path = "in.jsonl", id = "id" }
provider = { name = "openai", model = "gpt-4.1-mini", base_url = "${url}" }
request = { prompt = "Classify: {{text}}", max_tokens = 50 }
limits = { max_attempts = 1 }
`

const LABEL = `{ type = "object", properties = { label = { type = "string" }, confidence = { type = "number" } }, required = ["label", "confidence"], additionalProperties = false }`

/** classify → summary (bugs only) → check (a review of those under 0.5 confidence). */
const job = (url: string) => `${top("triage", url)}
step = [
  { name = "classify", output = { schema = ${LABEL} } },
  { name = "summary", needs = ["classify"], when = "classify.label == 'bug'", request = { prompt = "Summarise: {{text}}" } },
  { name = "check", kind = "review", needs = ["summary"], when = "classify.confidence < 0.5" },
]
`

const usage = (input: number, output: number) => ({
  input_tokens: input,
  output_tokens: output,
  cached_input_tokens: 0,
  cache_write_tokens: 0,
})

/** A step's part of a JSONL line: an answer paid for, or an item that made no call. */
const answered = (
  state: string,
  output: unknown,
  u: [number, number],
  cost: number,
  error: unknown = null,
) => ({
  state,
  output,
  error,
  attempts: 1,
  usage: usage(...u),
  cost_usd: cost,
  prompt_cache_saved_usd: 0,
  cached: false,
})
const decided = (state: string, output: unknown, error: [string, string] | null) => ({
  state,
  output,
  error: error && { class: error[0], message: error[1] },
  attempts: 0,
  usage: usage(0, 0),
  cost_usd: 0,
  prompt_cache_saved_usd: 0,
  cached: false,
})

/**
 * What the fake counts of each classify answer (11 input tokens, these output tokens), priced at gpt-4.1-mini's $0.40
 * and $1.60 a million tokens as spool prints it.
 */
const PAID = {
  bug: [8, 0.0000172],
  billing: [9, 0.0000188],
  question: [10, 0.000020399999999999998],
  unsure: [2, 0.000007600000000000001],
} as const
const SUMMARY_COST = 0.0000108
const WHEN = ["when", "when is false: classify.label == 'bug'"] as [string, string]
const BLOCKED = ["blocked", "summary was skipped"] as [string, string]
const REVIEW = ["review", "step check: classify.confidence < 0.5"] as [string, string]

/** The JSONL lines' steps, row by row. */
function steps(n: number) {
  const label = LABELS[n % 3] as keyof typeof PAID
  if (n === 4)
    return {
      classify: answered("needs_review", "not sure", [11, PAID.unsure[0]], PAID.unsure[1], {
        class: "output",
        message: "not JSON: not sure",
      }),
      summary: null,
      check: null,
    }
  const classify = answered("completed", { label, confidence: n / 10 }, [11, PAID[label][0]], PAID[label][1])
  if (label !== "bug")
    return { classify, summary: decided("skipped", null, WHEN), check: decided("skipped", null, BLOCKED) }
  const summary = answered("completed", `Summary of t${n}`, [11, 4], SUMMARY_COST)
  const check =
    n / 10 < 0.5
      ? decided("needs_review", `Summary of t${n}`, REVIEW)
      : decided("completed", `Summary of t${n}`, null)
  return { classify, summary, check }
}

const CSV = [
  "id,text,spool.id,classify.state,classify.cost_usd,classify.error,classify.label,classify.confidence,summary.state,summary.cost_usd,summary.error,summary.output,check.state,check.cost_usd,check.error,check.output",
  "r0,t0,r0,completed,0.0000172,,bug,0,completed,0.0000108,,Summary of t0,needs_review,0,step check: classify.confidence < 0.5,Summary of t0",
  "r1,t1,r1,completed,0.0000188,,billing,0.1,skipped,0,when is false: classify.label == 'bug',,skipped,0,summary was skipped,",
  "r2,t2,r2,completed,0.000020399999999999998,,question,0.2,skipped,0,when is false: classify.label == 'bug',,skipped,0,summary was skipped,",
  "r3,t3,r3,completed,0.0000172,,bug,0.3,completed,0.0000108,,Summary of t3,needs_review,0,step check: classify.confidence < 0.5,Summary of t3",
  "r4,t4,r4,needs_review,0.000007600000000000001,not JSON: not sure,,,,,,,,,,",
  "r5,t5,r5,completed,0.000020399999999999998,,question,0.5,skipped,0,when is false: classify.label == 'bug',,skipped,0,summary was skipped,",
  "r6,t6,r6,completed,0.0000172,,bug,0.6,completed,0.0000108,,Summary of t6,completed,0,,Summary of t6",
]

/** A CSV cell as the Parquet file holds it: a number in the cost and confidence columns, null for an empty one. */
const typed = (name: string, cell: string) =>
  cell === "" ? null : name.endsWith(".cost_usd") || name.endsWith(".confidence") ? Number(cell) : cell

describe("spool results of a pipeline run", () => {
  test("the rows with each step's state and answer, as jsonl, csv and parquet; --step writes one step alone", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: "k", reply })
    const rows = Array.from({ length: 7 }, (_, i) => JSON.stringify({ id: `r${i}`, text: `t${i}` }))
    writeFileSync(tmp.join("in.jsonl"), `${rows.join("\n")}\n`)
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const run = await spool(["run", "job.toml"], { cwd: tmp.path, env })
    expect(run.code).toBe(0)
    expect(run.stderr).toContain(
      `run "triage", 7 row(s): classify: 6 completed, 1 wait for review; summary: 3 completed, 3 skipped, 1 not reached yet; check: 1 completed, 3 skipped, 2 wait for review, 1 not reached yet`,
    )
    expect(fake.invalid).toEqual([])

    // jsonl (the default, and the latest run: the pipeline's, not its last step's)
    const jsonl = await spool(["results"], { cwd: tmp.path })
    expect(jsonl.code).toBe(0)
    expect(
      jsonl.stdout
        .trimEnd()
        .split("\n")
        .map((l) => JSON.parse(l) as unknown),
    ).toEqual(
      Array.from({ length: 7 }, (_, n) => ({
        id: `r${n}`,
        ...steps(n),
        source: { file: tmp.join("in.jsonl"), row: n + 1, id: `r${n}` },
      })),
    )
    // the keys in this order: id, each step in the job's order, source
    expect(Object.keys(JSON.parse(jsonl.stdout.split("\n")[0]!) as object)).toEqual([
      "id",
      "classify",
      "summary",
      "check",
      "source",
    ])

    // csv: the input's columns, spool's id (spool.id: the input has an id), then each step's
    const csv = await spool(["results", "triage", "--format", "csv"], { cwd: tmp.path })
    expect(csv.code).toBe(0)
    expect(csv.stdout).toBe(CSV.map((l) => `${l}\r\n`).join(""))

    // parquet: the same, typed
    const pq = await spool(["results", "--out", "rows.parquet"], { cwd: tmp.path })
    expect([pq.code, pq.stderr]).toEqual([0, "wrote 7 results to rows.parquet\n"])
    const file = await asyncBufferFromFile(tmp.join("rows.parquet"))
    const meta = await parquetMetadataAsync(file)
    const names = CSV[0]!.split(",")
    expect(meta.schema.slice(1).map((e) => [e.name, e.type])).toEqual(
      names.map((n) => [n, n.endsWith("cost_usd") || n.endsWith("confidence") ? "DOUBLE" : "BYTE_ARRAY"]),
    )
    expect(await parquetReadObjects({ file })).toEqual(
      CSV.slice(1).map((line) =>
        Object.fromEntries(line.split(",").map((cell, i) => [names[i], typed(names[i]!, cell)])),
      ),
    )

    // --step: one step's items as a one-step run's results, with every flag
    const classify = await spool(["results", "--step", "classify"], { cwd: tmp.path })
    expect(classify.code).toBe(0)
    expect(classify.stdout).toBe((await spool(["results", "triage.classify"], { cwd: tmp.path })).stdout)
    expect(classify.stdout.trimEnd().split("\n").length).toBe(7)
    const review = await spool(
      [
        "results",
        "triage",
        "--step",
        "classify",
        "--state",
        "needs_review",
        "--format",
        "csv",
        "--no-join",
        "--prefix",
        "",
      ],
      { cwd: tmp.path },
    )
    expect(review.stdout).toBe(
      "id,state,attempts,cost_usd,prompt_cache_saved_usd,cache_write_tokens,cached,error,label,confidence\r\nr4,needs_review,1,0.000007600000000000001,0,0,false,not JSON: not sure,,\r\n",
    )
    // the step's own export mark: its finished items (not the skipped ones), then none finished since
    const since = ["results", "--step", "check", "--since-last-export", "--out", "check.jsonl"]
    const noMargin = { cwd: tmp.path, env: { SPOOL_EXPORT_MARGIN_S: "0" } }
    expect((await spool(since, noMargin)).stderr).toBe("wrote 3 results to check.jsonl\n")
    const checked = (await Bun.file(tmp.join("check.jsonl")).text()).trimEnd().split("\n")
    expect(
      checked.map((l) => JSON.parse(l) as { id: string; state: string }).map((l) => [l.id, l.state]),
    ).toEqual([
      ["r0", "needs_review"],
      ["r3", "needs_review"],
      ["r6", "completed"],
    ])
    expect((await spool(since, noMargin)).stderr).toMatch(
      /^wrote 0 results finished since the export of \S+ to check\.jsonl\n$/,
    )

    // what does not apply: an unknown step, a step of a run that is no pipeline, the filters of the joined rows
    const unknown = await spool(["results", "--step", "clasify"], { cwd: tmp.path })
    expect([unknown.code, unknown.stderr]).toEqual([
      2,
      'spool: --step: pipeline run "triage" has no step "clasify"\n  Its steps: classify, summary, check.\n',
    ])
    const ofStep = await spool(["results", "triage.summary", "--step", "classify"], { cwd: tmp.path })
    expect(ofStep.code).toBe(2)
    expect(ofStep.stderr).toContain('--step: run "triage.summary" is a step of a pipeline, not a pipeline')
    const filtered = await spool(["results", "--failed-only", "--since-last-export"], { cwd: tmp.path })
    expect([filtered.code, filtered.stderr]).toEqual([
      2,
      'spool: --failed-only, --since-last-export: run "triage" is a pipeline, whose rows have a state, an answer and an export mark in each step\n' +
        "  Write one step's items with --step NAME (its steps: classify, summary, check): every flag applies there. Or drop --failed-only, --since-last-export.\n",
    ])
    for (const flags of [
      ["--state", "completed"],
      ["--prefix", "x", "--format", "csv"],
    ]) {
      const refused = await spool(["results", ...flags], { cwd: tmp.path })
      expect(refused.code).toBe(2)
      expect(refused.stderr).toContain(`spool: ${flags[0]}: run "triage" is a pipeline`)
    }

    // a one-step run has no steps
    writeFileSync(tmp.join("one.toml"), top("one", fake.url))
    expect((await spool(["run", "one.toml"], { cwd: tmp.path, env })).code).toBe(0)
    const plain = await spool(["results", "one", "--step", "classify"], { cwd: tmp.path })
    expect([plain.code, plain.stderr]).toEqual([
      2,
      'spool: --step: run "one" is not a pipeline: it has no steps\n  Drop --step: the run\'s results are its own items.\n',
    ])
  })
})
