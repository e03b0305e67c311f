import { describe, expect, test } from "bun:test"
import {
  cacheSaving,
  cost,
  distance,
  jobPrice,
  nearest,
  paidCost,
  paidSaving,
  priceOf,
  PRICES_AS_OF,
  unpriced,
} from "../../../src/core/job/pricing.ts"

describe("prices", () => {
  test("a model's price: by its exact name or a dated snapshot of it, unknown as undefined", () => {
    expect(priceOf("gpt-4.1-mini")).toEqual({
      input: 0.4,
      output: 1.6,
      cached_input: 0.1,
      cache_write: 0.4,
      cache_write_1h: 0.4,
      batch_discount: 0.5,
      source: `built-in prices for gpt-4.1-mini (${PRICES_AS_OF})`,
    })
    // a dated snapshot, OpenAI's -YYYY-MM-DD or Anthropic's -YYYYMMDD, costs what its model does
    expect(priceOf("gpt-4.1-mini-2025-04-14")?.source).toBe(
      `built-in prices for gpt-4.1-mini (${PRICES_AS_OF})`,
    )
    expect(priceOf("gpt-4.1-2025-04-14")?.source).toBe(`built-in prices for gpt-4.1 (${PRICES_AS_OF})`)
    expect(priceOf("claude-sonnet-4-5-20250929")?.source).toBe(
      `built-in prices for claude-sonnet-4-5 (${PRICES_AS_OF})`,
    )
    expect(priceOf("claude-3-5-haiku-20241022")?.input).toBe(0.8)
    expect(priceOf("gpt-4o-mini")?.input).toBe(0.15)
    // no longer priced by a prefix: a typo, another variant or a malformed date is unknown
    for (const model of [
      "gpt-4.1-mnii",
      "gpt-4.1x",
      "gpt-4.1-preview",
      "gpt-4.1-mini-2025-4-14",
      "gpt-4.1-20250414x",
      "claude-3-5-haiku-latest",
      "llama3.2",
    ])
      expect(priceOf(model)).toBeUndefined()
    expect(priceOf(undefined)).toBeUndefined()
  })

  test("edit distance counts a swap of two neighbours as one edit", () => {
    expect(distance("gpt-4.1-mnii", "gpt-4.1-mini")).toBe(1)
    expect(distance("gpt4o", "gpt-4o")).toBe(1)
    expect(distance("kitten", "sitting")).toBe(3)
    expect(distance("", "o3")).toBe(2)
    expect(distance("o3", "o3")).toBe(0)
  })

  test("the nearest priced name, only when it is near: one edit per four characters, at least one", () => {
    expect(nearest("gpt-4.1-mnii")).toBe("gpt-4.1-mini")
    expect(nearest("claude-sonet-4-5")).toBe("claude-sonnet-4-5")
    expect(nearest("gpt4o")).toBe("gpt-4o")
    // a mistyped date or an alias is set aside: the model it names is suggested
    expect(nearest("gpt-4.1-mini-2025-4-14")).toBe("gpt-4.1-mini")
    expect(nearest("claude-3-5-haiku-latest")).toBe("claude-3-5-haiku")
    // nothing near: no suggestion rather than a wild one ("m" is 2 edits from "o3")
    expect(nearest("llama3.2")).toBeUndefined()
    expect(nearest("m")).toBeUndefined()
    expect(nearest("mock-1")).toBeUndefined()
    expect(nearest("in-house-7b")).toBeUndefined()
  })

  test("the warning for a model with no price: one line, with the nearest name when there is one", () => {
    expect(unpriced("gpt-4.1-mnii")).toBe(
      'no price for model "gpt-4.1-mnii" (did you mean "gpt-4.1-mini"?); cost shows as unknown',
    )
    expect(unpriced("llama3.2")).toBe(
      'no price for model "llama3.2"; cost shows as unknown (set input and output in [pricing] to count it)',
    )
    expect(unpriced("gpt-4.1-mini")).toBeUndefined()
    expect(unpriced("gpt-4.1-mini-2025-04-14")).toBeUndefined()
    expect(unpriced("gpt-4.1-mnii", { input: 1, output: 2 })).toBeUndefined()
    expect(unpriced(undefined)).toBeUndefined()
  })

  test("the job's [pricing] wins, with cached input and batch discount defaulting from it", () => {
    expect(priceOf("gpt-4.1-mini", { input: 1, output: 2 })).toEqual({
      input: 1,
      output: 2,
      cached_input: 1,
      cache_write: 1,
      cache_write_1h: 1,
      batch_discount: 0.5,
      flex_discount: 0.5,
      source: "the job's [pricing]",
    })
    // a write premium given for the 5-minute cache doubles input for the 1-hour one, unless that is given too
    const written = priceOf("x", { input: 2, output: 4, cache_write: 2.5 })!
    expect([written.cache_write, written.cache_write_1h]).toEqual([2.5, 4])
    expect(priceOf("x", { input: 2, output: 4, cache_write: 2.5, cache_write_1h: 3 })!.cache_write_1h).toBe(3)
    expect(priceOf("llama3.2", { input: 0, output: 0, batch_discount: 0 })?.output).toBe(0)
  })

  test("cost: per million tokens, cached input at its own price, the batch discount off", () => {
    const price = priceOf("gpt-4.1-mini")!
    expect(cost(price, { input_tokens: 1_000_000, output_tokens: 1_000_000 })).toBeCloseTo(2.0, 10)
    expect(
      cost(price, { input_tokens: 1_000_000, output_tokens: 0, cached_input_tokens: 500_000 }),
    ).toBeCloseTo(0.25, 10)
    expect(cost(price, { input_tokens: 2000, output_tokens: 500 }, true)).toBeCloseTo(
      (2000 * 0.4 + 500 * 1.6) / 2e6,
      12,
    )
  })

  test("prompt caching: Anthropic writes at 1.25× input (2× for 1 hour), reads at 0.1×; OpenAI writes at input", () => {
    const sonnet = priceOf("claude-sonnet-4-5")!
    expect([sonnet.input, sonnet.cached_input, sonnet.cache_write, sonnet.cache_write_1h]).toEqual([
      3, 0.3, 3.75, 6,
    ])
    const gpt = priceOf("gpt-5-mini")!
    expect([gpt.cache_write, gpt.cache_write_1h, gpt.flex_discount]).toEqual([0.25, 0.25, 0.5])
    expect(priceOf("gpt-4.1")!.flex_discount).toBeUndefined()
    // 3,000 input tokens of which 2,000 read and 500 written, 100 out: 500 × 3 + 2,000 × 0.3 + 500 × 3.75 + 100 × 15
    const tokens = {
      input_tokens: 3000,
      output_tokens: 100,
      cached_input_tokens: 2000,
      cache_write_tokens: 500,
    }
    expect(cost(sonnet, tokens)).toBeCloseTo((500 * 3 + 2000 * 0.3 + 500 * 3.75 + 100 * 15) / 1e6, 12)
    expect(cost(sonnet, tokens, true)).toBeCloseTo((500 * 3 + 2000 * 0.3 + 500 * 3.75 + 100 * 15) / 2e6, 12)
    // saved: the reads' 2.7 a million each, less the writes' premium of 0.75 a million each
    expect(cacheSaving(sonnet, tokens)).toBeCloseTo((2000 * 2.7 - 500 * 0.75) / 1e6, 12)
    // a cold batch that only wrote saved less than nothing
    expect(
      cacheSaving(sonnet, { input_tokens: 3000, output_tokens: 0, cache_write_tokens: 3000 }, true),
    ).toBeCloseTo((-3000 * 0.75) / 2e6, 12)
    // paid tokens split at the batch price: the batch part's saving is halved
    const paid = {
      input_tokens: 6000,
      output_tokens: 0,
      cached_input_tokens: 4000,
      cache_write_tokens: 1000,
      batch_input_tokens: 3000,
      batch_output_tokens: 0,
      batch_cached_tokens: 2000,
      batch_write_tokens: 500,
    }
    expect(paidSaving(sonnet, paid)).toBeCloseTo(((2000 * 2.7 - 500 * 0.75) * 1.5) / 1e6, 12)
    expect(paidCost(sonnet, paid)).toBeCloseTo(((500 * 3 + 2000 * 0.3 + 500 * 3.75) * 1.5) / 1e6, 12)
  })

  test("a job's price: the 1-hour cache writes at its price; a flex job pays the flex tier's, or has none", () => {
    const job = (model: string, mode: string, cache: string) => ({
      provider: { model, mode },
      request: { cache },
    })
    expect(jobPrice(job("claude-sonnet-4-5", "realtime", "1h"))!.cache_write).toBe(6)
    expect(jobPrice(job("claude-sonnet-4-5", "realtime", "auto"))!.cache_write).toBe(3.75)
    const flex = jobPrice(job("gpt-5-mini", "flex", "auto"))!
    expect([flex.input, flex.cached_input, flex.output]).toEqual([0.125, 0.0125, 1])
    expect(flex.source).toBe(`built-in prices for gpt-5-mini (${PRICES_AS_OF}), flex tier`)
    expect(jobPrice(job("gpt-4.1", "flex", "auto"))).toBeUndefined()
  })
})
