/**
 * Choosing the store (issue 15), through real dist/spool processes against the fake OpenAI server and a real
 * PostgreSQL server (test/lib/pg.ts), a schema of each test's own: `--store`, `SPOOL_STORE` and a job's `[store] url`,
 * in that order, keep the whole ledger in PostgreSQL while `--home` keeps the logs; every read command finds it there;
 * a password in the URL is never printed, logged nor stored; a schema with no ledger, or a server that is not there,
 * is said so with the URL masked.
 */
import { describe, expect, test } from "bun:test"
import { SQL } from "bun"
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { startFake } from "../lib/fake-openai.ts"
import { pgSchema, pgServer, SKIP_PG } from "../lib/pg.ts"
import { served, spool, start, until, type Ran } from "../lib/spool.ts"
import { tmpdir } from "../lib/tmp.ts"

const KEY = "sk-test-store-0123456789"
const PASSWORD = "secret-pw-123"
/** A server no one listens on; tried for 1 s, not the default 60. */
const REFUSED = `postgres://postgres:${PASSWORD}@127.0.0.1:1/test?schema=nowhere`
const env = { OPENAI_API_KEY: KEY, SPOOL_PG_RETRY_S: "1" }

function job(url: string, store = ""): string {
  return `name = "labels"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "openai"
model = "gpt-4.1-mini"
base_url = "${url}"
[request]
prompt = "Item {{n}}"
max_tokens = 20
[limits]
concurrency = 4
${store}`
}

const input = (n: number) =>
  Array.from({ length: n }, (_, i) => JSON.stringify({ id: `id-${i + 1}`, n: i + 1 })).join("\n") + "\n"

/** The URL with a password in it (the test server trusts every login and ignores it). */
function withPassword(url: string): string {
  const u = new URL(url)
  u.password = PASSWORD
  return u.toString()
}

/** The URL as spool shows it: its password masked. */
function masked(url: string): string {
  const u = new URL(url)
  u.password = "***"
  return u.toString()
}

/** Every file under a folder, recursively. */
function walk(dir: string): string[] {
  if (!existsSync(dir)) return []
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)],
  )
}

/** The runs table of a schema, as stored: each run's job and resume command as text. */
async function storedRuns(schema: string): Promise<{ name: string; job: string; resume: string }[]> {
  const sql = new SQL(await pgServer())
  try {
    return await sql.unsafe(`SELECT name, job::text AS job, resume FROM "${schema}".runs ORDER BY id`)
  } finally {
    await sql.close()
  }
}

/** Whether a schema exists on the test server. */
async function schemaExists(schema: string): Promise<boolean> {
  const sql = new SQL(await pgServer())
  try {
    const [row] = await sql`SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = ${schema}`
    return row.n === 1
  } finally {
    await sql.close()
  }
}

/** The ids and states of `spool results` lines. */
const statesOf = (out: Ran) =>
  out.stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { id: string; state: string })
    .map((r) => `${r.id}:${r.state}`)

/** What a run of `n` items read back through status, runs and results shows: all completed. */
async function expectDone(cwd: string, n: number, options: { store?: string; env?: Record<string, string> }) {
  const flag = options.store ? ["--store", options.store] : []
  const run = { cwd, env: { ...env, ...options.env } }
  const status = await spool(["status", "--json", ...flag], run)
  expect(status.stderr).toBe("")
  expect(status.code).toBe(0)
  expect(JSON.parse(status.stdout)).toMatchObject({ name: "labels", state: "completed" })
  const runs = await spool(["runs", "--json", ...flag], run)
  expect(runs.code).toBe(0)
  expect(
    (JSON.parse(runs.stdout) as { name: string; state: string }[]).map((r) => [r.name, r.state]),
  ).toEqual([["labels", "completed"]])
  const results = await spool(["results", ...flag], run)
  expect(results.code).toBe(0)
  expect(statesOf(results)).toEqual(Array.from({ length: n }, (_, i) => `id-${i + 1}:completed`))
  return [status, runs, results]
}

