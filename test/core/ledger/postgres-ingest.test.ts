/**
 * PostgreSQL's ingest while the planner's statistics know nothing of the run: a new store, and a new run of a store
 * analyzed before it. A batch's look at the keys its input holds must stay an index probe or one scan, never a
 * walk of the run's items for each row (10,000 rows took 10 s in a new store, 13 s and 32 s in a second run).
 */
import { expect, test } from "bun:test"
import { SQL } from "bun"
import * as postgres from "../../../src/core/ledger/postgres/postgres.ts"
import { rows, seed } from "../../lib/ledger.ts"
import { pgSchema, pgServer, SKIP_PG } from "../../lib/pg.ts"

const BATCH = 10_000
/** Far above what a batch of 10,000 takes (0.2-0.5 s on a loaded machine), far below a walk a row (10 s). */
const BOUND_MS = 3_000

test.skipIf(SKIP_PG)(
  "a batch of 10,000 rows is stored in under 3 s in a new store, in a new run of an analyzed store, and read again; ids stay gapless",
  async () => {
    await using schema = await pgSchema()
    const ledger = await postgres.open(schema.url)
    const sql = new SQL(await pgServer(), { max: 1 })
    try {
      const timed = async (run: number, from: number): Promise<number> => {
        const input = (await ledger.runs.inputs(run))[0]!
        const started = performance.now()
        const added = await ledger.ingest.add(
          run,
          input,
          { rows: rows(BATCH, from), problems: [], checkpoint: { offset: from + BATCH } },
          false,
        )
        expect(added).toEqual({ added: BATCH, duplicates: 0 })
        return performance.now() - started
      }
      // a new store: the first batch of its first run
      const first = await seed(ledger, 0, "first")
      expect(await timed(first.run.id, 1)).toBeLessThan(BOUND_MS)
      await sql.unsafe(`ANALYZE "${schema.schema}".items`)
      // a new run of a store whose statistics know only the first: its batches, then the same rows read again
      const second = await seed(ledger, 0, "second")
      for (const from of [1, BATCH + 1, 2 * BATCH + 1])
        expect(await timed(second.run.id, from)).toBeLessThan(BOUND_MS)
      const input = (await ledger.runs.inputs(second.run.id))[0]!
      const started = performance.now()
      const again = await ledger.ingest.add(
        second.run.id,
        input,
        { rows: rows(3 * BATCH), problems: [], checkpoint: { offset: 3 * BATCH } },
        true,
      )
      expect(performance.now() - started).toBeLessThan(BOUND_MS)
      expect(again).toEqual({ added: 0, duplicates: 0 })
      const [ids] = await sql.unsafe(
        `SELECT count(*)::int AS n, max(id)::int AS top FROM "${schema.schema}".items`,
      )
      expect(ids).toEqual({ n: 4 * BATCH, top: 4 * BATCH })
    } finally {
      await sql.close()
      await ledger.close()
    }
  },
  120_000,
)
