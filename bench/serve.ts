/**
 * The status page and its API against a large run: `bun bench/serve.ts SIZE...` (e.g. `10000 1000000`). For each
 * size, a store holding one run of that many items is built in a process of its own (`bun bench/serve.ts build N
 * HOME`), then measured here:
 *
 * - over HTTP on 127.0.0.1, against the compiled `dist/spool serve --home H --port 0` (its own process): the run
 *   detail, the runs list, the page, a page of failed items and a page deep in the run, each timed from `fetch` to
 *   the last byte of the body;
 * - in this process, what one update of the live events stream computes (`runDetail` and `errorsSince`, from
 *   src/serve.ts and the store);
 * - through the server, a live events stream while this process commits to the store: the server's CPU time per
 *   update it sent, from /proc;
 * - the wall time of `dist/spool status RUN --json` (startup included).
 *
 * Every store lives in a temporary directory removed at the end. Prints JSON (its last line).
 */
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { Ledger } from "../src/core/ledger/ledger.ts"
import { DB_FILE } from "../src/core/ledger/sqlite/faults.ts"
import * as sqlite from "../src/core/ledger/sqlite/sqlite.ts"
import type { Claimed, Outcome } from "../src/core/ledger/types.ts"

const root = join(import.meta.dir, "..")
const bin = join(root, "dist", "spool")

/** The run's activity is laid over this span, ending when the build starts: an hour, whatever its size. */
const SPAN_MS = 3_600_000
/** Items claimed and settled per transaction while building. */
const STEP = 2000
const OWNER = "bench-worker"
const LEASE_MS = 3_600_000

// ---------------------------------------------------------------- building a store

/**
 * One run of `n` items as a live realtime run leaves it: 88% of the items settled over the last hour (of those,
 * 95% completed, 3% failed in three error classes, 2% left for review; one in ten completed or failed only on a
 * second attempt after a rate limit or a server error), a few provider batches (one still in progress), 200 items
 * waiting to retry, 64 running, the rest pending. Everything goes through the store's own writes (ingest, step,
 * the batch calls), so tallies, progress buckets, attempts and error tallies are what a real run would keep.
 */
