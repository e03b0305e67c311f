/**
 * The response cache's part of the ledger contract (ledger.ts `Cache`, README "Cache"): what the engine relies on of
 * every driver. `testLedger` runs it, for each driver.
 */
import { describe, expect, test } from "bun:test"
import { usageOf, type CacheEntry, type Ledger } from "../../src/core/ledger/ledger.ts"
import type { Item, Outcome } from "../../src/core/ledger/types.ts"
import { JOB, rows, seed } from "./ledger.ts"
import type { Place } from "./ledger-contract.ts"

const WRITE = { provider: "openai", model: "gpt-4o-mini", cost: 0.25 }

/** A completed outcome that writes its answer to the cache. */
const paid = (item: number, attempt: number, output: string): Outcome => ({
  item,
  attempt,
  to: "completed",
  label: "ok",
  output,
  inputTokens: 30,
  outputTokens: 20,
  cachedTokens: 5,
  latencyMs: 5,
  endedAt: Date.now(),
  cache: WRITE,
})

async function all(ledger: Ledger, run: number): Promise<Item[]> {
  const out: Item[] = []
  for await (const item of ledger.reads.items(run)) out.push(item)
  return out
}

/** The cache's entry for `key`, written at any time. */
async function entryOf(ledger: Ledger, key: string): Promise<CacheEntry | undefined> {
  return (await ledger.cache.get([key], 0))[0]
}

/** Looks up every pending item of the run as a miss under `key${id}`, then claims and completes them with writes. */
async function payAll(ledger: Ledger, run: number, owner = "w"): Promise<void> {
  const pending = await ledger.cache.pending(run, { after: 0, limit: 100 })
  await ledger.cache.serve(
    run,
    owner,
    [],
    pending.map((p) => ({ id: p.id, key: `key-${p.data}` })),
  )
  const claimed = await ledger.claims.step(run, owner, [], 100, 60_000, { looked: true })
  await ledger.claims.step(
    run,
    owner,
    claimed.map((c) => paid(c.id, c.attempt, `answer to ${c.data}`)),
    0,
    60_000,
  )
}

