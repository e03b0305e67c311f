import { describe, expect, test } from "bun:test"
import * as retry from "../../../src/core/engine/retry.ts"

describe("the retry policy", () => {
  test("full jitter stays within [0, base·2^(n-1)] and reaches the cap", () => {
    const policy = { baseMs: 100, capMs: 1000 }
    expect(retry.backoff(1, policy, () => 0.999999)).toBe(100)
    expect(retry.backoff(2, policy, () => 0.999999)).toBe(200)
    expect(retry.backoff(4, policy, () => 0.999999)).toBe(800)
    expect(retry.backoff(5, policy, () => 0.999999)).toBe(1000)
    expect(retry.backoff(30, policy, () => 0.5)).toBe(500)
    expect(retry.backoff(3, policy, () => 0)).toBe(0)
  })

  test("the provider's Retry-After wins over backoff, capped at 15 minutes", () => {
    expect(retry.delay(9, 1234)).toBe(1234)
    expect(retry.delay(1, 3_600_000)).toBe(900_000)
    const d = retry.delay(3, undefined, { baseMs: 10, capMs: 40 })
    expect(d).toBeGreaterThanOrEqual(0)
    expect(d).toBeLessThanOrEqual(40)
  })
})

describe("an unavailable flex call", () => {
  test("waits the provider's word when it gave one, else the longest backoff with jitter from half of it", () => {
    const policy = { baseMs: 10, capMs: 60_000 }
    expect(retry.askedWait({ errorClass: "unavailable", retryAfterMs: 7000 }, policy)).toBe(7000)
    expect(retry.askedWait({ errorClass: "unavailable" }, policy, () => 0)).toBe(30_000)
    expect(retry.askedWait({ errorClass: "unavailable" }, policy, () => 1)).toBe(60_000)
    // any other class: the provider's word, or nothing (the backoff decides)
    expect(retry.askedWait({ errorClass: "rate_limit", retryAfterMs: 5 }, policy)).toBe(5)
    expect(retry.askedWait({ errorClass: "server" }, policy)).toBeUndefined()
  })
})
