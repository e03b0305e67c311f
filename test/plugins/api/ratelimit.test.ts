import { describe, expect, test } from "bun:test"
import { duration, fromHeaders } from "../../../src/plugins/api/ratelimit.ts"

describe("rate limits as a response reports them", () => {
  test("OpenAI's reset durations", () => {
    expect(duration("1s")).toBe(1000)
    expect(duration("6m0s")).toBe(360_000)
    expect(duration("120ms")).toBe(120)
    expect(duration("1h2m3.5s")).toBe(3_723_500)
    expect(duration("0.5s")).toBe(500)
    expect(duration("soon")).toBeUndefined()
    expect(duration("5s later")).toBeUndefined()
  })

  test("headers: OpenAI's x-ratelimit-*, Anthropic's anthropic-ratelimit-*, none", () => {
    const now = Date.parse("2026-11-27T10:00:00Z")
    expect(
      fromHeaders(
        new Headers({
          "x-ratelimit-limit-requests": "500",
          "x-ratelimit-remaining-requests": "499",
          "x-ratelimit-reset-requests": "120ms",
          "x-ratelimit-limit-tokens": "200000",
          "x-ratelimit-remaining-tokens": "199900",
          "x-ratelimit-reset-tokens": "30ms",
        }),
        now,
      ),
    ).toEqual({
      requests: { limit: 500, remaining: 499, resetMs: 120 },
      tokens: { limit: 200_000, remaining: 199_900, resetMs: 30 },
    })
    expect(
      fromHeaders(
        new Headers({
          "anthropic-ratelimit-requests-limit": "50",
          "anthropic-ratelimit-requests-remaining": "49",
          "anthropic-ratelimit-requests-reset": "2026-11-27T10:00:01Z",
          "anthropic-ratelimit-input-tokens-limit": "30000",
          "anthropic-ratelimit-input-tokens-remaining": "29000",
          "anthropic-ratelimit-input-tokens-reset": "2026-11-27T10:00:02Z",
        }),
        now,
      ),
    ).toEqual({
      requests: { limit: 50, remaining: 49, resetMs: 1000 },
      tokens: { limit: 30_000, remaining: 29_000, resetMs: 2000 },
    })
    expect(fromHeaders(new Headers({ "content-type": "application/json" }))).toBeUndefined()
  })
})
