import { describe, expect, test } from "bun:test"
import { announced, save, stallWatch } from "../../../src/plugins/api/batch.ts"
import {
  JobError,
  ProviderError,
  SourceChangedError,
  SourceError,
  StoreError,
} from "../../../src/plugins/api/errors.ts"
import { byStatus, parseRetryAfter, rated, retryAfterMs, unanswered } from "../../../src/plugins/api/http.ts"
import { fromHeaders } from "../../../src/plugins/api/ratelimit.ts"

describe("reading an HTTP answer", () => {
  test("Retry-After in seconds, fractional seconds and HTTP-date are understood", () => {
    const now = Date.parse("2026-11-24T12:00:00Z")
    expect(parseRetryAfter("7", now)).toBe(7000)
    expect(parseRetryAfter("0.5", now)).toBe(500)
    expect(parseRetryAfter("Tue, 24 Nov 2026 12:00:30 GMT", now)).toBe(30_000)
    expect(parseRetryAfter("Tue, 24 Nov 2026 11:00:00 GMT", now)).toBe(0)
    expect(parseRetryAfter("soon", now)).toBeUndefined()
    expect(parseRetryAfter(null, now)).toBeUndefined()
  })
})

describe("the helpers every HTTP provider shares", () => {
  test("retryAfterMs: retry-after-ms wins, else retry-after in seconds; none when neither is a wait", () => {
    expect(retryAfterMs(new Headers({ "retry-after-ms": "250", "retry-after": "7" }))).toBe(250)
    expect(retryAfterMs(new Headers({ "retry-after-ms": "12.6" }))).toBe(13)
    expect(retryAfterMs(new Headers({ "retry-after-ms": "soon", "retry-after": "7" }))).toBe(7000)
    expect(retryAfterMs(new Headers({ "retry-after": "never" }))).toBeUndefined()
    expect(retryAfterMs(new Headers())).toBeUndefined()
  })

  test("byStatus: each status's class, whether it is retried, whether it pauses the run, and the wait it keeps", () => {
    const fields = (status: number) => {
      const e = byStatus(status, `HTTP ${status}: no`, 1500)
      return [e.errorClass, e.retryable, e.pause, e.retryAfterMs, e.status, e.message, e.code]
    }
    expect([429, 408, 409, 500, 503, 529, 401, 403, 404, 400, 422].map(fields)).toEqual([
      ["rate_limit", true, false, 1500, 429, "HTTP 429: no", "E_PROVIDER"],
      ["timeout", true, false, 1500, 408, "HTTP 408: no", "E_PROVIDER"],
      ["server", true, false, 1500, 409, "HTTP 409: no", "E_PROVIDER"],
      ["server", true, false, 1500, 500, "HTTP 500: no", "E_PROVIDER"],
      ["server", true, false, 1500, 503, "HTTP 503: no", "E_PROVIDER"],
      ["server", true, false, 1500, 529, "HTTP 529: no", "E_PROVIDER"],
      ["auth", false, true, undefined, 401, "HTTP 401: no", "E_PROVIDER"],
      ["auth", false, true, undefined, 403, "HTTP 403: no", "E_PROVIDER"],
      ["not_found", false, false, undefined, 404, "HTTP 404: no", "E_PROVIDER"],
      ["bad_request", false, false, undefined, 400, "HTTP 400: no", "E_PROVIDER"],
      ["bad_request", false, false, undefined, 422, "HTTP 422: no", "E_PROVIDER"],
    ])
    expect(byStatus(500, "x", undefined)).toBeInstanceOf(ProviderError)
  })

  test("rated: the limits a response reports go on its reply, or on the ProviderError it was read as", () => {
    const headers = new Headers({
      "x-ratelimit-limit-requests": "500",
      "x-ratelimit-remaining-requests": "499",
    })
    const rate = { requests: { limit: 500, remaining: 499, resetMs: undefined }, tokens: undefined }
    const usage = { input_tokens: 3, output_tokens: 1 }
    expect(rated(headers, () => ({ text: "ok", usage }))).toEqual({ text: "ok", usage, rate })
    // no rate-limit headers: the reply as it was, with no `rate` key
    expect(rated(new Headers(), () => ({ text: "ok", usage }))).toEqual({ text: "ok", usage })
    let thrown: unknown
    try {
      rated(headers, () => {
        throw byStatus(429, "HTTP 429: slow down", 7000)
      })
    } catch (e) {
      thrown = e
    }
    expect(thrown).toBeInstanceOf(ProviderError)
    expect((thrown as ProviderError).rate).toEqual(rate)
    // anything else is thrown as it is, untouched
    const other = new Error("not a provider's")
    expect(() =>
      rated(headers, () => {
        throw other
      }),
    ).toThrow(other)
  })

  test("spool/plugin exports every helper and error an outside provider needs", async () => {
    const api = await import("spool/plugin")
    expect([
      api.byStatus,
      api.retryAfterMs,
      api.parseRetryAfter,
      api.rated,
      api.fromHeaders,
      api.unanswered,
    ]).toEqual([byStatus, retryAfterMs, parseRetryAfter, rated, fromHeaders, unanswered])
    expect([api.save, api.stallWatch, api.announced]).toEqual([save, stallWatch, announced])
    expect([
      api.ProviderError,
      api.SourceError,
      api.SourceChangedError,
      api.StoreError,
      api.JobError,
    ]).toEqual([ProviderError, SourceError, SourceChangedError, StoreError, JobError])
  })
})
