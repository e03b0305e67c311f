/** The SQLite driver: the ledger contract, and what only SQLite has (the file, its pragmas, its migrations). */
import { describe, expect, test } from "bun:test"
import { Database } from "bun:sqlite"
import { statSync } from "node:fs"
import { join } from "node:path"
import { StoreError } from "../../../src/plugins/api/errors.ts"
import type { Ledger } from "../../../src/core/ledger/ledger.ts"
import { DB_FILE } from "../../../src/core/ledger/sqlite/faults.ts"
import { MIGRATIONS } from "../../../src/core/ledger/sqlite/schema.ts"
import { neighbours, slot } from "../../../src/core/ledger/sqlite/cache.ts"
import * as sqlite from "../../../src/core/ledger/sqlite/sqlite.ts"
import { itemsOf, ok, tallied, testLedger } from "../../lib/ledger-contract.ts"
import { JOB, seed } from "../../lib/ledger.ts"
import { tmpdir } from "../../lib/tmp.ts"

testLedger("sqlite", async () => {
  const tmp = await tmpdir()
  const opened: Ledger[] = []
  return {
    async open() {
      const ledger = sqlite.open(tmp.path)
      opened.push(ledger)
      return ledger
    },
    async [Symbol.asyncDispose]() {
      for (const ledger of opened) await ledger.close()
      await tmp[Symbol.asyncDispose]()
    },
  }
})

/** Takes a store back to before migration 9 (embedding vectors, exports). */
function undoVectors(db: Database): void {
  undoReviews(db)
  db.run("DROP TABLE exports")
  for (const t of ["items", "cache"]) db.run(`ALTER TABLE ${t} DROP COLUMN vector`)
}

/**
 * Takes a store back to before migration 13 (prompt caching: cache-write tokens, primes), its tally trigger as
 * migration 7 made it.
 */
function undoPrimes(db: Database): void {
  db.run("DROP TABLE primes")
  db.run("DROP TRIGGER items_tally")
  for (const t of ["items", "tallies"])
    for (const c of ["cache_write_tokens", "batch_write_tokens"]) db.run(`ALTER TABLE ${t} DROP COLUMN ${c}`)
  db.run("ALTER TABLE attempts DROP COLUMN cache_write_tokens")
  const seven = MIGRATIONS[6] as string
  const start = seven.indexOf("CREATE TRIGGER items_tally")
  db.run(seven.slice(start, seven.indexOf("END;", start) + 4))
}

/** Takes a store back to before migration 12 (pipelines: a run's parent and step). */
function undoSteps(db: Database): void {
  undoPrimes(db)
  db.run("DROP INDEX runs_parent")
  for (const c of ["parent", "step"]) db.run(`ALTER TABLE runs DROP COLUMN ${c}`)
}

/** Takes a store back to before migration 10 (review decisions). */
function undoReviews(db: Database): void {
  undoSteps(db)
  db.run("DROP TABLE reviews")
}

/** Takes a store back to before migration 8 (the run's rate buckets). */
function undoRates(db: Database): void {
  undoVectors(db)
  db.run("DROP TABLE rates")
}

/** Takes a store back to before migration 7 (the response cache), its triggers as migration 4 made them. */
function undoCache(db: Database): void {
  undoRates(db)
  db.run("DROP INDEX items_unlooked")
  for (const c of ["cache_key", "cached_usage"]) db.run(`ALTER TABLE items DROP COLUMN ${c}`)
  for (const t of ["cache", "cache_tallies"]) db.run(`DROP TABLE ${t}`)
  for (const t of ["items_tally", "items_progress"]) db.run(`DROP TRIGGER ${t}`)
  const four = MIGRATIONS[3] as string
  for (const name of ["items_tally", "items_progress"]) {
    const start = four.indexOf(`CREATE TRIGGER ${name}`)
    db.run(four.slice(start, four.indexOf("END;", start) + 4))
  }
}

/** Takes a store back to before migration 6 (the worker registry). */
function undoWorkers(db: Database): void {
  undoCache(db)
  db.run("DROP TABLE workers")
}

/** Takes a store back to before migration 5 (canaries). */
function undoCanaries(db: Database): void {
  undoWorkers(db)
  db.run("DROP TABLE canaries")
}

