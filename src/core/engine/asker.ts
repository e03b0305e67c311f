/**
 * The response cache asked for the rows as they are read (README, "Cache"), off the main thread once an input is
 * long: a run whose answers are all cached is ingest and look-ups, and on one thread the look-ups (each row's prompt
 * rendered and hashed, its entry read) take half as long again as storing the rows. The first source batch is asked
 * on the main thread (`Lookup.ask`); from the second on, a worker (ask-worker.ts) asks while the main thread stores
 * the batch before (ingest.ts reads a batch ahead). The worker only reads; if it cannot start or fails, the rows are
 * asked on the main thread, as before.
 */
import type { Asked, CacheEntry } from "../ledger/ledger.ts"
import type { Run } from "../ledger/types.ts"
import type { Identity } from "../job/cache.ts"
import type { Job } from "../job/job.ts"
import type { SourceRow } from "../../plugins/api/define.ts"
import * as log from "../base/log.ts"
import { isUrl } from "../ledger/open.ts"
import type { Lookup } from "./cache.ts"

/** What the worker is told once: where the store is, and what the main thread's `Lookup` was made of. */
export interface AskerInit {
  type: "init"
  store: string
  run: Run
  owner: string
  job: Job
  who: Identity
}

/** One source batch's rows: their fields as one JSON array (one string crosses threads in one copy). */
export interface AskerRequest {
  type: "ask"
  id: number
  rows: string
}

/**
 * A batch's keys and hits, flat: the keys joined by commas, and for the hits their rows' indexes, their answers one
 * after another, and `NUMBERS` numbers each (tokens in, out and cached, cost or NaN, when written, the answer's length).
 */
export interface Packed {
  id: number
  keys: string
  at: Int32Array
  outputs: string
  numbers: Float64Array
}

export const NUMBERS = 6

export type AskerReply = Packed | { id: number; error: string }

/** The worker closes its connection to the store and ends. */
export interface AskerClose {
  type: "close"
}

export class Asker {
  private worker: Worker | undefined
  /** The worker failed (or could not start), or the store is a server's: every batch is asked on this thread. */
  private here: boolean
  /** Batches asked by the worker, and on this thread. */
  readonly counted = { worker: 0, main: 0 }
  private next = 0
  private readonly waiting = new Map<number, (reply: AskerReply) => void>()

  constructor(
    private readonly lookup: Lookup,
    private readonly init: Omit<AskerInit, "type">,
  ) {
    // a PostgreSQL store's look-ups wait on the network, not on this thread (ingest.ts asks a batch ahead all the same)
    this.here = isUrl(init.store)
  }

  /** The cache's answers for a source batch's rows, as `Lookup.ask` gives them. */
  async ask(rows: SourceRow[]): Promise<Asked> {
    // the first batch here: an input of one batch (a small file, a follow pass) never starts a thread
    const worker = this.here || this.counted.main === 0 ? undefined : (this.worker ?? this.start())
    if (!worker) {
      this.counted.main++
      return this.lookup.ask(rows)
    }
    let text = "["
    for (const [i, row] of rows.entries()) {
      // the fields as JSON text, which the ledger stores too (SourceRow.raw): made once
      row.raw ??= JSON.stringify(row.data)
      text += i === 0 ? row.raw : `,${row.raw}`
    }
    const id = this.next++
    const reply = await new Promise<AskerReply>((resolve) => {
      this.waiting.set(id, resolve)
      worker.postMessage({ type: "ask", id, rows: `${text}]` } satisfies AskerRequest)
    })
    if ("error" in reply) {
      this.fail(reply.error)
      this.counted.main++
      return this.lookup.ask(rows)
    }
    this.counted.worker++
    return this.unpacked(reply)
  }

  /**
   * Lets the worker go: it closes its connection to the store and exits, with the code this resolves to (undefined
   * when there was no worker). The log says where the batches were asked.
   */
  close(): Promise<number | undefined> {
    if (this.counted.worker + this.counted.main > 0)
      log.debug("cache look-ups", { run: this.init.run.name, batches: this.counted })
    const worker = this.worker
    this.worker = undefined
    if (!worker) return Promise.resolve(undefined)
    worker.onerror = null
    const exited = new Promise<number>((done) =>
      worker.addEventListener("close", (event) => done((event as CloseEvent).code)),
    )
    worker.postMessage({ type: "close" } satisfies AskerClose)
    worker.unref()
    return exited
  }

  private unpacked({ keys: joined, at, outputs, numbers }: Packed): Asked {
    const keys = joined.split(",")
    const { provider, model } = this.lookup.use
    const hits = new Map<number, CacheEntry>()
    let from = 0
    for (let n = 0, j = 0; n < at.length; n++, j += NUMBERS) {
      const cost = numbers[j + 3]!
      const to = from + numbers[j + 5]!
      hits.set(at[n]!, {
        key: keys[at[n]!]!,
        output: outputs.slice(from, to),
        provider,
        model,
        input_tokens: numbers[j]!,
        output_tokens: numbers[j + 1]!,
        cached_input_tokens: numbers[j + 2]!,
        cost_usd: Number.isNaN(cost) ? null : cost,
        created_at: numbers[j + 4]!,
      })
      from = to
    }
    return { owner: this.init.owner, keys, hits }
  }

  private start(): Worker | undefined {
    try {
      const worker = new Worker(new URL("./ask-worker.ts", import.meta.url).href)
      worker.onmessage = (event: MessageEvent<AskerReply>) => {
        const resolve = this.waiting.get(event.data.id)
        this.waiting.delete(event.data.id)
        resolve?.(event.data)
      }
      worker.onerror = (event) => this.fail(event.message)
      worker.onmessageerror = () => this.fail("a reply could not be read")
      worker.postMessage({ type: "init", ...this.init } satisfies AskerInit)
      this.worker = worker
      return worker
    } catch (err) {
      this.fail(err instanceof Error ? err.message : String(err))
      return undefined
    }
  }

  /** The worker is given up: the batches it was asked are asked again on this thread, and every later one. */
  private fail(error: string): void {
    if (!this.here) log.debug("the cache's look-ups go on on the main thread", { error })
    this.here = true
    this.worker?.terminate()
    this.worker = undefined
    for (const [id, resolve] of this.waiting) resolve({ id, error })
    this.waiting.clear()
  }
}
