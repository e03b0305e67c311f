/**
 * `spool migrate`, through the compiled binary: a run stopped half way on a laptop's SQLite store is copied into a
 * PostgreSQL store and finished there, nothing paid twice; a schema that holds the run already is refused.
 */
import { Database } from "bun:sqlite"
import { SQL } from "bun"
import { describe, expect, test } from "bun:test"
import { writeFileSync } from "node:fs"
import { copy } from "../../src/core/ledger/postgres/copy.ts"
import { usageOf } from "../../src/core/ledger/ledger.ts"
import { startFake } from "../lib/fake-openai.ts"
import { pgSchema, pgServer, SKIP_PG } from "../lib/pg.ts"
import { spool, start, until } from "../lib/spool.ts"
import { tmpdir } from "../lib/tmp.ts"

const KEY = "sk-test-migrate-0123456789"
const env = { OPENAI_API_KEY: KEY }

const openaiJob = (url: string) => `name = "laptop"
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
retry_base_s = 0.05
retry_cap_s = 0.2
`

const batchJob = (url: string) => `name = "laptop-batch"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "openai"
model = "gpt-4.1-mini"
mode = "batch"
base_url = "${url}"
[request]
prompt = "Item {{n}}"
max_tokens = 20
[batch]
poll_s = 0.05
poll_max_s = 0.2
batch_size = 25
`

const mockJob = (name: string) => `name = "${name}"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "mock"
model = "mock-1"
[request]
prompt = "Item {{n}}"
`

const input = (n: number) =>
  Array.from({ length: n }, (_, i) => JSON.stringify({ id: `id-${i + 1}`, n: i + 1 })).join("\n") + "\n"

/** The counters a run's status is read from, as rows in key order: the same on both stores after a migration. */
const COUNTERS = {
  tallies: "run_id, state",
  progress: "run_id, bucket",
  error_tallies: "run_id, class",
  cache_tallies: "run_id",
} as const

function sqliteCounters(home: string): Record<string, unknown[]> {
  const db = new Database(`${home}/spool.db`, { readonly: true })
  try {
    const out: Record<string, unknown[]> = {}
    for (const [table, key] of Object.entries(COUNTERS))
      out[table] = db.query(`SELECT * FROM ${table} ORDER BY ${key}`).all()
    return out
  } finally {
    db.close()
  }
}

/** The other tables a migration copies, with their keys. */
const KEYS = {
  runs: "id",
  inputs: "run_id, idx",
  items: "id",
  attempts: "id",
  problems: "id",
  batches: "id",
  canaries: "run_id",
  reviews: "id",
} as const

