/**
 * The PostgreSQL driver when its server goes away: a ledger call made while the server is down (stopped cleanly, or
 * killed) waits for it and succeeds once it is back; a server that stays down gives a StoreError naming the store,
 * its password masked. Each test has a server of its own (test/lib/pg.ts `privateServer()`), which it stops.
 */
import { SQL } from "bun"
import { describe, expect, test } from "bun:test"
import { StoreError } from "../../../src/plugins/api/errors.ts"
import * as postgres from "../../../src/core/ledger/postgres/postgres.ts"
import { JOB, rows } from "../../lib/ledger.ts"
import { privateServer, SKIP_PG_PRIVATE } from "../../lib/pg.ts"

/** A run of one input with its first three rows ingested (not to its end). */
async function begun(ledger: postgres.PgLedger) {
  const { run } = await ledger.runs.create({
    name: "r",
    job: JOB,
    fingerprint: "fp",
    resume: "spool run job.toml",
    inputs: [{ path: "/in.jsonl", format: "jsonl" }],
  })
  const input = (await ledger.runs.inputs(run.id))[0]!
  await ledger.ingest.add(run.id, input, { rows: rows(3), problems: [], checkpoint: { offset: 3 } }, false)
  return { run, input }
}

describe.skipIf(SKIP_PG_PRIVATE)("postgres: the server restarted or gone", () => {
  // fast: a clean shutdown, clients told (57P01); immediate: killed, no checkpoint, crash recovery at the next start
  for (const mode of ["fast", "immediate"] as const)
    test(`a transaction cut off by the stop (-m ${mode}) and a read begun while the server is down wait for it, and succeed once it is back`, async () => {
      await using server = await privateServer()
      const ledger = await postgres.open(server.url)
      const other = new SQL({ url: server.url, max: 1 })
      try {
        const { run, input } = await begun(ledger)
        // another session holds the items table, so the ingest below is mid-transaction when the server stops
        const held = await other.reserve()
        await held`BEGIN`
        await held`LOCK TABLE spool.items IN ACCESS EXCLUSIVE MODE`
        const start = Date.now()
        const added = ledger.ingest.add(
          run.id,
          input,
          { rows: rows(3, 4), problems: [], checkpoint: { offset: 6 } },
          true,
        )
        while ((await held`SELECT count(*)::int AS n FROM pg_locks WHERE NOT granted`)[0].n === 0)
          await Bun.sleep(20)
        await server.stop(mode)
        // and a read begun on the pool's now dead connections
        const listed = ledger.runs.list()
        await Bun.sleep(2000)
        await server.start()
        const [list, batch] = await Promise.all([listed, added])
        expect(list.map((r) => [r.id, r.name, r.state])).toEqual([[run.id, "r", "running"]])
        expect(batch).toEqual({ added: 3, duplicates: 0 })
        expect(Date.now() - start).toBeGreaterThanOrEqual(2000)
        // the batch was stored once, with its checkpoint; what was committed before the stop is kept
        expect((await ledger.runs.inputs(run.id))[0]).toMatchObject({ rows: 6, checkpoint: { offset: 6 } })
        expect((await ledger.runs.latest("r"))?.id).toBe(run.id)
      } finally {
        await other.close()
        await ledger.close()
      }
    })

  test("a server that stays down: after SPOOL_PG_RETRY_S, a StoreError names the store with its password masked", async () => {
    await using server = await privateServer()
    // trust auth: the password is not asked for, so a URL with one connects and shows what a user's would
    const url = server.url.replace("postgres@", "postgres:s3cret@")
    const was = process.env.SPOOL_PG_RETRY_S
    process.env.SPOOL_PG_RETRY_S = "1"
    const ledger = await postgres.open(url).finally(() => {
      if (was === undefined) delete process.env.SPOOL_PG_RETRY_S
      else process.env.SPOOL_PG_RETRY_S = was
    })
    try {
      await begun(ledger)
      await server.stop("fast")
      const start = Date.now()
      const err = await ledger.runs.list().then(
        () => null,
        (e: unknown) => e,
      )
      const waited = Date.now() - start
      expect(err).toBeInstanceOf(StoreError)
      const { message, hint } = err as StoreError
      expect(message).toStartWith(
        `cannot reach the store postgres://postgres:***@127.0.0.1:${server.port}/postgres: `,
      )
      expect(hint).toContain("tried for 1 s; SPOOL_PG_RETRY_S sets how long")
      expect(`${message} ${hint}`).not.toContain("s3cret")
      expect(waited).toBeGreaterThanOrEqual(1000)
      expect(waited).toBeLessThan(10_000)
    } finally {
      await ledger.close()
    }
  })

  test("opening a store whose server is down: a StoreError after retryMs, the password masked", async () => {
    await using server = await privateServer()
    await server.stop("fast")
    const url = `${server.url.replace("postgres@", "postgres:s3cret@")}?schema=spool_eu`
    const start = Date.now()
    const err = await postgres.open(url, { retryMs: 500 }).then(
      () => null,
      (e: unknown) => e,
    )
    expect(err).toBeInstanceOf(StoreError)
    const { message, hint } = err as StoreError
    expect(message).toStartWith(
      `cannot reach the store postgres://postgres:***@127.0.0.1:${server.port}/postgres?schema=spool_eu: `,
    )
    expect(`${message} ${hint}`).not.toContain("s3cret")
    expect(Date.now() - start).toBeGreaterThanOrEqual(500)
  })
})
