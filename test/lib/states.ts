/** The item state machine of DESIGN §3 as the tests hold it: written out by hand, never read from states.ts. */
import type { State } from "../../src/core/ledger/states.ts"

/**
 * The item state machine's legal edges (DESIGN §3), with the batch and retry edges docs/ARCHITECTURE.md
 * describes; written out here, never read from states.ts, so that states.ts (states.test.ts) and every ledger driver
 * (ledger-contract.ts) are held to the design: either fails if states.ts gains or loses an edge.
 */
export const LEGAL: readonly (readonly [State, State])[] = [
  ["pending", "running"],
  ["pending", "queued"],
  // a response-cache hit: completed with no call (README, "Cache")
  ["pending", "completed"],
  ["running", "completed"],
  ["running", "retry_wait"],
  ["running", "failed"],
  ["running", "needs_review"],
  ["running", "pending"],
  ["retry_wait", "running"],
  ["retry_wait", "pending"],
  ["retry_wait", "queued"],
  ["queued", "submitted"],
  ["queued", "pending"],
  ["queued", "failed"],
  ["submitted", "completed"],
  ["submitted", "pending"],
  ["submitted", "retry_wait"],
  ["submitted", "failed"],
  ["submitted", "needs_review"],
  ["failed", "pending"],
  ["needs_review", "pending"],
  // a person's decision (README, "Review"): approved or edited, or rejected; a rejected item retried
  ["needs_review", "completed"],
  ["needs_review", "rejected"],
  ["rejected", "pending"],
]
