/** The item state machine of DESIGN §3: the one place that says which transitions exist. */
import { TransitionError } from "../base/errors.ts"

export const STATES = [
  "pending",
  "running",
  "retry_wait",
  "queued",
  "submitted",
  "completed",
  "failed",
  "needs_review",
  "rejected",
  "skipped",
] as const

export type State = (typeof STATES)[number]

/** Every legal edge, and why it exists. Anything else is a bug. */
const EDGES: Record<State, readonly State[]> = {
  // claim for a direct call, or for a provider batch; a response-cache hit, completed with no call
  pending: ["running", "queued", "completed"],
  // ok; retryable error; permanent error or attempts used up; schema failure after max attempts;
  // lease expired, interrupted, or the run paused before the call could finish
  running: ["completed", "retry_wait", "failed", "needs_review", "pending"],
  // backoff elapsed and claimed again (for a direct call, or for a batch); `spool retry` or a pause folding waits back
  retry_wait: ["running", "queued", "pending"],
  // batch created at the provider; batch never reached it; no request could be made of it (template, size)
  queued: ["submitted", "pending", "failed"],
  // line ok; line without a result; line errored (retryable / permanent / invalid output)
  submitted: ["completed", "pending", "retry_wait", "failed", "needs_review"],
  // terminal until `spool retry`
  completed: [],
  failed: ["pending"],
  // `spool retry --state needs_review`; a person's decision (`spool review`): approved or edited, or rejected
  needs_review: ["pending", "completed", "rejected"],
  // a person rejected the answer: terminal until `spool retry --state rejected`
  rejected: ["pending"],
  // a pipeline step not run for its row: its `when` was false, or a step it needs did not complete (made so; final)
  skipped: [],
}

export function allowed(from: State, to: State): boolean {
  return EDGES[from].includes(to)
}

/** Throws unless `from → to` is an edge of the state machine. */
export function check(from: State, to: State): void {
  if (!allowed(from, to)) throw new TransitionError(`illegal item transition ${from} → ${to}`)
}

/** States an item ends in (until `spool retry`): what the completions chart and the progress counts count. */
export function isFinal(state: State): boolean {
  return (
    state === "completed" ||
    state === "failed" ||
    state === "needs_review" ||
    state === "rejected" ||
    state === "skipped"
  )
}

export function isState(value: string): value is State {
  return (STATES as readonly string[]).includes(value)
}

export const RUN_STATES = [
  "running",
  "paused",
  "cancelling",
  "completed",
  "completed_with_failures",
  "cancelled",
] as const
export type RunState = (typeof RUN_STATES)[number]
