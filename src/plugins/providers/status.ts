/** What every HTTP provider's error classification shares, after its own special cases (quota, overload, …). */
import { ProviderError } from "../../core/errors.ts"
import { parseRetryAfter } from "../../core/retry.ts"

/** The wait a response asks for: `retry-after-ms` (OpenAI, Anthropic), else `retry-after` (seconds or a date). */
export function retryAfterMs(headers: Headers): number | undefined {
  const ms = headers.get("retry-after-ms")
  if (ms && /^\d+(\.\d+)?$/.test(ms)) return Math.round(Number(ms))
  return parseRetryAfter(headers.get("retry-after"))
}

/**
 * An HTTP error by its status: 429 rate_limit, 408 timeout, 409 and 5xx server (retryable, honouring the wait asked
 * for); 401/403 auth (pauses the run); 404 not_found; any other 4xx bad_request.
 */
export function byStatus(status: number, message: string, retryAfterMs: number | undefined): ProviderError {
  if (status === 429)
    return new ProviderError("rate_limit", message, { retryable: true, retryAfterMs, status })
  if (status === 401 || status === 403)
    return new ProviderError("auth", message, { retryable: false, pause: true, status })
  if (status === 408) return new ProviderError("timeout", message, { retryable: true, retryAfterMs, status })
  if (status === 409 || status >= 500)
    return new ProviderError("server", message, { retryable: true, retryAfterMs, status })
  if (status === 404) return new ProviderError("not_found", message, { retryable: false, status })
  return new ProviderError("bad_request", message, { retryable: false, status })
}
