/** A job's `[[step]]` tables: each step checked as a job of its own before anything is opened or called. */
import { describe, expect, test } from "bun:test"
import { readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { JobError } from "../../../src/plugins/api/errors.ts"
import * as jobs from "../../../src/core/job/job.ts"
import { stepsOf } from "../../../src/core/job/steps.ts"
import { tmpdir } from "../../lib/tmp.ts"

const TOP = `
name = "tickets"
[source]
path = "in.jsonl"
[provider]
name = "mock"
[request]
system = "You help a support team."
prompt = "Ticket: {{body}}"
max_tokens = 50
`

const CLASSIFY = `
[[step]]
name = "classify"
output.schema = { type = "object", properties = { label = { type = "string" }, confidence = { type = "number" } } }
`

/** The JobError `jobs.load` throws for `toml`, as message and problems. */
async function loadError(
  toml: string,
): Promise<{ message: string; problems: string[]; hint: string | undefined }> {
  await using tmp = await tmpdir()
  writeFileSync(tmp.join("job.toml"), toml)
  try {
    jobs.load("job.toml", {}, tmp.path)
  } catch (err) {
    expect(err).toBeInstanceOf(JobError)
    expect((err as JobError).exit).toBe(2)
    const { message, problems, hint } = err as JobError
    return { message: message.replace(tmp.path, "DIR"), problems, hint }
  }
  throw new Error("expected a JobError")
}

describe("[[step]] tables", () => {
  test("a valid pipeline loads: its steps in order, each with its needs, when and own job; the job is its first step's", async () => {
    await using tmp = await tmpdir()
    writeFileSync(
      tmp.join("job.toml"),
      `${TOP}${CLASSIFY}
[[step]]
name = "summary"
needs = ["classify"]
when = "classify.label == 'bug' and classify.confidence < 0.9"
provider = { mode = "realtime", model = "big" }
request = { prompt = "Summarise this {{classify.label}}: {{row.body}}" }
[[step]]
name = "check"
kind = "review"
needs = ["summary"]
when = "len(summary) > 200"
`,
    )
    const loaded = jobs.load("job.toml", {}, tmp.path)
    const shape = loaded.steps!.map((s) => [
      s.name,
      s.kind,
      s.needs,
      s.when?.source ?? null,
      s.job?.provider.model ?? null,
    ])
    expect(shape).toEqual([
      ["classify", "model", [], null, null],
      ["summary", "model", ["classify"], "classify.label == 'bug' and classify.confidence < 0.9", "big"],
      ["check", "review", ["summary"], "len(summary) > 200", null],
    ])
    expect(loaded.steps![1]!.job!.request.prompt).toBe("Summarise this {{classify.label}}: {{row.body}}")
    expect(loaded.steps![1]!.job!.request.system).toBe("You help a support team.")
    expect(loaded.steps![2]!.job).toBeUndefined()
    expect(loaded.job).toEqual(loaded.steps![0]!.job!)
    expect(loaded.job.name).toBe("tickets")
  })

  test("every problem of every step is listed at once, each naming its step and key, and the when's column", async () => {
    const got = await loadError(`${TOP}${CLASSIFY}
[[step]]
name = "summary"
needs = ["clasify", "later"]
when = "classify.label =="
request = { max_tokens = "x" }
[[step]]
name = "summary"
[[step]]
name = "2nd"
needs = ["classify"]
when = "classify.lable == 'bug' or row.x"
colour = "red"
[[step]]
name = "tone"
kind = "judge"
request = { prompt = "{{classify.label}} {{summary}}" }
[[step]]
name = "gate"
kind = "review"
provider = { model = "m" }
`)
    expect(got.problems).toEqual([
      'step.summary.needs: "clasify" is not a step before this one (before it: classify); a step needs only steps above it in the job',
      'step.summary.needs: "later" is not a step before this one (before it: classify); a step needs only steps above it in the job',
      'step.summary.when: expected a value after "==", found the end at column 18',
      "step.summary.request.max_tokens: expected a number",
      'step.summary.name: a step "summary" comes before this one',
      'step.4.name: "2nd" is not a step name (a letter or _, then letters, digits or _; not row, and, or, not, in, true, false or null)',
      "step.4.colour: unknown key (a step has name, needs, when, kind, provider, request, output, limits, batch, pricing, cache)",
      'step.4.when: column 1: classify has no field "lable" (its schema has: label, confidence)',
      'step.tone.kind: expected "model" or "review", not "judge"',
      "step.tone.request.prompt: {{classify.label}} reads the step classify, which this step does not need (add it to needs)",
      "step.tone.request.prompt: {{summary}} reads the step summary, which this step does not need (add it to needs)",
      "step.gate.needs: a review step reviews what earlier steps answered: name them",
      "step.gate.provider: a review step calls no model, so it takes no provider",
    ])
    expect(got.message).toStartWith("DIR/job.toml: the job is not valid")
  })

  test("a later step reaches the steps its needs need, and a review step's output is what it reviews", async () => {
    const got = await loadError(`${TOP}${CLASSIFY}
[[step]]
name = "check"
kind = "review"
needs = ["classify"]
[[step]]
name = "reply"
needs = ["check"]
when = "check.label == 'bug' and classify.confidence > 0.5 and check.nope"
request = { prompt = "{{check.label}} {{classify.nope}}" }
`)
    expect(got.problems).toEqual([
      'step.reply.when: column 56: check has no field "nope" (its schema has: label, confidence)',
      'step.reply.request.prompt: {{classify.nope}}: classify has no field "nope" (its schema has: label, confidence)',
    ])
  })

  test("a problem of the top level is listed once, not once a step; a step whose job is not valid is not held against the steps after it", async () => {
    const got = await loadError(`zzz = 1${TOP}
[[step]]
name = "classify"
request = { max_tokens = "x" }
output.schema = { type = "object", properties = { label = { type = "string" } } }
[[step]]
name = "summary"
needs = ["classify"]
when = "classify.anything == 'bug'"
[[step]]
name = "late"
request = { prompt = "" }
`)
    expect(got.problems).toEqual([
      "zzz: unknown key (check its spelling)",
      "step.classify.request.max_tokens: expected a number",
      "step.late.request.prompt: must not be empty",
    ])
  })

  test("the worked example of docs/PIPELINES.md is a valid pipeline", async () => {
    const doc = readFileSync(join(import.meta.dir, "../../../docs/PIPELINES.md"), "utf8")
    const example = /```toml\n(name = "triage"[\s\S]*?)```/.exec(doc)![1]!
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("job.toml"), example)
    const loaded = jobs.load("job.toml", {}, tmp.path)
    expect(loaded.steps!.map((s) => s.name)).toEqual(["classify", "summary", "check"])
  })

  test("[step] as one table, or an empty list, is refused", async () => {
    expect((await loadError(`${TOP}[step]\nname = "a"\n`)).problems).toEqual([
      "step: expected [[step]] tables, one per step",
    ])
  })
})

