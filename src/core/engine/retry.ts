/** When to try again: exponential backoff with full jitter, or what the provider asked for. */

export interface Policy {
  baseMs: number
  capMs: number
}

export const DEFAULT_POLICY: Policy = { baseMs: 1000, capMs: 60_000 }

/** Full jitter (AWS architecture blog): uniform in [0, min(cap, base·2^(attempt-1))]. */
export function backoff(attempt: number, policy: Policy = DEFAULT_POLICY, random = Math.random): number {
  const ceiling = Math.min(policy.capMs, policy.baseMs * 2 ** Math.max(0, attempt - 1))
  return Math.round(random() * ceiling)
}

/** Parses a Retry-After value (delta seconds or an HTTP-date) into milliseconds from `now`. */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined
  const trimmed = value.trim()
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Math.round(Number(trimmed) * 1000)
  const at = Date.parse(trimmed)
  if (Number.isNaN(at)) return undefined
  return Math.max(0, at - now)
}

/** The wait before the next attempt: the provider's word when it gave one (capped), else backoff. */
export function delay(
  attempt: number,
  retryAfterMs: number | undefined,
  policy: Policy = DEFAULT_POLICY,
): number {
  if (retryAfterMs !== undefined) return Math.min(retryAfterMs, 15 * 60_000)
  return backoff(attempt, policy)
}
