/** The token heuristic shared by `spool estimate`, the rate limiter's gate and the spend cap's first guess. */
import { describe, expect, test } from "bun:test"
import { baseTokens, firstCall, framing, tokens } from "../../../src/core/job/estimate.ts"

describe("estimate", () => {
  test("tokens are a quarter of the UTF-8 bytes, rounded up", () => {
    expect([tokens(""), tokens("a"), tokens("abcd"), tokens("abcde"), tokens("é")]).toEqual([0, 1, 1, 2, 1])
  })

  test("a lone surrogate counts as the 3 bytes of its replacement, as TextEncoder encodes it", () => {
    expect(new TextEncoder().encode("\ud800").length).toBe(3)
    expect([tokens("\ud800"), tokens("ab\ud800"), tokens("abc\ud800")]).toEqual([1, 2, 2])
  })

  test("framing: 3 tokens for the user message and 3 for the reply, and the system text with its own 3", () => {
    expect(framing(undefined)).toBe(6)
    expect(framing("")).toBe(6)
    // "abcdefgh": 8 bytes → 2 tokens, + 3 for its message
    expect(framing("abcdefgh")).toBe(11)
  })

  test("a job's base tokens are its framing and its prompt template's tokens", () => {
    // "Q: {{q}}": 8 bytes → 2
    expect(baseTokens({ system: "abcdefgh", prompt: "Q: {{q}}" })).toBe(13)
    expect(baseTokens({ prompt: "Q: {{q}}" })).toBe(8)
  })

  test("the first call: the base tokens and a 400-byte row in, max_tokens (or 1,000) out", () => {
    expect(firstCall({ system: "abcdefgh", prompt: "Q: {{q}}", max_tokens: 50 })).toEqual({
      input_tokens: 13 + 100,
      output_tokens: 50,
    })
    expect(firstCall({ prompt: "Q: {{q}}" })).toEqual({ input_tokens: 8 + 100, output_tokens: 1000 })
  })
})
