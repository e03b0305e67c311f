/**
 * The status page's API for pipelines (docs/PIPELINES.md), in process through `app.request()`: a pipeline run's
 * detail with its steps' counts, a step run's place in its pipeline, a row's items at every step side by side (found
 * by input and key, so the same key in two inputs is two rows), the runs list with each step under its pipeline, and
 * a review decision on a step's row through the same engine code as `spool review`.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test"
import type { Ledger } from "../../src/core/ledger/ledger.ts"
import { open } from "../../src/core/ledger/open.ts"
import type { Run } from "../../src/core/ledger/types.ts"
import { ownerId } from "../../src/core/engine/owner.ts"
import { createApp } from "../../src/serve.ts"
import { JOB } from "../lib/ledger.ts"
import { tmpdir, type Tmp } from "../lib/tmp.ts"
import { end } from "./fixture.ts"

const INPUTS = [
  { path: "/a.jsonl", format: "jsonl" },
  { path: "/b.jsonl", format: "jsonl" },
]
const SCHEMA = {
  type: "object",
  properties: { label: { type: "string" }, confidence: { type: "number" } },
  required: ["label", "confidence"],
  additionalProperties: false,
}
const PIPELINE = [
  { name: "classify", kind: "model" as const, needs: [] },
  { name: "check", kind: "review" as const, needs: ["classify"], when: "classify.confidence < 0.5" },
]

let tmp: Tmp
let writer: Ledger
let reader: Ledger
let p: Run
let classify: Run
let check: Run
/** Ledger ids: the pipeline run's rows, and each step's items, by `input:key` (a:k1, b:k1, …). */
const rows: Record<string, number> = {}
const classified: Record<string, number> = {}
const checked: Record<string, number> = {}

/**
 * A pipeline run "p" of four rows: /a.jsonl's k1, k2, k3 and /b.jsonl's k1 (the same key in another input). Its step
 * classify answered a:k1 {bug, 0.2} and a:k2 {billing, 0.9}, failed b:k1 (auth) and is still calling a:k3. Its review
 * step check holds a:k1 for review (confidence < 0.5), let a:k2 through, and skipped b:k1 (classify failed); a:k3
 * has not reached it.
 */
beforeEach(async () => {
  tmp = await tmpdir()
  writer = await open(tmp.path)
  const made = await writer.runs.create({
    name: "p",
    job: { ...JOB, name: "p", pipeline: PIPELINE },
    fingerprint: "fp",
    resume: "spool run job.toml",
    inputs: INPUTS,
  })
  p = made.run
  const inputs = await writer.runs.inputs(p.id)
  const keys = [["k1", "k2", "k3"], ["k1"]]
  for (const [i, list] of keys.entries()) {
    const read = list.map((key, n) => ({ key, line: n + 1, data: { text: `${"ab"[i]}:${key}` } }))
    await writer.ingest.add(p.id, inputs[i]!, { rows: read, problems: [], checkpoint: {} }, true)
  }
  await writer.ingest.done(p.id)
  const step = async (name: string) =>
    (
      await writer.runs.create({
        name: `p.${name}`,
        job: { ...JOB, name: `p.${name}`, output: { name: "label", schema: SCHEMA } },
        fingerprint: "fp",
        resume: "spool run job.toml",
        inputs: INPUTS,
        parent: { run: p.id, step: name },
      })
    ).run
  classify = await step("classify")
  check = await step("check")
  const all: { id: number; input: number; key: string; row: number; data: string }[] = []
  for await (const i of writer.reads.items(p.id)) all.push(i)
  for (const r of all) rows[`${"ab"[r.input]}:${r.key}`] = r.id
  const base = (name: string) => {
    const r = all.find((x) => `${"ab"[x.input]}:${x.key}` === name)!
    return { input: r.input, key: r.key, row: r.row, source_id: null, data: r.data }
  }
  await writer.steps.add(
    classify.id,
    ["a:k1", "a:k2", "a:k3", "b:k1"].map((n) => ({ ...base(n), state: "pending" as const })),
  )
  await writer.workers.beat(classify.id, ownerId())
  const claimed = await writer.claims.step(classify.id, "w", [], 4, 60_000)
  const [k1, k2, , b1] = claimed.map((c) => c.id) as [number, number, number, number]
  await writer.claims.step(
    classify.id,
    "w",
    [
      end(k1, "completed", { output: '{"label":"bug","confidence":0.2}' }),
      end(k2, "completed", { output: '{"label":"billing","confidence":0.9}' }),
      end(b1, "failed", { errorClass: "auth", error: "invalid api key", status: 401 }),
    ],
    0,
    60_000,
  )
  await writer.steps.add(check.id, [
    {
      ...base("a:k1"),
      state: "needs_review",
      output: '{"label":"bug","confidence":0.2}',
      error_class: "review",
      error: "step check: classify.confidence < 0.5",
    },
    { ...base("a:k2"), state: "completed", output: '{"label":"billing","confidence":0.9}' },
    { ...base("b:k1"), state: "skipped", error_class: "blocked", error: "classify failed" },
  ])
  for (const [run, into] of [
    [classify, classified],
    [check, checked],
  ] as const)
    for await (const i of writer.reads.items(run.id)) into[`${"ab"[i.input]}:${i.key}`] = i.id
  reader = await open(tmp.path)
})

