/**
 * The status page's API, in process through `app.request()` (no port): every route, the token and origin refusals,
 * the events stream. The server reads through a connection of its own while the test writes through another, as
 * `spool serve` does beside `spool run`.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test"
import { writeFileSync } from "node:fs"
import type { Ledger } from "../../src/core/ledger/ledger.ts"
import { createApp, isLoopback, start } from "../../src/serve.ts"
import { views } from "../../src/page/views.ts"
import { UsageError } from "../../src/core/base/errors.ts"
import { Batcher } from "../../src/core/engine/batcher.ts"
import { ingest, plan } from "../../src/core/engine/ingest.ts"
import { ownerId } from "../../src/core/engine/owner.ts"
import { client } from "../../src/core/engine/run.ts"
import * as jobs from "../../src/core/job/job.ts"
import type { BatchClient, ProviderClient } from "../../src/plugins/api/define.ts"
import { startFake } from "../lib/fake-openai.ts"
import { JOB, seed } from "../lib/ledger.ts"
import type { Tmp } from "../lib/tmp.ts"
import { end, store, type Store } from "./fixture.ts"

const KEY = "sk-test-server-0123456789"

let tmp: Tmp
let writer: Ledger
let reader: Ledger
let runId: number
let made: Store

/** One run of 6 items: 2 completed, 1 failed (auth), 1 needs_review (output), 2 pending (fixture.ts). */
beforeEach(async () => {
  made = await store()
  ;({ tmp, writer, reader, runId } = made)
})

afterEach(async () => {
  await made[Symbol.asyncDispose]()
})

/**
 * The fixture's k5 served from the response cache (an answer paid 30 in, 5 of them cached, and 20 out, for $0.25),
 * and k6 looked up and missed.
 */
async function serveK5(l: Ledger, run: number): Promise<void> {
  const [k5, k6] = await l.cache.pending(run, { after: 0, limit: 2 })
  const entry = {
    key: "key-5",
    output: "from the cache",
    provider: "openai",
    model: "gpt-4o-mini",
    input_tokens: 30,
    output_tokens: 20,
    cached_input_tokens: 5,
    cost_usd: 0.25,
    created_at: Date.now(),
  }
  await l.cache.serve(run, "w", [{ id: k5!.id, key: "key-5", entry }], [{ id: k6!.id, key: "key-6" }])
}

const app = (o: { token?: string; eventMs?: number } = {}) =>
  createApp({ ledger: reader, home: tmp.path, version: "test", ...o })

async function json(res: Response): Promise<any> {
  return res.json()
}

