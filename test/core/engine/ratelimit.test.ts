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

describe("the job's limits pooled in the store for all the run's workers", () => {
  test("a pooled bucket holds only what was granted, never refills by time, and says what the next calls lack", () => {
    let now = 0
    const limiter = new Limiter({ rpm: 600, tpm: 60_000, concurrency: 8, pooled: true, now: () => now })
    expect(limiter.state).toMatchObject({ rpm: 600, tpm: 60_000 })
    // empty at first: a call waits for a grant, however long ago the limiter was made
    now += 3_600_000
    expect(limiter.take(100)).toBe(false)
    expect(limiter.wait(100)).toBe(Number.POSITIVE_INFINITY)
    expect(limiter.lack(3, 300)).toEqual({ rpm: 3, tpm: 300 })
    limiter.grant("rpm", 2)
    limiter.grant("tpm", 250)
    expect(limiter.lack(3, 300)).toEqual({ rpm: 1, tpm: 50 })
    expect(limiter.take(100)).toBe(true)
    expect(limiter.take(100)).toBe(true)
    // the grant is spent: the third lacks a request and 50 tokens
    expect(limiter.take(100)).toBe(false)
    expect(limiter.lack(1, 100)).toEqual({ rpm: 1, tpm: 50 })
    // a call that used more than its estimate is a debt the next grant pays first
    limiter.settle(100, 180)
    expect(limiter.lack(1, 100)).toEqual({ rpm: 1, tpm: 130 })
    // no more than the limit is ever lacked: a call bigger than a minute's tokens waits for a full bucket
    expect(limiter.lack(1, 90_000).tpm).toBe(60_030)
  })

  test("a pooled limit also follows the provider's own count: a grant never lets out more than it says is left", () => {
    let now = 0
    const limiter = new Limiter({ rpm: 600, tpm: 0, concurrency: 64, pooled: true, now: () => now })
    limiter.grant("rpm", 64)
    limiter.observe({ requests: { limit: 6000, remaining: 3 } })
    // the job's limit is still the one in force
    expect(limiter.state.rpm).toBe(600)
    expect([limiter.take(1), limiter.take(1), limiter.take(1), limiter.take(1)]).toEqual([
      true,
      true,
      true,
      false,
    ])
    // the provider's bucket refills at its own 100 a second; the grant still holds 61
    expect(limiter.wait(1)).toBe(10)
    now += 10
    expect(limiter.take(1)).toBe(true)
    expect(limiter.lack(61, 0).rpm).toBe(1)
  })

  test("learned limits stay local in a pooled limiter: they are the provider's count of every worker's calls", () => {
    let now = 0
    const learned = new Limiter({ rpm: 0, tpm: 0, concurrency: 8, pooled: true, now: () => now })
    learned.observe({ requests: { limit: 500, remaining: 2 } })
    expect(learned.lack(5, 0)).toEqual({ rpm: 0, tpm: 0 })
    learned.grant("rpm", 100)
    expect(learned.take(1)).toBe(true)
    expect(learned.take(1)).toBe(true)
    expect(learned.take(1)).toBe(false)
    // refilled by time, as the provider's own bucket is: 500 a minute, one every 120 ms
    expect(learned.wait(1)).toBe(120)
    now += 120
    expect(learned.take(1)).toBe(true)
  })
})