/** How many rows a table of the SQLite store holds. */
function rowsOf(home: string, table: string): number {
  const db = new Database(`${home}/spool.db`, { readonly: true })
  try {
    return (db.query(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n
  } finally {
    db.close()
  }
}

async function pgCounters(sql: SQL, schema: string): Promise<Record<string, unknown[]>> {
  const out: Record<string, unknown[]> = {}
  for (const [table, key] of Object.entries(COUNTERS)) out[table] = await pgRows(sql, schema, table, key)
  return out
}

/** SQLite's columns of a PostgreSQL table (which may have more), in key order; tallies summed over their shards. */
async function pgRows(sql: SQL, schema: string, table: string, key: string): Promise<unknown[]> {
  const [{ cols }] = (await sql.unsafe(
    `SELECT array_agg(attname::text ORDER BY attnum) AS cols FROM pg_attribute
     WHERE attrelid = '"${schema}".${table}'::regclass AND attnum > 0 AND NOT attisdropped
     AND attname NOT IN ('shard', 'host', 'pid')`,
  )) as [{ cols: string[] }]
  const list = cols.map((c) => `"${c}"`).join(", ")
  if (table !== "tallies")
    return [...(await sql.unsafe(`SELECT ${list} FROM "${schema}".${table} ORDER BY ${key}`))]
  const sums = cols
    .filter((c) => c !== "run_id" && c !== "state")
    .map((c) => (c === "n" ? "sum(n)::int AS n" : `sum("${c}")::float8 AS "${c}"`))
  return [
    ...(await sql.unsafe(
      `SELECT run_id, state, ${sums.join(", ")} FROM "${schema}".tallies GROUP BY run_id, state ORDER BY ${key}`,
    )),
  ]
}

/** How many rows each table of a schema holds. */
async function rowCounts(sql: SQL, schema: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {}
  for (const table of [
    "runs",
    "inputs",
    "items",
    "attempts",
    "problems",
    "batches",
    "tallies",
    "progress",
    "error_tallies",
    "canaries",
    "workers",
  ]) {
    const [row] = await sql.unsafe(`SELECT count(*)::int AS n FROM "${schema}".${table}`)
    out[table] = (row as { n: number }).n
  }
  return out
}

/**
 * A status view without what moves with the clock, nor the workers' rows: the registry is not migrated (a killed
 * worker's row stays behind on SQLite; the PostgreSQL store starts with none).
 */
function counted(stdout: string) {
  const view = JSON.parse(stdout) as Record<string, unknown>
  for (const moving of ["elapsed_s", "rate_per_s", "eta_s", "worker_list"]) delete view[moving]
  return view
}

describe.skipIf(SKIP_PG)("spool migrate", () => {
  // SIGINT: a clean stop; SIGKILL: items left running, their leases held by a process gone, which recover takes back
  for (const signal of ["SIGINT", "SIGKILL"] as const)
    test(`a run stopped half way on SQLite (${signal}) is copied into PostgreSQL (refused while its worker lives) and finished there: every id once, nothing completed paid twice, the same counts right after`, async () => {
      await using tmp = await tmpdir()
      await using fake = await startFake({
        apiKey: KEY,
        latencyMs: 30,
        faults: { rate: 0.1, kinds: ["500"], seed: 15 },
      })
      await using pg = await pgSchema()
      const sql = new SQL(await pgServer())
      try {
        const N = 300
        writeFileSync(tmp.join("in.jsonl"), input(N))
        writeFileSync(tmp.join("job.toml"), openaiJob(fake.url))
        const home = tmp.join("laptop")
        const child = start(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
        await until(() => fake.paid.size >= 60, 30_000, "60 completions")

        // while its worker lives, the run is not migrated, and the schema is not even made
        const early = await spool(["migrate", "--from", home, "--to", pg.url], { cwd: tmp.path, env })
        expect(early.code).toBe(2)
        expect(early.stderr).toContain(`spool: a worker is still at work on run "laptop" in ${home} (`)
        const [made] = await sql`SELECT to_regclass(${`"${pg.schema}".runs`})::text AS t`
        expect(made.t).toBeNull()

        child.kill(signal)
        const code = await child.exited
        if (signal === "SIGINT") expect(code).toBe(130)
        const before = await spool(["status", "--json", "--home", home], { cwd: tmp.path, env })
        const laptop = counted(before.stdout)
        const counts = laptop.counts as Record<string, number>
        if (signal === "SIGKILL") expect(counts.running).toBeGreaterThan(0)
        const finished = (
          await spool(["results", "--home", home, "--state", "completed"], { cwd: tmp.path, env })
        ).stdout
          .trim()
          .split("\n")
          .map((l) => (JSON.parse(l) as { id: string }).id)
        expect(finished.length).toBe(counts.completed ?? -1)
        expect(counts.completed).toBeGreaterThanOrEqual(60)
        expect(counts.completed).toBeLessThan(N)
        expect((laptop.errors as unknown[]).length).toBeGreaterThan(0)

        const moved = await spool(["migrate", "--from", home, "--to", pg.url], { cwd: tmp.path, env })
        expect(moved.code).toBe(0)
        const attempts = rowsOf(home, "attempts")
        expect(moved.stderr).toContain(`migrated 1 run to ${pg.url}: "laptop" (1, running)\n`)
        expect(moved.stderr).toContain(
          `  ${N} items, ${attempts} attempts, 0 batches, 0 problems, ${rowsOf(home, "cache")} cached answers\n`.replace(
            /\d{4,}/g,
            (d) => Number(d).toLocaleString("en-US"),
          ),
        )

        // right after: the same status, and the same counters row for row
        const there = await spool(["status", "--json", "--store", pg.url], { cwd: tmp.path, env })
        expect(there.code).toBe(0)
        expect(counted(there.stdout)).toEqual(laptop)
        expect(await pgCounters(sql, pg.schema)).toEqual(sqliteCounters(home))
        const rows = await rowCounts(sql, pg.schema)
        expect(rows).toMatchObject({ runs: 1, inputs: 1, items: N, attempts, batches: 0, workers: 0 })

        // the fleet goes on, with a home of its own
        const done = await spool(["run", "job.toml", "--store", pg.url, "--home", tmp.join("fleet")], {
          cwd: tmp.path,
          env,
        })
        expect(done.stderr).toContain(`run "laptop": ${N} completed, 0 failed of ${N}`)
        expect(done.code).toBe(0)
        const results = await spool(["results", "--store", pg.url], { cwd: tmp.path, env })
        const lines = results.stdout
          .trim()
          .split("\n")
          .map((l) => JSON.parse(l) as { id: string; state: string })
        expect(lines.length).toBe(N)
        expect(new Set(lines.map((l) => l.id)).size).toBe(N)
        expect(lines.every((l) => l.state === "completed")).toBe(true)
        // none completed on the laptop was sent again; after a clean stop, nothing at all was paid twice (a kill may
        // cut short a call that was paid but not recorded: that one is sent again, as on SQLite)
        expect(fake.paid.size).toBe(N)
        expect(finished.map((id) => fake.paid.get(`Item ${id.slice(3)}`))).toEqual(finished.map(() => 1))
        if (signal === "SIGINT") expect([...fake.paid.values()].every((n) => n === 1)).toBe(true)
        // the copied attempts kept their ids and the new ones came after them (the sequence was set past them)
        const [ids] = await sql.unsafe(
          `SELECT (SELECT max(id) FROM "${pg.schema}".items)::int AS items,
         (SELECT count(*) FROM "${pg.schema}".attempts WHERE id <= ${attempts})::int AS copied`,
        )
        expect(ids).toEqual({ items: N, copied: attempts })
      } finally {
        await sql.close()
      }
    }, 120_000)

  test("an embedding run's vectors are copied as their bytes, and read back the same from PostgreSQL", async () => {
    await using tmp = await tmpdir()
    await using pg = await pgSchema()
    writeFileSync(
      tmp.join("in.jsonl"),
      Array.from({ length: 30 }, (_, i) => JSON.stringify({ id: `e${i + 1}`, text: `text ${i + 1}` })).join(
        "\n",
      ) + "\n",
    )
    writeFileSync(
      tmp.join("embed.toml"),
      `name = "embed"\n[source]\npath = "in.jsonl"\nid = "id"\n[provider]\nname = "mock"\nmodel = "mock-embed"\n[request]\nkind = "embedding"\ninput = "{{text}}"\n`,
    )
    const home = tmp.join("laptop")
    expect((await spool(["run", "embed.toml", "--home", home], { cwd: tmp.path })).code).toBe(0)
    // pages of 4 rows: a vector is counted as the text it is sent as
    await copy({ from: home, to: pg.url, page: { rows: 4 } })
    const vectors = async (where: string[]) =>
      (await spool(["results", ...where], { cwd: tmp.path })).stdout
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as { id: string; vector: number[] })
        .map((r) => [r.id, r.vector])
    const here = await vectors(["--home", home])
    expect(here).toHaveLength(30)
    expect((here[0]![1] as number[]).length).toBe(8)
    expect(await vectors(["--store", pg.url])).toEqual(here)
  }, 60_000)

  test("--run copies only that run; a schema that holds a run of the same name or id is refused with exit 2 and left as it was", async () => {
    await using tmp = await tmpdir()
    await using pg = await pgSchema()
    const sql = new SQL(await pgServer())
    try {
      writeFileSync(tmp.join("in.jsonl"), input(40))
      const laptop = tmp.join("laptop")
      for (const name of ["first", "second"]) {
        writeFileSync(tmp.join(`${name}.toml`), mockJob(name))
        expect((await spool(["run", `${name}.toml`, "--home", laptop], { cwd: tmp.path })).code).toBe(0)
      }
      const one = await spool(["migrate", "--from", laptop, "--to", pg.url, "--run", "second"], {
        cwd: tmp.path,
      })
      expect(one.code).toBe(0)
      expect(one.stderr).toContain(
        `migrated 1 run to ${pg.url}: "second" (2, completed)\n  40 items, 40 attempts`,
      )
      const after = await rowCounts(sql, pg.schema)
      expect(after).toMatchObject({ runs: 1, items: 40, attempts: 40 })

      // every run of the laptop: "second" is there already
      const again = await spool(["migrate", "--to", pg.url], { cwd: tmp.path, env: { SPOOL_HOME: laptop } })
      expect(again.code).toBe(2)
      expect(again.stderr).toBe(
        `spool: the store ${pg.url} already holds run 2 ("second"): a migration does not mix two stores; nothing was copied\n` +
          "  Migrate into a schema of its own: add ?schema=NAME to the URL (e.g. ?schema=laptop), and run there with the same URL.\n",
      )
      expect(await rowCounts(sql, pg.schema)).toEqual(after)

      // another store whose second run has the same id, under another name
      const other = tmp.join("other")
      for (const name of ["third", "fourth"]) {
        writeFileSync(tmp.join(`${name}.toml`), mockJob(name))
        expect((await spool(["run", `${name}.toml`, "--home", other], { cwd: tmp.path })).code).toBe(0)
      }
      const clash = await spool(["migrate", "--from", other], { cwd: tmp.path, env: { SPOOL_STORE: pg.url } })
      expect(clash.code).toBe(2)
      expect(clash.stderr).toContain(`already holds run 2 ("second")`)
      expect(await rowCounts(sql, pg.schema)).toEqual(after)

      // its first run alone clashes with neither: it goes in beside "second"; the cache entries of the same requests
      // that the store holds already are kept as they are
      const entries = async () => [
        ...(await sql.unsafe(`SELECT key, created_at FROM "${pg.schema}".cache ORDER BY key COLLATE "C"`)),
      ]
      const held = await entries()
      expect(held.length).toBe(40)
      const third = await spool(["migrate", "--from", other, "--to", pg.url, "--run", "third"], {
        cwd: tmp.path,
      })
      expect(third.code).toBe(0)
      expect(await rowCounts(sql, pg.schema)).toMatchObject({ runs: 2, items: 80, attempts: 80 })
      expect(await entries()).toEqual(held)
    } finally {
      await sql.close()
    }
  }, 60_000)

  test("copied in pages of 7 rows (or of a few hundred characters), every table but workers equals the SQLite store's row for row, column for column", async () => {
    await using tmp = await tmpdir()
    await using paged = await pgSchema()
    await using narrow = await pgSchema()
    const sql = new SQL(await pgServer())
    try {
      writeFileSync(tmp.join("in.jsonl"), input(40) + "not json\n")
      const home = tmp.join("laptop")
      for (const name of ["first", "second"]) {
        writeFileSync(tmp.join(`${name}.toml`), mockJob(name))
        await spool(["run", `${name}.toml`, "--home", home], { cwd: tmp.path })
      }
      // a third run's answers are not the JSON its schema asks for: each is left for review, and three are decided
      writeFileSync(
        tmp.join("third.toml"),
        `${mockJob("third")}[output]\nname = "label"\n[output.schema]\ntype = "object"\nrequired = ["label"]\nadditionalProperties = false\n[output.schema.properties.label]\ntype = "string"\n[limits]\nmax_attempts = 1\n`,
      )
      expect((await spool(["run", "third.toml", "--home", home], { cwd: tmp.path })).code).toBe(3)
      const decide = (args: string[]) =>
        spool(["review", ...args, "--run", "third", "--home", home], { cwd: tmp.path })
      expect((await decide(["reject", "id-1", "id-2", "--reason", "not JSON"])).code).toBe(0)
      expect((await decide(["edit", "id-3", "--output", '{"label":"three"}'])).code).toBe(0)
      const a = await copy({ from: home, to: paged.url, page: { rows: 7 } })
      const b = await copy({ from: home, to: narrow.url, page: { chars: 300 } })
      expect(a.rows).toEqual(b.rows)
      // the second run was answered whole by the cache the first one filled: its items and the entries go along
      expect(a.rows).toMatchObject({
        runs: 3,
        inputs: 3,
        items: 120,
        attempts: 120,
        problems: 3,
        canaries: 0,
        cache_tallies: 3,
        cache: 40,
        reviews: 3,
      })
      const db = new Database(`${home}/spool.db`, { readonly: true })
      try {
        for (const [table, key] of Object.entries({ ...COUNTERS, ...KEYS })) {
          const want = db.query(`SELECT * FROM ${table} ORDER BY ${key}`).all()
          expect(want.length).toBe(a.rows[table as keyof typeof a.rows])
          for (const schema of [paged.schema, narrow.schema]) {
            expect(await pgRows(sql, schema, table, key)).toEqual(want)
          }
        }
        // the cache's entries, but for SQLite's place of each (its order of writing, and a slot of the key's hash)
        const entries = db
          .query<Record<string, unknown>, []>("SELECT * FROM cache ORDER BY key")
          .all()
          .map(({ id: _, slot: __, ...entry }) => entry)
        expect(entries.length).toBe(40)
        const hits = db
          .query<{ key: string; cached_usage: string }, []>(
            "SELECT key, cached_usage FROM items WHERE run_id = 2 ORDER BY id",
          )
          .all()
        expect(hits.length).toBe(40)
        expect(usageOf(hits[0]!.cached_usage)).toMatchObject({ cost_usd: null })
        for (const schema of [paged.schema, narrow.schema]) {
          expect(await pgRows(sql, schema, "cache", `key COLLATE "C"`)).toEqual(entries)
          expect([
            ...(await sql.unsafe(
              `SELECT key, cached_usage FROM "${schema}".items WHERE run_id = 2 ORDER BY id`,
            )),
          ]).toEqual(hits)
        }
      } finally {
        db.close()
      }
    } finally {
      await sql.close()
    }
  }, 60_000)

  test("a batch run stopped with its batches at the provider goes on in PostgreSQL from a worker with none of the laptop's files: its batches adopted, every item paid once", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, batch: { processingMs: 3_000 } })
    await using pg = await pgSchema()
    const N = 60
    writeFileSync(tmp.join("in.jsonl"), input(N))
    writeFileSync(tmp.join("job.toml"), batchJob(fake.url))
    const home = tmp.join("laptop")
    const child = start(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    await until(() => fake.batch.batches.length === 3, 30_000, "three batches")
    child.kill("SIGINT")
    expect(await child.exited).toBe(130)
    expect(fake.paid.size).toBe(0)

    const moved = await spool(["migrate", "--from", home, "--to", pg.url], { cwd: tmp.path, env })
    expect(moved.code).toBe(0)
    expect(moved.stderr).toContain(`  ${N} items, 0 attempts, 3 batches, 0 problems, 0 cached answers\n`)
    expect(moved.stderr).toContain(
      "  3 live batches went along: whichever worker drives the run's batches adopts them;",
    )
    const fleet = await spool(["run", "job.toml", "--store", pg.url, "--home", tmp.join("fleet")], {
      cwd: tmp.path,
      env,
    })
    expect(fleet.stderr).toContain(`run "laptop-batch": ${N} completed, 0 failed of ${N}`)
    expect(fleet.code).toBe(0)
    // adopted, not sent again: still three batches, every line paid once
    expect(fake.batch.batches.length).toBe(3)
    expect(fake.paid.size).toBe(N)
    expect([...fake.paid.values()].every((n) => n === 1)).toBe(true)
  }, 60_000)
})
