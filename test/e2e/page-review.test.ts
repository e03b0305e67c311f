/**
 * Review from the status page in headless Chromium (README, "Review"): an item left for review, opened, is approved,
 * edited or rejected with the page's buttons; a refused decision says why and changes nothing. What the page did is
 * read back with `spool status` and `spool results`.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test"
import { writeFileSync } from "node:fs"
import { chromium, type Browser, type Page } from "playwright-core"
import { served, spool, start } from "../lib/spool.ts"
import { tmpdir, type Tmp } from "../lib/tmp.ts"
import { CHROMIUM, SKIP_BROWSER } from "../lib/needs.ts"

let tmp: Tmp
let url: string
let server: ReturnType<typeof start> | undefined
let browser: Browser | undefined
let page: Page
/** The ledger id of each item, by its key. */
const ids: Record<string, number> = {}
/** Console errors, uncaught exceptions and failed requests of the page. */
const problems: string[] = []

async function until(expression: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await page.evaluate<boolean>(expression))) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${expression}`)
    await Bun.sleep(50)
  }
}

/** Opens item `key` of the run on its page, and waits for it to be drawn. */
async function openItem(key: string): Promise<void> {
  await page.goto(`${url}?run=1#item=${ids[key]}`)
  await until(`document.querySelector("#item-body code")?.textContent === ${JSON.stringify(key)}`)
}

const itemState = () => page.textContent("#item-state")
const message = () => page.textContent("#message")

async function results(): Promise<[string, string, unknown, string | null][]> {
  const out = await spool(["results"], { cwd: tmp.path })
  return out.stdout
    .trim()
    .split("\n")
    .map(
      (l) =>
        JSON.parse(l) as { id: string; state: string; output: unknown; error: { message: string } | null },
    )
    .map((r) => [r.id, r.state, r.output, r.error?.message ?? null])
}

beforeAll(async () => {
  if (SKIP_BROWSER) return
  tmp = await tmpdir()
  // the mock answers {"label": text}: three of them are outside the schema's enum, and wait for review
  writeFileSync(
    tmp.join("in.jsonl"),
    ["spam", "billing", "phishing", "junk"]
      .map((t, i) => JSON.stringify({ id: `t${i + 1}`, text: t }))
      .join("\n") + "\n",
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
    tmp.join("job.toml"),
    `name = "reviewing"\n[source]\npath = "in.jsonl"\nid = "id"\n[provider]\nname = "mock"\n[provider.options]\nreply = '{"label":"{{prompt}}"}'\n[request]\nprompt = "{{text}}"\n[output]\nschema = "label.json"\n[limits]\nmax_attempts = 1\n`,
  )
  expect((await spool(["run", "job.toml"], { cwd: tmp.path })).code).toBe(3)
  server = start(["serve", "--port", "0"], { cwd: tmp.path })
  url = (await served(server.stderr)).url
  void new Response(server.stdout).text()
  const { items } = (await (await fetch(`${url}api/runs/1/items?limit=10`)).json()) as {
    items: { id: string; item_id: number }[]
  }
  for (const item of items) ids[item.id] = item.item_id
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
  page = await browser.newPage()
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") problems.push(`console.${m.type()}: ${m.text()}`)
  })
  page.on("pageerror", (e) => problems.push(`uncaught: ${e.message}`))
  page.on("response", (r) => {
    if (r.status() >= 400) problems.push(`${r.status()} ${r.request().method()} ${r.url().replace(url, "/")}`)
  })
}, 45_000)

afterAll(async () => {
  await browser?.close().catch(() => {})
  if (server) {
    server.kill("SIGKILL")
    await server.exited
  }
  await tmp?.[Symbol.asyncDispose]()
}, 20_000)

