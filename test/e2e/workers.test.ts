import { describe, expect, test } from "bun:test"
import { Database } from "bun:sqlite"
import { existsSync, writeFileSync } from "node:fs"
import { startFake } from "../lib/fake-openai.ts"
import { start, until } from "../lib/spool.ts"
import { tmpdir } from "../lib/tmp.ts"

const KEY = "sk-test-workers-0123"

describe("several workers on one store", () => {
  test("three dist/spool processes share one run: every item is done once, no item was held by two", async () => {
    await using tmp = await tmpdir()
    // 30 ms a call: one worker alone would take 4.5 s over the 1,200, far longer than the others take to start
    // (at 5 ms the first finished the run alone while CI's machine was starting the other two)
    await using fake = await startFake({ apiKey: KEY, latencyMs: 30 })
    const n = 1200
    writeFileSync(
      tmp.join("in.jsonl"),
      Array.from({ length: n }, (_, i) => JSON.stringify({ t: `w${i}` })).join("\n") + "\n",
    )
    writeFileSync(
      tmp.join("job.toml"),
      `name = "shared"\n[source]\npath = "in.jsonl"\n[provider]\nmodel = "m"\nbase_url = "${fake.url}"\n[request]\nprompt = "{{t}}"\n[limits]\nconcurrency = 8\n`,
    )
    const home = tmp.join("home")
    const workers = [0, 1, 2].map(() =>
      start(["run", "job.toml", "--home", home], { cwd: tmp.path, env: { OPENAI_API_KEY: KEY } }),
    )
    const ended = await Promise.all(
      workers.map(async (w) => ({ code: await w.exited, stderr: await new Response(w.stderr).text() })),
    )
    expect(ended.filter((e) => e.code !== 0)).toEqual([])
    expect(fake.paid.size).toBe(n)
    expect([...fake.paid.values()].every((c) => c === 1)).toBe(true)
    const db = new Database(`${home}/spool.db`, { readonly: true })
    const owners = db
      .query<{ owner: string; n: number }, []>("SELECT owner, count(*) AS n FROM attempts GROUP BY owner")
      .all()
    const states = db
      .query<{ state: string; n: number }, []>("SELECT state, count(*) AS n FROM items GROUP BY state")
      .all()
    const runs = db.query<{ n: number }, []>("SELECT count(*) AS n FROM runs").get()
    db.close()
    expect(states).toEqual([{ state: "completed", n }])
    expect(runs?.n).toBe(1)
    // every worker took part, and the attempts add up to one per item
    expect(owners.length).toBeGreaterThanOrEqual(2)
    expect(owners.reduce((a, o) => a + o.n, 0)).toBe(n)
  }, 60_000)

  test("a worker that joins a running job counts the whole run in its progress and its summary", async () => {
    await using tmp = await tmpdir()
    const n = 400
    writeFileSync(
      tmp.join("in.jsonl"),
      Array.from({ length: n }, (_, i) => JSON.stringify({ t: `j${i}` })).join("\n") + "\n",
    )
    writeFileSync(
      tmp.join("job.toml"),
      `name = "joined"\n[source]\npath = "in.jsonl"\n[provider]\nname = "mock"\n[provider.options]\nlatency_ms = 20\n[request]\nprompt = "{{t}}"\n[limits]\nconcurrency = 4\n`,
    )
    const home = tmp.join("home")
    const first = start(["run", "job.toml", "--home", home], { cwd: tmp.path })
    // the second starts once the first has finished some items (and has many left: ~2 s of work at 4 × 20 ms)
    const done = () => {
      if (!existsSync(`${home}/spool.db`)) return 0
      const db = new Database(`${home}/spool.db`, { readonly: true })
      try {
        return (
          db.query<{ n: number }, []>("SELECT count(*) AS n FROM items WHERE state = 'completed'").get()?.n ??
          0
        )
      } catch {
        return 0
      } finally {
        db.close()
      }
    }
    await until(() => done() >= 40, 20_000, "the first worker's first 40 items")
    const second = start(["run", "job.toml", "--home", home], { cwd: tmp.path })
    const ended = await Promise.all(
      [first, second].map(async (w) => ({
        code: await w.exited,
        stderr: await new Response(w.stderr).text(),
      })),
    )
    expect(ended.map((e) => e.code)).toEqual([0, 0])
    const lines = ended[1]!.stderr.trim().split("\n")
    // its first progress line: the run's items done so far, of the run's total
    const progress = lines.find((l) => / done · /.test(l))
    expect(progress).toMatch(/^\d+\/400 done · 0 failed · /)
    expect(Number(progress?.split("/")[0])).toBeGreaterThanOrEqual(40)
    for (const e of ended)
      expect(e.stderr.trim().split("\n").at(-1)).toBe(
        'run "joined": 400 completed, 0 failed of 400 — `spool results joined` for the outputs',
      )
  }, 60_000)
})
