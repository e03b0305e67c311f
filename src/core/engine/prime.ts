/**
 * Priming (README, "Paying less"). A provider with explicit prompt caching (Anthropic) runs a batch's requests side by
 * side: none of them finds the shared prefix in the cache unless it was written before the batch began, so a cold
 * batch pays the write premium on every request and reads nothing. Before a batch is created, one small request per
 * shared prefix is sent directly and its answer awaited: the prefix is then in the cache, and the batch reads it.
 *
 * A prefix primed less than its lifetime ago (by this process or an earlier one: the ledger keeps every priming) is
 * not primed again; a long job re-primes a prefix once its lifetime would have lapsed. A priming call is the run's,
 * not an item's: its tokens count in the run's spend (`Summary.primes`). One that fails is recorded and the batch is
 * created anyway: priming saves money, it is never needed for an answer.
 */
import type { ProviderClient, Request } from "../../plugins/api/define.ts"
import { ProviderError } from "../../plugins/api/errors.ts"
import * as log from "../base/log.ts"
import type { Ledger } from "../ledger/ledger.ts"
import type { Run } from "../ledger/types.ts"
import type { Job } from "../job/job.ts"
import type { Prefixes } from "./prefix.ts"

/** A prefix is primed again when less than this share of its lifetime is left since its last priming. */
const MARGIN = 0.2

/** What a priming request asks after the prefix: the shortest answer. */
export const PRIME_PROMPT = "Reply with OK."

/**
 * The priming request for a request of the batch: the same prefix (system prompt, tools, the prompt's text up to the
 * breakpoint), then a short question, and one token of answer.
 */
export function primingRequest(request: Request): Request {
  const prefix = request.cache?.prefix ?? 0
  const head = request.prompt.slice(0, prefix)
  return {
    ...request,
    prompt: head ? `${head}\n\n${PRIME_PROMPT}` : PRIME_PROMPT,
    max_tokens: 1,
    temperature: undefined,
  }
}

export interface PrimerOptions {
  ledger: Ledger
  run: Run
  owner: string
  client: ProviderClient
  /** How long a written prefix lives at the provider (ms). */
  ttlMs: number
}

/** The run's primer: for a provider with explicit caching (Anthropic), unless the job says `prime = false`. */
export function primerOf(
  o: { ledger: Ledger; run: Run; owner: string; job: Job; prefixes?: Prefixes | undefined },
  client: ProviderClient,
): Primer | undefined {
  const { prefixes } = o
  if (!prefixes?.explicit || !o.job.request.prime) return undefined
  return new Primer({ ledger: o.ledger, run: o.run, owner: o.owner, client, ttlMs: prefixes.ttlMs })
}

export class Primer {
  /** Per local batch: a request of each marked prefix it holds, by prefix key (from packing). */
  private readonly wanted = new Map<number, Map<string, Request>>()

  constructor(private readonly o: PrimerOptions) {}

  /** Remembers the prefixes a packed batch holds, for `prime` before it is created. */
  note(batch: number, prefixes: Map<string, Request>): void {
    if (prefixes.size > 0) this.wanted.set(batch, prefixes)
  }

  /**
   * Primes the batch's prefixes that are not fresh in the cache; resolves once each has answered (or failed). A batch
   * this process did not pack (an intent from before a restart) is created unprimed.
   */
  async prime(batch: number, signal: AbortSignal): Promise<void> {
    const prefixes = this.wanted.get(batch)
    this.wanted.delete(batch)
    if (!prefixes) return
    for (const [key, request] of prefixes) {
      if (signal.aborted) return
      const last = await this.o.ledger.primes.last(this.o.run.id, key)
      if (last !== null && Date.now() - last < this.o.ttlMs * (1 - MARGIN)) continue
      await this.send(batch, key, request, signal)
    }
  }

  private async send(batch: number, key: string, request: Request, signal: AbortSignal): Promise<void> {
    const { ledger, run, owner, client } = this.o
    const startedAt = Date.now()
    const base = { prefix: key, batch, owner, startedAt }
    try {
      const reply = await client.call(primingRequest(request), signal)
      const endedAt = Date.now()
      const u = reply.usage
      await ledger.primes.record(run.id, {
        ...base,
        endedAt,
        outcome: "ok",
        inputTokens: u.input_tokens,
        outputTokens: u.output_tokens,
        cachedTokens: u.cached_input_tokens ?? 0,
        writeTokens: u.cache_write_tokens ?? 0,
        latencyMs: endedAt - startedAt,
      })
      log.info("prompt cache primed before the batch", {
        run: run.name,
        batch,
        written: u.cache_write_tokens ?? 0,
        read: u.cached_input_tokens ?? 0,
      })
    } catch (err) {
      if (signal.aborted) throw err
      const e = err instanceof ProviderError ? err : undefined
      const endedAt = Date.now()
      await ledger.primes.record(run.id, {
        ...base,
        endedAt,
        outcome: "failed",
        error: (err as Error)?.message ?? String(err),
        status: e?.status,
        inputTokens: 0,
        outputTokens: 0,
        cachedTokens: 0,
        writeTokens: 0,
        latencyMs: endedAt - startedAt,
      })
      log.warn("priming the prompt cache failed; the batch is created unprimed", {
        run: run.name,
        batch,
        error: (err as Error)?.message ?? String(err),
      })
      // a paused run (bad key, no quota) finds out at the batch's create, which fails the same way
    }
  }
}
