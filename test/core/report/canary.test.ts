/** The canary's report (src/core/report/canary.ts), read from a real SQLite ledger, and its text. */
import { describe, expect, test } from "bun:test"
import type { Job } from "../../../src/core/job/job.ts"
import * as sqlite from "../../../src/core/ledger/sqlite/sqlite.ts"
import type { Outcome } from "../../../src/core/ledger/types.ts"
import { canaryReport, canaryText, money, oneLine } from "../../../src/core/report/canary.ts"
import { ok } from "../../lib/ledger-contract.ts"
import { JOB, seed } from "../../lib/ledger.ts"
import { tmpdir } from "../../lib/tmp.ts"

/** A dollar a token: costs that read as whole numbers. */
const PRICED: Job = {
  ...JOB,
  pricing: { input: 1_000_000, output: 1_000_000 },
  output: { name: "output", schema: { type: "object" } },
}

const reviewed = (item: number, error: string, output: string): Outcome => ({
  ...ok(item, 1, output),
  to: "needs_review",
  label: "needs_review",
  errorClass: "output",
  error,
})

/**
 * A run of 10 items whose first 6 ended every way a canary's can: one completed after a 429, one for each gate
 * failed, one failed. Each answer used 3 + 2 tokens.
 */
async function ended(home: string) {
  const db = sqlite.open(home)
  const { run } = await seed(db, 10)
  const c = await db.claims.step(run.id, "w", [], 6, 60_000)
  const id = (k: number) => c[k - 1]!.id
  const limited: Outcome = {
    item: id(1),
    attempt: 1,
    to: "retry_wait",
    label: "retry",
    errorClass: "rate_limit",
    error: "HTTP 429: slow down",
    nextAt: Date.now() - 1,
    latencyMs: 1,
    endedAt: Date.now(),
  }
  await db.claims.step(
    run.id,
    "w",
    [
      limited,
      reviewed(id(2), "truncated at max_tokens", '{"label": "par'),
      reviewed(id(3), "refused: I cannot help with that", "I cannot help with that"),
      reviewed(id(4), "not JSON: label a", "label a"),
      reviewed(id(5), "schema violation at /label: must be string", '{"label": 1}'),
      {
        item: id(6),
        attempt: 1,
        to: "failed",
        label: "failed",
        errorClass: "bad_request",
        error: "HTTP 400: bad\nrequest",
        latencyMs: 1,
        endedAt: Date.now(),
      },
    ],
    0,
    60_000,
  )
  const [again] = await db.claims.step(run.id, "w", [], 1, 60_000)
  await db.claims.step(run.id, "w", [ok(again!.id, 2, "first line\n\n  second   line")], 0, 60_000)
  return { db, run }
}

