/**
 * Opening a PostgreSQL store: a store that is current is opened with one read of its version, no migration and no
 * advisory lock (a read command answers while another session holds the lock); only a store to make or migrate waits
 * for it; a store made by a newer spool is refused, by readers as by writers; a store made by an older one is
 * migrated, its runs kept.
 */
import { SQL } from "bun"
import { describe, expect, test } from "bun:test"
import { StoreError } from "../../../src/plugins/api/errors.ts"
import * as ledger from "../../../src/core/ledger/open.ts"
import * as postgres from "../../../src/core/ledger/postgres/postgres.ts"
import { MIGRATIONS } from "../../../src/core/ledger/postgres/schema.ts"
import { ok, tallied } from "../../lib/ledger-contract.ts"
import { JOB } from "../../lib/ledger.ts"
import { pgSchema, pgServer, SKIP_PG } from "../../lib/pg.ts"
import { spool } from "../../lib/spool.ts"
import { tmpdir } from "../../lib/tmp.ts"

/** A session of its own holding the advisory lock the migration of `schema` takes, until disposed of. */
async function holdLock(schema: string) {
  const sql = new SQL({ url: await pgServer(), max: 1 })
  await sql`SELECT pg_advisory_lock(hashtext(${"spool:" + schema}))`
  return {
    async [Symbol.asyncDispose]() {
      await sql`SELECT pg_advisory_unlock_all()`
      await sql.close()
    },
  }
}

/** Makes a store at `url` with one run in it. */
async function made(url: string): Promise<void> {
  const db = await postgres.open(url)
  try {
    await db.runs.create({ name: "r", job: JOB, fingerprint: "fp", resume: "spool run job.toml", inputs: [] })
  } finally {
    await db.close()
  }
}

/** What a promise came to within `ms`: its value, or "waiting". */
function within<T>(p: Promise<T>, ms: number): Promise<T | "waiting"> {
  return Promise.race([p, Bun.sleep(ms).then(() => "waiting" as const)])
}

describe.skipIf(SKIP_PG)("postgres: opening a store", () => {
  test("a current store is found and opened for reading while another session holds the migration's lock; a store to make waits for it", async () => {
    await using schema = await pgSchema()
    await made(schema.url)
    {
      await using _lock = await holdLock(schema.schema)
      expect(await within(ledger.exists(schema.url), 5000)).toBe(true)
      const db = await within(ledger.open(schema.url, { access: "read" }), 5000)
      if (db === "waiting") throw new Error("the read-only open waited for the advisory lock")
      try {
        expect((await db.runs.list()).map((r) => r.name)).toEqual(["r"])
      } finally {
        await db.close()
      }
      // a writer of a current store does not wait either
      const writer = await within(postgres.open(schema.url), 5000)
      if (writer === "waiting") throw new Error("the writer's open of a current store waited for the lock")
      await writer.close()
    }
    // the lock is the migration's: a store still to make waits for whoever holds it
    await using fresh = await pgSchema()
    const lock = await holdLock(fresh.schema)
    const opening = postgres.open(fresh.url)
    expect(await within(opening, 500)).toBe("waiting")
    await lock[Symbol.asyncDispose]()
    const db = await opening
    expect(await db.runs.list()).toEqual([])
    await db.close()
  })

  test("spool status answers on a current store while another session holds the migration's lock", async () => {
    await using schema = await pgSchema()
    await using tmp = await tmpdir()
    await made(schema.url)
    await using _lock = await holdLock(schema.schema)
    const ran = await within(spool(["status", "--store", schema.url], { cwd: tmp.path }), 15_000)
    if (ran === "waiting") throw new Error("spool status waited for the advisory lock")
    expect(ran.stderr).toBe("")
    expect(ran.code).toBe(0)
    expect(ran.stdout).toContain("run r (#1)")
  })

  test("a store made by a newer spool is refused by a read-only open (found first or not) and by a writer's", async () => {
    await using schema = await pgSchema()
    await made(schema.url)
    const sql = new SQL(await pgServer())
    try {
      await sql.unsafe(
        `UPDATE "${schema.schema}".meta SET value = '${MIGRATIONS.length + 1}' WHERE key = 'version'`,
      )
    } finally {
      await sql.close()
    }
    const newer = new RegExp(
      `made by a newer spool \\(schema version ${MIGRATIONS.length + 1}, this one knows ${MIGRATIONS.length}\\)`,
    )
    expect(await ledger.exists(schema.url)).toBe(true)
    const found = ledger.open(schema.url, { access: "read" })
    await expect(found).rejects.toBeInstanceOf(StoreError)
    await expect(found).rejects.toThrow(newer)
    await expect(ledger.open(schema.url, { access: "read" })).rejects.toThrow(newer)
    await expect(postgres.open(schema.url)).rejects.toThrow(newer)
  })
})

