/**
 * `spool review` through dist/spool (README, "Review"): the items a run left for a person are listed, approved,
 * edited or rejected, from the command line and from a decisions file; every decision is checked before any is
 * applied, and what it did shows in results, status and the run's state.
 */
import { describe, expect, test } from "bun:test"
import { writeFileSync } from "node:fs"
import { startFake } from "../lib/fake-openai.ts"
import { spool } from "../lib/spool.ts"
import { tmpdir, type Tmp } from "../lib/tmp.ts"

const SCHEMA = {
  type: "object",
  properties: {
    label: { type: "string", enum: ["billing", "bug", "question"] },
    note: { type: ["string", "null"] },
  },
  required: ["label", "note"],
  additionalProperties: false,
}

/** The fake answers `{"label": text}`, except for "garbled", which it answers with text that is not JSON. */
const TICKETS = ["billing", "spam", "garbled", "bug", "phishing", "question"]

function setUp(tmp: Tmp, url: string) {
  writeFileSync(
    tmp.join("in.jsonl"),
    TICKETS.map((t, i) => JSON.stringify({ id: `t${i + 1}`, text: t })).join("\n") + "\n",
  )
  writeFileSync(tmp.join("label.json"), JSON.stringify(SCHEMA))
  writeFileSync(
    tmp.join("job.toml"),
    `name = "triage"\n[source]\npath = "in.jsonl"\nid = "id"\n[provider]\nname = "openai"\nmodel = "gpt-4.1-mini"\nbase_url = "${url}"\n[request]\nprompt = "{{text}}"\nmax_tokens = 50\n[output]\nschema = "label.json"\nname = "ticket_label"\n[limits]\nmax_attempts = 1\n`,
  )
}

const reply = (input: string) =>
  input === "garbled" ? "I think it is a bug" : JSON.stringify({ label: input, note: null })
const env = { OPENAI_API_KEY: "k" }