describe("the JSON API", () => {
  test("GET /api/runs lists every run with its summary", async () => {
    const res = await app().request("/api/runs")
    expect(res.status).toBe(200)
    const body = await json(res)
    expect(body.runs).toHaveLength(1)
    expect(body.runs[0]).toMatchObject({
      id: runId,
      name: "r",
      state: "running",
      completed: 2,
      failed: 2,
      total: 6,
    })
  })

  test("GET /api/runs/:id gives counts, attempts, usage, errors, malformed lines, batches and a chart; by id or name", async () => {
    for (const ref of [String(runId), "r"]) {
      const body = await json(await app().request(`/api/runs/${ref}`))
      expect(body.counts).toEqual({
        pending: 2,
        running: 0,
        retry_wait: 0,
        queued: 0,
        submitted: 0,
        completed: 2,
        failed: 1,
        needs_review: 1,
        rejected: 0,
        skipped: 0,
      })
      expect(body.total).toBe(6)
      expect(body.attempts).toBe(4)
      expect(body.usage).toEqual({ input_tokens: 20, output_tokens: 8, cached_input_tokens: 0 })
      expect(body.errors).toEqual([
        { class: "auth", count: 1, example: "invalid api key", id: "k3" },
        { class: "output", count: 1, example: "not JSON", id: "k4" },
      ])
      expect(body.malformed).toEqual({ count: 0, duplicates: 0, sample: [] })
      // the response cache was never asked for this run's items: zeros, as status --json gives them
      expect(body.cache).toEqual({ hits: 0, misses: 0, saved_usd: 0 })
      expect(body.batches).toEqual([])
      // a run a second old: charted from its attempts, in tenths of a second, over its own life
      const created = (await writer.runs.get(runId))!.created_at
      expect(body.chart.from).toBe(created)
      expect(body.chart.to).toBeGreaterThanOrEqual(created + 1000)
      expect(body.chart.slot_ms).toBe(100)
      const sum = (list: Record<string, number>[], k: string) => list.reduce((a, p) => a + (p[k] ?? 0), 0)
      expect([sum(body.chart.points, "completed"), sum(body.chart.points, "failed")]).toEqual([2, 2])
      expect(sum(body.chart.errors, "errors")).toBe(2)
      expect(body.chart.error_cap).toBeNull()
    }
  })

  test("a batch run's detail lists its batches with the provider's status: the live ones and the last 50 ended", async () => {
    const lines = (await writer.batches.packable(runId, 2)).map((p, i) => ({
      id: p.id,
      line: i,
      offset: i * 10,
      bytes: 10,
    }))
    const batch = (await writer.batches.intend(
      runId,
      { tag: "sp1", requests: "/r", bytes: 20, tokens: 4 },
      lines,
      [],
      "w",
    ))!
    await writer.batches.submitted(batch.id, {
      id: "batch_abc",
      status: "in_progress",
      phase: "in_progress",
      counts: { total: 2, done: 1, failed: 0 },
    })
    const body = await json(await app().request(`/api/runs/${runId}`))
    expect(body.counts).toMatchObject({ pending: 0, submitted: 2 })
    expect(body.batches_total).toBe(1)
    expect(body.batches).toEqual([
      expect.objectContaining({
        id: batch.id,
        tag: "sp1",
        provider_id: "batch_abc",
        phase: "in_progress",
        status: "in_progress",
        items: 2,
        done: 1,
        failed: 0,
      }),
    ])
  })

  test("a run the cache served: its hits, misses and savings, and each hit's line cached at cost 0 with its first cost and a note on its attempt", async () => {
    await serveK5(writer, runId)
    const detail = await json(await app().request(`/api/runs/${runId}`))
    expect(detail.cache).toEqual({ hits: 1, misses: 1, saved_usd: 0.25 })
    expect(detail.counts).toMatchObject({ completed: 3, pending: 1 })
    const done = await json(await app().request(`/api/runs/${runId}/items?state=completed`))
    const lines = done.items.map(({ history: _, item_id: __, ...line }: Record<string, unknown>) => line)
    expect(lines.map((l: Record<string, unknown>) => [l.id, l.cached, l.cost_usd, l.cached_usage])).toEqual([
      ["k1", false, 0.0000039, undefined],
      ["k2", false, 0.0000039, undefined],
      ["k5", true, 0, { input_tokens: 30, output_tokens: 20, cached_input_tokens: 5, cost_usd: 0.25 }],
    ])
    expect(done.items[2].history).toEqual([
      expect.objectContaining({
        n: 0,
        outcome: "cached",
        input_tokens: null,
        note: "served from the response cache: no call, not counted",
      }),
    ])
  })

  test("an unknown run is a JSON 404, and so is an unknown path", async () => {
    const res = await app().request("/api/runs/nope")
    expect(res.status).toBe(404)
    expect(await json(res)).toEqual({ error: 'no run "nope"' })
    const lost = await app().request("/api/nothing")
    expect(lost.status).toBe(404)
    expect((await json(lost)).error).toBe("no such page: GET /api/nothing")
  })

  test("GET /api/runs/:id/items filters by state and pages with a cursor, each item with its attempts", async () => {
    const failed = await json(await app().request(`/api/runs/${runId}/items?state=failed`))
    expect(failed.next).toBeNull()
    expect(failed.items).toHaveLength(1)
    expect(failed.items[0]).toMatchObject({
      id: "k3",
      state: "failed",
      attempts: 1,
      error: { class: "auth", message: "invalid api key" },
      source: { file: "/in.jsonl", row: 3 },
    })
    expect(failed.items[0].history).toHaveLength(1)
    expect(failed.items[0].history[0]).toMatchObject({
      n: 1,
      outcome: "failed",
      error_class: "auth",
      http_status: 401,
    })
    const review = await json(await app().request(`/api/runs/${runId}/items?state=needs_review`))
    expect(review.items.map((i: { id: string; output: string }) => [i.id, i.output])).toEqual([
      ["k4", "{oops"],
    ])
    // all six, two at a time, in ledger order, each exactly once
    const seen: string[] = []
    let after = ""
    for (let page = 0; page < 10; page++) {
      const body = await json(await app().request(`/api/runs/${runId}/items?limit=2${after}`))
      seen.push(...body.items.map((i: { id: string }) => i.id))
      if (body.next === null) break
      after = `&after=${body.next}`
    }
    expect(seen).toEqual(["k1", "k2", "k3", "k4", "k5", "k6"])
  })

  test("pages of a run whose items are interleaved with another run's skip the other run's items", async () => {
    const { run: other } = await writer.runs.create({
      name: "other",
      job: { ...JOB, name: "other" },
      fingerprint: "fp2",
      resume: "spool run",
      inputs: [{ path: "/o.jsonl", format: "jsonl" }],
    })
    const rows = (keys: string[]) => keys.map((key, i) => ({ key, line: i + 1, data: {} }))
    await writer.ingest.add(
      other.id,
      (await writer.runs.inputs(other.id))[0]!,
      { rows: rows(["o1", "o2", "o3"]), problems: [], checkpoint: {} },
      false,
    )
    await writer.ingest.add(
      runId,
      (await writer.runs.inputs(runId))[0]!,
      { rows: rows(["k7", "k8"]), problems: [], checkpoint: {} },
      false,
    )
    const pages: string[][] = []
    let after = ""
    for (let page = 0; page < 10; page++) {
      const body = await json(await app().request(`/api/runs/${runId}/items?limit=3${after}`))
      pages.push(body.items.map((i: { id: string }) => i.id))
      if (body.next === null) break
      after = `&after=${body.next}`
    }
    expect(pages).toEqual([
      ["k1", "k2", "k3"],
      ["k4", "k5", "k6"],
      ["k7", "k8"],
    ])
    const theirs = await json(await app().request(`/api/runs/${other.id}/items`))
    expect(theirs.items.map((i: { id: string }) => i.id)).toEqual(["o1", "o2", "o3"])
  })

  test("bad query values are refused with 400, naming each field", async () => {
    const res = await app().request(`/api/runs/${runId}/items?state=done&limit=x`)
    expect(res.status).toBe(400)
    expect((await json(res)).error).toBe(
      "query.state: must be one of pending, running, retry_wait, queued, submitted, completed, failed, needs_review, rejected, skipped; query.limit: must be a whole number from 1 to 1000",
    )
    const big = await app().request(`/api/runs/${runId}/items?limit=5000`)
    expect(big.status).toBe(400)
    expect((await json(big)).error).toBe("query.limit: must be a whole number from 1 to 1000")
  })
})