describe.skipIf(SKIP_PG)("postgres: a store made before the response cache (schema version 1)", () => {
  test("is migrated to the current version when opened: its items kept as they were, none looked up yet; an item claimed before goes on, and the cache works", async () => {
    await using schema = await pgSchema()
    const sql = new SQL({ url: await pgServer(), max: 1 })
    try {
      // as the spool of version 1 made it: its one migration, a run of three items written as it wrote them (the
      // ingest's tallies), the first claimed by its claim_step
      await sql.begin(async (tx) => {
        await tx.unsafe(`CREATE SCHEMA "${schema.schema}"`)
        await tx.unsafe(`SET LOCAL search_path TO "${schema.schema}"`)
        await tx.unsafe("CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL)")
        await tx.unsafe(MIGRATIONS[0]!)
        await tx.unsafe("INSERT INTO meta VALUES ('version', '1')")
        await tx.unsafe(
          `INSERT INTO runs (name, state, job, fingerprint, resume, created_at, updated_at)
           VALUES ('old', 'running', $1, 'fp', 'spool run job.toml', 1, 1)`,
          [JSON.stringify({ ...JOB, name: "old" })],
        )
        await tx.unsafe(
          "INSERT INTO inputs (run_id, idx, path, format, done) VALUES (1, 0, '/in.jsonl', 'jsonl', 1)",
        )
        await tx.unsafe(
          `INSERT INTO items (run_id, input, key, row, data, state, updated_at)
           SELECT 1, 0, 'k' || n, n, '{"text":"t' || n || '"}', 'pending', 1 FROM generate_series(1, 3) AS n`,
        )
        await tx.unsafe("INSERT INTO tallies (run_id, state, n) VALUES (1, 'pending', 3)")
        await tx.unsafe("UPDATE runs SET ingested = 1")
        await tx.unsafe("SELECT * FROM claim_step(1, 'w', NULL, 1, 2, 60000, 2147483647, 0, -1)")
      })
      const l = await postgres.open(schema.url)
      try {
        const [version] = await sql.unsafe(`SELECT value FROM "${schema.schema}".meta WHERE key = 'version'`)
        expect(version).toEqual({ value: String(MIGRATIONS.length) })
        const run = (await l.runs.find("old"))!
        const items = async () => {
          const out: unknown[][] = []
          for await (const i of l.reads.items(run.id))
            out.push([i.key, i.state, i.attempts, i.data, i.cache_key, i.cached_usage])
          return out
        }
        expect(await items()).toEqual([
          ["k1", "running", 1, '{"text":"t1"}', null, null],
          ["k2", "pending", 0, '{"text":"t2"}', null, null],
          ["k3", "pending", 0, '{"text":"t3"}', null, null],
        ])
        await tallied(l, run.id)
        // the item claimed before the migration is settled (there was no key to write its answer under); a looked
        // claim takes none of the others until the cache was asked for them
        const [k1, k2, k3] = (await l.reads.page(run.id, { limit: 10 })).map((i) => i.id) as [
          number,
          number,
          number,
        ]
        expect(await l.claims.step(run.id, "w", [ok(k1, 1)], 2, 60_000, { looked: true })).toEqual([])
        const unlooked = await l.cache.pending(run.id, { after: 0, limit: 10 })
        expect(unlooked.map((i) => [i.id, i.key])).toEqual([
          [k2, null],
          [k3, null],
        ])
        const misses = unlooked.map((i) => ({ id: i.id, key: `key-${i.data}` }))
        expect(await l.cache.serve(run.id, "w", [], misses)).toEqual({ hits: 0, misses: 2 })
        const claimed = await l.claims.step(run.id, "w", [], 2, 60_000, { looked: true })
        expect(claimed.map((c) => c.key)).toEqual(["k2", "k3"])
        const write = { provider: "openai", model: "m", cost: 0.5 }
        await l.claims.step(
          run.id,
          "w",
          claimed.map((c) => ({ ...ok(c.id, c.attempt, `answer ${c.key}`), cache: write })),
          0,
          60_000,
        )
        const entries = await l.cache.get(
          misses.map((m) => m.key),
          0,
        )
        expect(entries.map((e) => [e.key, e.output, e.cost_usd]).sort()).toEqual([
          ['key-{"text":"t2"}', "answer k2", 0.5],
          ['key-{"text":"t3"}', "answer k3", 0.5],
        ])
        expect((await l.reads.summary(run.id)).cache).toEqual({ hits: 0, misses: 2, savedUsd: 0 })
        expect((await l.reads.summary(run.id)).counts).toMatchObject({ completed: 3 })
        await tallied(l, run.id)
      } finally {
        await l.close()
      }
    } finally {
      await sql.close()
    }
  })
})

