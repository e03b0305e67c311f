/**
 * The status page's work, in process through `app.request()`: the item browser's API (search by id or text,
 * filter, pages, one item opened with its input row, request and attempts), the run's job, the results download,
 * and that none of them shows a key. The server reads through a connection of its own, as `spool serve` does.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test"
import type { Ledger } from "../../src/core/ledger/ledger.ts"
import { createApp } from "../../src/serve.ts"
import type { Job } from "../../src/core/job/job.ts"
import * as report from "../../src/core/report/report.ts"
import { views } from "../../src/page/views.ts"
import { JOB, rows, seed } from "../lib/ledger.ts"
import type { Tmp } from "../lib/tmp.ts"
import { store, type Store } from "./fixture.ts"

let tmp: Tmp
let writer: Ledger
let reader: Ledger
let runId: number
let ids: number[]
let made: Store

/** The fixture's run (fixture.ts), k1 answering with JSON. */
beforeEach(async () => {
  made = await store('{"label":"billing","why":"a refund"}')
  ;({ tmp, writer, reader, runId, ids } = made)
})

afterEach(async () => {
  await made[Symbol.asyncDispose]()
})

const app = (o: { searchScan?: number } = {}) =>
  createApp({ ledger: reader, home: tmp.path, version: "test", ...o })
const get = async (path: string, o: { searchScan?: number } = {}): Promise<any> => {
  const res = await app(o).request(path)
  expect([path, res.status]).toEqual([path, 200])
  return res.json()
}
const found = (body: { items: { id: string; match?: string }[] }) => body.items.map((i) => [i.id, i.match])

