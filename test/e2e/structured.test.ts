/** Structured output through dist/spool, on each provider's fake: the schema travels, answers are checked. */
import { describe, expect, test } from "bun:test"
import { existsSync, readFileSync, writeFileSync } from "node:fs"
import { startFakeAnthropic } from "../lib/fake-anthropic.ts"
import { startFake } from "../lib/fake-openai.ts"
import { spool } from "../lib/spool.ts"
import { tmpdir, type Tmp } from "../lib/tmp.ts"

const SCHEMA = {
  type: "object",
  properties: { label: { type: "string", enum: ["billing", "bug", "question"] } },
  required: ["label"],
  additionalProperties: false,
}

/** Tickets whose text is the label the fakes will answer with; "spam" is outside the schema's enum. */
const TICKETS = ["billing", "bug", "spam", "question"]

function setUp(tmp: Tmp, provider: string, model: string) {
  writeFileSync(
    tmp.join("in.jsonl"),
    TICKETS.map((t, i) => JSON.stringify({ id: `t${i + 1}`, text: t })).join("\n") + "\n",
  )
  writeFileSync(tmp.join("label.json"), JSON.stringify(SCHEMA))
  writeFileSync(
    tmp.join("job.toml"),
    `name = "typed"\n[source]\npath = "in.jsonl"\nid = "id"\n[provider]\nname = "${provider}"\nmodel = "${model}"\n[request]\nprompt = "{{text}}"\nmax_tokens = 50\n[output]\nschema = "label.json"\nname = "ticket_label"\n[limits]\nmax_attempts = 2\nretry_base_s = 0\nretry_cap_s = 0\n`,
  )
}

async function results(tmp: Tmp) {
  const out = await spool(["results"], { cwd: tmp.path })
  return out.stdout
    .trim()
    .split("\n")
    .map(
      (l) =>
        JSON.parse(l) as { id: string; state: string; output: unknown; error: unknown; attempts: number },
    )
    .map((r) => [r.id, r.state, r.output, r.attempts])
}

const EXPECTED = [
  ["t1", "completed", { label: "billing" }, 1],
  ["t2", "completed", { label: "bug" }, 1],
  ["t3", "needs_review", '{"label":"spam"}', 2],
  ["t4", "completed", { label: "question" }, 1],
]

describe("structured output through dist/spool", () => {
  test("openai: response_format json_schema (strict) is sent valid; answers parsed; a violation goes to review", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: "k", reply: (input) => JSON.stringify({ label: input }) })
    setUp(tmp, "openai", "gpt-4.1-mini")
    const run = await spool(["run", "job.toml"], {
      cwd: tmp.path,
      env: { OPENAI_API_KEY: "k", OPENAI_BASE_URL: fake.url },
    })
    expect(run.code).toBe(3) // finished, with an item left for review
    expect(await results(tmp)).toEqual(EXPECTED)
    expect(fake.invalid).toEqual([])
    const status = JSON.parse((await spool(["status", "--json"], { cwd: tmp.path })).stdout)
    expect(status.counts.needs_review).toBe(1)
    expect(status.errors).toEqual([
      {
        class: "output",
        count: 2,
        example:
          'schema violation at /label: must be equal to one of the allowed values: "billing", "bug", "question"',
        id: "t3",
      },
    ])
  })

  test("openai-compatible: the same response_format to any base URL, the same gates", async () => {
    await using tmp = await tmpdir()
    const formats: unknown[] = []
    await using fake = await startFake({
      reply: (input, body) => (formats.push(body.response_format), JSON.stringify({ label: input })),
    })
    setUp(tmp, "openai-compatible", "llama3.2")
    const job = readFileSync(tmp.join("job.toml"), "utf8").replace(
      "[request]",
      `base_url = "${fake.url}"\n[request]`,
    )
    writeFileSync(tmp.join("job.toml"), job)
    const run = await spool(["run", "job.toml"], { cwd: tmp.path })
    expect(run.code).toBe(3)
    expect(await results(tmp)).toEqual(EXPECTED)
    expect(fake.invalid).toEqual([])
    expect(formats[0]).toEqual({
      type: "json_schema",
      json_schema: { name: "ticket_label", strict: true, schema: SCHEMA },
    })
  })

  test("anthropic: a forced tool call carries the schema; the tool input is the answer", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFakeAnthropic({
      apiKey: "k",
      reply: (input) => JSON.stringify({ label: input }),
    })
    setUp(tmp, "anthropic", "claude-haiku-4-5")
    const run = await spool(["run", "job.toml"], {
      cwd: tmp.path,
      env: { ANTHROPIC_API_KEY: "k", ANTHROPIC_BASE_URL: fake.url },
    })
    expect(run.code).toBe(3)
    expect(await results(tmp)).toEqual(EXPECTED)
    expect(fake.invalid).toEqual([])
    const body = fake.bodies[0] as { tools: unknown; tool_choice: unknown }
    expect(body.tool_choice).toEqual({ type: "tool", name: "ticket_label" })
    expect(body.tools).toEqual([
      {
        name: "ticket_label",
        description: "Give the answer by calling this tool; its input is the whole answer.",
        input_schema: SCHEMA,
      },
    ])
  })

  test("a schema OpenAI's strict mode would refuse is listed by path before anything runs (exit 2)", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("in.jsonl"), '{"text":"x"}\n')
    writeFileSync(
      tmp.join("job.toml"),
      `[source]\npath = "in.jsonl"\n[provider]\nmodel = "gpt-4.1-mini"\n[request]\nprompt = "{{text}}"\n[output.schema]\ntype = "object"\n[output.schema.properties.label]\ntype = "string"\n[output.schema.properties.score]\ntype = "number"\n`,
    )
    const out = await spool(["run", "job.toml"], { cwd: tmp.path, env: { OPENAI_API_KEY: "k" } })
    expect(out.code).toBe(2)
    expect(out.stderr).toContain("the output schema cannot be used")
    expect(out.stderr).toContain('× output.schema: set "additionalProperties": false')
    expect(out.stderr).toContain('× output.schema.properties.label: must be listed in "required"')
    expect(out.stderr).toContain('× output.schema.properties.score: must be listed in "required"')
    expect(existsSync(tmp.join(".spool", "spool.db"))).toBe(false)
  })
})
