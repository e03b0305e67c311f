import { describe, expect, test } from "bun:test"
import { statSync } from "node:fs"
import * as store from "../../../src/core/ledger/sqlite/store.ts"
import type { LineOutcome, Outcome } from "../../../src/core/ledger/sqlite/store.ts"
import { TransitionError } from "../../../src/core/base/errors.ts"
import { tmpdir } from "../../lib/tmp.ts"
import { seeded } from "../../lib/ledger.ts"

const ok = (item: number, attempt: number, output = "out"): Outcome => ({
  item,
  attempt,
  to: "completed",
  label: "ok",
  output,
  inputTokens: 3,
  outputTokens: 2,
  latencyMs: 5,
  endedAt: Date.now(),
})

/** Takes a store back to before migration 4 (maintained tallies). */
function undoTallies(db: import("bun:sqlite").Database): void {
  for (const t of ["items_tally", "items_progress", "attempts_error_insert", "attempts_error_update"])
    db.run(`DROP TRIGGER ${t}`)
  db.run("DROP INDEX attempts_failed")
  for (const t of ["tallies", "progress", "error_tallies"]) db.run(`DROP TABLE ${t}`)
}

/** Takes a store back to before migration 3 (batch mode). */
function undoBatches(db: import("bun:sqlite").Database): void {
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

describe("the store", () => {
  test("creates an owner-only directory and database in WAL mode with the schema version set", async () => {
    await using tmp = await tmpdir()
    const home = tmp.join(".spool")
    const db = store.open(home)
    expect(statSync(home).mode & 0o777).toBe(0o700)
    expect(statSync(db.path).mode & 0o777).toBe(0o600)
    expect(db.db.query<{ journal_mode: string }, []>("PRAGMA journal_mode").get()?.journal_mode).toBe("wal")
    expect(db.db.query<{ synchronous: number }, []>("PRAGMA synchronous").get()?.synchronous).toBe(2)
    expect(db.db.query<{ foreign_keys: number }, []>("PRAGMA foreign_keys").get()?.foreign_keys).toBe(1)
    expect(db.db.query<{ user_version: number }, []>("PRAGMA user_version").get()?.user_version).toBe(4)
    db.close()
    // opening again migrates nothing and keeps the data
    const again = store.open(home)
    expect(again.runs()).toEqual([])
    again.close()
  })

  test("refuses a store written by a newer schema", async () => {
    await using tmp = await tmpdir()
    const db = store.open(tmp.path)
    db.db.run("PRAGMA user_version = 99")
    db.close()
    expect(() => store.open(tmp.path)).toThrow("was written by a newer spool (schema 99, this one knows 4)")
  })
  test("a store of schema 1 is migrated on open: the cached-token columns are added, the data kept", async () => {
    await using tmp = await tmpdir()
    const db = store.open(tmp.path)
    const { run } = db.createRun("r", "{}", "fp", "", [{ path: "/in.jsonl", format: "jsonl" }])
    undoBatches(db.db)
    db.db.run("ALTER TABLE items DROP COLUMN cached_input_tokens")
    db.db.run("ALTER TABLE attempts DROP COLUMN cached_input_tokens")
    db.db.run("PRAGMA user_version = 1")
    db.close()
    const again = store.open(tmp.path)
    expect(again.db.query<{ user_version: number }, []>("PRAGMA user_version").get()?.user_version).toBe(4)
    const columns = (table: string) =>
      again.db
        .query<{ name: string }, []>(`PRAGMA table_info(${table})`)
        .all()
        .map((c) => c.name)
    expect(columns("items")).toContain("cached_input_tokens")
    expect(columns("attempts")).toContain("cached_input_tokens")
    expect(again.latestRun("r")?.id).toBe(run.id)
    again.close()
  })

  test("a store of schema 2 is migrated to 4 on open: batch tables and columns are added, the data kept", async () => {
    await using tmp = await tmpdir()
    const { db, run } = seeded(tmp.path, 2)
    undoBatches(db.db)
    db.db.run("PRAGMA user_version = 2")
    db.close()
    const again = store.open(tmp.path)
    expect(again.db.query<{ user_version: number }, []>("PRAGMA user_version").get()?.user_version).toBe(4)
    expect(again.batches(run.id)).toEqual([])
    expect([...again.items(run.id)].map((i) => [i.key, i.state, i.batch_id, i.batch_input_tokens])).toEqual([
      ["k1", "pending", null, 0],
      ["k2", "pending", null, 0],
    ])
    expect(again.run(run.id)).toMatchObject({ queue_tokens: null, exported_at: null })
    again.close()
  })

  test("a store of schema 3 is migrated to 4 on open: tallies, completions and error classes are counted from the data", async () => {
    await using tmp = await tmpdir()
    const { db, run } = seeded(tmp.path, 5)
    const claimed = db.step(run.id, "w", [], 4, 60_000)
    const at = Date.UTC(2026, 0, 1, 12, 0, 5)
    db.step(
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
    db.close()
    const again = store.open(tmp.path)
    expect(again.db.query<{ user_version: number }, []>("PRAGMA user_version").get()?.user_version).toBe(4)
    const s = again.summary(run.id, at + 30_000)
    expect(s.counts).toMatchObject({ completed: 2, failed: 1, running: 1, pending: 1 })
    expect(s.total).toBe(5)
    expect(s.attempts).toBe(4)
    expect([s.inputTokens, s.outputTokens]).toEqual([6, 4])
    expect(s.errors).toEqual([{ class: "bad_request", count: 1, example: "no", key: "k3" }])
    expect(again.progress(run.id, at - 5_000, 10_000)).toEqual([
      { at: at - 5_000, completed: 1, failed: 1 },
      { at: at + 15_000, completed: 1, failed: 0 },
    ])
    again.close()
  })

  test("the last minute's rate of a run younger than a minute is over its own age, not a whole minute", async () => {
    await using tmp = await tmpdir()
    const { db, run } = seeded(tmp.path, 3)
    const claimed = db.step(run.id, "w", [], 3, 60_000)
    const started = db.db.query<{ at: number }, []>("SELECT min(started_at) AS at FROM attempts").get()!.at
    db.step(
      run.id,
      "w",
      claimed.map((c) => ok(c.id, 1)),
      0,
      60_000,
    )
    const now = started + 12_000
    const s = db.summary(run.id, now)
    expect(s.recentCompleted).toBe(3)
    expect(s.recentWindowMs).toBe(12_000)
    // an older run: the window is the last minute, from the start of its first 10 s bucket
    const later = db.summary(run.id, started + 600_000)
    expect(later.recentCompleted).toBe(0)
    expect(later.recentWindowMs).toBe(started + 600_000 - Math.floor((started + 540_000) / 10_000) * 10_000)
    db.close()
  })

  test("the tallies always equal a count of the items, through claims, outcomes, retries, recovery and batches", async () => {
    await using tmp = await tmpdir()
    const { db, run, input } = seeded(tmp.path, 6)
    const exact = () => {
      const rows = db.db
        .query<{ state: string; n: number; attempts: number; input: number }, [number]>(
          `SELECT state, count(*) AS n, sum(attempts) AS attempts, sum(input_tokens) AS input FROM items
           WHERE run_id = ? GROUP BY state`,
        )
        .all(run.id)
      const counts = db.counts(run.id)
      for (const r of rows) expect([r.state, counts[r.state as keyof typeof counts]]).toEqual([r.state, r.n])
      const s = db.summary(run.id)
      expect(s.total).toBe(rows.reduce((a, r) => a + r.n, 0))
      expect(s.attempts).toBe(rows.reduce((a, r) => a + r.attempts, 0))
      expect(s.inputTokens).toBe(rows.reduce((a, r) => a + r.input, 0))
    }
    exact()
    const c = db.step(run.id, "w", [], 3, 60_000)
    exact()
    db.step(
      run.id,
      "w",
      [
        ok(c[0]!.id, 1),
        {
          item: c[1]!.id,
          attempt: 1,
          to: "failed",
          label: "failed",
          errorClass: "auth",
          error: "key",
          latencyMs: 5,
          endedAt: Date.now(),
        },
      ],
      0,
      60_000,
    )
    exact()
    // c[2] is still running, under an owner that is dead
    expect(db.recover(run.id, () => true)).toBe(1)
    exact()
    expect(db.retry(run.id, "failed")).toBe(1)
    exact()
    const lines = db.packable(run.id, 2).map((p, i) => ({ id: p.id, line: i, offset: i * 10, bytes: 10 }))
    const batch = db.intend(run.id, { tag: "t1", requests: "/r", bytes: 20, tokens: 4 }, lines, [], "w")!
    exact()
    db.submitted(batch.id, { id: "b1", status: "in_progress", phase: "in_progress" })
    exact()
    db.apply(
      batch.id,
      [
        {
          item: lines[0]!.id,
          to: "completed",
          label: "ok",
          output: "o",
          inputTokens: 7,
          outputTokens: 1,
          endedAt: Date.now(),
        },
      ],
      "w",
    )
    exact()
    db.finishBatch(batch.id, 1)
    exact()
    db.ingest(
      run.id,
      input,
      { rows: [{ key: "k7", line: 7, data: {} }], problems: [], checkpoint: { offset: 7 } },
      true,
    )
    exact()
    expect(db.counts(run.id)).toMatchObject({ completed: 2, pending: 5, failed: 0 })
    expect(db.summary(run.id).errors).toEqual([{ class: "auth", count: 1, example: "key", key: "k2" }])
    // a direct call that waits to retry, then goes into a batch with four others; the batch is given up once, then
    // a second one settles its lines every way a line can end
    const [w] = db.step(run.id, "w", [], 1, 60_000)
    db.step(
      run.id,
      "w",
      [
        {
          item: w!.id,
          attempt: 2,
          to: "retry_wait",
          label: "retry",
          nextAt: 0,
          latencyMs: 5,
          endedAt: Date.now(),
        },
      ],
      0,
      60_000,
    )
    exact()
    const pack = () =>
      db.packable(run.id, 5).map((p, i) => ({ id: p.id, line: i, offset: i * 10, bytes: 10 }))
    const given = db.intend(run.id, { tag: "t2", requests: "/r", bytes: 50, tokens: 9 }, pack(), [], "w")!
    expect(db.counts(run.id)).toMatchObject({ queued: 5, retry_wait: 0, pending: 0 })
    exact()
    db.abandon(given.id, { errorClass: "queue_limit", error: "full" })
    exact()
    const five = pack()
    const b3 = db.intend(run.id, { tag: "t3", requests: "/r", bytes: 50, tokens: 9 }, five, [], "w")!
    db.submitted(b3.id, { id: "b3", status: "in_progress", phase: "in_progress" })
    exact()
    const line = (i: number, to: LineOutcome["to"], extra: Partial<LineOutcome> = {}): LineOutcome => ({
      item: five[i]!.id,
      to,
      label: to,
      inputTokens: 3,
      outputTokens: 1,
      endedAt: Date.now(),
      ...extra,
    })
    db.apply(
      b3.id,
      [
        line(0, "completed", { output: "a" }),
        line(1, "failed", { errorClass: "bad_request", error: "no" }),
        line(2, "needs_review", { errorClass: "output", error: "not JSON", output: "{" }),
        line(3, "pending", { errorClass: "server", error: "500" }),
      ],
      "w",
    )
    exact()
    // the same lines applied again (a resumed apply) change nothing
    db.apply(b3.id, [line(0, "completed", { output: "a" })], "w")
    exact()
    db.finishBatch(b3.id, 4)
    exact()
    expect(db.counts(run.id)).toMatchObject({
      completed: 3,
      failed: 1,
      needs_review: 1,
      retry_wait: 0,
      pending: 2,
    })
    // the completions chart counts every item that ended, by direct call or by batch line, once
    const ended = db.progress(run.id, 0, 10_000_000_000_000).reduce((a, p) => a + p.completed + p.failed, 0)
    const final = db.counts(run.id)
    expect(ended).toBe(final.completed + final.failed + final.needs_review + 1) // + the failed item retried above
    db.close()
  })

  test("ingests rows as pending items, records duplicates as problems, and re-reading a row is not a duplicate", async () => {
    await using tmp = await tmpdir()
    const { db, run, input } = seeded(tmp.path, 3)
    const again = db.ingest(
      run.id,
      input,
      {
        rows: [
          { key: "k1", line: 1, data: { text: "t1" } },
          { key: "k2", line: 9, data: { text: "dup" } },
          { key: "k4", line: 10, data: { text: "t4" } },
        ],
        problems: [{ line: 11, reason: "not valid JSON", excerpt: "{oops" }],
        checkpoint: { offset: 99 },
      },
      true,
    )
    expect(again).toEqual({ added: 1, duplicates: 1 })
    expect(db.counts(run.id).pending).toBe(4)
    expect(db.problems(run.id)).toEqual([
      {
        file: "/in.jsonl",
        line: 9,
        reason: 'duplicate id "k2" (the first row with this id is kept)',
        excerpt: '{"text":"dup"}',
      },
      { file: "/in.jsonl", line: 11, reason: "not valid JSON", excerpt: "{oops" },
    ])
    expect(db.inputs(run.id)[0]).toMatchObject({
      checkpoint: '{"offset":99}',
      rows: 4,
      problems: 2,
      duplicates: 1,
    })
    db.close()
  })

  test("claims in ledger order up to the limit, counts the attempt, and records the outcome in the same step", async () => {
    await using tmp = await tmpdir()
    const { db, run } = seeded(tmp.path, 5)
    const first = db.step(run.id, "w1", [], 2, 60_000)
    expect(first.map((c) => [c.key, c.attempt])).toEqual([
      ["k1", 1],
      ["k2", 1],
    ])
    expect(db.counts(run.id)).toMatchObject({ pending: 3, running: 2 })
    const second = db.step(run.id, "w1", [ok(first[0]!.id, first[0]!.attempt, "A")], 1, 60_000)
    expect(second.map((c) => c.key)).toEqual(["k3"])
    expect(db.counts(run.id)).toMatchObject({ pending: 2, running: 2, completed: 1 })
    const items = [...db.items(run.id, "completed")]
    expect(items.map((i) => [i.key, i.output, i.attempts, i.input_tokens, i.output_tokens])).toEqual([
      ["k1", "A", 1, 3, 2],
    ])
    expect(db.attemptsOf(items[0]!.id)).toMatchObject([
      { n: 1, outcome: "ok", error_class: null, error: null },
    ])
    db.close()
  })

  test("two connections never hold the same item", async () => {
    await using tmp = await tmpdir()
    const { db, run } = seeded(tmp.path, 50)
    const other = store.open(tmp.path)
    const a: string[] = []
    const b: string[] = []
    for (let i = 0; i < 10; i++) {
      a.push(...db.step(run.id, "A", [], 3, 60_000).map((c) => c.key))
      b.push(...other.step(run.id, "B", [], 3, 60_000).map((c) => c.key))
    }
    expect(a.length + b.length).toBe(50)
    expect(new Set([...a, ...b]).size).toBe(50)
    other.close()
    db.close()
  })

  test("an outcome from a worker that lost its lease does not touch the item", async () => {
    await using tmp = await tmpdir()
    const { db, run } = seeded(tmp.path, 1)
    const [c] = db.step(run.id, "old", [], 1, -1)
    expect(db.recover(run.id, () => false)).toBe(1)
    const [again] = db.step(run.id, "new", [], 1, 60_000)
    db.step(run.id, "old", [ok(c!.id, c!.attempt, "stale")], 0, 60_000)
    expect([...db.items(run.id)][0]).toMatchObject({ state: "running", output: null, attempts: 2 })
    db.step(run.id, "new", [ok(again!.id, again!.attempt, "fresh")], 0, 60_000)
    expect([...db.items(run.id)][0]).toMatchObject({ state: "completed", output: "fresh", attempts: 2 })
    db.close()
  })

  test("recovery re-queues expired and dead owners' items, keeps live leases, and closes the attempt as lost", async () => {
    await using tmp = await tmpdir()
    const { db, run } = seeded(tmp.path, 3)
    db.step(run.id, "expired", [], 1, -1000)
    db.step(run.id, "dead", [], 1, 60_000)
    db.step(run.id, "alive", [], 1, 60_000)
    expect(db.recover(run.id, (owner) => owner === "dead")).toBe(2)
    expect(db.counts(run.id)).toMatchObject({ pending: 2, running: 1 })
    const k1 = [...db.items(run.id)].find((i) => i.key === "k1")!
    expect(k1.attempts).toBe(1)
    expect(db.attemptsOf(k1.id)).toMatchObject([{ n: 1, outcome: "lost", error_class: null, error: null }])
    db.close()
  })

  test("a due retry is claimed before pending items; a future one is not", async () => {
    await using tmp = await tmpdir()
    const { db, run } = seeded(tmp.path, 3)
    const [a, b] = db.step(run.id, "w", [], 2, 60_000)
    const wait = (c: store.Claimed, nextAt: number): Outcome => ({
      item: c.id,
      attempt: c.attempt,
      to: "retry_wait",
      label: "retry",
      errorClass: "rate_limit",
      error: "HTTP 429",
      status: 429,
      nextAt,
      latencyMs: 1,
      endedAt: Date.now(),
    })
    db.step(run.id, "w", [wait(a!, Date.now() + 60_000), wait(b!, Date.now() - 1)], 0, 60_000)
    expect(db.nextRetryAt(run.id)).toBeLessThan(Date.now())
    const next = db.step(run.id, "w", [], 2, 60_000)
    expect(next.map((c) => [c.key, c.attempt])).toEqual([
      ["k2", 2],
      ["k3", 1],
    ])
    db.close()
  })

  test("an outcome that is not a legal transition throws and commits nothing", async () => {
    await using tmp = await tmpdir()
    const { db, run } = seeded(tmp.path, 2)
    const [c] = db.step(run.id, "w", [], 1, 60_000)
    const bad = { ...ok(c!.id, c!.attempt), to: "queued" } as unknown as Outcome
    expect(() => db.step(run.id, "w", [ok(c!.id, c!.attempt), bad], 1, 60_000)).toThrow(TransitionError)
    expect(db.counts(run.id)).toMatchObject({ running: 1, pending: 1, completed: 0 })
    db.close()
  })

  test("retry moves failed items back to pending and reopens the run", async () => {
    await using tmp = await tmpdir()
    const { db, run } = seeded(tmp.path, 2)
    const claimed = db.step(run.id, "w", [], 2, 60_000)
    const fail = (c: store.Claimed): Outcome => ({
      ...ok(c.id, c.attempt),
      to: "failed",
      label: "failed",
      output: undefined,
      error: "HTTP 400",
      errorClass: "bad_request",
    })
    db.step(run.id, "w", claimed.map(fail), 0, 60_000)
    db.setRunState(run.id, "completed_with_failures")
    expect(db.retry(run.id, "failed")).toBe(2)
    expect(db.counts(run.id)).toMatchObject({ pending: 2, failed: 0 })
    expect(db.run(run.id)?.state).toBe("running")
    db.close()
  })
})
