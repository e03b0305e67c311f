/**
 * Rate limits: a limiter that keeps a run under the provider's own figures, which providers read from their response
 * headers (the plugin API's `fromHeaders` and `rated`). `rpm` and `tpm` from the job are token buckets (the run's,
 * kept in the store for all its workers, when pooled); left at 0 they are learned from the headers, and until the first answer says what they are, one call goes out alone (a run
 * of 64 at once would meet the limit with 64 calls). A burst of 429s halves the concurrency (at most once a second);
 * each success wins a little of it back. The item a 429 hit waits its own Retry-After (the runner's retry policy);
 * the others go on at the learned pace.
 */
import type { RateInfo, Window } from "../../plugins/api/ratelimit.ts"

/**
 * A token bucket: `limit` per minute, refilled continuously. A pooled one is not refilled by time: what it holds was
 * granted from the run's bucket in the store (`Limiter.grant`), and it starts empty.
 */
class Bucket {
  level: number
  constructor(
    public limit: number,
    private at: number,
    readonly pooled = false,
  ) {
    this.level = pooled ? 0 : limit
  }
  refill(now: number): void {
    if (!this.pooled) this.level = Math.min(this.limit, this.level + ((now - this.at) * this.limit) / 60_000)
    this.at = now
  }
  /** Milliseconds until `n` is available (0: now; Infinity: a pooled bucket that lacks it until a grant). */
  wait(n: number, now: number): number {
    this.refill(now)
    const need = Math.min(n, this.limit) - this.level
    if (need <= 0) return 0
    return this.pooled ? Number.POSITIVE_INFINITY : Math.ceil((need * 60_000) / this.limit)
  }
  /** What it lacks for `n` more (a pooled bucket's next grant to ask for). */
  lack(n: number): number {
    return Math.max(0, Math.min(n, this.limit) - this.level)
  }
}

export interface LimiterOptions {
  /** Requests per minute; 0: learn from the provider. */
  rpm: number
  /** Tokens per minute (input estimate plus max_tokens, corrected by usage); 0: learn. */
  tpm: number
  concurrency: number
  /**
   * The job's `rpm` and `tpm` are the run's, for all its workers together: their buckets live in the store
   * (ledger.ts `Workers.take`), and here hold only what was granted from them. Limits learned from the provider's
   * headers stay local (the provider counts every worker's calls already).
   */
  pooled?: boolean
  now?: () => number
}

/**
 * One limit (requests, or tokens): `own`, the bucket the limiter refills itself (the job's limit, or one learned from
 * the headers), and `pool`, the job's limit granted from the run's bucket in the store when pooled. A pooled limiter
 * keeps `own` as the provider's count, learned from its headers: a grant never lets more out than the provider says
 * it has left.
 */
interface Limit {
  own: Bucket | undefined
  pool: Bucket | undefined
  /** The job's figure (0: learned). */
  configured: number
}

export class Limiter {
  private readonly requests: Limit
  private readonly tokens: Limit
  private readonly now: () => number
  private readonly max: number
  private allowed: number
  private cutAt = Number.NEGATIVE_INFINITY
  /** Limits to learn and no answer yet: one call at a time until the first one tells them. */
  private probing: boolean

  constructor(o: LimiterOptions) {
    this.now = o.now ?? Date.now
    const t = this.now()
    const limit = (configured: number): Limit =>
      configured <= 0
        ? { own: undefined, pool: undefined, configured }
        : o.pooled
          ? { own: undefined, pool: new Bucket(configured, t, true), configured }
          : { own: new Bucket(configured, t), pool: undefined, configured }
    this.requests = limit(o.rpm)
    this.tokens = limit(o.tpm)
    this.max = o.concurrency
    this.allowed = o.concurrency
    this.probing = o.rpm === 0 || o.tpm === 0
  }

  /** Calls allowed in flight now: the job's concurrency, less after a burst of 429s, one while probing. */
  get concurrency(): number {
    return this.probing ? 1 : this.allowed
  }

  /**
   * Milliseconds until a request of `tokens` may start; 0 when it may start now; Infinity when a pooled bucket lacks
   * it: it may start after a grant (`lack`, `grant`).
   */
  wait(tokens: number): number {
    const now = this.now()
    const wait = (l: Limit, n: number) => Math.max(l.own?.wait(n, now) ?? 0, l.pool?.wait(n, now) ?? 0)
    return Math.max(wait(this.requests, 1), wait(this.tokens, tokens), 0)
  }

  /** Takes a request of `tokens` if it may start now. */
  take(tokens: number): boolean {
    if (this.wait(tokens) > 0) return false
    for (const [l, n] of [
      [this.requests, 1],
      [this.tokens, tokens],
    ] as const)
      for (const b of [l.own, l.pool]) if (b) b.level -= n
    return true
  }

  /** After a call: the tokens it really used replace the estimate taken for it. */
  settle(estimated: number, used: number): void {
    for (const b of [this.tokens.own, this.tokens.pool]) if (b) b.level -= used - estimated
  }

  /**
   * Learns from an answer (any answer: a server that sends no rate-limit headers has none to learn): its limits,
   * when the job set none or they are pooled, and what is left of them.
   */
  observe(rate: RateInfo | undefined): void {
    this.probing = false
    if (!rate) return
    const now = this.now()
    const apply = (l: Limit, w: Window | undefined): void => {
      if (!w) return
      // the job's own limit, refilled here, is not replaced by the provider's; a learned one (or the provider's
      // count beside a pooled limit) is the provider's
      const learns = l.configured <= 0 || l.pool !== undefined
      if (learns && w.limit !== undefined && w.limit > 0) {
        l.own ??= new Bucket(w.limit, now)
        l.own.limit = w.limit
      }
      if (l.own && w.remaining !== undefined) {
        l.own.refill(now)
        // the server's count is the truth; in-flight requests it has not seen yet are already taken from ours
        l.own.level = Math.min(l.own.level, w.remaining)
      }
    }
    apply(this.requests, rate.requests)
    apply(this.tokens, rate.tokens)
  }

  /** A 429: halve the concurrency (once per second of 429s). */
  limited(): void {
    const now = this.now()
    if (now - this.cutAt >= 1000) {
      this.allowed = Math.max(1, Math.floor(this.allowed / 2))
      this.cutAt = now
    }
  }

  /** A success: concurrency grows back by about one per round of calls. */
  succeeded(): void {
    if (this.allowed < this.max) this.allowed = Math.min(this.max, this.allowed + 1 / this.allowed)
  }

  /**
   * What the pooled buckets lack for `n` more requests of `tokens` in all: the grant to ask the run's buckets for
   * (0 for a limit that is not pooled).
   */
  lack(n: number, tokens: number): { rpm: number; tpm: number } {
    return { rpm: this.requests.pool?.lack(n) ?? 0, tpm: this.tokens.pool?.lack(tokens) ?? 0 }
  }

  /** Adds what the run's bucket granted to a pooled limit. */
  grant(name: "rpm" | "tpm", n: number): void {
    const pool = (name === "rpm" ? this.requests : this.tokens).pool
    if (pool) pool.level += n
  }

  /** What it knows, for tests and status. */
  get state(): { rpm?: number; tpm?: number; concurrency: number } {
    const limit = (l: Limit) => l.pool?.limit ?? l.own?.limit
    return { rpm: limit(this.requests), tpm: limit(this.tokens), concurrency: this.concurrency }
  }
}
