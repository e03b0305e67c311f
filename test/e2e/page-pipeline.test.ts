/**
 * A pipeline on the status page in headless Chromium (docs/PIPELINES.md, README "Status page"): `dist/spool run` of 30
 * rows through classify (the fake OpenAI) → check (a review) → summary (the fake again), then `dist/spool serve`. The
 * page draws the steps as a graph with exact counts on each node, shows a row's items at every step side by side,
 * and takes review decisions on the review step's rows with its buttons (approve, edit as JSON, reject). What the
 * page did is read back with `spool status --json` and `spool review --json`, and the graph follows a second
 * `spool run` without a reload.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test"
import { writeFileSync } from "node:fs"
import { chromium, type Browser, type Page } from "playwright-core"
import { startFake, type Fake } from "../lib/fake-openai.ts"
import { served, spool, start } from "../lib/spool.ts"
import { tmpdir, type Tmp } from "../lib/tmp.ts"
import { CHROMIUM, SKIP_BROWSER } from "../lib/needs.ts"

const KEY = "sk-test-page-pipeline-0123456789"
const env = { OPENAI_API_KEY: KEY }
const LABELS = ["bug", "billing", "question"]
const ROWS = 30

let tmp: Tmp
let fake: Fake | undefined
let url: string
let server: ReturnType<typeof start> | undefined
let browser: Browser | undefined
let page: Page
/** Run ids by name (triage, triage.classify, …), and the pipeline run's row ids by key (r0…r29). */
const runs: Record<string, number> = {}
const rows: Record<string, number> = {}
/** Console errors, uncaught exceptions and failed requests of the page. */
const problems: string[] = []

/** The fake's answers: a classify prompt gets {label, confidence} from the row's number; a summary, its prompt back. */
function reply(input: string): string {
  const n = Number(/t(\d+)/.exec(input)?.[1] ?? 0)
  if (input.startsWith("Classify")) return JSON.stringify({ label: LABELS[n % 3], confidence: (n % 10) / 10 })
  return `sum(${input})`
}

function job(url: string): string {
  return `name = "triage"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "openai"
model = "gpt-4.1-mini"
base_url = "${url}"
[request]
prompt = "Classify: {{text}}"
max_tokens = 50
[limits]
concurrency = 4
retry_base_s = 0.01
retry_cap_s = 0.1

[[step]]
name = "classify"
output.schema = { type = "object", properties = { label = { type = "string" }, confidence = { type = "number" } }, required = ["label", "confidence"], additionalProperties = false }

[[step]]
name = "check"
kind = "review"
needs = ["classify"]
when = "classify.confidence < 0.5"

[[step]]
name = "summary"
needs = ["check"]
when = "check.label == 'bug'"
request = { prompt = "Summary: {{row.text}} is a {{check.label}}" }
`
}

