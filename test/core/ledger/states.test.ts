import { describe, expect, test } from "bun:test"
import { TransitionError } from "../../../src/core/base/errors.ts"
import * as states from "../../../src/core/ledger/states.ts"
import type { State } from "../../../src/core/ledger/states.ts"
import { LEGAL } from "../../lib/states.ts"

/** The item states of DESIGN §3, written out here so that a state added to or dropped from states.ts is noticed. */
const STATES: State[] = [
  "pending",
  "running",
  "retry_wait",
  "queued",
  "submitted",
  "completed",
  "failed",
  "needs_review",
  "rejected",
  // a pipeline step not run for its row (docs/PIPELINES.md): made so, with no edge in or out
  "skipped",
]

describe("the item state machine", () => {
  for (const [from, to] of LEGAL) {
    test(`allows ${from} → ${to}`, () => {
      expect(states.allowed(from, to)).toBe(true)
      expect(() => states.check(from, to)).not.toThrow()
    })
  }

  const legal = new Set(LEGAL.map(([a, b]) => `${a} → ${b}`))
  const illegal = STATES.flatMap((from) =>
    STATES.filter((to) => !legal.has(`${from} → ${to}`)).map((to) => [from, to] as const),
  )

  test("has exactly the legal edges listed, and every other pair is illegal", () => {
    expect([...states.STATES]).toEqual(STATES)
    // every pair of states asked of states.ts, against the list above
    const allowed = STATES.flatMap((from) =>
      STATES.filter((to) => states.allowed(from, to)).map((to) => `${from} → ${to}`),
    )
    expect(allowed.sort()).toEqual([...legal].sort())
    expect(LEGAL.length).toBe(24)
    expect(illegal.length).toBe(100 - 24)
  })

  for (const [from, to] of illegal) {
    test(`refuses ${from} → ${to} with a TransitionError`, () => {
      expect(states.allowed(from, to)).toBe(false)
      expect(() => states.check(from, to)).toThrow(TransitionError)
      expect(() => states.check(from, to)).toThrow(`illegal item transition ${from} → ${to}`)
    })
  }

  test("completed is terminal: nothing leaves it", () => {
    expect(states.STATES.filter((to) => states.allowed("completed", to))).toEqual([])
  })
})
