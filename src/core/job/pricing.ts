/**
 * What tokens cost: an embedded, dated price table per model, which a job's `[pricing]` overrides. An unknown model
 * has an unknown cost (null), never a cost of 0, and a warning at the start of a run or an estimate.
 */
import * as log from "../base/log.ts"

/** USD per million tokens. */
export interface Price {
  input: number
  output: number
  /** Input tokens read from the provider's prompt cache. */
  cached_input: number
  /**
   * Input tokens written to the provider's prompt cache, at the job's cache lifetime (`jobPrice` picks the 5-minute
   * or the 1-hour price): Anthropic 1.25× input (2× for 1 hour); providers without a write premium charge input.
   */
  cache_write: number
  /** The 1-hour cache's write price (Anthropic 2× input). */
  cache_write_1h: number
  /** The share taken off by the provider's Batch API (0.5: half price). */
  batch_discount: number
  /**
   * The share taken off in the flex tier (OpenAI `service_tier: "flex"`), for the models that have one; undefined
   * for the others. Flex costs what the Batch API does, so a flex call's tokens are kept with the batch-priced ones.
   */
  flex_discount?: number | undefined
}

/** When the table below was checked against the providers' published prices. */
export const PRICES_AS_OF = "2025-11"

/** A price with no cache-write premium (OpenAI, Gemini): a write costs what input does. */
const p = (input: number, cached_input: number, output: number): Price => ({
  input,
  output,
  cached_input,
  cache_write: input,
  cache_write_1h: input,
  batch_discount: 0.5,
})

/** OpenAI's Flex processing: the batch price through the synchronous API, on the models that offer it. */
const flex = (price: Price): Price => ({ ...price, flex_discount: 0.5 })

/**
 * Anthropic: a cache write costs 1.25× input for the 5-minute cache and 2× for the 1-hour one; a read 0.1×
 * (docs.anthropic.com, "Prompt caching", pricing table; the batch discount stacks with both).
 */
const a = (input: number, output: number): Price => ({
  input,
  output,
  cached_input: Math.round(input * 100_000) / 1_000_000,
  cache_write: input * 1.25,
  cache_write_1h: input * 2,
  batch_discount: 0.5,
})

/** Standard-tier list prices (input, cached input, output), as published by OpenAI and Anthropic. */
const TABLE: Record<string, Price> = {
  // Flex processing (platform.openai.com/docs/guides/flex-processing): the gpt-5 family, o3 and o4-mini, at the
  // Batch API's prices
  "gpt-5": flex(p(1.25, 0.125, 10)),
  "gpt-5-mini": flex(p(0.25, 0.025, 2)),
  "gpt-5-nano": flex(p(0.05, 0.005, 0.4)),
  "gpt-4.1": p(2, 0.5, 8),
  "gpt-4.1-mini": p(0.4, 0.1, 1.6),
  "gpt-4.1-nano": p(0.1, 0.025, 0.4),
  "gpt-4o": p(2.5, 1.25, 10),
  "gpt-4o-mini": p(0.15, 0.075, 0.6),
  o3: flex(p(2, 0.5, 8)),
  "o3-mini": p(1.1, 0.55, 4.4),
  "o4-mini": flex(p(1.1, 0.275, 4.4)),
  "claude-opus-4-5": a(5, 25),
  "claude-opus-4-1": a(15, 75),
  "claude-opus-4": a(15, 75),
  "claude-sonnet-4-5": a(3, 15),
  "claude-sonnet-4": a(3, 15),
  "claude-3-7-sonnet": a(3, 15),
  "claude-haiku-4-5": a(1, 5),
  "claude-3-5-haiku": a(0.8, 4),
  // embeddings bill their input alone (no output, no cached-input price): OpenAI's model pages, "Pricing",
  // developers.openai.com/api/docs/models/text-embedding-3-small and …-3-large ($0.02 and $0.13 per 1M tokens,
  // checked 2026-12); the Batch API at half price, as for every OpenAI model (batch_discount 0.5)
  "text-embedding-3-small": p(0.02, 0.02, 0),
  "text-embedding-3-large": p(0.13, 0.13, 0),
  "text-embedding-ada-002": p(0.1, 0.1, 0),
  // Gemini: the Gemini Developer API's paid tier, ai.google.dev/gemini-api/docs/pricing ("Standard"; output includes
  // thinking tokens; cached input is the context-caching price), checked 2026-12 through copies of that page. The
  // Pro models' rates are those of prompts up to 200k tokens (above, Google charges more: set [pricing] for such
  // jobs). The Batch API is half price on every model (batch_discount 0.5).
  "gemini-3.5-flash": p(1.5, 0.15, 9),
  "gemini-3.1-pro-preview": p(2, 0.2, 12),
  "gemini-3.1-flash-lite-preview": p(0.25, 0.025, 1.5),
  "gemini-3-flash-preview": p(0.5, 0.05, 3),
  "gemini-2.5-pro": p(1.25, 0.125, 10),
  "gemini-2.5-flash": p(0.3, 0.03, 2.5),
  "gemini-2.5-flash-lite": p(0.1, 0.01, 0.4),
}

