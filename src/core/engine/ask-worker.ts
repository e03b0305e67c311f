/**
 * The response cache's look-ups on a thread of their own (asker.ts): a worker that opens the run's store for reading,
 * and answers each source batch's rows with their keys and the cache's entries for them, as `Lookup.ask` does on the
 * main thread. It never writes: what it finds is stored by the main thread, in the batch's own transaction.
 */
import { open } from "../ledger/open.ts"
import type { Asked, Ledger } from "../ledger/ledger.ts"
import type { SourceRow } from "../../plugins/api/define.ts"
import { lookupOf, type Lookup } from "./cache.ts"
import {
  NUMBERS,
  type AskerClose,
  type AskerInit,
  type AskerReply,
  type AskerRequest,
  type Packed,
} from "./asker.ts"

declare const self: Worker

let ledger: Promise<Ledger> | undefined
let lookup: Promise<Lookup | undefined> | undefined

self.onmessage = async (event: MessageEvent<AskerInit | AskerRequest | AskerClose>) => {
  const message = event.data
  if (message.type === "init") {
    const { store, run, owner, job, who } = message
    ledger = open(store, { access: "read" })
    lookup = ledger.then((opened) => lookupOf(opened, run, owner, job, who))
    return
  }
  if (message.type === "close") {
    await (await ledger?.catch(() => undefined))?.close()
    // ends this thread only (a worker's `self.close` is not there in a compiled program)
    process.exit(0)
    return
  }
  try {
    const looked = await lookup
    if (!looked) throw new Error("the look-ups' worker was asked before it was told the run")
    const rows = (JSON.parse(message.rows) as Record<string, unknown>[]).map(
      (data) => ({ data }) as SourceRow,
    )
    const asked: Asked = await looked.ask(rows)
    const reply = packed(message.id, asked)
    self.postMessage(reply, {
      transfer: [reply.at.buffer as ArrayBuffer, reply.numbers.buffer as ArrayBuffer],
    })
  } catch (err) {
    self.postMessage({
      id: message.id,
      error: err instanceof Error ? err.message : String(err),
    } satisfies AskerReply)
  }
}

/** What was found, in a few flat values: a reply crosses threads as a copy, and ten thousand objects copy slowly. */
function packed(id: number, asked: Asked): Packed {
  const at = new Int32Array(asked.hits.size)
  const numbers = new Float64Array(asked.hits.size * NUMBERS)
  let outputs = ""
  let n = 0
  for (const [i, entry] of asked.hits) {
    at[n] = i
    numbers.set(
      [
        entry.input_tokens,
        entry.output_tokens,
        entry.cached_input_tokens,
        entry.cost_usd ?? Number.NaN,
        entry.created_at,
        entry.output.length,
      ],
      n * NUMBERS,
    )
    outputs += entry.output
    n++
  }
  return { id, keys: asked.keys.join(","), at, outputs, numbers }
}
