/** `spool watch`, as a user runs it: a folder that files are dropped into and appended to, then Ctrl+C and resume. */
import { describe, expect, test } from "bun:test"
import { Database } from "bun:sqlite"
import { appendFileSync, mkdirSync, writeFileSync } from "node:fs"
import { spool, start, until } from "../lib/spool.ts"
import { tmpdir } from "../lib/tmp.ts"

const JOB = `name = "inbox"
[source]
path = "inbox/*.jsonl"
id = "id"
[provider]
name = "mock"
[provider.options]
latency_ms = 5
[request]
prompt = "{{text}}"
`

const line = (id: string, text: string) => JSON.stringify({ id, text }) + "\n"

/** Collects a stream's text as it comes, so a test can wait for a line and still read everything at the end. */
function collect(stream: ReadableStream<Uint8Array>) {
  const out = { text: "", done: Promise.resolve() }
  const decoder = new TextDecoder()
  out.done = (async () => {
    for await (const chunk of stream) out.text += decoder.decode(chunk, { stream: true })
  })()
  return out
}

describe("spool watch", () => {
  test("serves the page, ingests appended lines, a completed half line and new files once each, and resumes after Ctrl+C", async () => {
    await using tmp = await tmpdir()
    mkdirSync(tmp.join("inbox"))
    writeFileSync(tmp.join("job.toml"), JOB)
    writeFileSync(tmp.join("inbox", "a.jsonl"), line("a1", "alpha"))
    const home = tmp.join("home")
    const env = { SPOOL_WATCH_POLL_MS: "100" }
    const child = start(["watch", "job.toml", "--port", "0", "--home", home], { cwd: tmp.path, env })
    const stderr = collect(child.stderr)
    const stdout = collect(child.stdout)
    await until(() => /serving http:\/\/127\.0\.0\.1:\d+\//.test(stderr.text), 10_000, "the status page")
    const url = /serving (http:\/\/127\.0\.0\.1:\d+\/)/.exec(stderr.text)![1]!

    const db = () => new Database(`${home}/spool.db`, { readonly: true })
    const items = () => {
      const d = db()
      try {
        return d
          .query<{ input: number; key: string; state: string; output: string | null }, []>(
            "SELECT input, key, state, output FROM items ORDER BY id",
          )
          .all()
      } finally {
        d.close()
      }
    }
    const done = (n: number) => {
      const all = items()
      return all.length === n && all.every((i) => i.state === "completed")
    }

    await until(() => done(1), 10_000, "the first file's item")
    appendFileSync(tmp.join("inbox", "a.jsonl"), line("a2", "beta"))
    await until(() => done(2), 10_000, "the appended line")

    appendFileSync(tmp.join("inbox", "a.jsonl"), '{"id":"h1","text":"ha')
    writeFileSync(tmp.join("inbox", "b.jsonl"), line("b1", "gamma"))
    await until(() => done(3), 10_000, "the new file")
    // a later pass (another new file) has certainly seen the half line: it is still not an item
    writeFileSync(tmp.join("inbox", "c.jsonl"), line("c1", "delta"))
    await until(() => done(4), 10_000, "the second new file")
    expect(items().some((i) => i.key === "h1")).toBe(false)
    appendFileSync(tmp.join("inbox", "a.jsonl"), 'lf"}\n')
    await until(() => done(5), 10_000, "the completed half line")

    const page = await fetch(`${url}api/runs/inbox`)
    expect(page.status).toBe(200)
    expect(((await page.json()) as { counts: { completed: number } }).counts.completed).toBe(5)

    child.kill("SIGINT")
    expect(await child.exited).toBe(130)
    await Promise.all([stderr.done, stdout.done])
    expect(stdout.text).toBe("")
    const resume = /Resume with:\n {2}(.+)\n/.exec(stderr.text)?.[1]
    expect(resume).toBe(`spool watch job.toml --port 0 --home ${home}`)

    expect(items()).toEqual([
      { input: 0, key: "a1", state: "completed", output: "mock reply to: alpha" },
      { input: 0, key: "a2", state: "completed", output: "mock reply to: beta" },
      { input: 1, key: "b1", state: "completed", output: "mock reply to: gamma" },
      { input: 2, key: "c1", state: "completed", output: "mock reply to: delta" },
      { input: 0, key: "h1", state: "completed", output: "mock reply to: half" },
    ])

    // what arrived while nobody watched is read by a plain run, which then ends; nothing is asked twice
    writeFileSync(tmp.join("inbox", "0.jsonl"), line("z1", "zero"))
    appendFileSync(tmp.join("inbox", "b.jsonl"), line("b2", "epsilon"))
    const again = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path })
    expect(again.code).toBe(0)
    expect(again.stderr).toContain('run "inbox": 7 completed, 0 failed of 7')
    const keys = items().map((i) => `${i.input}/${i.key}`)
    expect(keys).toEqual(["0/a1", "0/a2", "1/b1", "2/c1", "0/h1", "1/b2", "3/z1"])
    const d = db()
    const attempts = d.query<{ n: number }, []>("SELECT count(*) AS n FROM attempts").get()!.n
    const integrity = d
      .query<{ integrity_check: string }, []>("PRAGMA integrity_check")
      .get()?.integrity_check
    d.close()
    expect(attempts).toBe(7)
    expect(integrity).toBe("ok")
  }, 60_000)

  test("a plain run refuses a glob that matches no file; watch waits for one", async () => {
    await using tmp = await tmpdir()
    mkdirSync(tmp.join("inbox"))
    writeFileSync(tmp.join("job.toml"), JOB)
    const refused = await spool(["run", "job.toml"], { cwd: tmp.path })
    expect(refused.code).toBe(2)
    expect(refused.stderr).toContain(`source.path: ${tmp.join("inbox", "*.jsonl")} matches no file`)

    const child = start(["watch", "job.toml", "--port", "0"], {
      cwd: tmp.path,
      env: { SPOOL_WATCH_POLL_MS: "100" },
    })
    const stderr = collect(child.stderr)
    await until(() => stderr.text.includes("serving http://127.0.0.1:"), 10_000, "the status page")
    writeFileSync(tmp.join("inbox", "first.jsonl"), line("f1", "first"))
    const count = () => {
      try {
        const d = new Database(tmp.join(".spool", "spool.db"), { readonly: true })
        try {
          return d
            .query<{ n: number }, []>("SELECT count(*) AS n FROM items WHERE state = 'completed'")
            .get()!.n
        } finally {
          d.close()
        }
      } catch {
        return 0
      }
    }
    await until(() => count() === 1, 10_000, "the first file's item")
    child.kill("SIGTERM")
    expect(await child.exited).toBe(130)
  }, 60_000)
})
