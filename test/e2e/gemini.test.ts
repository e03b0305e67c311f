/**
 * The gemini provider through dist/spool, on the fake Gemini API (test/lib/fake-gemini.ts), its key and base URL
 * from the environment as a user sets them: a realtime job with structured output gives exact results, and a 429
 * RESOURCE_EXHAUSTED is retried no sooner than its RetryInfo's retryDelay asks.
 */
import { describe, expect, test } from "bun:test"
import { Database } from "bun:sqlite"
import { existsSync, readFileSync, writeFileSync } from "node:fs"
import { startFakeGemini } from "../lib/fake-gemini.ts"
import { spool } from "../lib/spool.ts"
import { tmpdir, type Tmp } from "../lib/tmp.ts"

const KEY = "AIzaSy-gemini-SECRET-do-not-leak-4410"

const SCHEMA = {
  type: "object",
  properties: { label: { type: "string", enum: ["billing", "bug", "question"] } },
  required: ["label"],
  additionalProperties: false,
}

/** Tickets whose text is the label the fake answers with; "spam" is outside the schema's enum. */
const TICKETS = ["billing", "bug", "spam", "question"]

function setUp(tmp: Tmp, extra = "") {
  writeFileSync(
    tmp.join("in.jsonl"),
    TICKETS.map((t, i) => JSON.stringify({ id: `t${i + 1}`, text: t })).join("\n") + "\n",
  )
  writeFileSync(tmp.join("label.json"), JSON.stringify(SCHEMA))
  writeFileSync(
    tmp.join("job.toml"),
    `name = "typed"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "gemini"
model = "gemini-2.5-flash"
[request]
system = "Label the ticket."
prompt = "{{text}}"
max_tokens = 50
temperature = 0
[output]
schema = "label.json"
name = "ticket_label"
[limits]
max_attempts = 2
retry_base_s = 0.01
retry_cap_s = 0.1
${extra}`,
  )
}

type Result = { id: string; state: string; output: unknown; attempts: number; usage: unknown }

async function results(tmp: Tmp): Promise<Result[]> {
  const out = await spool(["results"], { cwd: tmp.path })
  expect(out.code).toBe(0)
  return out.stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as Result)
}

describe("gemini through dist/spool", () => {
  test("structured output: the schema goes as responseJsonSchema, answers are parsed, a violation goes to review", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFakeGemini({
      apiKey: KEY,
      reply: (input) => JSON.stringify({ label: input }),
    })
    setUp(tmp)
    const run = await spool(["run", "job.toml"], {
      cwd: tmp.path,
      env: { GEMINI_API_KEY: KEY, GEMINI_BASE_URL: fake.url },
    })
    expect(run.code).toBe(3) // finished, with an item left for review
    expect((await results(tmp)).map((r) => [r.id, r.state, r.output, r.attempts])).toEqual([
      ["t1", "completed", { label: "billing" }, 1],
      ["t2", "completed", { label: "bug" }, 1],
      ["t3", "needs_review", '{"label":"spam"}', 2],
      ["t4", "completed", { label: "question" }, 1],
    ])
    expect(fake.invalid).toEqual([])
    // 3 answered once, "spam" twice (its answer failed the schema's enum)
    expect([...fake.paid].sort()).toEqual([
      ["billing", 1],
      ["bug", 1],
      ["question", 1],
      ["spam", 2],
    ])
    expect(fake.headers?.get("x-goog-api-key")).toBe(KEY)
    const first = fake.bodies.find((b) => JSON.stringify(b).includes('"billing"'))
    expect(first).toEqual({
      contents: [{ role: "user", parts: [{ text: "billing" }] }],
      systemInstruction: { parts: [{ text: "Label the ticket." }] },
      generationConfig: {
        maxOutputTokens: 50,
        temperature: 0,
        responseMimeType: "application/json",
        responseJsonSchema: SCHEMA,
      },
    })
    // the key reaches neither the store nor what spool printed
    expect(readFileSync(tmp.join(".spool", "spool.db")).includes(Buffer.from(KEY))).toBe(false)
    expect(run.stdout + run.stderr).not.toContain(KEY)
  })

  test("a 429 RESOURCE_EXHAUSTED is retried after its retryDelay, not the job's backoff", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFakeGemini({
      apiKey: KEY,
      reply: (input) => JSON.stringify({ label: input }),
    })
    fake.retryDelay = "1.5"
    fake.script.set("bug", ["429"])
    setUp(tmp)
    const run = await spool(["run", "job.toml"], {
      cwd: tmp.path,
      env: { GEMINI_API_KEY: KEY, GEMINI_BASE_URL: fake.url },
    })
    expect(run.code).toBe(3)
    const bug = (await results(tmp)).find((r) => r.id === "t2")!
    expect([bug.state, bug.output, bug.attempts]).toEqual(["completed", { label: "bug" }, 2])
    const tries = fake.log.filter((l) => l.input === "bug")
    expect(tries.map((t) => t.kind)).toEqual(["429", "ok"])
    // the job's backoff is at most 0.1 s: only the retryDelay explains a wait of 1.5 s
    expect(tries[1]!.at - tries[0]!.at).toBeGreaterThanOrEqual(1500)
    const db = new Database(tmp.join(".spool", "spool.db"), { readonly: true })
    const attempts = db
      .query<
        { n: number; outcome: string | null; error_class: string | null; http_status: number | null },
        []
      >(
        "SELECT a.n, a.outcome, a.error_class, a.http_status FROM attempts a JOIN items i ON i.id = a.item_id WHERE i.key = 't2' ORDER BY a.n",
      )
      .all()
    db.close()
    expect(attempts.map((a) => [a.n, a.error_class, a.http_status])).toEqual([
      [1, "rate_limit", 429],
      [2, null, 200],
    ])
  })

  test("a schema with a keyword Gemini refuses is refused with the job, exit 2, before a store is made or a call sent", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFakeGemini({ apiKey: KEY })
    setUp(tmp)
    const schema = { ...SCHEMA, properties: { label: { type: "string", pattern: "^[a-z]+$" } } }
    writeFileSync(tmp.join("label.json"), JSON.stringify(schema))
    const env = { GEMINI_API_KEY: KEY, GEMINI_BASE_URL: fake.url }
    for (const command of [
      ["run", "job.toml"],
      ["estimate", "job.toml"],
    ]) {
      const out = await spool(command, { cwd: tmp.path, env })
      expect(out.code).toBe(2)
      expect(out.stderr).toContain("the output schema cannot be sent to gemini")
      expect(out.stderr).toContain(
        `output.schema.properties.label.pattern: "pattern" is not a keyword Gemini's responseJsonSchema accepts`,
      )
    }
    expect(existsSync(tmp.join(".spool"))).toBe(false)
    expect(fake.requests).toBe(0)
  })
})
