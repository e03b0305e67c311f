/**
 * The status page in a real browser: headless Chromium (Debian's, driven by playwright-core) against
 * `dist/spool serve` over a store holding a finished run and a live one that a `spool run` beside it is working
 * through. The page must draw both, follow the live run without a reload, pause and resume it from its buttons,
 * show the finished run's counts exactly, and do all that without a console error or a CSP violation.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test"
import { existsSync, mkdirSync, writeFileSync } from "node:fs"
import { hostname } from "node:os"
import { join } from "node:path"
import { chromium, type Browser, type Page } from "playwright-core"
import { served, spool, start } from "../lib/spool.ts"
import { tmpdir, type Tmp } from "../lib/tmp.ts"
import { CHROMIUM, SKIP_BROWSER } from "../lib/needs.ts"

const ARTIFACTS = join(import.meta.dir, "..", "artifacts")
/** The browser's time zone: UTC+5:30 all year. */
const ZONE = "Asia/Kolkata"

type Child = ReturnType<typeof start>
type Counts = Record<string, number>

let tmp: Tmp
let home: string
let url: string
let live: Child | undefined
let server: Child | undefined
let browser: Browser | undefined
let page: Page
const ids: Record<string, number> = {}
/** Console errors, uncaught exceptions, CSP violations and failed requests of every page the test opened. */
const problems: string[] = []

async function status(run: number): Promise<{ state: string; counts: Counts; total: number }> {
  const out = await spool(["status", String(run), "--json", "--home", home], { cwd: tmp.path })
  expect(out.code).toBe(0)
  return JSON.parse(out.stdout)
}

// what runs in the page is written as source text: this project's types have no DOM

/** Every tile of the page's counts, as numbers, read from the DOM. */
async function tiles(): Promise<Counts> {
  return page.evaluate<Counts>(
    `Object.fromEntries([...document.querySelectorAll("#counts .tile")].map((el) =>
      [el.dataset.state, Number(el.querySelector("b").textContent.replace(/,/g, ""))]))`,
  )
}

const completed = async (): Promise<number> => (await tiles()).completed as number

/**
 * Waits until `expression`, evaluated in the page, is true. Polled from here: the page's CSP forbids eval, which
 * a string given to waitForFunction would need.
 */
async function until(expression: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await page.evaluate<boolean>(expression))) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${expression}`)
    await Bun.sleep(100)
  }
}

/** Waits until the page's completed count passes `n` (the page updating itself: nothing here reloads it). */
const countPasses = (n: number) =>
  until(
    `Number(document.querySelector(".tile[data-state=completed] b").textContent.replace(/,/g, "")) > ${n}`,
    10_000,
  )

/** Waits until the page shows the run in `state`. */
const stateIs = (state: string) =>
  until(`document.getElementById("run-state")?.textContent === ${JSON.stringify(state)}`, 5_000)

async function open(path: string): Promise<void> {
  await page.goto(`${url}${path}`)
  // a page that reloaded itself would lose this mark
  await page.evaluate("window.mark = 1")
  await page.waitForSelector("#live.on", { timeout: 10_000 })
}

/** The job panel's facts, by their labels. */
const jobFacts = () =>
  page.evaluate<Record<string, string>>(
    `Object.fromEntries([...document.querySelectorAll("#job-facts dd")].map((el) => [el.dataset.k, el.textContent]))`,
  )

const marked = () => page.evaluate<boolean>("window.mark === 1")

beforeAll(async () => {
  // without Chromium (and not required) the tests below skip, and the preload says so
  if (SKIP_BROWSER) return
  tmp = await tmpdir()
  home = tmp.join("home")

  // the finished run: 4 completed; 2 needs_review (an answer outside the schema); 2 failed (no text for the
  // template); and one line that is not JSON
  const rows = ["billing", "bug", "spam", null, "question", "spam", null, "billing"]
  writeFileSync(
    tmp.join("done.jsonl"),
    rows
      .map((t, i) => JSON.stringify(t === null ? { id: `t${i + 1}` } : { id: `t${i + 1}`, text: t }))
      .join("\n") + "\nnot json\n",
  )
  writeFileSync(
    tmp.join("label.json"),
    JSON.stringify({
      type: "object",
      properties: { label: { type: "string", enum: ["billing", "bug", "question"] } },
      required: ["label"],
      additionalProperties: false,
    }),
  )
  writeFileSync(
    tmp.join("done.toml"),
    `name = "finished"
