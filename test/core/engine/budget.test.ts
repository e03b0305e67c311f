/**
 * The spend cap's one rule (src/core/engine/budget.ts): room = floor((cap − spent − each × under way) / each), with
 * each item at the average attempt for direct calls, at 1.25× the largest at the batch price for batches, and at the
 * first call's bound before any answer.
 */
import { describe, expect, test } from "bun:test"
import { writeFileSync } from "node:fs"
import {
  Budget,
  batchRoom,
  capOf,
  reached,
  room,
  type Cap,
  type Spent,
} from "../../../src/core/engine/budget.ts"
import { JobError } from "../../../src/plugins/api/errors.ts"
import * as jobs from "../../../src/core/job/job.ts"
import { tmpdir } from "../../lib/tmp.ts"

/** USD per million tokens: 1 in, 2 out, half price in batches. */
const CAP: Cap = {
  usd: 0.01,
  price: { input: 1, output: 2, cached_input: 0.5, cache_write: 1, cache_write_1h: 1, batch_discount: 0.5 },
}
/** "abcd": 1 token; with the framing (6), a 400-byte row (100): 107 in, and max_tokens out. */
const REQUEST = { prompt: "abcd", max_tokens: 100 } as jobs.Job["request"]

/** Ledger totals: realtime tokens, and a part of them paid at the batch price. */
function spent(o: Partial<Spent> & { queued?: number; submitted?: number } = {}): Spent {
  return {
    attempts: o.attempts ?? 0,
    inputTokens: o.inputTokens ?? 0,
    outputTokens: o.outputTokens ?? 0,
    cachedTokens: o.cachedTokens ?? 0,
    writeTokens: o.writeTokens ?? 0,
    batch: o.batch ?? { inputTokens: 0, outputTokens: 0, cachedTokens: 0, writeTokens: 0 },
    counts: { queued: o.queued ?? 0, submitted: o.submitted ?? 0 },
  }
}

