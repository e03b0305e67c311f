/**
 * When to try again: exponential backoff with full jitter, or what the provider asked for (which the provider reads
 * from its answer: the plugin API's `retryAfterMs`).
 */

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

/** The wait before the next attempt: the provider's word when it gave one (capped), else backoff. */
export function delay(
  attempt: number,
  retryAfterMs: number | undefined,
  policy: Policy = DEFAULT_POLICY,
): number {
  if (retryAfterMs !== undefined) return Math.min(retryAfterMs, 15 * 60_000)
  return backoff(attempt, policy)
}