afterEach(async () => {
  await reader.close()
  await writer.close()
  await tmp[Symbol.asyncDispose]()
})

const app = () => createApp({ ledger: reader, home: tmp.path, version: "test" })
const get = async (path: string): Promise<any> => {
  const res = await app().request(path)
  expect([path, res.status]).toEqual([path, 200])
  return res.json()
}
/** Times and the attempts' own fields vary from run to run: a history is compared by what each attempt was. */
const plain = (x: any): any =>
  JSON.parse(JSON.stringify(x), (k, v) =>
    k === "started_at" || k === "ended_at" ? (v === null ? null : "T") : v,
  )

const zero = { input_tokens: 0, output_tokens: 0, cached_input_tokens: 0, cache_write_tokens: 0 }
const counts = (o: Record<string, number>) => ({
  pending: 0,
  running: 0,
  retry_wait: 0,
  queued: 0,
  submitted: 0,
  completed: 0,
  failed: 0,
  needs_review: 0,
  rejected: 0,
  skipped: 0,
  ...o,
})

describe("a pipeline run's rows at every step", () => {
  test("GET /api/runs/:id/items/:item/steps gives a row's item at each step, found by its input and key", async () => {
    const attempt = (o: Record<string, unknown>) => ({
      n: 1,
      started_at: "T",
      ended_at: "T",
      error_class: null,
      error: null,
      http_status: null,
      input_tokens: null,
      output_tokens: null,
      cached_input_tokens: null,
      cache_write_tokens: null,
      latency_ms: 5,
      batch_id: null,
      note: null,
      ...o,
    })
    const line = (file: string, o: Record<string, unknown>) => ({
      error: null,
      attempts: 0,
      usage: zero,
      cost_usd: 0,
      prompt_cache_saved_usd: 0,
      cached: false,
      source: { file, row: 1, id: null },
      history: [],
      ...o,
    })
    const a1 = plain(await get(`/api/runs/p/items/${rows["a:k1"]}/steps`))
    expect(a1).toEqual({
      row: {
        id: "a.jsonl:k1",
        item_id: rows["a:k1"],
        source: { file: "/a.jsonl", row: 1, id: null },
        input: { text: "a:k1" },
      },
      steps: [
        {
          ...PIPELINE[0],
          run: classify.id,
          run_name: "p.classify",
          item: line("/a.jsonl", {
            id: "a.jsonl:k1",
            item_id: classified["a:k1"],
            state: "completed",
            output: { label: "bug", confidence: 0.2 },
            attempts: 1,
            usage: { input_tokens: 10, output_tokens: 4, cached_input_tokens: 0, cache_write_tokens: 0 },
            cost_usd: 0.0000039,
            history: [attempt({ outcome: "ok", input_tokens: 10, output_tokens: 4 })],
          }),
        },
        {
          ...PIPELINE[1],
          run: check.id,
          run_name: "p.check",
          item: line("/a.jsonl", {
            id: "a.jsonl:k1",
            item_id: checked["a:k1"],
            state: "needs_review",
            output: '{"label":"bug","confidence":0.2}',
            error: { class: "review", message: "step check: classify.confidence < 0.5" },
          }),
        },
      ],
    })
    // the same key in the other input is another row, with items of its own
    const b1 = plain(await get(`/api/runs/${p.id}/items/${rows["b:k1"]}/steps`))
    expect(b1.row).toEqual({
      id: "b.jsonl:k1",
      item_id: rows["b:k1"],
      source: { file: "/b.jsonl", row: 1, id: null },
      input: { text: "b:k1" },
    })
    expect(b1.steps.map((s: any) => [s.name, s.item.id, s.item.item_id, s.item.state, s.item.error])).toEqual(
      [
        [
          "classify",
          "b.jsonl:k1",
          classified["b:k1"],
          "failed",
          { class: "auth", message: "invalid api key" },
        ],
        ["check", "b.jsonl:k1", checked["b:k1"], "skipped", { class: "blocked", message: "classify failed" }],
      ],
    )
    expect(b1.steps[0].item.history).toEqual([
      attempt({ outcome: "failed", error_class: "auth", error: "invalid api key", http_status: 401 }),
    ])
    // a row still being called at classify has not reached check
    const a3 = plain(await get(`/api/runs/p/items/${rows["a:k3"]}/steps`))
    expect(a3.steps.map((s: any) => [s.name, s.item?.state ?? null, s.item?.history.length ?? null])).toEqual(
      [
        ["classify", "running", 1],
        ["check", null, null],
      ],
    )
  })

  test("the route answers 404 for a run that is not a pipeline or an unknown row, and 400 for a bad id", async () => {
    const ask = async (path: string) => {
      const res = await app().request(path)
      return [res.status, ((await res.json()) as { error: string }).error]
    }
    expect(await ask(`/api/runs/p.check/items/${checked["a:k1"]}/steps`)).toEqual([
      404,
      `run "p.check" is not a pipeline: its items have no steps (GET /api/runs/${check.id}/items/${checked["a:k1"]} shows one)`,
    ])
    expect(await ask(`/api/runs/p/items/999999/steps`)).toEqual([404, 'run "p" has no item 999999'])
    expect(await ask(`/api/runs/p/items/x/steps`)).toEqual([400, "item: must be an item id (a whole number)"])
  })

  test("a page of the pipeline run's items has each row's cells at every step; a search's finds too", async () => {
    const cells = (body: any) =>
      body.items.map((i: any) => [
        i.id,
        i.steps.map((c: any) => [c.step, c.item_id, c.state, c.output, c.error]),
      ])
    const page = await get(`/api/runs/p/items?limit=10`)
    expect(cells(page)).toEqual([
      [
        "a.jsonl:k1",
        [
          ["classify", classified["a:k1"], "completed", { label: "bug", confidence: 0.2 }, null],
          [
            "check",
            checked["a:k1"],
            "needs_review",
            '{"label":"bug","confidence":0.2}',
            { class: "review", message: "step check: classify.confidence < 0.5" },
          ],
        ],
      ],
      [
        "a.jsonl:k2",
        [
          ["classify", classified["a:k2"], "completed", { label: "billing", confidence: 0.9 }, null],
          ["check", checked["a:k2"], "completed", { label: "billing", confidence: 0.9 }, null],
        ],
      ],
      [
        "a.jsonl:k3",
        [
          ["classify", classified["a:k3"], "running", null, null],
          ["check", null, null, null, null],
        ],
      ],
      [
        "b.jsonl:k1",
        [
          ["classify", classified["b:k1"], "failed", null, { class: "auth", message: "invalid api key" }],
          ["check", checked["b:k1"], "skipped", null, { class: "blocked", message: "classify failed" }],
        ],
      ],
    ])
    expect(page.items[0].steps[0]).toEqual({
      step: "classify",
      run: classify.id,
      item_id: classified["a:k1"],
      state: "completed",
      output: { label: "bug", confidence: 0.2 },
      error: null,
    })
    // found by id: both inputs' k1, each with its own cells
    const found = await get(`/api/runs/p/items?q=k1`)
    expect(found.items.map((i: any) => [i.id, i.match, i.steps[0].state])).toEqual([
      ["a.jsonl:k1", "id", "completed"],
      ["b.jsonl:k1", "id", "failed"],
    ])
    // another run's items have none
    expect((await get(`/api/runs/p.check/items?limit=1`)).items[0].steps).toBeUndefined()
  })

  test("an item opened: a pipeline's row with its steps; a step's item with its step and its row's id", async () => {
    const row = await get(`/api/runs/p/items/${rows["a:k2"]}`)
    expect(row.steps.map((s: any) => [s.name, s.item.state])).toEqual([
      ["classify", "completed"],
      ["check", "completed"],
    ])
    expect(row.step).toBeUndefined()
    const item = await get(`/api/runs/p.check/items/${checked["b:k1"]}`)
    expect([item.id, item.state, item.steps]).toEqual(["b.jsonl:k1", "skipped", undefined])
    expect(item.step).toEqual({ ...PIPELINE[1], parent: p.id, parent_name: "p", row_item: rows["b:k1"] })
    const plainRun = await get(`/api/runs/p.classify/items/${classified["a:k1"]}`)
    expect(plainRun.step).toEqual({ ...PIPELINE[0], parent: p.id, parent_name: "p", row_item: rows["a:k1"] })
  })
})

