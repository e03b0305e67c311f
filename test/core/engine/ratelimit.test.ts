import { describe, expect, test } from "bun:test"
import { Limiter } from "../../../src/core/engine/ratelimit.ts"

function clock(start = 1_000_000) {
  let t = start
  return { now: () => t, advance: (ms: number) => (t += ms) }
}

describe("rate limits", () => {
  test("a configured rpm is a bucket: a minute's worth at once, then one per 60/rpm seconds", () => {
    const c = clock()
    const limiter = new Limiter({ rpm: 60, tpm: 0, concurrency: 8, now: c.now })
    let taken = 0
    while (limiter.take(1)) taken++
    expect(taken).toBe(60)
    expect(limiter.wait(1)).toBe(1000)
    c.advance(999)
    expect(limiter.take(1)).toBe(false)
    c.advance(1)
    expect(limiter.take(1)).toBe(true)
  })

  test("tokens per minute: estimates are taken before a call and corrected by its usage after", () => {
    const c = clock()
    const limiter = new Limiter({ rpm: 0, tpm: 1000, concurrency: 8, now: c.now })
    expect(limiter.take(600)).toBe(true)
    expect(limiter.take(600)).toBe(false)
    expect(limiter.wait(600)).toBe(12_000) // 200 missing at 1000 a minute
    limiter.settle(600, 100) // it used 100, not 600
    expect(limiter.take(600)).toBe(true)
  })

  test("with rpm and tpm at 0, the limits are learned from the headers, and the server's remaining count wins", () => {
    const c = clock()
    const limiter = new Limiter({ rpm: 0, tpm: 0, concurrency: 8, now: c.now })
    expect(limiter.state.concurrency).toBe(1)
    for (let i = 0; i < 1000; i++) expect(limiter.take(50)).toBe(true) // nothing known yet: no limit
    limiter.observe({
      requests: { limit: 120, remaining: 0 },
      tokens: { limit: 1_000_000, remaining: 900_000 },
    })
    expect(limiter.state).toEqual({ rpm: 120, tpm: 1_000_000, concurrency: 8 })
    expect(limiter.wait(50)).toBe(500)
    c.advance(500)
    expect(limiter.take(50)).toBe(true)
    expect(limiter.take(50)).toBe(false)
  })

  test("a configured limit is not replaced by a learned one", () => {
    const limiter = new Limiter({ rpm: 10, tpm: 0, concurrency: 8, now: clock().now })
    limiter.observe({ requests: { limit: 10_000, remaining: 9_999 } })
    expect(limiter.state.rpm).toBe(10)
  })

  test("limits to learn: one call alone until the first answer (with or without headers) says what they are", () => {
    const learning = new Limiter({ rpm: 0, tpm: 0, concurrency: 64, now: clock().now })
    expect(learning.state.concurrency).toBe(1)
    learning.observe(undefined) // an answer with no rate-limit headers: nothing to learn, so no limit
    expect(learning.state.concurrency).toBe(64)
    expect(new Limiter({ rpm: 600, tpm: 90_000, concurrency: 64 }).state.concurrency).toBe(64)
  })

  test("429s: halve concurrency at most once a second, win it back gradually", () => {
    const c = clock()
    const limiter = new Limiter({ rpm: 0, tpm: 0, concurrency: 64, now: c.now })
    limiter.observe(undefined)
    limiter.limited()
    limiter.limited()
    limiter.limited()
    expect(limiter.state.concurrency).toBe(32)
    c.advance(1000)
    limiter.limited()
    expect(limiter.state.concurrency).toBe(16)
    for (let i = 0; i < 16; i++) limiter.succeeded()
    expect(Math.floor(limiter.state.concurrency)).toBe(16) // about one more per round of 16 calls
    let rounds = 0
    while (limiter.state.concurrency < 64) {
      limiter.succeeded()
      rounds++
    }
    expect(rounds).toBeGreaterThan(1000) // back to 64 only after many successes
    expect(limiter.state.concurrency).toBe(64)
  })
})

describe("the job's limits shared among workers", () => {
  test("each of n workers takes 1/n of the job's rpm and tpm; learned limits are left as the provider gives them", () => {
    let now = 0
    const limiter = new Limiter({ rpm: 600, tpm: 60_000, concurrency: 8, now: () => now })
    limiter.share(3)
    expect(limiter.state).toMatchObject({ rpm: 200, tpm: 20_000 })
    // a full bucket holds no more than the share: 200 requests now, the 201st waits 60000 / 200 ms
    for (let i = 0; i < 200; i++) expect(limiter.take(1)).toBe(true)
    expect(limiter.take(1)).toBe(false)
    expect(limiter.wait(1)).toBe(300)
    now += 300
    expect(limiter.take(1)).toBe(true)
    limiter.share(1)
    expect(limiter.state).toMatchObject({ rpm: 600, tpm: 60_000 })
    const learned = new Limiter({ rpm: 0, tpm: 0, concurrency: 8, now: () => now })
    learned.observe({ requests: { limit: 500, remaining: 500 } })
    learned.share(4)
    expect(learned.state.rpm).toBe(500)
  })
})
