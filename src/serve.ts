/**
 * `spool serve`: the status page and its JSON API (DESIGN §9), a Hono app over its own read connection to the
 * store. Every figure comes from the ledger's maintained tallies or an index walk, so a request costs the same for a
 * run of ten items as for a run of a million, and a page never holds a read open long enough to stall a writer.
 */
import { Hono, type Context } from "hono"
import { getCookie, setCookie } from "hono/cookie"
import { HTTPException } from "hono/http-exception"
import { streamSSE } from "hono/streaming"
import { randomBytes, timingSafeEqual } from "node:crypto"
import * as v from "valibot"
import * as control from "./core/engine/control.ts"
import * as review from "./core/engine/review.ts"
import { SpoolError } from "./plugins/api/errors.ts"
import { UsageError } from "./core/base/errors.ts"
import * as log from "./core/base/log.ts"
import * as report from "./core/report/report.ts"
import { pipelineOf } from "./core/report/pipeline.ts"
import { joined } from "./core/report/pipeline-export.ts"
import { STATES, type State } from "./core/ledger/states.ts"
import type { Ledger } from "./core/ledger/ledger.ts"
import type { Run } from "./core/ledger/types.ts"
import { render } from "./page.ts"
import { chartOf, itemDetail, jobView, search, SEARCH_SCAN, viewsOf } from "./page/data.ts"
import { cellsOf, placed, rowSteps, stepOf } from "./page/pipeline.ts"
import type { ItemPage, RunDetail, RunRow } from "./page/types.ts"

export interface ServerOptions {
  /** A connection of the server's own (not the one a run in the same process writes through). */
  ledger: Ledger
  home: string
  /** When set, every request must carry it: header, or the cookie a `?token=` visit sets. */
  token?: string | undefined
  version?: string
  /** How often a live events stream looks for changes, in ms (at most this many updates per second: 1000 / it). */
  eventMs?: number
  /** Aborted when the server stops: work it started (a cancel's batches) stops with it. */
  signal?: AbortSignal
  /** How many items one search request reads at most (page/data.ts SEARCH_SCAN). */
  searchScan?: number
}

const COOKIE = "spool_token"
/** The shortest token `start` accepts: a shorter one could be guessed. */
export const MIN_TOKEN = 16

const LIMIT = "must be a whole number from 1 to 1000"
const RunRef = v.pipe(v.string(), v.nonEmpty(), v.maxLength(200))
const StateParam = v.optional(v.picklist(STATES, `must be one of ${STATES.join(", ")}`))
const ItemId = v.pipe(v.string(), v.regex(/^\d{1,15}$/, "must be an item id (a whole number)"))
const ItemsQuery = v.object({
  q: v.optional(v.pipe(v.string(), v.trim(), v.maxLength(200, "must be at most 200 characters"))),
  state: StateParam,
  after: v.optional(ItemId),
  limit: v.optional(
    v.pipe(
      v.string(),
      v.regex(/^\d{1,4}$/, LIMIT),
      v.transform(Number),
      v.minValue(1, LIMIT),
      v.maxValue(1000, LIMIT),
    ),
    "100",
  ),
})
const ResultsQuery = v.object({ state: StateParam })
const EventsQuery = v.object({
  runs: v.optional(v.picklist(["0", "1"], "must be 0 or 1")),
  since: v.optional(
    v.pipe(v.string(), v.regex(/^\d{1,15}$/, "must be a time in ms since the epoch"), v.transform(Number)),
  ),
})
const RetryBody = v.object({
  state: v.picklist(["failed", "needs_review", "rejected"], "must be failed, needs_review or rejected"),
})

/** A review decision from the page (README, "Review"): on one item, by the id the page shows. */
const ReviewBody = v.strictObject({
  id: v.pipe(v.string(), v.minLength(1, "must name an item")),
  decision: v.picklist(["approve", "edit", "reject"], "must be approve, edit or reject"),
  reason: v.optional(v.pipe(v.string(), v.maxLength(2000, "must be at most 2,000 characters"))),
  output: v.optional(v.string()),
})

