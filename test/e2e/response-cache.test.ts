/**
 * The response cache through the compiled binary, against the fake OpenAI server (realtime and the Batch API). Every
 * case counts what the fake would bill (`fake.paid`: each 200 completion and each batch line answered) and checks the
 * results line by line.
 */
import { describe, expect, test } from "bun:test"
import { Database } from "bun:sqlite"
import { appendFileSync, readFileSync, writeFileSync } from "node:fs"
import { startFake, type Fake } from "../lib/fake-openai.ts"
import { spool, start } from "../lib/spool.ts"
import { tmpdir, type Tmp } from "../lib/tmp.ts"
import { pgSchema, SKIP_PG } from "../lib/pg.ts"

const KEY = "sk-test-cache-0123456789"
const env = { OPENAI_API_KEY: KEY }

/** What the fake would bill: every answer it served, realtime or in a batch. */
const billed = (fake: Fake) => [...fake.paid.values()].reduce((a, b) => a + b, 0)

interface Line {
  id: string
  state: string
  output: unknown
  usage: {
    input_tokens: number
    output_tokens: number
    cached_input_tokens: number
    cache_write_tokens: number
  }
  cost_usd: number | null
  cached: boolean
  cached_usage?: { input_tokens: number; output_tokens: number; cost_usd: number | null }
  attempts: number
}

const rowsOf = (texts: string[], from = 1) =>
  texts.map((t, i) => JSON.stringify({ id: `r${from + i}`, text: t })).join("\n") + "\n"

const TEXTS = ["billing", "bug", "question", "billing again"]

interface JobOptions {
  name?: string
  mode?: string
  maxTokens?: number
  model?: string
  /** TOML after the [request] table's keys: more of [request], or other tables. */
  extra?: string
}

/** A job file for the fake at `url`: realtime unless told, one attempt per item, quick batch polls. */
function jobText(url: string, o: JobOptions = {}) {
  return `name = "${o.name ?? "a"}"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "openai"
model = "${o.model ?? "gpt-4.1-mini"}"
mode = "${o.mode ?? "realtime"}"
base_url = "${url}"
[batch]
poll_s = 0.05
poll_max_s = 0.2
[limits]
max_attempts = 1
[request]
prompt = "Label: {{text}}"
max_tokens = ${o.maxTokens ?? 50}
${o.extra ?? ""}`
}

interface Setup extends AsyncDisposable {
  tmp: Tmp
  fake: Fake
  /** Writes job.toml and runs `spool run job.toml ARGS`. */
  run(o?: JobOptions, args?: string[]): Promise<{ code: number; stderr: string }>
  results(name: string): Promise<Line[]>
  status(
    name: string,
  ): Promise<{ counts: Record<string, number>; cache: { hits: number; misses: number; saved_usd: number } }>
}

async function setUp(texts = TEXTS, reply = (input: string) => `answer to ${input}`): Promise<Setup> {
  const tmp = await tmpdir()
  const fake = await startFake({ apiKey: KEY, reply: (input) => reply(input) })
  writeFileSync(tmp.join("in.jsonl"), rowsOf(texts))
  return {
    tmp,
    fake,
    async run(o = {}, args = []) {
      writeFileSync(tmp.join("job.toml"), jobText(fake.url, o))
      const r = await spool(["run", "job.toml", ...args], { cwd: tmp.path, env })
      return { code: r.code, stderr: r.stderr }
    },
    async results(name) {
      const out = await spool(["results", name], { cwd: tmp.path, env })
      return out.stdout
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as Line)
    },
    async status(name) {
      return JSON.parse((await spool(["status", name, "--json"], { cwd: tmp.path, env })).stdout)
    },
    async [Symbol.asyncDispose]() {
      await fake[Symbol.asyncDispose]()
      await tmp[Symbol.asyncDispose]()
    },
  }
}

const SCHEMA = {
  type: "object",
  properties: { label: { type: "string" }, score: { type: "number" } },
  required: ["label", "score"],
  additionalProperties: false,
}

