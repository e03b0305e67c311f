/**
 * PostgreSQL's claims under contention: four workers, each on its own connection pool, share one run; and so again
 * with the response cache asked for the items out of order while they are claimed (`looked`).
 */
import { expect, test } from "bun:test"
import { SQL } from "bun"
import type { Ledger } from "../../../src/core/ledger/ledger.ts"
import * as postgres from "../../../src/core/ledger/postgres/postgres.ts"
import { ok, tallied } from "../../lib/ledger-contract.ts"
import { seed } from "../../lib/ledger.ts"
import { pgSchema, pgServer, SKIP_PG } from "../../lib/pg.ts"

const ITEMS = 2_000
const WORKERS = 4
const STEP = 16

/** Claims in steps of `STEP`, completing each step's items in the next, until a step finds none left. */
async function work(ledger: Ledger, run: number, owner: string): Promise<number[]> {
  const taken: number[] = []
  let held: { id: number; attempt: number }[] = []
  for (;;) {
    const outcomes = held.map((c) => ok(c.id, c.attempt, `by ${owner}`))
    held = await ledger.claims.step(run, owner, outcomes, STEP, 60_000)
    if (held.length === 0) return taken
    taken.push(...held.map((c) => c.id))
  }
}

test.skipIf(SKIP_PG)(
  "four workers claiming at once from one run take every item exactly once, and complete them all",
  async () => {
    await using schema = await pgSchema()
    const ledgers = await Promise.all(Array.from({ length: WORKERS }, () => postgres.open(schema.url)))
    const sql = new SQL(await pgServer())
    try {
      const { run } = await seed(ledgers[0]!, ITEMS)
      const taken = await Promise.all(ledgers.map((l, i) => work(l, run.id, `w${i}`)))

      // every item claimed once, by one worker: none held by two, none left out
      const all = taken.flat()
      expect(all.length).toBe(ITEMS)
      expect(new Set(all).size).toBe(ITEMS)
      // each worker took its share in ledger order
      for (const ids of taken) expect(ids).toEqual([...ids].sort((a, b) => a - b))

      const q = (text: string) => sql.unsafe(text.replaceAll("$s", `"${schema.schema}"`), [run.id])
      expect(
        await q(`SELECT state, count(*)::int AS n, min(attempts) AS lo, max(attempts) AS hi,
          count(*) FILTER (WHERE lease_owner IS NOT NULL)::int AS leased
          FROM $s.items WHERE run_id = $1 GROUP BY state`),
      ).toEqual([{ state: "completed", n: ITEMS, lo: 1, hi: 1, leased: 0 }])
      // one attempt per item, numbered 1, ended ok, by the worker whose output the item keeps
      expect(
        await q(`SELECT count(*)::int AS n, count(DISTINCT a.item_id)::int AS items,
          count(*) FILTER (WHERE a.n = 1 AND a.outcome = 'ok' AND i.output = 'by ' || a.owner)::int AS good
          FROM $s.attempts a JOIN $s.items i ON i.id = a.item_id WHERE a.run_id = $1`),
      ).toEqual([{ n: ITEMS, items: ITEMS, good: ITEMS }])
      // the tallies the triggers kept, summed over the workers' shards, equal the items' own counts and sums
      const tallies = await q(`SELECT state, sum(n)::int AS n, sum(attempts) AS attempts, sum(input_tokens)
        AS input_tokens, sum(output_tokens) AS output_tokens FROM $s.tallies WHERE run_id = $1 GROUP BY state
        HAVING sum(n) <> 0 OR sum(attempts) <> 0 ORDER BY state`)
      expect([...tallies]).toEqual([
        { state: "completed", n: ITEMS, attempts: ITEMS, input_tokens: 3 * ITEMS, output_tokens: 2 * ITEMS },
      ])
      expect(await ledgers[0]!.claims.holders(run.id)).toEqual([])
    } finally {
      await sql.close()
      for (const l of ledgers) await l.close()
    }
  },
  60_000,
)

/**
 * Asks the cache for a few items never looked up, after a place of its own choosing (so that items are looked up
 * below the ids it has claimed), records them as misses, and claims in steps of `STEP` only the items looked up,
 * completing each step's items with their answer written to the cache; until nothing is left to look up or claim.
 */
async function lookAndWork(ledger: Ledger, run: number, owner: string, seed: number): Promise<number[]> {
  const taken: number[] = []
  let held: { id: number; attempt: number }[] = []
  let random = seed
  const write = { provider: "openai", model: "m", cost: 0.01 }
  for (;;) {
    random = (random * 1103515245 + 12345) % 2 ** 31
    const after = random % ITEMS
    const some = await ledger.cache.pending(run, { after, limit: 40 })
    const unlooked = some.length > 0 ? some : await ledger.cache.pending(run, { after: 0, limit: 40 })
    await ledger.cache.serve(
      run,
      owner,
      [],
      unlooked.map((i) => ({ id: i.id, key: `key-${i.id}` })),
    )
    const outcomes = held.map((c) => ({ ...ok(c.id, c.attempt, `by ${owner}`), cache: write }))
    held = await ledger.claims.step(run, owner, outcomes, STEP, 60_000, { looked: true })
    taken.push(...held.map((c) => c.id))
    if (held.length === 0 && unlooked.length === 0) return taken
  }
}

test.skipIf(SKIP_PG)(
  "four workers looking items up out of order while they claim only the looked ones take every item exactly once: none is left below a claimer's cursor",
  async () => {
    await using schema = await pgSchema()
    const ledgers = await Promise.all(Array.from({ length: WORKERS }, () => postgres.open(schema.url)))
    try {
      const { run } = await seed(ledgers[0]!, ITEMS)
      const taken = await Promise.all(ledgers.map((l, i) => lookAndWork(l, run.id, `w${i}`, i + 1)))
      const all = taken.flat()
      expect(all.length).toBe(ITEMS)
      expect(new Set(all).size).toBe(ITEMS)
      expect(await ledgers[0]!.reads.counts(run.id)).toMatchObject({
        completed: ITEMS,
        pending: 0,
        running: 0,
      })
      expect((await ledgers[0]!.reads.summary(run.id)).cache).toEqual({ hits: 0, misses: ITEMS, savedUsd: 0 })
      expect((await ledgers[0]!.cache.stats()).entries).toBe(ITEMS)
      await tallied(ledgers[0]!, run.id)
    } finally {
      for (const l of ledgers) await l.close()
    }
  },
  60_000,
)
