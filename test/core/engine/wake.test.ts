import { describe, expect, test } from "bun:test"
import { Waker } from "../../../src/core/engine/wake.ts"

describe("the waker", () => {
  test("a notify ends the sleep in progress", async () => {
    const waker = new Waker()
    const started = performance.now()
    const sleeping = waker.sleep(5_000)
    setTimeout(() => waker.notify(), 20)
    await sleeping
    expect(performance.now() - started).toBeLessThan(1_000)
  })

  test("sticky: a notify that comes while the loop is awake ends its next sleep at once, and only that one", async () => {
    const waker = new Waker(true)
    waker.notify()
    const started = performance.now()
    await waker.sleep(5_000)
    expect(performance.now() - started).toBeLessThan(50)
    await waker.sleep(60)
    expect(performance.now() - started).toBeGreaterThanOrEqual(55)
  })

  test("not sticky: a notify while the loop is awake is not kept", async () => {
    const waker = new Waker()
    waker.notify()
    const started = performance.now()
    await waker.sleep(60)
    expect(performance.now() - started).toBeGreaterThanOrEqual(55)
  })
})
