/**
 * The response cache through the compiled binary, beyond response-cache.test.ts: what the key leaves out (item ids,
 * the API key, how the base URL is given, limits, pricing) and what it holds (system, temperature, params, endpoint);
 * the cache asked again on resume and after `spool retry`; a batch run with some hits; `--cache-ttl` in batch mode;
 * and real SIGKILLs, caught by watching the store, while 20,000 hits are stored. Every case counts what the fake would
 * bill (`fake.paid`, every 200 completion and batch line) and checks the results line by line.
 */
import { beforeAll, afterAll, describe, expect, test } from "bun:test"
import { Database } from "bun:sqlite"
import { appendFileSync, writeFileSync } from "node:fs"
import { startFake, type Fake, type FakeOptions } from "../lib/fake-openai.ts"
import { spool, start, until } from "../lib/spool.ts"
import { tmpdir, type Tmp } from "../lib/tmp.ts"

const KEY = "sk-test-cache-a-0123456789"

/** What the fake would bill: every answer it served, realtime or in a batch. */
const billed = (fake: Fake) => [...fake.paid.values()].reduce((a, b) => a + b, 0)

interface Line {
  id: string
  state: string
  output: unknown
  attempts: number
  usage: { input_tokens: number; output_tokens: number }
  cost_usd: number | null
  cached: boolean
  cached_usage?: { input_tokens: number; output_tokens: number; cost_usd: number | null }
}

interface Status {
  state: string
  counts: Record<string, number>
  cache: { hits: number; misses: number; saved_usd: number }
}

/** JSONL rows `{id, text}`; ids `${prefix}${from}`, `${prefix}${from + 1}`, … */
const rowsOf = (texts: string[], from = 1, prefix = "r") =>
  texts.map((text, i) => JSON.stringify({ id: `${prefix}${from + i}`, text })).join("\n") + "\n"

/** A job file for the fake at `url` (no base_url line when undefined): realtime unless `more` says, one attempt. */
function jobText(name: string, url: string | undefined, more = "") {
  return `name = "${name}"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "openai"
model = "gpt-4.1-mini"
${url === undefined ? "" : `base_url = "${url}"`}
[batch]
poll_s = 0.05
poll_max_s = 0.2
[limits]
max_attempts = 1
[request]
prompt = "Label: {{text}}"
max_tokens = 50
${more}`
}

interface Setup extends AsyncDisposable {
  tmp: Tmp
  fake: Fake
  /** The fake's options: `options.apiKey` is the key it takes, changed at will. */
  options: FakeOptions
  /** Writes job.toml and runs `spool ARGS` in the directory. */
  run(job: string, args?: string[], env?: Record<string, string>): Promise<{ code: number; stderr: string }>
  spool(args: string[]): Promise<{ code: number; stdout: string; stderr: string }>
  results(name: string): Promise<Line[]>
  status(name: string): Promise<Status>
}

async function setUp(texts: string[], reply = (input: string) => `answer to ${input}`): Promise<Setup> {
  const tmp = await tmpdir()
  const options: FakeOptions = { apiKey: KEY, reply: (input) => reply(input) }
  const fake = await startFake(options)
  writeFileSync(tmp.join("in.jsonl"), rowsOf(texts))
  const run = (args: string[], env: Record<string, string> = {}) =>
    spool(args, { cwd: tmp.path, env: { OPENAI_API_KEY: KEY, ...env } })
  return {
    tmp,
    fake,
    options,
    async run(job, args = [], env = {}) {
      writeFileSync(tmp.join("job.toml"), job)
      const r = await run(["run", "job.toml", ...args], env)
      return { code: r.code, stderr: r.stderr }
    },
    spool: (args) => run(args),
    async results(name) {
      const out = await run(["results", name])
      return out.stdout
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as Line)
    },
    async status(name) {
      return JSON.parse((await run(["status", name, "--json"])).stdout) as Status
    },
    async [Symbol.asyncDispose]() {
      await fake[Symbol.asyncDispose]()
      await tmp[Symbol.asyncDispose]()
    },
  }
}

