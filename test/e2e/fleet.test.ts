/**
 * A fleet on one PostgreSQL run (issue 15): several dist/spool processes, each standing for a machine of its own (its
 * own working directory, `--home` and SPOOL_HOST, so a pid is never looked up across "hosts" and a killed worker's
 * items come back only when its lease lapses, SPOOL_LEASE_S=2), all running the same absolute job path against the
 * fake OpenAI server. Workers are SIGKILLed mid-run and replaced; the batch lease's holder is killed; a machine cannot
 * read the inputs; the spend cap and the job's rpm hold across workers; the server itself stops for a while. Each
 * test reads the ledger back (results, status, the schema's tables) and the fake's counters, and checks them exactly.
 */
import { describe, expect, test } from "bun:test"
import { SQL } from "bun"
import { mkdirSync, rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { startFake, type Fake } from "../lib/fake-openai.ts"
import { pgSchema, pgServer, privateServer, SKIP_PG, SKIP_PG_PRIVATE } from "../lib/pg.ts"
import { prng, spool, start, until, type Ran } from "../lib/spool.ts"
import { tmpdir } from "../lib/tmp.ts"

const KEY = "sk-test-fleet-0123456789"

/** Items are `id-1` … `id-N`, with a zero-padded `n` so that every prompt has the same length (and cost). */
const input = (n: number) =>
  Array.from({ length: n }, (_, i) =>
    JSON.stringify({ id: `id-${i + 1}`, n: String(i + 1).padStart(4, "0") }),
  ).join("\n") + "\n"
const ids = (n: number) => Array.from({ length: n }, (_, i) => `id-${i + 1}`)
/** The text the fake answers and keys `paid` by, for item i (1-based). */
const prompt = (i: number) => `Item ${String(i).padStart(4, "0")}`

function job(url: string, tables: string, mode = ""): string {
  return `name = "fleet"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "openai"
model = "gpt-4.1-mini"
base_url = "${url}"
${mode}
[request]
prompt = "Item {{n}}"
max_tokens = 8
${tables}`
}

/** One "machine": a dist/spool run process with its own cwd, home and host name; what it printed once it ended. */
interface Worker {
  host: string
  dir: string
  proc: ReturnType<typeof start>
  ended: Promise<Ran & { signal: NodeJS.Signals | number | null }>
}

function launch(
  host: string,
  dir: string,
  jobPath: string,
  store: string,
  env: Record<string, string> = {},
): Worker {
  mkdirSync(dir, { recursive: true })
  const proc = start(["run", jobPath, "--store", store, "--home", join(dir, "home")], {
    cwd: dir,
    env: { OPENAI_API_KEY: KEY, SPOOL_HOST: host, SPOOL_LEASE_S: "2", ...env },
  })
  const ended = Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]).then(([stdout, stderr, code]) => ({ stdout, stderr, code, signal: proc.signalCode }))
  return { host, dir, proc, ended }
}

const running = (w: Worker) => w.proc.exitCode === null && w.proc.signalCode === null

/** Queries on a test's schema: `${S}` in the text is the schema, quoted. */
async function ledger(schema: string, server?: string) {
  const sql = new SQL(server ?? (await pgServer()), { max: 1 })
  return {
    q: <T>(text: string): Promise<T[]> =>
      sql.unsafe(text.replaceAll("${S}", `"${schema}"`)).then((rows: T[]) => [...rows]),
    async [Symbol.asyncDispose]() {
      await sql.close()
    },
  }
}

interface Line {
  id: string
  state: string
  output: unknown
  attempts: number
  usage: {
    input_tokens: number
    output_tokens: number
    cached_input_tokens: number
    cache_write_tokens: number
  }
  cost_usd: number | null
}

async function results(store: string, cwd: string): Promise<Line[]> {
  const out = await spool(["results", "--store", store], { cwd, env: { OPENAI_API_KEY: KEY } })
  expect(out.code).toBe(0)
  return out.stdout
    .trim()
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as Line)
}

interface Status {
  state: string
  reason: string | null
  workers: number
  total: number
  attempts: number
  counts: Record<string, number>
  spend: { usd: number | null }
  batches?: unknown
}

