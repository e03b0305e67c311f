/**
 * Pipelines in the stores, beyond the contract (test/lib/steps-contract.ts): a SQLite store of the schema before them
 * (11) migrated on open, and `spool migrate` carrying a pipeline run, its steps' runs and their items to PostgreSQL.
 */
import { describe, expect, test } from "bun:test"
import { Database } from "bun:sqlite"
import type { Ledger, StepItem } from "../../../src/core/ledger/ledger.ts"
import { copy } from "../../../src/core/ledger/postgres/copy.ts"
import * as postgres from "../../../src/core/ledger/postgres/postgres.ts"
import { DB_FILE } from "../../../src/core/ledger/sqlite/faults.ts"
import { MIGRATIONS } from "../../../src/core/ledger/sqlite/schema.ts"
import * as sqlite from "../../../src/core/ledger/sqlite/sqlite.ts"
import { STATES, type State } from "../../../src/core/ledger/states.ts"
import type { Item } from "../../../src/core/ledger/types.ts"
import { tallied } from "../../lib/ledger-contract.ts"
import { JOB } from "../../lib/ledger.ts"
import { pgSchema, SKIP_PG } from "../../lib/pg.ts"
import { tmpdir } from "../../lib/tmp.ts"

/** Every state at 0 but those given. */
const counts = (some: Partial<Record<State, number>>) => ({
  ...(Object.fromEntries(STATES.map((s) => [s, 0])) as Record<State, number>),
  ...some,
})

async function itemsOf(l: Ledger, run: number): Promise<Item[]> {
  const out: Item[] = []
  for await (const i of l.reads.items(run)) out.push(i)
  return out
}

/** A step's item of a pipeline run's item, in `state`. */
const made = (i: Item, state: StepItem["state"], extra: Partial<StepItem> = {}): StepItem => ({
  input: i.input,
  key: i.key,
  row: i.row,
  source_id: i.source_id,
  data: i.data,
  state,
  ...extra,
})

/** The step `step` of the pipeline run `parent` (named `name`), with its one input. */
const stepOf = (l: Ledger, parent: { id: number; name: string }, step: string) =>
  l.runs.create({
    name: `${parent.name}.${step}`,
    job: { ...JOB, name: `${parent.name}.${step}` },
    fingerprint: "fp",
    resume: "",
    inputs: [{ path: "/in.jsonl", format: "jsonl" }],
    parent: { run: parent.id, step },
  })

describe("pipelines in the SQLite store", () => {
  test("a store of schema 11 is migrated on open: its runs are no pipeline's steps, and its runs' rows can be a pipeline's", async () => {
    await using tmp = await tmpdir()
    const raw = new Database(tmp.join(DB_FILE), { create: true })
    for (const m of MIGRATIONS.slice(0, 11)) raw.run(m)
    raw.run("PRAGMA user_version = 11")
    // a run of three rows as that spool left it: one completed, two pending, and their tallies
    raw.run(
      `INSERT INTO runs (name, state, job, fingerprint, resume, created_at, updated_at)
       VALUES ('old', 'running', ?, 'fp', 'spool run old.toml', 1, 1)`,
      [JSON.stringify({ ...JOB, name: "old" })],
    )
    raw.run(
      "INSERT INTO inputs (run_id, idx, path, format, rows, done) VALUES (1, 0, '/in.jsonl', 'jsonl', 3, 1)",
    )
    for (const k of [1, 2, 3])
      raw.run(
        `INSERT INTO items (run_id, input, key, row, data, state, attempts, output, input_tokens, output_tokens,
         updated_at) VALUES (1, 0, 'k${k}', ${k}, '{"text":"t${k}"}', ?, ?, ?, ?, ?, 1)`,
        k === 1 ? ["completed", 1, "done", 5, 2] : ["pending", 0, null, 0, 0],
      )
    raw.run(
      "INSERT INTO tallies (run_id, state, n, attempts, input_tokens, output_tokens) VALUES (1, 'completed', 1, 1, 5, 2)",
    )
    raw.run("INSERT INTO tallies (run_id, state, n) VALUES (1, 'pending', 2)")
    raw.close()

    const l = sqlite.open(tmp.path)
    expect(l.db.query("PRAGMA user_version").get()).toEqual({ user_version: MIGRATIONS.length })
    expect(MIGRATIONS.length).toBe(13)
    const columns = l.db.query(
      "SELECT name, type FROM pragma_table_info('runs') WHERE name IN ('parent', 'step')",
    )
    expect(columns.all()).toEqual([
      { name: "parent", type: "INTEGER" },
      { name: "step", type: "TEXT" },
    ])
    expect(l.db.query("SELECT sql FROM sqlite_master WHERE name = 'runs_parent'").get()).toEqual({
      sql: "CREATE INDEX runs_parent ON runs (parent, id)",
    })
    const old = (await l.runs.latest("old"))!
    expect(old).toMatchObject({ id: 1, parent: null, step: null, state: "running" })
    expect(old.job).toEqual({ ...JOB, name: "old" })
    expect(await l.runs.steps(old.id)).toEqual([])
    await tallied(l, old.id)

    // the old run's rows, as a pipeline's: a step of it is made, and its rows go on
    const { run: a } = await stepOf(l, old, "a")
    expect(await l.runs.get(a.id)).toMatchObject({ name: "old.a", parent: old.id, step: "a" })
    expect((await l.runs.steps(old.id)).map((r) => r.id)).toEqual([a.id])
    const rows = await itemsOf(l, old.id)
    const ready = await l.steps.ready(old.id, a.id, [], { after: 0, limit: 10 })
    expect(ready.map((r) => [r.id, r.key, r.data, r.needs])).toEqual(
      rows.map((r) => [r.id, r.key, `{"text":"t${r.row}"}`, []]),
    )
    expect(
      await l.steps.add(a.id, [
        made(rows[0]!, "completed", { output: "let through" }),
        made(rows[1]!, "skipped"),
        made(rows[2]!, "pending"),
      ]),
    ).toBe(3)
    expect((await itemsOf(l, a.id)).map((i) => [i.key, i.state, i.output, i.cache_key])).toEqual([
      ["k1", "completed", "let through", null],
      ["k2", "skipped", null, null],
      ["k3", "pending", null, null],
    ])
    expect(await l.reads.counts(a.id)).toEqual(counts({ completed: 1, skipped: 1, pending: 1 }))
    await tallied(l, a.id)
    expect((await l.runs.inputs(a.id)).map((i) => i.rows)).toEqual([3])
    expect(await l.steps.ready(old.id, a.id, [], { after: 0, limit: 10 })).toEqual([])
    // a step that needs a: the rows whose item of a ended
    const { run: b } = await stepOf(l, old, "b")
    const next = await l.steps.ready(old.id, b.id, [a.id], { after: 0, limit: 10 })
    expect(next.map((r) => [r.key, r.needs.map((n) => [n.state, n.output])])).toEqual([
      ["k1", [["completed", "let through"]]],
      ["k2", [["skipped", null]]],
    ])
    await l.close()
  })
})