describe("the response cache's key, through dist/spool", () => {
  test("neither the item ids, the API key, how the base URL is written or given, the limits, pricing nor [cache] is in the key: a run that changes all of them pays nothing", async () => {
    await using s = await setUp(["billing", "bug", "question"])
    expect((await s.run(jobText("a", s.fake.url))).code).toBe(0)
    expect(billed(s.fake)).toBe(3)
    const a = await s.results("a")

    // other ids for the same texts, and one new row that proves the new key and the variable's URL reach the fake
    writeFileSync(s.tmp.join("in.jsonl"), rowsOf(["billing", "bug", "question", "new"], 1, "x"))
    s.options.apiKey = "sk-test-cache-b-9876543210"
    const b = await s.run(
      jobText(
        "b",
        undefined,
        `[provider.options]
endpoint = "chat"
[limits]
concurrency = 2
max_attempts = 3
[pricing]
input = 7
output = 9
[cache]
ttl = "1h"`,
      ).replace("[limits]\nmax_attempts = 1\n", ""),
      [],
      { OPENAI_API_KEY: "sk-test-cache-b-9876543210", OPENAI_BASE_URL: `${s.fake.url}/` },
    )
    expect(b.code).toBe(0)
    expect(billed(s.fake)).toBe(4)
    expect(s.fake.paid.get("Label: new")).toBe(1)
    expect((await s.results("b")).map((l) => [l.id, l.state, l.output, l.cached, l.attempts])).toEqual([
      ["x1", "completed", a[0]!.output, true, 0],
      ["x2", "completed", a[1]!.output, true, 0],
      ["x3", "completed", a[2]!.output, true, 0],
      ["x4", "completed", "answer to Label: new", false, 1],
    ])
    // what the hits saved is what A paid for them, whatever b's own prices
    const { cache } = await s.status("b")
    expect([cache.hits, cache.misses]).toEqual([3, 1])
    expect(cache.saved_usd).toBeCloseTo(
      a.reduce((n, l) => n + l.cost_usd!, 0),
      12,
    )
  })

  test("another system prompt, temperature, [request.params] or endpoint misses; the params' keys in another order hit", async () => {
    await using s = await setUp(["one", "two"])
    const request = (system: string, temperature: number, params: string) =>
      `system = "${system}"\ntemperature = ${temperature}\n[request.params]\n${params}\n`
    const same = request("Be brief.", 0, "seed = 1\ntop_p = 0.5")
    await s.run(jobText("a", s.fake.url, same))
    expect(billed(s.fake)).toBe(2)
    const runs: [string, string, number][] = [
      ["system", request("Be terse.", 0, "seed = 1\ntop_p = 0.5"), 4],
      ["temperature", request("Be brief.", 0.5, "seed = 1\ntop_p = 0.5"), 6],
      ["params", request("Be brief.", 0, "seed = 1\ntop_p = 0.9"), 8],
      ["endpoint", `${same}[provider.options]\nendpoint = "responses"\n`, 10],
      ["reordered", request("Be brief.", 0, "top_p = 0.5\nseed = 1"), 10],
    ]
    for (const [name, more, bill] of runs) {
      expect((await s.run(jobText(name, s.fake.url, more))).code).toBe(0)
      expect([name, billed(s.fake)]).toEqual([name, bill])
    }
    expect(s.fake.invalid).toEqual([])
    expect((await s.results("reordered")).map((l) => [l.id, l.output, l.cached])).toEqual([
      ["r1", "answer to Label: one", true],
      ["r2", "answer to Label: two", true],
    ])
    expect((await s.results("endpoint")).map((l) => l.cached)).toEqual([false, false])
  })
})