/** The job's `[pricing]`: input and output are required together; the rest default from them. */
export interface Override {
  input: number
  output: number
  cached_input?: number | undefined
  /** USD per million tokens written to the prompt cache (the 5-minute cache's); default: input. */
  cache_write?: number | undefined
  /** The 1-hour cache's write price; default: twice input when `cache_write` is above input, else input. */
  cache_write_1h?: number | undefined
  batch_discount?: number | undefined
  /** The flex tier's share off; default: `batch_discount` (flex costs the batch price). */
  flex_discount?: number | undefined
}

export interface Priced extends Price {
  /** Where the prices came from, for people. */
  source: string
}

/** A dated snapshot's suffix: `-2025-04-14` (OpenAI) or `-20250929` (Anthropic). */
const SNAPSHOT = /-(?:\d{4}-\d{2}-\d{2}|\d{8})$/

/**
 * The table's name for a model: the model itself, or the model a dated snapshot is of (`gpt-4.1-mini-2025-04-14`
 * costs what `gpt-4.1-mini` does). Nothing else: `gpt-4.1-mnii` is no gpt-4.1, and `gpt-4.1-preview` may cost
 * something else.
 */
function tableName(model: string): string | undefined {
  if (TABLE[model]) return model
  const base = model.replace(SNAPSHOT, "")
  return base !== model && TABLE[base] ? base : undefined
}

/**
 * The price of a model: the job's override, else the table's entry for the model or the model it is a dated
 * snapshot of. Undefined when neither knows the model.
 */
export function priceOf(model: string | undefined, override?: Override): Priced | undefined {
  if (override) {
    const write = override.cache_write ?? override.input
    return {
      input: override.input,
      output: override.output,
      cached_input: override.cached_input ?? override.input,
      cache_write: write,
      cache_write_1h: override.cache_write_1h ?? (write > override.input ? override.input * 2 : write),
      batch_discount: override.batch_discount ?? 0.5,
      flex_discount: override.flex_discount ?? override.batch_discount ?? 0.5,
      source: "the job's [pricing]",
    }
  }
  const name = model === undefined ? undefined : tableName(model)
  return name ? { ...TABLE[name]!, source: `built-in prices for ${name} (${PRICES_AS_OF})` } : undefined
}

/**
 * The price a job pays: its model's (`priceOf`), with the cache-write price of the job's cache lifetime (`[request]
 * cache = "1h"` writes at the 1-hour price). A flex job's direct calls are its only calls, all in the flex tier: its
 * prices are the flex tier's (undefined when the model has none and no `[pricing]` says).
 */
export function jobPrice(job: {
  provider: { model?: string | undefined; mode?: string | undefined }
  pricing?: Override | undefined
  request: { cache?: string | undefined }
}): Priced | undefined {
  let price = priceOf(job.provider.model, job.pricing)
  if (price && job.request.cache === "1h") price = { ...price, cache_write: price.cache_write_1h }
  if (price && job.provider.mode === "flex") {
    if (price.flex_discount === undefined) return undefined
    const k = 1 - price.flex_discount
    price = {
      ...price,
      input: price.input * k,
      output: price.output * k,
      cached_input: price.cached_input * k,
      cache_write: price.cache_write * k,
      cache_write_1h: price.cache_write_1h * k,
      source: `${price.source}, flex tier`,
    }
  }
  return price
}

/** Edits (insert, delete, substitute, swap two neighbours) that turn `a` into `b`: the optimal string alignment. */
export function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)])
  for (let j = 1; j <= b.length; j++) d[0]![j] = j
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const same = a[i - 1] === b[j - 1] ? 0 : 1
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + same)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        best = Math.min(best, d[i - 2]![j - 2]! + 1)
      d[i]![j] = best
    }
  }
  return d[a.length]![b.length]!
}

/**
 * The priced model nearest to `model`, when it is near enough to be what was meant: one edit for every four
 * characters of the name, and at least one. A suffix of numbers or `-latest` is set aside first, so a snapshot
 * with a mistyped date or an alias points at its model. `llama3.2` is near nothing in the table.
 */
export function nearest(model: string): string | undefined {
  const base = model.replace(/-latest$/, "").replace(/(?:-\d+)+$/, "")
  let best: { name: string; edits: number } | undefined
  for (const name of Object.keys(TABLE)) {
    const edits = Math.min(distance(model, name), distance(base, name))
    if (!best || edits < best.edits) best = { name, edits }
  }
  return best && best.edits <= Math.max(1, Math.floor(base.length / 4)) ? best.name : undefined
}

