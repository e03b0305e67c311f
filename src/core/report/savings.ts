/**
 * What the provider's prompt cache saved a run, and what its priming calls cost (README, "Paying less"): the figures
 * of `spool status` (and the page), and their lines of its text.
 */
import type { Summary } from "../ledger/types.ts"
import { cost, paidCost, paidOf, paidSaving, type Price } from "../job/pricing.ts"

/** The provider's prompt cache in a run: the tokens it read and wrote, and what that saved. */
export interface PromptCacheView {
  /** Input tokens read from the prompt cache (paid at the cached-input price), priming calls' among them. */
  read_tokens: number
  /** Input tokens written to it (paid at the cache-write price). */
  write_tokens: number
  /**
   * USD at full precision: the reads at the input price less what they cost, less what the writes cost over the input price, each at
   * the price it was paid (batch or not). Negative when the writes outweighed the reads; null when the price is unknown.
   */
  saved_usd: number | null
  /**
   * `saved_usd` as a share of what the run's input tokens would have cost with no prompt cache (0.8988: 89.88%);
   * null when the price is unknown or nothing was read or written.
   */
  saved_share: number | null
}

/** The run's priming calls: one small request before a batch, so that its requests read their shared prefix. */
export interface PrimingView {
  calls: number
  /** Calls that got no answer (nothing paid for them). */
  failed: number
  /** USD (full precision) of the answered calls' tokens at the full price (a priming call is never a batch's); null when unknown. */
  cost_usd: number | null
  /** When the last answered one ended; null when none has. */
  last_at: string | null
}

/** The prompt cache's figures of a run's totals (`reads.summary`), at `price` (undefined: unknown). */
export function promptCacheOf(s: Summary, price: Price | undefined): PromptCacheView {
  const read = s.cachedTokens
  const written = s.writeTokens
  if (!price) return { read_tokens: read, write_tokens: written, saved_usd: null, saved_share: null }
  const saved = paidSaving(price, paidOf(s))
  // what the input would have cost uncached: every input token at the input price, the batch part at the batch one
  const uncached = paidCost(price, {
    input_tokens: s.inputTokens,
    output_tokens: 0,
    cached_input_tokens: 0,
    batch_input_tokens: s.batch.inputTokens,
    batch_output_tokens: 0,
    batch_cached_tokens: 0,
  })
  return {
    read_tokens: read,
    write_tokens: written,
    // at full precision, as `spend.usd` and each result's figure: a cheap run's saving rounded to 6 decimals says 0
    saved_usd: saved,
    saved_share: read + written > 0 && uncached > 0 ? Math.round((saved / uncached) * 1e4) / 1e4 : null,
  }
}

/** The priming calls' figures of a run's totals (`reads.summary`), at `price` (undefined: unknown). */
export function primingOf(s: Summary, price: Price | undefined): PrimingView {
  const p = s.primes
  const tokens = {
    input_tokens: p.inputTokens,
    output_tokens: p.outputTokens,
    cached_input_tokens: p.cachedTokens,
    cache_write_tokens: p.writeTokens,
  }
  return {
    calls: p.count,
    failed: p.failed,
    cost_usd: price ? cost(price, tokens) : null,
    last_at: p.lastAt === null ? null : new Date(p.lastAt).toISOString(),
  }
}