describe.skipIf(SKIP_PG)("a session without the ledger's schema on its search_path", () => {
  test("its writes to the ledger's tables still keep the tallies and the version (the triggers name their own schema)", async () => {
    await using schema = await pgSchema()
    const l = await postgres.open(schema.url)
    const sql = new SQL({ url: await pgServer(), max: 1 })
    try {
      const { run } = await l.runs.create({
        name: "r",
        job: JOB,
        fingerprint: "fp",
        resume: "spool run job.toml",
        inputs: [{ path: "/in.jsonl", format: "jsonl" }],
      })
      const input = (await l.runs.inputs(run.id))[0]!
      await l.ingest.add(
        run.id,
        input,
        { rows: [{ key: "k1", line: 1, data: { a: 1 } }], problems: [], checkpoint: { offset: 1 } },
        true,
      )
      const before = await l.reads.version()
      // as a person at psql, or a tool, would: the tables named with their schema, the session's path elsewhere
      await sql.unsafe(
        `UPDATE "${schema.schema}".items SET state = 'failed', error = 'by hand' WHERE key = 'k1'`,
      )
      await sql.unsafe(`UPDATE "${schema.schema}".runs SET reason = 'by hand'`)
      expect(await l.reads.version()).not.toBe(before)
      expect(await l.reads.counts(run.id)).toMatchObject({ pending: 0, failed: 1 })
    } finally {
      await sql.close()
      await l.close()
    }
  })
})