describe("the item browser's API", () => {
  test("q finds the item whose id it is first (an index look-up), then the items whose row, output or error holds it", async () => {
    const byId = await get(`/api/runs/${runId}/items?q=k3`)
    expect(found(byId)).toEqual([["k3", "id"]])
    expect([byId.scanned, byId.next]).toEqual([6, null])
    // the row's JSON text ({"text":"t4"}), the output (any case), the error
    expect(found(await get(`/api/runs/${runId}/items?q=t4`))).toEqual([["k4", "text"]])
    expect(found(await get(`/api/runs/${runId}/items?q=REFUND`))).toEqual([["k1", "text"]])
    expect(found(await get(`/api/runs/${runId}/items?q=invalid%20api`))).toEqual([["k3", "text"]])
    expect(found(await get(`/api/runs/${runId}/items?q=out%202`))).toEqual([["k2", "text"]])
    // an id that is also in its own row: once, as the id's
    const input = (await writer.runs.inputs(runId))[0]!
    const own = { key: "k7", line: 7, data: { id: "k7", text: "about k7" } }
    await writer.ingest.add(runId, input, { rows: [own], problems: [], checkpoint: {} }, true)
    expect(found(await get(`/api/runs/${runId}/items?q=k7`))).toEqual([["k7", "id"]])
    expect(found(await get(`/api/runs/${runId}/items?q=nowhere`))).toEqual([])
    // with a state: only items in it, the id match too
    expect(found(await get(`/api/runs/${runId}/items?q=k3&state=completed`))).toEqual([])
    expect(found(await get(`/api/runs/${runId}/items?q=t&state=pending`))).toEqual([
      ["k5", "text"],
      ["k6", "text"],
      ["k7", "text"],
    ])
    // an empty q is no search: the page of every item
    const all = await get(`/api/runs/${runId}/items?q=%20&limit=2`)
    expect([all.items.map((i: { id: string }) => i.id), all.scanned]).toEqual([["k1", "k2"], undefined])
  })

  test("a search reads a bounded number of items per request and goes on from its cursor, each find once", async () => {
    const pages: [string[], number, boolean][] = []
    let after = ""
    for (let n = 0; n < 10; n++) {
      const body = await get(`/api/runs/${runId}/items?q=t&limit=50${after}`, { searchScan: 4 })
      pages.push([body.items.map((i: { id: string }) => i.id), body.scanned, body.next === null])
      if (body.next === null) break
      after = `&after=${body.next}`
    }
    expect(pages).toEqual([
      [["k1", "k2", "k3", "k4"], 4, false],
      [["k5", "k6"], 2, true],
    ])
    // the limit ends a request at its last find
    const first = await get(`/api/runs/${runId}/items?q=t&limit=1`)
    expect([found(first), first.next]).toEqual([[["k1", "text"]], String(ids[0])])
  })

  test("with several inputs an id is found as the result lines name it (file:key), or by its key in each input", async () => {
    const two = await writer.runs.addInput(runId, "/two.jsonl", "jsonl")
    await writer.ingest.add(runId, two, { rows: rows(1, 3), problems: [], checkpoint: {} }, true)
    expect(found(await get(`/api/runs/${runId}/items?q=k3`))).toEqual([
      ["in.jsonl:k3", "id"],
      ["two.jsonl:k3", "id"],
    ])
    expect(found(await get(`/api/runs/${runId}/items?q=two.jsonl:k3`))).toEqual([["two.jsonl:k3", "id"]])
  })

  test("an item opened: its result line, input row, the request spool makes of it, and every attempt", async () => {
    const one = await get(`/api/runs/${runId}/items/${ids[0]}`)
    expect(one).toMatchObject({
      id: "k1",
      item_id: ids[0],
      state: "completed",
      output: '{"label":"billing","why":"a refund"}',
      attempts: 1,
      input: { text: "t1" },
      request: { provider: "openai", model: "gpt-4o-mini", prompt: "Say t1" },
      source: { file: "/in.jsonl", row: 1, id: null },
    })
    expect(one.history).toEqual([
      expect.objectContaining({
        n: 1,
        outcome: "ok",
        error_class: null,
        latency_ms: 5,
        input_tokens: 10,
        output_tokens: 4,
        note: null,
      }),
    ])
    const failed = await get(`/api/runs/${runId}/items/${ids[2]}`)
    expect(failed.history.map((a: any) => [a.outcome, a.error_class, a.error, a.http_status])).toEqual([
      ["failed", "auth", "invalid api key", 401],
    ])
    // a row that cannot fill the prompt says why
    const input = (await writer.runs.inputs(runId))[0]!
    await writer.ingest.add(
      runId,
      input,
      { rows: [{ key: "bare", line: 7, data: { other: 1 } }], problems: [], checkpoint: {} },
      true,
    )
    const bare = (await writer.reads.keyed(runId, "bare"))[0]!
    expect((await get(`/api/runs/${runId}/items/${bare.id}`)).request).toEqual({
      unfilled: 'the row has no field "text" for the prompt\'s placeholder',
    })
  })

  test("an item served from the cache: cached at cost 0 with its answer's first cost, drawn as such, its attempt noted", async () => {
    const [k5] = await writer.cache.pending(runId, { after: 0, limit: 1 })
    const entry = {
      key: "key-5",
      output: "from the cache",
      provider: "openai",
      model: "gpt-4o-mini",
      input_tokens: 1200,
      output_tokens: 20,
      cached_input_tokens: 0,
      cost_usd: null,
      created_at: Date.now(),
    }
    await writer.cache.serve(runId, "w", [{ id: k5!.id, key: "key-5", entry }], [])
    const hit = await get(`/api/runs/${runId}/items/${k5!.id}`)
    expect(hit).toMatchObject({
      id: "k5",
      state: "completed",
      output: "from the cache",
      attempts: 0,
      usage: { input_tokens: 0, output_tokens: 0, cached_input_tokens: 0 },
      cost_usd: 0,
      cached: true,
      cached_usage: { input_tokens: 1200, output_tokens: 20, cached_input_tokens: 0, cost_usd: null },
    })
    expect(hit.history.map((a: any) => [a.n, a.outcome, a.note])).toEqual([
      [0, "cached", "served from the response cache: no call, not counted"],
    ])
    const drawn = views().item(hit)
    expect(drawn).toContain(" · 0 attempt(s) · 0 in · 0 out · $0.00</p>")
    expect(drawn).toContain(
      '<p id="item-cached">Served from the response cache, with no call. Its answer was paid for once: 1,200 in · 20 out, at an unknown price.</p>',
    )
    expect(drawn).toContain(
      '<td>cached<div class="muted">served from the response cache: no call, not counted</div></td>',
    )
    // an item that was called for has no such line
    const paid = await get(`/api/runs/${runId}/items/${ids[1]}`)
    expect([paid.cached, "cached_usage" in paid]).toEqual([false, false])
    expect(views().item(paid)).not.toContain("item-cached")
  })

  test("an item of another run, or none, is a 404; a bad item id a 400", async () => {
    const other = (await seed(writer, 1, "other")).run
    const res = await app().request(`/api/runs/${other.id}/items/${ids[0]}`)
    expect(res.status).toBe(404)
    expect(await res.json()).toEqual({ error: `run "other" has no item ${ids[0]}` })
    const bad = await app().request(`/api/runs/${runId}/items/k1`)
    expect(bad.status).toBe(400)
    expect(await bad.json()).toEqual({ error: "item: must be an item id (a whole number)" })
    const long = await app().request(`/api/runs/${runId}/items?q=${"x".repeat(201)}`)
    expect(long.status).toBe(400)
    expect(await long.json()).toEqual({ error: "query.q: must be at most 200 characters" })
  })
})

