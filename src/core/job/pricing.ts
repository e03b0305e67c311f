/**
 * What tokens cost: an embedded, dated price table per model, which a job's `[pricing]` overrides. An unknown model
 * has an unknown cost (null), never a cost of 0.
 */

/** USD per million tokens. */
export interface Price {
  input: number
  output: number
  /** Input tokens read from the provider's prompt cache. */
  cached_input: number
  /** The share taken off by the provider's Batch API (0.5: half price). */
  batch_discount: number
}

/** When the table below was checked against the providers' published prices. */
export const PRICES_AS_OF = "2025-11"

const p = (input: number, cached_input: number, output: number): Price => ({
  input,
  output,
  cached_input,
  batch_discount: 0.5,
})

/** Standard-tier list prices (input, cached input, output), as published by OpenAI and Anthropic. */
const TABLE: Record<string, Price> = {
  "gpt-5": p(1.25, 0.125, 10),
  "gpt-5-mini": p(0.25, 0.025, 2),
  "gpt-5-nano": p(0.05, 0.005, 0.4),
  "gpt-4.1": p(2, 0.5, 8),
  "gpt-4.1-mini": p(0.4, 0.1, 1.6),
  "gpt-4.1-nano": p(0.1, 0.025, 0.4),
  "gpt-4o": p(2.5, 1.25, 10),
  "gpt-4o-mini": p(0.15, 0.075, 0.6),
  o3: p(2, 0.5, 8),
  "o3-mini": p(1.1, 0.55, 4.4),
  "o4-mini": p(1.1, 0.275, 4.4),
  "claude-opus-4-5": p(5, 0.5, 25),
  "claude-opus-4-1": p(15, 1.5, 75),
  "claude-opus-4": p(15, 1.5, 75),
  "claude-sonnet-4-5": p(3, 0.3, 15),
  "claude-sonnet-4": p(3, 0.3, 15),
  "claude-3-7-sonnet": p(3, 0.3, 15),
  "claude-haiku-4-5": p(1, 0.1, 5),
  "claude-3-5-haiku": p(0.8, 0.08, 4),
}

/** The job's `[pricing]`: input and output are required together; the rest default from them. */
export interface Override {
  input: number
  output: number
  cached_input?: number | undefined
  batch_discount?: number | undefined
}

export interface Priced extends Price {
  /** Where the prices came from, for people. */
  source: string
}

/**
 * The price of a model: the job's override, else the table's entry for the model or for the longest name it
 * extends (a dated snapshot such as `gpt-4.1-mini-2025-04-14` costs what `gpt-4.1-mini` does). Undefined when
 * neither knows the model.
 */
export function priceOf(model: string | undefined, override?: Override): Priced | undefined {
  if (override) {
    return {
      input: override.input,
      output: override.output,
      cached_input: override.cached_input ?? override.input,
      batch_discount: override.batch_discount ?? 0.5,
      source: "the job's [pricing]",
    }
  }
  if (!model) return undefined
  let best: string | undefined
  for (const name of Object.keys(TABLE)) {
    if (model !== name && !model.startsWith(`${name}-`)) continue
    if (!best || name.length > best.length) best = name
  }
  return best ? { ...TABLE[best]!, source: `built-in prices for ${best} (${PRICES_AS_OF})` } : undefined
}

/** The cost in USD of the tokens, at the batch price when `batch`. */
export function cost(
  price: Price,
  tokens: { input_tokens: number; output_tokens: number; cached_input_tokens?: number },
  batch = false,
): number {
  const cached = tokens.cached_input_tokens ?? 0
  const usd =
    ((tokens.input_tokens - cached) * price.input +
      cached * price.cached_input +
      tokens.output_tokens * price.output) /
    1e6
  return batch ? usd * (1 - price.batch_discount) : usd
}

/** What a run has spent so far, from its ledger totals (`reads.summary`): the batch part at the batch price. */
export function spentOf(
  price: Price,
  s: {
    inputTokens: number
    outputTokens: number
    cachedTokens: number
    batch: { inputTokens: number; outputTokens: number; cachedTokens: number }
  },
): number {
  return paidCost(price, {
    input_tokens: s.inputTokens,
    output_tokens: s.outputTokens,
    cached_input_tokens: s.cachedTokens,
    batch_input_tokens: s.batch.inputTokens,
    batch_output_tokens: s.batch.outputTokens,
    batch_cached_tokens: s.batch.cachedTokens,
  })
}

/** Tokens of which a part was paid at the batch price (an item, or a run's totals). */
export interface Paid {
  input_tokens: number
  output_tokens: number
  cached_input_tokens: number
  batch_input_tokens: number
  batch_output_tokens: number
  batch_cached_tokens: number
}

/** The cost of tokens of which the `batch_` part was paid at the batch price and the rest at the full one. */
export function paidCost(price: Price, t: Paid): number {
  const batch = {
    input_tokens: t.batch_input_tokens,
    output_tokens: t.batch_output_tokens,
    cached_input_tokens: t.batch_cached_tokens,
  }
  const direct = {
    input_tokens: t.input_tokens - t.batch_input_tokens,
    output_tokens: t.output_tokens - t.batch_output_tokens,
    cached_input_tokens: t.cached_input_tokens - t.batch_cached_tokens,
  }
  return cost(price, direct) + cost(price, batch, true)
}