describe("when the response cache is asked, through dist/spool", () => {
  test("a run paused at its spend cap before any call is served on resume by the answers another run paid for since", async () => {
    await using s = await setUp(["one", "two", "three"])
    const paused = await s.run(jobText("p", s.fake.url), ["--max-cost-usd", "0"])
    expect(paused.stderr).toContain('run "p" paused')
    expect(billed(s.fake)).toBe(0)
    expect(await s.status("p")).toMatchObject({
      counts: { pending: 3 },
      cache: { hits: 0, misses: 3, saved_usd: 0 },
    })

    expect((await s.run(jobText("q", s.fake.url))).code).toBe(0)
    expect(billed(s.fake)).toBe(3)
    const q = await s.results("q")

    // its items were looked up (and missed) when it was first run: the resume asks again, and serves them at the
    // same cap of 0 (a hit costs nothing)
    expect((await s.run(jobText("p", s.fake.url), ["--max-cost-usd", "0"])).code).toBe(0)
    expect(billed(s.fake)).toBe(3)
    expect((await s.results("p")).map((l) => [l.id, l.state, l.output, l.cached, l.cost_usd])).toEqual(
      q.map((l) => [l.id, "completed", l.output, true, 0]),
    )
    const p = await s.status("p")
    expect([p.state, p.counts.completed, p.cache.hits, p.cache.misses]).toEqual(["completed", 3, 3, 0])
    expect(p.cache.saved_usd).toBeCloseTo(
      q.reduce((n, l) => n + l.cost_usd!, 0),
      12,
    )
  })

  test("an item sent back by spool retry is asked again: the answer another run paid for since completes it without a call", async () => {
    await using s = await setUp(["fine", "flaky"])
    s.fake.script.set("Label: flaky", ["500"])
    await s.run(jobText("a", s.fake.url))
    expect((await s.results("a")).map((l) => [l.id, l.state])).toEqual([
      ["r1", "completed"],
      ["r2", "failed"],
    ])
    expect(billed(s.fake)).toBe(1)

    expect((await s.run(jobText("b", s.fake.url))).code).toBe(0)
    expect(billed(s.fake)).toBe(2)
    expect(s.fake.paid.get("Label: flaky")).toBe(1)

    expect((await s.spool(["retry", "a"])).code).toBe(0)
    expect((await s.run(jobText("a", s.fake.url))).code).toBe(0)
    expect(billed(s.fake)).toBe(2)
    expect(s.fake.seen.get("Label: flaky")).toBe(2)
    // its failed attempt is kept, the hit adds none that counts
    expect((await s.results("a")).map((l) => [l.id, l.state, l.output, l.cached, l.attempts])).toEqual([
      ["r1", "completed", "answer to Label: fine", false, 1],
      ["r2", "completed", "answer to Label: flaky", true, 1],
    ])
  })

  test("a batch run with some answers cached sends only the others: the batch holds exactly the missed rows, status counts both", async () => {
    await using s = await setUp(["one", "two", "three"])
    await s.run(jobText("a", s.fake.url))
    expect(billed(s.fake)).toBe(3)
    const a = await s.results("a")
    appendFileSync(s.tmp.join("in.jsonl"), rowsOf(["four", "five"], 4))

    expect(
      (await s.run(jobText("b", s.fake.url).replace('model = "', 'mode = "batch"\nmodel = "'))).code,
    ).toBe(0)
    expect(billed(s.fake)).toBe(5)
    expect(s.fake.batch.batches.map((b) => b.lines.map((l) => l.input))).toEqual([
      ["Label: four", "Label: five"],
    ])
    const b = await s.results("b")
    expect(b.map((l) => [l.id, l.state, l.output, l.cached])).toEqual([
      ["r1", "completed", "answer to Label: one", true],
      ["r2", "completed", "answer to Label: two", true],
      ["r3", "completed", "answer to Label: three", true],
      ["r4", "completed", "answer to Label: four", false],
      ["r5", "completed", "answer to Label: five", false],
    ])
    expect(b.slice(0, 3).map((l) => l.cost_usd)).toEqual([0, 0, 0])
    // the others at gpt-4.1-mini's batch price: half of $0.40 in and $1.60 out a million tokens
    for (const l of b.slice(3))
      expect(l.cost_usd).toBeCloseTo((l.usage.input_tokens * 0.2 + l.usage.output_tokens * 0.8) / 1e6, 12)
    const { cache } = await s.status("b")
    expect([cache.hits, cache.misses]).toEqual([3, 2])
    expect(cache.saved_usd).toBeCloseTo(
      a.reduce((n, l) => n + l.cost_usd!, 0),
      12,
    )
  })

  test("--cache-ttl 1s in batch mode: answers older than it are sent again, and the new ones replace them", async () => {
    let version = 1
    await using s = await setUp(["one", "two"], (input) => `v${version}: ${input}`)
    await s.run(jobText("a", s.fake.url))
    expect(billed(s.fake)).toBe(2)
    await Bun.sleep(1_100)
    version = 2

    const batch = jobText("b", s.fake.url).replace('model = "', 'mode = "batch"\nmodel = "')
    expect((await s.run(batch, ["--cache-ttl", "1s"])).code).toBe(0)
    expect(billed(s.fake)).toBe(4)
    expect(s.fake.batch.batches.map((b) => b.lines.map((l) => l.input))).toEqual([
      ["Label: one", "Label: two"],
    ])
    expect((await s.results("b")).map((l) => [l.output, l.cached])).toEqual([
      ["v2: Label: one", false],
      ["v2: Label: two", false],
    ])

    // one entry a request: the batch's answers took the old ones' place
    expect((await s.run(jobText("c", s.fake.url))).code).toBe(0)
    expect(billed(s.fake)).toBe(4)
    expect((await s.results("c")).map((l) => [l.output, l.cached])).toEqual([
      ["v2: Label: one", true],
      ["v2: Label: two", true],
    ])
    const stats = JSON.parse((await s.spool(["cache", "stats", "--json"])).stdout)
    expect(stats.entries).toBe(2)
  })
})

