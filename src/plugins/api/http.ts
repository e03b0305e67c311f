/**
 * What every HTTP provider's error handling shares, after its own special cases (quota, overload, …): the wait a
 * response asks for, an error by its status, the rate limits a response reports, and what an SDK threw when no
 * answer came. Public: `spool/plugin` exports them for outside providers.
 */
import { ProviderError } from "./errors.ts"
import { fromHeaders, type RateInfo } from "./ratelimit.ts"

/**
 * A Retry-After value (delta seconds or an HTTP-date) in milliseconds from `now`; undefined when there is none or
 * it is neither.
 *
 * @example
 * parseRetryAfter("7") // 7000
 */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined
  const trimmed = value.trim()
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Math.round(Number(trimmed) * 1000)
  const at = Date.parse(trimmed)
  if (Number.isNaN(at)) return undefined
  return Math.max(0, at - now)
}

/**
 * The wait a response asks for, in milliseconds: `retry-after-ms` (OpenAI, Anthropic), else `retry-after` (seconds
 * or a date); undefined when it asks for none.
 *
 * @example
 * retryAfterMs(response.headers) // 7000 for "retry-after: 7"
 */
export function retryAfterMs(headers: Headers): number | undefined {
  const ms = headers.get("retry-after-ms")
  if (ms && /^\d+(\.\d+)?$/.test(ms)) return Math.round(Number(ms))
  return parseRetryAfter(headers.get("retry-after"))
}

/**
 * An HTTP error by its status: 429 rate_limit, 408 timeout, 409 and 5xx server (retryable, honouring the wait asked
 * for); 401/403 auth (pauses the run); 404 not_found; any other 4xx bad_request.
 *
 * @example
 * if (!response.ok) throw byStatus(response.status, `HTTP ${response.status}: ${text}`, retryAfterMs(response.headers))
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

/**
 * Runs `read` (which returns a reply or throws a ProviderError) and tags either with the rate limits the response's
 * headers report (`fromHeaders`), so the runner learns the limits from every answer, errors included.
 *
 * @example
 * return rated(response.headers, () => {
 *   if (!response.ok) throw byStatus(response.status, text, retryAfterMs(response.headers))
 *   return { text, usage }
 * })
 */
export function rated<R extends object>(
  headers: Headers | undefined,
  read: () => R,
): R & { rate?: RateInfo | undefined } {
  const rate = fromHeaders(headers)
  try {
    const reply = read()
    return rate ? { ...reply, rate } : reply
  } catch (err) {
    if (err instanceof ProviderError && rate) err.rate = rate
    throw err
  }
}

/** A class of error an SDK throws. */
type SdkClass = abstract new (...args: never[]) => Error

/**
 * An SDK's error classes, for `unanswered` (the OpenAI and Anthropic SDKs have the same ones): no answer in time,
 * aborted, the connection failed, and `base`, the class all its errors share.
 */
export type SdkErrors = { timeout: SdkClass; abort: SdkClass; connection: SdkClass; base: SdkClass }

/**
 * Turns what an SDK threw, when it is no HTTP error answer (each provider classifies those its own way), into a
 * ProviderError. `keep` goes into every error made (e.g. `{ cause }`).
 */
export function unanswered(
  cause: unknown,
  timeoutMs: number,
  sdk: SdkErrors,
  keep: { cause?: unknown } = {},
): ProviderError {
  const seconds = `no answer within ${timeoutMs / 1000} s`
  // the SDK's own timer covers the wait for headers; ours (an abort the caller did not make) covers the body too
  if (cause instanceof sdk.timeout || cause instanceof sdk.abort) {
    return new ProviderError("timeout", seconds, { retryable: true, ...keep })
  }
  if (cause instanceof sdk.connection) {
    const why = cause.cause instanceof Error ? cause.cause.message : cause.message
    return new ProviderError("network", `connection failed: ${why}`, { retryable: true, ...keep })
  }
  // what remains is the SDK refusing our options before sending anything: retrying would not help
  if (cause instanceof sdk.base) {
    return new ProviderError("bad_request", `the request was not sent: ${cause.message}`, {
      retryable: false,
      ...keep,
    })
  }
  // the SDK reads a 200 body with no wrapping of its own
  const name = (cause as Error)?.name
  const text = (cause as Error)?.message ?? String(cause)
  if (name === "SyntaxError") {
    return new ProviderError("bad_response", `HTTP 200 with a body that is not JSON: ${text}`, {
      retryable: true,
      status: 200,
      ...keep,
    })
  }
  if (name === "TimeoutError" || name === "AbortError") {
    return new ProviderError("timeout", seconds, { retryable: true, ...keep })
  }
  return new ProviderError("network", `connection failed: ${text}`, { retryable: true, ...keep })
}
