/**
 * What both drivers make of the rows they read: a run's job and an input's checkpoint, JSON checked with valibot
 * where it is read back (a run's job decoded once per text), and the empty counters. Driver-free: no SQL here.
 */
import * as v from "valibot"
import { StoreError } from "../../plugins/api/errors.ts"
import { StoredJobSchema, type Job } from "../job/job.ts"
import type { Paid } from "../job/pricing.ts"
import type { Decision } from "./ledger.ts"
import { check, STATES, type State } from "./states.ts"
import { PROGRESS_BUCKET_MS, type Input, type Run, type Summary } from "./types.ts"

/** A run as its row holds it: the job as JSON text. */
export type RunRow = Omit<Run, "job"> & { job: string }
/** An input as its row holds it: the checkpoint as JSON text. */
export type InputRow = Omit<Input, "checkpoint"> & { checkpoint: string | null }

const CheckpointSchema = v.record(v.string(), v.union([v.string(), v.number(), v.boolean(), v.null()]))

/** JSON the store holds, checked with `schema`; what does not decode is refused naming the store and the row. */
export function decode<S extends v.GenericSchema>(
  schema: S,
  text: string,
  what: string,
  store: string,
): v.InferOutput<S> {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (cause) {
    throw unreadable(what, store, (cause as Error).message, cause)
  }
  const parsed = v.safeParse(schema, value)
  if (parsed.success) return parsed.output
  throw unreadable(what, store, v.summarize(parsed.issues).replace(/\n/g, "; "))
}

function unreadable(what: string, store: string, why: string, cause?: unknown): StoreError {
  return new StoreError(
    `the store ${store} holds ${what} that this spool cannot read: ${why}`,
    "It was written by another program, or by hand. Restore the store from a backup, or start the run afresh with --new-run.",
    cause === undefined ? undefined : { cause },
  )
}

/**
 * Runs and inputs from their rows, errors naming `store` (a file, or a URL with its password masked). A run is read
 * often (a runner looks every 500 ms) and its job rarely changes: each run's job is decoded once per text.
 */
export class RowDecoder {
  private readonly jobs = new Map<number, { text: string; job: Job }>()

  constructor(private readonly store: string) {}

  run(row: RunRow): Run {
    // null for a run that is no pipeline's step, and never undefined, even from a row without the columns
    const pipeline = { parent: row.parent ?? null, step: row.step ?? null }
    const known = this.jobs.get(row.id)
    if (known?.text === row.job) return { ...row, ...pipeline, job: known.job }
    const job: Job = decode(StoredJobSchema, row.job, `a job (run ${row.id}, "${row.name}")`, this.store)
    this.jobs.set(row.id, { text: row.job, job })
    return { ...row, ...pipeline, job }
  }

  input(row: InputRow): Input {
    const checkpoint =
      row.checkpoint === null
        ? undefined
        : decode(CheckpointSchema, row.checkpoint, `a checkpoint (input ${row.path})`, this.store)
    return { ...row, checkpoint }
  }
}

/**
 * The sums a `tallies` row keeps beside its count: attempts, and tokens (the batch-priced part apart; the tokens
 * written to the provider's prompt cache, migration 13, beside the cached ones).
 */
export type Tally = Paid & { attempts: number; cache_write_tokens: number; batch_write_tokens: number }

export const ZERO_TALLY = (): Tally => ({
  attempts: 0,
  input_tokens: 0,
  output_tokens: 0,
  cached_input_tokens: 0,
  cache_write_tokens: 0,
  batch_input_tokens: 0,
  batch_output_tokens: 0,
  batch_cached_tokens: 0,
  batch_write_tokens: 0,
})

/**
 * The tallies rows one statement's moves add to (`moved`: the change of each state's count; `added`: what it added to
 * their attempts and tokens, counted on the first state named): a state moved by 0 is left out, but for the first.
 * Both drivers count the batch path and ingest so (see sqlite/schema.ts, migration 4).
 */
export function shifts(
  moved: Partial<Record<State, number>>,
  added: Partial<Tally> = {},
): { state: string; n: number; sum: Tally }[] {
  return Object.entries(moved).flatMap(([state, n], i) =>
    n === 0 && i > 0 ? [] : [{ state, n, sum: { ...ZERO_TALLY(), ...(i === 0 ? added : {}) } }],
  )
}

export const ZERO_COUNTS = (): Record<State, number> =>
  Object.fromEntries(STATES.map((s) => [s, 0])) as Record<State, number>

/** What a driver reads for a run's summary, beside its tallies: the rest is the same arithmetic in both. */
export interface SummaryParts {
  counts: Record<State, number>
  sum: Tally
  errors: Summary["errors"]
  problems: Summary["problems"]
  firstStarted: number | null
  lastEnded: number | null
  /** Items completed in the progress buckets from `since` on. */
  recent: number
  /** The first progress bucket counted (a bucket number, of PROGRESS_BUCKET_MS). */
  since: number
  now: number
  cache: Summary["cache"]
  /** The run's priming calls: their tokens (of the answered ones) go into the totals too. */
  primes: Summary["primes"]
}

/** A run's summary from what a driver read (reads.summary of either driver). */
export function summaryOf(p: SummaryParts): Summary {
  const { counts, sum, primes } = p
  return {
    counts,
    total: Object.values(counts).reduce((a, b) => a + b, 0),
    attempts: sum.attempts,
    // an answered priming call is paid at the full price: in the totals (so in spend and the cap), not in `batch`
    inputTokens: sum.input_tokens + primes.inputTokens,
    outputTokens: sum.output_tokens + primes.outputTokens,
    cachedTokens: sum.cached_input_tokens + primes.cachedTokens,
    writeTokens: sum.cache_write_tokens + primes.writeTokens,
    batch: {
      inputTokens: sum.batch_input_tokens,
      outputTokens: sum.batch_output_tokens,
      cachedTokens: sum.batch_cached_tokens,
      writeTokens: sum.batch_write_tokens,
    },
    primes,
    errors: p.errors,
    problems: p.problems,
    firstStarted: p.firstStarted,
    lastEnded: p.lastEnded,
    recentCompleted: p.recent,
    // the buckets summed cover from the start of the first one (or of the run's first attempt, if later) to now
    recentWindowMs: Math.max(1000, p.now - Math.max(p.since * PROGRESS_BUCKET_MS, p.firstStarted ?? 0)),
    cache: p.cache,
  }
}

/**
 * What a review decision makes of an item left for review whose answer is `output` (`Reviews.decide`): approved or
 * edited, it is completed with the answer (an edit's replacing it); rejected, it keeps the answer, the reason its error.
 */
export function decided(
  d: Pick<Decision, "decision" | "output" | "reason">,
  output: string | null,
): { to: "completed" | "rejected"; output: string | null; error: string | null } {
  const to = d.decision === "reject" ? "rejected" : "completed"
  check("needs_review", to)
  if (to === "rejected")
    return { to, output, error: d.reason ? `rejected by a reviewer: ${d.reason}` : "rejected by a reviewer" }
  return { to, output: d.decision === "edit" ? (d.output ?? null) : output, error: null }
}
