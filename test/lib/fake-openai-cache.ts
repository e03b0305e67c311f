/**
 * The fake OpenAI server's prompt cache and bill (fake-openai.ts). OpenAI caches prompt prefixes by itself: a prompt
 * of 1,024 tokens or more leaves its prefix in the cache, and a later prompt that starts with it reads the shared part,
 * counted in blocks: 1,024 tokens, then steps of 128 (`usage.prompt_tokens_details.cached_tokens`). A prefix lives
 * `ttlMs` (5 minutes) after its last use, by the fake's clock. The model is deterministic: a prompt is its messages'
 * JSON (whose length the fake's `prompt_tokens` counts, 4 characters a token), hashed block by block, and each block
 * boundary's hash (chained from the model's name, so models do not share) is remembered with when it was last used.
 *
 * The bill is USD, as OpenAI prices a request: uncached input, cached input at `cachedRatio` of the input price, and
 * output; half of it for a batch line or a flex call.
 */

/** USD per million tokens. */
export interface Price {
  input: number
  output: number
}

export interface CacheOptions {
  /** Prices by model; a model not named is billed as gpt-5-mini. Default gpt-5-mini's: $0.25 in, $2 out. */
  prices?: Record<string, Price>
  /** The cached-input price as a share of the input price (default 0.1: the GPT-5 family's). */
  cachedRatio?: number
  /** How long a prefix lives after its last use, ms (default 5 minutes). */
  ttlMs?: number
}

export const DEFAULT_PRICE: Price = { input: 0.25, output: 2 }
export const CACHE_TTL_MS = 5 * 60_000
/** The shortest prompt cached, and the first block read. */
export const CACHE_MIN_TOKENS = 1024
/** The steps a cached read grows by past the first 1,024 tokens. */
export const CACHE_STEP_TOKENS = 128
/** Characters a token: the fake's own count. */
const CHARS = 4

/** What one answered request used, as its usage says. */
export interface Used {
  model: string
  input: number
  cached: number
  output: number
  /** A batch line or a flex call: billed at half. */
  half: boolean
}

export class PromptCache {
  /** USD billed for every answered request, realtime and batch. */
  billed = 0
  /** Requests answered with cached tokens. */
  hits = 0
  /** Cached tokens served, all requests. */
  cachedTokens = 0
  /** The `prompt_cache_key` of every chat request received (a batch's lines when it is created), in order; null for none. */
  keys: (string | null)[] = []
  /** Chained hash of a prompt's prefix at a block boundary → when it was last used. */
  private readonly blocks = new Map<bigint, number>()
  private readonly prices: Record<string, Price>
  private readonly ratio: number
  private readonly ttlMs: number

  constructor(
    options: CacheOptions,
    private readonly now: () => number,
  ) {
    this.prices = options.prices ?? {}
    this.ratio = options.cachedRatio ?? 0.1
    this.ttlMs = options.ttlMs ?? CACHE_TTL_MS
  }

  /** Records a chat request's `prompt_cache_key`. */
  key(body: Record<string, unknown>): void {
    this.keys.push(typeof body.prompt_cache_key === "string" ? body.prompt_cache_key : null)
  }

  /**
   * The tokens of `prompt` (a chat request's messages, as JSON) read from the cache now, for `model`; its prefixes
   * are then written (or refreshed) when the prompt is long enough to be cached.
   */
  read(model: string, prompt: string): number {
    const at = this.now()
    const whole = Math.floor(prompt.length / CHARS)
    const hashes: bigint[] = []
    let hash = Bun.hash(model)
    let from = 0
    for (let t = CACHE_MIN_TOKENS; t <= whole; t += CACHE_STEP_TOKENS) {
      hash = Bun.hash(prompt.slice(from, t * CHARS), hash) as bigint
      from = t * CHARS
      hashes.push(hash)
    }
    let cached = 0
    for (const [i, h] of hashes.entries()) {
      const last = this.blocks.get(h)
      if (last === undefined || at - last >= this.ttlMs) break
      cached = CACHE_MIN_TOKENS + i * CACHE_STEP_TOKENS
    }
    // a prompt shorter than the first block has no boundary, and leaves nothing
    for (const h of hashes) this.blocks.set(h, at)
    if (cached > 0) {
      this.hits++
      this.cachedTokens += cached
    }
    return cached
  }

  /** The price of a model: its own, a dated snapshot's model's, else gpt-5-mini's. */
  price(model: string): Price {
    return this.prices[model] ?? this.prices[model.replace(/-\d{4}-\d{2}-\d{2}$/, "")] ?? DEFAULT_PRICE
  }

  /** What one answered request costs, USD. */
  cost(used: Used): number {
    const { input, output } = this.price(used.model)
    const usd =
      ((used.input - used.cached) * input + used.cached * input * this.ratio + used.output * output) / 1e6
    return used.half ? usd / 2 : usd
  }

  /** Bills one answered request. */
  bill(used: Used): void {
    this.billed += this.cost(used)
  }
}
