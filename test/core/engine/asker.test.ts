/**
 * The response cache asked off the main thread (engine/asker.ts, ask-worker.ts): a real worker on a real SQLite
 * store gives every batch exactly what `Lookup.ask` gives on the main thread, and when it cannot start, the main
 * thread asks instead.
 */
import { describe, expect, test } from "bun:test"
import { Asker } from "../../../src/core/engine/asker.ts"
import { cacheUse, lookupOf, type Lookup } from "../../../src/core/engine/cache.ts"
import * as jobs from "../../../src/core/job/job.ts"
import type { Ledger } from "../../../src/core/ledger/ledger.ts"
import * as sqlite from "../../../src/core/ledger/sqlite/sqlite.ts"
import type { Run } from "../../../src/core/ledger/types.ts"
import type { SourceRow } from "../../../src/plugins/api/define.ts"
import { pay, rows } from "../../lib/ledger.ts"
import { tmpdir } from "../../lib/tmp.ts"

const job = (model: string) =>
  jobs.load(undefined, { name: "r", input: ["/in.jsonl"], prompt: "Say {{text}}", model }).job

/** A run of `n` rows t1…tn whose answers are paid and written to the cache: `answer(i)` for row i. */
async function paid(l: Ledger, model: string, n: number, answer: (i: number) => string): Promise<void> {
  const j = job(model)
  const who = { provider: "openai", baseUrl: undefined, model, options: {} }
  const { run } = await l.runs.create({
    name: `paid-${model}`,
    job: j,
    fingerprint: "fp",
    resume: "",
    inputs: [{ path: "/in.jsonl", format: "jsonl" }],
  })
  const input = (await l.runs.inputs(run.id))[0]!
  await l.ingest.add(run.id, input, { rows: rows(n), problems: [], checkpoint: { offset: n } }, true)
  // row i's answer, at 100 + i input tokens
  const i = (text: string) => Number(text.slice(1))
  await pay(
    l,
    run,
    cacheUse(j, who)!,
    (text) => answer(i(text)),
    (text) => 100 + i(text),
  )
  expect((await l.reads.counts(run.id)).completed).toBe(n)
}

async function runOf(l: Ledger, name: string, model: string): Promise<Run> {
  const { run } = await l.runs.create({
    name,
    job: { ...job(model), name },
    fingerprint: "fp",
    resume: "",
    inputs: [{ path: "/in.jsonl", format: "jsonl" }],
  })
  return run
}

/** The main thread's look-ups of a run, and an Asker of the same whose worker opens `store`. */
function both(l: Ledger, run: Run, model: string, store: string): { here: Lookup; asker: Asker } {
  const who = { provider: "openai", baseUrl: undefined, model, options: {} }
  const here = lookupOf(l, run, "me", job(model), who)!
  const asker = new Asker(lookupOf(l, run, "me", job(model), who)!, {
    store,
    run,
    owner: "me",
    job: job(model),
    who,
  })
  return { here, asker }
}

/** Rows t1…t40 and two more, in batches of 15: some read as JSON text (raw), some not; one has no `text` field. */
function batches(): SourceRow[][] {
  const all: SourceRow[] = [
    ...rows(40).map((r, i) => (i % 2 === 0 ? { ...r, raw: JSON.stringify(r.data) } : r)),
    { key: "nofield", line: 41, data: { other: 1 } },
    { key: "k999", line: 42, data: { text: "t999" } },
  ]
  return [all.slice(0, 15), all.slice(15, 30), all.slice(30)]
}

/** Emoji, a quote, a comma, a newline and a surrogate pair: sliced by length where the answers are joined. */
const ANSWER = (i: number) => `réponse ${i} 🙂, "quoted"\nline ${"✓".repeat(i % 4)}`

describe("the cache's look-ups worker", () => {
  for (const [model, priced] of [
    ["gpt-4o-mini", true],
    ["a-model-without-a-price", false],
  ] as const)
    test(`answers each batch exactly as the main thread does: keys, hits, answers, usage, ${priced ? "cost" : "a null cost"}`, async () => {
      await using tmp = await tmpdir()
      const l = sqlite.open(tmp.path)
      // rows 1…40, but for every fifth, are in the cache
      await paid(l, model, 40, ANSWER)
      await l.db.run("DELETE FROM cache WHERE output LIKE 'réponse %5 %' OR output LIKE 'réponse %0 %'")
      const run = await runOf(l, "b", model)
      const { here, asker } = both(l, run, model, tmp.path)
      try {
        for (const batch of batches()) {
          const expected = await here.ask(batch.map((r) => ({ ...r })))
          const got = await asker.ask(batch)
          expect(got).toEqual(expected)
        }
        // the first batch on this thread, the others by the worker
        expect(asker.counted).toEqual({ worker: 2, main: 1 })
        const all = batches().flat()
        const asked = await here.ask(all)
        expect(asked.keys.filter((k) => k === "")).toHaveLength(1)
        expect(asked.hits.size).toBe(32)
        const first = asked.hits.get(0)!
        expect(first.output).toBe(ANSWER(1))
        expect([first.input_tokens, first.output_tokens, first.cached_input_tokens]).toEqual([101, 10, 0])
        if (priced) expect(first.cost_usd).toBeGreaterThan(0)
        else expect(first.cost_usd).toBeNull()
        // the worker closes its connection and exits of itself
        expect(await asker.close()).toBe(0)
      } finally {
        asker.close()
        await l.close()
      }
    })

  test("a worker that cannot open the store gives way: every batch is asked on the main thread, with the same answers", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    await paid(l, "gpt-4o-mini", 40, ANSWER)
    const run = await runOf(l, "b", "gpt-4o-mini")
    // a store that cannot be made: a directory under a file
    const { here, asker } = both(l, run, "gpt-4o-mini", tmp.join("spool.db", "nested"))
    try {
      for (const batch of batches()) expect(await asker.ask(batch)).toEqual(await here.ask(batch))
      expect(asker.counted).toEqual({ worker: 0, main: 3 })
    } finally {
      asker.close()
      await l.close()
    }
  })

  test("a PostgreSQL store's rows are asked on the main thread: its look-ups wait on the network", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const run = await runOf(l, "b", "gpt-4o-mini")
    const { asker } = both(l, run, "gpt-4o-mini", "postgres://nobody@127.0.0.1:1/none")
    for (const batch of batches()) expect((await asker.ask(batch)).hits.size).toBe(0)
    expect(asker.counted).toEqual({ worker: 0, main: 3 })
    asker.close()
    await l.close()
  })
})