async function build(n: number, home: string): Promise<Record<string, number>> {
  const jobs = await import("../src/core/job/job.ts")
  const t0 = performance.now()
  // the SQLite driver itself: the build backdates rows by SQL, which no Ledger method does
  const db = sqlite.open(home, { synchronous: "NORMAL" })
  const input = join(home, "tickets.jsonl")
  const { job } = jobs.load(undefined, {
    name: "tickets",
    input: [input],
    prompt: "Label this support ticket as billing, bug or other.\n{{subject}}\n{{body}}",
    provider: "openai",
    model: "gpt-4.1-mini",
    "max-tokens": "5",
  })
  const { run } = await db.runs.create({
    name: job.name,
    job,
    fingerprint: jobs.fingerprint(job),
    resume: "spool run job.toml",
    inputs: [{ path: input, format: "jsonl" }],
  })
  const inputRow = (await db.runs.inputs(run.id))[0]!

  // ~200-byte rows, 10,000 per source batch
  const body =
    "The invoice for last month shows the wrong VAT rate and I was charged twice; please refund the"
  let offset = 0
  for (let start = 0; start < n; start += 10_000) {
    const rows = []
    for (let i = start; i < Math.min(n, start + 10_000); i++) {
      const raw = JSON.stringify({
        id: `t-${i}`,
        subject: `Ticket ${i} about billing`,
        body: `${body} ${i}.`,
      })
      offset += raw.length + 1
      rows.push({ key: `t-${i}`, line: i + 1, id: `t-${i}`, data: {}, raw })
    }
    await db.ingest.add(run.id, inputRow, { rows, problems: [], checkpoint: { offset } }, start + 10_000 >= n)
  }
  await db.ingest.done(run.id)
  const ingestMs = performance.now() - t0

  // the realtime part: claim and settle in steps of STEP, each attempt ending at its place in the hour
  const end = Date.now()
  const begin = end - SPAN_MS
  const settled = Math.floor(n * 0.88)
  const expected = settled * 1.1
  let seq = 0
  const at = () => Math.min(end, begin + Math.round((seq++ / expected) * SPAN_MS))
  const outcome = (c: Claimed): Outcome => {
    const h = c.id % 100
    const endedAt = at()
    const base = { item: c.id, attempt: c.attempt, latencyMs: 300 + (c.id % 700), endedAt }
    if (c.attempt === 1 && h >= 5 && h < 15) {
      const limited = h < 12
      return {
        ...base,
        to: "retry_wait",
        label: "retry",
        errorClass: limited ? "rate_limit" : "server",
        error: limited ? "429 Rate limit reached for requests per min (RPM)" : "500 The server had an error",
        status: limited ? 429 : 500,
        nextAt: endedAt,
      }
    }
    if (h < 3) {
      const [errorClass, error, status] = (
        [
          ["bad_request", "400 Invalid 'messages[0].content': string too long", 400],
          ["server", "500 The server had an error while processing your request", 500],
          ["timeout", "no answer within 60 s", undefined],
        ] as const
      )[h]!
      return { ...base, to: "failed", label: "failed", errorClass, error, ...(status ? { status } : {}) }
    }
    const usage = { inputTokens: 60 + (c.id % 40), outputTokens: 3, cachedTokens: c.id % 4 === 0 ? 32 : 0 }
    if (h < 5)
      return {
        ...base,
        ...usage,
        to: "needs_review",
        label: "needs_review",
        errorClass: "output",
        error: 'not one of the labels: "invoice"',
        output: "invoice",
      }
    return { ...base, ...usage, to: "completed", label: "ok", output: ["billing", "bug", "other"][c.id % 3]! }
  }
  const t1 = performance.now()
  let claimed = await db.claims.step(run.id, OWNER, [], Math.min(STEP, settled), LEASE_MS)
  let fresh = claimed.length
  let steps = 1
  while (claimed.length > 0) {
    const outcomes = claimed.map(outcome)
    const retries = outcomes.filter((o) => o.to === "retry_wait").length
    // due retries are claimed first; new items only until `settled` have been taken
    claimed = await db.claims.step(
      run.id,
      OWNER,
      outcomes,
      Math.min(STEP, retries + settled - fresh),
      LEASE_MS,
    )
    fresh += claimed.filter((c) => c.attempt === 1).length
    steps++
  }
  const stepMs = performance.now() - t1

  // a few provider batches of 100 items (as many as a batch-mode run of this size has, plus one in progress)
  const t2 = performance.now()
  const batches = Math.ceil(n / 50_000) + 1
  for (let k = 0; k < batches; k++) {
    const items = await db.batches.packable(run.id, 100)
    const lines = items.map((it, line) => ({ id: it.id, line, offset: line * 300, bytes: 300 }))
    const tag = `spool-${run.id}-${k}`
    const batch = (await db.batches.intend(
      run.id,
      { tag, requests: join(home, "batches", `${tag}.jsonl`), bytes: 30_000, tokens: 8_000 },
      lines,
      [],
      OWNER,
    ))!
    const remote = { id: `batch_${k}`, status: "in_progress", phase: "in_progress" as const }
    await db.batches.submitted(batch.id, remote)
    if (k === batches - 1) break
    await db.batches.observe(
      batch.id,
      {
        ...remote,
        status: "completed",
        phase: "ended",
        outcome: "completed",
        counts: { total: lines.length, done: lines.length, failed: 0 },
        files: { output: `file-${k}` },
      },
      null,
    )
    await db.batches.downloaded(batch.id, { output: join(home, "batches", `${tag}.out.jsonl`) })
    const endedAt = Date.now()
    await db.batches.apply(
      batch.id,
      items.map((it) => ({
        item: it.id,
        to: "completed" as const,
        label: "ok",
        output: "billing",
        inputTokens: 70,
        outputTokens: 3,
        endedAt,
      })),
      OWNER,
    )
    await db.batches.finish(batch.id, lines.length)
  }
  // 200 items waiting to retry (a rate limit, due in ten minutes), then 64 in flight
  const waiting = await db.claims.step(run.id, OWNER, [], 200, LEASE_MS)
  const now = Date.now()
  const running = await db.claims.step(
    run.id,
    OWNER,
    waiting.map((c) => ({
      item: c.id,
      attempt: c.attempt,
      to: "retry_wait" as const,
      label: "retry",
      errorClass: "rate_limit" as const,
      error: "429 Rate limit reached for requests per min (RPM)",
      status: 429,
      nextAt: now + 600_000,
      latencyMs: 200,
      endedAt: now,
    })),
    64,
    LEASE_MS,
  )
  const restMs = performance.now() - t2

  // the attempts were opened when the build claimed them: start them where the hour puts them, and the run too
  const t3 = performance.now()
  db.db.run(
    "UPDATE attempts SET started_at = ended_at - coalesce(latency_ms, 0) WHERE run_id = ? AND ended_at < ?",
    [run.id, end + 1],
  )
  db.db.run("UPDATE runs SET created_at = ? WHERE id = ?", [begin - 5_000, run.id])
  db.db.run("PRAGMA wal_checkpoint(TRUNCATE)")
  const fixMs = performance.now() - t3

  const counts = await db.reads.counts(run.id)
  const attempts = db.db.query<{ n: number }, []>("SELECT count(*) AS n FROM attempts").get()!.n
  const errors = db.db
    .query<{ n: number }, []>("SELECT count(*) AS n FROM attempts WHERE error_class IS NOT NULL")
    .get()!.n
  const buckets = db.db.query<{ n: number }, []>("SELECT count(*) AS n FROM progress").get()!.n
  // a cursor 150 failed items from the end, so that page is full (100 items) at every size
  const deepFailedAfter = db.db
    .query<{ id: number }, [number]>(
      "SELECT id FROM items WHERE run_id = ? AND state = 'failed' ORDER BY id DESC LIMIT 1 OFFSET 150",
    )
    .get(run.id)!.id
  await db.close()
  if (running.length !== 64) throw new Error(`expected 64 running items, got ${running.length}`)
  const total = Object.values(counts).reduce((a, b) => a + b, 0)
  if (total !== n) throw new Error(`expected ${n} items, the tallies say ${total}`)
  return {
    items: n,
    run: run.id,
    ms: performance.now() - t0,
    ingestMs,
    stepMs,
    steps,
    restMs,
    fixMs,
    ...Object.fromEntries(Object.entries(counts).map(([k, v]) => [`n_${k}`, v])),
    attempts,
    errors,
    buckets,
    deepFailedAfter,
    batches,
    dbMB: statSync(join(home, DB_FILE)).size / 1e6,
    maxRssMB: process.resourceUsage().maxRSS / 1024,
  }
}

