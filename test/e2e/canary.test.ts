/**
 * The canary through the compiled binary, against the fake OpenAI server, off a terminal (and on one, through
 * `script`'s pty): the first items as direct calls, the report, the stop, and the rest on the next start.
 */
import { describe, expect, test } from "bun:test"
import { Database } from "bun:sqlite"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { startFake, type FakeOptions } from "../lib/fake-openai.ts"
import { BIN, env as childEnv, requireBinary, spool, start, until } from "../lib/spool.ts"
import { tmpdir } from "../lib/tmp.ts"

const KEY = "sk-test-canary-0123456789"
const env = { OPENAI_API_KEY: KEY }

function job(url: string, mode: "batch" | "realtime", limits = ""): string {
  return `name = "canaried"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "openai"
model = "gpt-4.1-mini"
mode = "${mode}"
base_url = "${url}"
[request]
prompt = "Item {{n}}: {{text}}"
max_tokens = 50
[limits]
max_attempts = 3
${limits}
[batch]
poll_s = 0.05
poll_max_s = 0.2
`
}

const prompt = (i: number) => `Item ${i}: t${(i * 7) % 13}`

function input(n: number): string {
  return (
    Array.from({ length: n }, (_, i) =>
      JSON.stringify({ id: `id-${i + 1}`, n: i + 1, text: `t${((i + 1) * 7) % 13}` }),
    ).join("\n") + "\n"
  )
}

/** The items' states and tokens, in ledger order, read from the store. */
function items(home: string): { key: string; state: string; i: number; o: number }[] {
  const db = new Database(join(home, "spool.db"), { readonly: true })
  const rows = db
    .query<{ key: string; state: string; i: number; o: number }, []>(
      "SELECT key, state, input_tokens AS i, output_tokens AS o FROM items ORDER BY id",
    )
    .all()
  db.close()
  return rows
}

/**
 * A directory with `n` items and the job (`extra` appended to it), the fake server, and `run`: `spool run job.toml`
 * with more flags, in that directory, on its own store.
 */
async function setUp(
  n: number,
  mode: "batch" | "realtime",
  limits = "",
  extra = "",
  options: FakeOptions = {},
) {
  const tmp = await tmpdir()
  const fake = await startFake({ apiKey: KEY, ...options })
  writeFileSync(tmp.join("in.jsonl"), input(n))
  writeFileSync(tmp.join("job.toml"), `${job(fake.url, mode, limits)}${extra}`)
  const home = tmp.join("home")
  return {
    tmp,
    fake,
    home,
    run: (...flags: string[]) => spool(["run", "job.toml", ...flags, "--home", home], { cwd: tmp.path, env }),
    async [Symbol.asyncDispose]() {
      await fake[Symbol.asyncDispose]()
      await tmp[Symbol.asyncDispose]()
    },
  }
}

const dollars = (x: number) =>
  `$${x.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: x < 1 ? 4 : 2 })}`