async function status(store: string, cwd: string): Promise<Status> {
  const out = await spool(["status", "--json", "--store", store], { cwd, env: { OPENAI_API_KEY: KEY } })
  expect(out.stderr).toBe("")
  expect(out.code).toBe(0)
  return JSON.parse(out.stdout) as Status
}

/** Every id exactly once, in order, each completed with the fake's answer to its prompt. */
function expectAllCompleted(lines: Line[], n: number): void {
  expect(lines.map((l) => l.id)).toEqual(ids(n))
  const wrong = lines.filter((l, i) => l.state !== "completed" || l.output !== `echo: ${prompt(i + 1)}`)
  expect(wrong).toEqual([])
}

/** The status's counts by state, as the results lines count them (states with none left out). */
function countsOf(lines: Line[]): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const l of lines) counts[l.state] = (counts[l.state] ?? 0) + 1
  return counts
}
const nonzero = (counts: Record<string, number>) =>
  Object.fromEntries(Object.entries(counts).filter(([, v]) => v > 0))

const paidOf = (fake: Fake, n: number) =>
  Array.from({ length: n }, (_, i) => fake.paid.get(prompt(i + 1)) ?? 0)

describe.skipIf(SKIP_PG)("a fleet of workers on one PostgreSQL run", () => {
  test("three workers with faults, SIGKILLed one at a time and replaced: every id once, paid again at most for the calls in flight at the kills", async () => {
    const N = 400
    const CONCURRENCY = 8
    await using tmp = await tmpdir()
    await using pg = await pgSchema()
    await using fake = await startFake({
      apiKey: KEY,
      latencyMs: 250,
      faults: { rate: 0.08, kinds: ["500", "429"], seed: 15, retryAfter: "1" },
    })
    const jobPath = tmp.join("job", "job.toml")
    mkdirSync(tmp.join("job"))
    writeFileSync(tmp.join("job", "in.jsonl"), input(N))
    writeFileSync(
      jobPath,
      job(
        fake.url,
        `[limits]\nconcurrency = ${CONCURRENCY}\nmax_attempts = 20\nretry_base_s = 0.1\nretry_cap_s = 1\n`,
      ),
    )
    let hosts = 0
    const machine = (host: string) => tmp.join(`m-${host}`)
    const spawn = (host: string) => launch(host, machine(host), jobPath, pg.url)
    const workers: Worker[] = []
    for (let i = 0; i < 3; i++) workers.push(spawn(`host-${++hosts}`))
    const random = prng(15)
    const kills: { host: string; pid: number; paid: number }[] = []
    // a kill at each of these shares of the items paid, a second apart at least; the replacement is the same
    // machine started again, or a new one
    for (const share of [0.1, 0.25, 0.4, 0.55, 0.7]) {
      await until(
        () => fake.paid.size >= share * N || workers.every((w) => !running(w)),
        40_000,
        `${share} paid`,
      )
      const live = workers.filter(running)
      if (live.length === 0 || fake.paid.size >= N) break
      const victim = live[Math.floor(random() * live.length)]!
      victim.proc.kill("SIGKILL")
      await victim.ended
      kills.push({ host: victim.host, pid: victim.proc.pid, paid: fake.paid.size })
      workers.push(spawn(random() < 0.5 ? victim.host : `host-${++hosts}`))
      await Bun.sleep(1000)
    }
    const ended = await Promise.all(workers.map((w) => w.ended))
    expect(kills.length).toBeGreaterThanOrEqual(4)
    // the killed ones were SIGKILLed; every other worker saw the run to its end
    const survivors = ended.filter((e) => e.signal !== "SIGKILL")
    expect(ended.filter((e) => e.signal === "SIGKILL").length).toBe(kills.length)
    expect(survivors.map((e) => e.code)).toEqual(survivors.map(() => 0))
    for (const e of survivors) expect(e.stderr).toContain(`run "fleet": ${N} completed, 0 failed of ${N}`)

    const lines = await results(pg.url, tmp.path)
    expectAllCompleted(lines, N)
    // every item paid at least once; paid again only for a call a killed worker had under way: an item is paid
    // again at most as often as it has attempts `lost` (recovered from a dead owner), and those are the killed
    // workers' alone
    await using db = await ledger(pg.schema)
    const lost = await db.q<{ key: string; owner: string }>(
      "SELECT i.key, a.owner FROM ${S}.attempts a JOIN ${S}.items i ON i.id = a.item_id WHERE a.outcome = 'lost'",
    )
    const killed = new Set(kills.map((k) => `${k.host}:${k.pid}`))
    expect(lost.filter((l) => !killed.has(l.owner.split(":").slice(0, 2).join(":")))).toEqual([])
    const lostOf = new Map<string, number>()
    for (const l of lost) lostOf.set(l.key, (lostOf.get(l.key) ?? 0) + 1)
    const paid = paidOf(fake, N)
    expect(paid.filter((p) => p < 1)).toEqual([])
    const overpaid = paid.flatMap((p, i) =>
      p - 1 > (lostOf.get(`id-${i + 1}`) ?? 0) ? [`id-${i + 1}:${p}`] : [],
    )
    expect(overpaid).toEqual([])
    // a worker holds at most its concurrency in flight plus the items it claims ahead (a quarter of it); a call that
    // has ended may wait a moment for its commit while the next one is under way, hence the margin of the ahead ones
    const again = paid.reduce((a, p) => a + p - 1, 0)
    expect(again).toBeLessThanOrEqual(kills.length * (CONCURRENCY + Math.ceil(CONCURRENCY / 4)))
    const st = await status(pg.url, tmp.path)
    expect(st.state).toBe("completed")
    expect(st.total).toBe(N)
    expect(nonzero(st.counts)).toEqual(countsOf(lines))
    // the attempts the ledger counted: one per call that ended and each lost one; results say the same per item
    expect(st.attempts).toBe(lines.reduce((a, l) => a + l.attempts, 0))
    // the workers that did the work: every host's attempts are in the ledger under its name
    const owners = await db.q<{ host: string }>(
      "SELECT DISTINCT split_part(owner, ':', 1) AS host FROM ${S}.attempts ORDER BY 1",
    )
    expect(owners.length).toBeGreaterThanOrEqual(3)
    for (const o of owners) expect(o.host).toMatch(/^host-\d+$/)
    const open = await db.q<{ n: number }>(
      "SELECT count(*)::int AS n FROM ${S}.attempts WHERE ended_at IS NULL",
    )
    expect(open).toEqual([{ n: 0 }])
    console.log(
      `fleet realtime: ${kills.length} kills (${kills.map((k) => `${k.host}@${k.paid}`).join(", ")}), ${again} calls paid twice, ${lost.length} attempts lost, ${fake.requests} requests`,
    )
  }, 60_000)

  test("batch mode: the worker holding the batch lease is SIGKILLed, at least twice; another adopts its batches from the ledger alone, and no item nor batch is paid twice", async () => {
    const N = 300
    await using tmp = await tmpdir()
    await using pg = await pgSchema()
    await using fake = await startFake({ apiKey: KEY, batch: { processingMs: 1500 } })
    const jobPath = tmp.join("job", "job.toml")
    mkdirSync(tmp.join("job"))
    writeFileSync(tmp.join("job", "in.jsonl"), input(N))
    writeFileSync(
      jobPath,
      job(
        fake.url,
        `[batch]\npoll_s = 0.05\npoll_max_s = 0.2\nbatch_size = 50\nmax_live = 2\n`,
        'mode = "batch"',
      ),
    )
    let hosts = 0
    const spawn = () => {
      const host = `host-${++hosts}`
      return launch(host, tmp.join(`m-${host}`), jobPath, pg.url)
    }
    const workers: Worker[] = [spawn(), spawn(), spawn()]
    await using db = await ledger(pg.schema)
    /** The live worker holding the run's batch lease, if any. */
    const holder = async () => {
      const [run] = await db
        .q<{ owner: string | null }>("SELECT batch_owner AS owner FROM ${S}.runs")
        .catch(() => []) // the schema is not made yet
      const pid = Number(run?.owner?.split(":")[1])
      return workers.find((w) => w.proc.pid === pid && running(w))
    }
    const kills: { host: string; pid: number; created: number }[] = []
    // the first kill once the holder has batches at the provider; each next once a new holder has created one more
    while (kills.length < 3) {
      const before = kills.at(-1)?.created ?? 0
      let victim: Worker | undefined
      const deadline = Date.now() + 30_000
      while (!victim && Date.now() < deadline && workers.some(running)) {
        const held = await holder()
        if (held && fake.batch.batches.length > before && fake.batch.batches.length < N / 50) victim = held
        else await Bun.sleep(25)
      }
      if (!victim) break
      victim.proc.kill("SIGKILL")
      await victim.ended
      kills.push({ host: victim.host, pid: victim.proc.pid, created: fake.batch.batches.length })
      workers.push(spawn())
    }
    const ended = await Promise.all(workers.map((w) => w.ended))
    expect(kills.length).toBeGreaterThanOrEqual(2)
    const survivors = ended.filter((e) => e.signal !== "SIGKILL")
    expect(survivors.map((e) => e.code)).toEqual(survivors.map(() => 0))
    for (const e of survivors) expect(e.stderr).toContain(`run "fleet": ${N} completed, 0 failed of ${N}`)

    const lines = await results(pg.url, tmp.path)
    expectAllCompleted(lines, N)
    // batch mode: no item is ever paid twice
    expect(paidOf(fake, N)).toEqual(ids(N).map(() => 1))
    expect(fake.invalid).toEqual([])
    // every batch the ledger holds was created at the provider once, under its tag, and together they hold every item
    const stored = await db.q<{ tag: string; provider_id: string | null; state: string; count: number }>(
      "SELECT tag, provider_id, state, count FROM ${S}.batches ORDER BY id",
    )
    const created = fake.batch.batches
      .map((b) => ({ tag: b.metadata?.spool_tag ?? null, id: b.id as string | null }))
      .sort((a, b) => (a.id ?? "").localeCompare(b.id ?? ""))
    expect(new Set(created.map((c) => c.tag)).size).toBe(created.length)
    expect(
      stored
        .map((b) => ({ tag: b.tag as string | null, id: b.provider_id }))
        .sort((a, b) => (a.id ?? "").localeCompare(b.id ?? "")),
    ).toEqual(created)
    expect(stored.map((b) => b.state)).toEqual(stored.map(() => "done"))
    expect(stored.reduce((a, b) => a + b.count, 0)).toBe(N)
    // so every batch a killed holder had created was adopted and finished by a later one. (Which hosts applied
    // lines is not checked: a line's attempt is written by the worker that applies it, and with 1.5 s batches the
    // last holder may have applied them all; it failed so now and then.)
    const st = await status(pg.url, tmp.path)
    expect([st.state, st.total, nonzero(st.counts)]).toEqual(["completed", N, { completed: N }])
    console.log(
      `fleet batch: ${kills.length} kills of the holder (${kills.map((k) => `${k.host}@${k.created}`).join(", ")}), ${stored.length} batches`,
    )
  }, 60_000)

  test("a worker whose machine cannot read the inputs works on the run another machine ingested, and the run finishes", async () => {
    const N = 80
    await using tmp = await tmpdir()
    await using pg = await pgSchema()
    await using fake = await startFake({ apiKey: KEY, latencyMs: 100 })
    const jobPath = tmp.join("a", "job.toml")
    mkdirSync(tmp.join("a"))
    writeFileSync(tmp.join("a", "in.jsonl"), input(N))
    writeFileSync(jobPath, job(fake.url, `[limits]\nconcurrency = 2\n`))
    const a = launch("host-a", tmp.join("a"), jobPath, pg.url)
    await using db = await ledger(pg.schema)
    const ingested = async () => {
      const rows = await db
        .q<{ ingested: number }>("SELECT ingested FROM ${S}.runs")
        .catch(() => [] as { ingested: number }[])
      return rows[0]?.ingested === 1
    }
    for (let at = Date.now(); !(await ingested()); await Bun.sleep(25))
      if (Date.now() - at > 20_000 || !running(a)) throw new Error("the run was not ingested")
    // B's machine has the job file but not its input
    rmSync(tmp.join("a", "in.jsonl"))
    const b = launch("host-b", tmp.join("b"), jobPath, pg.url)
    const [endA, endB] = await Promise.all([a.ended, b.ended])
    expect(endB.stderr).toContain("this machine cannot read the run's inputs")
    for (const e of [endA, endB]) {
      expect(e.code).toBe(0)
      expect(e.stderr).toContain(`run "fleet": ${N} completed, 0 failed of ${N}`)
    }
    expectAllCompleted(await results(pg.url, tmp.path), N)
    expect(paidOf(fake, N)).toEqual(ids(N).map(() => 1))
    // B did part of the work: its attempts are there under its host
    const byHost = await db.q<{ host: string; n: number }>(
      "SELECT split_part(owner, ':', 1) AS host, count(*)::int AS n FROM ${S}.attempts GROUP BY 1 ORDER BY 1",
    )
    expect(byHost.map((h) => h.host)).toEqual(["host-a", "host-b"])
    expect(byHost.reduce((x, h) => x + h.n, 0)).toBe(N)
    expect(byHost[1]!.n).toBeGreaterThan(0)
  }, 60_000)

  test("a worker cut off past its lease (SIGSTOP, as a network partition): the other takes its items; back, its late answers land on its attempts only, and every id is settled once", async () => {
    const N = 200
    const CONCURRENCY = 6
    await using tmp = await tmpdir()
    await using pg = await pgSchema()
    await using fake = await startFake({ apiKey: KEY, latencyMs: 300 })
    const jobPath = tmp.join("job", "job.toml")
    mkdirSync(tmp.join("job"))
    writeFileSync(tmp.join("job", "in.jsonl"), input(N))
    writeFileSync(jobPath, job(fake.url, `[limits]\nconcurrency = ${CONCURRENCY}\n`))
    const a = launch("host-a", tmp.join("m-a"), jobPath, pg.url)
    const b = launch("host-b", tmp.join("m-b"), jobPath, pg.url)
    await until(() => fake.paid.size >= 0.2 * N || !running(a) || !running(b), 30_000, "20% paid")
    expect([running(a), running(b)]).toEqual([true, true])
    // cut off: a holds its items, and cannot renew their leases (2 s) nor commit what comes back
    a.proc.kill("SIGSTOP")
    // a commit a sent just before it stopped still lands: what a holds is read once the server has it
    await Bun.sleep(500)
    await using db = await ledger(pg.schema)
    const held = await db.q<{ id: number; key: string }>(
      "SELECT id, key FROM ${S}.items WHERE state = 'running' AND lease_owner LIKE 'host-a:%' ORDER BY id",
    )
    expect(held.length).toBeGreaterThan(0)
    // past the lease, b takes a's items and settles them itself
    await until(
      async () =>
        (
          await db.q<{ n: number }>(
            "SELECT count(*)::int AS n FROM ${S}.items WHERE lease_owner LIKE 'host-a:%' AND state = 'running'",
          )
        )[0]!.n === 0,
      20_000,
      "a's leases taken over",
    )
    a.proc.kill("SIGCONT")
    const [ea, eb] = await Promise.all([a.ended, b.ended])
    expect([ea.code, eb.code]).toEqual([0, 0])
    for (const e of [ea, eb]) expect(e.stderr).toContain(`run "fleet": ${N} completed, 0 failed of ${N}`)
    expectAllCompleted(await results(pg.url, tmp.path), N)
    // each item a held when cut off: a's attempt was taken back as lost when its lease lapsed (or, once a was back,
    // holds the answer a got then: 'ok', a call that was paid, recorded on that attempt only); the item was then
    // claimed again, by b (or by a, back) and settled by that one call: never two settlements
    const keys = held.map((h) => h.key)
    const rows = await db.q<{ key: string; owner: string; outcome: string }>(
      "SELECT i.key, split_part(a.owner, ':', 1) AS owner, a.outcome FROM ${S}.attempts a JOIN ${S}.items i ON i.id = a.item_id WHERE i.id IN (" +
        held.map((h) => h.id).join(",") +
        ") ORDER BY a.id",
    )
    let byB = 0
    for (const key of keys) {
      const mine = rows.filter((r) => r.key === key)
      expect(mine[0]!.owner).toBe("host-a")
      expect(["lost", "ok"]).toContain(mine[0]!.outcome)
      expect(mine.slice(1).map((r) => r.outcome)).toEqual(["ok"])
      if (mine[1]!.owner === "host-b") byB++
    }
    // b took a's items while a was away
    expect(byB).toBeGreaterThan(0)
    // the items a held were paid at most twice (its call may have reached the provider), every other item once
    const paid = paidOf(fake, N)
    const heldSet = new Set(keys)
    expect(
      paid.flatMap((p, i) => (heldSet.has(`id-${i + 1}`) ? [] : p === 1 ? [] : [`id-${i + 1}:${p}`])),
    ).toEqual([])
    expect(paid.filter((p, i) => heldSet.has(`id-${i + 1}`) && (p < 1 || p > 2))).toEqual([])
    const st = await status(pg.url, tmp.path)
    expect([st.state, nonzero(st.counts)]).toEqual(["completed", { completed: N }])
  }, 60_000)

  test("the spend cap is the run's: three workers stop together at it, spending at most the cap plus what all of them may have in flight", async () => {
    const N = 100
    const CONCURRENCY = 4
    await using tmp = await tmpdir()
    await using pg = await pgSchema()
    // calls of half a second (a real one takes seconds): each worker learns the others' spend every 250 ms
    await using fake = await startFake({ apiKey: KEY, latencyMs: 500 })
    // what the fake counts (a quarter token a character: of the messages' JSON, of its answer) at these prices
    const inTokens = Math.ceil(JSON.stringify([{ role: "user", content: prompt(1) }]).length / 4)
    const outTokens = Math.ceil(`echo: ${prompt(1)}`.length / 4)
    const each = (inTokens * 1000 + outTokens * 2000) / 1e6
    const cap = Number((30.5 * each).toFixed(6))
    const jobPath = tmp.join("job", "job.toml")
    mkdirSync(tmp.join("job"))
    writeFileSync(tmp.join("job", "in.jsonl"), input(N))
    writeFileSync(
      jobPath,
      job(
        fake.url,
        `[limits]\nconcurrency = ${CONCURRENCY}\nmax_cost_usd = ${cap}\n[pricing]\ninput = 1000\noutput = 2000\n`,
      ),
    )
    const workers = [1, 2, 3].map((i) => launch(`host-${i}`, tmp.join(`m-${i}`), jobPath, pg.url))
    const ended = await Promise.all(workers.map((w) => w.ended))
    for (const e of ended) {
      expect(e.code).toBe(1)
      expect(e.stderr).toContain(`the spend cap of $${cap} is reached`)
    }
    const lines = await results(pg.url, tmp.path)
    expect(lines.map((l) => l.id)).toEqual(ids(N))
    const done = lines.filter((l) => l.state === "completed")
    // each call cost what the fake counted, at the job's prices
    for (const l of done)
      expect([l.usage, l.cost_usd]).toEqual([
        { input_tokens: inTokens, output_tokens: outTokens, cached_input_tokens: 0, cache_write_tokens: 0 },
        each,
      ])
    expect(countsOf(lines)).toEqual({ completed: done.length, pending: N - done.length })
    // every call made was paid once and is in the ledger: no call went out past the cap unrecorded
    expect(fake.paid.size).toBe(done.length)
    expect([...fake.paid.values()].every((p) => p === 1)).toBe(true)
    const st = await status(pg.url, tmp.path)
    expect(st.state).toBe("paused")
    expect(st.reason).toContain(`the spend cap of $${cap} is reached`)
    expect(nonzero(st.counts)).toEqual(countsOf(lines))
    const spent = st.spend.usd!
    expect(spent).toBeCloseTo(done.length * each, 6)
    // at the cap: one more call would have passed it; past it at most by what all three workers may have under way
    // (the cap counts an item claimed ahead of its call, a quarter of the concurrency, as under way too)
    expect(spent + each).toBeGreaterThan(cap)
    expect(spent).toBeLessThanOrEqual(cap + 3 * (CONCURRENCY + Math.ceil(CONCURRENCY / 4)) * each)
    console.log(
      `fleet budget: cap $${cap} (${(cap / each).toFixed(1)} calls), spent $${spent} (${done.length} calls)`,
    )
  }, 60_000)

  test("the job's rpm is the run's: three workers together stay under it, past the first minute's bucket", async () => {
    const N = 420
    const RPM = 360
    await using tmp = await tmpdir()
    await using pg = await pgSchema()
    await using fake = await startFake({ apiKey: KEY })
    const jobPath = tmp.join("job", "job.toml")
    mkdirSync(tmp.join("job"))
    writeFileSync(tmp.join("job", "in.jsonl"), input(N))
    writeFileSync(jobPath, job(fake.url, `[limits]\nconcurrency = 8\nrpm = ${RPM}\n`))
    // two start together; the third joins once the first minute's bucket is spent, and must find it spent
    const workers = [1, 2].map((i) => launch(`host-${i}`, tmp.join(`m-${i}`), jobPath, pg.url))
    await until(() => fake.requests >= RPM || !workers.every(running), 40_000, "the first bucket spent")
    workers.push(launch("host-3", tmp.join("m-3"), jobPath, pg.url))
    const ended = await Promise.all(workers.map((w) => w.ended))
    expect(ended.map((e) => e.code)).toEqual([0, 0, 0])
    expectAllCompleted(await results(pg.url, tmp.path), N)
    expect(fake.requests).toBe(N)
    // every request by the time it was served: never more than a full bucket (the job's rpm, the run's for all its
    // workers) plus what it refills since the first request, with 10% for the clocks of four processes, and LEAD_MS
    // for a grant being taken before its call is served (a worker's first call opens its connection first)
    const LEAD_MS = 500
    const times = [...fake.served].sort((x, y) => x - y)
    const t0 = times[0]!
    const over = times.flatMap((t, k) => {
      const allowed = RPM + ((t - t0 + LEAD_MS) / 60_000) * RPM * 1.1
      return k + 1 > allowed ? [`${k + 1} by ${t - t0} ms (allowed ${allowed.toFixed(1)})`] : []
    })
    expect(over).toEqual([])
    // so the run took as long as the items past the first bucket needed at the rpm
    const elapsed = times.at(-1)! - t0
    expect(elapsed).toBeGreaterThanOrEqual((((N - RPM) / RPM) * 60_000) / 1.1)
    const burst = times.filter((t) => t - t0 < 1000).length
    console.log(`fleet rpm: ${N} requests in ${elapsed} ms, ${burst} in the first second (rpm ${RPM})`)
  }, 60_000)
})