describe("a SIGKILL while 20,000 hits are stored, caught by watching the store", () => {
  const n = 20_000
  const texts = Array.from({ length: n }, (_, i) => `row ${i + 1}`)
  let s: Setup
  let db: Database

  /** Small source batches and many workers: the first run is quick, and the hits are stored in many commits. */
  const job = (name: string) =>
    jobText(name, s.fake.url)
      .replace('id = "id"', 'id = "id"\nchunk_bytes = 8192')
      .replace("[limits]\n", "[limits]\nconcurrency = 256\n")

  const completed = (name: string) =>
    (
      db
        .query(
          "SELECT count(*) AS n FROM items JOIN runs ON runs.id = items.run_id WHERE runs.name = ? AND items.state = 'completed'",
        )
        .get(name) as { n: number }
    ).n

  beforeAll(async () => {
    s = await setUp(texts)
    writeFileSync(s.tmp.join("job.toml"), job("a"))
    expect((await s.spool(["run", "job.toml"])).code).toBe(0)
    expect(billed(s.fake)).toBe(n)
    db = new Database(s.tmp.join(".spool/spool.db"), { readonly: true })
  }, 60_000)

  afterAll(async () => {
    db.close()
    await s[Symbol.asyncDispose]()
  })

  /** Starts `spool run` of `name`, and SIGKILLs it once the store shows some of its items completed, not all. */
  async function killMidway(name: string) {
    const child = start(["run", "job.toml"], { cwd: s.tmp.path, env: { OPENAI_API_KEY: KEY } })
    await until(() => child.exitCode !== null || completed(name) > 0, 30_000, `${name}'s first hits`)
    child.kill("SIGKILL")
    await child.exited
    expect(child.signalCode).toBe("SIGKILL")
    const mid = completed(name)
    expect(mid).toBeGreaterThan(0)
    expect(mid).toBeLessThan(n)
  }

  /** The resumed run pays nothing and ends with every item completed from the cache, once, in a sound store. */
  async function resumed(name: string) {
    expect((await s.spool(["run", "job.toml"])).code).toBe(0)
    expect(billed(s.fake)).toBe(n)
    const lines = await s.results(name)
    expect(lines.length).toBe(n)
    const wrong = lines.filter(
      (l, i) =>
        l.id !== `r${i + 1}` ||
        l.state !== "completed" ||
        !l.cached ||
        l.cost_usd !== 0 ||
        l.attempts !== 0 ||
        l.output !== `answer to Label: row ${i + 1}`,
    )
    expect(wrong).toEqual([])
    expect(await s.status(name)).toMatchObject({
      state: "completed",
      counts: { completed: n },
      cache: { hits: n, misses: 0 },
    })
    expect(db.query("PRAGMA integrity_check").get()).toEqual({ integrity_check: "ok" })
    // one attempt per item, a cached one
    expect(
      db
        .query(
          `SELECT outcome, count(*) AS attempts, count(DISTINCT item_id) AS items FROM attempts
           WHERE run_id = (SELECT id FROM runs WHERE name = ?) GROUP BY outcome`,
        )
        .all(name),
    ).toEqual([{ outcome: "cached", attempts: n, items: n }])
  }

  test("as its rows are read and stored completed: the resumed run pays nothing and completes each item once", async () => {
    writeFileSync(s.tmp.join("job.toml"), job("b"))
    await killMidway("b")
    expect(billed(s.fake)).toBe(n)
    await resumed("b")
  }, 60_000)

  test("as a resumed run looks up the items a run without the cache stored: the next resume pays nothing and completes each item once", async () => {
    writeFileSync(s.tmp.join("job.toml"), job("c"))
    const off = await s.spool(["run", "job.toml", "--no-cache", "--max-cost-usd", "0"])
    expect(off.stderr).toContain('run "c" paused')
    expect((await s.status("c")).counts).toMatchObject({ pending: n })
    await killMidway("c")
    expect(billed(s.fake)).toBe(n)
    await resumed("c")
  }, 60_000)
})
