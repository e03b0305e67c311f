/** The store both server tests start from: one run of six items in every kind of state, and two connections. */
import type { Ledger } from "../../src/core/ledger/ledger.ts"
import { open } from "../../src/core/ledger/open.ts"
import type { Outcome } from "../../src/core/ledger/types.ts"
import { ownerId } from "../../src/core/engine/owner.ts"
import { seed } from "../lib/ledger.ts"
import { tmpdir, type Tmp } from "../lib/tmp.ts"

/** How an item's first attempt ended; a completed one answered `out <item id>` with 10 tokens in and 4 out. */
export const end = (item: number, to: Outcome["to"], extra: Partial<Outcome> = {}): Outcome => ({
  item,
  attempt: 1,
  to,
  label: to === "completed" ? "ok" : to,
  latencyMs: 5,
  endedAt: Date.now(),
  ...(to === "completed" ? { output: `out ${item}`, inputTokens: 10, outputTokens: 4 } : {}),
  ...extra,
})

export interface Store extends AsyncDisposable {
  tmp: Tmp
  /** The connection the test writes through, as a `spool run` beside the server would. */
  writer: Ledger
  /** The server's own connection. */
  reader: Ledger
  runId: number
  /** The ids of k1…k4, the items that were attempted. */
  ids: number[]
}

/**
 * One run "r" of 6 items (rows {text: t1…t6}, job JOB: prompt "Say {{text}}", gpt-4o-mini, realtime): k1 and k2
 * completed (k1 answering `first`, when given), k3 failed (auth, 401), k4 needs_review (output, "{oops"), k5 and k6
 * pending. This process is registered as its worker, so it is shown running (with none it would be interrupted).
 */
export async function store(first?: string): Promise<Store> {
  const tmp = await tmpdir()
  const writer = await open(tmp.path)
  const runId = (await seed(writer, 6)).run.id
  await writer.workers.beat(runId, ownerId())
  const ids = (await writer.claims.step(runId, "w", [], 4, 60_000)).map((x) => x.id)
  const [a, b, c, d] = ids as [number, number, number, number]
  await writer.claims.step(
    runId,
    "w",
    [
      end(a, "completed", first === undefined ? {} : { output: first }),
      end(b, "completed"),
      end(c, "failed", { errorClass: "auth", error: "invalid api key", status: 401 }),
      end(d, "needs_review", { errorClass: "output", error: "not JSON", output: "{oops" }),
    ],
    0,
    60_000,
  )
  const reader = await open(tmp.path)
  return {
    tmp,
    writer,
    reader,
    runId,
    ids,
    async [Symbol.asyncDispose]() {
      await reader.close()
      await writer.close()
      await tmp[Symbol.asyncDispose]()
    },
  }
}
