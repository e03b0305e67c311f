/**
 * The contract every ledger driver must honour: what the engine, the reports and the server rely on. Run it with
 * `testLedger(name, place)`, where `place()` makes a fresh, empty store and opens connections to it; two
 * connections to one place are two workers.
 */
import { describe, expect, test } from "bun:test"
import { hostname } from "node:os"
import { TransitionError } from "../../src/core/base/errors.ts"
import { alive, FRESH_MS, type Ledger } from "../../src/core/ledger/ledger.ts"
import { STATES, type State } from "../../src/core/ledger/states.ts"
import type { Batch, Item, LineOutcome, Outcome, Prime } from "../../src/core/ledger/types.ts"
import { JOB, rows, seed } from "./ledger.ts"
import { LEGAL } from "./states.ts"
import { testCache } from "./cache-contract.ts"
import { testSteps } from "./steps-contract.ts"

/** A fresh store, and a way to open connections to it; disposing of it closes them and removes the store. */
export interface Place extends AsyncDisposable {
  open(): Promise<Ledger>
}

const legal = (from: State, to: State) => LEGAL.some(([a, b]) => a === from && b === to)

/** A completed call's outcome for an item's attempt. */
export const ok = (item: number, attempt: number, output = "out"): Outcome => ({
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

const line = (item: number, to: LineOutcome["to"], extra: Partial<LineOutcome> = {}): LineOutcome => ({
  item,
  to,
  label: to === "completed" ? "ok" : to,
  inputTokens: 10,
  outputTokens: 4,
  endedAt: Date.now(),
  ...(to === "completed" ? { output: `out ${item}` } : {}),
  ...extra,
})

const lines = (ids: number[]) => ids.map((id, i) => ({ id, line: i + 1, offset: i * 10, bytes: 9 }))

/** Batch "a" of these items, intended by "me" (each on its own line of a request file at /a). */
async function intended(l: Ledger, run: number, ids: number[]): Promise<Batch> {
  const b = await l.batches.intend(
    run,
    { tag: "a", requests: "/a", bytes: 1, tokens: 1 },
    lines(ids),
    [],
    "me",
  )
  expect(b).not.toBeNull()
  return b!
}

const remote = (phase: "in_progress" | "ended", outcome?: "completed" | "expired") => ({
  id: "batch_1",
  status: phase === "ended" ? (outcome ?? "completed") : "in_progress",
  phase,
  outcome,
  counts: { total: 4, done: phase === "ended" ? 2 : 1, failed: 0 },
  files: { output: "file-out" },
})

/** Every item of a run, in ledger order, through the stream. */
export async function itemsOf(ledger: Ledger, run: number, state?: State): Promise<Item[]> {
  const out: Item[] = []
  for await (const item of ledger.reads.items(run, state)) out.push(item)
  return out
}

/**
 * Checks the run's tallies (its counts, and the summary's totals) against a GROUP BY of its items by state,
 * computed here from the items the stream gives. The summary's totals hold the run's answered priming calls too:
 * theirs are taken off (the primes tests check them).
 */
export async function tallied(ledger: Ledger, run: number): Promise<void> {
  const counts = Object.fromEntries(STATES.map((s) => [s, 0])) as Record<State, number>
  const sum = {
    attempts: 0,
    input: 0,
    output: 0,
    cached: 0,
    written: 0,
    batchInput: 0,
    batchOutput: 0,
    batchCached: 0,
    batchWritten: 0,
  }
  for (const i of await itemsOf(ledger, run)) {
    counts[i.state]++
    sum.attempts += i.attempts
    sum.input += i.input_tokens
    sum.output += i.output_tokens
    sum.cached += i.cached_input_tokens
    sum.written += i.cache_write_tokens
    sum.batchInput += i.batch_input_tokens
    sum.batchOutput += i.batch_output_tokens
    sum.batchCached += i.batch_cached_tokens
    sum.batchWritten += i.batch_write_tokens
  }
  expect(await ledger.reads.counts(run)).toEqual(counts)
  const s = await ledger.reads.summary(run)
  expect(s.counts).toEqual(counts)
  expect(s.total).toBe(Object.values(counts).reduce((a, b) => a + b, 0))
  expect({
    attempts: s.attempts,
    input: s.inputTokens - s.primes.inputTokens,
    output: s.outputTokens - s.primes.outputTokens,
    cached: s.cachedTokens - s.primes.cachedTokens,
    written: s.writeTokens - s.primes.writeTokens,
    batchInput: s.batch.inputTokens,
    batchOutput: s.batch.outputTokens,
    batchCached: s.batch.cachedTokens,
    batchWritten: s.batch.writeTokens,
  }).toEqual(sum)
}

/** The state of each item, by id. */
async function statesOf(ledger: Ledger, run: number): Promise<Map<number, State>> {
  return new Map((await itemsOf(ledger, run)).map((i) => [i.id, i.state]))
}

/**
 * The edges an operation moved items along, as `from → to`, each checked to be legal. A move that passes `through`
 * a state within its one commit (an item claimed for a batch that no request can be made of) is two edges.
 */
async function moves(
  ledger: Ledger,
  run: number,
  op: () => Promise<unknown>,
  through?: State,
): Promise<string[]> {
  const before = await statesOf(ledger, run)
  await op()
  const after = await statesOf(ledger, run)
  const made = new Set<string>()
  for (const [id, to] of after) {
    const from = before.get(id)
    if (from === undefined || from === to) continue
    const path: [State, State][] =
      through && !legal(from, to)
        ? [
            [from, through],
            [through, to],
          ]
        : [[from, to]]
    for (const [a, b] of path) {
      expect(`${a} → ${b} is legal: ${legal(a, b)}`).toBe(`${a} → ${b} is legal: true`)
      made.add(`${a} → ${b}`)
    }
  }
  return [...made].sort()
}

export function testLedger(name: string, place: () => Promise<Place>): void {
  describe(`ledger contract: ${name}`, () => {
    describe("runs and inputs", () => {
      test("creates a run with its inputs, gives its job back as it was stored, and finds it by name and by id", async () => {
        await using p = await place()
        const l = await p.open()
        const job = { ...JOB, name: "first" }
        const made = await l.runs.create({
          name: "first",
          job,
          fingerprint: "fp1",
          resume: "spool run first.toml",
          inputs: [
            { path: "/a.jsonl", format: "jsonl" },
            { path: "/b.csv", format: "csv" },
          ],
        })
        expect(made.created).toBe(true)
        expect(made.run).toMatchObject({
          name: "first",
          state: "running",
          fingerprint: "fp1",
          resume: "spool run first.toml",
          reason: null,
          ingested: 0,
          finished_at: null,
          queue_tokens: null,
          queue_requests: null,
          exported_at: null,
        })
        expect(made.run.job).toEqual(job)
        const { run } = made
        expect((await l.runs.latest("first"))?.id).toBe(run.id)
        expect((await l.runs.get(run.id))?.job).toEqual(job)
        expect((await l.runs.find("first"))?.id).toBe(run.id)
        expect((await l.runs.find(String(run.id)))?.id).toBe(run.id)
        expect(await l.runs.find("nobody")).toBeNull()
        expect(await l.runs.get(run.id + 1000)).toBeNull()
        expect(
          (await l.runs.inputs(run.id)).map((i) => [i.idx, i.path, i.format, i.checkpoint, i.rows, i.done]),
        ).toEqual([
          [0, "/a.jsonl", "jsonl", undefined, 0, 0],
          [1, "/b.csv", "csv", undefined, 0, 0],
        ])
        const second = await l.runs.create({
          name: "first",
          job,
          fingerprint: "fp1",
          resume: "",
          inputs: [],
          seen: run.id,
        })
        expect(second.created).toBe(true)
        expect((await l.runs.latest("first"))?.id).toBe(second.run.id)
        expect((await l.runs.list()).map((r) => r.id)).toEqual([run.id, second.run.id])
      })

      test("a worker that saw no run of the name gets the one another worker made; one that saw it makes a new one", async () => {
        await using p = await place()
        const [a, b] = [await p.open(), await p.open()]
        const make = (l: Ledger, seen: number | null) =>
          l.runs.create({ name: "r", job: JOB, fingerprint: "fp", resume: "", inputs: [], seen })
        const first = await make(a, null)
        const shared = await make(b, null)
        expect([first.created, shared.created]).toEqual([true, false])
        expect(shared.run.id).toBe(first.run.id)
        const fresh = await make(b, first.run.id)
        expect(fresh.created).toBe(true)
        expect(fresh.run.id).not.toBe(first.run.id)
        expect((await a.runs.latest("r"))?.id).toBe(fresh.run.id)
      })

      test("sets a run's state (a final one stamps finished_at), its resume command, its job, and its export", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 1)
        await l.runs.setState(run.id, "paused", "quota")
        expect(await l.runs.get(run.id)).toMatchObject({
          state: "paused",
          reason: "quota",
          finished_at: null,
        })
        await l.runs.setState(run.id, "completed")
        const done = await l.runs.get(run.id)
        expect(done).toMatchObject({ state: "completed", reason: null })
        expect(done?.finished_at).toBeGreaterThan(0)
        await l.runs.setResume(run.id, "spool run again.toml")
        const job = { ...JOB, limits: { ...JOB.limits, concurrency: 7 } }
        await l.runs.updateJob(run.id, job)
        await l.runs.markExported(run.id)
        const after = await l.runs.get(run.id)
        expect(after?.resume).toBe("spool run again.toml")
        expect(after?.job).toEqual(job)
        expect(after?.job.limits.concurrency).toBe(7)
        expect(after?.exported_at).toBeGreaterThan(0)
      })

      test("appends an input at the next index, and keeps a path that is already an input as it is", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 2)
        const added = await l.runs.addInput(run.id, "/more.jsonl", "jsonl")
        expect(added).toMatchObject({ idx: 1, path: "/more.jsonl", format: "jsonl", rows: 0 })
        const again = await l.runs.addInput(run.id, "/in.jsonl", "csv")
        expect(again).toMatchObject({ idx: 0, path: "/in.jsonl", format: "jsonl", rows: 2 })
        expect((await l.runs.inputs(run.id)).map((i) => i.path)).toEqual(["/in.jsonl", "/more.jsonl"])
      })
    })

    describe("ingest and checkpoints", () => {
      test("ingests rows as pending items, records duplicates as problems, and re-reading a row is not a duplicate", async () => {
        await using p = await place()
        const l = await p.open()
        const { run, input } = await seed(l, 3)
        const again = await l.ingest.add(
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
        expect((await l.reads.counts(run.id)).pending).toBe(4)
        expect(await l.reads.problems(run.id)).toEqual([
          {
            file: "/in.jsonl",
            line: 9,
            reason: 'duplicate id "k2" (the first row with this id is kept)',
            excerpt: '{"text":"dup"}',
          },
          { file: "/in.jsonl", line: 11, reason: "not valid JSON", excerpt: "{oops" },
        ])
        expect((await l.runs.inputs(run.id))[0]).toMatchObject({
          checkpoint: { offset: 99 },
          rows: 4,
          problems: 2,
          duplicates: 1,
        })
        const items = await itemsOf(l, run.id)
        expect(items.map((i) => [i.key, i.row, i.state, JSON.parse(i.data), i.path])).toEqual([
          ["k1", 1, "pending", { text: "t1" }, "/in.jsonl"],
          ["k2", 2, "pending", { text: "t2" }, "/in.jsonl"],
          ["k3", 3, "pending", { text: "t3" }, "/in.jsonl"],
          ["k4", 10, "pending", { text: "t4" }, "/in.jsonl"],
        ])
        const s = await l.reads.summary(run.id)
        expect(s.problems).toEqual({
          count: 2,
          duplicates: 1,
          sample: [
            { file: "/in.jsonl", line: 9, reason: 'duplicate id "k2" (the first row with this id is kept)' },
            { file: "/in.jsonl", line: 11, reason: "not valid JSON" },
          ],
        })
      })

      test("keeps each batch's checkpoint with its rows; reopen reads on from it, reset forgets it and the problems but keeps the items", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await l.runs.create({
          name: "r",
          job: JOB,
          fingerprint: "fp",
          resume: "",
          inputs: [{ path: "/in.jsonl", format: "jsonl" }],
        })
        const input = (await l.runs.inputs(run.id))[0]!
        const checkpoint = { offset: 120, line: 3, sha256: "ab", partial: false, note: null }
        await l.ingest.add(run.id, input, { rows: rows(3), problems: [], checkpoint }, false)
        expect((await l.runs.inputs(run.id))[0]).toMatchObject({ checkpoint, rows: 3, done: 0 })
        await l.ingest.add(
          run.id,
          input,
          {
            rows: rows(2, 4),
            problems: [{ line: 6, reason: "bad", excerpt: "x" }],
            checkpoint: { offset: 200, line: 6 },
          },
          true,
        )
        expect((await l.runs.inputs(run.id))[0]).toMatchObject({
          checkpoint: { offset: 200, line: 6 },
          rows: 5,
          problems: 1,
          done: 1,
        })
        await l.ingest.done(run.id)
        expect((await l.runs.get(run.id))?.ingested).toBe(1)
        await l.ingest.reopen(run.id)
        expect((await l.runs.get(run.id))?.ingested).toBe(0)
        expect((await l.runs.inputs(run.id))[0]?.checkpoint).toEqual({ offset: 200, line: 6 })
        await l.ingest.done(run.id)
        await l.ingest.reset(run.id)
        expect((await l.runs.get(run.id))?.ingested).toBe(0)
        expect((await l.runs.inputs(run.id))[0]).toMatchObject({
          checkpoint: undefined,
          problems: 0,
          duplicates: 0,
          done: 0,
        })
        expect(await l.reads.problems(run.id)).toEqual([])
        expect((await l.reads.counts(run.id)).pending).toBe(5)
        // read again from the start: the same rows are kept, not counted as duplicates
        const again = await l.ingest.add(run.id, input, { rows: rows(5), problems: [], checkpoint }, true)
        expect(again).toEqual({ added: 0, duplicates: 0 })
      })

      test("the ingest lease is held by one worker at a time; a lapsed or dead holder's is taken, and done lets it go", async () => {
        await using p = await place()
        const [a, b] = [await p.open(), await p.open()]
        const { run } = await seed(a, 1)
        await a.ingest.reopen(run.id)
        const alive = () => false
        expect(await a.ingest.lease(run.id, "A", 60_000, alive)).toBe(true)
        expect(await b.ingest.lease(run.id, "B", 60_000, alive)).toBe(false)
        // the holder renews its own
        expect(await a.ingest.lease(run.id, "A", -1, alive)).toBe(true)
        // lapsed
        expect(await b.ingest.lease(run.id, "B", 60_000, alive)).toBe(true)
        expect(await a.ingest.lease(run.id, "A", 60_000, alive)).toBe(false)
        // its holder is dead
        expect(await a.ingest.lease(run.id, "A", 60_000, (o) => o === "B")).toBe(true)
        expect(await b.claims.holders(run.id)).toEqual(["A"])
        await a.ingest.done(run.id)
        expect(await b.claims.holders(run.id)).toEqual([])
        expect(await b.ingest.lease(run.id, "B", 60_000, alive)).toBe(true)
      })
    })

    describe("claims and outcomes", () => {
      test("claims in ledger order up to the limit, counts the attempt, and records the outcome in the same step", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 5)
        const first = await l.claims.step(run.id, "w1", [], 2, 60_000)
        expect(first.map((c) => [c.key, c.attempt, JSON.parse(c.data)])).toEqual([
          ["k1", 1, { text: "t1" }],
          ["k2", 1, { text: "t2" }],
        ])
        expect(await l.reads.counts(run.id)).toMatchObject({ pending: 3, running: 2 })
        const second = await l.claims.step(
          run.id,
          "w1",
          [ok(first[0]!.id, first[0]!.attempt, "A")],
          1,
          60_000,
        )
        expect(second.map((c) => c.key)).toEqual(["k3"])
        expect(await l.reads.counts(run.id)).toMatchObject({ pending: 2, running: 2, completed: 1 })
        const items = await itemsOf(l, run.id, "completed")
        expect(items.map((i) => [i.key, i.output, i.attempts, i.input_tokens, i.output_tokens])).toEqual([
          ["k1", "A", 1, 3, 2],
        ])
        expect(await l.reads.attempts(items[0]!.id)).toMatchObject([
          {
            n: 1,
            outcome: "ok",
            error_class: null,
            error: null,
            input_tokens: 3,
            output_tokens: 2,
            latency_ms: 5,
          },
        ])
      })

      test("group commit: one step records every outcome, each on its own attempt, and claims the next items", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 8)
        const c = await l.claims.step(run.id, "w", [], 5, 60_000)
        const at = Date.now()
        const outcomes: Outcome[] = [
          { ...ok(c[0]!.id, 1, "A"), cachedTokens: 1 },
          {
            item: c[1]!.id,
            attempt: 1,
            to: "retry_wait",
            label: "retry",
            errorClass: "rate_limit",
            error: "HTTP 429",
            status: 429,
            nextAt: at + 60_000,
            latencyMs: 7,
            endedAt: at,
          },
          {
            item: c[2]!.id,
            attempt: 1,
            to: "failed",
            label: "failed",
            errorClass: "bad_request",
            error: "HTTP 400",
            status: 400,
            latencyMs: 8,
            endedAt: at,
          },
          {
            item: c[3]!.id,
            attempt: 1,
            to: "needs_review",
            label: "needs_review",
            output: "{",
            errorClass: "output",
            error: "not JSON",
            inputTokens: 4,
            outputTokens: 1,
            latencyMs: 9,
            endedAt: at,
          },
          { item: c[4]!.id, attempt: 1, to: "pending", label: "interrupted", latencyMs: 10, endedAt: at },
        ]
        const next = await l.claims.step(run.id, "w", outcomes, 2, 60_000)
        // k5 came back to pending in the same step, and is claimed again by it, before k6: as its first attempt,
        // since the one a stop cut short does not count
        expect(next.map((n) => [n.key, n.attempt])).toEqual([
          ["k5", 1],
          ["k6", 1],
        ])
        const items = await itemsOf(l, run.id)
        expect(
          items.map((i) => [i.key, i.state, i.attempts, i.output, i.error_class, i.next_at, i.input_tokens]),
        ).toEqual([
          ["k1", "completed", 1, "A", null, null, 3],
          ["k2", "retry_wait", 1, null, "rate_limit", at + 60_000, 0],
          ["k3", "failed", 1, null, "bad_request", null, 0],
          ["k4", "needs_review", 1, "{", "output", null, 4],
          ["k5", "running", 1, null, null, null, 0],
          ["k6", "running", 1, null, null, null, 0],
          ["k7", "pending", 0, null, null, null, 0],
          ["k8", "pending", 0, null, null, null, 0],
        ])
        expect(items[0]!.cached_input_tokens).toBe(1)
        const attempts = await Promise.all(items.slice(0, 5).map((i) => l.reads.attempts(i.id)))
        expect(
          attempts.map((a) => a.map((x) => [x.n, x.outcome, x.error_class, x.http_status, x.latency_ms])),
        ).toEqual([
          [[1, "ok", null, null, 5]],
          [[1, "retry", "rate_limit", 429, 7]],
          [[1, "failed", "bad_request", 400, 8]],
          [[1, "needs_review", "output", null, 9]],
          // the interrupted attempt is kept, numbered 0: it did not count
          [
            [0, "interrupted", null, null, 10],
            [1, null, null, null, null],
          ],
        ])
        expect(await l.claims.nextRetryAt(run.id)).toBe(at + 60_000)
        await tallied(l, run.id)
      })

      test("an attempt a stop cut short or that was never sent does not count: taken back, kept as attempt 0", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 4)
        const c = await l.claims.step(run.id, "w", [], 3, 60_000)
        const cut = (i: number, label: string): Outcome => ({ ...ok(c[i]!.id, 1), to: "pending", label })
        await l.claims.step(
          run.id,
          "w",
          [
            cut(0, "interrupted"),
            cut(1, "unsent"),
            { ...ok(c[2]!.id, 1), to: "retry_wait", label: "retry", nextAt: 0 },
          ],
          0,
          60_000,
        )
        const states = async () => (await itemsOf(l, run.id)).map((i) => [i.key, i.state, i.attempts])
        expect(await states()).toEqual([
          ["k1", "pending", 0],
          ["k2", "pending", 0],
          ["k3", "retry_wait", 1],
          ["k4", "pending", 0],
        ])
        const again = await l.claims.step(run.id, "w", [], 3, 60_000)
        expect(again.map((x) => [x.key, x.attempt])).toEqual([
          ["k1", 1],
          ["k2", 1],
          ["k3", 2],
        ])
        await l.claims.step(run.id, "w", [ok(c[0]!.id, 1)], 0, 60_000)
        const history = async (i: number) => (await l.reads.attempts(c[i]!.id)).map((a) => [a.n, a.outcome])
        expect(await history(0)).toEqual([
          [0, "interrupted"],
          [1, "ok"],
        ])
        expect(await history(1)).toEqual([
          [0, "unsent"],
          [1, null],
        ])
        // an item recovery took back (its attempt `lost`, counted) stays counted when its late outcome comes
        const [k4] = await l.claims.step(run.id, "a", [], 1, -1)
        expect(await l.claims.recover(run.id, () => false)).toBe(1)
        await l.claims.step(
          run.id,
          "a",
          [{ ...ok(k4!.id, 1), to: "pending", label: "interrupted" }],
          0,
          60_000,
        )
        expect((await l.reads.attempts(k4!.id)).map((a) => [a.n, a.outcome])).toEqual([[1, "interrupted"]])
        expect(await states()).toEqual([
          ["k1", "completed", 1],
          ["k2", "running", 1],
          ["k3", "running", 2],
          ["k4", "pending", 1],
        ])
        expect((await l.reads.summary(run.id)).attempts).toBe(5)
        await tallied(l, run.id)
      })

      test("two connections never hold the same item, claiming in turn or at once", async () => {
        await using p = await place()
        const [a, b] = [await p.open(), await p.open()]
        const { run } = await seed(a, 80)
        const byA: string[] = []
        const byB: string[] = []
        for (let i = 0; i < 10; i++) {
          byA.push(...(await a.claims.step(run.id, "A", [], 3, 60_000)).map((c) => c.key))
          byB.push(...(await b.claims.step(run.id, "B", [], 3, 60_000)).map((c) => c.key))
        }
        expect(byA.length + byB.length).toBe(60)
        const rest = await Promise.all(
          Array.from({ length: 12 }, (_, i) =>
            (i % 2 ? a : b).claims.step(run.id, i % 2 ? "A" : "B", [], 3, 60_000),
          ),
        )
        const all = [...byA, ...byB, ...rest.flat().map((c) => c.key)]
        expect(all.length).toBe(80)
        expect(new Set(all).size).toBe(80)
        const held = await itemsOf(a, run.id, "running")
        expect(held.length).toBe(80)
      })

      test("an outcome from a worker that lost its lease does not touch the item", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 1)
        const [c] = await l.claims.step(run.id, "old", [], 1, -1)
        expect(await l.claims.recover(run.id, () => false)).toBe(1)
        const [again] = await l.claims.step(run.id, "new", [], 1, 60_000)
        await l.claims.step(run.id, "old", [ok(c!.id, c!.attempt, "stale")], 0, 60_000)
        expect((await itemsOf(l, run.id))[0]).toMatchObject({ state: "running", output: null, attempts: 2 })
        await l.claims.step(run.id, "new", [ok(again!.id, again!.attempt, "fresh")], 0, 60_000)
        expect((await itemsOf(l, run.id))[0]).toMatchObject({
          state: "completed",
          output: "fresh",
          attempts: 2,
        })
      })

      test("recovery re-queues expired and dead owners' items, keeps live leases, and closes the attempt as lost", async () => {
        await using p = await place()
        const [l, other] = [await p.open(), await p.open()]
        const { run } = await seed(l, 3)
        await l.claims.step(run.id, "expired", [], 1, -1000)
        await l.claims.step(run.id, "dead", [], 1, 60_000)
        await l.claims.step(run.id, "alive", [], 1, 60_000)
        expect((await l.claims.holders(run.id)).sort()).toEqual(["alive", "dead", "expired"])
        // another worker takes them over
        expect(await other.claims.recover(run.id, (owner) => owner === "dead")).toBe(2)
        expect(await l.reads.counts(run.id)).toMatchObject({ pending: 2, running: 1 })
        const k1 = (await itemsOf(l, run.id)).find((i) => i.key === "k1")!
        expect(k1.attempts).toBe(1)
        expect(await l.reads.attempts(k1.id)).toMatchObject([
          { n: 1, outcome: "lost", error_class: null, error: null },
        ])
        expect(await l.claims.holders(run.id)).toEqual(["alive"])
        const taken = await other.claims.step(run.id, "B", [], 5, 60_000)
        expect(taken.map((t) => [t.key, t.attempt])).toEqual([
          ["k1", 2],
          ["k2", 2],
        ])
        await tallied(l, run.id)
      })

      test("a renewed lease outlives its first expiry; only another owner's lapsed lease is taken over", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 2)
        await l.claims.step(run.id, "A", [], 1, -1)
        await l.claims.step(run.id, "B", [], 1, -1)
        await l.claims.renew(run.id, "A", 60_000)
        expect(await l.claims.recover(run.id, () => false)).toBe(1)
        expect((await itemsOf(l, run.id)).map((i) => [i.key, i.state])).toEqual([
          ["k1", "running"],
          ["k2", "pending"],
        ])
      })

      test("a due retry is claimed before pending items; a future one is not", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 3)
        const [a, b] = await l.claims.step(run.id, "w", [], 2, 60_000)
        const wait = (c: { id: number; attempt: number }, nextAt: number): Outcome => ({
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
        await l.claims.step(run.id, "w", [wait(a!, Date.now() + 60_000), wait(b!, Date.now() - 1)], 0, 60_000)
        expect(await l.claims.nextRetryAt(run.id)).toBeLessThan(Date.now())
        const next = await l.claims.step(run.id, "w", [], 2, 60_000)
        expect(next.map((c) => [c.key, c.attempt])).toEqual([
          ["k2", 2],
          ["k3", 1],
        ])
        expect(await l.claims.nextRetryAt(run.id)).toBeGreaterThan(Date.now())
      })

      test("retry moves failed items back to pending and reopens the run", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 2)
        const claimed = await l.claims.step(run.id, "w", [], 2, 60_000)
        const fail = (c: { id: number; attempt: number }): Outcome => ({
          ...ok(c.id, c.attempt),
          to: "failed",
          label: "failed",
          output: undefined,
          error: "HTTP 400",
          errorClass: "bad_request",
        })
        await l.claims.step(run.id, "w", claimed.map(fail), 0, 60_000)
        await l.runs.setState(run.id, "completed_with_failures")
        expect(await l.claims.retry(run.id, "needs_review")).toBe(0)
        expect((await l.runs.get(run.id))?.state).toBe("completed_with_failures")
        expect(await l.claims.retry(run.id, "failed")).toBe(2)
        expect(await l.reads.counts(run.id)).toMatchObject({ pending: 2, failed: 0 })
        expect((await itemsOf(l, run.id)).map((i) => [i.attempts, i.error, i.error_class])).toEqual([
          [1, null, null],
          [1, null, null],
        ])
        expect(await l.runs.get(run.id)).toMatchObject({ state: "running", finished_at: null })
      })
    })

    describe("the state machine", () => {
      const target = STATES

      for (const to of target) {
        test(`an outcome moves a running item to ${to} only if running → ${to} is an edge (${legal("running", to) ? "it is" : "it is not"}), and a refused step commits nothing`, async () => {
          await using p = await place()
          const l = await p.open()
          const { run } = await seed(l, 3)
          const [a, b] = await l.claims.step(run.id, "w", [], 2, 60_000)
          const outcome = { ...ok(b!.id, 1), to, label: to, nextAt: 0 } as unknown as Outcome
          // a refused step would also claim the third item: nothing of it may land
          const step = l.claims.step(
            run.id,
            "w",
            [ok(a!.id, 1), outcome],
            legal("running", to) ? 0 : 1,
            60_000,
          )
          if (!legal("running", to)) {
            await expect(step).rejects.toBeInstanceOf(TransitionError)
            expect(await l.reads.counts(run.id)).toMatchObject({ running: 2, pending: 1, completed: 0 })
            return
          }
          await step
          expect((await itemsOf(l, run.id)).map((i) => i.state)).toEqual(["completed", to, "pending"])
          await tallied(l, run.id)
        })
      }

      for (const to of target) {
        test(`a batch line moves a submitted item to ${to} only if submitted → ${to} is an edge (${legal("submitted", to) ? "it is" : "it is not"}), and a refused apply commits nothing`, async () => {
          await using p = await place()
          const l = await p.open()
          const { run } = await seed(l, 2)
          const ids = (await l.batches.packable(run.id, 2)).map((x) => x.id)
          const b = (await l.batches.intend(
            run.id,
            { tag: "t", requests: "/r", bytes: 1, tokens: 1 },
            lines(ids),
            [],
            "w",
          ))!
          await l.batches.submitted(b.id, remote("in_progress"))
          const apply = l.batches.apply(
            b.id,
            [line(ids[0]!, "completed"), line(ids[1]!, to as LineOutcome["to"])],
            "w",
          )
          if (!legal("submitted", to)) {
            await expect(apply).rejects.toBeInstanceOf(TransitionError)
            expect(await l.reads.counts(run.id)).toMatchObject({ submitted: 2, completed: 0 })
            return
          }
          await apply
          expect((await itemsOf(l, run.id)).map((i) => i.state)).toEqual(["completed", to])
          await tallied(l, run.id)
        })
      }

      test("retry takes only failed and needs_review back to pending: completed items are refused", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 1)
        const [c] = await l.claims.step(run.id, "w", [], 1, 60_000)
        await l.claims.step(run.id, "w", [ok(c!.id, 1)], 0, 60_000)
        await expect(l.claims.retry(run.id, "completed" as "failed")).rejects.toBeInstanceOf(TransitionError)
        expect(await l.reads.counts(run.id)).toMatchObject({ completed: 1, pending: 0 })
      })

      test("every move the ledger's own operations make is an edge of the list, and together they make all but retry_wait → pending", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 12)
        const made = new Set<string>()
        const add = async <T>(op: () => Promise<T>, through?: State): Promise<T> => {
          let out: T | undefined
          const edges = await moves(l, run.id, async () => void (out = await op()), through)
          for (const m of edges) made.add(m)
          return out as T
        }
        const c = await add(() => l.claims.step(run.id, "w", [], 7, 60_000))
        const wait = (i: number): Outcome => ({
          ...ok(c[i]!.id, 1),
          to: "retry_wait",
          label: "retry",
          nextAt: 0,
        })
        await add(() =>
          l.claims.step(
            run.id,
            "w",
            [
              ok(c[0]!.id, 1),
              wait(1),
              { ...ok(c[2]!.id, 1), to: "failed", label: "failed" },
              { ...ok(c[3]!.id, 1), to: "needs_review", label: "needs_review" },
              { ...ok(c[4]!.id, 1), to: "pending", label: "interrupted" },
              wait(5),
              { ...ok(c[6]!.id, 1), to: "needs_review", label: "needs_review" },
            ],
            0,
            60_000,
          ),
        )
        // the first due retry, claimed on a lease that has already lapsed, and taken back
        await add(() => l.claims.step(run.id, "w", [], 1, -1))
        await add(() => l.claims.recover(run.id, () => false))
        await add(() => l.claims.retry(run.id, "failed"))
        // a person approves one answer left for review; the other goes back to be asked again
        await add(() => l.reviews.decide(run.id, [{ item: c[6]!.id, decision: "approve", by: "t" }]))
        await add(() => l.claims.retry(run.id, "needs_review"))
        // the other due retry and two pending items into a batch, which is given up
        const pack = async (n: number) => lines((await l.batches.packable(run.id, n)).map((x) => x.id))
        const first = await pack(3)
        const b1 = await add(() =>
          l.batches.intend(run.id, { tag: "t1", requests: "/r", bytes: 1, tokens: 1 }, first, [], "w"),
        )
        await add(() => l.batches.abandon(b1!.id, { errorClass: "queue_limit", error: "full" }))
        const second = await pack(4)
        const unpackable = (await l.batches.packable(run.id, 5)).at(-1)!
        // the one no request can be made of is claimed for the batch and fails in the same commit
        const b2 = await add(
          () =>
            l.batches.intend(
              run.id,
              { tag: "t2", requests: "/r", bytes: 1, tokens: 1 },
              second,
              [{ id: unpackable.id, errorClass: "bad_request", error: "too big" }],
              "w",
            ),
          "queued",
        )
        await add(() => l.batches.submitted(b2!.id, remote("in_progress")))
        await add(() =>
          l.batches.apply(
            b2!.id,
            [line(second[0]!.id, "completed"), line(second[1]!.id, "failed"), line(second[2]!.id, "pending")],
            "w",
          ),
        )
        await add(() => l.batches.finish(b2!.id, 3))
        const third = await pack(2)
        const b3 = await add(() =>
          l.batches.intend(run.id, { tag: "t3", requests: "/r", bytes: 1, tokens: 1 }, third, [], "w"),
        )
        await l.batches.submitted(b3!.id, remote("in_progress"))
        await add(() =>
          l.batches.apply(
            b3!.id,
            [line(third[0]!.id, "needs_review"), line(third[1]!.id, "retry_wait" as LineOutcome["to"])],
            "w",
          ),
        )
        await add(() => l.batches.abandon(b3!.id, { errorClass: "server", error: "gone" }))
        // a person rejects the batch's answer left for review; it is retried
        await add(() => l.reviews.decide(run.id, [{ item: third[0]!.id, decision: "reject", by: "t" }]))
        await add(() => l.claims.retry(run.id, "rejected"))
        // a response-cache hit
        const [hit] = await l.cache.pending(run.id, { after: 0, limit: 1 })
        const entry = {
          key: "h",
          output: "cached",
          provider: "openai",
          model: "m",
          input_tokens: 1,
          output_tokens: 1,
          cached_input_tokens: 0,
          cost_usd: 0.01,
          created_at: Date.now(),
        }
        await add(() => l.cache.serve(run.id, "w", [{ id: hit!.id, key: "h", entry }], []))
        const left = LEGAL.map(([a, b]) => `${a} → ${b}`).filter((e) => !made.has(e))
        expect(left).toEqual(["retry_wait → pending"])
        expect(made.size).toBe(LEGAL.length - 1)
        await tallied(l, run.id)
      })
    })

    describe("batches", () => {
      test("an intent's lines come back in line order with each item's row and place; its members stay members once settled", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 4)
        const ids = (await l.batches.packable(run.id, 3)).map((x) => x.id)
        const b = (await l.batches.intend(
          run.id,
          { tag: "splines", requests: "/r.jsonl", bytes: 27, tokens: 3 },
          lines(ids),
          [],
          "me",
        ))!
        const items = await itemsOf(l, run.id)
        expect(await l.batches.lines(b.id)).toEqual(
          ids.map((id, i) => ({ id, data: items[i]!.data, line: i + 1, offset: i * 10, bytes: 9 })),
        )
        expect((await l.batches.members(b.id)).sort((x, y) => x - y)).toEqual(ids)
        await l.batches.submitted(b.id, remote("in_progress"))
        // once created its lines are the provider's: none is left to render
        expect(await l.batches.lines(b.id)).toEqual([])
        await l.batches.observe(b.id, remote("ended", "completed"), null)
        await l.batches.downloaded(b.id, { output: "/out" })
        await l.batches.apply(b.id, [line(ids[0]!, "completed")], "me")
        // a worker that takes the batch over downloads its files again: allowed while it is applying
        await l.batches.downloaded(b.id, { output: "/elsewhere/out" })
        expect(await l.batches.get(b.id)).toMatchObject({ state: "applying", output: "/elsewhere/out" })
        expect((await l.batches.members(b.id)).sort((x, y) => x - y)).toEqual(ids)
        expect(await l.batches.members(b.id + 1000)).toEqual([])
      })

      test("an intent claims its items as queued with a new attempt each, and records where each request line is", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 5)
        const picked = await l.batches.packable(run.id, 4)
        const ids = picked.map((x) => x.id)
        expect(picked.map((x) => [x.key, x.attempts, x.batch_id])).toEqual([
          ["k1", 0, null],
          ["k2", 0, null],
          ["k3", 0, null],
          ["k4", 0, null],
        ])
        const b = (await l.batches.intend(
          run.id,
          { tag: "spabc", requests: "/r.jsonl", bytes: 40, tokens: 12 },
          lines(ids),
          [],
          "me",
        ))!
        expect(b).toMatchObject({
          run_id: run.id,
          state: "intent",
          tag: "spabc",
          requests: "/r.jsonl",
          count: 4,
          bytes: 40,
          tokens: 12,
          provider_id: null,
        })
        expect(await l.reads.counts(run.id)).toMatchObject({ queued: 4, pending: 1 })
        const items = await itemsOf(l, run.id)
        expect(items.slice(0, 4).map((i) => [i.attempts, i.batch_id, i.batch_line])).toEqual([
          [1, b.id, 1],
          [1, b.id, 2],
          [1, b.id, 3],
          [1, b.id, 4],
        ])
        // a batch item's attempt is written when its line comes back
        for (const id of ids) expect(await l.reads.attempts(id)).toEqual([])
        // the next pack sees only the one left
        expect((await l.batches.packable(run.id, 10)).map((x) => x.key)).toEqual(["k5"])
        expect((await l.batches.live(run.id)).map((x) => x.id)).toEqual([b.id])
        expect(await l.batches.get(b.id)).toEqual(b)
        await tallied(l, run.id)
      })

      test("an intent that names an item no longer claimable commits nothing", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 3)
        const ids = (await itemsOf(l, run.id)).map((i) => i.id)
        await intended(l, run.id, [ids[0]!])
        await expect(
          l.batches.intend(
            run.id,
            { tag: "b", requests: "/b", bytes: 1, tokens: 1 },
            lines(ids.slice(0, 2)),
            [],
            "me",
          ),
        ).rejects.toThrow("1 item(s) of batch b were claimed elsewhere")
        expect((await l.batches.list(run.id)).map((b) => b.tag)).toEqual(["a"])
        expect(await l.reads.counts(run.id)).toMatchObject({ queued: 1, pending: 2 })
        await tallied(l, run.id)
      })

      test("items that cannot be packed fail with their attempt recorded", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 2)
        const second = (await itemsOf(l, run.id))[1]!.id
        const b = await l.batches.intend(
          run.id,
          { tag: "a", requests: "/a", bytes: 1, tokens: 1 },
          [],
          [{ id: second, errorClass: "bad_request", error: "the request is 300000000 bytes" }],
          "me",
        )
        expect(b).toBeNull()
        const item = (await itemsOf(l, run.id))[1]!
        expect(item).toMatchObject({ state: "failed", attempts: 1, error_class: "bad_request" })
        expect(await l.reads.attempts(second)).toMatchObject([
          { n: 1, outcome: "failed", error_class: "bad_request", error: "the request is 300000000 bytes" },
        ])
        await tallied(l, run.id)
      })

      test("submitted → ended → applied: lines settle their items once, a re-apply changes nothing, the rest go back to pending unpaid", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 4)
        const ids = (await itemsOf(l, run.id)).map((i) => i.id)
        const b = await intended(l, run.id, ids)
        await l.batches.submitted(b.id, remote("in_progress"))
        expect(await l.reads.counts(run.id)).toMatchObject({ submitted: 4 })
        expect(await l.batches.get(b.id)).toMatchObject({
          state: "submitted",
          provider_id: "batch_1",
          phase: "in_progress",
          done: 1,
          total: 4,
        })
        expect((await l.batches.items(b.id)).map((x) => [x.id, x.attempts])).toEqual(ids.map((id) => [id, 1]))
        await l.batches.observe(b.id, remote("ended", "expired"), null)
        expect(await l.batches.get(b.id)).toMatchObject({
          state: "downloading",
          outcome: "expired",
          files: '{"output":"file-out"}',
        })
        await l.batches.downloaded(b.id, { output: "/o.jsonl" })
        expect(await l.batches.get(b.id)).toMatchObject({
          state: "applying",
          output: "/o.jsonl",
          errors: null,
        })
        const retry = line(ids[2]!, "pending", {
          label: "retry",
          errorClass: "server",
          error: "HTTP 500",
          status: 500,
          inputTokens: undefined,
          outputTokens: undefined,
        })
        await l.batches.apply(b.id, [line(ids[0]!, "completed"), line(ids[1]!, "completed"), retry], "me")
        await tallied(l, run.id)
        // a crash and a second pass over the same lines change nothing
        await l.batches.apply(b.id, [line(ids[0]!, "completed"), line(ids[1]!, "completed"), retry], "me")
        await tallied(l, run.id)
        expect(await l.batches.finish(b.id, 3)).toBe(1)
        expect(await l.batches.get(b.id)).toMatchObject({ state: "done", lines: 3 })
        const items = await itemsOf(l, run.id)
        expect(items.map((i) => [i.state, i.attempts, i.output, i.batch_input_tokens])).toEqual([
          ["completed", 1, `out ${ids[0]}`, 10],
          ["completed", 1, `out ${ids[1]}`, 10],
          ["pending", 1, null, 0],
          ["pending", 0, null, 0],
        ])
        expect(await l.reads.attempts(ids[0]!)).toMatchObject([
          { n: 1, outcome: "ok", error_class: null, error: null, batch_id: b.id },
        ])
        expect(await l.reads.attempts(ids[2]!)).toMatchObject([
          { n: 1, outcome: "retry", error_class: "server", error: "HTTP 500", http_status: 500 },
        ])
        // the line never run left no attempt behind
        expect(await l.reads.attempts(ids[3]!)).toEqual([])
        const s = await l.reads.summary(run.id)
        expect(s.batch).toEqual({ inputTokens: 20, outputTokens: 8, cachedTokens: 0, writeTokens: 0 })
        expect(await l.batches.live(run.id)).toEqual([])
        await tallied(l, run.id)
      })

      test("an abandoned batch gives its items back as never sent", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 2)
        const ids = (await itemsOf(l, run.id)).map((i) => i.id)
        const b = await intended(l, run.id, ids)
        expect(await l.batches.abandon(b.id, { errorClass: "queue_limit", error: "queue full" })).toBe(2)
        expect(await l.batches.get(b.id)).toMatchObject({
          state: "abandoned",
          error: "queue full",
          error_class: "queue_limit",
        })
        expect((await itemsOf(l, run.id)).map((i) => [i.state, i.attempts])).toEqual([
          ["pending", 0],
          ["pending", 0],
        ])
        for (const id of ids) expect(await l.reads.attempts(id)).toEqual([])
        await tallied(l, run.id)
      })

      test("when to look again, and the error that made it wait, are kept", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 1)
        const ids = (await itemsOf(l, run.id)).map((i) => i.id)
        const b = await intended(l, run.id, ids)
        await l.batches.later(b.id, 12345, "HTTP 503")
        expect(await l.batches.get(b.id)).toMatchObject({ next_at: 12345, error: "HTTP 503" })
        await l.batches.later(b.id, 23456)
        expect(await l.batches.get(b.id)).toMatchObject({ next_at: 23456, error: null })
      })

      test("recent batches are the live ones and the last n that ended, oldest first, with how many there are", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 4)
        const ids = (await itemsOf(l, run.id)).map((i) => i.id)
        const made = []
        for (const [i, id] of ids.entries()) {
          const b = (await l.batches.intend(
            run.id,
            { tag: `t${i}`, requests: "/r", bytes: 1, tokens: 1 },
            lines([id]),
            [],
            "w",
          ))!
          made.push(b.id)
          if (i < 3) await l.batches.abandon(b.id, { errorClass: "server", error: "no" })
        }
        const recent = await l.batches.recent(run.id, 2)
        expect(recent.total).toBe(4)
        expect(recent.batches.map((b) => b.id)).toEqual(made.slice(1))
        expect((await l.batches.list(run.id)).map((b) => b.id)).toEqual(made)
        expect((await l.batches.live(run.id)).map((b) => b.id)).toEqual(made.slice(3))
      })

      test("the batch lease is held by one process at a time, and a dead holder's lapses; queue limits are learned", async () => {
        await using p = await place()
        const [l, other] = [await p.open(), await p.open()]
        const { run } = await seed(l, 1)
        expect(await l.batches.lease(run.id, "a", 60_000, () => false)).toBe(true)
        expect(await other.batches.lease(run.id, "b", 60_000, () => false)).toBe(false)
        expect(await other.batches.holder(run.id)).toBe("a")
        expect(await other.batches.lease(run.id, "b", 60_000, (o) => o === "a")).toBe(true)
        await l.batches.release(run.id, "a")
        expect(await l.batches.holder(run.id)).toBe("b")
        await other.batches.release(run.id, "b")
        expect(await l.batches.holder(run.id)).toBeNull()
        await l.batches.learnQueue(run.id, { tokens: 90_000 })
        await l.batches.learnQueue(run.id, { requests: 5 })
        expect(await l.runs.get(run.id)).toMatchObject({ queue_tokens: 90_000, queue_requests: 5 })
      })
    })

    describe("reads and tallies", () => {
      test("the tallies always equal a GROUP BY of the items, through claims, outcomes, retries, recovery, ingest and batches", async () => {
        await using p = await place()
        const l = await p.open()
        const { run, input } = await seed(l, 6)
        await tallied(l, run.id)
        const c = await l.claims.step(run.id, "w", [], 3, 60_000)
        await tallied(l, run.id)
        await l.claims.step(
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
        await tallied(l, run.id)
        // c[2] is still running, under an owner that is dead
        expect(await l.claims.recover(run.id, () => true)).toBe(1)
        await tallied(l, run.id)
        expect(await l.claims.retry(run.id, "failed")).toBe(1)
        await tallied(l, run.id)
        const first = lines((await l.batches.packable(run.id, 2)).map((x) => x.id))
        const batch = (await l.batches.intend(
          run.id,
          { tag: "t1", requests: "/r", bytes: 20, tokens: 4 },
          first,
          [],
          "w",
        ))!
        await tallied(l, run.id)
        await l.batches.submitted(batch.id, { id: "b1", status: "in_progress", phase: "in_progress" })
        await tallied(l, run.id)
        await l.batches.apply(
          batch.id,
          [line(first[0]!.id, "completed", { output: "o", inputTokens: 7, outputTokens: 1 })],
          "w",
        )
        await tallied(l, run.id)
        await l.batches.finish(batch.id, 1)
        await tallied(l, run.id)
        await l.ingest.add(
          run.id,
          input,
          { rows: [{ key: "k7", line: 7, data: {} }], problems: [], checkpoint: { offset: 7 } },
          true,
        )
        await tallied(l, run.id)
        expect(await l.reads.counts(run.id)).toMatchObject({ completed: 2, pending: 5, failed: 0 })
        expect((await l.reads.summary(run.id)).errors).toEqual([
          { class: "auth", count: 1, example: "key", key: "k2" },
        ])
        expect(await l.reads.errorClasses(run.id)).toEqual([
          { class: "auth", count: 1, example: "key", key: "k2" },
        ])
        // a direct call that waits to retry, then goes into a batch with four others; the batch is given up once, then
        // a second one settles its lines every way a line can end
        const [w] = await l.claims.step(run.id, "w", [], 1, 60_000)
        await l.claims.step(
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
        await tallied(l, run.id)
        const pack = async () => lines((await l.batches.packable(run.id, 5)).map((x) => x.id))
        const given = (await l.batches.intend(
          run.id,
          { tag: "t2", requests: "/r", bytes: 50, tokens: 9 },
          await pack(),
          [],
          "w",
        ))!
        expect(await l.reads.counts(run.id)).toMatchObject({ queued: 5, retry_wait: 0, pending: 0 })
        await tallied(l, run.id)
        await l.batches.abandon(given.id, { errorClass: "queue_limit", error: "full" })
        await tallied(l, run.id)
        const five = await pack()
        const b3 = (await l.batches.intend(
          run.id,
          { tag: "t3", requests: "/r", bytes: 50, tokens: 9 },
          five,
          [],
          "w",
        ))!
        await l.batches.submitted(b3.id, { id: "b3", status: "in_progress", phase: "in_progress" })
        await tallied(l, run.id)
        const settle = (i: number, to: LineOutcome["to"], extra: Partial<LineOutcome> = {}) =>
          line(five[i]!.id, to, {
            label: to,
            inputTokens: 3,
            outputTokens: 1,
            cachedTokens: 1,
            writeTokens: 2,
            ...extra,
          })
        await l.batches.apply(
          b3.id,
          [
            settle(0, "completed", { output: "a" }),
            settle(1, "failed", { errorClass: "bad_request", error: "no" }),
            settle(2, "needs_review", { errorClass: "output", error: "not JSON", output: "{" }),
            settle(3, "pending", { errorClass: "server", error: "500" }),
          ],
          "w",
        )
        await tallied(l, run.id)
        // the same lines applied again (a resumed apply) change nothing
        await l.batches.apply(b3.id, [settle(0, "completed", { output: "a" })], "w")
        await tallied(l, run.id)
        await l.batches.finish(b3.id, 4)
        await tallied(l, run.id)
        expect(await l.reads.counts(run.id)).toMatchObject({
          completed: 3,
          failed: 1,
          needs_review: 1,
          retry_wait: 0,
          pending: 2,
        })
        // the completions chart counts every item that ended, by direct call or by batch line, once
        const chart = await l.reads.progress(run.id, 0, 10_000_000_000_000)
        const ended = chart.reduce((a, x) => a + x.completed + x.failed, 0)
        const final = await l.reads.counts(run.id)
        expect(ended).toBe(final.completed + final.failed + final.needs_review + 1) // + the failed item retried above
      })

      test("the last minute's rate of a run younger than a minute is over its own age, not a whole minute", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 3)
        const claimed = await l.claims.step(run.id, "w", [], 3, 60_000)
        const attempts = await Promise.all(claimed.map((c) => l.reads.attempts(c.id)))
        const started = Math.min(...attempts.map((a) => a[0]!.started_at))
        await l.claims.step(
          run.id,
          "w",
          claimed.map((c) => ok(c.id, 1)),
          0,
          60_000,
        )
        const now = started + 12_000
        const s = await l.reads.summary(run.id, now)
        expect(s.recentCompleted).toBe(3)
        expect(s.recentWindowMs).toBe(12_000)
        expect(s.firstStarted).toBe(started)
        // an older run: the window is the last minute, from the start of its first 10 s bucket
        const later = await l.reads.summary(run.id, started + 600_000)
        expect(later.recentCompleted).toBe(0)
        expect(later.recentWindowMs).toBe(
          started + 600_000 - Math.floor((started + 540_000) / 10_000) * 10_000,
        )
      })

      test("the completions chart merges 10 s buckets into slots from its first bucket", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 4)
        const c = await l.claims.step(run.id, "w", [], 4, 60_000)
        const at = Date.UTC(2026, 0, 1, 12, 0, 5)
        await l.claims.step(
          run.id,
          "w",
          [
            { ...ok(c[0]!.id, 1), endedAt: at },
            { ...ok(c[1]!.id, 1), endedAt: at + 20_000 },
            { ...ok(c[2]!.id, 1), to: "failed", label: "failed", endedAt: at + 25_000 },
          ],
          0,
          60_000,
        )
        expect(await l.reads.firstProgress(run.id)).toBe(at - 5_000)
        expect(await l.reads.progress(run.id, at - 5_000, 10_000)).toEqual([
          { at: at - 5_000, completed: 1, failed: 0 },
          { at: at + 15_000, completed: 1, failed: 0 },
          { at: at + 25_000, completed: 0, failed: 1 },
        ])
        expect(await l.reads.progress(run.id, at - 5_000, 30_000)).toEqual([
          { at: at - 5_000, completed: 2, failed: 0 },
          { at: at + 25_000, completed: 0, failed: 1 },
        ])
      })

      test("pages walk a run's items in ledger order from a cursor, each with its attempts; errors come newest or since", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 5)
        const c = await l.claims.step(run.id, "w", [], 3, 60_000)
        const at = Date.now()
        const fail = (i: number, endedAt: number): Outcome => ({
          ...ok(c[i]!.id, 1),
          to: "failed",
          label: "failed",
          output: undefined,
          errorClass: "server",
          error: `HTTP 50${i}`,
          status: 500 + i,
          endedAt,
        })
        // in two steps, so that the first error of the class is known
        await l.claims.step(run.id, "w", [ok(c[0]!.id, 1, "A"), fail(1, at - 1000)], 0, 60_000)
        await l.claims.step(run.id, "w", [fail(2, at)], 0, 60_000)
        const page = await l.reads.page(run.id, { limit: 2 })
        expect(page.map((x) => [x.key, x.state, x.output, x.path, x.row])).toEqual([
          ["k1", "completed", "A", "/in.jsonl", 1],
          ["k2", "failed", null, "/in.jsonl", 2],
        ])
        expect(page[1]!.attempts_list).toMatchObject([{ n: 1, outcome: "failed", http_status: 501 }])
        const next = await l.reads.page(run.id, { after: page[1]!.id, limit: 10 })
        expect(next.map((x) => x.key)).toEqual(["k3", "k4", "k5"])
        expect(next[2]!.attempts_list).toEqual([])
        const failed = await l.reads.page(run.id, { state: "failed", limit: 10 })
        expect(failed.map((x) => x.key)).toEqual(["k2", "k3"])
        expect((await itemsOf(l, run.id, "failed")).map((x) => x.key)).toEqual(["k2", "k3"])
        expect((await l.reads.latestErrors(run.id, 5)).map((e) => [e.key, e.error, e.http_status])).toEqual([
          ["k3", "HTTP 502", 502],
          ["k2", "HTTP 501", 501],
        ])
        expect((await l.reads.errorsSince(run.id, at - 500)).map((e) => e.key)).toEqual(["k3"])
        expect((await l.reads.errorsSince(run.id, 0)).map((e) => e.key)).toEqual(["k2", "k3"])
        expect((await l.reads.summary(run.id)).errors).toEqual([
          { class: "server", count: 2, example: "HTTP 501", key: "k2" },
        ])
      })

      test("an item by id, items by key, and a bounded search by text that goes on from its cursor", async () => {
        await using p = await place()
        const l = await p.open()
        // another run's items before and after this run's, so that the search must keep to its own
        const before = await seed(l, 3, "before")
        const { run, input } = await seed(l, 0)
        const second = await l.runs.addInput(run.id, "/two.jsonl", "jsonl")
        await seed(l, 3, "after")
        const text = ["Refund please", "a bug", "50% off_now", "refund again", "nothing"]
        await l.ingest.add(
          run.id,
          input,
          {
            rows: text.map((t, i) => ({ key: `k${i + 1}`, line: i + 1, data: { text: t } })),
            problems: [],
            checkpoint: {},
          },
          true,
        )
        await l.ingest.add(
          run.id,
          second,
          { rows: [{ key: "k2", line: 1, data: { text: "two" } }], problems: [], checkpoint: {} },
          true,
        )
        const c = await l.claims.step(run.id, "w", [], 2, 60_000)
        await l.claims.step(
          run.id,
          "w",
          [
            ok(c[0]!.id, 1, "label: BILLING"),
            {
              ...ok(c[1]!.id, 1),
              to: "failed",
              label: "failed",
              output: undefined,
              errorClass: "server",
              error: "HTTP 503 upstream",
            },
          ],
          0,
          60_000,
        )

        const one = await l.reads.item(run.id, c[0]!.id)
        expect([one?.key, one?.state, one?.output, JSON.parse(one!.data)]).toEqual([
          "k1",
          "completed",
          "label: BILLING",
          { text: "Refund please" },
        ])
        expect(one?.attempts_list.map((a) => [a.n, a.outcome])).toEqual([[1, "ok"]])
        expect(await l.reads.item(before.run.id, c[0]!.id)).toBeNull()
        expect(await l.reads.item(run.id, 999_999)).toBeNull()
        // a page keeps to the run's own items, too
        expect((await l.reads.page(run.id, { limit: 10 })).map((i) => i.key)).toEqual([
          "k1",
          "k2",
          "k3",
          "k4",
          "k5",
          "k2",
        ])

        // one per input; none in another run
        expect(
          (await l.reads.keyed(run.id, "k2")).map((i) => [i.key, i.path, i.attempts_list.length]),
        ).toEqual([
          ["k2", "/in.jsonl", 1],
          ["k2", "/two.jsonl", 0],
        ])
        expect(await l.reads.keyed(run.id, "o1")).toEqual([])
        expect(await l.reads.keyed(run.id, "k")).toEqual([])

        const search = (
          q: string,
          o: { state?: State; after?: number; limit?: number; scan?: number } = {},
        ) => l.reads.search(run.id, { text: q, limit: 10, scan: 100, ...o })
        const keys = (r: { items: { key: string }[] }) => r.items.map((i) => i.key)
        // in the row, in either case; in the output; in the error; nothing of the other runs (their rows hold "t1")
        expect(keys(await search("REFUND"))).toEqual(["k1", "k4"])
        expect(keys(await search("billing"))).toEqual(["k1"])
        expect(keys(await search("upstream"))).toEqual(["k2"])
        expect(await search("t1")).toEqual({ items: [], scanned: 6, next: null })
        // LIKE's wildcards are only themselves
        expect(keys(await search("50%"))).toEqual(["k3"])
        expect(keys(await search("o_f"))).toEqual([])
        expect(keys(await search("%"))).toEqual(["k3"])
        // the row is searched as its JSON text: its field names too ("text" has an e); an "n" is not in them
        expect(keys(await search("e"))).toEqual(["k1", "k2", "k3", "k4", "k5", "k2"])
        // bounded: two items a time, each going on after the last one read, every match once
        const found: string[] = []
        const reads: [number, boolean][] = []
        let after: number | undefined
        for (let i = 0; i < 10; i++) {
          const r = await search("n", { after, scan: 2 })
          found.push(...keys(r))
          reads.push([r.scanned, r.next === null])
          if (r.next === null) break
          after = r.next
        }
        expect(found).toEqual(["k1", "k3", "k4", "k5"])
        expect(reads).toEqual([
          [2, false],
          [2, false],
          [2, true],
        ])
        // the limit stops the read at the last match, which is where the next one starts
        const first = await search("n", { limit: 1 })
        expect([keys(first), first.scanned, first.next]).toEqual([["k1"], 1, c[0]!.id])
        expect(keys(await search("n", { after: first.next!, limit: 1 }))).toEqual(["k3"])
        // of one state only
        expect(keys(await search("n", { state: "pending" }))).toEqual(["k3", "k4", "k5"])
        expect(await search("n", { state: "needs_review" })).toEqual({ items: [], scanned: 0, next: null })
      })

      test("the endings of attempts per slot, or null past a bound; error marks per slot, each counted up to a cap", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 4)
        const c = await l.claims.step(run.id, "w", [], 4, 60_000)
        const t0 = 1_700_000_000_000
        const bad = (i: number, to: Outcome["to"], label: string, endedAt: number): Outcome => ({
          ...ok(c[i]!.id, 1),
          to,
          label,
          output: undefined,
          errorClass: to === "needs_review" ? "output" : "server",
          error: "no",
          endedAt,
          ...(to === "retry_wait" ? { nextAt: t0 + 60_000 } : {}),
        })
        await l.claims.step(
          run.id,
          "w",
          [
            { ...ok(c[0]!.id, 1), endedAt: t0 + 100 },
            bad(1, "failed", "failed", t0 + 1500),
            bad(2, "retry_wait", "retry", t0 + 1600),
            bad(3, "needs_review", "needs_review", t0 + 2999),
          ],
          0,
          60_000,
        )
        expect(await l.reads.endings(run.id, t0, 1000, 10)).toEqual([
          { at: t0, completed: 1, failed: 0, errors: 0 },
          { at: t0 + 1000, completed: 0, failed: 1, errors: 2 },
          { at: t0 + 2000, completed: 0, failed: 1, errors: 1 },
        ])
        expect(await l.reads.endings(run.id, t0 + 1000, 500, 10)).toEqual([
          { at: t0 + 1500, completed: 0, failed: 1, errors: 2 },
          { at: t0 + 2500, completed: 0, failed: 1, errors: 1 },
        ])
        expect(await l.reads.endings(run.id, t0, 1000, 3)).toBeNull()
        expect(await l.reads.errorMarks(run.id, t0, 1000, 3, 10)).toEqual([
          { at: t0 + 1000, errors: 2 },
          { at: t0 + 2000, errors: 1 },
        ])
        expect(await l.reads.errorMarks(run.id, t0, 1000, 2, 1)).toEqual([{ at: t0 + 1000, errors: 1 }])
      })

      test("knows whether a run has work left, and the largest attempt it has made", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 2)
        expect(await l.reads.hasOpen(run.id)).toBe(true)
        expect(await l.reads.largestAttempt(run.id)).toBeNull()
        const c = await l.claims.step(run.id, "w", [], 2, 60_000)
        await l.claims.step(
          run.id,
          "w",
          [
            { ...ok(c[0]!.id, 1), inputTokens: 30, outputTokens: 2 },
            { ...ok(c[1]!.id, 1), inputTokens: 5, outputTokens: 9 },
          ],
          0,
          60_000,
        )
        expect(await l.reads.hasOpen(run.id)).toBe(false)
        expect(await l.reads.largestAttempt(run.id)).toEqual({ input: 30, output: 9 })
      })

      test("the version changes when another connection commits", async () => {
        await using p = await place()
        const [reader, writer] = [await p.open(), await p.open()]
        const { run } = await seed(writer, 2)
        const before = await reader.reads.version()
        expect(await reader.reads.version()).toBe(before)
        await writer.claims.step(run.id, "w", [], 1, 60_000)
        expect(await reader.reads.version()).not.toBe(before)
      })

      test("a stream stopped early lets go of the read", async () => {
        await using p = await place()
        const [l, writer] = [await p.open(), await p.open()]
        const { run } = await seed(l, 5)
        for await (const item of l.reads.items(run.id)) {
          expect(item.key).toBe("k1")
          break
        }
        // a read still open would hold the snapshot: a writer's commit and the next read must both go through
        await writer.claims.step(run.id, "w", [], 5, 60_000)
        expect((await l.reads.counts(run.id)).running).toBe(5)
      })
    })

    describe("canaries", () => {
      test("a run has no canary until one starts; widened, its report is due again; reported, it says when", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 4)
        expect(await l.canaries.get(run.id)).toBeNull()
        const started = await l.canaries.start(run.id, 2)
        expect(started).toMatchObject({ items: 2, reported_at: null })
        const before = Date.now()
        await l.canaries.reported(run.id)
        expect((await l.canaries.get(run.id))!.reported_at).toBeGreaterThanOrEqual(before)
        expect(await l.canaries.start(run.id, 3)).toEqual({
          items: 3,
          started_at: started.started_at,
          reported_at: null,
        })
      })

      test("a canary's steps claim only the run's first items, a due retry among them too, and count only them", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 10)
        const c = await l.canaries.step(run.id, "w", [], 8, 60_000, 3)
        expect(c.map((i) => i.key)).toEqual(["k1", "k2", "k3"])
        const at = Date.now()
        const back: Outcome[] = [
          { ...ok(c[0]!.id, 1), to: "retry_wait", label: "retry", errorClass: "server", nextAt: at - 1 },
          ok(c[1]!.id, 1),
          { ...ok(c[2]!.id, 1), to: "pending", label: "unsent" },
        ]
        // the limit is cut before the step's outcomes are recorded: what they put back is claimed at the next step
        expect(await l.canaries.step(run.id, "w", back, 8, 60_000, 3)).toEqual([])
        const again = await l.canaries.step(run.id, "w", [], 8, 60_000, 3)
        // k3's unsent attempt was taken back: it is claimed as its first again
        expect(again.map((i) => [i.key, i.attempt])).toEqual([
          ["k1", 2],
          ["k3", 1],
        ])
        expect(await l.canaries.step(run.id, "w", [], 8, 60_000, 3)).toEqual([])
        expect(await l.canaries.counts(run.id, 3)).toMatchObject({ running: 2, completed: 1, pending: 0 })
        expect(await l.reads.counts(run.id)).toMatchObject({ running: 2, completed: 1, pending: 7 })
        await tallied(l, run.id)
      })

      test("while a run has fewer items than its canary, all it has are among them, and items read later join up to the count", async () => {
        await using p = await place()
        const l = await p.open()
        const { run, input } = await seed(l, 2)
        const other = await seed(l, 3, "other")
        expect((await l.canaries.step(run.id, "w", [], 10, 60_000, 5)).map((i) => i.key)).toEqual([
          "k1",
          "k2",
        ])
        await l.ingest.reopen(run.id)
        await l.ingest.add(run.id, input, { rows: rows(6, 3), problems: [], checkpoint: { offset: 8 } }, true)
        expect((await l.canaries.step(run.id, "w", [], 10, 60_000, 5)).map((i) => i.key)).toEqual([
          "k3",
          "k4",
          "k5",
        ])
        expect(await l.canaries.counts(run.id, 5)).toMatchObject({ running: 5, pending: 0 })
        // another run's items, before and after in the store, are none of this run's first
        expect(await l.canaries.counts(other.run.id, 5)).toMatchObject({ pending: 3, running: 0 })
      })

      test("beyond counts the items after the first n that were ever attempted or are not pending", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 6)
        expect(await l.canaries.beyond(run.id, 0)).toBe(0)
        const c = await l.claims.step(run.id, "w", [], 3, 60_000)
        expect(await l.canaries.beyond(run.id, 0)).toBe(3)
        expect(await l.canaries.beyond(run.id, 2)).toBe(1)
        expect(await l.canaries.beyond(run.id, 3)).toBe(0)
        // back to pending, its attempt counted (a call that paused the run): still sent
        await l.claims.step(run.id, "w", [{ ...ok(c[2]!.id, 1), to: "pending", label: "paused" }], 0, 60_000)
        expect(await l.canaries.beyond(run.id, 2)).toBe(1)
        expect(await l.canaries.beyond(run.id, 10)).toBe(0)
      })
    })

    describe("the worker registry", () => {
      test("held counts the running items under each owner's lease", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 6)
        expect(await l.workers.held(run.id)).toEqual([])
        await l.claims.step(run.id, "host-a:1:x", [], 2, 60_000)
        const b = await l.claims.step(run.id, "host-b:2:y", [], 3, 60_000)
        expect(await l.workers.held(run.id)).toEqual([
          { owner: "host-a:1:x", items: 2 },
          { owner: "host-b:2:y", items: 3 },
        ])
        await l.claims.step(run.id, "host-b:2:y", [ok(b[0]!.id, b[0]!.attempt)], 0, 60_000)
        expect(await l.workers.held(run.id)).toEqual([
          { owner: "host-a:1:x", items: 2 },
          { owner: "host-b:2:y", items: 2 },
        ])
      })

      const newRun = (name: string, worker?: string, seen?: number | null) => ({
        name,
        job: { ...JOB, name },
        fingerprint: "fp",
        resume: `spool run ${name}.toml`,
        inputs: [],
        ...(worker === undefined ? {} : { worker }),
        ...(seen === undefined ? {} : { seen }),
      })

      test("a beat registers a worker or renews it; leaving takes off that worker of that run only", async () => {
        await using p = await place()
        const [a, b] = [await p.open(), await p.open()]
        const { run } = await seed(a, 1)
        const other = await seed(a, 1, "other")
        await a.workers.beat(run.id, "h:1:a", 1_000)
        await b.workers.beat(run.id, "h:2:b", 2_000)
        await a.workers.beat(other.run.id, "h:1:a", 1_500)
        await a.workers.beat(run.id, "h:1:a", 6_000)
        expect(await b.workers.list(run.id)).toEqual([
          { owner: "h:1:a", started_at: 1_000, beat_at: 6_000 },
          { owner: "h:2:b", started_at: 2_000, beat_at: 2_000 },
        ])
        await b.workers.leave(run.id, "h:1:a")
        expect(await a.workers.list(run.id)).toEqual([{ owner: "h:2:b", started_at: 2_000, beat_at: 2_000 }])
        expect(await a.workers.list(other.run.id)).toEqual([
          { owner: "h:1:a", started_at: 1_500, beat_at: 1_500 },
        ])
        // leaving twice, or a run never worked on, changes nothing
        await a.workers.leave(run.id, "h:1:a")
        expect(await a.workers.list(run.id + 1000)).toEqual([])
      })

      test("a run created with a worker has it from its first moment; a run found instead is left as it was", async () => {
        await using p = await place()
        const l = await p.open()
        const before = Date.now()
        const made = await l.runs.create(newRun("r", "h:1:a"))
        expect(made.created).toBe(true)
        const [w] = await l.workers.list(made.run.id)
        expect(w?.owner).toBe("h:1:a")
        expect(w!.beat_at).toBeGreaterThanOrEqual(before)
        expect(w!.started_at).toBe(w!.beat_at)
        // another process made a run of this name since `seen`: that run is given, and no worker joins it here
        const found = await l.runs.create(newRun("r", "h:2:b", null))
        expect([found.created, found.run.id]).toEqual([false, made.run.id])
        expect((await l.workers.list(made.run.id)).map((x) => x.owner)).toEqual(["h:1:a"])
        const plain = await l.runs.create(newRun("s"))
        expect(await l.workers.list(plain.run.id)).toEqual([])
      })

      test("prune forgets the workers known dead or beating before a time, and no others", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 1)
        for (const [owner, at] of [
          ["h:1:stale", 1_000],
          ["h:2:dead", 9_000],
          ["h:3:fresh", 9_000],
          ["h:4:edge", 5_000],
        ] as const)
          await l.workers.beat(run.id, owner, at)
        expect(await l.workers.prune(run.id, (o) => o === "h:2:dead", 5_000)).toBe(2)
        expect((await l.workers.list(run.id)).map((w) => w.owner)).toEqual(["h:4:edge", "h:3:fresh"])
      })

      test("take: one bucket per run and name for every connection, full at first, refilled by time, never past its limit", async () => {
        await using p = await place()
        const [a, b] = [await p.open(), await p.open()]
        const { run } = await seed(a, 1)
        const other = await seed(a, 1, "other")
        // 60 a minute: a full minute's worth at once, shared by the two connections
        expect(await a.workers.take(run.id, "rpm", 60, 40, 1_000)).toEqual({ granted: 40, waitMs: 0 })
        expect(await b.workers.take(run.id, "rpm", 60, 30, 1_000)).toEqual({ granted: 20, waitMs: 10_000 })
        expect(await a.workers.take(run.id, "rpm", 60, 1, 1_000)).toEqual({ granted: 0, waitMs: 1_000 })
        // another name and another run have buckets of their own
        expect(await b.workers.take(run.id, "tpm", 1_000, 600, 1_000)).toEqual({ granted: 600, waitMs: 0 })
        expect(await b.workers.take(other.run.id, "rpm", 60, 60, 1_000)).toEqual({ granted: 60, waitMs: 0 })
        // one a second comes back, part of one is given as it is
        expect(await b.workers.take(run.id, "rpm", 60, 3, 3_500)).toEqual({ granted: 2.5, waitMs: 500 })
        // a clock behind the last take refills nothing, and is not taken as the bucket's time
        expect(await a.workers.take(run.id, "rpm", 60, 1, 2_000)).toEqual({ granted: 0, waitMs: 1_000 })
        expect(await a.workers.take(run.id, "rpm", 60, 1, 4_500)).toEqual({ granted: 1, waitMs: 0 })
        // an hour later it holds its limit, no more; a lower limit given caps it there
        expect(await a.workers.take(run.id, "rpm", 60, 100, 3_604_500)).toEqual({
          granted: 60,
          waitMs: 40_000,
        })
        expect(await a.workers.take(run.id, "tpm", 500, 900, 3_604_500)).toEqual({
          granted: 500,
          waitMs: 48_000,
        })
        // without a time, the store's clock: a full bucket now
        expect(await b.workers.take(run.id, "fresh", 10, 4)).toEqual({ granted: 4, waitMs: 0 })
      })

      test("alive counts the workers with a fresh beat whose process is not known gone", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 1)
        const ended = Bun.spawn(["true"])
        await ended.exited
        const now = Date.now()
        await l.workers.beat(run.id, `elsewhere:1:fresh`, now - FRESH_MS + 1_000)
        await l.workers.beat(run.id, `elsewhere:2:stale`, now - FRESH_MS)
        await l.workers.beat(run.id, `${hostname()}:${process.pid}:here`, now - 1_000)
        // a killed process of this host is gone at once, however fresh its last beat
        await l.workers.beat(run.id, `${hostname()}:${ended.pid}:killed`, now)
        const workers = await l.workers.list(run.id)
        expect(workers).toHaveLength(4)
        expect(alive(workers, now)).toBe(2)
        expect(alive(workers, now + 1_000)).toBe(1)
        expect(alive(workers, now + FRESH_MS)).toBe(0)
        expect(alive([], now)).toBe(0)
      })
    })

    describe("results exports (issue 17)", () => {
      test("exportPage: a run's items in id order with their input rows, by page, of some states, changed after a mark", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 6)
        await seed(l, 2, "other")
        const c = await l.claims.step(run.id, "w", [], 4, 60_000)
        expect(c).toHaveLength(4)
        // updated_at is the attempt's end: 1,000, 2,000 and 3,000 ms; c[3] stays running, k5 and k6 pending
        await l.claims.step(
          run.id,
          "w",
          [
            { ...ok(c[0]!.id, 1, "first"), endedAt: 1_000 },
            {
              item: c[1]!.id,
              attempt: 1,
              to: "failed",
              label: "failed",
              errorClass: "auth",
              error: "key",
              latencyMs: 5,
              endedAt: 2_000,
            },
            { ...ok(c[2]!.id, 1, "third"), endedAt: 3_000 },
          ],
          0,
          60_000,
        )
        const all = await l.reads.exportPage(run.id, { after: 0, limit: 100 })
        expect(all.map((r) => [r.key, r.state, r.output, JSON.parse(r.data), r.vector, r.path])).toEqual([
          ["k1", "completed", "first", { text: "t1" }, null, "/in.jsonl"],
          ["k2", "failed", null, { text: "t2" }, null, "/in.jsonl"],
          ["k3", "completed", "third", { text: "t3" }, null, "/in.jsonl"],
          ["k4", "running", null, { text: "t4" }, null, "/in.jsonl"],
          ["k5", "pending", null, { text: "t5" }, null, "/in.jsonl"],
          ["k6", "pending", null, { text: "t6" }, null, "/in.jsonl"],
        ])
        expect(all.slice(0, 3).map((r) => [r.updated_at, r.error, r.input_tokens])).toEqual([
          [1_000, null, 3],
          [2_000, "key", 0],
          [3_000, null, 3],
        ])
        // by pages of 4 from a cursor: the same items, none twice
        const first = await l.reads.exportPage(run.id, { after: 0, limit: 4 })
        const second = await l.reads.exportPage(run.id, { after: first.at(-1)!.id, limit: 4 })
        expect([...first, ...second].map((r) => r.key)).toEqual(["k1", "k2", "k3", "k4", "k5", "k6"])
        expect(second).toHaveLength(2)
        const keys = async (o: { states?: State[]; since?: number | null }) =>
          (await l.reads.exportPage(run.id, { ...o, after: 0, limit: 100 })).map((r) => r.key)
        expect(await keys({ states: ["completed"] })).toEqual(["k1", "k3"])
        expect(await keys({ states: ["failed", "pending"] })).toEqual(["k2", "k5", "k6"])
        expect(await keys({ states: ["needs_review"] })).toEqual([])
        const finished: State[] = ["completed", "failed", "needs_review"]
        expect(await keys({ states: finished, since: 1_000 })).toEqual(["k2", "k3"])
        expect(await keys({ states: finished, since: 2_999 })).toEqual(["k3"])
        expect(await keys({ states: finished, since: 3_000 })).toEqual([])
        expect(await keys({ states: finished, since: null })).toEqual(["k1", "k2", "k3"])
        // a run's cursor past its last item, and a run without items
        expect(await l.reads.exportPage(run.id, { after: all.at(-1)!.id, limit: 10 })).toEqual([])
        const { run: empty } = await l.runs.create({
          name: "empty",
          job: { ...JOB, name: "empty" },
          fingerprint: "fp",
          resume: "",
          inputs: [],
        })
        expect(await l.reads.exportPage(empty.id, { after: 0, limit: 10 })).toEqual([])
      })

      test("exports: none at first, then the latest by time, each run's own; the same one recorded twice is one", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 1)
        const { run: other } = await seed(l, 1, "other")
        expect(await l.reads.lastExport(run.id)).toBeNull()
        const e1 = { at: 10_000, mark: 9_000.5, rows: 3, format: "csv", path: "/tmp/a.csv" }
        const e2 = { at: 20_000, mark: 19_000, rows: 0, format: "jsonl", path: null }
        await l.reads.recordExport(run.id, e2)
        await l.reads.recordExport(run.id, e1)
        await l.reads.recordExport(run.id, e2)
        await l.reads.recordExport(other.id, { ...e1, at: 30_000 })
        expect(await l.reads.lastExport(run.id)).toEqual(e2)
        expect(await l.reads.lastExport(other.id)).toEqual({ ...e1, at: 30_000 })
      })
    })

    describe("prompt caching (issue 20)", () => {
      test("a call's cache writes are kept on its attempt and added to its item and the run's totals, apart from its cached tokens", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 3)
        const c = await l.claims.step(run.id, "w", [], 2, 60_000)
        await l.claims.step(
          run.id,
          "w",
          [
            { ...ok(c[0]!.id, 1), inputTokens: 1200, cachedTokens: 700, writeTokens: 300 },
            { ...ok(c[1]!.id, 1), to: "retry_wait", label: "retry", nextAt: 0, writeTokens: 20 },
          ],
          0,
          60_000,
        )
        // the retry's second attempt writes again: an item's writes are the sum of its attempts'
        const [again] = await l.claims.step(run.id, "w", [], 1, 60_000)
        expect(again).toMatchObject({ id: c[1]!.id, attempt: 2 })
        await l.claims.step(run.id, "w", [{ ...ok(c[1]!.id, 2), writeTokens: 5 }], 0, 60_000)
        const items = await itemsOf(l, run.id)
        expect(
          items.map((i) => [i.key, i.cached_input_tokens, i.cache_write_tokens, i.batch_write_tokens]),
        ).toEqual([
          ["k1", 700, 300, 0],
          ["k2", 0, 25, 0],
          ["k3", 0, 0, 0],
        ])
        expect(
          (await l.reads.attempts(c[0]!.id)).map((a) => [a.cached_input_tokens, a.cache_write_tokens]),
        ).toEqual([[700, 300]])
        expect((await l.reads.attempts(c[1]!.id)).map((a) => [a.n, a.cache_write_tokens])).toEqual([
          [1, 20],
          [2, 5],
        ])
        const [paged] = await l.reads.page(run.id, { limit: 1 })
        expect([paged!.cache_write_tokens, paged!.batch_write_tokens]).toEqual([300, 0])
        expect((await l.reads.item(run.id, c[0]!.id))?.cache_write_tokens).toBe(300)
        const [exported] = await l.reads.exportPage(run.id, { after: 0, limit: 1 })
        expect([exported!.cache_write_tokens, exported!.batch_write_tokens]).toEqual([300, 0])
        const s = await l.reads.summary(run.id)
        expect([s.inputTokens, s.cachedTokens, s.writeTokens]).toEqual([1206, 700, 325])
        expect(s.batch).toEqual({ inputTokens: 0, outputTokens: 0, cachedTokens: 0, writeTokens: 0 })
        await tallied(l, run.id)
      })

      test("a canary's calls count their cache writes as any other call", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 3)
        await l.canaries.start(run.id, 1)
        const [c] = await l.canaries.step(run.id, "w", [], 5, 60_000, 1)
        await l.canaries.step(run.id, "w", [{ ...ok(c!.id, 1), writeTokens: 300 }], 0, 60_000, 1)
        expect((await l.reads.attempts(c!.id))[0]?.cache_write_tokens).toBe(300)
        expect((await l.reads.summary(run.id)).writeTokens).toBe(300)
        await tallied(l, run.id)
      })

      test("a batch line's cache writes are kept on its attempt and counted at the batch price, once however often it is applied", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 3)
        const ids = (await itemsOf(l, run.id)).map((i) => i.id)
        const b = await intended(l, run.id, ids)
        await l.batches.submitted(b.id, remote("in_progress"))
        const applied = [
          line(ids[0]!, "completed", { cachedTokens: 6, writeTokens: 40 }),
          line(ids[1]!, "failed", { errorClass: "bad_request", error: "no", writeTokens: 60 }),
        ]
        await l.batches.apply(b.id, applied, "me")
        await l.batches.apply(b.id, applied, "me")
        const items = await itemsOf(l, run.id)
        expect(
          items.map((i) => [i.state, i.cache_write_tokens, i.batch_write_tokens, i.batch_cached_tokens]),
        ).toEqual([
          ["completed", 40, 40, 6],
          ["failed", 60, 60, 0],
          ["submitted", 0, 0, 0],
        ])
        expect((await l.reads.attempts(ids[0]!)).map((a) => [a.cache_write_tokens, a.batch_id])).toEqual([
          [40, b.id],
        ])
        expect((await l.reads.attempts(ids[1]!)).map((a) => a.cache_write_tokens)).toEqual([60])
        const s = await l.reads.summary(run.id)
        expect(s.writeTokens).toBe(100)
        expect(s.batch).toEqual({ inputTokens: 20, outputTokens: 8, cachedTokens: 6, writeTokens: 100 })
        await tallied(l, run.id)
        await l.batches.finish(b.id, 2)
        await tallied(l, run.id)
      })

      test("primes: counted, the answered ones' tokens in the run's totals (not at the batch price), the last answered one by prefix", async () => {
        await using p = await place()
        const l = await p.open()
        const { run } = await seed(l, 2)
        const { run: other } = await seed(l, 1, "other")
        const prime = (o: Partial<Prime>): Prime => ({
          prefix: "p1",
          batch: null,
          owner: "w",
          startedAt: 500,
          endedAt: 1_000,
          outcome: "ok",
          inputTokens: 1_000,
          outputTokens: 1,
          cachedTokens: 0,
          writeTokens: 990,
          latencyMs: 40,
          ...o,
        })
        expect(await l.primes.last(run.id, "p1")).toBeNull()
        await l.primes.record(run.id, prime({}))
        await l.primes.record(
          run.id,
          prime({ endedAt: 2_000, inputTokens: 1_100, cachedTokens: 990, writeTokens: 100 }),
        )
        await l.primes.record(
          run.id,
          prime({
            endedAt: 3_000,
            outcome: "failed",
            error: "HTTP 529",
            status: 529,
            inputTokens: 0,
            outputTokens: 0,
            writeTokens: 0,
          }),
        )
        // another run's priming is its own
        await l.primes.record(other.id, prime({ endedAt: 9_000 }))
        // a direct call's tokens beside them
        const [c] = await l.claims.step(run.id, "w", [], 1, 60_000)
        await l.claims.step(run.id, "w", [{ ...ok(c!.id, 1), writeTokens: 7 }], 0, 60_000)
        const s = await l.reads.summary(run.id)
        expect(s.primes).toEqual({
          count: 3,
          failed: 1,
          lastAt: 2_000,
          inputTokens: 2_100,
          outputTokens: 2,
          cachedTokens: 990,
          writeTokens: 1_090,
        })
        expect([s.inputTokens, s.outputTokens, s.cachedTokens, s.writeTokens]).toEqual([2_103, 4, 990, 1_097])
        expect(s.batch).toEqual({ inputTokens: 0, outputTokens: 0, cachedTokens: 0, writeTokens: 0 })
        expect(await l.primes.last(run.id, "p1")).toBe(2_000)
        expect(await l.primes.last(run.id, "p2")).toBeNull()
        expect(await l.primes.last(other.id, "p1")).toBe(9_000)
        const o = await l.reads.summary(other.id)
        expect([o.primes.count, o.primes.lastAt, o.inputTokens]).toEqual([1, 9_000, 1_000])
        const none = (await l.reads.summary((await seed(l, 1, "none")).run.id)).primes
        expect(none).toEqual({
          count: 0,
          failed: 0,
          lastAt: null,
          inputTokens: 0,
          outputTokens: 0,
          cachedTokens: 0,
          writeTokens: 0,
        })
        await tallied(l, run.id)
      })
    })

    testCache(place, tallied)
    testSteps(place, tallied)
  })
}