describe("the controls", () => {
  const post = (
    a: ReturnType<typeof app>,
    path: string,
    body: unknown = {},
    headers: Record<string, string> = {},
  ) =>
    a.request(path, {
      method: "POST",
      headers: { "content-type": "application/json", origin: "http://localhost", ...headers },
      body: JSON.stringify(body),
    })

  test("pause and resume change the run's state, through the same code as the CLI", async () => {
    const a = app()
    const paused = await post(a, `/api/runs/${runId}/pause`)
    expect(paused.status).toBe(200)
    expect(await json(paused)).toMatchObject({ ok: true, state: "paused" })
    expect((await writer.runs.get(runId))?.state).toBe("paused")
    const again = await json(await post(a, `/api/runs/${runId}/pause`))
    expect(again.message).toBe('run "r" is already paused')
    const resumed = await json(await post(a, `/api/runs/${runId}/resume`))
    expect(resumed).toMatchObject({ ok: true, state: "running" })
    expect((await writer.runs.get(runId))?.state).toBe("running")
  })

  test("retry moves failed or needs_review items back to pending; a bad state is a 400", async () => {
    const a = app()
    const bad = await post(a, `/api/runs/${runId}/retry`, { state: "completed" })
    expect(bad.status).toBe(400)
    expect((await json(bad)).error).toBe("body.state: must be failed, needs_review or rejected")
    const res = await json(await post(a, `/api/runs/${runId}/retry`, { state: "needs_review" }))
    expect(res.ok).toBe(true)
    expect(res.message).toStartWith('1 needs_review item(s) of run "r" are pending again')
    expect(await writer.reads.counts(runId)).toMatchObject({ needs_review: 0, failed: 1, pending: 3 })
    await post(a, `/api/runs/${runId}/retry`, { state: "failed" })
    expect(await writer.reads.counts(runId)).toMatchObject({ failed: 0, pending: 4 })
  })

  test("cancel of a realtime run that no process runs cancels it at once", async () => {
    const res = await json(await post(app(), `/api/runs/${runId}/cancel`))
    expect(res.ok).toBe(true)
    for (let i = 0; i < 50 && (await writer.runs.get(runId))?.state !== "cancelled"; i++) await Bun.sleep(20)
    expect((await writer.runs.get(runId))?.state).toBe("cancelled")
    // a finished run cannot be paused or cancelled again: 409 with the CLI's message
    const late = await post(app(), `/api/runs/${runId}/pause`)
    expect(late.status).toBe(409)
    expect((await json(late)).error).toBe('run "r" is cancelled: there is nothing to pause')
    const again = await post(app(), `/api/runs/${runId}/cancel`)
    expect(again.status).toBe(409)
    expect((await json(again)).error).toBe('run "r" is cancelled: there is nothing to cancel')
  })

  test("cancel of a batch run nobody drives cancels its batches from here, and installs no process signal handler", async () => {
    await using fake = await startFake({ apiKey: KEY, batch: { processingMs: 60_000, cancelMs: 300 } })
    process.env.OPENAI_API_KEY = KEY
    try {
      writeFileSync(
        tmp.join("in.jsonl"),
        [1, 2, 3].map((i) => JSON.stringify({ id: `b${i}`, text: `t${i}` })).join("\n") + "\n",
      )
      writeFileSync(
        tmp.join("job.toml"),
        `name = "b"\n[source]\npath = "in.jsonl"\nid = "id"\n[provider]\nname = "openai"\nmodel = "gpt-4.1-mini"\n` +
          `mode = "batch"\nbase_url = "${fake.url}"\n[request]\nprompt = "Say {{text}}"\n[batch]\npoll_s = 0.02\npoll_max_s = 0.05\n`,
      )
      const { job } = jobs.load(tmp.join("job.toml"), {})
      const planned = plan(job)
      const { run } = await writer.runs.create({
        name: job.name,
        job,
        fingerprint: jobs.fingerprint(job),
        resume: "spool run job.toml",
        inputs: planned.map((p) => ({ path: p.path, format: p.source.name })),
      })
      await ingest(writer, run, planned, async () => {})
      // a process sends the batch and stops: the batch is live at the provider, and nobody drives the run
      const provider = client(job) as ProviderClient & { batch: BatchClient }
      const batcher = new Batcher({
        ledger: writer,
        run,
        job,
        client: provider,
        owner: ownerId(),
        home: tmp.path,
      })
      const driving = batcher.loop()
      while ((await writer.batches.live(run.id))[0]?.state !== "submitted") await Bun.sleep(10)
      batcher.stop()
      expect(await driving).toBe("interrupted")
      expect(await writer.batches.holder(run.id)).toBeNull()

      const listeners = () =>
        `SIGINT ${process.listenerCount("SIGINT")}, SIGTERM ${process.listenerCount("SIGTERM")}`
      const before = listeners()
      const seen = new Set<string>()
      const res = await json(await post(app(), `/api/runs/${run.id}/cancel`))
      expect(res).toMatchObject({ ok: true, message: 'run "b" is being cancelled', state: "cancelling" })
      // the cancel runs on after the answer: the batch is cancelled at the provider (300 ms), then applied
      for (let i = 0; i < 1000 && (await reader.runs.get(run.id))?.state !== "cancelled"; i++) {
        seen.add(listeners())
        await Bun.sleep(5)
      }
      expect((await reader.runs.get(run.id))?.state).toBe("cancelled")
      expect(fake.batch.batches.map((b) => b.status)).toEqual(["cancelled"])
      expect([...seen]).toEqual([before])
      expect(listeners()).toBe(before)
    } finally {
      delete process.env.OPENAI_API_KEY
    }
  })

  test("a control from another site's page is refused: foreign Origin, or a cross-site fetch without one", async () => {
    const a = app()
    const foreign = await post(a, `/api/runs/${runId}/pause`, {}, { origin: "http://evil.example" })
    expect(foreign.status).toBe(403)
    expect((await json(foreign)).error).toBe(
      "refused: a control must come from this server's own page (Origin http://evil.example is not http://localhost)",
    )
    const crossSite = await a.request(`/api/runs/${runId}/cancel`, {
      method: "POST",
      headers: { "sec-fetch-site": "cross-site" },
    })
    expect(crossSite.status).toBe(403)
    for (const action of ["resume", "retry"]) {
      const res = await post(a, `/api/runs/${runId}/${action}`, { state: "failed" }, { origin: "null" })
      expect(res.status).toBe(403)
    }
    expect((await writer.runs.get(runId))?.state).toBe("running")
    expect((await writer.reads.counts(runId)).failed).toBe(1)
  })
})

