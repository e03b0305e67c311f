/**
 * Batch result files that cannot be trusted, through the compiled binary: a download cut short, empty, an HTML page
 * served with a 200, a line missing or repeated. Each is kept aside and downloaded again, nothing is applied from it,
 * and every item is paid exactly once; a file that never verifies holds its batch with the items still submitted; a
 * line the provider's own file has broken goes to review; a SIGKILL in the re-download loop loses nothing.
 */
import { describe, expect, test } from "bun:test"
import { Database } from "bun:sqlite"
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { startFake } from "../lib/fake-openai.ts"
import { startFakeAnthropic } from "../lib/fake-anthropic.ts"
import { GATEWAY_PAGE, type BatchFault, type DownloadFault } from "../lib/fake-batch.ts"
import { spool, start, until } from "../lib/spool.ts"
import { tmpdir, type Tmp } from "../lib/tmp.ts"

const KEY = "sk-test-download-0123456789"
const env = { OPENAI_API_KEY: KEY, ANTHROPIC_API_KEY: KEY }
/** Items per run: one batch, the last item's line refused by the provider (an error file too). */
const N = 38

function job(url: string, provider = "openai", model = "gpt-4.1-mini", extra = ""): string {
  return `name = "dl"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "${provider}"
model = "${model}"
mode = "batch"
base_url = "${url}"
[request]
prompt = "Item {{n}}"
max_tokens = 50
[limits]
max_attempts = 3
[batch]
poll_s = 0.02
poll_max_s = 0.05
${extra}`
}

const prompt = (i: number) => `Item ${i}`

function input(n: number): string {
  return (
    Array.from({ length: n }, (_, i) => JSON.stringify({ id: `id-${i + 1}`, n: i + 1 })).join("\n") + "\n"
  )
}

/** The last item's line is refused (400): an error file beside the output file, and one failed item. */
function refuseLast(fake: { batch: { faults: BatchFault | undefined } }): void {
  fake.batch.faults = {
    lineError: (_id, text) =>
      text === prompt(N) ? { status: 400, message: "Invalid 'max_tokens'." } : undefined,
  }
}

type Line = {
  id: string
  state: string
  output: string | null
  error: { class: string; message: string } | null
}

async function results(cwd: string): Promise<Line[]> {
  const out = await spool(["results"], { cwd, env })
  expect(out.code).toBe(0)
  return out.stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as Line)
}

function states(tmp: Tmp): Record<string, number> {
  const db = new Database(tmp.join(".spool", "spool.db"), { readonly: true })
  const rows = db
    .query<{ state: string; n: number }, []>("SELECT state, count(*) AS n FROM items GROUP BY state")
    .all()
  db.close()
  return Object.fromEntries(rows.map((r) => [r.state, r.n]))
}

const artifacts = (tmp: Tmp) => tmp.join(".spool", "artifacts", "dl")
const requestFiles = (tmp: Tmp) => readdirSync(artifacts(tmp)).filter((f) => f.endsWith(".requests.jsonl"))
const badFiles = (tmp: Tmp) =>
  readdirSync(artifacts(tmp))
    .filter((f) => f.includes(".bad-"))
    .sort()

/** Every item answered once: 37 completed with their own answer, the refused one failed; none paid twice. */
async function paidOnce(
  fake: { paid: Map<string, number>; batch: { batches: unknown[] } },
  tmp: Tmp,
): Promise<void> {
  const lines = await results(tmp.path)
  expect(lines.length).toBe(N)
  for (const [i, line] of lines.entries()) {
    if (i + 1 === N) expect(line).toMatchObject({ id: `id-${N}`, state: "failed" })
    else
      expect(line).toMatchObject({ id: `id-${i + 1}`, state: "completed", output: `echo: ${prompt(i + 1)}` })
  }
  for (let i = 1; i < N; i++) expect(fake.paid.get(prompt(i))).toBe(1)
  expect(fake.paid.has(prompt(N))).toBe(false)
  // one batch, created once: nothing was sent again
  expect(fake.batch.batches.length).toBe(1)
}

const FAULTS: DownloadFault[] = ["truncated", "empty", "html", "missing_line", "duplicate_line"]

