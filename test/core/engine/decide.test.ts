/**
 * The retry / fail / needs_review rule (src/core/engine/decide.ts) that the runner and the batcher both settle items
 * by; the two callers' own mappings (retry_wait with a backoff, or back to pending) are exercised by run.test.ts,
 * batcher.test.ts and the e2e batch tests.
 */
import { describe, expect, test } from "bun:test"
import * as decide from "../../../src/core/engine/decide.ts"
import * as schemas from "../../../src/core/job/schema.ts"

const usage = { input_tokens: 12, output_tokens: 3, cached_input_tokens: 2, cache_write_tokens: 4 }
const recorded = { status: 200, inputTokens: 12, outputTokens: 3, cachedTokens: 2, writeTokens: 4 }
const validate = schemas.validator({
  type: "object",
  properties: { label: { enum: ["a", "b"] } },
  required: ["label"],
})

describe("how an attempt settles its item", () => {
  test("an answer that passes every gate completes the item, with its usage", () => {
    expect(decide.answer({ text: "hi", usage }, undefined, 1, 3)).toEqual({
      verdict: "completed",
      output: "hi",
      ...recorded,
    })
    expect(decide.answer({ text: '{"label":"a"}', usage }, validate, 3, 3).verdict).toBe("completed")
  })

  test("an answer that fails a gate is retried while attempts are left, then left for review with the answer", () => {
    const bad = { text: '{"label":"c"}', usage }
    const failed = {
      errorClass: "output" as const,
      error: 'schema violation at /label: must be equal to one of the allowed values: "a", "b"',
      output: '{"label":"c"}',
      ...recorded,
    }
    expect(decide.answer(bad, validate, 1, 3)).toEqual({ verdict: "retry", ...failed })
    expect(decide.answer(bad, validate, 2, 3)).toEqual({ verdict: "retry", ...failed })
    expect(decide.answer(bad, validate, 3, 3)).toEqual({ verdict: "needs_review", ...failed })
    // a cut answer fails its gate without a schema too
    expect(decide.answer({ text: "half", usage, finish: "length" }, undefined, 1, 1)).toMatchObject({
      verdict: "needs_review",
      error: "truncated at max_tokens",
    })
  })

  // errors as a provider classifies them (a ProviderError's fields)
  test("a retryable error is retried while attempts are left, then fails the item; any other fails it at once", () => {
    const busy = { errorClass: "server", message: "overloaded", retryable: true, status: 503 } as const
    expect(decide.error(busy, 1, 2)).toEqual({
      verdict: "retry",
      errorClass: "server",
      error: "overloaded",
      status: 503,
    })
    expect(decide.error(busy, 2, 2)).toEqual({
      verdict: "failed",
      errorClass: "server",
      error: "overloaded",
      status: 503,
    })
    const refused = {
      errorClass: "bad_request",
      message: "no such model",
      retryable: false,
      status: 400,
    } as const
    expect(decide.error(refused, 1, 5).verdict).toBe("failed")
    // no status when the provider gave none (a network error)
    const lost = { errorClass: "network", message: "connection reset", retryable: true } as const
    expect(decide.error(lost, 1, 5)).toEqual({
      verdict: "retry",
      errorClass: "network",
      error: "connection reset",
    })
  })

  test("each verdict has its attempt label", () => {
    expect(
      ["completed", "retry", "failed", "needs_review"].map((v) => decide.label(v as decide.Verdict)),
    ).toEqual(["ok", "retry", "failed", "needs_review"])
  })
})