describe("the job", () => {
  test("GET /api/runs/:id/job: provider, model, mode, inputs, prompts, schema name and limits", async () => {
    expect(await get(`/api/runs/${runId}/job`)).toEqual({
      name: "r",
      provider: "openai",
      model: "gpt-4o-mini",
      mode: "realtime",
      base_url: null,
      api_key_env: null,
      options: {},
      inputs: [{ path: "/in.jsonl", format: "jsonl", id: null }],
      system: null,
      prompt: "Say {{text}}",
      max_tokens: null,
      temperature: null,
      params: {},
      output: null,
      limits: JOB.limits,
      batch: null,
    })
  })

  test("no key from the environment, nor a base URL's credentials, nor a secret in a provider's options, is in any page or answer", async () => {
    const secret = "sk-h3-secret-0123456789abcdef"
    // what a plugin's options might carry, though a key belongs in the environment
    const inOptions = ["opt-pw-9988776655", "hdr-tok-5566778899", "opt-key-4433221100", "txt-tok-1122334455"]
    process.env.SPOOL_H3_KEY = secret
    try {
      const job: Job = {
        ...JOB,
        name: "keyed",
        provider: {
          ...JOB.provider,
          mode: "batch",
          api_key_env: "SPOOL_H3_KEY",
          base_url: `https://user:hunter2pw@gw.example/v1?key=${secret}`,
          options: {
            url: "https://bob:opt-pw-9988776655@hook.example/x",
            headers: { Authorization: "Bearer hdr-tok-5566778899", "X-Trace": "t1" },
            api_key: "opt-key-4433221100",
            note: "sent with bearer txt-tok-1122334455",
            retries: 2,
          },
        },
        request: { ...JOB.request, system: "You label tickets." },
      }
      const { run } = await writer.runs.create({
        name: "keyed",
        job,
        fingerprint: "fp",
        resume: "spool run job.toml",
        inputs: [{ path: "/in.jsonl", format: "jsonl" }],
      })
      const input = (await writer.runs.inputs(run.id))[0]!
      await writer.ingest.add(run.id, input, { rows: rows(2), problems: [], checkpoint: {} }, true)
      const item = (await writer.reads.page(run.id, { limit: 1 }))[0]!.id
      const view = await get(`/api/runs/${run.id}/job`)
      expect([view.base_url, view.api_key_env, view.mode, view.system]).toEqual([
        "https://gw.example/v1",
        "SPOOL_H3_KEY",
        "batch",
        "You label tickets.",
      ])
      expect(view.options).toEqual({
        url: "https://[redacted]@hook.example/x",
        headers: { Authorization: "[redacted]", "X-Trace": "t1" },
        api_key: "[redacted]",
        note: "sent with bearer [redacted]",
        retries: 2,
      })
      for (const path of [
        `/?run=${run.id}`,
        "/api/runs",
        `/api/runs/${run.id}`,
        `/api/runs/${run.id}/job`,
        `/api/runs/${run.id}/items`,
        `/api/runs/${run.id}/items?q=t1`,
        `/api/runs/${run.id}/items/${item}`,
        `/api/runs/${run.id}/results`,
      ]) {
        const res = await app().request(path)
        const text = await res.text()
        const leaked = [secret, "hunter2pw", ...inOptions].filter((x) => text.includes(x))
        expect([path, res.status, leaked]).toEqual([path, 200, []])
      }
    } finally {
      delete process.env.SPOOL_H3_KEY
    }
  })
})