describe("the spend cap", () => {
  test("room is what fits once what is spent and every item under way are counted; never below 0", () => {
    expect(room(CAP, 0.002, 0.001, 3)).toBe(5)
    expect(room(CAP, 0.002, 0.001, 8)).toBe(0)
    expect(room(CAP, 0.002, 0.001, 20)).toBe(0)
    // items that cost nothing (all errors so far) leave the room unbounded
    expect(room(CAP, 0.002, 0, 20)).toBe(Number.POSITIVE_INFINITY)
    expect(reached(CAP, 0.0123456)).toBe("the spend cap of $0.01 is reached ($0.0123 spent)")
  })

  test("direct calls: before any answer each is the first call's bound, at the realtime price", () => {
    const budget = new Budget(CAP, REQUEST, spent())
    // (107 × 1 + 100 × 2) / 1e6 = 0.000307 a call: 32 fit in 0.01, 27 beside 5 under way
    expect(budget.room(0)).toBe(32)
    expect(budget.room(5)).toBe(27)
  })

  test("direct calls with other workers: a sync takes the run's spend from the ledger, every worker's attempts in it", () => {
    const budget = new Budget(CAP, REQUEST, spent({ attempts: 1, inputTokens: 1000, outputTokens: 500 }))
    expect(budget.room(0)).toBe(4)
    // meanwhile other workers committed 2 more attempts of the same cost: $0.006 spent in 3, $0.002 each
    budget.sync(spent({ attempts: 3, inputTokens: 3000, outputTokens: 1500 }))
    expect(budget.spentUsd).toBeCloseTo(0.006, 12)
    expect(budget.attempts).toBe(3)
    // (0.01 − 0.006 − 0.002 × 1 under way elsewhere) / 0.002 = 1
    expect(budget.room(1)).toBe(1)
    expect(budget.room(2)).toBe(0)
  })

  test("direct calls: then the average attempt, counting this process's own as they are committed", () => {
    const budget = new Budget(CAP, REQUEST, spent({ attempts: 1, inputTokens: 1000, outputTokens: 500 }))
    expect(budget.spentUsd).toBeCloseTo(0.002, 12)
    // (0.01 − 0.002) / 0.002 = 4
    expect(budget.room(0)).toBe(4)
    // an attempt of no tokens (an error) lowers the average: 0.002 over 2 = 0.001 each
    budget.add({ input_tokens: 0, output_tokens: 0, cached_input_tokens: 0 })
    expect(budget.attempts).toBe(2)
    expect(budget.room(2)).toBe(6)
    budget.add({ input_tokens: 4000, output_tokens: 2000, cached_input_tokens: 0 })
    // 0.01 spent in 3 attempts: nothing more fits
    expect(budget.spentUsd).toBeCloseTo(0.01, 12)
    expect(budget.room(0)).toBe(0)
    expect(budget.reached()).toBe("the spend cap of $0.01 is reached ($0.0100 spent)")
  })

  test("direct calls of a batch run's tail start from what its batches spent, at the batch price", () => {
    const s = spent({
      attempts: 4,
      inputTokens: 2000,
      outputTokens: 1000,
      batch: { inputTokens: 2000, outputTokens: 1000, cachedTokens: 0, writeTokens: 0 },
    })
    // all of it at half price: 0.002
    const budget = new Budget(CAP, REQUEST, s)
    expect(budget.spentUsd).toBeCloseTo(0.002, 12)
    // but a direct call is expected to cost what those attempts would have cost as direct calls: 0.004 / 4 = 0.001
    // each (not the 0.0005 they cost in batches): (0.01 − 0.002 − 0.001 × 2 under way) / 0.001 = 6
    expect(budget.room(2)).toBe(6)
    // the tail's own direct calls count at the realtime price in both
    budget.add({ input_tokens: 1000, output_tokens: 500, cached_input_tokens: 0 })
    expect(budget.spentUsd).toBeCloseTo(0.004, 12)
    // (0.006 over 5 = 0.0012 each): (0.01 − 0.004) / 0.0012 = 5
    expect(budget.room(0)).toBe(5)
  })

  test("batches: each item at 1.25× the largest attempt, at the batch price; every item in a live batch under way", () => {
    const largest = { input: 1000, output: 500 }
    // 0.002 at half price × 1.25 = 0.00125 an item: (0.01 − 0) / 0.00125 = 8
    expect(batchRoom(CAP, REQUEST, spent(), largest)).toEqual({ room: 8, spentUsd: 0 })
    // 3 queued and 2 submitted hold 5 of them
    expect(batchRoom(CAP, REQUEST, spent({ queued: 3, submitted: 2 }), largest).room).toBe(3)
    // what is spent counts too: 0.005 spent leaves (0.005 − 0.00125 × 2) / 0.00125 = 2
    const paid = spent({ inputTokens: 5000, outputTokens: 0, submitted: 2 })
    expect(batchRoom(CAP, REQUEST, paid, largest)).toEqual({ room: 2, spentUsd: 0.005 })
    expect(batchRoom(CAP, REQUEST, spent({ submitted: 10 }), largest).room).toBe(0)
  })

  test("batches: before any answer each item is the first call's bound at the batch price, with no margin", () => {
    // 0.000307 / 2 = 0.0001535 an item: 65 fit in 0.01
    expect(batchRoom(CAP, REQUEST, spent(), null).room).toBe(65)
  })

  test("a cap needs a price: a model without one is refused before anything runs", async () => {
    await using tmp = await tmpdir()
    const job = (limits: string, pricing = "") => {
      writeFileSync(
        tmp.join("job.toml"),
        `name = "c"\n[source]\npath = "in.jsonl"\n[provider]\nname = "mock"\nmodel = "my-model"\n[request]\nprompt = "{{text}}"\n[limits]\n${limits}\n${pricing}`,
      )
      return jobs.load(tmp.join("job.toml"), {}).job
    }
    expect(capOf(job(""))).toBeUndefined()
    expect(() => capOf(job("max_cost_usd = 5"))).toThrow(
      'the job is not valid\n  × limits.max_cost_usd: needs a price, and there is none for the model "my-model"',
    )
    expect(() => capOf(job("max_cost_usd = 5"))).toThrow(JobError)
    expect(capOf(job("max_cost_usd = 5", "[pricing]\ninput = 1\noutput = 2\n"))).toEqual({
      usd: 5,
      price: expect.objectContaining({ input: 1, output: 2 }),
    })
  })
})
