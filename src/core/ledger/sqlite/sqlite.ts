/**
 * The SQLite driver of the ledger. Its parts, one file per seam, are synchronous: every state change is one
 * `db.transaction(() => …)()` with no await inside, so that an fsync carries a whole group commit. The `Ledger` they
 * make is a thin asynchronous layer over them: each method an async call of the synchronous one, which has run
 * (and committed) before the call returns its promise.
 */
import type { Database } from "bun:sqlite"
import type * as api from "../ledger.ts"
import { connect, type Conn } from "./connect.ts"
import { failure } from "./faults.ts"
import { Batches } from "./batches.ts"
import { Cache } from "./cache.ts"
import { Canaries } from "./canaries.ts"
import { Claims } from "./claims.ts"
import { Ingest } from "./ingest.ts"
import { Primes } from "./primes.ts"
import { Reads } from "./reads.ts"
import { Reviews } from "./reviews.ts"
import { Runs } from "./runs.ts"
import { Steps } from "./steps.ts"
import { Tallies } from "./tallies.ts"
import { Workers } from "./workers.ts"

/** Opens (creating and migrating if needed) the store under `home`. */
export function open(home: string, options: api.OpenOptions = {}): SqliteLedger {
  const conn = connect(home, options)
  try {
    return new SqliteLedger(conn)
  } catch (err) {
    conn.db.close()
    throw failure(err, conn.path)
  }
}

export class SqliteLedger implements api.Ledger {
  /** The connection, for SQLite's own checks in its tests (pragmas, raw rows); never for the engine. */
  readonly db: Database
  /** The store's file. */
  readonly path: string
  /** The synchronous parts the ledger's methods call. */
  readonly parts: {
    runs: Runs
    ingest: Ingest
    claims: Claims
    batches: Batches
    reads: Reads
    tallies: Tallies
    canaries: Canaries
    workers: Workers
    cache: Cache
    reviews: Reviews
    steps: Steps
    primes: Primes
  }
  readonly runs: api.Runs
  readonly ingest: api.Ingest
  readonly claims: api.Claims
  readonly batches: api.Batches
  readonly reads: api.Reads
  readonly canaries: api.Canaries
  readonly workers: api.Workers
  readonly cache: api.Cache
  readonly reviews: api.Reviews
  readonly steps: api.Steps
  readonly primes: api.Primes