describe("batch downloads are verified before they settle anything (OpenAI)", () => {
  for (const fault of FAULTS) {
    test(`a ${fault.replace("_", " ")} output download is kept aside, downloaded again, and every item is paid once`, async () => {
      await using tmp = await tmpdir()
      await using fake = await startFake({ apiKey: KEY })
      refuseLast(fake)
      fake.batch.downloadFaults = [fault]
      writeFileSync(tmp.join("in.jsonl"), input(N))
      writeFileSync(tmp.join("job.toml"), job(fake.url))
      const run = await spool(["run", "job.toml"], { cwd: tmp.path, env })
      expect(run.stderr).toContain(`run "dl": ${N - 1} completed, 1 failed of ${N}`)
      expect(run.code).toBe(3)
      await paidOnce(fake, tmp)
      // both files twice: the output file once bad
      expect(fake.batch.downloads).toBe(4)
      const [bad, ...more] = badFiles(tmp)
      expect(more).toEqual([])
      expect(bad).toMatch(/^sp[a-z0-9]+\.output\.bad-1\.jsonl$/)
      const kept = readFileSync(join(artifacts(tmp), bad!), "utf8")
      if (fault === "empty") expect(kept).toBe("")
      if (fault === "html") expect(kept).toBe(GATEWAY_PAGE)
      if (fault === "truncated") expect(kept.endsWith("\n")).toBe(false)
      if (fault === "missing_line") expect(kept.trim().split("\n").length).toBe(N - 2)
      if (fault === "duplicate_line") expect(kept.trim().split("\n").length).toBe(N)
      const log = readFileSync(tmp.join(".spool", "logs", "spool.log"), "utf8")
      expect(log).toContain("do not agree with the provider")
      expect(log).not.toContain("goes back to pending")
    }, 60_000)
  }

  test("a bad error file is downloaded again too, and the refused item fails once", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    refuseLast(fake)
    // the output file downloads first and is intact; then the error file comes back empty, then intact
    fake.batch.downloadFaults = [null, "empty"]
    writeFileSync(tmp.join("in.jsonl"), input(N))
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const run = await spool(["run", "job.toml"], { cwd: tmp.path, env })
    expect(run.code).toBe(3)
    await paidOnce(fake, tmp)
    expect(badFiles(tmp).map((f) => f.replace(/^sp[a-z0-9]+/, "TAG"))).toEqual(["TAG.errors.bad-1.jsonl"])
  }, 60_000)

  test("a download that never verifies holds its batch: exit 1 naming the file and the counts, items left submitted; the next run finishes it", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    refuseLast(fake)
    // every download is cut short, the output file's and the error file's
    fake.batch.downloadFaults = Array<DownloadFault>(6).fill("truncated")
    writeFileSync(tmp.join("in.jsonl"), input(N))
    writeFileSync(tmp.join("job.toml"), job(fake.url, "openai", "gpt-4.1-mini", "download_tries = 3"))
    const run = await spool(["run", "job.toml"], { cwd: tmp.path, env })
    expect(run.code).toBe(1)
    expect(run.stderr).toContain("its result files do not agree with the provider")
    expect(run.stderr).toContain("the provider counts 38 requests, 37 completed, 1 failed")
    expect(run.stderr).toContain("output file: its last line has no newline")
    expect(run.stderr).toContain(".output.bad-3.jsonl")
    expect(run.stderr).toContain("3 downloads failed the check, nothing was applied")
    expect(run.stderr).toContain("their items stay submitted")
    expect(badFiles(tmp).length).toBe(6)
    // not one item went back to pending on the strength of those files, and none was paid again
    expect(states(tmp)).toEqual({ submitted: N })
    expect(fake.batch.batches.length).toBe(1)
    const status = await spool(["status"], { cwd: tmp.path, env })
    expect(status.stdout + status.stderr).toContain("do not agree with the provider")
    // the provider's file downloads intact now: the next run applies it
    const again = await spool(["run", "job.toml"], { cwd: tmp.path, env })
    expect(again.code).toBe(3)
    await paidOnce(fake, tmp)
  }, 60_000)

  test("a line the provider's file has broken in two downloads goes to review with the raw line; nothing is sent again", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    refuseLast(fake)
    // every download of every file has its 4th line cut in half: the error file has one line, so only the output's
    fake.batch.garbledLine = 3
    writeFileSync(tmp.join("in.jsonl"), input(N))
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const run = await spool(["run", "job.toml"], { cwd: tmp.path, env })
    expect(run.stderr).toContain(`run "dl": ${N - 2} completed, 1 failed, 1 need review of ${N}`)
    expect(run.code).toBe(3)
    const lines = await results(tmp.path)
    const review = lines.filter((l) => l.state === "needs_review")
    expect(review.length).toBe(1)
    const kept = readFileSync(join(artifacts(tmp), badFiles(tmp)[0]!), "utf8").split("\n")[3]!
    expect(review[0]!.output).toBe(kept)
    expect(review[0]!.error!.class).toBe("bad_response")
    expect(review[0]!.error!.message).toContain("the same in two downloads")
    expect(lines.filter((l) => l.state === "completed").length).toBe(N - 2)
    // the item in review was paid for once, as every other one: no second batch
    for (let i = 1; i < N; i++) expect(fake.paid.get(prompt(i))).toBe(1)
    expect(fake.batch.batches.length).toBe(1)
    expect(badFiles(tmp).length).toBe(1)
  }, 60_000)

  test("SIGKILL right after a bad download was kept: the next run downloads again and loses nothing", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    refuseLast(fake)
    // the output file cut short (the error file intact), then the output file an HTML page, then both intact
    fake.batch.downloadFaults = ["truncated", null, "html"]
    writeFileSync(tmp.join("in.jsonl"), input(N))
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const killed = await spool(["run", "job.toml"], {
      cwd: tmp.path,
      env: { ...env, SPOOL_CRASH_AT: "verify" },
    })
    expect(killed.code).not.toBe(0)
    expect(badFiles(tmp).length).toBe(1)
    expect(states(tmp)).toEqual({ submitted: N })
    const run = await spool(["run", "job.toml"], { cwd: tmp.path, env })
    expect(run.code).toBe(3)
    await paidOnce(fake, tmp)
    expect(badFiles(tmp).map((f) => f.replace(/^sp[a-z0-9]+/, "TAG"))).toEqual([
      "TAG.output.bad-1.jsonl",
      "TAG.output.bad-2.jsonl",
    ])
    expect(readFileSync(join(artifacts(tmp), badFiles(tmp)[1]!), "utf8")).toBe(GATEWAY_PAGE)
  }, 60_000)
})