async function until(expression: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await page.evaluate<boolean>(expression))) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${expression}`)
    await Bun.sleep(50)
  }
}

// what runs in the page is written as source text: this project's types have no DOM

/** Every node of the graph, its counts as numbers, read from the DOM. */
async function graph(): Promise<Record<string, Record<string, number>>> {
  return page.evaluate<Record<string, Record<string, number>>>(
    `Object.fromEntries([...document.querySelectorAll("#counts .node")].map((n) => [n.dataset.step,
      Object.fromEntries([...n.querySelectorAll("text[data-k]")].map((t) => [t.dataset.k, Number(t.textContent.replace(/,/g, ""))]))]))`,
  )
}

/** A node's counts, with every count the graph draws (the ones not given are 0). */
const node = (o: Record<string, number>) => ({
  completed: 0,
  skipped: 0,
  failed: 0,
  needs_review: 0,
  rejected: 0,
  in_flight: 0,
  not_reached: 0,
  ...o,
})

/** The row opened on the pipeline run's page: per step, [state, output or error text] as drawn side by side. */
async function opened(): Promise<[string, string | null, string | null][]> {
  return page.evaluate<[string, string | null, string | null][]>(
    `[...document.querySelectorAll("#row-steps .step")].map((s) => [s.dataset.step,
      s.querySelector(".st")?.textContent ?? null, s.querySelector(".step-output")?.textContent ?? null])`,
  )
}

const message = () => page.textContent("#message")

async function checkStatus(): Promise<Record<string, number>> {
  const out = await spool(["status", "--json", "triage.check"], { cwd: tmp.path })
  expect(out.code).toBe(0)
  const counts = JSON.parse(out.stdout).counts as Record<string, number>
  return Object.fromEntries(Object.entries(counts).filter(([, n]) => n > 0))
}

beforeAll(async () => {
  if (SKIP_BROWSER) return
  tmp = await tmpdir()
  fake = await startFake({ apiKey: KEY, reply })
  const lines = Array.from({ length: ROWS }, (_, n) => JSON.stringify({ id: `r${n}`, text: `t${n}` }))
  writeFileSync(tmp.join("in.jsonl"), `${lines.join("\n")}\n`)
  writeFileSync(tmp.join("job.toml"), job(fake.url))
  const ran = await spool(["run", "job.toml"], { cwd: tmp.path, env })
  expect([ran.code, ran.stderr]).toEqual([
    0,
    expect.stringContaining("15 row(s) wait for review: 15 at check"),
  ])
  server = start(["serve", "--port", "0"], { cwd: tmp.path })
  url = (await served(server.stderr)).url
  void new Response(server.stdout).text()
  const list = (await (await fetch(`${url}api/runs`)).json()) as { runs: { id: number; name: string }[] }
  for (const r of list.runs) runs[r.name] = r.id
  const { items } = (await (await fetch(`${url}api/runs/triage/items?limit=100`)).json()) as {
    items: { id: string; item_id: number }[]
  }
  for (const item of items) rows[item.id] = item.item_id
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
    ],
  })
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") problems.push(`console.${m.type()}: ${m.text()}`)
  })
  page.on("pageerror", (e) => problems.push(`uncaught: ${e.message}`))
  page.on("response", (r) => {
    if (r.status() >= 400) problems.push(`${r.status()} ${r.request().method()} ${r.url().replace(url, "/")}`)
  })
}, 60_000)

afterAll(async () => {
  await browser?.close().catch(() => {})
  if (server) {
    server.kill("SIGKILL")
    await server.exited
  }
  await fake?.[Symbol.asyncDispose]()
  await tmp?.[Symbol.asyncDispose]()
}, 20_000)

describe.skipIf(SKIP_BROWSER)("a pipeline on the status page in Chromium", () => {
  test("the graph has each step's exact counts, the runs list its steps under it, and a row shows its steps side by side", async () => {
    expect(Object.keys(runs).sort()).toEqual(["triage", "triage.check", "triage.classify", "triage.summary"])
    expect(Object.keys(rows)).toHaveLength(ROWS)
    // the page opens on the pipeline run, not on its last step
    await page.goto(url)
    await page.waitForSelector("#live.on", { timeout: 10_000 })
    expect(await page.textContent("#head h2")).toContain("triage")
    // rows r0…r29: 15 unsure ones (confidence < 0.5) wait at check; of the 15 let through, the bugs (6, 9, 15, 18,
    // 27) are summarised and the rest skipped; the 15 waiting have not reached summary
    expect(await graph()).toEqual({
      classify: node({ completed: 30 }),
      check: node({ completed: 15, needs_review: 15 }),
      summary: node({ completed: 5, skipped: 10, not_reached: 15 }),
    })
    expect(
      await page.evaluate(
        `[...document.querySelectorAll("#counts path.edge")].map((e) => e.dataset.from + ">" + e.dataset.to)`,
      ),
    ).toEqual(["classify>check", "check>summary"])
    expect(await page.textContent("#waiting")).toBe(
      "Waiting for review: 15 row(s) at check (open the step to approve, edit or reject them)",
    )
    expect(await page.getAttribute("#waiting a", "href")).toBe(`?run=${runs["triage.check"]}`)
    // every step's run under its pipeline, marked a step
    expect(
      await page.evaluate(
        `[...document.querySelectorAll("#runs tr")].map((r) => [r.dataset.run, r.dataset.parent ?? null, r.classList.contains("step")])`,
      ),
    ).toEqual([
      [String(runs.triage), null, false],
      [String(runs["triage.classify"]), String(runs.triage), true],
      [String(runs["triage.check"]), String(runs.triage), true],
      [String(runs["triage.summary"]), String(runs.triage), true],
    ])
    // the item list: a column per step, and r6's cells (a bug let through, and summarised)
    expect(
      await page.evaluate(
        `[...document.querySelectorAll("#browse tr.steps-head th")].map((t) => t.textContent)`,
      ),
    ).toEqual(["row", "classify", "check", "summary"])
    // the one-step header (state, attempts, …) is hidden in its place
    expect(
      await page.evaluate(
        `getComputedStyle(document.getElementById("browse").closest("table").tHead).display`,
      ),
    ).toBe("none")
    expect(
      await page.evaluate(
        `[...document.querySelectorAll("#browse tr[data-item='${rows.r6}'] td.cell")].map((c) => [c.dataset.step, c.querySelector(".st")?.textContent ?? null, c.querySelector(".out")?.textContent ?? c.textContent])`,
      ),
    ).toEqual([
      ["classify", "completed", '{"label":"bug","confidence":0.6}'],
      ["check", "completed", '{"label":"bug","confidence":0.6}'],
      ["summary", "completed", "sum(Summary: t6 is a bug)"],
    ])
    // a row opened: its steps side by side, with their exact answers
    await page.click(`#browse tr[data-item='${rows.r6}'] a`)
    await until(`document.querySelectorAll("#row-steps .step").length === 3`)
    expect(await opened()).toEqual([
      ["classify", "completed", JSON.stringify({ label: "bug", confidence: 0.6 }, null, 2)],
      ["check", "completed", JSON.stringify({ label: "bug", confidence: 0.6 }, null, 2)],
      ["summary", "completed", "sum(Summary: t6 is a bug)"],
    ])
    await page.goto(`${url}?run=triage#item=${rows.r4}`)
    await until(`document.querySelectorAll("#row-steps .step").length === 3`)
    expect(await opened()).toEqual([
      ["classify", "completed", JSON.stringify({ label: "billing", confidence: 0.4 }, null, 2)],
      ["check", "needs review", JSON.stringify({ label: "billing", confidence: 0.4 }, null, 2)],
      ["summary", null, null],
    ])
    expect(await page.textContent("#row-steps .step[data-step=summary]")).toContain("not reached yet")
    // a graph node is its step's page
    await page.click(`#counts .node[data-step=classify]`)
    await page.waitForURL(`${url}?run=${runs["triage.classify"]}`)
    expect(await page.textContent("#step-of")).toBe("step classify (model) of the pipeline triage")
  }, 60_000)

  test("review decisions taken with the step's page buttons land in the ledger, and the pipeline's graph follows", async () => {
    // from the row's steps to its review, on the step's page
    await page.goto(`${url}?run=triage#item=${rows.r0}`)
    await until(`document.querySelectorAll("#row-steps .step").length === 3`)
    await page.click(`#row-steps .step[data-step=check] a.button`)
    await until(
      `document.querySelector("#item-body code")?.textContent === "r0" && !!document.getElementById("review")`,
    )
    expect(await page.textContent("#step-of")).toBe(
      "step check (review: rows wait here for a person) of the pipeline triage · needs classify · when classify.confidence < 0.5",
    )
    expect(JSON.parse((await page.inputValue("#review-output"))!)).toEqual({ label: "bug", confidence: 0 })
    await page.click("button[data-review=approve]")
    await until(`document.getElementById("item-state")?.textContent === "completed"`)
    expect(await message()).toBe(
      'run "triage.check": 1 approved\n14 item(s) still wait for review: spool review triage.check\nthe rows let through go on to the next steps with: spool run job.toml',
    )

    // edited as JSON, and approved
    await page.goto(`${url}?run=triage.check#item=${await stepItem("r1")}`)
    await until(`!!document.getElementById("review")`)
    await page.fill("#review-output", '{"label": "bug", "confidence": 0.9}')
    await page.click("button[data-review=edit]")
    await until(`document.getElementById("item-state")?.textContent === "completed"`)
    expect(await message()).toContain('run "triage.check": 1 edited\n13 item(s) still wait for review')

    // rejected, with a reason
    await page.goto(`${url}?run=triage.check#item=${await stepItem("r2")}`)
    await until(`!!document.getElementById("review")`)
    await page.fill("#review-reason", "not a ticket")
    await page.click("button[data-review=reject]")
    await until(`document.getElementById("item-state")?.textContent === "rejected"`)
    expect(await page.textContent("#item-body")).toContain("rejected by a reviewer: not a ticket")

    // the ledger has them, as the CLI tells
    expect(await checkStatus()).toEqual({ completed: 17, needs_review: 12, rejected: 1 })
    const waiting = await spool(["review", "--json", "triage.check"], { cwd: tmp.path })
    expect(JSON.parse(waiting.stdout).items.map((i: { id: string }) => i.id)).toEqual(
      [3, 4, 10, 11, 12, 13, 14, 20, 21, 22, 23, 24].map((n) => `r${n}`),
    )
    const results = await spool(["results", "triage.check", "--state", "completed,rejected"], {
      cwd: tmp.path,
    })
    const decided = Object.fromEntries(
      results.stdout
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as { id: string; state: string; output: unknown })
        .filter((r) => ["r0", "r1", "r2"].includes(r.id))
        .map((r) => [r.id, [r.state, r.output]]),
    )
    expect(decided).toEqual({
      r0: ["completed", { label: "bug", confidence: 0 }],
      r1: ["completed", { label: "bug", confidence: 0.9 }],
      r2: ["rejected", '{"label":"question","confidence":0.2}'],
    })

    // the pipeline's page, left open, follows the decisions and the next run without a reload
    await page.goto(url)
    await page.waitForSelector("#live.on", { timeout: 10_000 })
    await page.evaluate("window.mark = 1")
    expect((await graph()).check).toEqual(node({ completed: 17, needs_review: 12, rejected: 1 }))
    expect(await page.textContent("#waiting")).toContain("12 row(s) at check")
    const again = await spool(["run", "job.toml"], { cwd: tmp.path, env })
    expect([again.code, again.stderr]).toEqual([
      0,
      expect.stringContaining("12 row(s) wait for review: 12 at check"),
    ])
    // r0 and r1 (now a bug) are summarised; r2, rejected, is skipped at summary
    await until(
      `document.querySelector("#counts .node[data-step=summary] text[data-k=completed]")?.textContent === "7"`,
    )
    expect(await graph()).toEqual({
      classify: node({ completed: 30 }),
      check: node({ completed: 17, needs_review: 12, rejected: 1 }),
      summary: node({ completed: 7, skipped: 11, not_reached: 12 }),
    })
    expect(await page.evaluate("window.mark")).toBe(1)
    await page.goto(`${url}?run=triage#item=${rows.r1}`)
    await until(`document.querySelectorAll("#row-steps .step .step-output").length === 3`)
    expect(await opened()).toEqual([
      ["classify", "completed", JSON.stringify({ label: "billing", confidence: 0.1 }, null, 2)],
      ["check", "completed", JSON.stringify({ label: "bug", confidence: 0.9 }, null, 2)],
      ["summary", "completed", "sum(Summary: t1 is a bug)"],
    ])
    expect(problems).toEqual([])
  }, 60_000)
})

/** The item id of row `key` at the step check. */
async function stepItem(key: string): Promise<number> {
  const { items } = (await (await fetch(`${url}api/runs/triage.check/items?q=${key}&limit=1`)).json()) as {
    items: { item_id: number }[]
  }
  return items[0]!.item_id
}