describe("the token", () => {
  test("with a token, every route refuses a request without it, and takes it by header or by the cookie of a ?token= visit", async () => {
    const a = app({ token: "s3cret" })
    for (const path of [
      "/",
      "/api/runs",
      `/api/runs/${runId}`,
      `/api/runs/${runId}/items`,
      `/api/runs/${runId}/items?q=k1`,
      `/api/runs/${runId}/items/1`,
      `/api/runs/${runId}/job`,
      `/api/runs/${runId}/results`,
      "/api/events",
    ]) {
      const res = await a.request(path)
      expect([path, res.status]).toEqual([path, 401])
    }
    const refused = await a.request(`/api/runs/${runId}/pause`, {
      method: "POST",
      headers: { origin: "http://localhost" },
    })
    expect(refused.status).toBe(401)
    expect((await writer.runs.get(runId))?.state).toBe("running")
    expect((await a.request("/api/runs", { headers: { authorization: "Bearer wrong" } })).status).toBe(401)
    expect((await a.request("/api/runs", { headers: { authorization: "Bearer s3cret" } })).status).toBe(200)
    expect((await a.request("/api/runs", { headers: { "x-spool-token": "s3cret" } })).status).toBe(200)
    const visit = await a.request(`/?run=${runId}&token=s3cret`)
    expect(visit.status).toBe(303)
    expect(visit.headers.get("location")).toBe(`/?run=${runId}`)
    const cookie = visit.headers.get("set-cookie") ?? ""
    expect(cookie).toContain("spool_token=s3cret")
    expect(cookie).toContain("HttpOnly")
    expect(cookie).toContain("SameSite=Strict")
    const page = await a.request(`/?run=${runId}`, { headers: { cookie: "spool_token=s3cret" } })
    expect(page.status).toBe(200)
    expect(await page.text()).toContain("<title>r · spool</title>")
    expect((await a.request("/?token=nope")).status).toBe(401)
  })

  test("without a token, only loopback names are answered (DNS rebinding); with one, any name that brings it", async () => {
    for (const host of ["localhost:4777", "127.0.0.1:4777", "[::1]:4777", "LOCALHOST"]) {
      const res = await app().request("http://x/api/runs", { headers: { host } })
      expect([host, res.status]).toEqual([host, 200])
    }
    for (const host of ["evil.example:4777", "evil.example", "192.168.1.9:4777"]) {
      const res = await app().request("/api/runs", { headers: { host } })
      expect([host, res.status]).toEqual([host, 403])
    }
    const rebound = await app().request(`/api/runs/${runId}/pause`, {
      method: "POST",
      headers: { host: "evil.example:4777", origin: "http://evil.example:4777" },
    })
    expect(rebound.status).toBe(403)
    expect((await json(rebound)).error).toStartWith(
      'refused: this server answers only to a loopback address (127.0.0.1, localhost), not to "evil.example"',
    )
    expect((await writer.runs.get(runId))?.state).toBe("running")
    const named = await app({ token: "t" }).request("/api/runs", {
      headers: { host: "spool.internal:4777", authorization: "Bearer t" },
    })
    expect(named.status).toBe(200)
  })

  test("serving beyond loopback without a token is refused before anything listens", () => {
    expect(() => start({ ledger: reader, home: tmp.path, host: "0.0.0.0", port: 0 })).toThrow(UsageError)
    expect(() => start({ ledger: reader, home: tmp.path, host: "0.0.0.0", port: 0 })).toThrow(
      "refusing to serve on 0.0.0.0 without a token",
    )
    expect(["127.0.0.1", "127.1.2.3", "localhost", "::1"].map(isLoopback)).toEqual([true, true, true, true])
    expect(["0.0.0.0", "192.168.1.4", "::", "example.com"].map(isLoopback)).toEqual([
      false,
      false,
      false,
      false,
    ])
    const served = start({ ledger: reader, home: tmp.path, host: "127.0.0.1", port: 0 })
    expect(served.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/)
    served.stop()
  })
})

