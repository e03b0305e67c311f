/**
 * How long workers on one PostgreSQL run wait when nothing holds them: not a benchmark, bounds that an idle sleep
 * breaks. A worker that joins a run another has just created takes items as soon as there are some (the NOTIFY of
 * an ingested batch), and every worker exits within moments of the run's last item: the last call's end wakes its
 * loop, and the run's completion (a NOTIFY) wakes the others. A wake-up lost while the loop read the ledger made a
 * worker sleep LISTENING_POLL_MS (5 s) after the last item; the bound catches it when that race comes.
 */
import { describe, expect, test } from "bun:test"
import { SQL } from "bun"
import { mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { startFake } from "../lib/fake-openai.ts"
import { pgSchema, pgServer, SKIP_PG } from "../lib/pg.ts"
import { start } from "../lib/spool.ts"
import { tmpdir } from "../lib/tmp.ts"

const KEY = "sk-test-fleet-timing-0123456789"
const N = 4000

describe.skipIf(SKIP_PG)("the timing of workers on one PostgreSQL run", () => {
  test("two workers started together both take items at once and both exit within 2 s of the run's last item", async () => {
    await using tmp = await tmpdir()
    await using pg = await pgSchema()
    // 2 × 64 calls of 50 ms: about 2 s of work, long enough for both to join; the calls' ends come thick, and the
    // last one came during the loop's read of the ledger (its wake-up lost) in one run of five before the fix
    await using fake = await startFake({ apiKey: KEY, latencyMs: 50 })
    mkdirSync(tmp.join("job"))
    writeFileSync(
      tmp.join("job", "in.jsonl"),
      Array.from({ length: N }, (_, i) => JSON.stringify({ id: `id-${i + 1}` })).join("\n") + "\n",
    )
    const jobPath = tmp.join("job", "job.toml")
    writeFileSync(
      jobPath,
      `name = "timing"\n[source]\npath = "in.jsonl"\nid = "id"\n[provider]\nname = "openai"\nmodel = "gpt-4.1-mini"\n` +
        `base_url = "${fake.url}"\n[request]\nprompt = "Item {{id}}"\nmax_tokens = 8\n[limits]\nconcurrency = 64\n`,
    )
    const workers = ["a", "b"].map((host) => {
      const dir = tmp.join(`m-${host}`)
      mkdirSync(dir)
      const proc = start(["run", jobPath, "--store", pg.url, "--home", join(dir, "home")], {
        cwd: dir,
        env: { OPENAI_API_KEY: KEY, SPOOL_HOST: host },
      })
      const ended = Promise.all([new Response(proc.stderr).text(), proc.exited]).then(([stderr, code]) => ({
        stderr,
        code,
        at: Date.now(),
      }))
      return { host, ended }
    })
    const ended = await Promise.all(workers.map((w) => w.ended))
    for (const e of ended) {
      expect(e.stderr).toContain(`run "timing": ${N} completed, 0 failed of ${N}`)
      expect(e.code).toBe(0)
    }

    const sql = new SQL(await pgServer(), { max: 1 })
    try {
      const owners: { host: string; first: number; n: number }[] = await sql.unsafe(
        `SELECT split_part(owner, ':', 1) AS host, min(started_at)::float8 AS first, count(*)::int AS n
         FROM "${pg.schema}".attempts GROUP BY 1 ORDER BY 1`,
      )
      const [{ last }] = (await sql.unsafe(
        `SELECT max(ended_at)::float8 AS last FROM "${pg.schema}".attempts`,
      )) as [{ last: number }]
      // both worked; the one that joined began within a second of the other (an idle sleep to the next poll is 5 s)
      expect(owners.map((o) => o.host)).toEqual(["a", "b"])
      expect(owners.reduce((s, o) => s + o.n, 0)).toBe(N)
      const firsts = owners.map((o) => o.first)
      expect(Math.max(...firsts) - Math.min(...firsts)).toBeLessThan(1000)
      // each exited within 2 s of the last item's end (a worker whose wake-up was lost slept 5 s after it)
      const after = ended.map((e) => e.at - last)
      expect(after.every((ms) => ms < 2000)).toBe(true)
    } finally {
      await sql.close()
    }
  }, 60_000)
})
