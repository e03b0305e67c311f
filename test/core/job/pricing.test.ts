import { describe, expect, test } from "bun:test"
import { cost, distance, nearest, priceOf, PRICES_AS_OF, unpriced } from "../../../src/core/job/pricing.ts"

describe("prices", () => {
  test("a model's price: by its exact name or a dated snapshot of it, unknown as undefined", () => {
    expect(priceOf("gpt-4.1-mini")).toEqual({
      input: 0.4,
      output: 1.6,
      cached_input: 0.1,
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