describe("a download that cannot be written", () => {
  test("stops the run with the file named, instead of being retried as the provider's failure; the next run goes on", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, batch: { processingMs: 1500 } })
    refuseLast(fake)
    writeFileSync(tmp.join("in.jsonl"), input(N))
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const child = start(["run", "job.toml"], { cwd: tmp.path, env })
    // while the batch runs, a directory takes the place its output file is downloaded into
    await until(
      () => existsSync(artifacts(tmp)) && requestFiles(tmp).length === 1,
      10_000,
      "the request file",
    )
    const tag = requestFiles(tmp)[0]!.replace(".requests.jsonl", "")
    mkdirSync(join(artifacts(tmp), `${tag}.output.jsonl.part`, "in-the-way"), { recursive: true })
    const [stderr, code] = await Promise.all([new Response(child.stderr).text(), child.exited])
    expect(code).toBe(1)
    expect(stderr).toContain(`cannot write ${join(artifacts(tmp), `${tag}.output.jsonl.part`)}`)
    expect(states(tmp)).toEqual({ submitted: N })
    rmSync(join(artifacts(tmp), `${tag}.output.jsonl.part`), { recursive: true })
    const again = await spool(["run", "job.toml"], { cwd: tmp.path, env })
    expect(again.code).toBe(3)
    await paidOnce(fake, tmp)
  }, 60_000)
})

describe("batch downloads are verified before they settle anything (Anthropic)", () => {
  for (const fault of ["truncated", "missing_line"] as const) {
    test(`a results stream ${fault === "truncated" ? "that ends early" : "with a line missing"} is fetched again; every item is paid once`, async () => {
      await using tmp = await tmpdir()
      await using fake = await startFakeAnthropic({ apiKey: KEY })
      refuseLast(fake)
      fake.batch.downloadFaults = [fault]
      writeFileSync(tmp.join("in.jsonl"), input(N))
      writeFileSync(tmp.join("job.toml"), job(fake.url, "anthropic", "claude-haiku-4-5"))
      const run = await spool(["run", "job.toml"], { cwd: tmp.path, env })
      expect(run.stderr).toContain(`run "dl": ${N - 1} completed, 1 failed of ${N}`)
      expect(run.code).toBe(3)
      await paidOnce(fake, tmp)
      expect(fake.batch.downloads).toBe(2)
      expect(badFiles(tmp).length).toBe(1)
      expect(badFiles(tmp)[0]).toMatch(/^sp[a-z0-9]+\.output\.bad-1\.jsonl$/)
    }, 60_000)
  }
})
