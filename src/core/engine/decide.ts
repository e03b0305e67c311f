/**
 * How an attempt that came back settles its item: one rule for a direct call and a batch line alike (DESIGN §3).
 *
 * - An answer that passes every gate (JSON, the output schema) completes the item.
 * - An answer that fails a gate is an attempt like any other: tried again while attempts are left, then left for a
 *   person to review (needs_review), the answer kept as its output.
 * - An error is tried again while it is retryable and attempts are left; otherwise the item fails.
 *
 * What "again" means is the caller's: the runner waits out a backoff (retry_wait), a batch line goes back to be
 * packed (pending). Interruptions and pauses are the runner's too: they end no attempt of the item's own doing.
 */
import type { ErrorClass } from "../../plugins/api/errors.ts"
import type { Reply } from "../../plugins/api/define.ts"
import * as schemas from "../job/schema.ts"

export type Verdict = "completed" | "retry" | "failed" | "needs_review"

/** The verdict, and what the item and its attempt record with it. */
export interface Settled {
  verdict: Verdict
  output?: string
  errorClass?: ErrorClass
  error?: string
  status?: number
  inputTokens?: number
  outputTokens?: number
  cachedTokens?: number
  writeTokens?: number
}

/** An error as a provider classified it (a ProviderError, for a call or a batch line). */
export interface Failure {
  errorClass: ErrorClass
  message: string
  status?: number | undefined
  retryable: boolean
}

/** An answer: checked against the job's gates (`validate`: its output schema, when it has one). */
export function answer(
  reply: Reply,
  validate: ((value: unknown) => string | undefined) | undefined,
  attempt: number,
  maxAttempts: number,
): Settled {
  const judged = schemas.judge(reply, validate)
  if (judged.ok) return { verdict: "completed", output: judged.output, ...judged.usage }
  const verdict = attempt < maxAttempts ? "retry" : "needs_review"
  return { verdict, ...judged.usage, ...judged.failed }
}

/** An error the provider returned for the call or the line. */
export function error(e: Failure, attempt: number, maxAttempts: number): Settled {
  const verdict = e.retryable && attempt < maxAttempts ? "retry" : "failed"
  return { verdict, ...recorded(e) }
}

/** What an attempt records of an error: its class, message and HTTP status. */
export function recorded(e: Failure): { errorClass: ErrorClass; error: string; status?: number } {
  return { errorClass: e.errorClass, error: e.message, ...(e.status ? { status: e.status } : {}) }
}

/** The attempt's label in the ledger for a verdict. */
export function label(verdict: Verdict): "ok" | "retry" | "failed" | "needs_review" {
  return verdict === "completed" ? "ok" : verdict
}
