/** A run that stopped is shown `interrupted`: the worker registry, read by `status`, `runLine` and their texts. */
import { describe, expect, test } from "bun:test"
import { hostname } from "node:os"
import { FRESH_MS } from "../../../src/core/ledger/ledger.ts"
import * as sqlite from "../../../src/core/ledger/sqlite/sqlite.ts"
import { runLine, runsText, status, statusText } from "../../../src/core/report/report.ts"
import { seed } from "../../lib/ledger.ts"
import { tmpdir } from "../../lib/tmp.ts"

/** An owner id of a process of this host that has exited. */
async function exited(): Promise<string> {
  const child = Bun.spawn(["true"])
  await child.exited
  return `${hostname()}:${child.pid}:gone`
}

/** This test process, as a worker: alive while its beat is fresh. */
const here = `${hostname()}:${process.pid}:here`

describe("a run that no process works on is shown interrupted", () => {
  test("running with no worker: status, its JSON and its text say interrupted, with no rate or ETA and the resume command", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const { run } = await seed(l, 3)
    const now = run.created_at + 12_000
    const v = await status(l, run, now)
    expect([v.state, v.workers, v.rate_per_s, v.eta_s, v.resume]).toEqual([
      "interrupted",
      0,
      0,
      null,
      "spool run job.toml",
    ])
    // the ledger keeps it running: `spool run` goes on with it
    expect((await l.runs.get(run.id))?.state).toBe("running")
    expect(statusText(v)).toBe(
      [
        "run r (#1) · interrupted — no spool process is working on it",
        "items     3: completed 0 · pending 3",
        "attempts  0 · tokens in 0 out 0",
        "spend     $0.00 so far (built-in prices for gpt-4o-mini (2025-11))",
        "time      elapsed 12s · no rate or ETA while nothing runs it",
        "resume    spool run job.toml",
        "",
      ].join("\n"),
    )
    await l.close()
  })

  test("a live worker makes it running; one whose process is gone, or whose beat is stale, does not", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const { run } = await seed(l, 2)
    const now = Date.now()
    await l.workers.beat(run.id, await exited(), now)
    await l.workers.beat(run.id, "elsewhere:7:stale", now - FRESH_MS)
    expect((await status(l, run, now)).state).toBe("interrupted")
    await l.workers.beat(run.id, "elsewhere:8:fresh", now - 1_000)
    const v = await status(l, run, now)
    expect([v.state, v.workers]).toEqual(["running", 1])
    expect(statusText(v).split("\n")[0]).toBe("run r (#1) · running")
    expect(statusText(v)).toContain("resume    spool run job.toml\n")
    // its last beat grows old: nobody is left
    expect((await status(l, run, now + FRESH_MS)).state).toBe("interrupted")
    await l.close()
  })

  test("two workers, one gone: still running, with one worker; both gone: interrupted", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const { run } = await seed(l, 2)
    const now = Date.now()
    await l.workers.beat(run.id, here, now)
    await l.workers.beat(run.id, "elsewhere:9:b", now)
    const both = await status(l, run, now)
    expect([both.state, both.workers]).toEqual(["running", 2])
    expect(statusText(both).split("\n")[0]).toBe("run r (#1) · running (2 workers)")
    // each is listed where it runs, with the items it holds and its last beat
    await l.claims.step(run.id, "elsewhere:9:b", [], 1, 60_000)
    const listed = await status(l, run, now)
    const beat = new Date(now).toISOString()
    // the first started first; started together, by owner id
    const [first, second] = [hostname(), "elsewhere"].sort()
    const views = {
      [hostname()]: {
        host: hostname(),
        pid: process.pid,
        items: 0,
        started_at: beat,
        beat_at: beat,
        alive: true,
      },
      elsewhere: { host: "elsewhere", pid: 9, items: 1, started_at: beat, beat_at: beat, alive: true },
    }
    expect(listed.worker_list).toEqual([views[first!]!, views[second!]!])
    const lines = {
      [hostname()]: `  ${hostname()} pid ${process.pid} · 0 item(s) held · last beat ${beat.slice(11, 19)} UTC`,
      elsewhere: `  elsewhere pid 9 · 1 item(s) held · last beat ${beat.slice(11, 19)} UTC`,
    }
    expect(statusText(listed)).toContain(["workers", lines[first!], lines[second!]].join("\n"))
    await l.workers.leave(run.id, here)
    const one = await status(l, run, now)
    expect([one.state, one.workers]).toEqual(["running", 1])
    await l.workers.leave(run.id, "elsewhere:9:b")
    expect((await status(l, run, now)).state).toBe("interrupted")
    await l.close()
  })

  test("a paused or finished run is shown as it is stored, worker or not", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const { run } = await seed(l, 1)
    await l.runs.setState(run.id, "paused", "HTTP 401: check the key")
    const paused = await status(l, (await l.runs.get(run.id))!)
    expect([paused.state, paused.reason, paused.workers]).toEqual(["paused", "HTTP 401: check the key", 0])
    expect(
      statusText(paused)
        .split("\n")
        .find((t) => t.startsWith("time")),
    ).toEndWith("· ETA unknown")
    await l.runs.setState(run.id, "completed")
    // a finished run has nothing left to wait for: its time line has no ETA
    const done = await status(l, (await l.runs.get(run.id))!)
    expect(
      statusText(done)
        .split("\n")
        .find((t) => t.startsWith("time")),
    ).toMatch(/^time {6}elapsed \S+ · [\d.]+\/s$/)
    const line = await runLine(l, (await l.runs.get(run.id))!)
    expect([line.state, line.resume]).toEqual(["completed", null])
    await l.close()
  })

  test("the runs list shows an interrupted run with its resume command, a live one without", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const first = await seed(l, 4, "first")
    const second = await seed(l, 2, "second")
    const [c] = await l.claims.step(first.run.id, "w", [], 1, 60_000)
    await l.claims.step(
      first.run.id,
      "w",
      [{ item: c!.id, attempt: 1, to: "completed", label: "ok", output: "x", latencyMs: 1, endedAt: 1 }],
      0,
      60_000,
    )
    await l.workers.beat(second.run.id, here)
    const lines = [await runLine(l, first.run), await runLine(l, second.run)]
    expect(lines.map((r) => [r.name, r.state, r.workers, r.resume, r.completed, r.total])).toEqual([
      ["first", "interrupted", 0, "spool run job.toml", 1, 4],
      ["second", "running", 1, null, 0, 2],
    ])
    const at = (r: { created_at: string }) => r.created_at
    expect(runsText(lines)).toBe(
      [
        "  id  name                     state                    progress",
        `   1  first                    interrupted              1/4 done  ${at(lines[0]!)}`,
        "      resume: spool run job.toml",
        `   2  second                   running                  0/2 done  ${at(lines[1]!)}`,
        "",
      ].join("\n"),
    )
    await l.close()
  })

  test("only a running run has an ETA: a paused or cancelled one with items left has none, a live one has one", async () => {
    await using tmp = await tmpdir()
    const l = sqlite.open(tmp.path)
    const { run } = await seed(l, 4)
    const [c] = await l.claims.step(run.id, "w", [], 1, 60_000)
    const now = Date.now()
    await l.claims.step(
      run.id,
      "w",
      [{ item: c!.id, attempt: 1, to: "completed", label: "ok", output: "x", latencyMs: 1, endedAt: now }],
      0,
      60_000,
    )
    await l.workers.beat(run.id, here, now)
    const live = await status(l, run, now)
    expect([live.state, live.eta_s === null]).toEqual(["running", false])
    await l.runs.setState(run.id, "paused", "paused by `spool pause`")
    const paused = await status(l, (await l.runs.get(run.id))!, now)
    expect([paused.state, paused.eta_s]).toEqual(["paused", null])
    await l.runs.setState(run.id, "cancelled", "cancelled by `spool cancel`")
    const cancelled = await status(l, (await l.runs.get(run.id))!, now)
    expect([cancelled.state, cancelled.eta_s]).toEqual(["cancelled", null])
    expect(statusText(cancelled)).toContain("ETA unknown")
    await l.close()
  })
})