/** Takes a store back to before migration 4 (maintained tallies). */
function undoTallies(db: Database): void {
  undoCanaries(db)
  for (const t of ["items_tally", "items_progress", "attempts_error_insert", "attempts_error_update"])
    db.run(`DROP TRIGGER ${t}`)
  db.run("DROP INDEX attempts_failed")
  for (const t of ["tallies", "progress", "error_tallies"]) db.run(`DROP TABLE ${t}`)
}

/** Takes a store back to before migration 3 (batch mode). */
function undoBatches(db: Database): void {
  undoTallies(db)
  db.run("DROP INDEX items_batch")
  db.run("DROP TABLE batches")
  for (const c of [
    "batch_id",
    "batch_line",
    "batch_offset",
    "batch_bytes",
    "batch_input_tokens",
    "batch_output_tokens",
    "batch_cached_tokens",
  ])
    db.run(`ALTER TABLE items DROP COLUMN ${c}`)
  db.run("ALTER TABLE attempts DROP COLUMN batch_id")
  for (const c of ["queue_tokens", "queue_requests", "batch_owner", "batch_expires", "exported_at"])
    db.run(`ALTER TABLE runs DROP COLUMN ${c}`)
}

const pragma = <T>(db: Database, name: string): T | undefined =>
  Object.values(db.query(`PRAGMA ${name}`).get() ?? {})[0] as T | undefined

