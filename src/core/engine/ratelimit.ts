/**
 * Rate limits: a limiter that keeps a run under the provider's own figures, which providers read from their response
 * headers (the plugin API's `fromHeaders` and `rated`). `rpm` and `tpm` from the job are token buckets; left at 0
 * they are learned from the headers, and until the first answer says what they are, one call goes out alone (a run
 * of 64 at once would meet the limit with 64 calls). A burst of 429s halves the concurrency (at most once a second);
 * each success wins a little of it back. The item a 429 hit waits its own Retry-After (the runner's retry policy);
 * the others go on at the learned pace.
 */
import type { RateInfo, Window } from "../../plugins/api/ratelimit.ts"

/** A token bucket: `limit` per minute, refilled continuously. */
class Bucket {
  level: number
  constructor(
    public limit: number,
    private at: number,
  ) {
    this.level = limit
  }
  refill(now: number): void {
    this.level = Math.min(this.limit, this.level + ((now - this.at) * this.limit) / 60_000)
    this.at = now
  }
  /** Milliseconds until `n` is available (0: now). */
  wait(n: number, now: number): number {
    this.refill(now)
    const need = Math.min(n, this.limit) - this.level
    return need <= 0 ? 0 : Math.ceil((need * 60_000) / this.limit)
  }
}

export interface LimiterOptions {
  /** Requests per minute; 0: learn from the provider. */
  rpm: number
  /** Tokens per minute (input estimate plus max_tokens, corrected by usage); 0: learn. */
  tpm: number
  concurrency: number
  now?: () => number
}

export class Limiter {
  private requests: Bucket | undefined
  private tokens: Bucket | undefined
  private readonly learn: { rpm: boolean; tpm: boolean }
  /** The job's own limits, before any share (0: learned). */
  private readonly configured: { rpm: number; tpm: number }
  private readonly now: () => number
  private readonly max: number
  private allowed: number
  private cutAt = Number.NEGATIVE_INFINITY
  /** Limits to learn and no answer yet: one call at a time until the first one tells them. */
  private probing: boolean

  constructor(o: LimiterOptions) {
    this.now = o.now ?? Date.now
    const t = this.now()
    this.requests = o.rpm > 0 ? new Bucket(o.rpm, t) : undefined
    this.tokens = o.tpm > 0 ? new Bucket(o.tpm, t) : undefined
    this.learn = { rpm: o.rpm === 0, tpm: o.tpm === 0 }
    this.configured = { rpm: o.rpm, tpm: o.tpm }
    this.max = o.concurrency
    this.allowed = o.concurrency
    this.probing = this.learn.rpm || this.learn.tpm
  }

  /** Calls allowed in flight now: the job's concurrency, less after a burst of 429s, one while probing. */
  get concurrency(): number {
    return this.probing ? 1 : this.allowed
  }

  /** Milliseconds until a request of `tokens` may start; 0 when it may start now. */
  wait(tokens: number): number {
    const now = this.now()
    return Math.max(this.requests?.wait(1, now) ?? 0, this.tokens?.wait(tokens, now) ?? 0, 0)
  }

  /** Takes a request of `tokens` if it may start now. */
  take(tokens: number): boolean {
    if (this.wait(tokens) > 0) return false
    if (this.requests) this.requests.level -= 1
    if (this.tokens) this.tokens.level -= tokens
    return true
  }

  /** After a call: the tokens it really used replace the estimate taken for it. */
  settle(estimated: number, used: number): void {
    if (this.tokens) this.tokens.level -= used - estimated
  }

  /**
   * Learns from an answer (any answer: a server that sends no rate-limit headers has none to learn): its limits,
   * when the job set none, and what is left of them.
   */
  observe(rate: RateInfo | undefined): void {
    this.probing = false
    if (!rate) return
    const now = this.now()
    const apply = (bucket: Bucket | undefined, w: Window | undefined, learn: boolean): Bucket | undefined => {
      if (!w) return bucket
      let b = bucket
      if (learn && w.limit !== undefined && w.limit > 0) {
        if (!b) b = new Bucket(w.limit, now)
        b.limit = w.limit
      }
      if (b && w.remaining !== undefined) {
        b.refill(now)
        // the server's count is the truth; in-flight requests it has not seen yet are already taken from ours
        b.level = Math.min(b.level, w.remaining)
      }
      return b
    }
    this.requests = apply(this.requests, rate.requests, this.learn.rpm)
    this.tokens = apply(this.tokens, rate.tokens, this.learn.tpm)
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
   * Several workers on one run (a shared store): each takes an equal share of the job's own `rpm` and `tpm`, so
   * that together they stay under them; limits learned from the provider's headers are the provider's count of
   * everyone's calls already, and are left as they are. A bucket's level never exceeds its new limit.
   */
  share(workers: number): void {
    const n = Math.max(1, Math.floor(workers))
    const now = this.now()
    for (const [bucket, base] of [
      [this.requests, this.configured.rpm],
      [this.tokens, this.configured.tpm],
    ] as const) {
      if (!bucket || base <= 0) continue
      bucket.refill(now)
      bucket.limit = base / n
      bucket.level = Math.min(bucket.level, bucket.limit)
    }
  }

  /** What it knows, for tests and status. */
  get state(): { rpm?: number; tpm?: number; concurrency: number } {
    return { rpm: this.requests?.limit, tpm: this.tokens?.limit, concurrency: this.concurrency }
  }
}
