/**
 * PostgreSQL's ingest while the planner's statistics know nothing of the run: a new store, and a new run of a store
 * analyzed before it, its batches and the same rows read again. What it stores is checked here; how fast (a batch's
 * look at the keys its input holds once took 10 s for 10,000 rows) is bench/postgres.ts's to measure.
 */
import { expect, test } from "bun:test"
import { SQL } from "bun"
import * as postgres from "../../../src/core/ledger/postgres/postgres.ts"
import { rows, seed } from "../../lib/ledger.ts"
import { pgSchema, pgServer, SKIP_PG } from "../../lib/pg.ts"

const BATCH = 10_000

test.skipIf(SKIP_PG)(
  "batches of 10,000 rows in a new store, in a new run of an analyzed store, and read again: every row once, no duplicate counted, ids gapless",
  async () => {
    await using schema = await pgSchema()
    const ledger = await postgres.open(schema.url)
    const sql = new SQL(await pgServer(), { max: 1 })
    try {
      const store = async (run: number, from: number): Promise<void> => {
        const input = (await ledger.runs.inputs(run))[0]!
        const added = await ledger.ingest.add(
          run,
          input,
          { rows: rows(BATCH, from), problems: [], checkpoint: { offset: from + BATCH } },
          false,
        )
        expect(added).toEqual({ added: BATCH, duplicates: 0 })
      }
      // a new store: the first batch of its first run
      const first = await seed(ledger, 0, "first")
      await store(first.run.id, 1)
      await sql.unsafe(`ANALYZE "${schema.schema}".items`)
      // a new run of a store whose statistics know only the first: its batches, then the same rows read again
      const second = await seed(ledger, 0, "second")
      for (const from of [1, BATCH + 1, 2 * BATCH + 1]) await store(second.run.id, from)
      const input = (await ledger.runs.inputs(second.run.id))[0]!
      const again = await ledger.ingest.add(
        second.run.id,
        input,
        { rows: rows(3 * BATCH), problems: [], checkpoint: { offset: 3 * BATCH } },
        true,
      )
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