/**
 * What to tell a person whose model has no price (and no `[pricing]`): one line, with the nearest priced name when
 * one is near. Undefined when the cost is known, or when no model is named.
 */
export function unpriced(model: string | undefined, override?: Override): string | undefined {
  if (model === undefined || priceOf(model, override)) return undefined
  const near = nearest(model)
  if (near) return `no price for model "${model}" (did you mean "${near}"?); cost shows as unknown`
  return `no price for model "${model}"; cost shows as unknown (set input and output in [pricing] to count it)`
}

/**
 * Warns, once at the start of a run or an estimate, that the job's model has no price. The mock provider calls
 * nothing and costs nothing: with it, only a model near a priced one (a mistyped name) is warned about.
 */
export function warnUnpriced(
  provider: { name: string; model?: string | undefined },
  override?: Override,
): void {
  const warning = unpriced(provider.model, override)
  if (!warning) return
  if (provider.name === "mock" && !nearest(provider.model!)) return
  log.warn(warning)
}

/** Tokens to price: every input token (cached reads and cache writes among them), and the output. */
export interface Tokens {
  input_tokens: number
  output_tokens: number
  cached_input_tokens?: number | undefined
  cache_write_tokens?: number | undefined
}

/** The cost in USD of the tokens, at the batch price when `batch`. */
export function cost(price: Price, tokens: Tokens, batch = false): number {
  const cached = tokens.cached_input_tokens ?? 0
  const written = tokens.cache_write_tokens ?? 0
  const usd =
    ((tokens.input_tokens - cached - written) * price.input +
      cached * price.cached_input +
      written * price.cache_write +
      tokens.output_tokens * price.output) /
    1e6
  return batch ? usd * (1 - price.batch_discount) : usd
}

/**
 * What the provider's prompt cache saved on these tokens, in USD: the cached reads at the input price less what they
 * cost, less the premium the writes cost over the input price (negative when writes outweighed reads), at the batch
 * price when `batch`.
 */
export function cacheSaving(price: Price, tokens: Tokens, batch = false): number {
  const usd =
    ((tokens.cached_input_tokens ?? 0) * (price.input - price.cached_input) -
      (tokens.cache_write_tokens ?? 0) * (price.cache_write - price.input)) /
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
    writeTokens?: number | undefined
    batch: {
      inputTokens: number
      outputTokens: number
      cachedTokens: number
      writeTokens?: number | undefined
    }
  },
): number {
  return paidCost(price, paidOf(s))
}

/** A run's totals (`reads.summary`) as `Paid` tokens. */
export function paidOf(s: {
  inputTokens: number
  outputTokens: number
  cachedTokens: number
  writeTokens?: number | undefined
  batch: { inputTokens: number; outputTokens: number; cachedTokens: number; writeTokens?: number | undefined }
}): Paid {
  return {
    input_tokens: s.inputTokens,
    output_tokens: s.outputTokens,
    cached_input_tokens: s.cachedTokens,
    cache_write_tokens: s.writeTokens ?? 0,
    batch_input_tokens: s.batch.inputTokens,
    batch_output_tokens: s.batch.outputTokens,
    batch_cached_tokens: s.batch.cachedTokens,
    batch_write_tokens: s.batch.writeTokens ?? 0,
  }
}

/** Tokens of which a part was paid at the batch price (an item, or a run's totals). */
export interface Paid {
  input_tokens: number
  output_tokens: number
  cached_input_tokens: number
  cache_write_tokens?: number | undefined
  batch_input_tokens: number
  batch_output_tokens: number
  batch_cached_tokens: number
  batch_write_tokens?: number | undefined
}

/** Paid tokens split into the part at the batch price (or flex's, the same) and the part at the full one. */
function split(t: Paid): { direct: Tokens; batch: Tokens } {
  return {
    batch: {
      input_tokens: t.batch_input_tokens,
      output_tokens: t.batch_output_tokens,
      cached_input_tokens: t.batch_cached_tokens,
      cache_write_tokens: t.batch_write_tokens ?? 0,
    },
    direct: {
      input_tokens: t.input_tokens - t.batch_input_tokens,
      output_tokens: t.output_tokens - t.batch_output_tokens,
      cached_input_tokens: t.cached_input_tokens - t.batch_cached_tokens,
      cache_write_tokens: (t.cache_write_tokens ?? 0) - (t.batch_write_tokens ?? 0),
    },
  }
}

/** The cost of tokens of which the `batch_` part was paid at the batch price and the rest at the full one. */
export function paidCost(price: Price, t: Paid): number {
  const { direct, batch } = split(t)
  return cost(price, direct) + cost(price, batch, true)
}

/** What the provider's prompt cache saved on paid tokens (`cacheSaving`), each part at the price it was paid. */
export function paidSaving(price: Price, t: Paid): number {
  const { direct, batch } = split(t)
  return cacheSaving(price, direct) + cacheSaving(price, batch, true)
}