describe.skipIf(SKIP_PG)("pipelines in spool migrate", () => {
  test("a pipeline run named alone goes to PostgreSQL with every run of its steps, their parent and step, and their items as they were", async () => {
    await using tmp = await tmpdir()
    await using schema = await pgSchema()
    const l = sqlite.open(tmp.path)
    const { run: p } = await l.runs.create({
      name: "p",
      job: { ...JOB, name: "p" },
      fingerprint: "fp",
      resume: "",
      inputs: [{ path: "/in.jsonl", format: "jsonl" }],
    })
    const input = (await l.runs.inputs(p.id))[0]!
    const rows = [1, 2, 3].map((n) => ({ key: `k${n}`, line: n, data: { text: `t${n}` } }))
    await l.ingest.add(p.id, input, { rows, problems: [], checkpoint: { offset: 3 } }, true)
    await l.ingest.done(p.id)
    const { run: first } = await stepOf(l, p, "a")
    const { run: a } = await l.runs.create({
      name: "p.a",
      job: { ...JOB, name: "p.a" },
      fingerprint: "fp",
      resume: "",
      inputs: [{ path: "/in.jsonl", format: "jsonl" }],
      parent: { run: p.id, step: "a" },
      seen: first.id,
    })
    const { run: b } = await stepOf(l, p, "b")
    await l.runs.create({ name: "q", job: { ...JOB, name: "q" }, fingerprint: "fp", resume: "", inputs: [] })
    const items = await itemsOf(l, p.id)
    await l.steps.add(a.id, [
      made(items[0]!, "completed", { output: "yes" }),
      made(items[1]!, "skipped", { error: "when was false" }),
      made(items[2]!, "needs_review", { output: "maybe", error: "to review", error_class: "invalid_output" }),
    ])
    await l.steps.add(b.id, [made(items[0]!, "pending"), made(items[1]!, "skipped")])
    const before = [await itemsOf(l, a.id), await itemsOf(l, b.id)]
    await l.close()

    const done = await copy({ from: tmp.path, to: schema.url, run: "p" })
    expect(done.runs.map((r) => [r.id, r.name])).toEqual([
      [p.id, "p"],
      [first.id, "p.a"],
      [a.id, "p.a"],
      [b.id, "p.b"],
    ])
    expect(done.rows.items).toBe(8)
    const pg = await postgres.open(schema.url)
    try {
      expect((await pg.runs.list()).map((r) => [r.id, r.name, r.parent, r.step])).toEqual([
        [p.id, "p", null, null],
        [first.id, "p.a", p.id, "a"],
        [a.id, "p.a", p.id, "a"],
        [b.id, "p.b", p.id, "b"],
      ])
      expect((await pg.runs.steps(p.id)).map((r) => r.id)).toEqual([a.id, b.id])
      const after = [await itemsOf(pg, a.id), await itemsOf(pg, b.id)]
      const fields = (i: Item) => [
        i.id,
        i.input,
        i.key,
        i.row,
        i.data,
        i.state,
        i.output,
        i.error,
        i.error_class,
      ]
      expect(after.map((list) => list.map(fields))).toEqual(before.map((list) => list.map(fields)))
      expect(await pg.reads.counts(a.id)).toEqual(counts({ completed: 1, skipped: 1, needs_review: 1 }))
      expect(await pg.reads.counts(b.id)).toEqual(counts({ pending: 1, skipped: 1 }))
      for (const id of [p.id, a.id, b.id]) await tallied(pg, id)
      // and the pipeline goes on there: b's last row, once a's item of it is decided
      expect((await pg.steps.ready(p.id, b.id, [a.id], { after: 0, limit: 10 })).map((r) => r.key)).toEqual(
        [],
      )
      await pg.reviews.decide(a.id, [{ item: after[0]![2]!.id, decision: "reject", reason: "no", by: "cli" }])
      expect((await pg.steps.ready(p.id, b.id, [a.id], { after: 0, limit: 10 })).map((r) => r.key)).toEqual([
        "k3",
      ])
      expect(await pg.steps.add(b.id, [made(items[2]!, "skipped")])).toBe(1)
      expect(await pg.reads.counts(b.id)).toEqual(counts({ pending: 1, skipped: 2 }))
      await tallied(pg, b.id)
    } finally {
      await pg.close()
    }
  })
})