describe("a pipeline run's results from the page", () => {
  test("GET /api/runs/:id/results of a pipeline run gives its rows, each with every step's state and answer; ?state is refused", async () => {
    const res = await app().request(`/api/runs/${p.id}/results`)
    expect(res.status).toBe(200)
    const lines = (await res.text())
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, { state: string } | null | string>)
    expect(
      lines.map((l) => [
        l.id,
        (l.classify as { state: string } | null)?.state ?? null,
        (l.check as { state: string } | null)?.state ?? null,
      ]),
    ).toEqual([
      ["a.jsonl:k1", "completed", "needs_review"],
      ["a.jsonl:k2", "completed", "completed"],
      ["a.jsonl:k3", "running", null],
      ["b.jsonl:k1", "failed", "skipped"],
    ])
    const refused = await app().request(`/api/runs/${p.id}/results?state=completed`)
    expect(refused.status).toBe(400)
  })
})

describe("a pipeline on the page", () => {
  test("GET /api/runs/:id of a pipeline run has its steps with their counts; a step's run names its pipeline", async () => {
    const v = await get(`/api/runs/p`)
    expect(v.step).toBeNull()
    expect(v.pipeline.rows).toBe(4)
    expect(
      v.pipeline.steps.map((s: any) => ({
        name: s.name,
        kind: s.kind,
        needs: s.needs,
        when: s.when,
        run: s.run,
        run_name: s.run_name,
        counts: s.counts,
        total: s.total,
        not_reached: s.not_reached,
      })),
    ).toEqual([
      {
        ...PIPELINE[0],
        when: undefined,
        run: classify.id,
        run_name: "p.classify",
        counts: counts({ completed: 2, failed: 1, running: 1 }),
        total: 4,
        not_reached: 0,
      },
      {
        ...PIPELINE[1],
        run: check.id,
        run_name: "p.check",
        counts: counts({ completed: 1, needs_review: 1, skipped: 1 }),
        total: 3,
        not_reached: 1,
      },
    ])
    // classify's two answers (10 in, 4 out each, at gpt-4o-mini's price); a review step calls no model
    expect(v.pipeline.spend_usd).toBeCloseTo(2 * 0.0000039, 12)
    expect(v.pipeline.steps.map((s: any) => s.spend_usd)).toEqual([v.pipeline.spend_usd, 0])
    // the chart counts the steps' calls: 3 ended at classify, 2 answered and 1 failed
    const sum = (k: string) => v.chart.points.reduce((a: number, x: Record<string, number>) => a + x[k]!, 0)
    expect([sum("completed"), sum("failed")]).toEqual([2, 1])
    const s = await get(`/api/runs/p.check`)
    expect([s.pipeline, s.step]).toEqual([null, { ...PIPELINE[1], parent: p.id, parent_name: "p" }])
    const job = await get(`/api/runs/p.check/job`)
    expect([job.reviews, (await get(`/api/runs/p.classify/job`)).reviews]).toEqual(["classify", undefined])
  })

  test("the runs list marks each step with its pipeline, and a pipeline run with its steps and rows waiting for review", async () => {
    const { runs } = await get(`/api/runs`)
    expect(runs.map((r: any) => [r.id, r.name, r.parent, r.step, r.pipeline, r.skipped])).toEqual([
      [p.id, "p", null, null, { steps: ["classify", "check"], review: 1 }, 0],
      [classify.id, "p.classify", p.id, "classify", null, 0],
      [check.id, "p.check", p.id, "check", null, 1],
    ])
    // a pipeline's spend is its steps'
    expect(runs[0].spend_usd).toBe(runs[1].spend_usd + runs[2].spend_usd)
  })

  test("GET / selects the pipeline run, not its last step, and draws its graph with every node's counts", async () => {
    const html = await (await app().request("/")).text()
    expect(html).toContain(`data-run="${p.id}"`)
    expect(html).toContain(`<title>p · spool</title>`)
    // each step's row right under its pipeline's, marked a step
    const order = [...html.matchAll(/<tr class="[^"]*" data-run="(\d+)"(?: data-parent="(\d+)")?/g)].map(
      (m) => [Number(m[1]), m[2] === undefined ? null : Number(m[2])],
    )
    expect(order).toEqual([
      [p.id, null],
      [classify.id, p.id],
      [check.id, p.id],
    ])
    const node = (step: string) => {
      const at = html.indexOf(`<a class="node" href="?run=`)
      const from = html.indexOf(`data-step="${step}"`, at)
      const text = html.slice(from, html.indexOf("</a>", from))
      return Object.fromEntries(
        [...text.matchAll(/data-k="(\w+)"[^>]*>([\d,]+)</g)].map((m) => [m[1], Number(m[2])]),
      )
    }
    expect(node("classify")).toEqual({
      completed: 2,
      skipped: 0,
      failed: 1,
      needs_review: 0,
      rejected: 0,
      in_flight: 1,
      not_reached: 0,
    })
    expect(node("check")).toEqual({
      completed: 1,
      skipped: 1,
      failed: 0,
      needs_review: 1,
      rejected: 0,
      in_flight: 0,
      not_reached: 1,
    })
    expect(html).toContain(`data-from="classify" data-to="check"`)
    expect(html).toContain(
      `<b>Waiting for review:</b> <a href="?run=${check.id}" data-step="check">1 row(s) at check</a>`,
    )
    // the rows side by side under a header of the steps
    expect(html).toContain(`<tr class="steps-head"><th>row</th><th>classify</th><th>check</th></tr>`)
  })

  test("a review decision on a step's row from the page goes through the engine's review, and says how the row goes on", async () => {
    const res = await app().request(`/api/runs/p.check/review`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        id: "a.jsonl:k1",
        decision: "edit",
        output: '{"label":"bug","confidence":0.95}',
      }),
    })
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({
      ok: true,
      message:
        'run "p.check": 1 edited\nno item waits for review\nthe rows let through go on to the next steps with: spool run job.toml',
      state: "running",
    })
    const item = (await writer.reads.keyed(check.id, "k1")).find((i) => i.input === 0)!
    expect([item.state, item.output]).toEqual(["completed", '{"label":"bug","confidence":0.95}'])
    expect((await writer.reviews.history(item.id)).map((h) => [h.decision, h.by])).toEqual([["edit", "page"]])
    // a decision on a row that does not wait for review is refused, naming why, and so is an edit that the reviewed
    // step's schema refuses: the page is told as `spool review` would be
    const refused = async (id: string, body: Record<string, string>) => {
      const res = await app().request(`/api/runs/${check.id}/review`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ id, ...body }),
      })
      return [res.status, ((await res.json()) as { error: string }).error]
    }
    expect(await refused("a.jsonl:k2", { decision: "reject" })).toEqual([
      409,
      'nothing was decided: item "a.jsonl:k2" is completed, not waiting for review (`spool review` lists those that are)',
    ])
    await writer.steps.add(check.id, [
      { input: 0, key: "k3", row: 3, source_id: null, data: "{}", state: "needs_review", output: "{}" },
    ])
    expect(await refused("a.jsonl:k3", { decision: "edit", output: '{"label":3}' })).toEqual([
      409,
      expect.stringContaining(
        `item "a.jsonl:k3": the edited answer fails the job's output schema (schema violation`,
      ),
    ])
    expect((await writer.reads.keyed(check.id, "k3"))[0]!.state).toBe("needs_review")
  })
})