describe.skipIf(SKIP_PG)("the ledger in PostgreSQL", () => {
  test("--store: a realtime run keeps its ledger in the URL's schema and its logs under --home; status, runs and results read it there", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    await using pg = await pgSchema()
    writeFileSync(tmp.join("in.jsonl"), input(30))
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const ran = await spool(["run", "job.toml", "--store", pg.url], { cwd: tmp.path, env })
    // the command it names for the outputs reads this store
    expect(ran.stderr).toContain(
      `run "labels": 30 completed, 0 failed of 30 — \`spool results labels --store '${pg.url}'\` for the outputs`,
    )
    expect(ran.code).toBe(0)
    // the ledger is in the schema, not in a SQLite file; the logs are under the home all the same
    expect(existsSync(tmp.join(".spool", "spool.db"))).toBe(false)
    expect(readFileSync(tmp.join(".spool", "logs", "spool.log"), "utf8")).toContain('"msg":"run created"')
    expect((await storedRuns(pg.schema)).map((r) => r.name)).toEqual(["labels"])
    await expectDone(tmp.path, 30, { store: pg.url })
    // without --store the same commands look in the (empty) home and say there is no store there
    const home = await spool(["status"], { cwd: tmp.path, env })
    expect(home.code).toBe(2)
    expect(home.stderr.split("\n")[0]).toStartWith(`spool: no spool store in ${tmp.join(".spool")}`)
  }, 60_000)

  test("SPOOL_STORE works as --store does, and --store wins over it", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    await using pg = await pgSchema()
    writeFileSync(tmp.join("in.jsonl"), input(12))
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const ran = await spool(["run", "job.toml"], { cwd: tmp.path, env: { ...env, SPOOL_STORE: pg.url } })
    expect(ran.code).toBe(0)
    expect(existsSync(tmp.join(".spool", "spool.db"))).toBe(false)
    await expectDone(tmp.path, 12, { env: { SPOOL_STORE: pg.url } })
    // a SPOOL_STORE that goes nowhere is not tried when --store is given
    await expectDone(tmp.path, 12, { store: pg.url, env: { SPOOL_STORE: REFUSED } })
  }, 60_000)

  test("[store] url in the job keeps the ledger there; --store wins over it, and it over SPOOL_STORE; its password is stored nowhere", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    await using pg = await pgSchema()
    await using other = await pgSchema()
    const secret = withPassword(pg.url)
    writeFileSync(tmp.join("in.jsonl"), input(10))
    writeFileSync(tmp.join("job.toml"), job(fake.url, `[store]\nurl = "${secret}"\n`))
    // SPOOL_STORE names a server that is not there: the job's [store] url comes first
    const ran = await spool(["run", "job.toml"], { cwd: tmp.path, env: { ...env, SPOOL_STORE: REFUSED } })
    expect(ran.code).toBe(0)
    // the command it names for the outputs reads the job's store, its password left out
    expect(ran.stderr).toContain(
      `run "labels": 10 completed, 0 failed of 10 — \`spool results labels --store '${pg.url}'\` for the outputs`,
    )
    const stored = await storedRuns(pg.schema)
    expect(stored.map((r) => [r.name, r.resume])).toEqual([["labels", "spool run job.toml"]])
    // the run's stored job has no [store] at all
    expect(stored[0]?.job).not.toContain(PASSWORD)
    expect(JSON.parse(stored[0]?.job ?? "{}")).not.toHaveProperty("store")
    await expectDone(tmp.path, 10, { store: secret })
    // --store wins over the job's [store] url: this run is made in the other schema
    const elsewhere = await spool(["run", "job.toml", "--store", other.url], { cwd: tmp.path, env })
    expect(elsewhere.code).toBe(0)
    expect((await storedRuns(other.schema)).map((r) => r.name)).toEqual(["labels"])
    expect((await storedRuns(pg.schema)).length).toBe(1)
    for (const out of [ran, elsewhere]) expect(out.stdout + out.stderr).not.toContain(PASSWORD)
    for (const file of walk(tmp.join(".spool"))) expect(readFileSync(file, "utf8")).not.toContain(PASSWORD)
  }, 60_000)

  test("a password in --store is in no output, no log file, not in the stored job nor in the resume command printed or stored", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, latencyMs: 100 })
    await using pg = await pgSchema()
    const secret = withPassword(pg.url)
    writeFileSync(tmp.join("in.jsonl"), input(60))
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    // stopped with SIGINT part way: it prints the command that goes on
    const child = start(["run", "job.toml", "--store", secret], { cwd: tmp.path, env })
    await until(() => fake.paid.size >= 4, 20_000, "4 completions")
    child.kill("SIGINT")
    const [stdout, stderr, code] = await Promise.all([
      new Response(child.stdout).text(),
      new Response(child.stderr).text(),
      child.exited,
    ])
    expect(code).toBe(130)
    const resume = `spool run job.toml --store '${pg.url}'`
    expect(stderr).toContain(`Resume with:\n  ${resume}\n`)
    const outputs: string[] = [stdout, stderr]
    // status shows it interrupted, with the same command, and so does the stored run
    const status = await spool(["status", "--json", "--store", secret], { cwd: tmp.path, env })
    expect(JSON.parse(status.stdout)).toMatchObject({ state: "interrupted", resume })
    outputs.push(status.stdout, status.stderr)
    const stored = await storedRuns(pg.schema)
    expect(stored.map((r) => r.resume)).toEqual([resume])
    // the command printed goes on with the run (the password, when the server wants one, from PGPASSWORD or .env)
    const again = await spool(["run", "job.toml", "--store", pg.url], { cwd: tmp.path, env })
    expect(again.code).toBe(0)
    expect(again.stderr).toContain(
      `run "labels": 60 completed, 0 failed of 60 — \`spool results labels --store '${pg.url}'\` for the outputs`,
    )
    outputs.push(again.stdout, again.stderr)
    for (const out of await expectDone(tmp.path, 60, { store: secret })) outputs.push(out.stdout, out.stderr)
    // the page and its API, served from the store
    const server = start(["serve", "--port", "0", "--store", secret], { cwd: tmp.path, env })
    try {
      const { url, rest } = await served(server.stderr)
      const answers = await Promise.all(
        ["", "api/runs", "api/runs/labels", "api/runs/labels/job", "api/runs/labels/items"].map((path) =>
          fetch(`${url}${path}`).then(async (res) => `${res.status} ${await res.text()}`),
        ),
      )
      expect(answers.map((a) => a.slice(0, 3))).toEqual(["200", "200", "200", "200", "200"])
      expect(answers[2]).toContain('"completed":60')
      server.kill("SIGINT")
      expect(await server.exited).toBe(0)
      outputs.push(...answers, await rest())
    } finally {
      server.kill("SIGKILL")
    }
    // an export's bundle (its manifest holds the run's job)
    const exported = await spool(["export", "--dir", "bundle", "--store", secret], { cwd: tmp.path, env })
    expect(exported.code).toBe(0)
    outputs.push(
      exported.stdout,
      exported.stderr,
      ...walk(tmp.join("bundle")).map((f) => readFileSync(f, "utf8")),
    )
    for (const command of [["pause"], ["retry"], ["status", "nope"]]) {
      const out = await spool([...command, "--store", secret], { cwd: tmp.path, env })
      outputs.push(out.stdout, out.stderr)
    }
    expect(outputs.filter((o) => o.includes(PASSWORD))).toEqual([])
    const logs = walk(tmp.join(".spool"))
    expect(logs.length).toBeGreaterThan(0)
    for (const file of logs) expect(readFileSync(file, "utf8")).not.toContain(PASSWORD)
    for (const run of await storedRuns(pg.schema)) expect(JSON.stringify(run)).not.toContain(PASSWORD)
  }, 60_000)

  test("a schema without a ledger: the read commands say so with the URL masked, exit 2, and make nothing", async () => {
    await using tmp = await tmpdir()
    await using pg = await pgSchema()
    const secret = withPassword(pg.url)
    for (const command of [
      ["status"],
      ["runs"],
      ["results"],
      ["pause"],
      ["cancel"],
      ["export", "--dir", "x"],
    ]) {
      const out = await spool([...command, "--store", secret], { cwd: tmp.path, env })
      expect({ command, code: out.code, stdout: out.stdout, first: out.stderr.split("\n")[0] }).toEqual({
        command,
        code: 2,
        stdout: "",
        first: `spool: no spool store at ${masked(pg.url)} — start a run with \`spool run job.toml --store <url>\``,
      })
    }
    expect(await schemaExists(pg.schema)).toBe(false)
    expect(readdirSync(tmp.path)).toEqual([])
  }, 60_000)

  test("a server that is not there: run and status name the URL, password masked, and exit non-zero", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    writeFileSync(tmp.join("in.jsonl"), input(3))
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const said = `spool: cannot reach the store ${masked(REFUSED)}`
    for (const args of [["run", "job.toml", "--store", REFUSED], ["status", "--store", REFUSED], ["runs"]]) {
      const out = await spool(args, { cwd: tmp.path, env: { ...env, SPOOL_STORE: REFUSED } })
      expect(out.code).not.toBe(0)
      expect(out.stderr.split("\n")[0]).toStartWith(said)
      expect(out.stderr).toContain("SPOOL_PG_RETRY_S")
      expect(out.stdout + out.stderr).not.toContain(PASSWORD)
    }
    expect(fake.requests).toBe(0)
  }, 60_000)

  test("a --store or SPOOL_STORE that is no postgres:// URL is refused, pointing at --home", async () => {
    await using tmp = await tmpdir()
    const flag = await spool(["status", "--store", "somewhere"], { cwd: tmp.path, env })
    expect([flag.code, flag.stderr]).toEqual([
      2,
      "spool: --store: not a postgres:// URL\n" +
        "  Give one such as postgres://user@host:5432/db?schema=spool; a SQLite store's folder is given with --home.\n",
    ])
    const variable = await spool(["runs"], { cwd: tmp.path, env: { ...env, SPOOL_STORE: "mysql://x" } })
    expect([variable.code, variable.stderr.split("\n")[0]]).toEqual([
      2,
      "spool: SPOOL_STORE: not a postgres:// URL",
    ])
    writeFileSync(tmp.join("in.jsonl"), input(1))
    const run = await spool(
      ["run", "--input", "in.jsonl", "--prompt", "x", "--provider", "mock", "--store", "dir"],
      {
        cwd: tmp.path,
        env,
      },
    )
    expect(run.code).toBe(2)
    expect(run.stderr).toContain("store.url: must be a postgres:// URL such as postgres://user@host:5432/db")
  }, 60_000)
})