if (process.argv[2] === "build") {
  const [, , , n, home] = process.argv as [string, string, string, string, string]
  console.log(JSON.stringify(await build(Number(n), home)))
  process.exit(0)
}

// ---------------------------------------------------------------- measuring

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.ceil((p / 100) * xs.length) - 1]!

interface Served {
  url: string
  pid: number
  stop(): Promise<void>
}

/** `dist/spool serve --home H --port 0`, once it says where it listens. */
async function serve(home: string): Promise<Served> {
  const env: Record<string, string | undefined> = { ...process.env, SPOOL_QUIET: "1" }
  delete env.SPOOL_TOKEN
  const proc = Bun.spawn([bin, "serve", "--home", home, "--port", "0"], {
    env,
    stdout: "ignore",
    stderr: "pipe",
  })
  const stop = async () => {
    proc.kill("SIGTERM")
    const timer = setTimeout(() => proc.kill("SIGKILL"), 5_000)
    await proc.exited
    clearTimeout(timer)
  }
  try {
    const reader = proc.stderr.getReader()
    let text = ""
    const deadline = Date.now() + 30_000
    for (;;) {
      const m = /serving (http:\/\/127\.0\.0\.1:\d+\/)/.exec(text)
      if (m) {
        // keep draining its stderr so it never blocks on a full pipe
        void (async () => {
          while (!(await reader.read()).done);
        })().catch(() => {})
        return { url: m[1]!, pid: proc.pid, stop }
      }
      const { value, done } = await reader.read()
      if (done || Date.now() > deadline)
        throw new Error(`dist/spool serve did not start: ${text.slice(-500)}`)
      text += new TextDecoder().decode(value)
    }
  } catch (err) {
    await stop()
    throw err
  }
}

