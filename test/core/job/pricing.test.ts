import { describe, expect, test } from "bun:test"
import { cost, priceOf, PRICES_AS_OF } from "../../../src/core/job/pricing.ts"

describe("prices", () => {
  test("a model's price: by name, by the longest name a dated snapshot extends, unknown as undefined", () => {
    expect(priceOf("gpt-4.1-mini")).toEqual({
      input: 0.4,
      output: 1.6,
      cached_input: 0.1,
      batch_discount: 0.5,
      source: `built-in prices for gpt-4.1-mini (${PRICES_AS_OF})`,
    })
    // gpt-4.1-mini-… is a gpt-4.1-mini, not a gpt-4.1
    expect(priceOf("gpt-4.1-mini-2025-04-14")?.input).toBe(0.4)
    expect(priceOf("gpt-4.1-2025-04-14")?.input).toBe(2)
    expect(priceOf("claude-sonnet-4-5-20250929")?.output).toBe(15)
    expect(priceOf("gpt-4o-mini")?.input).toBe(0.15)
    expect(priceOf("gpt-4.1x")).toBeUndefined()
    expect(priceOf("llama3.2")).toBeUndefined()
    expect(priceOf(undefined)).toBeUndefined()
  })

  test("the job's [pricing] wins, with cached input and batch discount defaulting from it", () => {
    expect(priceOf("gpt-4.1-mini", { input: 1, output: 2 })).toEqual({
      input: 1,
      output: 2,
      cached_input: 1,
      batch_discount: 0.5,
      source: "the job's [pricing]",
    })
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
})