export function testCache(place: () => Promise<Place>, tallied: (l: Ledger, run: number) => Promise<void>) {
  describe("the response cache", () => {
    test("pending gives the items never looked up, in ledger order after the cursor; with all, every pending one with its key", async () => {
      await using p = await place()
      const l = await p.open()
      const { run } = await seed(l, 5)
      await seed(l, 2, "other")
      const first = await l.cache.pending(run.id, { after: 0, limit: 3 })
      expect(first.map((i) => [JSON.parse(i.data).text, i.key])).toEqual([
        ["t1", null],
        ["t2", null],
        ["t3", null],
      ])
      const rest = await l.cache.pending(run.id, { after: first.at(-1)!.id, limit: 10 })
      expect(rest.map((i) => JSON.parse(i.data).text)).toEqual(["t4", "t5"])
      expect(
        await l.cache.serve(
          run.id,
          "w",
          [],
          [
            { id: first[0]!.id, key: "a" },
            { id: first[1]!.id, key: "" },
          ],
        ),
      ).toEqual({ hits: 0, misses: 2 })
      expect(
        (await l.cache.pending(run.id, { after: 0, limit: 10 })).map((i) => JSON.parse(i.data).text),
      ).toEqual(["t3", "t4", "t5"])
      const every = await l.cache.pending(run.id, { after: 0, limit: 10, all: true })
      expect(every.map((i) => [JSON.parse(i.data).text, i.key])).toEqual([
        ["t1", "a"],
        ["t2", ""],
        ["t3", null],
        ["t4", null],
        ["t5", null],
      ])
      // claimed items are no longer pending
      await l.claims.step(run.id, "w", [], 1, 60_000, { looked: true })
      expect((await l.cache.pending(run.id, { after: 0, limit: 10, all: true })).length).toBe(4)
    })

    test("a looked claim takes only the pending items the cache was asked for; a plain one takes any", async () => {
      await using p = await place()
      const l = await p.open()
      const { run } = await seed(l, 4)
      const items = await l.cache.pending(run.id, { after: 0, limit: 10 })
      await l.cache.serve(
        run.id,
        "w",
        [],
        [
          { id: items[1]!.id, key: "k" },
          { id: items[3]!.id, key: "" },
        ],
      )
      const looked = await l.claims.step(run.id, "w", [], 10, 60_000, { looked: true })
      expect(looked.map((c) => c.key)).toEqual(["k2", "k4"])
      const plain = await l.claims.step(run.id, "w", [], 10, 60_000)
      expect(plain.map((c) => c.key)).toEqual(["k1", "k3"])
      const { run: other } = await seed(l, 3, "b")
      const some = await l.cache.pending(other.id, { after: 0, limit: 10 })
      await l.cache.serve(other.id, "w", [], [{ id: some[2]!.id, key: "z" }])
      expect((await l.batches.packable(other.id, 10, { looked: true })).map((x) => x.key)).toEqual(["k3"])
      expect((await l.batches.packable(other.id, 10)).map((x) => x.key)).toEqual(["k1", "k2", "k3"])
    })

    test("a completed outcome writes its answer under the item's key, in its step; none without a key, a write, or a completion", async () => {
      await using p = await place()
      const l = await p.open()
      const { run } = await seed(l, 4)
      const items = await l.cache.pending(run.id, { after: 0, limit: 10 })
      await l.cache.serve(
        run.id,
        "w",
        [],
        [
          { id: items[0]!.id, key: "ka" },
          { id: items[1]!.id, key: "kb" },
          { id: items[2]!.id, key: "" },
          { id: items[3]!.id, key: "kd" },
        ],
      )
      const c = await l.claims.step(run.id, "w", [], 4, 60_000, { looked: true })
      const before = Date.now()
      await l.claims.step(
        run.id,
        "w",
        [
          paid(c[0]!.id, 1, "A"),
          { ...paid(c[1]!.id, 1, "B"), cache: undefined },
          paid(c[2]!.id, 1, "C"),
          { ...paid(c[3]!.id, 1, "D"), to: "needs_review", label: "needs_review" },
        ],
        0,
        60_000,
      )
      const a = await entryOf(l, "ka")
      expect(a).toEqual({
        key: "ka",
        output: "A",
        provider: "openai",
        model: "gpt-4o-mini",
        input_tokens: 30,
        output_tokens: 20,
        cached_input_tokens: 5,
        cost_usd: 0.25,
        created_at: a!.created_at,
      })
      expect(a!.created_at).toBeLessThanOrEqual(Date.now())
      expect(a!.created_at).toBeGreaterThanOrEqual(before - 1000)
      expect(await entryOf(l, "kb")).toBeUndefined()
      expect(await entryOf(l, "kd")).toBeUndefined()
      expect((await l.cache.stats()).entries).toBe(1)
    })

    test("an outcome whose lease was lost writes nothing", async () => {
      await using p = await place()
      const l = await p.open()
      const { run } = await seed(l, 1)
      const [item] = await l.cache.pending(run.id, { after: 0, limit: 1 })
      await l.cache.serve(run.id, "w", [], [{ id: item!.id, key: "k" }])
      const [c] = await l.claims.step(run.id, "w", [], 1, 1, { looked: true })
      await Bun.sleep(5)
      expect(await l.claims.recover(run.id, () => false)).toBe(1)
      await l.claims.step(run.id, "w", [paid(c!.id, 1, "late")], 0, 60_000)
      expect(await entryOf(l, "k")).toBeUndefined()
    })

    test("a hit completes a pending item with no call: the answer, its first cost kept apart, an uncounted cached attempt", async () => {
      await using p = await place()
      const l = await p.open()
      const { run: a } = await seed(l, 2, "a")
      await payAll(l, a.id)
      const { run: b } = await seed(l, 3, "b")
      const pending = await l.cache.pending(b.id, { after: 0, limit: 10 })
      const entries = await l.cache.get(
        pending.map((i) => `key-${i.data}`),
        0,
      )
      expect(entries.map((e) => e.output).sort()).toEqual([
        'answer to {"text":"t1"}',
        'answer to {"text":"t2"}',
      ])
      const byKey = new Map(entries.map((e) => [e.key, e]))
      const hits = pending.flatMap((i) => {
        const entry = byKey.get(`key-${i.data}`)
        return entry ? [{ id: i.id, key: entry.key, entry }] : []
      })
      const misses = pending
        .filter((i) => !byKey.has(`key-${i.data}`))
        .map((i) => ({ id: i.id, key: `key-${i.data}` }))
      expect(await l.cache.serve(b.id, "w2", hits, misses)).toEqual({ hits: 2, misses: 1 })
      const items = await all(l, b.id)
      expect(
        items.map((i) => [i.key, i.state, i.output, i.attempts, i.input_tokens, i.output_tokens]),
      ).toEqual([
        ["k1", "completed", 'answer to {"text":"t1"}', 0, 0, 0],
        ["k2", "completed", 'answer to {"text":"t2"}', 0, 0, 0],
        ["k3", "pending", null, 0, 0, 0],
      ])
      expect(usageOf(items[0]!.cached_usage!)).toEqual({
        input_tokens: 30,
        output_tokens: 20,
        cached_input_tokens: 5,
        cost_usd: 0.25,
      })
      // stored as a list, a fifth of the object's bytes; a store's older objects still read
      expect(items[0]!.cached_usage).toBe("[30,20,5,0.25]")
      expect(
        usageOf('{"input_tokens":30,"output_tokens":20,"cached_input_tokens":5,"cost_usd":null}'),
      ).toEqual({
        input_tokens: 30,
        output_tokens: 20,
        cached_input_tokens: 5,
        cost_usd: null,
      })
      expect(items[2]!.cached_usage).toBeNull()
      expect(items[2]!.cache_key).toBe('key-{"text":"t3"}')
      const attempts = await l.reads.attempts(items[0]!.id)
      expect(attempts.map((x) => [x.n, x.outcome, x.input_tokens, x.error_class])).toEqual([
        [0, "cached", null, null],
      ])
      expect(attempts[0]!.ended_at).toBe(attempts[0]!.started_at)
      const s = await l.reads.summary(b.id)
      expect(s.cache).toEqual({ hits: 2, misses: 1, savedUsd: 0.5 })
      expect(s.attempts).toBe(0)
      expect(s.inputTokens).toBe(0)
      expect(s.recentCompleted).toBe(2)
      // run a's counts are its own
      expect((await l.reads.summary(a.id)).cache).toEqual({ hits: 0, misses: 2, savedUsd: 0 })
      await tallied(l, b.id)
      const chart = await l.reads.progress(b.id, 0, 10_000_000_000_000)
      expect(chart.reduce((n, c) => n + c.completed, 0)).toBe(2)
    })

    test("a hit never overwrites an answer: an item no longer pending, or served already, is left as it is and not counted", async () => {
      await using p = await place()
      const l = await p.open()
      const { run } = await seed(l, 2)
      await payAll(l, run.id)
      const entry = (await entryOf(l, 'key-{"text":"t1"}'))!
      const [first, second] = await all(l, run.id)
      const hit = { id: first!.id, key: entry.key, entry: { ...entry, output: "other" } }
      expect(await l.cache.serve(run.id, "w", [hit], [{ id: second!.id, key: "x" }])).toEqual({
        hits: 0,
        misses: 0,
      })
      const after = await all(l, run.id)
      expect(after.map((i) => [i.state, i.output, i.cached_usage, i.cache_key])).toEqual([
        ["completed", 'answer to {"text":"t1"}', null, 'key-{"text":"t1"}'],
        ["completed", 'answer to {"text":"t2"}', null, 'key-{"text":"t2"}'],
      ])
      expect((await l.reads.summary(run.id)).cache).toEqual({ hits: 0, misses: 2, savedUsd: 0 })
    })

    test("an item missed, then served when asked again, is counted a hit and no longer a miss", async () => {
      await using p = await place()
      const l = await p.open()
      const { run: b } = await seed(l, 2, "b")
      const pending = await l.cache.pending(b.id, { after: 0, limit: 10 })
      await l.cache.serve(
        b.id,
        "w",
        [],
        pending.map((i) => ({ id: i.id, key: `key-${i.data}` })),
      )
      expect((await l.reads.summary(b.id)).cache).toEqual({ hits: 0, misses: 2, savedUsd: 0 })
      const { run: a } = await seed(l, 1, "a")
      await payAll(l, a.id)
      const entry = (await entryOf(l, 'key-{"text":"t1"}'))!
      // asked again (a resumed run): the keyed item is served under the key it was asked for
      expect(await l.cache.serve(b.id, "w", [{ id: pending[0]!.id, key: entry.key, entry }], [])).toEqual({
        hits: 1,
        misses: 0,
      })
      expect((await l.reads.summary(b.id)).cache).toEqual({ hits: 1, misses: 1, savedUsd: 0.25 })
      // an item keyed otherwise is not served under another key
      const other = { ...entry, key: "elsewhere" }
      expect(
        await l.cache.serve(b.id, "w", [{ id: pending[1]!.id, key: "elsewhere", entry: other }], []),
      ).toEqual({
        hits: 0,
        misses: 0,
      })
      await tallied(l, b.id)
    })

    test("two workers serving the same items: each is settled once, and counted once", async () => {
      await using p = await place()
      const one = await p.open()
      const two = await p.open()
      const { run: a } = await seed(one, 3, "a")
      await payAll(one, a.id)
      const { run: b } = await seed(one, 4, "b")
      const pending = await two.cache.pending(b.id, { after: 0, limit: 10 })
      const entries = new Map(
        (
          await two.cache.get(
            pending.map((i) => `key-${i.data}`),
            0,
          )
        ).map((e) => [e.key, e]),
      )
      const hits = pending.flatMap((i) => {
        const entry = entries.get(`key-${i.data}`)
        return entry ? [{ id: i.id, key: entry.key, entry }] : []
      })
      const misses = [{ id: pending[3]!.id, key: "k4" }]
      const [x, y] = await Promise.all([
        one.cache.serve(b.id, "w1", hits, misses),
        two.cache.serve(b.id, "w2", hits, misses),
      ])
      expect(x.hits + y.hits).toBe(3)
      expect(x.misses + y.misses).toBe(1)
      expect((await one.reads.summary(b.id)).cache).toEqual({ hits: 3, misses: 1, savedUsd: 0.75 })
      const attempts = await Promise.all((await all(one, b.id)).map((i) => one.reads.attempts(i.id)))
      expect(attempts.map((list) => list.length)).toEqual([1, 1, 1, 0])
      await tallied(one, b.id)
    })

    test("get gives entries written at or after `since`; a later write of a key replaces its answer", async () => {
      await using p = await place()
      const l = await p.open()
      const { run } = await seed(l, 1)
      await payAll(l, run.id)
      const key = 'key-{"text":"t1"}'
      const first = (await entryOf(l, key))!
      expect(await l.cache.get([key, "nope", key], first.created_at)).toHaveLength(1)
      expect(await l.cache.get([key], first.created_at + 1)).toEqual([])
      // a run with the same request, paying again (--refresh-cache, or an expired entry)
      const { run: again } = await seed(l, 1, "again")
      await Bun.sleep(2)
      const [item] = await l.cache.pending(again.id, { after: 0, limit: 1 })
      await l.cache.serve(again.id, "w", [], [{ id: item!.id, key }])
      const [c] = await l.claims.step(again.id, "w", [], 1, 60_000, { looked: true })
      await l.claims.step(
        again.id,
        "w",
        [{ ...paid(c!.id, 1, "newer"), cache: { ...WRITE, cost: 0.5 } }],
        0,
        60_000,
      )
      const second = (await entryOf(l, key))!
      expect(second.output).toBe("newer")
      expect(second.cost_usd).toBe(0.5)
      expect(second.created_at).toBeGreaterThan(first.created_at)
      expect((await l.cache.stats()).entries).toBe(1)
    })

    test("a completed batch line writes its answer under its item's key", async () => {
      await using p = await place()
      const l = await p.open()
      const { run } = await seed(l, 2)
      const pending = await l.cache.pending(run.id, { after: 0, limit: 10 })
      await l.cache.serve(
        run.id,
        "w",
        [],
        [
          { id: pending[0]!.id, key: "b1" },
          { id: pending[1]!.id, key: "b2" },
        ],
      )
      const ids = (await l.batches.packable(run.id, 10, { looked: true })).map((x) => x.id)
      const b = await l.batches.intend(
        run.id,
        { tag: "t", requests: "/t", bytes: 1, tokens: 1 },
        ids.map((id, i) => ({ id, line: i + 1, offset: i, bytes: 1 })),
        [],
        "w",
      )
      await l.batches.submitted(b!.id, {
        id: "batch_1",
        status: "in_progress",
        phase: "in_progress",
        files: undefined,
      } as never)
      await l.batches.apply(
        b!.id,
        [
          {
            item: ids[0]!,
            to: "completed",
            label: "ok",
            output: "L1",
            inputTokens: 7,
            outputTokens: 3,
            endedAt: Date.now(),
            cache: { ...WRITE, cost: 0.1 },
          },
          {
            item: ids[1]!,
            to: "failed",
            label: "failed",
            errorClass: "bad_request",
            error: "no",
            endedAt: Date.now(),
            cache: WRITE,
          },
        ],
        "w",
      )
      expect(await entryOf(l, "b1")).toMatchObject({
        output: "L1",
        input_tokens: 7,
        output_tokens: 3,
        cost_usd: 0.1,
      })
      expect(await entryOf(l, "b2")).toBeUndefined()
    })

    test("spool retry forgets the keys of the items it sends back, so the cache is asked again", async () => {
      await using p = await place()
      const l = await p.open()
      const { run } = await seed(l, 2)
      const pending = await l.cache.pending(run.id, { after: 0, limit: 10 })
      await l.cache.serve(
        run.id,
        "w",
        [],
        pending.map((i) => ({ id: i.id, key: `q${i.id}` })),
      )
      const c = await l.claims.step(run.id, "w", [], 2, 60_000, { looked: true })
      await l.claims.step(
        run.id,
        "w",
        [
          { ...paid(c[0]!.id, 1, "x"), to: "failed", label: "failed", errorClass: "bad_request", error: "e" },
          paid(c[1]!.id, 1, "y"),
        ],
        0,
        60_000,
      )
      expect(await l.claims.retry(run.id, "failed")).toBe(1)
      const again = await l.cache.pending(run.id, { after: 0, limit: 10 })
      expect(again.map((i) => [i.id, i.key])).toEqual([[c[0]!.id, null]])
    })

    test("a canary's looked steps claim only the head's looked items; beyond does not count items the cache completed", async () => {
      await using p = await place()
      const l = await p.open()
      const { run: a } = await seed(l, 6, "a")
      await payAll(l, a.id)
      const { run } = await seed(l, 6)
      const pending = await l.cache.pending(run.id, { after: 0, limit: 10 })
      // the head (3 items): k1 looked, k2 a hit, k3 not looked; after it, k4 a hit, k5 looked
      const entry = async (i: number) => (await entryOf(l, `key-${pending[i]!.data}`))!
      const hit = async (i: number) => ({
        id: pending[i]!.id,
        key: `key-${pending[i]!.data}`,
        entry: await entry(i),
      })
      await l.cache.serve(
        run.id,
        "w",
        [await hit(1), await hit(3)],
        [
          { id: pending[0]!.id, key: "x1" },
          { id: pending[4]!.id, key: "x5" },
        ],
      )
      const c = await l.canaries.step(run.id, "w", [], 10, 60_000, 3, { looked: true })
      expect(c.map((i) => i.key)).toEqual(["k1"])
      expect(await l.canaries.beyond(run.id, 3)).toBe(0)
      expect(await l.canaries.counts(run.id, 3)).toMatchObject({ completed: 1, running: 1, pending: 1 })
    })

    test("stats, prune and clear: entries, bytes, models, the oldest; what each removes", async () => {
      await using p = await place()
      const l = await p.open()
      expect(await l.cache.stats()).toEqual({
        entries: 0,
        bytes: 0,
        hits: 0,
        misses: 0,
        saved_usd: 0,
        oldest: null,
        newest: null,
        models: [],
      })
      const { run } = await seed(l, 3)
      const pending = await l.cache.pending(run.id, { after: 0, limit: 10 })
      await l.cache.serve(
        run.id,
        "w",
        [],
        pending.map((i, n) => ({ id: i.id, key: `s${n}` })),
      )
      const c = await l.claims.step(run.id, "w", [], 3, 60_000, { looked: true })
      const t0 = Date.now()
      await l.claims.step(
        run.id,
        "w",
        [
          { ...paid(c[0]!.id, 1, "été"), endedAt: t0 - 10_000 },
          { ...paid(c[1]!.id, 1, "bb"), endedAt: t0 - 5_000 },
          { ...paid(c[2]!.id, 1, "ccc"), endedAt: t0, cache: { ...WRITE, model: "gpt-4.1" } },
        ],
        0,
        60_000,
      )
      expect(await l.cache.stats()).toEqual({
        entries: 3,
        bytes: 5 + 2 + 3,
        hits: 0,
        misses: 3,
        saved_usd: 0,
        oldest: t0 - 10_000,
        newest: t0,
        models: [
          { provider: "openai", model: "gpt-4o-mini", entries: 2, bytes: 7 },
          { provider: "openai", model: "gpt-4.1", entries: 1, bytes: 3 },
        ],
      })
      expect(await l.cache.prune(t0 - 7_000)).toEqual({ entries: 1, bytes: 5 })
      expect(await l.cache.clear("gpt-4.1")).toEqual({ entries: 1, bytes: 3 })
      expect(await l.cache.clear("no-such-model")).toEqual({ entries: 0, bytes: 0 })
      expect(await l.cache.clear()).toEqual({ entries: 1, bytes: 2 })
      expect((await l.cache.stats()).entries).toBe(0)
    })

    test("rows the cache answered when asked before ingest are stored completed, in file order, with cached attempts; the others keep their keys", async () => {
      await using p = await place()
      const l = await p.open()
      const { run: a } = await seed(l, 3, "a")
      await payAll(l, a.id)
      const entry = (await entryOf(l, 'key-{"text":"t2"}'))!
      const { run } = await l.runs.create({
        name: "b",
        job: { ...JOB, name: "b" },
        fingerprint: "fp",
        resume: "spool run job.toml",
        inputs: [{ path: "/in.jsonl", format: "jsonl" }],
      })
      const input = (await l.runs.inputs(run.id))[0]!
      const batch = rows(4)
      const hits = new Map([
        [1, entry],
        [2, { ...entry, key: "kx", output: "X", cost_usd: null }],
      ])
      const asked = { owner: "w", keys: ["ka", 'key-{"text":"t2"}', "kx", ""], hits }
      expect(
        await l.ingest.add(
          run.id,
          input,
          { rows: batch, problems: [], checkpoint: { offset: 4 } },
          false,
          asked,
        ),
      ).toEqual({
        added: 4,
        duplicates: 0,
      })
      const items = await all(l, run.id)
      expect(items.map((i) => [i.key, i.state, i.output, i.cache_key, i.attempts])).toEqual([
        ["k1", "pending", null, "ka", 0],
        ["k2", "completed", 'answer to {"text":"t2"}', 'key-{"text":"t2"}', 0],
        ["k3", "completed", "X", "kx", 0],
        ["k4", "pending", null, "", 0],
      ])
      expect(items.map((i) => i.id)).toEqual([...items.map((i) => i.id)].sort((x, y) => x - y))
      expect(usageOf(items[1]!.cached_usage!)).toEqual({
        input_tokens: 30,
        output_tokens: 20,
        cached_input_tokens: 5,
        cost_usd: 0.25,
      })
      expect(usageOf(items[2]!.cached_usage!).cost_usd).toBeNull()
      expect((await l.reads.attempts(items[1]!.id)).map((x) => [x.n, x.outcome])).toEqual([[0, "cached"]])
      expect(await l.reads.attempts(items[0]!.id)).toEqual([])
      // nothing left to look up: the two pending items were asked for
      expect(await l.cache.pending(run.id, { after: 0, limit: 10 })).toEqual([])
      expect((await l.reads.summary(run.id)).cache).toEqual({ hits: 2, misses: 2, savedUsd: 0.25 })
      await tallied(l, run.id)
      const chart = await l.reads.progress(run.id, 0, 10_000_000_000_000)
      expect(chart.reduce((n, c) => n + c.completed, 0)).toBe(2)
      // the same rows read again (--reingest): nothing stored twice, nothing counted twice, no duplicate reported
      const again = await l.ingest.add(
        run.id,
        input,
        { rows: batch, problems: [], checkpoint: { offset: 4 } },
        true,
        asked,
      )
      expect(again).toEqual({ added: 0, duplicates: 0 })
      expect((await l.reads.summary(run.id)).cache).toEqual({ hits: 2, misses: 2, savedUsd: 0.25 })
      expect((await all(l, run.id)).length).toBe(4)
      // a row whose id is taken is a duplicate, hit or not
      const dup = [{ key: "k2", line: 9, data: { text: "other" } }]
      const twice = await l.ingest.add(
        run.id,
        input,
        { rows: dup, problems: [], checkpoint: { offset: 5 } },
        true,
        {
          owner: "w",
          keys: ["kz"],
          hits: new Map([[0, entry]]),
        },
      )
      expect(twice).toEqual({ added: 0, duplicates: 1 })
      expect((await l.reads.summary(run.id)).cache.hits).toBe(2)
      // a row read again beside a new one, both answered: only the new one is stored, counted and given an attempt
      const mixed = await l.ingest.add(
        run.id,
        input,
        {
          rows: [batch[1]!, { key: "k5", line: 5, data: { text: "t5" } }],
          problems: [],
          checkpoint: { offset: 6 },
        },
        true,
        {
          owner: "w",
          keys: ['key-{"text":"t2"}', "k5key"],
          hits: new Map([
            [0, entry],
            [1, entry],
          ]),
        },
      )
      expect(mixed).toEqual({ added: 1, duplicates: 0 })
      expect((await l.reads.summary(run.id)).cache).toEqual({ hits: 3, misses: 2, savedUsd: 0.5 })
      const k5 = (await all(l, run.id)).find((i) => i.key === "k5")!
      expect([k5.state, k5.output, k5.cache_key]).toEqual(["completed", 'answer to {"text":"t2"}', "k5key"])
      expect((await l.reads.attempts(k5.id)).map((x) => [x.n, x.outcome])).toEqual([[0, "cached"]])
      expect((await l.reads.attempts(items[1]!.id)).map((x) => x.outcome)).toEqual(["cached"])
      await tallied(l, run.id)
    })

    test("items ingested later are pending and not looked up; the rows of another run are never given", async () => {
      await using p = await place()
      const l = await p.open()
      const { run, input } = await seed(l, 1)
      await l.ingest.reopen(run.id)
      await l.ingest.add(run.id, input, { rows: rows(2, 2), problems: [], checkpoint: { offset: 3 } }, true)
      expect(
        (await l.cache.pending(run.id, { after: 0, limit: 10 })).map((i) => JSON.parse(i.data).text),
      ).toEqual(["t1", "t2", "t3"])
    })
  })
}