interface Timed {
  median: number
  p95: number
  bytes: number
  n: number
}

/** Times GET `path` (to the last byte of the body) `n` times after `warm` untimed requests. */
async function timeGet(base: string, path: string, n = 200, warm = 10): Promise<Timed> {
  const ms: number[] = []
  let bytes = 0
  for (let i = 0; i < warm + n; i++) {
    const t = performance.now()
    const res = await fetch(new URL(path, base))
    const body = await res.arrayBuffer()
    const took = performance.now() - t
    if (!res.ok) throw new Error(`GET ${path}: ${res.status} ${new TextDecoder().decode(body).slice(0, 300)}`)
    bytes = body.byteLength
    if (i >= warm) ms.push(took)
  }
  return { median: median(ms), p95: pct(ms, 95), bytes, n }
}

/** The server's CPU time so far (user + system), in ms, from /proc. */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name and state; in clock ticks of
  // 10 ms (USER_HZ is 100 on Linux)
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100
}

/**
 * A live events stream through the server while this process commits a step (8 items settled, one of them failed,
 * and 8 claimed) every 100 ms for `seconds`: how many `run` updates it sent, the time between them, and its CPU time per update.
 */
async function liveEvents(served: Served, db: Ledger, runId: number, seconds: number) {
  const abort = new AbortController()
  const res = await fetch(new URL(`api/runs/${runId}/events`, served.url), { signal: abort.signal })
  if (!res.ok || !res.body) throw new Error(`events: ${res.status}`)
  const reader = res.body.getReader()
  const decoder = new TextDecoder()
  const arrivals: number[] = []
  let runBytes = 0
  let buffer = ""
  let reading = true
  const read = (async () => {
    try {
      while (reading) {
        const { value, done } = await reader.read()
        if (done) break
        buffer += decoder.decode(value, { stream: true })
        let cut: number
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, cut)
          buffer = buffer.slice(cut + 2)
          if (event.startsWith("event: run\n")) {
            arrivals.push(performance.now())
            runBytes = event.length
          }
        }
      }
    } catch {
      // aborted
    }
  })()
  // let the first (full) update through, then count from a clean start
  while (arrivals.length < 1) await Bun.sleep(20)
  await Bun.sleep(600)
  const before = { cpu: cpuMs(served.pid), events: arrivals.length, t: performance.now() }
  let claimed = await db.claims.step(runId, "bench-live", [], 8, LEASE_MS)
  const stopAt = performance.now() + seconds * 1000
  while (performance.now() < stopAt) {
    await Bun.sleep(100)
    const endedAt = Date.now()
    claimed = await db.claims.step(
      runId,
      "bench-live",
      claimed.map((c, i) =>
        i === 0
          ? {
              item: c.id,
              attempt: c.attempt,
              to: "failed" as const,
              label: "failed",
              errorClass: "bad_request" as const,
              error: "400 Invalid request",
              status: 400,
              latencyMs: 90,
              endedAt,
            }
          : {
              item: c.id,
              attempt: c.attempt,
              to: "completed" as const,
              label: "ok",
              output: "billing",
              inputTokens: 70,
              outputTokens: 3,
              latencyMs: 90,
              endedAt,
            },
      ),
      8,
      LEASE_MS,
    )
  }
  await Bun.sleep(700)
  const after = { cpu: cpuMs(served.pid), events: arrivals.length }
  reading = false
  abort.abort()
  await read
  const events = after.events - before.events
  const gaps = arrivals.slice(before.events).map((t, i, a) => (i === 0 ? t - before.t : t - a[i - 1]!))
  return {
    events,
    gapMs: median(gaps.slice(1)),
    cpuPerUpdateMs: events ? (after.cpu - before.cpu) / events : NaN,
    runEventBytes: runBytes,
  }
}