describe("the page", () => {
  test("GET / renders every run and the selected one: counts, errors, failing items, controls, with a CSP nonce", async () => {
    const res = await app().request("/")
    expect(res.status).toBe(200)
    const csp = res.headers.get("content-security-policy") ?? ""
    const nonce = /'nonce-([^']+)'/.exec(csp)?.[1]
    expect(nonce).toBeDefined()
    const html = await res.text()
    expect(html).toContain(`<script nonce="${nonce}">`)
    expect(html).toContain(
      '<button type="button" class="tile" data-state="needs_review" title="show the needs review items"><b>1</b><span>needs review</span></button>',
    )
    expect(html).toContain("<tr><td><code>auth</code></td><td>1</td><td>k3: invalid api key</td></tr>")
    // the item browser's first page: every item, each opening by its address
    expect(
      [...html.matchAll(/<tr data-item="(\d+)"><td><a href="#item=\1">(k\d)<\/a>/g)].map((m) => m[2]),
    ).toEqual(["k1", "k2", "k3", "k4", "k5", "k6"])
    expect(html).toContain('<span class="st st-needs_review">needs review</span>')
    expect(html).toContain('<pre id="job-prompt">Say {{text}}</pre>')
    expect(html).toContain('data-action="pause">Pause</button>')
    expect(html).toContain('data-action="resume" disabled>Resume</button>')
    expect(html).not.toContain("http://")
  })

  test("the run's cache figures stand beside its spend once the cache was asked; a hit is tagged cached in the item list", async () => {
    const part = (html: string, id: string) => new RegExp(`id="${id}">(.*?)</(dl|tbody)>`).exec(html)?.[1]
    const before = await (await app().request("/")).text()
    expect(part(before, "figures")).not.toContain("cache")
    expect(part(before, "browse")).not.toContain("cached")
    await serveK5(writer, runId)
    const html = await (await app().request("/")).text()
    expect(part(html, "figures")).toEndWith(
      '<dt>spend</dt><dd data-k="spend">$0.00 · ~$0.00 for the rest</dd><dt>cache</dt><dd data-k="cache">1 hit · 1 miss · saved $0.25</dd>',
    )
    // a model without a price: answers of unknown price count 0, and that 0 is not said as $0.00
    const detail = await json(await app().request(`/api/runs/${runId}`))
    const unpriced = {
      ...detail,
      spend: { ...detail.spend, usd: null },
      cache: { hits: 1, misses: 0, saved_usd: 0 },
    }
    expect(views().figures(unpriced)).toEndWith(
      '<dd data-k="cache">1 hit · 0 misses · saved unknown (no price)</dd>',
    )
    const tagged = [...part(html, "browse")!.matchAll(/>(k\d)<\/a><\/td><td>(.*?)<\/td>/g)]
    expect(tagged.filter((m) => m[2]!.includes("cached")).map((m) => [m[1], m[2]])).toEqual([
      ["k5", '<span class="st st-completed">completed</span> <span class="tag">cached</span>'],
    ])
  })

  test("a cancelled run's failed and needs-review items can be retried from the page; not while it is cancelling", async () => {
    const retry = (html: string) => [...html.matchAll(/data-action="retry" data-state="(\w+)"( disabled)?>/g)]
    await writer.runs.setState(runId, "cancelling", "cancelled by `spool cancel`")
    const cancelling = await (await app().request(`/?run=${runId}`)).text()
    expect(retry(cancelling).map((m) => [m[1], m[2] === undefined])).toEqual([
      ["failed", false],
      ["needs_review", false],
    ])
    await writer.runs.setState(runId, "cancelled", "cancelled by `spool cancel`")
    const cancelled = await (await app().request(`/?run=${runId}`)).text()
    expect(retry(cancelled).map((m) => [m[1], m[2] === undefined])).toEqual([
      ["failed", true],
      ["needs_review", true],
    ])
  })

  test("text from the data is escaped: a run name or an output cannot inject markup", async () => {
    const { run: evil } = await writer.runs.create({
      name: '<img src=x onerror="alert(1)">',
      job: JOB,
      fingerprint: "fp",
      resume: "spool run",
      inputs: [{ path: "/in.jsonl", format: "jsonl" }],
    })
    const html = await (await app().request(`/?run=${evil.id}`)).text()
    expect(html).not.toContain("<img src=x")
    expect(html).toContain("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;")
  })
})