describe.skipIf(SKIP_BROWSER)("review on the status page in Chromium", () => {
  test("an item left for review is approved, edited or rejected with the page's buttons; a refusal changes nothing", async () => {
    expect(Object.keys(ids).sort()).toEqual(["t1", "t2", "t3", "t4"])
    // an answer outside the schema: approving it as it is is refused, with the gate it fails
    await openItem("t1")
    expect(await itemState()).toBe("needs review")
    expect(JSON.parse((await page.inputValue("#review-output"))!)).toEqual({ label: "spam" })
    await page.click("button[data-review=approve]")
    await until(`document.getElementById("message").textContent.includes("nothing was decided")`)
    expect(await message()).toContain(
      'item "t1": its answer cannot be approved as it is (schema violation at /label',
    )
    expect(await itemState()).toBe("needs review")
    expect(await page.isDisabled("button[data-review=approve]")).toBe(false)

    // corrected in the box and approved
    await page.fill("#review-output", '{"label": "bug"}')
    await page.fill("#review-reason", "spam about a bug")
    await page.click("button[data-review=edit]")
    await until(`document.getElementById("item-state")?.textContent === "completed"`)
    expect(await message()).toBe(
      'run "reviewing": 1 edited\n2 item(s) still wait for review: spool review reviewing',
    )
    expect(await page.$("#review")).toBeNull()

    // an edit that is not JSON is refused, named
    await openItem("t3")
    await page.fill("#review-output", "{label: bug")
    await page.click("button[data-review=edit]")
    await until(`document.getElementById("message").textContent.includes("nothing was decided")`)
    expect(await message()).toContain(
      "the edited answer fails the job's output schema (not JSON: {label: bug)",
    )
    expect(await itemState()).toBe("needs review")

    // rejected, with the reason as its error
    await page.fill("#review-reason", "phishing is not a label")
    await page.click("button[data-review=reject]")
    await until(`document.getElementById("item-state")?.textContent === "rejected"`)
    expect(await page.textContent("#item-body")).toContain("rejected by a reviewer: phishing is not a label")

    // the run's tiles follow
    await until(`document.querySelector(".tile[data-state=rejected] b")?.textContent === "1"`)
    expect(await results()).toEqual([
      ["t1", "completed", { label: "bug" }, null],
      ["t2", "completed", { label: "billing" }, null],
      ["t3", "rejected", '{"label":"phishing"}', "rejected by a reviewer: phishing is not a label"],
      ["t4", "needs_review", '{"label":"junk"}', expect.stringContaining("schema violation at /label")],
    ])
    const status = JSON.parse((await spool(["status", "--json"], { cwd: tmp.path })).stdout)
    expect(status.counts).toMatchObject({ completed: 2, rejected: 1, needs_review: 1 })
    // the decisions are kept, with where they came from
    const history = await spool(["review", "--json"], { cwd: tmp.path })
    expect(JSON.parse(history.stdout).items.map((i: { id: string }) => i.id)).toEqual(["t4"])
    // only the two refusals failed, as the page was told
    expect(problems.sort()).toEqual([
      "409 POST /api/runs/1/review",
      "409 POST /api/runs/1/review",
      "console.error: Failed to load resource: the server responded with a status of 409 (Conflict)",
      "console.error: Failed to load resource: the server responded with a status of 409 (Conflict)",
    ])
  }, 60_000)

  test("a decision posted by another site's page is refused, and changes nothing", async () => {
    const res = await fetch(`${url}api/runs/1/review`, {
      method: "POST",
      headers: { "content-type": "application/json", origin: "http://evil.example" },
      body: JSON.stringify({ id: "t4", decision: "reject" }),
    })
    expect(res.status).toBe(403)
    const bad = await fetch(`${url}api/runs/1/review`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ id: "t4", decision: "maybe" }),
    })
    expect(bad.status).toBe(400)
    expect(((await bad.json()) as { error: string }).error).toBe(
      "body.decision: must be approve, edit or reject",
    )
    const status = JSON.parse((await spool(["status", "--json"], { cwd: tmp.path })).stdout)
    expect(status.counts.needs_review).toBe(1)
  })
})
