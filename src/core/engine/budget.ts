/**
 * The spend cap (`limits.max_cost_usd`): one rule for the realtime runner, batch packing and a batch run's realtime
 * tail. New work may start while what the run has spent, plus an estimate for every item already under way and for
 * each new one, stays within the cap:
 *
 *   room = floor((cap − spent − each × under way) / each)
 *
 * Only what one item is expected to cost (`each`) depends on the mode, because the two stop differently (README,
 * "max_cost_usd" and "Batch mode"):
 * - direct calls can stop after any one: each is the average cost of an attempt so far, at the realtime price. The
 *   overshoot is at most what the calls in flight cost beyond that.
 * - a batch cannot be stopped part-way once it is created: each is a quarter more than the most one item has cost so
 *   far (not the average: items later in an input are often longer, and a run's first items say little of its
 *   last), at the batch price.
 * Before any answer has come back, both take the first call's bound (`firstCall` of job/estimate.ts) at their price.
 */
import { JobError } from "../../plugins/api/errors.ts"
import { firstCall } from "../job/estimate.ts"
import type { Job } from "../job/job.ts"
import { cost, jobPrice, spentOf, type Price, type Tokens } from "../job/pricing.ts"
import type { Outcome, Summary } from "../ledger/types.ts"

/** A run's cap, and the model's price it is counted at. */
export interface Cap {
  usd: number
  price: Price
}

/** What the spend is read from: the ledger's totals (`reads.summary`). */
export type Spent = Pick<
  Summary,
  "attempts" | "inputTokens" | "outputTokens" | "cachedTokens" | "writeTokens" | "batch"
> & {
  counts: Pick<Summary["counts"], "queued" | "submitted">
}

/** An attempt's tokens, as `cost` prices them. */
export function tokensOf(
  o: Pick<Outcome, "inputTokens" | "outputTokens" | "cachedTokens" | "writeTokens">,
): Tokens {
  return {
    input_tokens: o.inputTokens ?? 0,
    output_tokens: o.outputTokens ?? 0,
    cached_input_tokens: o.cachedTokens ?? 0,
    cache_write_tokens: o.writeTokens ?? 0,
  }
}

/** A batch's items are each counted at this much of the most one item has cost so far. */
const BATCH_MARGIN = 1.25

/** A job's cap, or undefined without one. A cap needs a price: a model without one is refused (JobError). */
export function capOf(job: Job): Cap | undefined {
  const usd = job.limits.max_cost_usd
  if (usd === undefined) return undefined
  const price = jobPrice(job)
  if (!price)
    throw new JobError(
      "the job is not valid",
      [
        `limits.max_cost_usd: needs a price, and there is none for the model "${job.provider.model ?? job.provider.name}"`,
      ],
      "Give the model's prices in [pricing] (input and output, USD per million tokens).",
    )
  return { usd, price }
}

/** How many more items fit under the cap, with `underway` items already counted at `each`; never below 0. */
export function room(cap: Cap, spentUsd: number, each: number, underway: number): number {
  if (each <= 0) return Number.POSITIVE_INFINITY
  return Math.max(0, Math.floor((cap.usd - spentUsd - each * underway) / each))
}

/** Why a run paused at its cap: the message `spool status` and the exit show. */
export function reached(cap: Cap, spentUsd: number): string {
  return `the spend cap of $${cap.usd} is reached ($${spentUsd.toFixed(4)} spent)`
}

/** What one call is expected to cost before any answer has come back, at the realtime or the batch price. */
function first(cap: Cap, request: Job["request"], batch: boolean): number {
  return cost(cap.price, firstCall(request), batch)
}

/**
 * Batch packing: how many more items new batches may hold, and what the run has spent (every batch's, and a tail's
 * direct calls, from the ledger). Every item in a live batch (queued or submitted) is under way. Each is counted at a
 * quarter more than the most one attempt of the run has cost (`largest`, its tokens), at the batch price; before
 * any, at the first call's bound. While batches are live their estimate holds the room; once they end, their real
 * cost decides.
 */
export function batchRoom(
  cap: Cap,
  request: Job["request"],
  summary: Spent,
  largest: { input: number; output: number } | null,
): { room: number; spentUsd: number } {
  const spentUsd = spentOf(cap.price, summary)
  const each = largest
    ? cost(cap.price, { input_tokens: largest.input, output_tokens: largest.output }, true) * BATCH_MARGIN
    : first(cap, request, true)
  const underway = summary.counts.queued + summary.counts.submitted
  return { room: room(cap, spentUsd, each, underway), spentUsd }
}

/** What a run's attempts so far would have cost as direct calls: every token at the realtime price. */
function worthOf(price: Price, s: Spent): number {
  return cost(price, {
    input_tokens: s.inputTokens,
    output_tokens: s.outputTokens,
    cached_input_tokens: s.cachedTokens,
    cache_write_tokens: s.writeTokens,
  })
}

/**
 * Direct calls: what the run has spent. It starts from what the run had spent when it began (batches included),
 * adds this process's attempts as they are committed, and is synced from the ledger now and then (`sync`), so that
 * with several workers on one run each counts the others' spend too (README, "Many machines").
 */
export class Budget {
  spentUsd: number
  /** Attempts that have ended, before this process and in it: with `worthUsd`, the average cost of one. */
  attempts: number
  /**
   * What those attempts' tokens cost at the realtime price, batch ones too: a direct call is expected to cost the
   * average of this, not of `spentUsd`, where a batch's items count at half (a batch run's tail would then start
   * twice the calls its cap has room for).
   */
  private worthUsd: number
  private readonly first: number

  constructor(
    readonly cap: Cap,
    request: Job["request"],
    start: Spent,
  ) {
    this.spentUsd = spentOf(cap.price, start)
    this.worthUsd = worthOf(cap.price, start)
    this.attempts = start.attempts
    this.first = first(cap, request, false)
  }

  /**
   * Takes the run's spend as the ledger has it now (every worker's committed attempts): on a store several workers
   * share, the cap is the run's, not one worker's. Between two syncs `add` counts this process's own commits.
   */
  sync(spent: Spent): void {
    this.spentUsd = spentOf(this.cap.price, spent)
    this.worthUsd = worthOf(this.cap.price, spent)
    this.attempts = spent.attempts
  }

  /** Counts an attempt that ended, with the tokens it used. */
  add(tokens: Tokens): void {
    this.attempts++
    const usd = cost(this.cap.price, tokens)
    this.spentUsd += usd
    this.worthUsd += usd
  }

  /** How many more calls may start, with `underway` calls in flight or claimed. */
  room(underway: number): number {
    const each = this.attempts > 0 ? this.worthUsd / this.attempts : this.first
    return room(this.cap, this.spentUsd, each, underway)
  }

  reached(): string {
    return reached(this.cap, this.spentUsd)
  }
}