/** Parses `input` with `schema`, or answers 400 with each problem named by its field. */
function valid<S extends v.GenericSchema>(schema: S, input: unknown, where: string): v.InferOutput<S> {
  const parsed = v.safeParse(schema, input)
  if (parsed.success) return parsed.output
  const problems = parsed.issues.map(
    (i) => `${where}${i.path?.length ? `.${v.getDotPath(i)}` : ""}: ${i.message}`,
  )
  throw new HTTPException(400, { message: problems.join("; ") })
}

/** A run of the store by id or name, or 404. */
async function runOf(db: Ledger, ref: string): Promise<Run> {
  const run = await db.runs.find(valid(RunRef, ref, "run"))
  if (!run) throw new HTTPException(404, { message: `no run "${ref}"` })
  return run
}

/** A run's row of the runs list; a pipeline run's spend is its steps' (`steps`: their rows), its own items cost none. */
export async function runRow(db: Ledger, run: Run, now = Date.now(), steps?: RunRow[]): Promise<RunRow> {
  const s = await report.status(db, run, now, { recentBatches: 0 })
  const row: RunRow = {
    ...(await report.runLine(db, run)),
    rate_per_s: s.rate_per_s,
    eta_s: s.eta_s,
    spend_usd: s.spend.usd,
    skipped: s.counts.skipped,
    parent: run.parent,
    step: run.step,
    pipeline: null,
  }
  if (!run.job.pipeline) return row
  const latest = new Set((await db.runs.steps(run.id)).map((r) => r.id))
  const mine = (steps ?? []).filter((r) => latest.has(r.id))
  const review = (await Promise.all([...latest].map((id) => db.reads.counts(id)))).reduce(
    (n, c) => n + c.needs_review,
    0,
  )
  return {
    ...row,
    spend_usd: mine.reduce<number | null>(
      (sum, r) => (sum === null || r.spend_usd === null ? null : sum + r.spend_usd),
      0,
    ),
    pipeline: { steps: run.job.pipeline.map((p) => p.name), review },
  }
}

/** Every run's row of the runs list, oldest first (a pipeline's steps are drawn under it: views.ts `runs`). */
async function runRows(db: Ledger, now: number): Promise<RunRow[]> {
  const runs = await db.runs.list()
  const steps: RunRow[] = []
  for (const run of runs) if (run.parent !== null) steps.push(await runRow(db, run, now))
  const rows: RunRow[] = []
  for (const run of runs)
    rows.push(run.parent !== null ? steps.find((r) => r.id === run.id)! : await runRow(db, run, now, steps))
  return rows
}

/**
 * A run's status with its chart over the run's life (page/data.ts `chartOf`); a pipeline run's with its steps (the
 * chart of their calls), a step's with its place in its pipeline.
 */
export async function runDetail(db: Ledger, run: Run, now = Date.now()): Promise<RunDetail> {
  const status = await report.status(db, run, now, { recentBatches: 50 })
  const pipeline = await pipelineOf(db, run, now)
  const counted = pipeline ? await db.runs.steps(run.id) : [run]
  return {
    ...status,
    chart: await chartOf(db, run, status.state, now, counted),
    pipeline: pipeline && {
      rows: pipeline.rows,
      steps: pipeline.steps,
      spend_usd: pipeline.spend_usd,
      prompt_cache: pipeline.prompt_cache,
      priming: pipeline.priming,
    },
    step: await stepOf(db, run),
  }
}

/** A page of a run's items, each with its attempts; `next` is the cursor of the next page, or null. */
export async function itemsOf(
  db: Ledger,
  run: Run,
  q: { state?: State | undefined; after?: number; limit: number },
): Promise<ItemPage> {
  const rows = await db.reads.page(run.id, q)
  const line = await report.resultLine(db, run)
  return {
    items: await viewsOf(line, rows, await cellsOf(db, run)),
    next: rows.length === q.limit ? String(rows.at(-1)?.id) : null,
  }
}

/** Lines a download sends per chunk. */
const CHUNK_LINES = 500
/** The page's item browser shows this many items a page. */
const PAGE = 50

