/**
 * The pipelines' part of the ledger contract (ledger.ts `Steps`, `Runs.steps`, README "Pipelines"): what the pipeline
 * engine relies on of every driver. `testLedger` runs it, for each driver.
 */
import { describe, expect, test } from "bun:test"
import { TransitionError } from "../../src/core/base/errors.ts"
import type { Ledger, Ready, StepItem } from "../../src/core/ledger/ledger.ts"
import { STATES, type State } from "../../src/core/ledger/states.ts"
import type { Item, Outcome, Run } from "../../src/core/ledger/types.ts"
import { JOB } from "./ledger.ts"
import type { Place } from "./ledger-contract.ts"

const INPUTS = [
  { path: "/a.jsonl", format: "jsonl" },
  { path: "/b.jsonl", format: "jsonl" },
]

/** A row's data as the pipeline run holds it: input `i`'s key `k`. */
const text = (input: number, key: string) => JSON.stringify({ text: `${input}:${key}` })

/**
 * A pipeline run "p" of two inputs: /a.jsonl's rows k1…k`a` (source ids s1…), /b.jsonl's k1…k`b` (no source id);
 * the same keys in both inputs are two rows.
 */
async function pipeline(l: Ledger, a: number, b: number): Promise<Run> {
  const { run } = await l.runs.create({
    name: "p",
    job: { ...JOB, name: "p" },
    fingerprint: "fp",
    resume: "",
    inputs: INPUTS,
  })
  const inputs = await l.runs.inputs(run.id)
  for (const [idx, n] of [a, b].entries()) {
    const rows = Array.from({ length: n }, (_, i) => ({
      key: `k${i + 1}`,
      line: i + 1,
      data: { text: `${idx}:k${i + 1}` },
      ...(idx === 0 ? { id: `s${i + 1}` } : {}),
    }))
    await l.ingest.add(run.id, inputs[idx]!, { rows, problems: [], checkpoint: { offset: n } }, true)
  }
  await l.ingest.done(run.id)
  return run
}

/** The run of the step `name` of the pipeline run `p`, with p's inputs. */
async function stepOf(l: Ledger, p: Run, name: string, seen?: number): Promise<Run> {
  const made = await l.runs.create({
    name: `${p.name}.${name}`,
    job: { ...JOB, name: `${p.name}.${name}` },
    fingerprint: "fp",
    resume: "",
    inputs: INPUTS,
    parent: { run: p.id, step: name },
    ...(seen === undefined ? {} : { seen }),
  })
  expect(made.created).toBe(true)
  return made.run
}

/** The rows of a pipeline run, as `ready` gives them (with no needs read). */
async function rowsOf(l: Ledger, p: Run): Promise<Omit<Ready, "needs">[]> {
  const out: Omit<Ready, "needs">[] = []
  for await (const i of l.reads.items(p.id))
    out.push({ id: i.id, input: i.input, key: i.key, row: i.row, source_id: i.source_id, data: i.data })
  return out
}

/** A step's item for the row `r`, in `state`, with what it holds. */
const made = (
  r: Omit<Ready, "needs">,
  state: StepItem["state"],
  extra: Partial<StepItem> = {},
): StepItem => ({
  input: r.input,
  key: r.key,
  row: r.row,
  source_id: r.source_id,
  data: JSON.stringify({ row: JSON.parse(r.data), step: state }),
  state,
  ...extra,
})

/** The item a step's item is stored as, but for its id. */
const stored = (run: number, x: StepItem): Omit<Item, "id"> => ({
  run_id: run,
  input: x.input,
  key: x.key,
  row: x.row,
  source_id: x.source_id,
  data: x.data,
  state: x.state,
  attempts: 0,
  next_at: null,
  output: x.output ?? null,
  error_class: x.error_class ?? null,
  error: x.error ?? null,
  input_tokens: 0,
  output_tokens: 0,
  cached_input_tokens: 0,
  cache_write_tokens: 0,
  batch_id: null,
  batch_line: null,
  batch_input_tokens: 0,
  batch_output_tokens: 0,
  batch_cached_tokens: 0,
  batch_write_tokens: 0,
  cache_key: null,
  cached_usage: null,
  vector: null,
  path: INPUTS[x.input]!.path,
})

/** The fields of an `Item` but its id: what an item holds (a driver's stream may give more of its row). */
const FIELDS = Object.keys(
  stored(0, { input: 0, key: "", row: 0, source_id: null, data: "", state: "pending" }),
)

/** What an item holds, but for its id (and for any column of its row that is not a field of `Item`). */
const contents = (i: Item): Omit<Item, "id"> =>
  Object.fromEntries(FIELDS.map((k) => [k, i[k as keyof Item]])) as Omit<Item, "id">