async function results(tmp: Tmp): Promise<[string, string, unknown, unknown][]> {
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

async function statusOf(tmp: Tmp) {
  const out = await spool(["status", "--json"], { cwd: tmp.path })
  return JSON.parse(out.stdout) as { state: string; counts: Record<string, number> }
}

async function listed(tmp: Tmp) {
  const out = await spool(["review", "--json"], { cwd: tmp.path })
  expect(out.code).toBe(0)
  return JSON.parse(out.stdout) as {
    run: string
    waiting: number
    items: { id: string; reason: string; output: string; attempts: number }[]
  }
}

describe("spool review through dist/spool", () => {
  test("lists what waits, and approve, edit and reject move each item on; a refused decision changes nothing", async () => {
    await using tmp = await tmpdir()
    let answer = reply
    await using fake = await startFake({ apiKey: "k", reply: (input) => answer(input) })
    setUp(tmp, fake.url)
    const run = await spool(["run", "job.toml"], { cwd: tmp.path, env })
    expect(run.code).toBe(3)
    expect(run.stderr).toContain("3 item(s) wait for review: spool review triage")
    const enumFail =
      'schema violation at /label: must be equal to one of the allowed values: "billing", "bug", "question"'
    expect(await listed(tmp)).toEqual({
      run: "triage",
      waiting: 3,
      items: [
        { id: "t2", reason: enumFail, output: '{"label":"spam","note":null}', attempts: 1 },
        { id: "t3", reason: "not JSON: I think it is a bug", output: "I think it is a bug", attempts: 1 },
        { id: "t5", reason: enumFail, output: '{"label":"phishing","note":null}', attempts: 1 },
      ],
    })
    const text = await spool(["review"], { cwd: tmp.path })
    expect(text.stdout).toContain('run "triage": 3 item(s) wait for review\n  t2  schema violation at /label')
    expect(text.stdout).toContain('    answer: {"label":"phishing","note":null}\n')

    // an answer that fails the schema cannot be approved as it is; a mistaken id and a finished item are named
    const approve = await spool(["review", "approve", "t2", "t4", "t9"], { cwd: tmp.path })
    expect(approve.code).toBe(2)
    expect(approve.stderr).toContain("nothing was decided:")
    expect(approve.stderr).toContain(`item "t2": its answer cannot be approved as it is (${enumFail})`)
    expect(approve.stderr).toContain('item "t4" is completed, not waiting for review')
    expect(approve.stderr).toContain('run "triage" has no item "t9"')
    expect((await listed(tmp)).waiting).toBe(3)

    // fields of a structured answer are set, each value as JSON when it is JSON; the result must pass the schema
    const bad = await spool(["review", "edit", "t2", "--set", "label=spam-ish"], { cwd: tmp.path })
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain(
      "the edited answer fails the job's output schema (schema violation at /label",
    )
    const edit = await spool(["review", "edit", "t2", "--set", "label=bug", "--set", "note=was spam"], {
      cwd: tmp.path,
    })
    expect(edit.code).toBe(0)
    expect(edit.stderr).toBe('run "triage": 1 edited\n2 item(s) still wait for review: spool review triage\n')
    // an answer that is not JSON has no field to set: the whole answer is given instead
    const notJson = await spool(["review", "edit", "t3", "--set", "label=bug"], { cwd: tmp.path })
    expect(notJson.code).toBe(2)
    expect(notJson.stderr).toContain("its answer is not JSON, so no field of it can be set")
    expect(
      (await spool(["review", "edit", "t3", "--output", '{"label":"bug","note":null}'], { cwd: tmp.path }))
        .code,
    ).toBe(0)
    const reject = await spool(["review", "reject", "t5", "--reason", "phishing is not a label"], {
      cwd: tmp.path,
    })
    expect(reject.code).toBe(0)
    expect(reject.stderr).toBe('run "triage": 1 rejected\nno item waits for review\n')

    expect(await results(tmp)).toEqual([
      ["t1", "completed", { label: "billing", note: null }, null],
      ["t2", "completed", { label: "bug", note: "was spam" }, null],
      ["t3", "completed", { label: "bug", note: null }, null],
      ["t4", "completed", { label: "bug", note: null }, null],
      [
        "t5",
        "rejected",
        '{"label":"phishing","note":null}',
        "rejected by a reviewer: phishing is not a label",
      ],
      ["t6", "completed", { label: "question", note: null }, null],
    ])
    const status = await statusOf(tmp)
    expect(status.counts).toMatchObject({ completed: 5, rejected: 1, needs_review: 0, failed: 0 })
    expect(status.state).toBe("completed_with_failures")
    // nothing was asked of the provider again
    expect(fake.served.length).toBe(6)

    // a rejected item can be sent again; this time the model answers within the schema
    answer = (input) => JSON.stringify({ label: input === "phishing" ? "question" : input, note: null })
    const retry = await spool(["retry", "--state", "rejected"], { cwd: tmp.path })
    expect(retry.stderr).toContain('1 rejected item(s) of run "triage" are pending again')
    expect((await spool(["run", "job.toml"], { cwd: tmp.path, env })).code).toBe(0)
    expect((await results(tmp))[4]).toEqual(["t5", "completed", { label: "question", note: null }, null])
    expect((await statusOf(tmp)).state).toBe("completed")
  }, 60_000)

  test("a decisions file is applied whole or not at all; the last decision finishes the run as completed", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: "k", reply })
    setUp(tmp, fake.url)
    expect((await spool(["run", "job.toml"], { cwd: tmp.path, env })).code).toBe(3)
    writeFileSync(
      tmp.join("bad.jsonl"),
      [
        '{"id": "t2", "decision": "edit", "set": {"label": "bug"}}',
        '{"id": "t3", "decision": "maybe"}',
        "not json",
        '{"id": "t5", "decision": "approve"}',
      ].join("\n"),
    )
    const bad = await spool(["review", "apply", "bad.jsonl"], { cwd: tmp.path })
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain("bad.jsonl: 2 bad line(s), nothing was decided:")
    expect(bad.stderr).toContain('bad.jsonl line 2: decision: must be "approve", "edit" or "reject"')
    expect(bad.stderr).toContain("bad.jsonl line 3: not JSON")
    // well-formed lines that cannot be applied are named by their line too, and nothing is applied
    writeFileSync(
      tmp.join("wrong.jsonl"),
      '{"id": "t2", "decision": "edit", "set": {"label": "bug"}}\n{"id": "t5", "decision": "approve"}\n',
    )
    const wrong = await spool(["review", "apply", "wrong.jsonl"], { cwd: tmp.path })
    expect(wrong.code).toBe(2)
    expect(wrong.stderr).toContain('wrong.jsonl line 2: item "t5": its answer cannot be approved as it is')
    expect((await listed(tmp)).waiting).toBe(3)
    writeFileSync(
      tmp.join("good.jsonl"),
      [
        '{"id": "t2", "decision": "edit", "set": {"label": "bug"}}',
        '{"id": "t3", "decision": "edit", "output": {"label": "question", "note": null}, "reason": "read the ticket"}',
        '{"id": "t5", "decision": "edit", "output": "{\\"label\\":\\"billing\\",\\"note\\":null}"}',
      ].join("\n"),
    )
    const good = await spool(["review", "apply", "good.jsonl"], { cwd: tmp.path })
    expect(good.stderr).toBe('run "triage": 3 edited\nno item waits for review\n')
    expect(good.code).toBe(0)
    expect((await results(tmp)).map(([id, state, output]) => [id, state, output])).toEqual([
      ["t1", "completed", { label: "billing", note: null }],
      ["t2", "completed", { label: "bug", note: null }],
      ["t3", "completed", { label: "question", note: null }],
      ["t4", "completed", { label: "bug", note: null }],
      ["t5", "completed", { label: "billing", note: null }],
      ["t6", "completed", { label: "question", note: null }],
    ])
    expect((await statusOf(tmp)).state).toBe("completed")
    // a misspelt decision is told apart from a run's name
    const typo = await spool(["review", "aprove", "t2"], { cwd: tmp.path })
    expect(typo.code).toBe(2)
    expect(typo.stderr).toContain('unknown command "review aprove"; did you mean "review approve"?')
    expect((await spool(["review", "triage"], { cwd: tmp.path })).stdout).toBe(
      'run "triage": no item waits for review\n',
    )
    // an item decided already is not decided again
    const again = await spool(["review", "approve", "t2"], { cwd: tmp.path })
    expect(again.code).toBe(2)
    expect(again.stderr).toContain('item "t2" is completed, not waiting for review')
  }, 60_000)

  test("without a schema an answer is text: approve accepts it as it is, and --set is refused", async () => {
    await using tmp = await tmpdir()
    // every answer is cut at max_tokens: none is taken as complete, each is left for review
    await using fake = await startFake({
      apiKey: "k",
      reply: (input) => `${input} and more`,
      finish: () => "length",
    })
    writeFileSync(tmp.join("in.jsonl"), '{"id": "a", "text": "one"}\n{"id": "b", "text": "two"}\n')
    writeFileSync(
      tmp.join("job.toml"),
      `name = "plain"\n[source]\npath = "in.jsonl"\nid = "id"\n[provider]\nname = "openai"\nmodel = "gpt-4.1-mini"\nbase_url = "${fake.url}"\n[request]\nprompt = "{{text}}"\nmax_tokens = 5\n[limits]\nmax_attempts = 1\n`,
    )
    expect((await spool(["run", "job.toml"], { cwd: tmp.path, env })).code).toBe(3)
    expect((await listed(tmp)).items.map((i) => [i.id, i.reason])).toEqual([
      ["a", "truncated at max_tokens"],
      ["b", "truncated at max_tokens"],
    ])
    const set = await spool(["review", "edit", "a", "--set", "x=1"], { cwd: tmp.path })
    expect(set.code).toBe(2)
    expect(set.stderr).toContain("this job's answers are text: use --output")
    expect((await spool(["review", "approve", "a", "--run", "plain"], { cwd: tmp.path })).code).toBe(0)
    expect((await spool(["review", "edit", "b", "--output", "two, in full"], { cwd: tmp.path })).code).toBe(0)
    expect(await results(tmp)).toEqual([
      ["a", "completed", "one and more", null],
      ["b", "completed", "two, in full", null],
    ])
  }, 60_000)
})
