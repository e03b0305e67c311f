/**
 * How many tokens a request is taken to use before anything is called: one heuristic for `spool estimate`, the
 * rate limiter's gate and the spend cap's first guess.
 *
 * Tokens are an ESTIMATE, not a tokenizer's count (no tokenizer is bundled): each text counts
 * ceil(UTF-8 bytes / 4) tokens — about right for English with OpenAI's and Anthropic's tokenizers, low for code
 * and for non-Latin scripts — and each request adds 3 tokens per message (system, user) for the chat framing and
 * 3 more that prime the reply (the counts OpenAI documents for its chat models). Output tokens are max_tokens per
 * request, an upper bound.
 */
import type { Job } from "./job.ts"

/** Tokens per chat message (role and separators) and per request (the reply's priming). */
export const PER_MESSAGE = 3
export const PER_REQUEST = 3

export const HEURISTIC = `ceil(UTF-8 bytes / 4) per text + ${PER_MESSAGE} per message + ${PER_REQUEST} per request`

/** The row assumed before any answer has come back, in bytes: a short record of a few fields. */
export const ROW_BYTES = 400

/** The answer assumed without max_tokens, in tokens, where a bound is needed (the spend cap's first guess). */
export const ANSWER_TOKENS = 1000

/** The estimated tokens of a text: a quarter of its UTF-8 bytes, rounded up. */
export function tokens(text: string): number {
  // Buffer.byteLength counts as TextEncoder would (a lone surrogate is 3 bytes), without making the bytes
  return Math.ceil(Buffer.byteLength(text, "utf8") / 4)
}

/** A request's input tokens apart from its prompt: the system text, and the framing of its messages and reply. */
export function framing(system: string | undefined): number {
  return (system ? tokens(system) + PER_MESSAGE : 0) + PER_MESSAGE + PER_REQUEST
}

/**
 * What every request of a job uses whatever its row: the framing and the prompt template. A request is this plus
 * its row's tokens (the runner counts the row's JSON, which is what fills the template).
 */
export function baseTokens(request: Pick<Job["request"], "system" | "prompt">): number {
  return framing(request.system) + tokens(request.prompt)
}

/**
 * One call, before any answer has come back to tell better: the base tokens and a row of ROW_BYTES in, max_tokens
 * (or ANSWER_TOKENS) out.
 */
export function firstCall(request: Pick<Job["request"], "system" | "prompt" | "max_tokens">): {
  input_tokens: number
  output_tokens: number
} {
  return {
    input_tokens: baseTokens(request) + Math.ceil(ROW_BYTES / 4),
    output_tokens: request.max_tokens ?? ANSWER_TOKENS,
  }
}
