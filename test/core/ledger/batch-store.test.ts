import { describe, expect, test } from "bun:test"
import * as store from "../../../src/core/ledger/sqlite/store.ts"
import type { LineOutcome } from "../../../src/core/ledger/sqlite/store.ts"
import { TransitionError } from "../../../src/core/base/errors.ts"
import { tmpdir } from "../../lib/tmp.ts"
import { seeded } from "../../lib/ledger.ts"

const remote = (phase: "in_progress" | "ended", outcome?: "completed" | "expired") => ({
  id: "batch_1",
  status: phase === "ended" ? (outcome ?? "completed") : "in_progress",
  phase,
  outcome,
  counts: { total: 4, done: phase === "ended" ? 2 : 1, failed: 0 },
  files: { output: "file-out" },
})

const lines = (ids: number[]) => ids.map((id, i) => ({ id, line: i + 1, offset: i * 10, bytes: 9 }))

const ok = (item: number): LineOutcome => ({
  item,
  to: "completed",
  label: "ok",
  output: `out ${item}`,
  inputTokens: 10,
  outputTokens: 4,
  endedAt: Date.now(),
})

describe("batches in the ledger", () => {
  test("an intent claims its items as queued with a new attempt each, and records where each request line is", async () => {
    await using tmp = await tmpdir()
    const { db, run } = seeded(tmp.path, 5)
    const picked = db.packable(run.id, 4)
    expect(picked.map((p) => p.id)).toEqual([1, 2, 3, 4])
    const b = db.intend(
      run.id,
      { tag: "spabc", requests: "/r.jsonl", bytes: 40, tokens: 12 },
      lines([1, 2, 3, 4]),
      [],
      "me",
    )!
    expect(b).toMatchObject({
      state: "intent",
      tag: "spabc",
      count: 4,
      bytes: 40,
      tokens: 12,
      provider_id: null,
    })
    expect(db.counts(run.id)).toMatchObject({ queued: 4, pending: 1 })
    const items = [...db.items(run.id)]
    expect(items.slice(0, 4).map((i) => [i.attempts, i.batch_id, i.batch_line])).toEqual([
      [1, b.id, 1],
      [1, b.id, 2],
      [1, b.id, 3],
      [1, b.id, 4],
    ])
    expect(db.db.query("SELECT count(*) AS n FROM attempts").get()).toEqual({ n: 0 })
    // the next pack sees only the one left
    expect(db.packable(run.id, 10).map((p) => p.id)).toEqual([5])
    db.close()
  })

  test("an intent that names an item no longer claimable commits nothing", async () => {
    await using tmp = await tmpdir()
    const { db, run } = seeded(tmp.path, 3)
    db.intend(run.id, { tag: "a", requests: "/a", bytes: 1, tokens: 1 }, lines([1]), [], "me")
    expect(() =>
      db.intend(run.id, { tag: "b", requests: "/b", bytes: 1, tokens: 1 }, lines([1, 2]), [], "me"),
    ).toThrow("1 item(s) of batch b were claimed elsewhere")
    expect(db.batches(run.id).map((b) => b.tag)).toEqual(["a"])
    expect(db.counts(run.id)).toMatchObject({ queued: 1, pending: 2 })
    db.close()
  })

  test("items that cannot be packed fail with their attempt recorded", async () => {
    await using tmp = await tmpdir()
    const { db, run } = seeded(tmp.path, 2)
    const b = db.intend(
      run.id,
      { tag: "a", requests: "/a", bytes: 1, tokens: 1 },
      [],
      [{ id: 2, errorClass: "bad_request", error: "the request is 300000000 bytes" }],
      "me",
    )
    expect(b).toBeNull()
    const item = [...db.items(run.id)][1]!
    expect(item).toMatchObject({ state: "failed", attempts: 1, error_class: "bad_request" })
    expect(db.attemptsOf(2)).toMatchObject([
      { n: 1, outcome: "failed", error_class: "bad_request", error: "the request is 300000000 bytes" },
    ])
    db.close()
  })

  test("submitted → ended → applied: lines settle their items once, the rest go back to pending unpaid", async () => {
    await using tmp = await tmpdir()
    const { db, run } = seeded(tmp.path, 4)
    const b = db.intend(
      run.id,
      { tag: "a", requests: "/a", bytes: 1, tokens: 1 },
      lines([1, 2, 3, 4]),
      [],
      "me",
    )!
    db.submitted(b.id, remote("in_progress"))
    expect(db.counts(run.id)).toMatchObject({ submitted: 4 })
    expect(db.batch(b.id)).toMatchObject({
      state: "submitted",
      provider_id: "batch_1",
      phase: "in_progress",
      done: 1,
      total: 4,
    })
    db.observe(b.id, remote("ended", "expired"), null)
    expect(db.batch(b.id)).toMatchObject({
      state: "downloading",
      outcome: "expired",
      files: '{"output":"file-out"}',
    })
    db.downloaded(b.id, { output: "/o.jsonl" })
    expect(db.batch(b.id)).toMatchObject({ state: "applying", output: "/o.jsonl", errors: null })
    const retry: LineOutcome = {
      item: 3,
      to: "pending",
      label: "retry",
      errorClass: "server",
      error: "HTTP 500",
      status: 500,
      endedAt: Date.now(),
    }
    db.apply(b.id, [ok(1), ok(2), retry], "me")
    // a crash and a second pass over the same lines change nothing
    db.apply(b.id, [ok(1), ok(2), retry], "me")
    expect(db.finishBatch(b.id, 3)).toBe(1)
    expect(db.batch(b.id)).toMatchObject({ state: "done", lines: 3 })
    const items = [...db.items(run.id)]
    expect(items.map((i) => [i.state, i.attempts, i.output, i.batch_input_tokens])).toEqual([
      ["completed", 1, "out 1", 10],
      ["completed", 1, "out 2", 10],
      ["pending", 1, null, 0],
      ["pending", 0, null, 0],
    ])
    expect(db.attemptsOf(1)).toMatchObject([{ n: 1, outcome: "ok", error_class: null, error: null }])
    expect(db.attemptsOf(3)).toMatchObject([
      { n: 1, outcome: "retry", error_class: "server", error: "HTTP 500" },
    ])
    // the line never run left no attempt behind
    expect(db.attemptsOf(4)).toMatchObject([])
    const s = db.summary(run.id)
    expect(s.batch).toEqual({ inputTokens: 20, outputTokens: 8, cachedTokens: 0 })
    expect(db.liveBatches(run.id)).toEqual([])
    db.close()
  })

  test("an abandoned batch gives its items back as never sent", async () => {
    await using tmp = await tmpdir()
    const { db, run } = seeded(tmp.path, 2)
    const b = db.intend(run.id, { tag: "a", requests: "/a", bytes: 1, tokens: 1 }, lines([1, 2]), [], "me")!
    expect(db.abandon(b.id, { errorClass: "queue_limit", error: "queue full" })).toBe(2)
    expect(db.batch(b.id)).toMatchObject({
      state: "abandoned",
      error: "queue full",
      error_class: "queue_limit",
    })
    expect([...db.items(run.id)].map((i) => [i.state, i.attempts])).toEqual([
      ["pending", 0],
      ["pending", 0],
    ])
    expect(db.db.query("SELECT count(*) AS n FROM attempts").get()).toEqual({ n: 0 })
    db.close()
  })

  test("a line may not move an item along an edge the state machine lacks", async () => {
    await using tmp = await tmpdir()
    const { db, run } = seeded(tmp.path, 1)
    const b = db.intend(run.id, { tag: "a", requests: "/a", bytes: 1, tokens: 1 }, lines([1]), [], "me")!
    expect(() => db.apply(b.id, [{ item: 1, to: "running" as never, label: "x", endedAt: 0 }], "me")).toThrow(
      TransitionError,
    )
    db.close()
  })

  test("the batch lease is held by one process at a time, and a dead holder's lapses", async () => {
    await using tmp = await tmpdir()
    const { db, run } = seeded(tmp.path, 1)
    expect(db.leaseBatches(run.id, "a", 60_000, () => false)).toBe(true)
    expect(db.leaseBatches(run.id, "b", 60_000, () => false)).toBe(false)
    expect(db.batchHolder(run.id)).toBe("a")
    expect(db.leaseBatches(run.id, "b", 60_000, (o) => o === "a")).toBe(true)
    db.releaseBatches(run.id, "b")
    expect(db.batchHolder(run.id)).toBeNull()
    db.learnQueue(run.id, { tokens: 90_000 })
    db.learnQueue(run.id, { requests: 5 })
    expect(db.run(run.id)).toMatchObject({ queue_tokens: 90_000, queue_requests: 5 })
    db.close()
  })
})