describe("stepsOf: what a step inherits", () => {
  const raw = {
    name: "t",
    provider: { name: "openai", model: "gpt-a", base_url: "http://x", mode: "batch" },
    request: { prompt: "p {{x}}", max_tokens: 10 },
    limits: { rpm: 60 },
  }
  const validate = (r: Record<string, unknown>) => r as never as { request: { prompt: string } }

  test("the top level's tables, each key the step sets laid over them; the top level itself is left as it was", () => {
    const [a, b] = stepsOf(
      [
        { name: "a" },
        {
          name: "b",
          needs: ["a"],
          provider: { model: "gpt-b", mode: "realtime" },
          limits: { concurrency: 4 },
        },
      ],
      raw,
      validate,
      "job.toml",
    )
    expect(a!.job as unknown).toEqual(raw)
    expect(b!.job as unknown).toEqual({
      name: "t",
      provider: { name: "openai", model: "gpt-b", base_url: "http://x", mode: "realtime" },
      request: { prompt: "p {{x}}", max_tokens: 10 },
      limits: { rpm: 60, concurrency: 4 },
    })
    expect(b!.needs).toEqual(["a"])
    expect(raw.provider.model).toBe("gpt-a")
  })

  test("a step naming another provider starts its provider table afresh", () => {
    const [a] = stepsOf(
      [{ name: "a", provider: { name: "anthropic", model: "claude" } }],
      raw,
      validate,
      "job.toml",
    )
    expect((a!.job as unknown as { provider: unknown }).provider).toEqual({
      name: "anthropic",
      model: "claude",
    })
  })
})