describe("the SQLite store", () => {
  test("creates an owner-only directory and database in WAL mode with the schema version set", async () => {
    await using tmp = await tmpdir()
    const home = tmp.join(".spool")
    const db = sqlite.open(home)
    expect(statSync(home).mode & 0o777).toBe(0o700)
    expect(statSync(db.path).mode & 0o777).toBe(0o600)
    expect(db.path).toBe(join(home, DB_FILE))
    expect(pragma<string>(db.db, "journal_mode")).toBe("wal")
    expect(pragma<number>(db.db, "synchronous")).toBe(2)
    expect(pragma<number>(db.db, "cache_size")).toBe(-16_384)
    expect(pragma<number>(db.db, "foreign_keys")).toBe(1)
    expect(pragma<number>(db.db, "busy_timeout")).toBe(10_000)
    expect(pragma<number>(db.db, "user_version")).toBe(MIGRATIONS.length)
    expect(MIGRATIONS.length).toBe(13)
    await db.close()
    // opening again migrates nothing and keeps the data
    const again = sqlite.open(home)
    expect(await again.runs.list()).toEqual([])
    await again.close()
  })

  test("commits at the durability asked for, and applies batch lines without an fsync of their own, then back", async () => {
    await using tmp = await tmpdir()
    const db = sqlite.open(tmp.path, { synchronous: "NORMAL" })
    expect(pragma<number>(db.db, "synchronous")).toBe(1)
    await db.close()
    const full = sqlite.open(tmp.path)
    const { run } = await seed(full, 1)
    const [id] = (await full.batches.packable(run.id, 1)).map((p) => p.id)
    const b = (await full.batches.intend(
      run.id,
      { tag: "t", requests: "/r", bytes: 1, tokens: 1 },
      [{ id: id!, line: 1, offset: 0, bytes: 1 }],
      [],
      "w",
    ))!
    await full.batches.submitted(b.id, { id: "b", status: "in_progress", phase: "in_progress" })
    await full.batches.apply(
      b.id,
      [{ item: id!, to: "completed", label: "ok", output: "o", endedAt: Date.now() }],
      "w",
    )
    expect(pragma<number>(full.db, "synchronous")).toBe(2)
    await full.close()
  })

  test("refuses a store written by a newer schema", async () => {
    await using tmp = await tmpdir()
    const db = sqlite.open(tmp.path)
    db.db.run("PRAGMA user_version = 99")
    await db.close()
    expect(() => sqlite.open(tmp.path)).toThrow(
      `was written by a newer spool (schema 99, this one knows ${MIGRATIONS.length})`,
    )
  })

  test("a store of schema 1 is migrated on open: the cached-token columns are added, the data kept", async () => {
    await using tmp = await tmpdir()
    const db = sqlite.open(tmp.path)
    const { run } = await db.runs.create({
      name: "r",
      job: JOB,
      fingerprint: "fp",
      resume: "",
      inputs: [{ path: "/in.jsonl", format: "jsonl" }],
    })
    undoBatches(db.db)
    db.db.run("ALTER TABLE items DROP COLUMN cached_input_tokens")
    db.db.run("ALTER TABLE attempts DROP COLUMN cached_input_tokens")
    db.db.run("PRAGMA user_version = 1")
    await db.close()
    const again = sqlite.open(tmp.path)
    expect(pragma<number>(again.db, "user_version")).toBe(MIGRATIONS.length)
    const columns = (table: string) =>
      again.db
        .query<{ name: string }, []>(`PRAGMA table_info(${table})`)
        .all()
        .map((c) => c.name)
    expect(columns("items")).toContain("cached_input_tokens")
    expect(columns("attempts")).toContain("cached_input_tokens")
    expect((await again.runs.latest("r"))?.id).toBe(run.id)
    await again.close()
  })

  test("a store of schema 2 is migrated to 4 on open: batch tables and columns are added, the data kept", async () => {
    await using tmp = await tmpdir()
    const db = sqlite.open(tmp.path)
    const { run } = await seed(db, 2)
    undoBatches(db.db)
    db.db.run("PRAGMA user_version = 2")
    await db.close()
    const again = sqlite.open(tmp.path)
    expect(pragma<number>(again.db, "user_version")).toBe(MIGRATIONS.length)
    expect(await again.batches.list(run.id)).toEqual([])
    expect(
      (await itemsOf(again, run.id)).map((i) => [i.key, i.state, i.batch_id, i.batch_input_tokens]),
    ).toEqual([
      ["k1", "pending", null, 0],
      ["k2", "pending", null, 0],
    ])
    expect(await again.runs.get(run.id)).toMatchObject({ queue_tokens: null, exported_at: null })
    await again.close()
  })

  test("a store of schema 3 is migrated to 4 on open: tallies, completions and error classes are counted from the data", async () => {
    await using tmp = await tmpdir()
    const db = sqlite.open(tmp.path)
    const { run } = await seed(db, 5)
    const claimed = await db.claims.step(run.id, "w", [], 4, 60_000)
    const at = Date.UTC(2026, 0, 1, 12, 0, 5)
    await db.claims.step(
      run.id,
      "w",
      [
        { ...ok(claimed[0]!.id, 1), endedAt: at },
        { ...ok(claimed[1]!.id, 1), endedAt: at + 20_000 },
        {
          item: claimed[2]!.id,
          attempt: 1,
          to: "failed",
          label: "failed",
          errorClass: "bad_request",
          error: "no",
          latencyMs: 5,
          endedAt: at,
        },
      ],
      0,
      60_000,
    )
    undoTallies(db.db)
    db.db.run("PRAGMA user_version = 3")
    await db.close()
    const again = sqlite.open(tmp.path)
    expect(pragma<number>(again.db, "user_version")).toBe(MIGRATIONS.length)
    const s = await again.reads.summary(run.id, at + 30_000)
    expect(s.counts).toMatchObject({ completed: 2, failed: 1, running: 1, pending: 1 })
    expect(s.total).toBe(5)
    expect(s.attempts).toBe(4)
    expect([s.inputTokens, s.outputTokens]).toEqual([6, 4])
    expect(s.errors).toEqual([{ class: "bad_request", count: 1, example: "no", key: "k3" }])
    expect(await again.reads.progress(run.id, at - 5_000, 10_000)).toEqual([
      { at: at - 5_000, completed: 1, failed: 1 },
      { at: at + 15_000, completed: 1, failed: 0 },
    ])
    await tallied(again, run.id)
    await again.close()
  })

  test("a store of schema 4 is migrated on open: its runs have no canary, and one can start", async () => {
    await using tmp = await tmpdir()
    const db = sqlite.open(tmp.path)
    const { run } = await seed(db, 3)
    undoCanaries(db.db)
    db.db.run("PRAGMA user_version = 4")
    await db.close()
    const again = sqlite.open(tmp.path)
    expect(pragma<number>(again.db, "user_version")).toBe(MIGRATIONS.length)
    expect(await again.canaries.get(run.id)).toBeNull()
    expect(await again.canaries.start(run.id, 2)).toMatchObject({ items: 2, reported_at: null })
    expect(await again.reads.counts(run.id)).toMatchObject({ pending: 3 })
    await again.close()
  })

  test("a store of schema 5 is migrated on open: its runs have no workers, and one can register", async () => {
    await using tmp = await tmpdir()
    const db = sqlite.open(tmp.path)
    const { run } = await seed(db, 2)
    undoWorkers(db.db)
    db.db.run("PRAGMA user_version = 5")
    await db.close()
    const again = sqlite.open(tmp.path)
    expect(pragma<number>(again.db, "user_version")).toBe(MIGRATIONS.length)
    expect(await again.workers.list(run.id)).toEqual([])
    await again.workers.beat(run.id, "h:1:a", 1_000)
    expect(await again.workers.list(run.id)).toEqual([{ owner: "h:1:a", started_at: 1_000, beat_at: 1_000 }])
    expect(await again.reads.counts(run.id)).toMatchObject({ pending: 2 })
    await again.close()
  })

  test("a store of schema 6 is migrated on open: its pending items are asked of the cache, its finished ones kept, its tallies still exact", async () => {
    await using tmp = await tmpdir()
    const db = sqlite.open(tmp.path)
    const { run } = await seed(db, 3)
    const [c] = await db.claims.step(run.id, "w", [], 1, 60_000)
    await db.claims.step(run.id, "w", [ok(c!.id, 1)], 0, 60_000)
    undoCache(db.db)
    db.db.run("PRAGMA user_version = 6")
    await db.close()
    const again = sqlite.open(tmp.path)
    expect(pragma<number>(again.db, "user_version")).toBe(MIGRATIONS.length)
    expect((await again.cache.pending(run.id, { after: 0, limit: 10 })).map((i) => i.key)).toEqual([
      null,
      null,
    ])
    expect((await itemsOf(again, run.id)).map((i) => [i.state, i.cache_key, i.cached_usage])).toEqual([
      ["completed", null, null],
      ["pending", null, null],
      ["pending", null, null],
    ])
    expect((await again.reads.summary(run.id)).cache).toEqual({ hits: 0, misses: 0, savedUsd: 0 })
    // the triggers as migration 7 left them: a claim and an outcome are still counted
    const [d] = await again.claims.step(run.id, "w", [], 1, 60_000)
    await again.claims.step(run.id, "w", [ok(d!.id, 1)], 0, 60_000)
    await tallied(again, run.id)
    await again.close()
  })

  test("a store of schema 7 is migrated on open: its runs' rate buckets start full at their first take", async () => {
    await using tmp = await tmpdir()
    const db = sqlite.open(tmp.path)
    const { run } = await seed(db, 1)
    undoRates(db.db)
    db.db.run("PRAGMA user_version = 7")
    await db.close()
    const again = sqlite.open(tmp.path)
    expect(pragma<number>(again.db, "user_version")).toBe(MIGRATIONS.length)
    expect(await again.workers.take(run.id, "rpm", 60, 100, 1_000)).toEqual({ granted: 60, waitMs: 40_000 })
    await again.close()
  })

  test("a store of schema 12 is migrated on open: its tokens and tallies kept, cache writes counted from then on, no primes", async () => {
    await using tmp = await tmpdir()
    const db = sqlite.open(tmp.path)
    const { run } = await seed(db, 4)
    const c = await db.claims.step(run.id, "w", [], 2, 60_000)
    await db.claims.step(
      run.id,
      "w",
      [
        { ...ok(c[0]!.id, 1), inputTokens: 50, cachedTokens: 20 },
        { ...ok(c[1]!.id, 1), to: "failed", label: "failed", errorClass: "bad_request", inputTokens: 7 },
      ],
      0,
      60_000,
    )
    const [id] = (await db.batches.packable(run.id, 1)).map((p) => p.id)
    const b = (await db.batches.intend(
      run.id,
      { tag: "t", requests: "/r", bytes: 1, tokens: 1 },
      [{ id: id!, line: 1, offset: 0, bytes: 1 }],
      [],
      "w",
    ))!
    await db.batches.submitted(b.id, { id: "b", status: "in_progress", phase: "in_progress" })
    undoPrimes(db.db)
    db.db.run("PRAGMA user_version = 12")
    await db.close()
    const again = sqlite.open(tmp.path)
    expect(pragma<number>(again.db, "user_version")).toBe(MIGRATIONS.length)
    expect(
      (await itemsOf(again, run.id)).map((i) => [i.state, i.input_tokens, i.cache_write_tokens]),
    ).toEqual([
      ["completed", 50, 0],
      ["failed", 7, 0],
      ["submitted", 0, 0],
      ["pending", 0, 0],
    ])
    const before = await again.reads.summary(run.id)
    expect([before.inputTokens, before.cachedTokens, before.writeTokens, before.primes.count]).toEqual([
      57, 20, 0, 0,
    ])
    await tallied(again, run.id)
    // the trigger as migration 13 left it, and the batch path, count the writes of the calls made since
    const [d] = await again.claims.step(run.id, "w", [], 1, 60_000)
    await again.claims.step(run.id, "w", [{ ...ok(d!.id, 1), writeTokens: 300 }], 0, 60_000)
    await again.batches.apply(
      b.id,
      [{ item: id!, to: "completed", label: "ok", output: "o", writeTokens: 40, endedAt: Date.now() }],
      "w",
    )
    await tallied(again, run.id)
    const after = await again.reads.summary(run.id)
    expect([after.writeTokens, after.batch.writeTokens]).toEqual([340, 40])
    await again.close()
  })

  test("a store of schema 10 is migrated on open: its cache entries are kept, in the order they were written, each found by its key", async () => {
    await using tmp = await tmpdir()
    const raw = new Database(tmp.join(DB_FILE), { create: true })
    for (const m of MIGRATIONS.slice(0, 10)) raw.run(m)
    raw.run("PRAGMA user_version = 10")
    // migration 7's table: an entry's rowid is its slot, written in another order than the table's
    for (const [key, at] of [
      ["k-b", 20],
      ["k-a", 10],
      ["k-c", 30],
    ] as const)
      raw.run(
        `INSERT INTO cache (id, key, provider, model, output, input_tokens, output_tokens, cached_input_tokens, cost_usd,
         bytes, created_at) VALUES (?, ?, 'mock', 'm', ?, 3, 2, 0, 0.5, 4, ?)`,
        [slot(key), key, `out ${key}`, at],
      )
    raw.close()
    const l = sqlite.open(tmp.path)
    expect(pragma<number>(l.db, "user_version")).toBe(MIGRATIONS.length)
    expect(l.db.query("SELECT id, slot, key FROM cache ORDER BY id").all()).toEqual(
      ["k-a", "k-b", "k-c"].map((key, i) => ({ id: i + 1, slot: slot(key), key })),
    )
    const got = await l.cache.get(["k-c", "k-a", "k-x"], 0)
    expect(got.map((e) => [e.key, e.output, e.created_at]).sort()).toEqual([
      ["k-a", "out k-a", 10],
      ["k-c", "out k-c", 30],
    ])
    expect(await l.cache.get(["k-a", "k-b", "k-c"], 15)).toHaveLength(2)
    expect((await l.cache.stats()).entries).toBe(3)
    expect(await l.cache.prune(15)).toEqual({ entries: 1, bytes: 4 })
    await l.close()
  })

  test("a look-up finds the same entries whichever order they are asked in: the order they were written, backwards, shuffled", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const keys = Array.from({ length: 1_000 }, (_, i) => `key-${i}`)
    const insert = l.db.prepare(
      `INSERT INTO cache (slot, key, provider, model, output, input_tokens, output_tokens, cached_input_tokens,
       cost_usd, bytes, created_at) VALUES (?, ?, 'mock', 'm', ?, 1, 1, 0, NULL, 1, ?)`,
    )
    // every tenth key has no entry; entries 500 on were written later (a ttl reaches only those)
    for (const [i, key] of keys.entries())
      if (i % 10 !== 3) insert.run(slot(key), key, `out ${i}`, i < 500 ? 1 : 2)
    let seed = 7
    const shuffled = [...keys].sort(() => ((seed = (seed * 48271) % 2147483647) % 3) - 1)
    for (const order of [keys, [...keys].reverse(), shuffled, keys])
      for (const since of [0, 2]) {
        const found: string[] = []
        for (let i = 0; i < order.length; i += 64) {
          const part = order.slice(i, i + 64)
          const got = await l.cache.get(part, since)
          for (const e of got) expect(e.output).toBe(`out ${e.key.slice(4)}`)
          found.push(...got.map((e) => e.key))
        }
        const want = keys.filter((_, i) => i % 10 !== 3 && (since === 0 || i >= 500))
        expect(found.sort()).toEqual([...want].sort())
      }
    await l.close()
  })

  test("neighbours: a look-up reads on along the table after entries found where guessed, or close together", () => {
    expect(neighbours([], 0, 10)).toBeUndefined()
    expect(neighbours([5, 6, 7, 9], 0, 4)).toBe(10)
    expect(neighbours([5, 900, 40], 0, 3)).toBeUndefined()
    expect(neighbours([5, 900, 40], 2, 3)).toBe(901)
    expect(neighbours([5, 900, 40], 1, 3)).toBeUndefined()
  })

  for (const v of [0, 1, 2, 3]) {
    test(`a store made by the migrations up to ${v} alone, as that spool left it, opens at ${MIGRATIONS.length} and runs its items to the end`, async () => {
      await using tmp = await tmpdir()
      const raw = new Database(tmp.join(DB_FILE), { create: true })
      for (const m of MIGRATIONS.slice(0, v)) raw.run(m)
      raw.run(`PRAGMA user_version = ${v}`)
      if (v > 0) {
        raw.run(
          "INSERT INTO runs (name, state, job, fingerprint, resume, created_at, updated_at) VALUES ('old', 'running', ?, 'fp', 'spool run old.toml', 1, 1)",
          [JSON.stringify(JOB)],
        )
        raw.run(
          "INSERT INTO inputs (run_id, idx, path, format, checkpoint, rows, done) VALUES (1, 0, '/in.jsonl', 'jsonl', '{\"offset\":40}', 2, 1)",
        )
        for (const k of [1, 2])
          raw.run(
            `INSERT INTO items (run_id, input, key, row, data, state, attempts, output, input_tokens, output_tokens, updated_at)
             VALUES (1, 0, 'k${k}', ${k}, '{}', ?, ?, ?, ?, 1, 1)`,
            k === 1 ? ["completed", 1, "done", 5] : ["pending", 0, null, 0],
          )
      }
      raw.close()
      const l = sqlite.open(tmp.path)
      expect(pragma<number>(l.db, "user_version")).toBe(MIGRATIONS.length)
      if (v === 0) {
        expect(await l.runs.list()).toEqual([])
        await l.close()
        return
      }
      const run = (await l.runs.latest("old"))!
      expect(run.job).toEqual(JOB)
      expect((await l.runs.inputs(run.id))[0]?.checkpoint).toEqual({ offset: 40 })
      expect(await l.reads.counts(run.id)).toMatchObject({ completed: 1, pending: 1 })
      await tallied(l, run.id)
      const [c] = await l.claims.step(run.id, "w", [], 5, 60_000)
      await l.claims.step(run.id, "w", [ok(c!.id, c!.attempt)], 0, 60_000)
      expect((await itemsOf(l, run.id)).map((i) => [i.key, i.state, i.output])).toEqual([
        ["k1", "completed", "done"],
        ["k2", "completed", "out"],
      ])
      await tallied(l, run.id)
      await l.close()
    })
  }

  test("a run whose stored job does not decode is refused, naming the store and the run", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const { run } = await seed(l, 1)
    l.db.run("UPDATE runs SET job = ? WHERE id = ?", [
      JSON.stringify({ ...JOB, provider: { name: 7 } }),
      run.id,
    ])
    const err = await l.runs.get(run.id).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(StoreError)
    expect((err as StoreError).message).toStartWith(
      `the store ${l.path} holds a job (run ${run.id}, "r") that this spool cannot read: `,
    )
    expect((err as StoreError).message).toContain("provider.name")
    l.db.run("UPDATE runs SET job = '{not json' WHERE id = ?", [run.id])
    await expect(l.runs.latest("r")).rejects.toThrow(
      `the store ${l.path} holds a job (run ${run.id}, "r") that this spool cannot read: `,
    )
    l.db.run(`UPDATE inputs SET checkpoint = '"offset 40"'`)
    await expect(l.runs.inputs(run.id)).rejects.toThrow(
      `the store ${l.path} holds a checkpoint (input /in.jsonl) that this spool cannot read`,
    )
    await l.close()
  })

  test("each method turns SQLite's errors into the store's own, as a rejected promise: a read-only file", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const { run } = await seed(l, 1)
    l.db.run("PRAGMA query_only = 1")
    const step = l.claims.step(run.id, "w", [], 1, 60_000)
    expect(step).toBeInstanceOf(Promise)
    const err = await step.catch((e: unknown) => e)
    expect(err).toBeInstanceOf(StoreError)
    expect((err as StoreError).message).toStartWith(`cannot write to the store ${l.path}: `)
    await l.close()
  })
})
