/**
 * The response cache, as a run uses it (README, "Cache"): before an item can be claimed for a call or packed into a
 * batch, the cache is asked for its request's answer. A hit completes the item with no call, as local work that no
 * rate limit or concurrency slot holds back; a miss records the key, and the answer the call brings is written under
 * it when it completes the item (`cacheWrite`), in the same transaction.
 */
import type { Price } from "../job/pricing.ts"
import { cost, priceOf } from "../job/pricing.ts"
import { durationMs, keyer, type Identity } from "../job/cache.ts"
import type { Job } from "../job/job.ts"
import type { CacheEntry, Ledger } from "../ledger/ledger.ts"
import type { CacheWrite, Run } from "../ledger/types.ts"
import type { Usage } from "../../plugins/api/define.ts"

/** How a run uses the cache: from its job's `[cache]` and the provider that answers it. */
export interface CacheUse {
  /** Serve answers from the cache (not with `refresh`). */
  read: boolean
  /** Answers written at or after this time are served (the `ttl`), as a function of now. */
  since: (now: number) => number
  /** The key of an item's request, from its row; "" when its prompt cannot be rendered. */
  keyOf: (data: string) => string
  provider: string
  model: string
  price: Price | undefined
}

/** The cache's use by a run of `job` answered by `who`; undefined when the job turns it off (`--no-cache`). */
export function cacheUse(job: Job, who: Identity): CacheUse | undefined {
  const { enabled, ttl, refresh } = job.cache
  if (!enabled) return undefined
  const ttlMs = ttl === undefined ? undefined : durationMs(ttl)
  return {
    read: !refresh,
    since: (now) => (ttlMs === undefined ? 0 : now - ttlMs),
    keyOf: keyer(job, who),
    provider: who.provider,
    model: who.model,
    price: priceOf(job.provider.model, job.pricing),
  }
}

/** What an accepted answer writes to the cache: who gave it, and what it cost at the price paid (batch or not). */
export function cacheWrite(use: CacheUse | undefined, usage: Usage, batch: boolean): CacheWrite | undefined {
  if (!use) return undefined
  return {
    provider: use.provider,
    model: use.model,
    cost: use.price ? cost(use.price, usage, batch) : null,
  }
}

/** Items looked up per transaction. */
const CHUNK = 2_000

/** Serves a run's pending items from the cache, and records the keys of those it cannot serve. */
export class Lookup {
  /** Whether pending items looked up by an earlier process have been asked again (once per process). */
  private asked = false

  constructor(
    private readonly ledger: Ledger,
    private readonly run: Run,
    private readonly owner: string,
    private readonly use: CacheUse,
    /** The job's output check, when it has a schema: a stored answer that no longer passes it is a miss. */
    private readonly validate: ((value: unknown) => string | undefined) | undefined,
  ) {}

  /**
   * Looks up the pending items never looked up, in ledger order, up to about `max` of them: hits are completed, the
   * others keep their key. `more`: some were left for the next sweep. On its first sweep, a process also asks the
   * cache again for the pending items an earlier one looked up (another run may have paid for them since).
   */
  async sweep(max: number): Promise<{ hits: number; looked: number; more: boolean }> {
    let hits = 0
    if (!this.asked) {
      this.asked = true
      if (this.use.read) hits += await this.again()
    }
    let looked = 0
    let after = 0
    while (looked < max) {
      const items = await this.ledger.cache.pending(this.run.id, { after, limit: CHUNK })
      if (items.length === 0) return { hits, looked, more: false }
      const keyed = items.map((i) => ({ id: i.id, key: this.use.keyOf(i.data) }))
      hits += await this.serve(keyed, true)
      looked += items.length
      after = items.at(-1)!.id
    }
    return { hits, looked, more: true }
  }

  /** The pending items already looked up, asked again; the ones it still cannot serve are left as they are. */
  private async again(): Promise<number> {
    let hits = 0
    let after = 0
    for (;;) {
      const items = await this.ledger.cache.pending(this.run.id, { after, limit: CHUNK, all: true })
      if (items.length === 0) return hits
      after = items.at(-1)!.id
      const keyed = items.flatMap((i) => (i.key ? [{ id: i.id, key: i.key }] : []))
      if (keyed.length > 0) hits += await this.serve(keyed, false)
    }
  }

  /** One transaction of hits (and, when `record`, of misses); how many items it completed. */
  private async serve(keyed: { id: number; key: string }[], record: boolean): Promise<number> {
    const now = Date.now()
    const found = new Map<string, CacheEntry>()
    if (this.use.read) {
      const keys = keyed.flatMap((k) => (k.key ? [k.key] : []))
      for (const entry of await this.ledger.cache.get(keys, this.use.since(now)))
        if (this.usable(entry)) found.set(entry.key, entry)
    }
    const hits: { id: number; key: string; entry: CacheEntry }[] = []
    const misses: { id: number; key: string }[] = []
    for (const { id, key } of keyed) {
      const entry = found.get(key)
      if (entry) hits.push({ id, key, entry })
      else if (record) misses.push({ id, key })
    }
    if (hits.length === 0 && misses.length === 0) return 0
    return (await this.ledger.cache.serve(this.run.id, this.owner, hits, misses)).hits
  }

  /** Whether a stored answer can be served: text, and with a schema, JSON the schema accepts. */
  private usable(entry: CacheEntry): boolean {
    if (typeof entry.output !== "string") return false
    if (!this.validate) return true
    try {
      return this.validate(JSON.parse(entry.output)) === undefined
    } catch {
      return false
    }
  }
}