async function measure(n: number, dir: string) {
  const home = join(dir, `store-${n}`)
  const built = Bun.spawnSync(["bun", import.meta.path, "build", String(n), home], { stderr: "inherit" })
  if (built.exitCode !== 0) throw new Error(`building the ${n}-item store failed`)
  const b = JSON.parse(built.stdout.toString().trim().split("\n").at(-1)!) as Record<string, number>
  console.error(`serve: built ${n.toLocaleString("en-US")} items in ${(b.ms! / 1000).toFixed(1)} s`)
  const runId = b.run!

  // HTTP, against the compiled binary
  const served = await serve(home)
  const http: Record<string, Timed> = {}
  try {
    const last = n // the items' ids are 1…n, in ingest order
    const paths = {
      detail: `api/runs/${runId}`,
      runs: "api/runs",
      page: "",
      first: `api/runs/${runId}/items?limit=100`,
      failed: `api/runs/${runId}/items?state=failed&limit=100`,
      deep: `api/runs/${runId}/items?after=${last - 150}&limit=100`,
      deepFailed: `api/runs/${runId}/items?state=failed&after=${b.deepFailedAfter}&limit=100`,
    }
    for (const [name, path] of Object.entries(paths)) http[name] = await timeGet(served.url, path)
  } finally {
    await served.stop()
  }

  // one events-stream update, in this process: what the server computes each time the store changed
  const { runDetail } = await import("../src/serve.ts")
  const db = sqlite.open(home)
  const run = (await db.runs.get(runId))!
  const lastError = db.db
    .query<{ at: number }, [number]>(
      "SELECT max(ended_at) AS at FROM attempts WHERE run_id = ? AND error_class IS NOT NULL",
    )
    .get(runId)!.at
  const update = async () => {
    const detail = await runDetail(db, run, Date.now())
    const errors = await db.reads.errorsSince(run.id, lastError - 60_000)
    return JSON.stringify(detail).length + errors.length
  }
  for (let i = 0; i < 50; i++) await update()
  const updateMs: number[] = []
  for (let i = 0; i < 500; i++) {
    const t = performance.now()
    await update()
    updateMs.push(performance.now() - t)
  }
  const errorRows = (await db.reads.errorsSince(run.id, lastError - 60_000)).length
  const chartPoints = (await runDetail(db, run)).chart.points.length

  // `spool status --json`, a process each time
  const status: number[] = []
  for (let i = 0; i < 11; i++) {
    const t = performance.now()
    const out = Bun.spawnSync([bin, "status", String(runId), "--json", "--home", home], { stderr: "pipe" })
    if (out.exitCode !== 0) throw new Error(`spool status failed: ${out.stderr.toString()}`)
    if (i > 0) status.push(performance.now() - t)
  }

  // a live stream through the server while this process commits (last: it changes the store)
  const live = await serve(home)
  let events: Awaited<ReturnType<typeof liveEvents>>
  try {
    events = await liveEvents(live, db, runId, 8)
  } finally {
    await live.stop()
  }
  await db.close()

  return {
    build: b,
    http,
    update: { median: median(updateMs), p95: pct(updateMs, 95), errorRows, chartPoints },
    status: { median: median(status), min: Math.min(...status) },
    events,
  }
}

const sizes = process.argv.slice(2).map(Number)
if (!sizes.length || sizes.some((s) => !Number.isInteger(s) || s < 1000))
  throw new Error("usage: bun bench/serve.ts SIZE... (each at least 1000)")
const dir = mkdtempSync(join(tmpdir(), "spool-bench-serve-"))
try {
  const bySize: Record<string, Awaited<ReturnType<typeof measure>>> = {}
  for (const n of sizes) bySize[n] = await measure(n, dir)
  const version: number[] = []
  for (let i = 0; i < 11; i++) {
    const t = performance.now()
    Bun.spawnSync([bin, "--version"])
    if (i > 0) version.push(performance.now() - t)
  }
  console.log(JSON.stringify({ sizes, bySize, versionMs: median(version) }))
} finally {
  rmSync(dir, { recursive: true, force: true })
}
