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

/**
 * The wait an error asks for: the provider's word (Retry-After) when it gave one. A flex call the tier had no
 * capacity for (ErrorClass "unavailable") waits, without one, the longest backoff (`retry_cap_s`, with jitter from
 * half of it): capacity comes back in minutes, and asking again at once only adds to the queue.
 */
export function askedWait(
  e: { errorClass: string; retryAfterMs?: number | undefined },
  policy: Policy = DEFAULT_POLICY,
  random = Math.random,
): number | undefined {
  if (e.errorClass !== "unavailable" || e.retryAfterMs !== undefined) return e.retryAfterMs
  return Math.round(policy.capMs * (0.5 + random() / 2))
}