describe.skipIf(SKIP_PG)("postgres: a store made before prompt caching (schema version 6)", () => {
  test("is migrated to the current version when opened: its tokens and tallies kept, cache writes counted from then on, primes recorded", async () => {
    await using schema = await pgSchema()
    const sql = new SQL({ url: await pgServer(), max: 1 })
    try {
      // as the spool of version 6 made it: its six migrations, a run of three items written as it wrote them (the
      // ingest's tallies), two claimed and settled by its claim_step, with tokens
      await sql.begin(async (tx) => {
        await tx.unsafe(`CREATE SCHEMA "${schema.schema}"`)
        await tx.unsafe(`SET LOCAL search_path TO "${schema.schema}"`)
        await tx.unsafe("CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL)")
        for (const m of MIGRATIONS.slice(0, 6)) await tx.unsafe(m)
        await tx.unsafe("INSERT INTO meta VALUES ('version', '6')")
        await tx.unsafe(
          `INSERT INTO runs (name, state, job, fingerprint, resume, created_at, updated_at)
           VALUES ('old', 'running', $1, 'fp', 'spool run job.toml', 1, 1)`,
          [JSON.stringify({ ...JOB, name: "old" })],
        )
        await tx.unsafe(
          "INSERT INTO inputs (run_id, idx, path, format, done) VALUES (1, 0, '/in.jsonl', 'jsonl', 1)",
        )
        await tx.unsafe(
          `INSERT INTO items (run_id, input, key, row, data, state, updated_at)
           SELECT 1, 0, 'k' || n, n, '{"text":"t' || n || '"}', 'pending', 1 FROM generate_series(1, 3) AS n`,
        )
        await tx.unsafe("INSERT INTO tallies (run_id, state, n) VALUES (1, 'pending', 3)")
        await tx.unsafe("UPDATE runs SET ingested = 1")
        await tx.unsafe("SELECT * FROM claim_step(1, 'w', NULL, 2, 2, 60000, 2147483647, 0, -1, false)")
        const outcomes = [
          {
            item: 1,
            attempt: 1,
            to: "completed",
            label: "ok",
            output: "o",
            inputTokens: 50,
            cachedTokens: 20,
          },
          { item: 2, attempt: 1, to: "failed", label: "failed", errorClass: "bad_request", inputTokens: 7 },
        ].map((o) => ({ ...o, outputTokens: 2, latencyMs: 5, endedAt: 3 }))
        await tx.unsafe("SELECT * FROM claim_step(1, 'w', $1, 0, 3, 60000, 2147483647, 0, -1, false)", [
          JSON.stringify(outcomes),
        ])
      })
      const l = await postgres.open(schema.url)
      try {
        const [version] = await sql.unsafe(`SELECT value FROM "${schema.schema}".meta WHERE key = 'version'`)
        expect(version).toEqual({ value: String(MIGRATIONS.length) })
        const run = (await l.runs.find("old"))!
        const items = async () => {
          const out: unknown[][] = []
          for await (const i of l.reads.items(run.id))
            out.push([i.key, i.state, i.input_tokens, i.cached_input_tokens, i.cache_write_tokens])
          return out
        }
        expect(await items()).toEqual([
          ["k1", "completed", 50, 20, 0],
          ["k2", "failed", 7, 0, 0],
          ["k3", "pending", 0, 0, 0],
        ])
        const before = await l.reads.summary(run.id)
        expect([before.inputTokens, before.cachedTokens, before.writeTokens, before.primes.count]).toEqual([
          57, 20, 0, 0,
        ])
        expect((await l.reads.attempts(1)).map((a) => [a.input_tokens, a.cache_write_tokens])).toEqual([
          [50, null],
        ])
        await tallied(l, run.id)
        // the migrated claim_step and trigger record and count the writes of the calls made since
        const [c] = await l.claims.step(run.id, "w", [], 1, 60_000)
        await l.claims.step(run.id, "w", [{ ...ok(c!.id, 1), writeTokens: 300 }], 0, 60_000)
        await l.primes.record(run.id, {
          prefix: "p",
          batch: null,
          owner: "w",
          startedAt: 1,
          endedAt: 2,
          outcome: "ok",
          inputTokens: 10,
          outputTokens: 1,
          cachedTokens: 0,
          writeTokens: 9,
          latencyMs: 1,
        })
        expect(await items()).toEqual([
          ["k1", "completed", 50, 20, 0],
          ["k2", "failed", 7, 0, 0],
          ["k3", "completed", 3, 0, 300],
        ])
        await tallied(l, run.id)
        const after = await l.reads.summary(run.id)
        expect([after.inputTokens, after.writeTokens, after.primes.count]).toEqual([70, 309, 1])
        expect(await l.primes.last(run.id, "p")).toBe(2)
      } finally {
        await l.close()
      }
    } finally {
      await sql.close()
    }
  })
})