[source]
path = "done.jsonl"
id = "id"
[provider]
name = "mock"
[provider.options]
reply = '{"label":"{{prompt}}"}'
[request]
prompt = "{{text}}"
[output]
schema = "label.json"
name = "ticket_label"
[limits]
max_attempts = 1
`,
  )
  const done = await spool(["run", "done.toml", "--home", home], { cwd: tmp.path })
  expect(done.stderr).toContain('run "finished": 4 completed, 2 failed, 2 need review of 8')
  expect(done.code).toBe(3)

  // the browse run: 120 items, about 4 s; b42's prompt is "strawberry", a word its row does not hold (its parts are
  // "straw" and "berry"), so only its output has it
  writeFileSync(
    tmp.join("browse.jsonl"),
    Array.from({ length: 120 }, (_, i) =>
      JSON.stringify({
        id: `b${i + 1}`,
        a: i === 41 ? "straw" : "plain",
        b: i === 41 ? "berry" : `${i + 1}`,
      }),
    ).join("\n") + "\n",
  )
  writeFileSync(
    tmp.join("browse.toml"),
    `name = "browse"
[source]
path = "browse.jsonl"
id = "id"
[provider]
name = "mock"
model = "mock-1"
[provider.options]
latency_ms = 60
[request]
system = "You are a careful labeller."
prompt = "{{a}}{{b}}"
[limits]
concurrency = 2
`,
  )
  const browsed = await spool(["run", "browse.toml", "--home", home], { cwd: tmp.path })
  expect(browsed.code).toBe(0)

  // the cached runs: a priced job run twice, the second time served whole from the response cache
  writeFileSync(
    tmp.join("cached.jsonl"),
    ["c1", "c2", "c3"].map((id) => JSON.stringify({ id, text: `cached ${id}` })).join("\n") + "\n",
  )
  writeFileSync(
    tmp.join("cached.toml"),
    `name = "cached"
[source]
path = "cached.jsonl"
id = "id"
[provider]
name = "mock"
[request]
prompt = "{{text}}"
[pricing]
input = 1000
output = 2000
`,
  )
  for (const fresh of [[], ["--new-run"]])
    expect((await spool(["run", "cached.toml", "--home", home, ...fresh], { cwd: tmp.path })).code).toBe(0)

  // the stopped run: killed (SIGKILL) while it works, so that no process works on it any more
  writeFileSync(
    tmp.join("stop.jsonl"),
    Array.from({ length: 200 }, (_, i) => JSON.stringify({ id: `s${i + 1}`, text: `s ${i + 1}` })).join(
      "\n",
    ) + "\n",
  )
  writeFileSync(
    tmp.join("stop.toml"),
    `name = "stopped"
[source]
path = "stop.jsonl"
id = "id"
[provider]
name = "mock"
[provider.options]
latency_ms = 200
[request]
prompt = "{{text}}"
[limits]
concurrency = 1
`,
  )
  const stopping = start(["run", "stop.toml", "--home", home], { cwd: tmp.path })
  void new Response(stopping.stdout).text()
  void new Response(stopping.stderr).text()
  for (let waited = 0; ; waited += 100) {
    const out = await spool(["status", "stopped", "--json", "--home", home], { cwd: tmp.path })
    if (out.code === 0 && JSON.parse(out.stdout).counts.completed > 0) break
    if (waited > 15_000) throw new Error(`the stopped run did not start: ${out.stderr}`)
    await Bun.sleep(100)
  }
  stopping.kill("SIGKILL")
  await stopping.exited

  // the live run: 600 items, two at a time, 100 ms each: about 30 s, longer than the test needs it; every 20th
  // has no text, and fails
  writeFileSync(
    tmp.join("live.jsonl"),
    Array.from({ length: 600 }, (_, i) =>
      JSON.stringify((i + 1) % 20 ? { id: `r${i + 1}`, text: `row ${i + 1}` } : { id: `r${i + 1}` }),
    ).join("\n") + "\n",
  )
  writeFileSync(
    tmp.join("live.toml"),
    `name = "live"