/**
 * Lines as a byte stream, pulled a chunk at a time as the client reads: the ledger's read goes no further than the
 * client has taken, and stops (its read let go) when the client goes away.
 */
function chunked(values: AsyncIterable<string>, what: string): ReadableStream<Uint8Array> {
  const lines = values[Symbol.asyncIterator]()
  const encoder = new TextEncoder()
  return new ReadableStream<Uint8Array>(
    {
      async pull(out) {
        let text = ""
        try {
          for (let n = 0; n < CHUNK_LINES; n++) {
            const next = await lines.next()
            if (next.done) {
              if (text) out.enqueue(encoder.encode(text))
              return out.close()
            }
            text += next.value
          }
        } catch (err) {
          // the download ends short, and says so where it can: the log (a line in it would read as a result)
          log.error("results download failed", { run: what, error: String(err) })
          return out.error(err)
        }
        out.enqueue(encoder.encode(text))
      },
      async cancel() {
        await lines.return?.(undefined)
      },
    },
    { highWaterMark: 0 },
  )
}

/** Token comparison in constant time. */
function same(a: string, b: string): boolean {
  const x = Buffer.from(a)
  const y = Buffer.from(b)
  return x.length === y.length && timingSafeEqual(x, y)
}

/** Builds the app: the page at `/`, the API under `/api`. Requests are answered with `app.request()` or `fetch`. */
export function createApp(o: ServerOptions): Hono {
  const db = o.ledger
  const eventMs = o.eventMs ?? 500
  // bumped by every control this server performs: its own writes do not change PRAGMA data_version
  let generation = 0
  const app = new Hono()

  app.use(async (c, next) => {
    c.header("X-Content-Type-Options", "nosniff")
    c.header("Referrer-Policy", "no-referrer")
    c.header("Cache-Control", "no-store")
    // HTTP/1.0 allows a request without one, and Bun then gives it a bare path for a URL; the checks below need it
    const named = c.req.header("host") ?? (URL.canParse(c.req.url) ? new URL(c.req.url).host : undefined)
    if (!named)
      throw new HTTPException(400, {
        message: "the request has no Host header: send one (HTTP/1.1 requires it)",
      })
    if (!o.token) {
      // without a token only this machine may ask, by a loopback name: a page of another site that rebinds its own
      // name to 127.0.0.1 (DNS rebinding) would otherwise count as this server's own origin
      const host = hostOf(named)
      if (!isLoopback(host))
        throw new HTTPException(403, {
          message: `refused: this server answers only to a loopback address (127.0.0.1, localhost), not to "${host}"; serve with --token to be reached by other names`,
        })
      return next()
    }
    const offered = new URL(c.req.url).searchParams.get("token")
    if (offered !== null && c.req.method === "GET" && same(offered, o.token)) {
      // a first visit with ?token=: keep it in a cookie, and take it out of the address bar and history
      setCookie(c, COOKIE, o.token, { httpOnly: true, sameSite: "Strict", path: "/" })
      const url = new URL(c.req.url)
      url.searchParams.delete("token")
      return c.redirect(`${url.pathname}${url.search}`, 303)
    }
    const auth = c.req.header("authorization")
    const given =
      (auth?.startsWith("Bearer ") ? auth.slice(7) : undefined) ??
      c.req.header("x-spool-token") ??
      getCookie(c, COOKIE)
    if (given !== undefined && same(given, o.token)) return next()
    throw new HTTPException(401, {
      message:
        "this spool server needs its token: open the address `spool serve` printed (with ?token=…), or send the header Authorization: Bearer <token>",
    })
  })

  // controls and review decisions refuse other sites' pages: a cross-site form or script post carries a foreign
  // Origin. Every POST is held to it, so that no control added later can be left out
  app.use("/api/*", async (c, next) => {
    if (c.req.method !== "POST") return next()
    const origin = c.req.header("origin")
    const own = new URL(c.req.url).origin
    const site = c.req.header("sec-fetch-site")
    if (
      (origin !== undefined && origin !== own) ||
      (origin === undefined && site && site !== "same-origin" && site !== "none")
    )
      throw new HTTPException(403, {
        message: `refused: a control must come from this server's own page (Origin ${origin ?? site} is not ${own})`,
      })
    return next()
  })

  app.get("/", async (c) => {
    const now = Date.now()
    const runs = await db.runs.list()
    const ref = c.req.query("run")
    // the latest run that is not a pipeline's step (they are made after their pipeline run)
    const selected = ref ? await runOf(db, ref) : (runs.filter((r) => r.parent === null).at(-1) ?? null)
    const nonce = randomBytes(16).toString("base64")
    c.header(
      "Content-Security-Policy",
      `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
    )
    return c.html(
      render({
        runs: await runRows(db, now),
        run: selected ? await runDetail(db, selected, now) : null,
        job: selected ? await jobView(db, selected) : null,
        items: selected ? await itemsOf(db, selected, { limit: PAGE }) : { items: [], next: null },
        recent: selected ? await db.reads.latestErrors(selected.id, 20) : [],
        nonce,
        version: o.version ?? "",
      }),
    )
  })

  app.get("/api/runs", async (c) => c.json({ runs: await runRows(db, Date.now()) }))

  app.get("/api/runs/:id", async (c) => c.json(await runDetail(db, await runOf(db, c.req.param("id")))))

  app.get("/api/runs/:id/job", async (c) => c.json(await jobView(db, await runOf(db, c.req.param("id")))))

  app.get("/api/runs/:id/items", async (c) => {
    const run = await runOf(db, c.req.param("id"))
    const q = valid(ItemsQuery, c.req.query(), "query")
    const after = q.after === undefined ? undefined : Number(q.after)
    if (q.q) {
      const scan = o.searchScan ?? SEARCH_SCAN
      const q2 = { text: q.q, state: q.state, after, limit: q.limit, scan }
      return c.json(await search(db, run, q2, await cellsOf(db, run)))
    }
    return c.json(await itemsOf(db, run, { state: q.state, after: after ?? 0, limit: q.limit }))
  })

  app.get("/api/runs/:id/items/:item", async (c) => {
    const run = await runOf(db, c.req.param("id"))
    const id = Number(valid(ItemId, c.req.param("item"), "item"))
    const item = await itemDetail(db, run, id)
    if (!item) throw new HTTPException(404, { message: `run "${run.name}" has no item ${id}` })
    return c.json({ ...item, ...(await placed(db, run, id)) })
  })

  // a pipeline run's row at every step, side by side (docs/PIPELINES.md): an index look-up per step
  app.get("/api/runs/:id/items/:item/steps", async (c) => {
    const run = await runOf(db, c.req.param("id"))
    const id = Number(valid(ItemId, c.req.param("item"), "item"))
    if (!run.job.pipeline)
      throw new HTTPException(404, {
        message: `run "${run.name}" is not a pipeline: its items have no steps (GET /api/runs/${run.id}/items/${id} shows one)`,
      })
    const row = await rowSteps(db, run, id)
    if (!row) throw new HTTPException(404, { message: `run "${run.name}" has no item ${id}` })
    return c.json(row)
  })

  // streamed a chunk of lines at a time as the ledger gives them: a million results never sit in memory at once
  app.get("/api/runs/:id/results", async (c) => {
    const run = await runOf(db, c.req.param("id"))
    const q = valid(ResultsQuery, c.req.query(), "query")
    c.header("Content-Type", "application/x-ndjson; charset=utf-8")
    // a job's name is letters, digits, dot, dash and underscore; a run made otherwise must not break the header
    const file = `${run.name.replace(/[^A-Za-z0-9._-]/g, "_")}-${run.id}.jsonl`
    c.header("Content-Disposition", `attachment; filename="${file}"`)
    // a pipeline run's rows, each with every step's state and answer, as `spool results` writes them
    if (run.job.pipeline) {
      if (q.state !== undefined)
        throw new HTTPException(400, {
          message: "a pipeline's rows have no state of their own: ask a step's run",
        })
      const lines = (await joined(db, run, { format: "jsonl", join: false })).jsonl()
      return c.body(chunked(lines, run.name))
    }
    return c.body(chunked(report.results(db, run, q.state), run.name))
  })

  app.post("/api/runs/:id/pause", (c) => act(c, (run) => control.pause(db, String(run.id))))
  app.post("/api/runs/:id/resume", (c) => act(c, (run) => control.resume(db, String(run.id))))
  app.post("/api/runs/:id/retry", async (c) => {
    const body = valid(RetryBody, await c.req.json().catch(() => ({})), "body")
    return act(c, (run) => control.retry(db, String(run.id), body.state))
  })
  app.post("/api/runs/:id/review", async (c) => {
    const body = valid(ReviewBody, await c.req.json().catch(() => ({})), "body")
    // an empty reason is no reason
    const asked = { ...body, reason: body.reason?.trim() || undefined }
    return act(c, async (run) => {
      const decided = await review.decide(db, String(run.id), [asked], "page")
      // a pipeline step's rows let through go on at the pipeline's next run: the message says with what
      const goOn = decided.run.parent !== null ? decided.run.resume : undefined
      return review.told(decided.run.name, decided.outcomes, decided.left, goOn)
    })
  })
  app.post("/api/runs/:id/cancel", (c) =>
    act(c, async (run) => {
      // refused now if there is nothing to cancel, and marked cancelling before the answer; the cancelling itself
      // (by the process driving the run, or here for a batch run nobody drives: its batches cancelled at the
      // provider) can take a while, so it is not awaited
      const marked = await control.mark(db, String(run.id))
      const said: string[] = []
      control
        .carryOut(db, marked, o.home, (line) => said.push(line.trim()), o.signal)
        .then(
          () => log.info("cancelled from the status page", { run: run.name, said: said.join(" ") }),
          (err: unknown) =>
            log.error("cancel from the status page failed", { run: run.name, error: String(err) }),
        )
      return `run "${run.name}" is being cancelled`
    }),
  )

  async function act(c: Context, f: (run: Run) => Promise<string>) {
    const run = await runOf(db, c.req.param("id") ?? "")
    const message = (await f(run)).trim()
    generation++
    return c.json({ ok: true, message, state: (await db.runs.get(run.id))?.state ?? null })
  }

  app.get("/api/events", (c) => events(c, null, true, valid(EventsQuery, c.req.query(), "query")))
  app.get("/api/runs/:id/events", async (c) => {
    const q = valid(EventsQuery, c.req.query(), "query")
    return events(c, await runOf(db, c.req.param("id")), q.runs === "1", q)
  })

  /**
   * Server-sent events: `runs` (the list), `run` (one run's detail) and `errors` (its failed attempts since the
   * stream opened), each sent only when it changed, looked at every `eventMs` and only when the store changed (or
   * every few seconds, for rates and ETA): at most 1000 / eventMs updates per second however fast the run goes.
   */
  function events(c: Context, run: Run | null, withRuns: boolean, q: v.InferOutput<typeof EventsQuery>) {
    return streamSSE(c, async (stream) => {
      let version = -1
      let seen = -1
      let lastRuns = ""
      let lastRun = ""
      let refreshed = 0
      let pinged = Date.now()
      let errorsFrom = q.since ?? Date.now()
      const sent = new Set<number>()
      while (!stream.aborted) {
        const now = Date.now()
        const dv = await db.reads.version()
        if (dv !== version || generation !== seen || now - refreshed > 5_000) {
          version = dv
          seen = generation
          refreshed = now
          if (withRuns) {
            const json = JSON.stringify(await runRows(db, now))
            if (json !== lastRuns) await stream.writeSSE({ event: "runs", data: (lastRuns = json) })
          }
          const current = run && (await db.runs.get(run.id))
          if (current) {
            const json = JSON.stringify(await runDetail(db, current, now))
            if (json !== lastRun) await stream.writeSSE({ event: "run", data: (lastRun = json) })
            const fresh = (await db.reads.errorsSince(current.id, errorsFrom)).filter((e) => !sent.has(e.id))
            if (fresh.length) {
              // attempts that end in the same millisecond are told apart by id
              errorsFrom = fresh.at(-1)?.ended_at ?? errorsFrom
              sent.clear()
              for (const e of fresh) if (e.ended_at === errorsFrom) sent.add(e.id)
              await stream.writeSSE({ event: "errors", data: JSON.stringify(fresh) })
            }
          }
          pinged = now
        } else if (now - pinged > 15_000) {
          await stream.write(": keep-alive\n\n")
          pinged = now
        }
        await stream.sleep(eventMs)
      }
    })
  }

  app.notFound((c) => c.json({ error: `no such page: ${c.req.method} ${c.req.path}` }, 404))

  // must not throw itself (it did, on a request without Host): what it cannot answer, Bun.serve's `error` does
  app.onError((err, c) => {
    if (err instanceof HTTPException) return c.json({ error: err.message }, err.status)
    if (err instanceof UsageError) return c.json({ error: err.message, hint: err.hint ?? null }, 409)
    if (err instanceof SpoolError) return c.json({ error: err.message, hint: err.hint ?? null }, 500)
    return internal(err, c.req.path)
  })

  return app
}

/** The answer to an error nobody expected: logged, and told as JSON like every other error, without details. */
function internal(err: unknown, path: string): Response {
  log.error("status page request failed", { path, error: String(err) })
  return Response.json({ error: "internal error (see the log)" }, { status: 500 })
}

/** The name in a Host header, without its port: `127.0.0.1:4777` → `127.0.0.1`, `[::1]:80` → `::1`. */
function hostOf(header: string): string {
  const bracketed = /^\[([^\]]+)\]/.exec(header)
  if (bracketed) return bracketed[1] as string
  return header.replace(/:\d+$/, "").toLowerCase()
}

/** Whether a host name or address stays on this machine. */
export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || host === "[::1]" || /^127(\.\d{1,3}){3}$/.test(host)
}

/** Starts the server; refuses a non-loopback address without a token before anything listens. */
export function start(o: ServerOptions & { host: string; port: number }): { url: string; stop(): void } {
  if (!isLoopback(o.host) && !o.token)
    throw new UsageError(
      `refusing to serve on ${o.host} without a token: anyone who can reach it could read every run and cancel it`,
      "Pass --token <secret> (or set SPOOL_TOKEN), or keep the default --host 127.0.0.1.",
    )
  if (o.token !== undefined && o.token.length < MIN_TOKEN)
    throw new UsageError(
      `refusing a token of ${o.token.length} character${o.token.length === 1 ? "" : "s"}: it must have at least ${MIN_TOKEN}, or it could be guessed`,
      "Pass a longer --token (or SPOOL_TOKEN), such as the output of `openssl rand -hex 16`.",
    )
  const stopping = new AbortController()
  const app = createApp({ ...o, signal: stopping.signal })
  let server: ReturnType<typeof Bun.serve>
  try {
    server = Bun.serve({
      hostname: o.host,
      port: o.port,
      fetch: app.fetch,
      // SSE streams stay open: no idle timeout (they send a keep-alive every 15 s)
      idleTimeout: 0,
      // never Bun's development error page (its HTML carries the working directory and the bundled source)
      development: false,
      // what gets past Hono's onError is answered as every other error is: JSON
      error: (err) => internal(err, "?"),
    })
  } catch (cause) {
    const busy = String(cause).includes("EADDRINUSE") || String(cause).includes("in use")
    throw new UsageError(
      busy
        ? `port ${o.port} on ${o.host} is in use`
        : `cannot serve on ${o.host}:${o.port}: ${String(cause)}`,
      busy ? "Pass --port N (--port 0 picks a free one)." : "Check --host and --port.",
    )
  }
  const host = o.host.includes(":") && !o.host.startsWith("[") ? `[${o.host}]` : o.host
  return {
    url: `http://${host}:${server.port}/`,
    stop: () => {
      stopping.abort()
      void server.stop(true)
    },
  }
}