  constructor(conn: Conn) {
    this.db = conn.db
    this.path = conn.path
    const tallies = new Tallies(conn.db, conn.path)
    const runs = new Runs(conn.db, conn.path)
    const cache = new Cache(conn.db, conn.path, tallies)
    const ingest = new Ingest(conn.db, conn.path, runs, tallies, cache)
    const claims = new Claims(conn.db, conn.path, runs, cache)
    const batches = new Batches(conn, runs, tallies, cache)
    const primes = new Primes(conn.db, conn.path)
    const reads = new Reads(conn.db, conn.path, tallies, primes)
    const canaries = new Canaries(conn.db, conn.path, claims)
    const workers = new Workers(conn.db, conn.path)
    const reviews = new Reviews(conn.db, conn.path, runs)
    const steps = new Steps(conn.db, conn.path, tallies)
    this.parts = {
      runs,
      ingest,
      claims,
      batches,
      reads,
      tallies,
      canaries,
      workers,
      cache,
      reviews,
      steps,
      primes,
    }
    this.primes = {
      record: async (run, prime) => primes.record(run, prime),
      last: async (run, prefix) => primes.last(run, prefix),
    }
    this.reviews = {
      decide: async (run, decisions) => reviews.decide(run, decisions),
      history: async (item) => reviews.history(item),
    }
    this.runs = {
      latest: async (name) => runs.latest(name),
      get: async (id) => runs.get(id),
      find: async (ref) => runs.find(ref),
      list: async () => runs.list(),
      // a new run's first worker is registered in the same transaction: it is never seen without one
      create: async (run) =>
        conn.db
          .transaction(() => {
            const made = runs.create(run)
            if (made.created && run.worker) workers.beat(made.run.id, run.worker)
            return made
          })
          .immediate(),
      setState: async (id, state, reason) => runs.setState(id, state, reason),
      setResume: async (id, resume) => runs.setResume(id, resume),
      updateJob: async (id, job) => runs.updateJob(id, job),
      markExported: async (id) => runs.markExported(id),
      inputs: async (run) => runs.inputs(run),
      addInput: async (run, path, format) => runs.addInput(run, path, format),
      steps: async (parent) => runs.steps(parent),
    }
    this.steps = {
      ready: async (parent, step, needs, o) => steps.ready(parent, step, needs, o),
      add: async (step, items) => steps.add(step, items),
    }
    this.ingest = {
      lease: async (run, owner, ms, dead) => ingest.lease(run, owner, ms, dead),
      add: async (run, input, batch, last, asked) => ingest.add(run, input, batch, last, asked),
      done: async (run) => ingest.done(run),
      reopen: async (run) => ingest.reopen(run),
      reset: async (run) => ingest.reset(run),
    }
    this.claims = {
      step: async (run, owner, outcomes, limit, leaseMs, o) =>
        claims.step(run, owner, outcomes, limit, leaseMs, o),
      renew: async (run, owner, leaseMs) => claims.renew(run, owner, leaseMs),
      recover: async (run, dead) => claims.recover(run, dead),
      nextRetryAt: async (run) => claims.nextRetryAt(run),
      retry: async (run, from) => claims.retry(run, from),
      holders: async (run) => runs.holders(run),
    }
    this.batches = {
      lease: async (run, owner, ms, dead) => batches.lease(run, owner, ms, dead),
      holder: async (run) => batches.holder(run),
      release: async (run, owner) => batches.release(run, owner),
      packable: async (run, limit, o) => batches.packable(run, limit, o),
      intend: async (run, intent, lines, failed, owner) => batches.intend(run, intent, lines, failed, owner),
      submitted: async (batch, remote) => batches.submitted(batch, remote),
      abandon: async (batch, why) => batches.abandon(batch, why),
      observe: async (batch, remote, nextAt) => batches.observe(batch, remote, nextAt),
      later: async (batch, nextAt, error) => batches.later(batch, nextAt, error),
      downloaded: async (batch, files) => batches.downloaded(batch, files),
      apply: async (batch, outcomes, owner) => batches.apply(batch, outcomes, owner),
      finish: async (batch, lines) => batches.finish(batch, lines),
      items: async (batch) => batches.items(batch),
      lines: async (batch) => batches.lines(batch),
      members: async (batch) => batches.members(batch),
      get: async (id) => batches.get(id),
      list: async (run) => batches.list(run),
      recent: async (run, n) => batches.recent(run, n),
      live: async (run) => batches.live(run),
      learnQueue: async (run, limit) => batches.learnQueue(run, limit),
    }
    this.reads = {
      counts: async (run) => reads.counts(run),
      summary: async (run, now, windowMs) => reads.summary(run, now, windowMs),
      errorClasses: async (run) => reads.errorClasses(run),
      progress: async (run, from, slotMs) => reads.progress(run, from, slotMs),
      firstProgress: async (run) => reads.firstProgress(run),
      endings: async (run, from, slotMs, max) => reads.endings(run, from, slotMs, max),
      errorMarks: async (run, from, slotMs, slots, cap) => reads.errorMarks(run, from, slotMs, slots, cap),
      latestErrors: async (run, limit) => reads.latestErrors(run, limit),
      errorsSince: async (run, since, limit) => reads.errorsSince(run, since, limit),
      page: async (run, o) => reads.page(run, o),
      items: (run, state) => stream(() => reads.items(run, state)),
      attempts: async (item) => reads.attempts(item),
      exportPage: async (run, o) => reads.exportPage(run, o),
      lastExport: async (run) => reads.lastExport(run),
      recordExport: async (run, e) => reads.recordExport(run, e),
      item: async (run, id) => reads.item(run, id),
      keyed: async (run, key) => reads.keyed(run, key),
      search: async (run, o) => reads.search(run, o),
      problems: async (run, limit) => reads.problems(run, limit),
      hasOpen: async (run) => reads.hasOpen(run),
      largestAttempt: async (run) => reads.largestAttempt(run),
      version: async () => reads.version(),
    }
    this.canaries = {
      get: async (run) => canaries.get(run),
      start: async (run, items) => canaries.start(run, items),
      reported: async (run) => canaries.reported(run),
      beyond: async (run, first) => canaries.beyond(run, first),
      counts: async (run, first) => canaries.counts(run, first),
      step: async (run, owner, outcomes, limit, leaseMs, first, o) =>
        canaries.step(run, owner, outcomes, limit, leaseMs, first, o),
    }
    this.workers = {
      beat: async (run, owner, at) => workers.beat(run, owner, at),
      leave: async (run, owner) => workers.leave(run, owner),
      list: async (run) => workers.list(run),
      prune: async (run, dead, before) => workers.prune(run, dead, before),
      held: async (run) => workers.held(run),
      take: async (run, name, limit, want, at) => workers.take(run, name, limit, want, at),
    }
    this.cache = {
      pending: async (run, o) => cache.pending(run, o),
      get: async (keys, since) => cache.get(keys, since),
      serve: async (run, owner, hits, misses) => cache.serve(run, owner, hits, misses),
      stats: async () => cache.stats(),
      prune: async (before) => cache.prune(before),
      clear: async (model) => cache.clear(model),
    }
  }

  async close(): Promise<void> {
    this.db.close()
  }

  /** `PRAGMA integrity_check`: "ok", or the first problem SQLite found. */
  integrity(): string {
    return this.parts.reads.integrity()
  }
}

/** A synchronous stream as an asynchronous one: one settled promise per item, no generator machinery between. */
function stream<T>(open: () => Iterator<T, unknown>): AsyncIterable<T> {
  return {
    [Symbol.asyncIterator](): AsyncIterator<T> {
      const it = open()
      return {
        next: () => {
          try {
            return Promise.resolve(it.next() as IteratorResult<T>)
          } catch (err) {
            return Promise.reject(err)
          }
        },
        return: (value?: unknown) => {
          it.return?.()
          return Promise.resolve({ done: true, value } as IteratorResult<T>)
        },
      }
    },
  }
}