describe("the canary's report", () => {
  test("counts every answer at each gate, the items by how they ended and why, the error classes, and the cost", async () => {
    await using tmp = await tmpdir()
    const { db, run } = await ended(tmp.path)
    const r = await canaryReport(db, run, PRICED, 6)
    await db.close()
    expect(r).toEqual({
      run: "r",
      items: 6,
      total: 10,
      rest: 4,
      mode: "realtime",
      outputs: [
        { id: "k1", state: "completed", text: "first line second line" },
        { id: "k2", state: "needs_review", text: '[truncated at max_tokens] {"label": "par' },
        { id: "k3", state: "needs_review", text: "[refused] I cannot help with that" },
        { id: "k4", state: "needs_review", text: "[not JSON] label a" },
        { id: "k5", state: "needs_review", text: '[schema violation] {"label": 1}' },
      ],
      gates: { answers: 5, truncated: 1, refused: 1, notJson: 1, invalid: 1 },
      ended: {
        completed: 1,
        review: [
          { reason: "truncated at max_tokens", count: 1 },
          { reason: "refused", count: 1 },
          { reason: "not JSON", count: 1 },
          { reason: "schema violation", count: 1 },
        ],
        failed: [{ reason: "bad_request", count: 1 }],
        open: 0,
      },
      errors: [
        { class: "output", count: 4, example: "truncated at max_tokens" },
        { class: "rate_limit", count: 1, example: "HTTP 429: slow down" },
        { class: "bad_request", count: 1, example: "HTTP 400: bad request" },
      ],
      // 5 answers of 5 tokens; the 429 and the 400 used none
      cost: {
        spent: 25,
        each: 25 / 6,
        eachInMode: 25 / 6,
        rest: (25 / 6) * 4,
        whole: 25 + (25 / 6) * 4,
        prices: "the job's [pricing]",
      },
    })
    expect(canaryText(r)).toBe(
      [
        "canary    the first 6 of 10 item(s), sent as direct calls",
        "outputs",
        "  k1  completed  first line second line",
        '  k2  needs_review  [truncated at max_tokens] {"label": "par',
        "  k3  needs_review  [refused] I cannot help with that",
        "  k4  needs_review  [not JSON] label a",
        '  k5  needs_review  [schema violation] {"label": 1}',
        "gates     5 answer(s): 3 whole (1 truncated at max_tokens, 1 refused) · 2 JSON (1 not) · 1 valid against the schema (1 not)",
        "items     1 completed · 4 needs_review (truncated at max_tokens 1, refused 1, not JSON 1, schema violation 1) · 1 failed (bad_request 1)",
        "errors    output ×4 · rate_limit ×1 · bad_request ×1",
        "  output: truncated at max_tokens",
        "  rate_limit: HTTP 429: slow down",
        "  bad_request: HTTP 400: bad request",
        "cost      $4.17 per item, measured: $25.00 for 6 item(s) at the realtime price (the job's [pricing])",
        "projected ~$41.67 for the whole job of 10 item(s) in realtime mode: ~$16.67 for the other 4 ($4.17 per item) and $25.00 spent",
        "",
      ].join("\n"),
    )
  })

  test("a batch job's projection is at the batch price; a model without a price has an unknown cost", async () => {
    await using tmp = await tmpdir()
    const { db, run } = await ended(tmp.path)
    const batch = await canaryReport(
      db,
      run,
      { ...PRICED, provider: { ...PRICED.provider, mode: "batch" } },
      6,
    )
    const unpriced = await canaryReport(
      db,
      run,
      { ...JOB, provider: { ...JOB.provider, model: "no-such" } },
      6,
    )
    await db.close()
    expect(batch.cost).toMatchObject({ spent: 25, eachInMode: 25 / 12, rest: (25 / 12) * 4 })
    expect(canaryText(batch)).toContain(
      "projected ~$33.33 for the whole job of 10 item(s) in batch mode: ~$8.33 for the other 4 ($2.08 per item at the batch price) and $25.00 spent\n",
    )
    expect(canaryText(batch)).toContain("sent as direct calls (the rest goes in batches)\n")
    expect(unpriced.cost).toBeNull()
    expect(canaryText(unpriced)).toContain(
      "gates     5 answer(s): 3 whole (1 truncated at max_tokens, 1 refused) · JSON and schema not checked (no output schema)\n",
    )
    expect(canaryText(unpriced)).toContain(
      "cost      unknown (no price for this model: set input and output in [pricing], USD per million tokens)\n",
    )
  })

  test("money keeps three significant digits below a cent, and never shows a cost as 0; outputs are cut to one line", () => {
    expect([0, 0.000016, 0.00123456, 0.0099, 0.01, 0.5, 4.166, 1234.5].map(money)).toEqual([
      "$0",
      "$0.0000160",
      "$0.00123",
      "$0.00990",
      "$0.01",
      "$0.50",
      "$4.17",
      "$1,234.50",
    ])
    expect(oneLine(`a\n\tb  ${"x".repeat(200)}`)).toBe(`a b ${"x".repeat(95)}…`)
    expect(oneLine(`a\n\tb  ${"x".repeat(200)}`).length).toBe(100)
  })
})