describe.skipIf(SKIP_PG_PRIVATE)("a fleet when the PostgreSQL server goes away", () => {
  test("the server stops for 3 s mid-run: both workers wait for it, neither exits, and every id is done once", async () => {
    const N = 200
    await using tmp = await tmpdir()
    await using server = await privateServer()
    await using fake = await startFake({ apiKey: KEY, latencyMs: 100 })
    const store = `${server.url}?schema=fleet`
    const jobPath = tmp.join("job", "job.toml")
    mkdirSync(tmp.join("job"))
    writeFileSync(tmp.join("job", "in.jsonl"), input(N))
    writeFileSync(jobPath, job(fake.url, `[limits]\nconcurrency = 4\n`))
    // leases as long as by default: the outage must not make them lapse
    const workers = [1, 2].map((i) =>
      launch(`host-${i}`, tmp.join(`m-${i}`), jobPath, store, { SPOOL_LEASE_S: "" }),
    )
    await until(() => fake.paid.size >= 0.3 * N || !workers.every(running), 30_000, "30% paid")
    expect(workers.every(running)).toBe(true)
    await server.stop("fast")
    const stoppedAt = fake.paid.size
    await Bun.sleep(3000)
    // the calls in flight ended, nothing new went out, and both are still there, waiting for the store
    expect(workers.every(running)).toBe(true)
    const during = fake.paid.size
    expect(during - stoppedAt).toBeLessThanOrEqual(2 * 4)
    await server.start()
    const ended = await Promise.all(workers.map((w) => w.ended))
    for (const e of ended) {
      expect(e.code).toBe(0)
      expect(e.stderr).toContain(`run "fleet": ${N} completed, 0 failed of ${N}`)
    }
    expectAllCompleted(await results(store, tmp.path), N)
    expect(paidOf(fake, N)).toEqual(ids(N).map(() => 1))
    const st = await status(store, tmp.path)
    expect([st.state, st.attempts, nonzero(st.counts)]).toEqual(["completed", N, { completed: N }])
  }, 60_000)
})
