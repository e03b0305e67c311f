/**
 * Rate limits as a response reports them. A provider attaches them to its reply (or its error) with `rated`
 * (http.ts); the runner learns the limits and the pace from them.
 */

/** One limit as the provider reports it. */
export interface Window {
  limit?: number | undefined
  remaining?: number | undefined
  /** Milliseconds until the window is full again. */
  resetMs?: number | undefined
}

/** What a response says of the limits: requests and tokens per minute. */
export interface RateInfo {
  requests?: Window | undefined
  tokens?: Window | undefined
}

/**
 * "1s", "6m0s", "120ms", "1h2m3.5s" (OpenAI's reset durations) in milliseconds; undefined for anything else.
 *
 * @example
 * duration("6m0s") // 360000
 */
export function duration(text: string): number | undefined {
  const re = /(\d+(?:\.\d+)?)(ms|h|m|s)/g
  let total = 0
  let seen = 0
  for (const [part, n, unit] of text.trim().matchAll(re)) {
    seen += part.length
    total += Number(n) * (unit === "h" ? 3_600_000 : unit === "m" ? 60_000 : unit === "s" ? 1000 : 1)
  }
  return seen > 0 && seen === text.trim().length ? Math.round(total) : undefined
}

const number = (x: string | null) => (x !== null && /^\d+(\.\d+)?$/.test(x.trim()) ? Number(x) : undefined)

/**
 * Reads OpenAI's `x-ratelimit-*` and Anthropic's `anthropic-ratelimit-*` headers; undefined when there are none.
 *
 * @example
 * fromHeaders(new Headers({ "x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "499" }))
 * // { requests: { limit: 500, remaining: 499, resetMs: undefined }, tokens: undefined }
 */
export function fromHeaders(h: Headers | undefined, now = Date.now()): RateInfo | undefined {
  if (!h) return undefined
  const openai = (what: "requests" | "tokens"): Window | undefined => {
    const limit = number(h.get(`x-ratelimit-limit-${what}`))
    const remaining = number(h.get(`x-ratelimit-remaining-${what}`))
    const reset = h.get(`x-ratelimit-reset-${what}`)
    if (limit === undefined && remaining === undefined) return undefined
    return { limit, remaining, resetMs: reset ? duration(reset) : undefined }
  }
  const anthropic = (what: string): Window | undefined => {
    const limit = number(h.get(`anthropic-ratelimit-${what}-limit`))
    const remaining = number(h.get(`anthropic-ratelimit-${what}-remaining`))
    const reset = h.get(`anthropic-ratelimit-${what}-reset`)
    if (limit === undefined && remaining === undefined) return undefined
    const at = reset ? Date.parse(reset) : Number.NaN
    return { limit, remaining, resetMs: Number.isNaN(at) ? undefined : Math.max(0, at - now) }
  }
  const requests = openai("requests") ?? anthropic("requests")
  // Anthropic reports input and output tokens apart (and, on some tiers, combined): the input limit binds first
  const tokens = openai("tokens") ?? anthropic("tokens") ?? anthropic("input-tokens")
  return requests || tokens ? { requests, tokens } : undefined
}
