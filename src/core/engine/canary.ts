/**
 * The canary (README, "Canary"): a run's first N items in ledger order go out first, as direct calls through the
 * realtime Runner (a batch job's too), and the run stops with a report on them until a person goes on. Once started,
 * the canary belongs to the run: a run stopped part-way through it finishes it on the next start, and a run whose
 * canary was reported goes on with the rest.
 */
import { UsageError } from "../base/errors.ts"
import * as log from "../base/log.ts"
import type { Job } from "../job/job.ts"
import type { Ledger } from "../ledger/ledger.ts"
import type { Run } from "../ledger/types.ts"

/**
 * The canary this start of `run` sends: the number of its first items, or undefined for none. Read only: it is
 * decided before the run is touched, so `--canary` (`asked`) on a run past its first items is refused with nothing
 * changed. A canary asked for again, or wider, on a run still at its canary is run (or shown) again; the job's
 * `limits.canary` starts one only on a run that has had none and has sent nothing.
 */
export async function plan(
  db: Ledger,
  run: Run,
  o: { asked: number | undefined; job: Job; follow: boolean },
): Promise<number | undefined> {
  const stored = await db.canaries.get(run.id)
  if (o.asked !== undefined) {
    const sent = await db.canaries.beyond(run.id, stored?.items ?? 0)
    if (sent > 0)
      throw new UsageError(
        `--canary: run "${run.name}" is past its first items (${sent} item(s) were sent outside a canary); nothing was changed`,
        `A canary comes before the rest. Go on without --canary, or start a fresh run with one: --new-run --canary ${o.asked}.`,
      )
    return Math.max(o.asked, stored?.items ?? 0)
  }
  const wanted = stored
    ? stored.reported_at === null
      ? stored.items
      : undefined
    : o.job.limits.canary || undefined
  if (wanted === undefined) return undefined
  if (o.follow) {
    log.info("spool watch sends no canary: `spool run` does (README, Canary)", { run: run.name })
    return undefined
  }
  if (!stored && (await db.canaries.beyond(run.id, 0)) > 0) {
    log.info("limits.canary: the run is past its first items, so it goes on without a canary", {
      run: run.name,
    })
    return undefined
  }
  return wanted
}

/**
 * The ledger as the canary's Runner sees it: it claims only among the run's first `first` items (`canaries.step`) and
 * counts only them, so it ends when they have, whatever the rest of the run holds.
 */
export function within(db: Ledger, first: number): Ledger {
  return {
    runs: db.runs,
    ingest: db.ingest,
    batches: db.batches,
    canaries: db.canaries,
    workers: db.workers,
    cache: db.cache,
    reviews: db.reviews,
    steps: db.steps,
    primes: db.primes,
    claims: {
      ...db.claims,
      step: (run, owner, outcomes, limit, leaseMs, o) =>
        db.canaries.step(run, owner, outcomes, limit, leaseMs, first, o),
    },
    reads: { ...db.reads, counts: (run) => db.canaries.counts(run, first) },
    close: () => db.close(),
  }
}

/** Why a run stopped after its canary, as `spool status` shows it. */
export function stoppedReason(items: number, rest: number, resume: string): string {
  return `canary: the first ${items} item(s) are done; \`${resume}\` goes on with the other ${rest}`
}
