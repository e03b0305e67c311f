/**
 * Batch mode of openai-compatible through the compiled binary, once per profile, against the OpenAI fake serving as
 * that profile's service (fake-openai.ts `profile`): a whole run, and SIGKILL at every step of a batch's life, as
 * test/e2e/batch.test.ts does for openai. After each, every item is completed exactly once with its own answer, no
 * line is paid twice, no batch is created twice, and every batch the service holds is one of the ledger's.
 */
import { describe, expect, test } from "bun:test"
import { Database } from "bun:sqlite"
import { readdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { startFake, type Fake, type FakeProfile } from "../lib/fake-openai.ts"
import { spool, start, until } from "../lib/spool.ts"
import { tmpdir } from "../lib/tmp.ts"

const KEY = "sk-profile-0123456789"
const env = { SPOOL_PROFILE_KEY: KEY }
const MODEL = "llama-3.1-8b-instant"

/** The fake's service for each profile. */
const PROFILES: [profile: string, service: FakeProfile][] = [
  ["generic", "openai"],
  ["azure", "azure"],
  ["groq", "groq"],
  ["together", "together"],
]

/** A batch job of n items for openai-compatible under `profile`, 40 requests a batch. */
function setup(dir: string, url: string, profile: string, n: number): void {
  const rows = Array.from({ length: n }, (_, i) => JSON.stringify({ id: `id-${i + 1}`, n: i + 1 }))
  writeFileSync(join(dir, "in.jsonl"), rows.join("\n") + "\n")
  writeFileSync(
    join(dir, "job.toml"),
    [
      'name = "profiled"',
      "[source]",
      'path = "in.jsonl"',
      'id = "id"',
      "[provider]",
      'name = "openai-compatible"',
      `model = "${MODEL}"`,
      'mode = "batch"',
      `base_url = "${url}"`,
      'api_key_env = "SPOOL_PROFILE_KEY"',
      "[provider.options.batch]",
      `profile = "${profile}"`,
      "[request]",
      'prompt = "Row {{n}}"',
      "max_tokens = 20",
      "[batch]",
      "poll_s = 0.05",
      "poll_max_s = 0.2",
      "batch_size = 40",
      "",
    ].join("\n"),
  )
}

/** What the ledger holds: each item's state and output by key, and the tag of each batch. */
function ledger(home: string): { items: Map<string, [string, string | null]>; tags: string[] } {
  const db = new Database(join(home, "spool.db"), { readonly: true })
  try {
    expect(db.query<{ integrity_check: string }, []>("PRAGMA integrity_check").get()?.integrity_check).toBe(
      "ok",
    )
    const items = new Map<string, [string, string | null]>()
    const rows = db.query<{ key: string; state: string; output: string | null }, []>(
      "SELECT key, state, output FROM items",
    )
    for (const r of rows.all()) items.set(r.key, [r.state, r.output])
    const tags = db.query<{ tag: string }, []>("SELECT tag FROM batches ORDER BY id").all()
    return { items, tags: tags.map((t) => t.tag) }
  } finally {
    db.close()
  }
}

/**
 * Runs the job in `dir` killed at `point` (SPOOL_CRASH_AT), then again to its end: how many batches the service held
 * between the two, and the second run's answer.
 */
async function killedThenRun(fake: Fake, dir: string, home: string, point: string) {
  const args = ["run", "job.toml", "--home", home]
  const child = start(args, { cwd: dir, env: { ...env, SPOOL_CRASH_AT: point } })
  await child.exited
  expect(child.signalCode).toBe("SIGKILL")
  const between = fake.batch.batches.length
  return { between, last: await spool(args, { cwd: dir, env }) }
}

/** `spool status --json` of the run in `home`: its queue limits and its batches. */
async function statusOf(dir: string, home: string) {
  const out = await spool(["status", "--json", "--home", home], { cwd: dir, env })
  expect(out.code).toBe(0)
  return JSON.parse(out.stdout) as {
    queue: { tokens?: number }
    batches: { phase: string; outcome: string; items: number }[]
  }
}

/** Every item completed once with its own answer; no line paid twice; no batch twice; none that is not ours. */
function doneOnce(fake: Fake, home: string, n: number): void {
  const { items, tags } = ledger(home)
  expect(items.size).toBe(n)
  for (let i = 1; i <= n; i++) {
    expect(items.get(`id-${i}`)).toEqual(["completed", `echo: Row ${i}`])
    expect(fake.paid.get(`Row ${i}`)).toBe(1)
  }
  for (const tag of tags) expect(fake.batch.byTag(`${tag}_`).length).toBeLessThanOrEqual(1)
  const known = new Set(tags)
  for (const b of fake.batch.batches) expect(known.has(String(b.metadata?.spool_tag))).toBe(true)
  expect(fake.invalid).toEqual([])
}

for (const [profile, service] of PROFILES) {
  describe(`batch mode through dist/spool, openai-compatible profile "${profile}"`, () => {
    test("a whole run: the service's own lines and words, every item completed once", async () => {
      await using tmp = await tmpdir()
      await using fake = await startFake({
        apiKey: KEY,
        profile: service,
        batch: { validatingMs: 30, processingMs: 100, finalizingMs: 30 },
      })
      const N = 90
      setup(tmp.path, fake.url, profile, N)
      const home = tmp.join("home")
      const run = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
      expect(run.stderr).toContain(`run "profiled": ${N} completed, 0 failed of ${N}`)
      expect(run.code).toBe(0)
      doneOnce(fake, home, N)
      expect(fake.batch.batches.map((b) => b.lines.length)).toEqual([40, 40, 10])
      // each request line as the service documents it: Azure's url has no /v1, its model names the deployment
      const url = service === "azure" ? "/chat/completions" : "/v1/chat/completions"
      const dir = join(home, "artifacts", "profiled")
      const requests = readdirSync(dir).filter((f) => f.endsWith(".requests.jsonl"))
      expect(requests.length).toBe(3)
      for (const f of requests) {
        for (const text of readFileSync(join(dir, f), "utf8").trim().split("\n")) {
          const line = JSON.parse(text) as { method: string; url: string; body: { model: string } }
          expect([line.method, line.url, line.body.model]).toEqual(["POST", url, MODEL])
        }
      }
      const status = await spool(["status", "--json", "--home", home], { cwd: tmp.path, env })
      const view = JSON.parse(status.stdout) as {
        batches: { phase: string; outcome: string; status: string }[]
      }
      expect(view.batches.map((b) => [b.phase, b.outcome])).toEqual([
        ["ended", "completed"],
        ["ended", "completed"],
        ["ended", "completed"],
      ])
    }, 60_000)

    test("an expired batch is salvaged line by line: the lines it ran complete, only the rest go again", async () => {
      await using tmp = await tmpdir()
      await using fake = await startFake({ apiKey: KEY, profile: service, batch: { processingMs: 100 } })
      fake.batch.script = [{ end: { outcome: "expired", after: 0.5 } }]
      setup(tmp.path, fake.url, profile, 40)
      const home = tmp.join("home")
      const run = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
      expect(run.code).toBe(0)
      doneOnce(fake, home, 40)
      expect(fake.batch.batches.map((b) => b.lines.length)).toEqual([40, 20])
      expect(fake.batch.paidLines).toBe(40)
    }, 60_000)

    test("the enqueued-token limit: the refused batch's items wait, the limit is learned, nothing fails", async () => {
      await using tmp = await tmpdir()
      await using fake = await startFake({ apiKey: KEY, profile: service, batch: { processingMs: 200 } })
      fake.batch.enqueuedTokenLimit = 300
      setup(tmp.path, fake.url, profile, 90)
      const home = tmp.join("home")
      const run = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
      expect(run.code).toBe(0)
      doneOnce(fake, home, 90)
      const refused = fake.batch.batches.filter((b) =>
        b.data.errors.some((e) => e.code === "token_limit_exceeded"),
      )
      expect(refused.length).toBeGreaterThanOrEqual(1)
      expect((await statusOf(tmp.path, home)).queue.tokens).toBe(300)
    }, 60_000)

    test("spool cancel cancels the live batch at the service and keeps what it finished; the rest stay pending", async () => {
      await using tmp = await tmpdir()
      await using fake = await startFake({
        apiKey: KEY,
        profile: service,
        batch: { processingMs: 4000, cancelMs: 100 },
      })
      setup(tmp.path, fake.url, profile, 40)
      const home = tmp.join("home")
      const child = start(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
      await until(() => fake.batch.paidLines >= 5, 20_000, "some lines done")
      expect((await spool(["cancel", "--home", home], { cwd: tmp.path, env })).code).toBe(0)
      expect(await child.exited).toBe(1)
      const { items } = ledger(home)
      const states = [...items.values()].map(([state]) => state)
      const done = states.filter((s) => s === "completed").length
      expect([done, states.filter((s) => s === "pending").length]).toEqual([
        fake.batch.paidLines,
        40 - fake.batch.paidLines,
      ])
      expect(done).toBeLessThan(40)
      expect(fake.batch.batches[0]!.status).toBe(service === "together" ? "CANCELLED" : "cancelled")
    }, 60_000)

    for (const point of ["pack", "intent", "created", "poll", "download", "apply"] as const) {
      test(`SIGKILL at "${point}": the next run creates no batch twice, pays no line twice, finishes every item once`, async () => {
        await using tmp = await tmpdir()
        await using fake = await startFake({ apiKey: KEY, profile: service, batch: { processingMs: 100 } })
        const N = 90
        setup(tmp.path, fake.url, profile, N)
        const home = tmp.join("home")
        const { between, last } = await killedThenRun(fake, tmp.path, home, point)
        expect([last.code, last.stderr.includes(`run "profiled": ${N} completed, 0 failed of ${N}`)]).toEqual(
          [0, true],
        )
        doneOnce(fake, home, N)
        // nothing reached the service before the intent was committed; after it, the batch did
        expect(between > 0).toBe(point !== "pack" && point !== "intent")
        // the batch the killed process created is found by its tag and adopted, not made again
        if (point === "created") {
          expect(last.stderr).toContain("batch adopted")
          expect(fake.batch.batches.length).toBe(3)
        }
        if (point === "intent") expect(last.stderr).not.toContain("batch adopted")
      }, 60_000)
    }
  })
}

test("SIGKILL between create and commit, at a service that keeps no metadata: the batch is adopted by its file's name", async () => {
  await using tmp = await tmpdir()
  await using fake = await startFake({
    apiKey: KEY,
    profile: "together",
    metadata: false,
    batch: { processingMs: 100 },
  })
  setup(tmp.path, fake.url, "together", 90)
  const home = tmp.join("home")
  const { between, last } = await killedThenRun(fake, tmp.path, home, "created")
  expect([between, last.code]).toEqual([1, 0])
  expect(last.stderr).toContain("batch adopted")
  expect(fake.batch.batches.length).toBe(3)
  expect(fake.batch.batches.every((b) => b.metadata === null)).toBe(true)
  const { items } = ledger(home)
  expect([...items.values()].every(([state]) => state === "completed")).toBe(true)
  for (let i = 1; i <= 90; i++) expect(fake.paid.get(`Row ${i}`)).toBe(1)
}, 60_000)