describe("the results download", () => {
  test("GET /api/runs/:id/results is the run's result lines, as `spool results` gives them, as a JSONL file", async () => {
    const res = await app().request(`/api/runs/${runId}/results`)
    expect(res.status).toBe(200)
    expect(res.headers.get("content-type")).toBe("application/x-ndjson; charset=utf-8")
    expect(res.headers.get("content-disposition")).toBe(`attachment; filename="r-${runId}.jsonl"`)
    const run = (await reader.runs.get(runId))!
    let expected = ""
    for await (const line of report.results(reader, run)) expected += line
    expect(await res.text()).toBe(expected)
    const done = await app().request(`/api/runs/${runId}/results?state=completed`)
    expect(
      (await done.text())
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l).id),
    ).toEqual(["k1", "k2"])
    const bad = await app().request(`/api/runs/${runId}/results?state=done`)
    expect(bad.status).toBe(400)
    // a name no job could have (quotes, a line break) stays out of the header
    const { run: odd } = await writer.runs.create({
      name: 'a"b\nc',
      job: JOB,
      fingerprint: "fp",
      resume: "spool run",
      inputs: [{ path: "/in.jsonl", format: "jsonl" }],
    })
    const named = await app().request(`/api/runs/${odd.id}/results`)
    expect(named.headers.get("content-disposition")).toBe(`attachment; filename="a_b_c-${odd.id}.jsonl"`)
  })

  test("it streams: the body comes 500 lines at a time, read only as the client takes it, and stops when the client goes", async () => {
    const big = (await seed(writer, 1_200, "big")).run
    const res = await app().request(`/api/runs/${big.id}/results`)
    const body = res.body!.getReader()
    const lines = (chunk: Uint8Array) => new TextDecoder().decode(chunk).split("\n").length - 1
    const first = await body.read()
    expect(lines(first.value!)).toBe(500)
    const second = await body.read()
    expect(lines(second.value!)).toBe(500)
    await body.cancel()
    // the read was let go: a writer commits and the next reads go through
    await writer.claims.step(big.id, "w", [], 3, 60_000)
    expect((await reader.reads.counts(big.id)).running).toBe(3)
    const whole = await (await app().request(`/api/runs/${big.id}/results`)).text()
    expect(whole.split("\n").length - 1).toBe(1_200)
  })
})

describe("state words and interrupted runs", () => {
  test("a run no process works on is drawn interrupted, with the command that goes on with it", async () => {
    const { run } = await seed(writer, 2, "stopped")
    const { runs } = await get("/api/runs")
    expect(runs.find((r: { name: string }) => r.name === "stopped")).toMatchObject({
      state: "interrupted",
      resume: "spool run job.toml",
    })
    const html = await (await app().request(`/?run=${run.id}`)).text()
    expect(html).toContain('<span class="st st-interrupted" id="run-state">interrupted</span>')
    expect(html).toContain('Go on with <code class="cmd">spool run job.toml</code></p>')
    expect(html).toContain('go on with <code class="cmd">spool run job.toml</code></div>')
    expect(html).toContain('data-action="pause" disabled>Pause</button>')
  })

  test("states read as words: completed with failures, needs review", async () => {
    const { run } = await seed(writer, 1, "ended")
    await writer.runs.setState(run.id, "completed_with_failures")
    const html = await (await app().request(`/?run=${run.id}`)).text()
    expect(html).toContain(
      '<span class="st st-completed_with_failures" id="run-state">completed with failures</span>',
    )
    expect(html).not.toContain(">completed_with_failures<")
    expect(html).not.toContain(">needs_review<")
  })
})