/** Reads server-sent events off a response body, one at a time. */
function sse(res: Response) {
  const reader = res.body!.getReader()
  const decoder = new TextDecoder()
  let buffer = ""
  return {
    async next(ms = 3000): Promise<{ event: string; data: any } | null> {
      const deadline = Date.now() + ms
      while (!buffer.includes("\n\n")) {
        const left = deadline - Date.now()
        if (left <= 0) return null
        const chunk = await Promise.race([reader.read(), Bun.sleep(left).then(() => null)])
        if (chunk === null) return null
        if (chunk.done) return null
        buffer += decoder.decode(chunk.value)
      }
      const at = buffer.indexOf("\n\n")
      const block = buffer.slice(0, at)
      buffer = buffer.slice(at + 2)
      if (block.startsWith(":")) return this.next(deadline - Date.now())
      const event = /^event: (.*)$/m.exec(block)?.[1] ?? "message"
      const data = block
        .split("\n")
        .filter((l) => l.startsWith("data: "))
        .map((l) => l.slice(6))
        .join("\n")
      return { event, data: JSON.parse(data) }
    },
    close: () => reader.cancel(),
  }
}

describe("the events stream", () => {
  test("sends the runs and the run at once, then again when another connection commits, with new errors", async () => {
    const since = Date.now() - 60_000
    const res = await app({ eventMs: 50 }).request(`/api/runs/${runId}/events?runs=1&since=${since}`)
    expect(res.headers.get("content-type")).toStartWith("text/event-stream")
    const events = sse(res)
    expect(await events.next()).toMatchObject({ event: "runs", data: [{ id: runId, completed: 2 }] })
    expect(await events.next()).toMatchObject({
      event: "run",
      data: { counts: { completed: 2, pending: 2 } },
    })
    const first = await events.next()
    expect(first?.event).toBe("errors")
    expect(first?.data.map((e: { key: string; error_class: string }) => [e.key, e.error_class])).toEqual([
      ["k3", "auth"],
      ["k4", "output"],
    ])
    // another process finishes the two pending items, one of them failing
    const claimed = await writer.claims.step(runId, "w2", [], 2, 60_000)
    await writer.claims.step(
      runId,
      "w2",
      [
        end(claimed[0]!.id, "completed"),
        end(claimed[1]!.id, "failed", { errorClass: "bad_request", error: "too long" }),
      ],
      0,
      60_000,
    )
    const got: { event: string; data: any }[] = []
    for (let e = await events.next(); e; e = got.length < 3 ? await events.next() : null) got.push(e)
    const byEvent = Object.fromEntries(got.map((e) => [e.event, e.data]))
    expect(byEvent.runs[0]).toMatchObject({ completed: 3, failed: 3 })
    expect(byEvent.run.counts).toMatchObject({ completed: 3, failed: 2, pending: 0 })
    expect(byEvent.errors.map((e: { key: string; error: string }) => [e.key, e.error])).toEqual([
      ["k6", "too long"],
    ])
    await events.close()
  })

  test("however fast the run commits, a stream sends at most one update per eventMs", async () => {
    const res = await app({ eventMs: 250 }).request(`/api/runs/${runId}/events`)
    const events = sse(res)
    expect((await events.next())?.event).toBe("run")
    // 40 commits over ~1 s, each changing the counts
    const started = Date.now()
    const counting = (async () => {
      const seen: number[] = []
      for (
        let e = await events.next(1500);
        e;
        e = await events.next(Math.max(1, 1500 - (Date.now() - started)))
      )
        if (e.event === "run") seen.push(e.data.counts.pending)
      return seen
    })()
    for (let i = 0; i < 40; i++) {
      await writer.ingest.add(
        runId,
        (await writer.runs.inputs(runId))[0]!,
        { rows: [{ key: `n${i}`, line: 100 + i, data: {} }], problems: [], checkpoint: { offset: 100 + i } },
        false,
      )
      await Bun.sleep(25)
    }
    const seen = await counting
    // every update shows newer counts than the one before, and there are far fewer updates than commits
    expect(seen.length).toBeGreaterThanOrEqual(2)
    expect(seen.length).toBeLessThanOrEqual(7)
    expect([...seen].sort((x, y) => x - y)).toEqual(seen)
    await events.close()
  })

  test("a bad events query is a 400 naming the field", async () => {
    const res = await app().request(`/api/runs/${runId}/events?since=yesterday&runs=2`)
    expect(res.status).toBe(400)
    expect((await json(res)).error).toBe(
      "query.runs: must be 0 or 1; query.since: must be a time in ms since the epoch",
    )
  })

  test("GET /api/events streams the runs list", async () => {
    const events = sse(await app({ eventMs: 50 }).request("/api/events"))
    expect(await events.next()).toMatchObject({ event: "runs", data: [{ id: runId, name: "r", total: 6 }] })
    await events.close()
  })
})