/** When an item was stored or last changed. */
const stamp = (i: Item): number => (i as Item & { updated_at: number }).updated_at

async function itemsOf(l: Ledger, run: number): Promise<Item[]> {
  const out: Item[] = []
  for await (const i of l.reads.items(run)) out.push(i)
  return out
}

/** The first attempt of `item` ended: completed with `said` as its output, or failed with it as its error. */
const ended = (item: number, to: "completed" | "failed", said: string): Outcome => ({
  item,
  attempt: 1,
  to,
  label: to === "completed" ? "ok" : "failed",
  ...(to === "completed" ? { output: said } : { error: said }),
  latencyMs: 5,
  endedAt: Date.now(),
})

/** Every state at 0 but those given. */
const counts = (some: Partial<Record<State, number>>) => ({
  ...(Object.fromEntries(STATES.map((s) => [s, 0])) as Record<State, number>),
  ...some,
})

/** The keys `ready` gives, as input:key. */
const keys = (ready: Ready[]) => ready.map((r) => `${r.input}:${r.key}`)

export function testSteps(place: () => Promise<Place>, tallied: (l: Ledger, run: number) => Promise<void>) {
  describe("pipelines", () => {
    test("a step's run names its pipeline run and its step; steps() gives the latest run of each step, in the order they were made", async () => {
      await using p = await place()
      const l = await p.open()
      const run = await pipeline(l, 1, 0)
      expect(run).toMatchObject({ parent: null, step: null })
      const classify = await stepOf(l, run, "classify")
      const summarize = await stepOf(l, run, "summarize")
      expect(classify).toMatchObject({
        name: "p.classify",
        parent: run.id,
        step: "classify",
        state: "running",
      })
      expect(await l.runs.get(summarize.id)).toMatchObject({
        name: "p.summarize",
        parent: run.id,
        step: "summarize",
      })
      expect((await l.runs.list()).map((r) => [r.id, r.parent, r.step])).toEqual([
        [run.id, null, null],
        [classify.id, run.id, "classify"],
        [summarize.id, run.id, "summarize"],
      ])
      expect((await l.runs.inputs(classify.id)).map((i) => [i.idx, i.path, i.format, i.rows])).toEqual([
        [0, "/a.jsonl", "jsonl", 0],
        [1, "/b.jsonl", "jsonl", 0],
      ])
      expect((await l.runs.steps(run.id)).map((r) => r.id)).toEqual([classify.id, summarize.id])
      // the step made again (a new run of it) takes the first one's place, after the other step's
      const again = await stepOf(l, run, "classify", classify.id)
      expect((await l.runs.latest("p.classify"))?.id).toBe(again.id)
      const steps = await l.runs.steps(run.id)
      expect(steps.map((r) => [r.id, r.step])).toEqual([
        [summarize.id, "summarize"],
        [again.id, "classify"],
      ])
      expect(steps[1]!.job).toEqual({ ...JOB, name: "p.classify" })
      // a run that is no pipeline's, a step's run, and a run that does not exist have no steps
      const other = await l.runs.create({ name: "q", job: JOB, fingerprint: "fp", resume: "", inputs: [] })
      expect(await l.runs.steps(other.run.id)).toEqual([])
      expect(await l.runs.steps(classify.id)).toEqual([])
      expect(await l.runs.steps(run.id + 1000)).toEqual([])
    })

    test("with no needs, ready gives every row without an item in the step, in ledger order, a page at a time", async () => {
      await using p = await place()
      const l = await p.open()
      const run = await pipeline(l, 3, 2)
      const s = await stepOf(l, run, "s")
      const rows = await rowsOf(l, run)
      expect(rows.map((r) => [r.input, r.key, r.row, r.source_id, r.data])).toEqual([
        [0, "k1", 1, "s1", text(0, "k1")],
        [0, "k2", 2, "s2", text(0, "k2")],
        [0, "k3", 3, "s3", text(0, "k3")],
        [1, "k1", 1, null, text(1, "k1")],
        [1, "k2", 2, null, text(1, "k2")],
      ])
      const first = await l.steps.ready(run.id, s.id, [], { after: 0, limit: 2 })
      expect(first).toEqual(rows.slice(0, 2).map((r) => ({ ...r, needs: [] })))
      const second = await l.steps.ready(run.id, s.id, [], { after: first[1]!.id, limit: 2 })
      expect(second).toEqual(rows.slice(2, 4).map((r) => ({ ...r, needs: [] })))
      const last = await l.steps.ready(run.id, s.id, [], { after: second[1]!.id, limit: 2 })
      expect(last).toEqual([{ ...rows[4]!, needs: [] }])
      expect(await l.steps.ready(run.id, s.id, [], { after: rows[4]!.id, limit: 2 })).toEqual([])
      expect(await l.steps.ready(run.id, s.id, [], { after: 0, limit: 0 })).toEqual([])
      // rows the step has are not given again; the others still are, from any cursor
      expect(await l.steps.add(s.id, [made(rows[0]!, "pending"), made(rows[3]!, "skipped")])).toBe(2)
      expect(keys(await l.steps.ready(run.id, s.id, [], { after: 0, limit: 10 }))).toEqual([
        "0:k2",
        "0:k3",
        "1:k2",
      ])
      expect(keys(await l.steps.ready(run.id, s.id, [], { after: rows[1]!.id, limit: 1 }))).toEqual(["0:k3"])
      // another step's items are its own
      const t = await stepOf(l, run, "t")
      expect(keys(await l.steps.ready(run.id, t.id, [], { after: 0, limit: 10 }))).toHaveLength(5)
      // rows the pipeline run reads later, after the step's items, come after them in its ledger order
      const inputs = await l.runs.inputs(run.id)
      await l.ingest.add(
        run.id,
        inputs[1]!,
        { rows: [{ key: "k3", line: 3, data: { text: "1:k3" } }], problems: [], checkpoint: { offset: 3 } },
        true,
      )
      expect(keys(await l.steps.ready(run.id, s.id, [], { after: rows[4]!.id, limit: 10 }))).toEqual(["1:k3"])
      expect(keys(await l.steps.ready(run.id, s.id, [], { after: 0, limit: 10 }))).toEqual([
        "0:k2",
        "0:k3",
        "1:k2",
        "1:k3",
      ])
    })

    test("a row is ready once each step it needs has an item that ended: completed, failed, skipped or rejected", async () => {
      await using p = await place()
      const l = await p.open()
      const run = await pipeline(l, 8, 0)
      const rows = await rowsOf(l, run)
      const r = (n: number) => rows[n - 1]!
      const a = await stepOf(l, run, "a")
      const b = await stepOf(l, run, "b")
      const s = await stepOf(l, run, "s")
      // a: k5 and k6 claimed (k6 then failed), k1 completed, k2 skipped, k3 left for review, k4 pending, k7 left for
      // review then rejected by a person; k8 has no item yet
      await l.steps.add(a.id, [made(r(5), "pending"), made(r(6), "pending")])
      const claimed = await l.claims.step(a.id, "w", [], 2, 60_000)
      expect(claimed.map((c) => c.key)).toEqual(["k5", "k6"])
      await l.claims.step(a.id, "w", [ended(claimed[1]!.id, "failed", "boom")], 0, 60_000)
      expect(
        await l.steps.add(a.id, [
          made(r(1), "completed", { output: "yes" }),
          made(r(2), "skipped", { error: "when was false" }),
          made(r(3), "needs_review", { output: "maybe", error: "looks odd", error_class: "invalid_output" }),
          made(r(4), "pending"),
          made(r(7), "needs_review", { output: "no" }),
        ]),
      ).toBe(5)
      const review = (await itemsOf(l, a.id)).find((i) => i.key === "k7")!
      await l.reviews.decide(a.id, [{ item: review.id, decision: "reject", reason: "wrong", by: "cli" }])
      expect((await itemsOf(l, a.id)).map((i) => [i.key, i.state])).toEqual([
        ["k5", "running"],
        ["k6", "failed"],
        ["k1", "completed"],
        ["k2", "skipped"],
        ["k3", "needs_review"],
        ["k4", "pending"],
        ["k7", "rejected"],
      ])
      await tallied(l, a.id)
      const data = (n: number, state: State) => JSON.stringify({ row: JSON.parse(r(n).data), step: state })
      const one = await l.steps.ready(run.id, s.id, [a.id], { after: 0, limit: 10 })
      expect(one).toEqual([
        { ...r(1), needs: [{ state: "completed", data: data(1, "completed"), output: "yes", error: null }] },
        {
          ...r(2),
          needs: [{ state: "skipped", data: data(2, "skipped"), output: null, error: "when was false" }],
        },
        { ...r(6), needs: [{ state: "failed", data: data(6, "pending"), output: null, error: "boom" }] },
        {
          ...r(7),
          needs: [
            {
              state: "rejected",
              data: data(7, "needs_review"),
              output: "no",
              error: "rejected by a reviewer: wrong",
            },
          ],
        },
      ])
      // b: k1 and k6 made completed; k2 and k7 made pending, then called: k2 completed, k7 failed
      expect(
        await l.steps.add(b.id, [
          made(r(1), "completed", { output: "b1" }),
          made(r(2), "pending"),
          made(r(6), "completed", { output: "b6" }),
        ]),
      ).toBe(3)
      await l.steps.add(b.id, [made(r(7), "pending")])
      const both = await l.claims.step(b.id, "w", [], 2, 60_000)
      expect(both.map((c) => c.key)).toEqual(["k2", "k7"])
      await l.claims.step(
        b.id,
        "w",
        [ended(both[0]!.id, "completed", "b2"), ended(both[1]!.id, "failed", "b7")],
        0,
        60_000,
      )
      const two = await l.steps.ready(run.id, s.id, [b.id, a.id], { after: 0, limit: 10 })
      expect(keys(two)).toEqual(["0:k1", "0:k2", "0:k6", "0:k7"])
      expect(two.map((x) => x.needs.map((n) => [n.state, n.output, n.error]))).toEqual([
        [
          ["completed", "b1", null],
          ["completed", "yes", null],
        ],
        [
          ["completed", "b2", null],
          ["skipped", null, "when was false"],
        ],
        [
          ["completed", "b6", null],
          ["failed", null, "boom"],
        ],
        [
          ["failed", null, "b7"],
          ["rejected", "no", "rejected by a reviewer: wrong"],
        ],
      ])
      // paged, and the rows the step has left out
      expect(keys(await l.steps.ready(run.id, s.id, [a.id, b.id], { after: r(1).id, limit: 2 }))).toEqual([
        "0:k2",
        "0:k6",
      ])
      await l.steps.add(s.id, [made(r(2), "pending"), made(r(7), "skipped")])
      expect(keys(await l.steps.ready(run.id, s.id, [a.id, b.id], { after: 0, limit: 10 }))).toEqual([
        "0:k1",
        "0:k6",
      ])
      // the running item ends, the one left for review is approved: their rows go on
      await l.claims.step(a.id, "w", [ended(claimed[0]!.id, "completed", "a5")], 0, 60_000)
      const k3 = (await itemsOf(l, a.id)).find((i) => i.key === "k3")!
      await l.reviews.decide(a.id, [{ item: k3.id, decision: "approve", by: "cli" }])
      expect(keys(await l.steps.ready(run.id, s.id, [a.id], { after: 0, limit: 10 }))).toEqual([
        "0:k1",
        "0:k3",
        "0:k5",
        "0:k6",
      ])
      await tallied(l, a.id)
      await tallied(l, b.id)
    })

    test("add stores each item in its state with what it holds, keeps an item the step has as it was, and counts them exactly", async () => {
      await using p = await place()
      const l = await p.open()
      const run = await pipeline(l, 3, 2)
      const rows = await rowsOf(l, run)
      const s = await stepOf(l, run, "s")
      const at = Date.now()
      const items = [
        made(rows[0]!, "pending"),
        made(rows[1]!, "skipped", { error: "a needed step failed", error_class: "skipped" }),
        made(rows[3]!, "needs_review", { output: '{"label":"?"}', error: "to review" }),
        made(rows[4]!, "completed", { output: '{"label":"ok"}' }),
      ]
      expect(await l.steps.add(s.id, items)).toBe(4)
      const got = await itemsOf(l, s.id)
      expect(got.map(contents)).toEqual(items.map((x) => stored(s.id, x)))
      for (const i of got) expect(stamp(i)).toBeWithin(at, Date.now() + 1)
      expect(got.map((i) => i.id)).toEqual([...got.map((i) => i.id)].sort((x, y) => x - y))
      expect(await l.reads.counts(s.id)).toEqual(
        counts({ pending: 1, skipped: 1, needs_review: 1, completed: 1 }),
      )
      await tallied(l, s.id)
      expect((await l.runs.inputs(s.id)).map((i) => [i.idx, i.rows, i.problems, i.duplicates])).toEqual([
        [0, 2, 0, 0],
        [1, 2, 0, 0],
      ])
      // the completed item counts in the completions chart as completed, the one left for review as failed (as a
      // call that ends so); the skipped one is not counted: nothing was done for it
      const chart = await l.reads.progress(s.id, 0, 10_000_000_000_000)
      expect(chart.map((c) => [c.completed, c.failed])).toEqual([[1, 1]])
      const first = await l.reads.firstProgress(s.id)
      expect(first).toBeGreaterThanOrEqual(Math.floor(at / 10_000) * 10_000)
      expect(first).toBeLessThanOrEqual(Date.now())
      const summary = await l.reads.summary(s.id)
      expect([summary.total, summary.attempts, summary.cache]).toEqual([
        4,
        0,
        { hits: 0, misses: 0, savedUsd: 0 },
      ])
      // the pending item is the cache's to ask for; the others are not pending
      expect(
        (await l.cache.pending(s.id, { after: 0, limit: 10 })).map((x) => [x.id, x.data, x.key]),
      ).toEqual([[got[0]!.id, items[0]!.data, null]])
      expect(await l.reads.hasOpen(s.id)).toBe(true)
      // an item the step has (same input and key) is kept as it was; the others are stored
      const again = [
        made(rows[0]!, "completed", { output: "other" }),
        made(rows[3]!, "skipped", { data: "{}" }),
        made(rows[2]!, "skipped"),
      ]
      expect(await l.steps.add(s.id, again)).toBe(1)
      expect(await l.steps.add(s.id, again.slice(0, 2))).toBe(0)
      expect(await l.steps.add(s.id, [])).toBe(0)
      const after = await itemsOf(l, s.id)
      expect(after.slice(0, 4)).toEqual(got)
      expect(after.map(contents)).toEqual([...items, again[2]!].map((x) => stored(s.id, x)))
      expect(await l.reads.counts(s.id)).toEqual(
        counts({ pending: 1, skipped: 2, needs_review: 1, completed: 1 }),
      )
      await tallied(l, s.id)
      expect((await l.runs.inputs(s.id)).map((i) => [i.idx, i.rows])).toEqual([
        [0, 3],
        [1, 2],
      ])
      // the pending item is called as any other: claimed, completed, counted
      const [c] = await l.claims.step(s.id, "w", [], 5, 60_000)
      expect([c?.id, c?.data, c?.attempt]).toEqual([got[0]!.id, items[0]!.data, 1])
      await l.claims.step(
        s.id,
        "w",
        [{ ...ended(c!.id, "completed", "done"), inputTokens: 4, outputTokens: 2 }],
        0,
        60_000,
      )
      expect(await l.reads.counts(s.id)).toEqual(counts({ skipped: 2, needs_review: 1, completed: 2 }))
      await tallied(l, s.id)
      // skipped, left for review and completed are all finished: nothing is open
      expect(await l.reads.hasOpen(s.id)).toBe(false)
      // a decision on the item left for review moves it as any other's
      await l.reviews.decide(s.id, [{ item: got[2]!.id, decision: "approve", by: "cli" }])
      expect(await l.reads.counts(s.id)).toEqual(counts({ skipped: 2, completed: 3 }))
      await tallied(l, s.id)
      // the pipeline run's own items and counts are untouched
      expect(await l.reads.counts(run.id)).toEqual(counts({ pending: 5 }))
      await tallied(l, run.id)
    })

    test("add refuses an item in a state a step's item is not made in, and stores none of the batch", async () => {
      await using p = await place()
      const l = await p.open()
      const run = await pipeline(l, 2, 0)
      const rows = await rowsOf(l, run)
      const s = await stepOf(l, run, "s")
      const bad = { ...made(rows[1]!, "pending"), state: "running" } as unknown as StepItem
      const err = await l.steps.add(s.id, [made(rows[0]!, "pending"), bad]).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(TransitionError)
      expect(await itemsOf(l, s.id)).toEqual([])
      expect(await l.reads.counts(s.id)).toEqual(counts({}))
    })

    test("two workers adding the same rows at once store each once, and together count them once", async () => {
      await using p = await place()
      const [x, y] = [await p.open(), await p.open()]
      const run = await pipeline(x, 40, 20)
      const rows = await rowsOf(x, run)
      const s = await stepOf(x, run, "s")
      const items = rows.map((r, i) => made(r, i % 3 === 0 ? "skipped" : "pending"))
      const [one, two] = await Promise.all([
        x.steps.add(s.id, items),
        y.steps.add(s.id, [...items].reverse().slice(0, 30).reverse()),
      ])
      expect(one + two).toBe(60)
      expect((await itemsOf(y, s.id)).map((i) => `${i.input}:${i.key}`).sort()).toEqual(
        rows.map((r) => `${r.input}:${r.key}`).sort(),
      )
      expect(await y.reads.counts(s.id)).toEqual(counts({ skipped: 20, pending: 40 }))
      await tallied(y, s.id)
      expect((await y.runs.inputs(s.id)).map((i) => i.rows)).toEqual([40, 20])
      expect(await y.steps.ready(run.id, s.id, [], { after: 0, limit: 100 })).toEqual([])
    })
  })
}