[source]
path = "live.jsonl"
id = "id"
[provider]
name = "mock"
[provider.options]
latency_ms = 100
[request]
prompt = "Label: {{text}}"
[limits]
concurrency = 2
`,
  )
  live = start(["run", "live.toml", "--home", home], { cwd: tmp.path })
  // drained, so a full pipe never holds it up
  void new Response(live.stdout).text()
  void new Response(live.stderr).text()

  server = start(["serve", "--port", "0", "--home", home], { cwd: tmp.path })
  url = (await served(server.stderr)).url
  void new Response(server.stdout).text()

  // until the live run has started and finished a few items
  const deadline = Date.now() + 15_000
  for (;;) {
    const { runs } = (await (await fetch(`${url}api/runs`)).json()) as {
      runs: { id: number; name: string; state: string; completed: number }[]
    }
    for (const r of runs) ids[r.name] = r.id
    const l = runs.find((r) => r.name === "live")
    if (l && l.state === "running" && l.completed > 0) break
    if (Date.now() > deadline) throw new Error(`the live run did not start: ${JSON.stringify(runs)}`)
    await Bun.sleep(100)
  }

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  })
  // in a zone of its own (one without summer time), so that the chart's times are known to be drawn in it
  page = await browser.newPage({ viewport: { width: 1280, height: 900 }, timezoneId: ZONE })
  // a CSP violation is reported on the console too; this names it for certain, whatever the browser says
  await page.addInitScript(
    `document.addEventListener("securitypolicyviolation", (e) =>
      console.error("CSP violation: " + e.violatedDirective + " blocked " + (e.blockedURI || "inline")))`,
  )
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") problems.push(`console.${m.type()}: ${m.text()}`)
  })
  page.on("pageerror", (e) => problems.push(`uncaught: ${e.message}`))
  page.on("response", (r) => {
    if (r.status() >= 400) problems.push(`${r.status()} ${r.request().method()} ${r.url()}`)
  })
}, 45_000)

afterAll(async () => {
  await browser?.close().catch(() => {})
  for (const child of [live, server]) {
    if (!child) continue
    child.kill("SIGKILL")
    await child.exited
  }
  await tmp?.[Symbol.asyncDispose]()
}, 20_000)

describe.skipIf(SKIP_BROWSER)("the status page in Chromium", () => {
  test("lists every run", async () => {
    await open("")
    const rows = await page.evaluate(
      `[...document.querySelectorAll("#runs tr[data-run]")].map((el) => [Number(el.dataset.run), el.querySelector("a").textContent])`,
    )
    expect(rows).toEqual([
      [ids.finished, "finished"],
      [ids.browse, "browse"],
      [ids.browse! + 1, "cached"],
      [ids.cached, "cached"],
      [ids.stopped, "stopped"],
      [ids.live, "live"],
    ])
    // the latest run is the one shown, and marked in the list
    expect(await page.textContent("#head h2")).toContain("live")
    expect(await page.getAttribute(`#runs tr[data-run="${ids.live}"]`, "class")).toBe("sel")
  })

  test("follows the live run: its completed count goes up without a reload", async () => {
    await open(`?run=${ids.live}`)
    expect(await page.textContent("#run-state")).toBe("running")
    const first = await completed()
    await Bun.sleep(2_500)
    const second = await completed()
    expect(second).toBeGreaterThan(first)
    // the list's progress follows too, and the chart has bars
    expect(await page.textContent(`#runs tr[data-run="${ids.live}"] .prog span`)).toMatch(/^[\d,]+ \/ 600$/)
    expect(await page.locator("#chart svg rect.ok").count()).toBeGreaterThan(0)
    // the failures as they come: each in the latest errors once
    const failed = `Number(document.querySelector(".tile[data-state=failed] b").textContent.replace(/,/g, ""))`
    await until(
      `${failed} > 0 && document.querySelectorAll("#recent li:not(.none)").length === Math.min(20, ${failed})`,
      10_000,
    )
    const errors = await page.locator("#recent li").allTextContents()
    const keys = errors.map((e) => /template (r\d+) \(attempt 1\)/.exec(e)?.[1])
    expect(keys.every((k) => k !== undefined && Number(k.slice(1)) % 20 === 0)).toBe(true)
    expect(new Set(keys).size).toBe(keys.length)
    expect(await marked()).toBe(true)
    // its one worker: this machine, the live process's pid, working; a finished run has none
    const workers: string[][] = await page.evaluate(
      `[...document.querySelectorAll("#workers tr")].map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent))`,
    )
    expect(workers.length).toBe(1)
    const [host, pid, , , working] = workers[0]!
    expect([host, pid, working]).toEqual([hostname(), String(live!.pid), "working"])
    await open(`?run=${ids.finished}`)
    expect(await page.textContent("#workers")).toBe("No process is working on this run.")
    // the tests after this one act on the live run
    await open(`?run=${ids.live}`)
  })

  test("Pause stops it (page and store say paused); Resume makes it go on", async () => {
    await page.click("button[data-action=pause]")
    await stateIs("paused")
    expect(await page.textContent("#message")).toContain('run "live" paused')
    expect(await page.isDisabled("button[data-action=pause]")).toBe(true)
    expect(await page.isEnabled("button[data-action=resume]")).toBe(true)
    // calls in flight when it paused may still land (the process sees the pause within half a second): once
    // none is running, nothing more
    await Bun.sleep(1_000)
    await until(`document.querySelector(".tile[data-state=running] b").textContent === "0"`, 5_000)
    const held = await completed()
    await Bun.sleep(2_500)
    expect(await completed()).toBe(held)
    const stopped = await status(ids.live as number)
    expect(stopped.state).toBe("paused")
    expect(stopped.counts.completed).toBe(held)

    await page.click("button[data-action=resume]")
    await stateIs("running")
    expect(await page.textContent("#message")).toContain('run "live" resumed')
    await countPasses(held)
    const going = await status(ids.live as number)
    expect(going.state).toBe("running")
    expect(going.counts.completed).toBeGreaterThan(held)
    expect(await marked()).toBe(true)

    mkdirSync(ARTIFACTS, { recursive: true })
    await page.screenshot({ path: join(ARTIFACTS, "status-page.png"), fullPage: true })
  })

  test("shows the finished run's counts exactly", async () => {
    await open(`?run=${ids.finished}`)
    expect(await page.textContent("#run-state")).toBe("completed with failures")
    const expected = {
      completed: 4,
      failed: 2,
      needs_review: 2,
      rejected: 0,
      pending: 0,
      running: 0,
      retry_wait: 0,
      queued: 0,
      submitted: 0,
    }
    expect(await tiles()).toEqual(expected)
    // a step's state, never a one-step run's: the page shows no tile of it, the status counts it at 0
    expect((await status(ids.finished as number)).counts).toEqual({ ...expected, skipped: 0 })
    // the progress bar: half completed, half failed or for review
    expect(await page.getAttribute("#head .bar rect.ok", "width")).toBe("50.00")
    expect(await page.getAttribute("#head .bar rect.bad", "width")).toBe("50.00")
    expect(await page.textContent(`#runs tr[data-run="${ids.finished}"] .prog span`)).toBe("8 / 8")
    // the item browser's first page: every item, in ledger order
    expect(await page.locator("#browse tr[data-item] td:first-child").allTextContents()).toEqual([
      "t1",
      "t2",
      "t3",
      "t4",
      "t5",
      "t6",
      "t7",
      "t8",
    ])
    expect(await page.textContent("#malformed")).toContain("1 line(s) skipped")
    expect(await page.isDisabled("button[data-action=pause]")).toBe(true)
    expect(await page.isEnabled("button[data-action=retry][data-state=failed]")).toBe(true)
    await page.screenshot({ path: join(ARTIFACTS, "status-page-finished.png"), fullPage: true })
  })

  test("Retry reopens the finished run's items; Cancel asks first, and stops the live run only once confirmed", async () => {
    // still on the finished run's page
    await page.click("button[data-action=retry][data-state=needs_review]")
    // reopened, and no process works on it: shown interrupted until a `spool run` takes it up
    await stateIs("interrupted")
    expect(await page.textContent("#message")).toContain(
      '2 needs_review item(s) of run "finished" are pending again',
    )
    await until(`document.querySelector(".tile[data-state=pending] b").textContent === "2"`, 5_000)
    expect((await status(ids.finished as number)).counts).toMatchObject({
      completed: 4,
      failed: 2,
      needs_review: 0,
      pending: 2,
    })

    await open(`?run=${ids.live}`)
    const asked: string[] = []
    page.once("dialog", (d) => (asked.push(d.message()), d.dismiss()))
    await page.click("button[data-action=cancel]")
    await Bun.sleep(1_000)
    expect(asked).toEqual([
      "Cancel this run? Its live batches are cancelled at the provider; what they finished is kept.",
    ])
    expect(await page.textContent("#run-state")).toBe("running")
    expect((await status(ids.live as number)).state).toBe("running")

    page.once("dialog", (d) => d.accept())
    await page.click("button[data-action=cancel]")
    await until(`document.getElementById("run-state")?.textContent === "cancelled"`, 15_000)
    // the process running it stops its work and exits 1 ("was cancelled")
    expect(await live!.exited).toBe(1)
    expect((await status(ids.live as number)).state).toBe("cancelled")
    expect(await page.isDisabled("button[data-action=cancel]")).toBe(true)
    expect(await marked()).toBe(true)
  })

  test("shows the run's job: provider, model, mode, inputs, system prompt and prompt template", async () => {
    await open(`?run=${ids.browse}`)
    const facts = await jobFacts()
    expect(facts).toMatchObject({
      provider: "mock · mock-1 · realtime",
      "API key": "read from the provider's own variable",
      inputs: `${tmp.join("browse.jsonl")} (jsonl), id field "id"`,
      "output schema": "none (free text)",
    })
    expect(facts.limits).toStartWith("concurrency 2 · ")
    expect(await page.textContent("#job-system")).toBe("You are a careful labeller.")
    expect(await page.textContent("#job-prompt")).toBe("{{a}}{{b}}")
    // a job with an output schema: its name
    await open(`?run=${ids.finished}`)
    const checked = await jobFacts()
    expect([checked.provider, checked["output schema"], checked.options]).toEqual([
      "mock · no model named · realtime",
      "ticket_label",
      '{"reply":"{\\"label\\":\\"{{prompt}}\\"}"}',
    ])
    expect(checked.limits).toBe(
      "concurrency 32 · rpm learned from the provider · tpm learned from the provider · max attempts 1 (retries wait 1–60 s) · timeout 120 s",
    )
  })

  test("the chart spans the run's own life, its times in the browser's zone, with its errors marked", async () => {
    // the browse run took about 4 s: its bars fill the chart from left to right
    await open(`?run=${ids.browse}`)
    const bars = await page.evaluate<number[][]>(
      `[...document.querySelectorAll("#chart rect.ok")].map((r) => [Number(r.getAttribute("x")), Number(r.getAttribute("width"))])`,
    )
    expect(bars.length).toBeGreaterThan(10)
    expect(Math.min(...bars.map(([x]) => x!))).toBeLessThan(72)
    expect(Math.max(...bars.map(([x, w]) => x! + w!))).toBeGreaterThan(648)
    const run = (await (await fetch(`${url}api/runs/${ids.browse}`)).json()) as {
      chart: { from: number; to: number }
    }
    const there = new Intl.DateTimeFormat("en-GB", {
      timeZone: ZONE,
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
      hourCycle: "h23",
    }).format(new Date(run.chart.from))
    // a chart of under 4 s has its ticks less than a second apart: with tenths, so that they differ
    const tenth = run.chart.to - run.chart.from < 4000 ? `.${Math.floor((run.chart.from % 1000) / 100)}` : ""
    expect(await page.textContent("#chart .ticks span:first-child")).toBe(`${there}${tenth}`)
    // Chromium names the zone by its older name, Asia/Calcutta
    expect(await page.textContent("#chart .zone")).toMatch(
      /^times in UTC\+5:30 \(Asia\/(Kolkata|Calcutta)\)$/,
    )
    // the finished run's four attempts with an error are marked: two failed (no text for the template), two
    // answered outside the schema
    await open(`?run=${ids.finished}`)
    // its items all ended within a second: its five ticks, tenths of a second apart, each say another time
    const ticks = await page.locator("#chart .ticks span").allTextContents()
    expect([ticks.length, new Set(ticks).size]).toEqual([5, 5])
    expect(ticks.every((t) => /^\d\d:\d\d:\d\d\.\d$/.test(t))).toBe(true)
    const marks = await page.locator("#chart rect.err title").allTextContents()
    expect(marks.length).toBeGreaterThan(0)
    expect(marks.reduce((n, m) => n + Number(/: (\d+) failed attempt/.exec(m)?.[1]), 0)).toBe(4)
  })

  test("the item browser pages through a run's items and filters them by state", async () => {
    await open(`?run=${ids.browse}`)
    const shown = () => page.locator("#browse tr[data-item] td:first-child a").allTextContents()
    const range = (from: number, to: number) =>
      Array.from({ length: to - from + 1 }, (_, i) => `b${from + i}`)
    expect(await shown()).toEqual(range(1, 50))
    await page.click("#next")
    await until(`document.querySelector("#browse tr[data-item] a")?.textContent === "b51"`, 5_000)
    expect(await shown()).toEqual(range(51, 100))
    await page.click("#next")
    await until(`document.querySelector("#browse tr[data-item] a")?.textContent === "b101"`, 5_000)
    expect(await shown()).toEqual(range(101, 120))
    expect(await page.isDisabled("#next")).toBe(true)
    await page.click("#prev")
    await until(`document.querySelector("#browse tr[data-item] a")?.textContent === "b51"`, 5_000)

    // by state: from the list, or by a count's tile
    await open(`?run=${ids.finished}`)
    await page.selectOption("#state", "failed")
    await until(`document.querySelectorAll("#browse tr[data-item]").length === 2`, 5_000)
    expect(await shown()).toEqual(["t4", "t7"])
    // (its needs_review items are pending again since the Retry test)
    await page.click('#counts .tile[data-state="pending"]')
    await until(`document.querySelector("#browse tr[data-item] a")?.textContent === "t3"`, 5_000)
    expect(await shown()).toEqual(["t3", "t6"])
    expect(await page.inputValue("#state")).toBe("pending")

    // a search within a state says how many of that state's items it has read
    await page.selectOption("#state", "failed")
    await page.fill("#q", "has no field")
    await page.press("#q", "Enter")
    await until(`document.getElementById("found").textContent.includes("to the run's end")`, 10_000)
    expect(await shown()).toEqual(["t4", "t7"])
    expect(await page.textContent("#found")).toBe(
      "2 found · 2 of 2 failed items searched from here (to the run's end)",
    )
  })

  test("search finds an item by a word of its output; opened, it shows its input row, request, attempts and output", async () => {
    await open(`?run=${ids.browse}`)
    await page.fill("#q", "strawberry")
    await page.press("#q", "Enter")
    await until(`document.getElementById("found").textContent.includes("to the run's end")`, 10_000)
    expect(await page.locator("#browse tr[data-item] td:first-child").allTextContents()).toEqual(["b42"])
    expect(await page.textContent("#found")).toBe(
      "1 found · 120 of 120 items searched from here (to the run's end)",
    )
    expect(await page.isHidden("#stop")).toBe(true)
    // by its id too, found first and marked so
    await page.fill("#q", "b7")
    await page.press("#q", "Enter")
    await until(`document.querySelector("#browse tr[data-item] td")?.textContent === "b7 id"`, 10_000)
    // a page full of finds stops, and Next searches on from there: every row but b42's says "plain"
    await page.fill("#q", "plain")
    await page.press("#q", "Enter")
    const searched = async (first: string, said: string) => {
      await until(`document.querySelector("#browse tr[data-item] a")?.textContent === "${first}"`, 10_000)
      await until(`document.getElementById("stop").hidden`, 10_000)
      expect(await page.textContent("#found")).toBe(said)
    }
    await searched("b1", "50 found · 51 of 120 items searched from here · Next searches on")
    expect(await page.locator("#browse tr[data-item]").count()).toBe(50)
    await page.click("#next")
    await searched("b52", "50 found · 50 of 120 items searched from here · Next searches on")
    await page.click("#next")
    await searched("b102", "19 found · 19 of 120 items searched from here (to the run's end)")
    expect(await page.isDisabled("#next")).toBe(true)
    await page.fill("#q", "strawberry")
    await page.press("#q", "Enter")
    await until(`document.querySelector("#browse tr[data-item] a")?.textContent === "b42"`, 10_000)
    mkdirSync(ARTIFACTS, { recursive: true })
    await page.screenshot({ path: join(ARTIFACTS, "status-page-items.png"), fullPage: true })

    await page.click("#browse tr[data-item] a")
    await page.waitForSelector("#item:not([hidden]) #item-attempts", { timeout: 5_000 })
    expect(page.url()).toMatch(/#item=\d+$/)
    expect(await page.textContent("#item-state")).toBe("completed")
    expect(JSON.parse((await page.textContent("#item-input")) ?? "")).toEqual({
      id: "b42",
      a: "straw",
      b: "berry",
    })
    expect(await page.textContent("#item-input")).toContain('\n  "a": "straw",\n')
    expect(await page.textContent("#item-system")).toBe("You are a careful labeller.")
    expect(await page.textContent("#item-prompt")).toBe("strawberry")
    expect(await page.textContent("#item-output")).toBe("mock reply to: strawberry")
    const attempts = await page
      .locator("#item-attempts tbody tr")
      .evaluateAll((rows) => rows.map((r) => [...r.querySelectorAll("td")].map((td) => td.textContent)))
    expect(attempts).toHaveLength(1)
    expect(attempts[0]![0]).toBe("1")
    expect(attempts[0]![3]).toBe("ok")
    expect(attempts[0]![6]).toMatch(/^\d+ ms$/)
    await page.screenshot({ path: join(ARTIFACTS, "status-page-item.png"), fullPage: true })

    // an item that failed: its attempt's error class and message
    await open(`?run=${ids.finished}`)
    await page.fill("#q", "t4")
    await page.press("#q", "Enter")
    await until(`document.querySelector("#browse tr[data-item] a")?.textContent === "t4"`, 10_000)
    await page.click("#browse tr[data-item] a")
    await page.waitForSelector("#item:not([hidden]) #item-attempts", { timeout: 5_000 })
    const failed = await page.locator("#item-attempts tbody td").allTextContents()
    expect(failed[3]).toBe("failed")
    expect(failed[4]).toBe('template the row has no field "text" for the prompt\'s placeholder')
    expect(await page.textContent("#item .alert")).toContain(
      'This row cannot fill the prompt: the row has no field "text"',
    )
    // failed, it has none to come
    expect(await page.textContent("#item-no-output")).toBe("No output.")
    // closed, and gone from the address
    await page.click("#close-item")
    expect(await page.isHidden("#item")).toBe(true)
    expect(page.url()).not.toContain("#item")

    // an attempt's outcome reads as words; a JSON answer is pretty-printed
    const opened = async (key: string) => {
      await page.fill("#q", key)
      await page.press("#q", "Enter")
      await until(`document.querySelector("#browse tr[data-item] a")?.textContent === "${key}"`, 10_000)
      await page.click("#browse tr[data-item] a")
      await until(`document.querySelector("#item:not([hidden]) h3 code")?.textContent === "${key}"`, 5_000)
    }
    await opened("t3")
    expect((await page.locator("#item-attempts tbody td").allTextContents())[3]).toBe("needs review")
    await opened("t1")
    expect(await page.textContent("#item-output")).toBe('{\n  "label": "billing"\n}')
  })

  test("a run served from the cache: hits, misses and savings beside its spend; a hit opened says what its answer cost, its attempt noted", async () => {
    const figures = () =>
      page.evaluate<Record<string, string>>(
        `Object.fromEntries([...document.querySelectorAll("#figures dd")].map((el) => [el.dataset.k, el.textContent]))`,
      )
    // each answer: "cached cN" is 3 tokens in, "mock reply to: cached cN" 6 out, at $1,000 and $2,000 a million
    await open(`?run=${ids.browse! + 1}`)
    const paid = await figures()
    expect([paid.spend, paid.cache]).toEqual(["$0.045", "0 hits · 3 misses · saved $0.00"])
    await open(`?run=${ids.cached}`)
    const served = await figures()
    expect([served.spend, served.cache]).toEqual(["$0.00", "3 hits · 0 misses · saved $0.045"])
    expect(await page.locator("#browse tr[data-item] .tag").allTextContents()).toEqual([
      "cached",
      "cached",
      "cached",
    ])
    await page.click("#browse tr[data-item] a")
    await page.waitForSelector("#item:not([hidden]) #item-attempts", { timeout: 5_000 })
    expect(await page.textContent("#item-cached")).toBe(
      "Served from the response cache, with no call. Its answer was paid for once: 3 in · 6 out, $0.015.",
    )
    expect(await page.textContent("#item-output")).toBe("mock reply to: cached c1")
    const attempts = await page
      .locator("#item-attempts tbody tr")
      .evaluateAll((rows) => rows.map((r) => [...r.querySelectorAll("td")].map((td) => td.textContent)))
    expect(attempts).toHaveLength(1)
    expect([attempts[0]![0], attempts[0]![3], attempts[0]![7]]).toEqual([
      "—",
      "cachedserved from the response cache: no call, not counted",
      "",
    ])
    mkdirSync(ARTIFACTS, { recursive: true })
    await page.screenshot({ path: join(ARTIFACTS, "status-page-cached.png"), fullPage: true })
  })

  test("a run no process works on is marked interrupted, with the command that goes on with it", async () => {
    await open(`?run=${ids.stopped}`)
    const { runs } = (await (await fetch(`${url}api/runs`)).json()) as {
      runs: { name: string; state: string; resume: string }[]
    }
    const row = runs.find((r) => r.name === "stopped")!
    expect(row.state).toBe("interrupted")
    expect(await page.textContent("#run-state")).toBe("interrupted")
    expect(await page.textContent("#interrupted .cmd")).toBe(row.resume)
    expect(await page.textContent(`#runs tr[data-run="${ids.stopped}"] .resume .cmd`)).toBe(row.resume)
    expect(await page.isDisabled("button[data-action=pause]")).toBe(true)
  })

  test("the download link gives the run's results as JSONL", async () => {
    await open(`?run=${ids.browse}`)
    expect(await page.getAttribute("#download", "href")).toBe(`api/runs/${ids.browse}/results`)
    const body = await page.evaluate<string>(
      `fetch(document.getElementById("download").href).then((r) => r.text())`,
    )
    const lines = body
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { id: string; output: string })
    expect(lines.length).toBe(120)
    expect(lines[41]).toMatchObject({ id: "b42", output: "mock reply to: strawberry" })
  })

  test("no console error, uncaught exception, CSP violation or failed request on any page", () => {
    expect(problems).toEqual([])
  })
})
