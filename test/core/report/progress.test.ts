/** The live progress line: when it is written, and when it dares a rate and an ETA. */
import { describe, expect, test } from "bun:test"
import { progress, progressLine, type Ticker } from "../../../src/core/report/report.ts"

const START = 1_000_000

/** A run of 1,000 items, 100 of them done before this process started at START. */
const ticker = (done: number, more: Partial<Ticker> = {}): Ticker => ({
  total: 1000,
  done,
  failed: 0,
  review: 0,
  startedAt: START,
  doneAtStart: 100,
  ...more,
})

/** A stream that keeps what is written, and a clock the test moves. */
function place(tty: boolean) {
  const written: string[] = []
  let now = START
  const p = progress({ write: (text: string) => written.push(text) }, tty, () => now)
  return {
    written,
    at(ms: number, t: Ticker) {
      now = START + ms
      p.tick(t)
    },
    end(ms: number) {
      now = START + ms
      p.end()
    },
  }
}

describe("progress lines", () => {
  test("no rate or ETA until 5 s have passed and 3 items have ended in this process", () => {
    // one item in the first second: no ETA from it
    expect(progressLine(ticker(101), START + 900)).toBe("101/1,000 done · 0 failed · measuring the rate")
    // many items, but too soon
    expect(progressLine(ticker(160), START + 4_999)).toBe("160/1,000 done · 0 failed · measuring the rate")
    // long enough, but too few items
    expect(progressLine(ticker(102), START + 60_000)).toBe("102/1,000 done · 0 failed · measuring the rate")
    // both: 50 items in 5 s, 850 left at 10/s
    expect(progressLine(ticker(150), START + 5_000)).toBe("150/1,000 done · 0 failed · 10.0/s · ETA 1m 25s")
    expect(progressLine(ticker(400, { failed: 3, review: 2 }), START + 60_000)).toBe(
      "400/1,000 done · 3 failed · 2 need review · 5.0/s · ETA 2m 0s",
    )
  })

  test("once nothing is left, no ETA: the rate when it is known, else the counts alone", () => {
    expect(progressLine(ticker(1000), START + 10_000)).toBe("1,000/1,000 done · 0 failed · 90.0/s")
    expect(progressLine(ticker(1000, { doneAtStart: 999 }), START + 10_000)).toBe(
      "1,000/1,000 done · 0 failed",
    )
    expect(progressLine(ticker(12, { total: 12, doneAtStart: 0 }), START + 800)).toBe("12/12 done · 0 failed")
  })

  test("off a terminal: a plain line at the first tick, then one every 5 s at most, with the counts", () => {
    const p = place(false)
    p.at(0, ticker(100))
    p.at(1_000, ticker(110))
    p.at(4_999, ticker(140))
    p.at(5_000, ticker(150))
    p.at(9_000, ticker(190))
    p.at(10_000, ticker(200))
    p.end(10_500)
    expect(p.written).toEqual([
      "100/1,000 done · 0 failed · measuring the rate\n",
      "150/1,000 done · 0 failed · 10.0/s · ETA 1m 25s\n",
      "200/1,000 done · 0 failed · 10.0/s · ETA 1m 20s\n",
    ])
  })

  test("on a terminal: one line redrawn in place at most every 200 ms, ended with the last counts", () => {
    const p = place(true)
    p.at(0, ticker(100))
    p.at(150, ticker(101))
    p.at(200, ticker(102))
    p.at(6_000, ticker(160))
    p.at(6_100, ticker(161))
    p.end(6_200)
    expect(p.written).toEqual([
      "\r\x1b[K100/1,000 done · 0 failed · measuring the rate",
      "\r\x1b[K102/1,000 done · 0 failed · measuring the rate",
      "\r\x1b[K160/1,000 done · 0 failed · 10.0/s · ETA 1m 24s",
      "\r\x1b[K161/1,000 done · 0 failed · 9.8/s · ETA 1m 25s\n",
    ])
  })
})