describe("the response cache through dist/spool", () => {
  test("run B, another name, the same requests: pays nothing, every result cached with A's output", async () => {
    await using s = await setUp()
    expect((await s.run()).code).toBe(0)
    expect(billed(s.fake)).toBe(4)
    const a = await s.results("a")
    expect(a.map((l) => [l.id, l.cached])).toEqual([
      ["r1", false],
      ["r2", false],
      ["r3", false],
      ["r4", false],
    ])
    const b = await s.run({ name: "b" })
    expect(b.code).toBe(0)
    expect(b.stderr).toContain('run "b": 4 completed (4 from the cache, saved $')
    expect(billed(s.fake)).toBe(4)
    const lines = await s.results("b")
    expect(lines.map((l) => [l.id, l.state, l.output, l.cached, l.cost_usd, l.attempts])).toEqual(
      a.map((l) => [l.id, "completed", l.output, true, 0, 0]),
    )
    // what each answer cost when A paid for it is kept for reference
    for (const [i, l] of lines.entries()) {
      expect(l.cached_usage!.input_tokens).toBe(a[i]!.usage.input_tokens)
      expect(l.cached_usage!.output_tokens).toBe(a[i]!.usage.output_tokens)
      expect(l.cached_usage!.cost_usd).toBeCloseTo(a[i]!.cost_usd!, 12)
      expect(l.usage).toEqual({
        input_tokens: 0,
        output_tokens: 0,
        cached_input_tokens: 0,
        cache_write_tokens: 0,
      })
    }
    const st = await s.status("b")
    expect(st.cache.hits).toBe(4)
    expect(st.cache.misses).toBe(0)
    expect(st.cache.saved_usd).toBeCloseTo(
      a.reduce((n, l) => n + l.cost_usd!, 0),
      12,
    )
    expect((await s.status("a")).cache).toEqual({ hits: 0, misses: 4, saved_usd: 0 })
  })

  test("one row changed re-pays that row; rows appended pay only the new ones", async () => {
    await using s = await setUp()
    await s.run()
    writeFileSync(s.tmp.join("in.jsonl"), rowsOf(["billing", "bug!", "question", "billing again"]))
    expect((await s.run({ name: "edited" })).code).toBe(0)
    expect(billed(s.fake)).toBe(5)
    expect(s.fake.paid.get("Label: bug!")).toBe(1)
    expect((await s.results("edited")).map((l) => l.cached)).toEqual([true, false, true, true])
    appendFileSync(s.tmp.join("in.jsonl"), rowsOf(["new one", "new two"], 5))
    expect((await s.run({ name: "appended" })).code).toBe(0)
    expect(billed(s.fake)).toBe(7)
    expect(s.fake.paid.get("Label: new one")).toBe(1)
    expect(s.fake.paid.get("Label: new two")).toBe(1)
    expect((await s.results("appended")).map((l) => l.cached)).toEqual([true, true, true, true, false, false])
  })

  test("another max_tokens, model, schema or base URL misses; the schema's properties or the TOML's keys in another order hit", async () => {
    await using s = await setUp(["a", "b"], (input) => JSON.stringify({ label: input, score: 1 }))
    writeFileSync(s.tmp.join("label.json"), JSON.stringify(SCHEMA))
    const output = '[output]\nschema = "label.json"'
    await s.run({ extra: output })
    expect(billed(s.fake)).toBe(2)
    await s.run({ name: "tokens", maxTokens: 51, extra: output })
    expect(billed(s.fake)).toBe(4)
    await s.run({ name: "model", model: "gpt-4.1-nano", extra: output })
    expect(billed(s.fake)).toBe(6)
    writeFileSync(
      s.tmp.join("other.json"),
      JSON.stringify({ ...SCHEMA, properties: { ...SCHEMA.properties, score: { type: "integer" } } }),
    )
    expect((await s.run({ name: "schema", extra: '[output]\nschema = "other.json"' })).code).toBe(0)
    expect(billed(s.fake)).toBe(8)
    // the same requests to another server
    await using other = await startFake({
      apiKey: KEY,
      reply: (input) => JSON.stringify({ label: input, score: 2 }),
    })
    writeFileSync(s.tmp.join("job.toml"), jobText(other.url, { name: "url", extra: output }))
    expect((await spool(["run", "job.toml"], { cwd: s.tmp.path, env })).code).toBe(0)
    expect(billed(other)).toBe(2)
    expect(billed(s.fake)).toBe(8)

    // the same schema with its properties in another order, and the job's keys in another order: hits
    writeFileSync(
      s.tmp.join("reordered.json"),
      JSON.stringify({
        additionalProperties: false,
        required: ["label", "score"],
        properties: { score: { type: "number" }, label: { type: "string" } },
        type: "object",
      }),
    )
    await s.run({ name: "props", extra: '[output]\nschema = "reordered.json"' })
    expect(billed(s.fake)).toBe(8)
    expect((await s.results("props")).map((l) => [l.cached, l.output])).toEqual([
      [true, { label: "Label: a", score: 1 }],
      [true, { label: "Label: b", score: 1 }],
    ])
    writeFileSync(
      s.tmp.join("job.toml"),
      `[request]
max_tokens = 50
prompt = "Label: {{text}}"
[output]
schema = "label.json"
[limits]
max_attempts = 1
[provider]
base_url = "${s.fake.url}"
mode = "realtime"
model = "gpt-4.1-mini"
name = "openai"
[source]
id = "id"
path = "in.jsonl"
`,
    )
    expect((await spool(["run", "job.toml", "--name", "keys"], { cwd: s.tmp.path, env })).code).toBe(0)
    expect(billed(s.fake)).toBe(8)
    expect((await s.results("keys")).every((l) => l.cached)).toBe(true)
  })

  test("batch → realtime and realtime → batch both hit; a batch run whose answers are all cached makes no batch", async () => {
    await using s = await setUp()
    expect((await s.run({ mode: "batch" })).code).toBe(0)
    expect(s.fake.batch.batches.length).toBe(1)
    expect(billed(s.fake)).toBe(4)
    expect((await s.run({ name: "rt" })).code).toBe(0)
    expect(billed(s.fake)).toBe(4)
    expect((await s.results("rt")).map((l) => l.cached)).toEqual([true, true, true, true])

    // realtime pays for two new rows; a batch run over all six then makes no batch
    appendFileSync(s.tmp.join("in.jsonl"), rowsOf(["five", "six"], 5))
    expect((await s.run({ name: "rt2" })).code).toBe(0)
    expect(billed(s.fake)).toBe(6)
    expect((await s.run({ name: "b2", mode: "batch" })).code).toBe(0)
    expect(billed(s.fake)).toBe(6)
    expect(s.fake.batch.batches.length).toBe(1)
    const b2 = await s.results("b2")
    expect(b2.map((l) => [l.state, l.cached])).toEqual(Array.from({ length: 6 }, () => ["completed", true]))
    // a batch run with one row not cached sends a batch of that one row only
    appendFileSync(s.tmp.join("in.jsonl"), rowsOf(["seven"], 7))
    expect((await s.run({ name: "b3", mode: "batch" })).code).toBe(0)
    expect(billed(s.fake)).toBe(7)
    expect(s.fake.batch.batches.length).toBe(2)
    expect(s.fake.batch.batches[1]!.custom_ids.length).toBe(1)
  })

  test("--no-cache neither reads nor writes; --refresh-cache pays again and writes, so later runs get the new answers", async () => {
    let version = 1
    await using s = await setUp(["x", "y"], (input) => `v${version}: ${input}`)
    await s.run()
    expect(billed(s.fake)).toBe(2)
    version = 2
    await s.run({ name: "off" }, ["--no-cache"])
    expect(billed(s.fake)).toBe(4)
    expect((await s.results("off")).map((l) => [l.output, l.cached])).toEqual([
      ["v2: Label: x", false],
      ["v2: Label: y", false],
    ])
    // nothing was written by --no-cache: the first answers are still the ones served
    await s.run({ name: "after-off" })
    expect(billed(s.fake)).toBe(4)
    expect((await s.results("after-off")).map((l) => l.output)).toEqual(["v1: Label: x", "v1: Label: y"])
    version = 3
    await s.run({ name: "refresh" }, ["--refresh-cache"])
    expect(billed(s.fake)).toBe(6)
    expect((await s.results("refresh")).map((l) => [l.output, l.cached])).toEqual([
      ["v3: Label: x", false],
      ["v3: Label: y", false],
    ])
    await s.run({ name: "after-refresh" })
    expect(billed(s.fake)).toBe(6)
    expect((await s.results("after-refresh")).map((l) => [l.output, l.cached])).toEqual([
      ["v3: Label: x", true],
      ["v3: Label: y", true],
    ])
    // [cache] enabled = false in the job is --no-cache
    await s.run({ name: "disabled", extra: "[cache]\nenabled = false" })
    expect(billed(s.fake)).toBe(8)
  })

  test("an answer older than the ttl misses, and the new answer replaces it", async () => {
    let version = 1
    await using s = await setUp(["x"], (input) => `v${version}: ${input}`)
    await s.run()
    await Bun.sleep(1_200)
    version = 2
    await s.run({ name: "young", extra: '[cache]\nttl = "1s"' })
    expect(billed(s.fake)).toBe(2)
    expect((await s.results("young")).map((l) => [l.output, l.cached])).toEqual([["v2: Label: x", false]])
    // within the ttl it is served; without one, the replacing answer is the one served
    await s.run({ name: "within" }, ["--cache-ttl", "1h"])
    await s.run({ name: "any" })
    expect(billed(s.fake)).toBe(2)
    expect((await s.results("any")).map((l) => [l.output, l.cached])).toEqual([["v2: Label: x", true]])
  })

  test("an answer left for review is not reused: the next run pays for it again", async () => {
    await using s = await setUp(["good", "bad"], (input) =>
      input.endsWith("bad") ? "not JSON at all" : JSON.stringify({ label: "ok", score: 1 }),
    )
    writeFileSync(s.tmp.join("label.json"), JSON.stringify(SCHEMA))
    const output = '[output]\nschema = "label.json"'
    expect((await s.run({ extra: output })).code).toBe(3)
    expect((await s.results("a")).map((l) => l.state)).toEqual(["completed", "needs_review"])
    expect((await s.run({ name: "again", extra: output })).code).toBe(3)
    expect(s.fake.paid.get("Label: bad")).toBe(2)
    expect(s.fake.paid.get("Label: good")).toBe(1)
    expect((await s.results("again")).map((l) => [l.state, l.cached])).toEqual([
      ["completed", true],
      ["needs_review", false],
    ])
  })

  test("a long input is asked of the cache by a second thread: every changed row re-paid, every other one served A's answer", async () => {
    const n = 3_000
    const texts = Array.from({ length: n }, (_, i) => `row ${i + 1}`)
    await using s = await setUp(texts)
    // small source batches: the first is asked on the main thread, the others by the worker (engine/asker.ts)
    const small = (name: string) =>
      jobText(s.fake.url, { name })
        .replace('id = "id"', 'id = "id"\nchunk_bytes = 4096')
        .replace("[limits]\n", "[limits]\nconcurrency = 64\n")
    writeFileSync(s.tmp.join("job.toml"), small("a"))
    expect((await spool(["run", "job.toml"], { cwd: s.tmp.path, env })).code).toBe(0)
    expect(billed(s.fake)).toBe(n)
    // every seventh row changed
    const changed = texts.map((t, i) => ((i + 1) % 7 === 0 ? `${t} changed` : t))
    writeFileSync(s.tmp.join("in.jsonl"), rowsOf(changed))
    writeFileSync(s.tmp.join("job.toml"), small("b"))
    const b = await spool(["run", "job.toml"], { cwd: s.tmp.path, env })
    expect(b.code, b.stderr).toBe(0)
    const repaid = Math.floor(n / 7)
    expect(billed(s.fake)).toBe(n + repaid)
    const lines = await s.results("b")
    expect(lines).toHaveLength(n)
    for (const [i, l] of lines.entries()) {
      expect(l.id).toBe(`r${i + 1}`)
      expect([l.state, l.cached, l.output]).toEqual([
        "completed",
        (i + 1) % 7 !== 0,
        `answer to Label: ${changed[i]}`,
      ])
    }
    expect((await s.status("b")).cache).toMatchObject({ hits: n - repaid, misses: repaid })
    // the log says where the batches were asked: the worker answered all but the first
    const said = readFileSync(s.tmp.join(".spool/logs/spool.log"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { msg: string; run?: string; batches?: { worker: number; main: number } })
    // and that it never gave way to the main thread (as it did in a compiled program when it could not close)
    expect(said.filter((l) => l.msg.includes("main thread"))).toEqual([])
    const asked = said.filter((l) => l.msg === "cache look-ups" && l.run === "b")
    expect(asked).toHaveLength(1)
    expect(asked[0]!.batches!.main).toBe(1)
    expect(asked[0]!.batches!.worker).toBeGreaterThan(10)
  }, 60_000)

  for (const at of ["hits", "sweep"] as const)
    test(`a SIGKILL while a run stores its hits (${at === "hits" ? "as its rows are read" : "as a resumed run looks up its pending items"}) loses nothing and pays nothing`, async () => {
      const n = 3_000
      const texts = Array.from({ length: n }, (_, i) => `row ${i + 1}`)
      await using s = await setUp(texts)
      // small source batches, so that the input is read in many commits
      const small = (o: JobOptions) =>
        jobText(s.fake.url, o)
          .replace('id = "id"', 'id = "id"\nchunk_bytes = 4096')
          .replace("[limits]\n", "[limits]\nconcurrency = 64\n")
      writeFileSync(s.tmp.join("job.toml"), small({}))
      expect((await spool(["run", "job.toml"], { cwd: s.tmp.path, env })).code).toBe(0)
      expect(billed(s.fake)).toBe(n)

      writeFileSync(s.tmp.join("job.toml"), small({ name: "b" }))
      if (at === "sweep") {
        // b's rows are read with the cache off, then it is resumed with it on: its pending items are looked up
        const off = await spool(["run", "job.toml", "--no-cache", "--max-cost-usd", "0"], {
          cwd: s.tmp.path,
          env,
        })
        expect(off.stderr).toContain('run "b" paused')
        expect(billed(s.fake)).toBe(n)
        expect((await s.status("b")).counts.pending).toBe(n)
      }
      const killed = start(["run", "job.toml"], { cwd: s.tmp.path, env: { ...env, SPOOL_CRASH_AT: at } })
      await killed.exited
      expect(killed.signalCode).toBe("SIGKILL")
      const mid = await s.status("b")
      expect(mid.counts.completed).toBeGreaterThan(0)
      expect(mid.counts.completed).toBeLessThan(n)
      expect(billed(s.fake)).toBe(n)

      expect((await spool(["run", "job.toml"], { cwd: s.tmp.path, env })).code).toBe(0)
      expect(billed(s.fake)).toBe(n)
      const lines = await s.results("b")
      expect(lines.length).toBe(n)
      expect(new Set(lines.map((l) => l.id)).size).toBe(n)
      expect(
        lines.every(
          (l) =>
            l.state === "completed" &&
            l.cached &&
            l.output === `answer to Label: ${l.id.replace("r", "row ")}`,
        ),
      ).toBe(true)
      const st = await s.status("b")
      expect(st.cache.hits).toBe(n)
      const db = new Database(s.tmp.join(".spool/spool.db"), { readonly: true })
      try {
        expect(db.query("PRAGMA integrity_check").get()).toEqual({ integrity_check: "ok" })
        // one cached attempt per item, none twice
        expect(
          db
            .query(
              "SELECT count(*) AS n, count(DISTINCT item_id) AS items FROM attempts WHERE outcome = 'cached'",
            )
            .get(),
        ).toEqual({ n, items: n })
      } finally {
        db.close()
      }
    }, 60_000)
})

describe.skipIf(SKIP_PG)("the response cache in a PostgreSQL store", () => {
  test("shared by every worker of the store: a batch run on one machine pays, a realtime run on another is served, and `spool cache stats` counts both", async () => {
    await using s = await setUp()
    await using pg = await pgSchema()
    writeFileSync(s.tmp.join("job.toml"), jobText(s.fake.url, { mode: "batch" }))
    const machine = (home: string) => ({ cwd: s.tmp.path, env: { ...env, SPOOL_HOME: s.tmp.join(home) } })
    expect((await spool(["run", "job.toml", "--store", pg.url], machine("a"))).code).toBe(0)
    expect(billed(s.fake)).toBe(4)
    writeFileSync(s.tmp.join("job.toml"), jobText(s.fake.url, { name: "b" }))
    const b = await spool(["run", "job.toml", "--store", pg.url], machine("b"))
    expect(b.code).toBe(0)
    expect(b.stderr).toContain('run "b": 4 completed (4 from the cache')
    expect(billed(s.fake)).toBe(4)
    const lines = (await spool(["results", "b", "--store", pg.url], machine("b"))).stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Line)
    expect(lines.map((l) => [l.id, l.output, l.cached, l.cost_usd])).toEqual(
      TEXTS.map((t, i) => [`r${i + 1}`, `answer to Label: ${t}`, true, 0]),
    )
    const stats = JSON.parse(
      (await spool(["cache", "stats", "--json", "--store", pg.url], machine("c"))).stdout,
    )
    expect(stats).toMatchObject({ entries: 4, hits: 4, misses: 4 })
    expect(stats.models).toEqual([
      { provider: "openai", model: "gpt-4.1-mini", entries: 4, bytes: expect.any(Number) },
    ])
  }, 60_000)
})
