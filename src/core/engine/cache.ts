/**
 * The response cache, as a run uses it (README, "Cache"): before an item can be claimed for a call or packed into a
 * batch, the cache is asked for its request's answer. A hit completes the item with no call, as local work that no
 * rate limit or concurrency slot holds back; a miss records the key, and the answer the call brings is written under
 * it when it completes the item (`cacheWrite`), in the same transaction.
 */
import type { Price } from "../job/pricing.ts"
import { cost, jobPrice } from "../job/pricing.ts"
import { keyer, type Identity } from "../job/cache.ts"
import { durationMs } from "../job/duration.ts"
import type { Job } from "../job/job.ts"
import * as schemas from "../job/schema.ts"
import type { Asked, CacheEntry, Ledger } from "../ledger/ledger.ts"
import type { CacheWrite, Run } from "../ledger/types.ts"
import type { SourceRow, Usage } from "../../plugins/api/define.ts"
import { crashPoint } from "./crash.ts"

/** How a run uses the cache: from its job's `[cache]` and the provider that answers it. */
export interface CacheUse {
  /** Serve answers from the cache (not with `refresh`). */
  read: boolean
  /** Answers written at or after this time are served (the `ttl`), as a function of now. */
  since: (now: number) => number
  /** The key of an item's request, from its row's fields; "" when its prompt cannot be rendered. */
  keyOf: (row: Record<string, unknown>) => string
  provider: string
  model: string
  price: Price | undefined
}

/**
 * The cache's use by a run of `job` answered by `who`; undefined when the job turns it off (`--no-cache`), and for
 * embedding jobs, which the cache does not serve (docs/EMBEDDINGS.md; run.ts says so in one info line).
 */
export function cacheUse(job: Job, who: Identity): CacheUse | undefined {
  const { enabled, ttl, refresh } = job.cache
  if (!enabled || job.request.kind === "embedding") return undefined
  const ttlMs = ttl === undefined ? undefined : durationMs(ttl)
  return {
    read: !refresh,
    since: (now) => (ttlMs === undefined ? 0 : now - ttlMs),
    keyOf: keyer(job, who),
    provider: who.provider,
    model: who.model,
    price: jobPrice(job),
  }
}

/** The look-ups of a process working on `run`, or undefined when its job turns the cache off. */
export function lookupOf(
  ledger: Ledger,
  run: Run,
  owner: string,
  job: Job,
  who: Identity,
): Lookup | undefined {
  const use = cacheUse(job, who)
  const validate = job.output ? schemas.validator(job.output.schema) : undefined
  return use && new Lookup(ledger, run, owner, use, validate)
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

/**
 * Serves a run's pending items from the cache, and records the keys of those it cannot serve. A process makes one
 * (engine/run.ts) and hands it to whatever reads rows or claims items: the ingester, the runner, the batcher.
 */
export class Lookup {
  /** Whether pending items looked up by an earlier process have been asked again (once per process: one Lookup). */
  private asked = false

  constructor(
    private readonly ledger: Ledger,
    private readonly run: Run,
    private readonly owner: string,
    /** How the run uses the cache: what it reads, and what an accepted answer writes (`cacheWrite`). */
    readonly use: CacheUse,
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
      const keyed = items.map((i) => ({
        id: i.id,
        key: this.use.keyOf(JSON.parse(i.data) as Record<string, unknown>),
      }))
      hits += await this.serve(keyed, true)
      looked += items.length
      after = items.at(-1)!.id
    }
    return { hits, looked, more: true }
  }

  /**
   * The cache's answers for a source batch's rows, asked before they are stored (`Ingest.add`): the rows it answers
   * are stored completed, the others pending with their key. A run whose answers are all cached is so ingest, and
   * no more: nothing is stored twice, and no row waits for a sweep.
   */
  async ask(rows: SourceRow[]): Promise<Asked> {
    const keys = rows.map((row) => this.use.keyOf(row.data))
    const hits = new Map<number, CacheEntry>()
    const found = await this.found(keys)
    if (found.size > 0)
      for (const [i, key] of keys.entries()) {
        const entry = found.get(key)
        if (entry) hits.set(i, entry)
      }
    return { owner: this.owner, keys, hits }
  }

  /** The usable entries of these keys, by key: none when the cache is not read (`--refresh-cache`). */
  private async found(keys: string[]): Promise<Map<string, CacheEntry>> {
    const found = new Map<string, CacheEntry>()
    if (!this.use.read) return found
    const wanted = keys.filter((key) => key !== "")
    if (wanted.length === 0) return found
    for (const entry of await this.ledger.cache.get(wanted, this.use.since(Date.now())))
      if (this.usable(entry)) found.set(entry.key, entry)
    return found
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
    const found = await this.found(keyed.map((k) => k.key))
    const hits: { id: number; key: string; entry: CacheEntry }[] = []
    const misses: { id: number; key: string }[] = []
    for (const { id, key } of keyed) {
      const entry = found.get(key)
      if (entry) hits.push({ id, key, entry })
      else if (record) misses.push({ id, key })
    }
    if (hits.length === 0 && misses.length === 0) return 0
    const served = (await this.ledger.cache.serve(this.run.id, this.owner, hits, misses)).hits
    if (served > 0) crashPoint("sweep")
    return served
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