describe("spool run --canary", () => {
  test("a batch job's first 5 items go as direct calls, the run stops with the report (exit 0), and the next spool run sends the rest in batches, never the 5 again", async () => {
    // a cent a token: costs large enough to read in the report's cents
    await using s = await setUp(100, "batch", "", "[pricing]\ninput = 10000\noutput = 10000\n")
    const { fake, home, tmp } = s
    const run = await s.run("--canary", "5")
    expect(run.code).toBe(0)
    // exactly 5 chat completions, no batch
    expect(fake.requests).toBe(5)
    expect(fake.batch.batches.length).toBe(0)
    for (let i = 1; i <= 5; i++) expect(fake.paid.get(prompt(i))).toBe(1)
    const rows = items(home)
    expect(rows.map((r) => r.state).slice(0, 6)).toEqual([...Array(5).fill("completed"), "pending"])
    expect(rows.filter((r) => r.state === "pending").length).toBe(95)
    const spent = rows.slice(0, 5).reduce((sum, r) => sum + (r.i + r.o) / 100, 0)
    const each = spent / 5
    const rest = (each / 2) * 95
    expect(run.stderr).toContain(
      [
        "canary    the first 5 of 100 item(s), sent as direct calls (the rest goes in batches)",
        "outputs",
        ...[1, 2, 3, 4, 5].map((i) => `  id-${i}  completed  echo: ${prompt(i)}`),
        "gates     5 answer(s): 5 whole (0 truncated at max_tokens, 0 refused) · JSON and schema not checked (no output schema)",
        "items     5 completed · 0 needs_review · 0 failed",
        "errors    none",
        `cost      ${dollars(each)} per item, measured: ${dollars(spent)} for 5 item(s) at the realtime price (the job's [pricing])`,
        `projected ~${dollars(spent + rest)} for the whole job of 100 item(s) in batch mode: ~${dollars(rest)} for the other 95 (${dollars(each / 2)} per item at the batch price) and ${dollars(spent)} spent`,
      ].join("\n"),
    )
    expect(run.stderr).toContain(
      `Stopped after the canary; nothing more was sent. \`spool run job.toml --home ${home}\` goes on with the other 95 item(s); the 5 done are kept and not sent again.`,
    )
    // off a terminal nothing is asked
    expect(run.stderr).not.toContain("[y/N]")
    const status = await spool(["status", "--home", home], { cwd: tmp.path, env })
    expect(status.stdout).toContain(
      `paused — canary: the first 5 item(s) are done; \`spool run job.toml --home ${home}\` goes on with the other 95`,
    )

    const rerun = await s.run()
    expect(rerun.code).toBe(0)
    expect(rerun.stderr).toContain('run "canaried": 100 completed, 0 failed of 100')
    expect(rerun.stderr).not.toContain("canary")
    expect(items(home).every((r) => r.state === "completed")).toBe(true)
    // the 5 were not sent again: no more direct calls, and the batches held the other 95 only
    expect(fake.requests).toBe(5)
    expect(fake.batch.batches.reduce((n, b) => n + b.lines.length, 0)).toBe(95)
    for (let i = 1; i <= 100; i++) expect(fake.paid.get(prompt(i))).toBe(1)
  }, 60_000)

  test("--canary is refused on a run past its first items, nothing changed; --new-run --canary starts a fresh run with one", async () => {
    await using s = await setUp(40, "realtime", "max_cost_usd = 0.00015")
    const { fake, home, tmp } = s
    // the cap stops it part-way: a run with items sent outside any canary
    const capped = await s.run()
    expect(capped.code).toBe(1)
    const sent = fake.requests
    expect(sent).toBeGreaterThan(0)
    expect(sent).toBeLessThan(40)
    const snapshot = () => {
      const db = new Database(join(home, "spool.db"), { readonly: true })
      const out = JSON.stringify([
        db.query("SELECT state, reason, resume, job FROM runs").all(),
        db.query("SELECT * FROM canaries").all(),
        db.query("SELECT id, state, attempts FROM items ORDER BY id").all(),
      ])
      db.close()
      return out
    }
    const before = snapshot()
    const refused = await s.run("--canary", "3", "--max-cost-usd", "5")
    expect(refused.code).toBe(2)
    expect(refused.stderr).toContain(
      `spool: --canary: run "canaried" is past its first items (${sent} item(s) were sent outside a canary); nothing was changed`,
    )
    expect(refused.stderr).toContain(
      "A canary comes before the rest. Go on without --canary, or start a fresh run with one: --new-run --canary 3.",
    )
    expect(snapshot()).toBe(before)
    for (const bad of ["0", "many"]) {
      const wrong = await s.run("--canary", bad)
      expect([wrong.code, wrong.stderr]).toEqual([
        2,
        `spool: --canary: "${bad}" is not a number of items\n  Give how many of the first items go first, such as --canary 20.\n`,
      ])
    }
    expect(snapshot()).toBe(before)
    expect(fake.requests).toBe(sent)

    // --no-cache: the fresh run would be served its first items from the cache the first run filled
    const fresh = await s.run("--new-run", "--canary", "3", "--max-cost-usd", "5", "--no-cache")
    expect(fresh.code).toBe(0)
    expect(fresh.stderr).toContain("canary    the first 3 of 40 item(s), sent as direct calls\n")
    expect(fake.requests).toBe(sent + 3)
    const runs = JSON.parse(
      (await spool(["runs", "--json", "--home", home], { cwd: tmp.path, env })).stdout,
    ) as {
      id: number
      state: string
      completed: number
    }[]
    expect(runs.map((r) => [r.state, r.completed])).toEqual([
      ["paused", sent],
      ["paused", 3],
    ])
  }, 60_000)

  test("[limits] canary in the job: the first start sends the canary and stops; the next goes on with the rest and no other canary; --canary after that is refused", async () => {
    await using s = await setUp(10, "realtime", "canary = 3")
    const { fake, home } = s
    const first = await s.run()
    expect(first.code).toBe(0)
    expect(first.stderr).toContain("canary    the first 3 of 10 item(s), sent as direct calls\n")
    expect(first.stderr).toContain("items     3 completed · 0 needs_review · 0 failed")
    expect(fake.requests).toBe(3)
    expect(items(home).map((r) => r.state)).toEqual([
      ...Array(3).fill("completed"),
      ...Array(7).fill("pending"),
    ])

    const second = await s.run()
    expect(second.code).toBe(0)
    expect(second.stderr).not.toContain("canary")
    expect(second.stderr).toContain('run "canaried": 10 completed, 0 failed of 10')
    expect(fake.requests).toBe(10)
    expect([...fake.paid.values()]).toEqual(Array(10).fill(1))

    const late = await s.run("--canary", "3")
    expect(late.code).toBe(2)
    expect(late.stderr).toContain(
      '--canary: run "canaried" is past its first items (7 item(s) were sent outside a canary)',
    )
  }, 60_000)

  test("--yes goes on with the rest after the report, in the same process", async () => {
    await using s = await setUp(40, "batch")
    const fake = s.fake
    const run = await s.run("--canary", "5", "--yes")
    expect(run.code).toBe(0)
    expect(run.stderr).toContain(
      "canary    the first 5 of 40 item(s), sent as direct calls (the rest goes in batches)",
    )
    expect(run.stderr).toContain("--yes: going on with the other 35 items\n")
    expect(run.stderr).toContain('run "canaried": 40 completed, 0 failed of 40')
    expect(fake.requests).toBe(5)
    expect(fake.batch.batches.map((b) => b.lines.length)).toEqual([35])
    expect([...fake.paid.values()]).toEqual(Array(40).fill(1))
  }, 60_000)

  test("a canary stopped part-way is finished by the next start, whose command needs no --canary; then it stops with the report", async () => {
    await using s = await setUp(30, "realtime", "concurrency = 1", "", { latencyMs: 150 })
    const { fake, home, tmp } = s
    const child = start(["run", "job.toml", "--canary", "8", "--home", home], { cwd: tmp.path, env })
    await until(() => fake.paid.size >= 3, 20_000, "3 canary calls")
    child.kill("SIGINT")
    const [stderr, code] = await Promise.all([new Response(child.stderr).text(), child.exited])
    expect(code).toBe(130)
    expect(stderr).toContain(`Resume with:\n  spool run job.toml --home ${home}\n`)
    const done = items(home).filter((r) => r.state === "completed").length
    expect(done).toBeLessThan(8)
    const again = await s.run()
    expect(again.code).toBe(0)
    expect(again.stderr).toContain("canary    the first 8 of 30 item(s), sent as direct calls\n")
    expect(again.stderr).toContain("items     8 completed · 0 needs_review · 0 failed")
    expect(fake.paid.size).toBe(8)
    expect([...fake.paid.values()]).toEqual(Array(8).fill(1))
  }, 60_000)

  test("on a terminal it asks, on stderr, and reads the answer from stdin: no stops, yes goes on", async () => {
    requireBinary()
    await using s = await setUp(12, "realtime")
    const { fake, tmp } = s
    /** `spool run` in a pty (`script`), answering `answer` once the question is asked; all it printed. */
    const onTerminal = async (home: string, answer: string) => {
      const child = Bun.spawn(
        ["script", "-qec", `${BIN} run job.toml --canary 4 --home ${home}`, "/dev/null"],
        {
          cwd: tmp.path,
          env: childEnv({ ...env, SPOOL_HOME: home }),
          stdin: "pipe",
          stdout: "pipe",
          stderr: "pipe",
        },
      )
      let text = ""
      const reader = child.stdout.getReader()
      const decoder = new TextDecoder()
      while (!text.includes("[y/N] ")) {
        const { done, value } = await reader.read()
        if (done) throw new Error(`ended before asking: ${text}`)
        text += decoder.decode(value)
      }
      child.stdin.write(`${answer}\n`)
      await child.stdin.flush()
      for (let r = await reader.read(); !r.done; r = await reader.read()) text += decoder.decode(r.value)
      return { code: await child.exited, text }
    }
    const no = await onTerminal(tmp.join("no"), "n")
    expect(no.code).toBe(0)
    expect(no.text).toContain("canary    the first 4 of 12 item(s), sent as direct calls")
    expect(no.text).toContain("Go on with the other 8 items? [y/N] n")
    expect(no.text).toContain("Stopped after the canary; nothing more was sent.")
    expect(fake.requests).toBe(4)
    const yes = await onTerminal(tmp.join("yes"), "y")
    expect(yes.code).toBe(0)
    expect(yes.text).toContain("Go on with the other 8 items? [y/N] y")
    expect(yes.text).toContain('run "canaried": 12 completed, 0 failed of 12')
    expect(fake.requests).toBe(4 + 12)
  }, 60_000)
})
