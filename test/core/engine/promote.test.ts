/** What a row's step becomes once its needs have ended (src/core/engine/promote.ts), and the steps' fingerprints. */
import { describe, expect, test } from "bun:test"
import { writeFileSync } from "node:fs"
import { promote, type Promoted } from "../../../src/core/engine/promote.ts"
import { downstream, fingerprints } from "../../../src/core/engine/pipeline.ts"
import * as jobs from "../../../src/core/job/job.ts"
import { parseWhen } from "../../../src/core/job/when.ts"
import type { Ready } from "../../../src/core/ledger/ledger.ts"
import { tmpdir } from "../../lib/tmp.ts"

const row = { id: "r1", body: "it crashes", summary: "the row's own summary field" }

function ready(needs: Ready["needs"]): Ready {
  return { id: 7, input: 0, key: "r1", row: 1, source_id: "r1", data: JSON.stringify(row), needs }
}

const classify = (label: string, confidence = 0.9) => ({
  state: "completed" as const,
  data: JSON.stringify(row),
  output: JSON.stringify({ label, confidence }),
  error: null,
})

function step(o: Omit<Partial<Promoted>, "when"> & { when?: string }): Promoted {
  const { when, ...rest } = o
  return {
    name: "summary",
    kind: "model",
    when: when === undefined ? undefined : parseWhen(when),
    whenText: when,
    needs: ["classify"],
    structured: [true],
    ...rest,
  }
}

const base = { input: 0, key: "r1", row: 1, source_id: "r1" }

describe("promote", () => {
  test("a step with no needs and no when is pending, its data the row", () => {
    expect(promote(step({ name: "classify", needs: [], structured: [] }), ready([]))).toEqual({
      ...base,
      data: JSON.stringify(row),
      state: "pending",
    })
  })

  test("a need's answer is laid over the row under its name, parsed when structured; a step's name hides a row field", () => {
    const item = promote(step({ when: "classify.label == 'bug'" }), ready([classify("bug")]))
    expect(item.state).toBe("pending")
    expect(JSON.parse(item.data)).toEqual({ ...row, classify: { label: "bug", confidence: 0.9 } })
    const text = promote(
      step({ name: "check", needs: ["summary"], structured: [false], kind: "model" }),
      ready([{ state: "completed", data: item.data, output: "short text", error: null }]),
    )
    // what the need reached comes along (classify), and its own answer as text, over the row's `summary` field
    expect(JSON.parse(text.data)).toEqual({
      ...row,
      classify: { label: "bug", confidence: 0.9 },
      summary: "short text",
    })
  })

  test("a false when skips a model step, saying which when", () => {
    expect(promote(step({ when: "classify.label == 'bug'" }), ready([classify("billing")]))).toMatchObject({
      state: "skipped",
      error_class: "when",
      error: "when is false: classify.label == 'bug'",
    })
  })

  test("when reads the row as row.x, and never the step's hiding of it", () => {
    const s = step({ when: 'row.summary == "the row\'s own summary field" and classify.confidence > 0.5' })
    expect(promote(s, ready([classify("bug", 0.6)])).state).toBe("pending")
    expect(promote(s, ready([classify("bug", 0.4)])).state).toBe("skipped")
  })

  test("a need that did not complete blocks the step, whatever its when", () => {
    for (const [state, said] of [
      ["failed", "classify failed"],
      ["skipped", "classify was skipped"],
      ["rejected", "classify rejected"],
    ] as const) {
      const item = promote(step({}), ready([{ state, data: JSON.stringify(row), output: null, error: "x" }]))
      expect(item).toEqual({
        ...base,
        data: JSON.stringify(row),
        state: "skipped",
        error_class: "blocked",
        error: said,
      })
    }
  })

  test("a review step holds the rows its when picks, with the answer it reviews; the others go through unreviewed", () => {
    const review = step({ name: "check", kind: "review", when: "classify.confidence < 0.5" })
    const unsure = promote(review, ready([classify("bug", 0.3)]))
    expect(unsure).toMatchObject({
      state: "needs_review",
      output: JSON.stringify({ label: "bug", confidence: 0.3 }),
      error_class: "review",
      error: "step check: classify.confidence < 0.5",
    })
    const sure = promote(review, ready([classify("bug", 0.8)]))
    expect(sure).toMatchObject({
      state: "completed",
      output: JSON.stringify({ label: "bug", confidence: 0.8 }),
    })
    expect(sure.error).toBeUndefined()
    // with no when, every row is reviewed
    expect(promote(step({ name: "check", kind: "review" }), ready([classify("bug")])).error).toBe(
      "step check",
    )
  })
})

describe("step fingerprints", () => {
  const TOML = (summary: string, when = "classify == 'bug'") => `
name = "p"
[source]
path = "in.jsonl"
[provider]
name = "mock"
[request]
prompt = "Classify {{body}}"
[[step]]
name = "classify"
[[step]]
name = "summary"
needs = ["classify"]
when = "${when}"
request = { prompt = "${summary} {{classify}}" }
[[step]]
name = "other"
needs = ["classify"]
[[step]]
name = "check"
kind = "review"
needs = ["summary"]
`
  async function prints(toml: string) {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("job.toml"), toml)
    const loaded = jobs.load("job.toml", {}, tmp.path)
    return { prints: fingerprints(loaded.steps!, loaded.job), steps: loaded.steps! }
  }

  test("a change to a step changes it and the steps that reach it, never one before it nor a sibling", async () => {
    const a = (await prints(TOML("Sum"))).prints
    const b = (await prints(TOML("Summarise"))).prints
    const c = (await prints(TOML("Sum", "classify != 'bug'"))).prints
    const same = (await prints(TOML("Sum"))).prints
    expect([...same]).toEqual([...a])
    for (const changed of [b, c]) {
      expect(changed.get("classify")).toBe(a.get("classify")!)
      expect(changed.get("other")).toBe(a.get("other")!)
      expect(changed.get("summary")).not.toBe(a.get("summary")!)
      expect(changed.get("check")).not.toBe(a.get("check")!)
    }
  })

  test("--rerun-from takes the step and every step that reaches it", async () => {
    const { steps } = await prints(TOML("Sum"))
    expect([...downstream(steps, "summary")]).toEqual(["summary", "check"])
    expect([...downstream(steps, "classify")]).toEqual(["classify", "summary", "other", "check"])
    expect([...downstream(steps, "check")]).toEqual(["check"])
  })
})
