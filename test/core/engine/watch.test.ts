import { afterEach, describe, expect, test } from "bun:test"
import { Database } from "bun:sqlite"
import { appendFileSync, mkdirSync, rmSync, writeFileSync } from "node:fs"
import * as engine from "../../../src/core/engine/run.ts"
import { SourceChangedError } from "../../../src/plugins/api/errors.ts"
import { until } from "../../lib/spool.ts"
import { tmpdir, type Tmp } from "../../lib/tmp.ts"

const JOB = `name = "inbox"
[[sources]]
path = "inbox/*.jsonl"
id = "id"
[[sources]]
path = "feed.csv"
id = "id"
[provider]
name = "mock"
[request]
prompt = "{{text}}"
[limits]
concurrency = 4
`

const line = (id: string, text: string) => JSON.stringify({ id, text }) + "\n"

function start(tmp: Tmp, follow: boolean) {
  return engine.prepare({
    file: tmp.join("job.toml"),
    flags: {},
    home: tmp.join(".spool"),
    newRun: false,
    reingest: false,
    resume: "spool watch job.toml",
    follow,
  })
}

interface Row {
  input: number
  key: string
  state: string
  output: string | null
  data: string
}

/** The ledger as another process sees it: committed rows only. */
function ledger(tmp: Tmp) {
  const db = new Database(tmp.join(".spool", "spool.db"), { readonly: true })
  return {
    items: () => db.query<Row, []>("SELECT input, key, state, output, data FROM items ORDER BY id").all(),
    inputs: () =>
      db
        .query<{ idx: number; path: string; checkpoint: string | null }, []>(
          "SELECT idx, path, checkpoint FROM inputs ORDER BY idx",
        )
        .all(),
    done: (n: number) => {
      const rows = db.query<Row, []>("SELECT state FROM items").all()
      return rows.length === n && rows.every((r) => r.state === "completed")
    },
    close: () => db.close(),
  }
}

/** A watch over an inbox holding one line (a1) and an empty CSV feed, once that line is done. */
async function watching(tmp: Tmp, pollMs: number) {
  process.env.SPOOL_WATCH_POLL_MS = String(pollMs)
  mkdirSync(tmp.join("inbox"))
  writeFileSync(tmp.join("job.toml"), JOB)
  writeFileSync(tmp.join("inbox", "a.jsonl"), line("a1", "alpha"))
  writeFileSync(tmp.join("feed.csv"), "id,text\n")
  const session = await start(tmp, true)
  const ending = session.execute()
  const db = ledger(tmp)
  await until(() => db.done(1), 10_000, "the first item")
  return { session, ending, db }
}

afterEach(() => {
  delete process.env.SPOOL_WATCH_POLL_MS
})

describe("follow mode (spool watch)", () => {
  test("appended lines, a half line once its newline comes, new files of the glob and CSV rows all become one item each", async () => {
    await using tmp = await tmpdir()
    process.env.SPOOL_WATCH_POLL_MS = "50"
    mkdirSync(tmp.join("inbox"))
    writeFileSync(tmp.join("job.toml"), JOB)
    writeFileSync(tmp.join("inbox", "a.jsonl"), line("a1", "alpha") + line("a2", "beta"))
    writeFileSync(tmp.join("feed.csv"), "id,text\nc1,gamma\n")
    const session = await start(tmp, true)
    const ending = session.execute()
    const db = ledger(tmp)
    try {
      await until(() => db.done(3), 10_000, "the first three items")

      appendFileSync(tmp.join("inbox", "a.jsonl"), line("a3", "delta") + line("a4", "epsilon"))
      await until(() => db.done(5), 10_000, "the appended lines")

      // half a line: read up to its start, and no further, until its newline is written
      const whole = Bun.file(tmp.join("inbox", "a.jsonl")).size
      appendFileSync(tmp.join("inbox", "a.jsonl"), '{"id":"h1","text":"ha')
      // two later passes (each one's CSV row done) have certainly looked at the half line
      appendFileSync(tmp.join("feed.csv"), "c2,zeta\n")
      await until(() => db.done(6), 10_000, "the first CSV row")
      appendFileSync(tmp.join("feed.csv"), "c3,eta\n")
      await until(() => db.done(7), 10_000, "the second CSV row")
      expect(db.items().filter((r) => r.key === "h1")).toEqual([])
      const a = db.inputs()[0]!
      expect(JSON.parse(a.checkpoint!).offset).toBe(whole)

      appendFileSync(tmp.join("inbox", "a.jsonl"), 'lf"}\n')
      await until(() => db.done(8), 10_000, "the completed half line")
      const half = db.items().filter((r) => r.key === "h1")
      expect(half.map((r) => [r.input, JSON.parse(r.data), r.output])).toEqual([
        [0, { id: "h1", text: "half" }, "mock reply to: half"],
      ])

      // a new file matching the glob becomes a new input, after the others; a file that does not match is ignored
      writeFileSync(tmp.join("inbox", "b.jsonl"), line("b1", "theta") + line("b2", "iota"))
      writeFileSync(tmp.join("inbox", "notes.txt"), line("x1", "not an input"))
      await until(() => db.done(10), 10_000, "the new file")
    } finally {
      session.stop(1000)
    }
    expect(await ending).toBe(130)

    expect(db.inputs().map((i) => [i.idx, i.path])).toEqual([
      [0, tmp.join("inbox", "a.jsonl")],
      [1, tmp.join("feed.csv")],
      [2, tmp.join("inbox", "b.jsonl")],
    ])
    const items = db.items()
    const perKey = new Map<string, number>()
    for (const r of items) perKey.set(`${r.input}/${r.key}`, (perKey.get(`${r.input}/${r.key}`) ?? 0) + 1)
    expect([...perKey.entries()].sort()).toEqual(
      ["0/a1", "0/a2", "0/a3", "0/a4", "0/h1", "1/c1", "1/c2", "1/c3", "2/b1", "2/b2"].map(
        (k) => [k, 1] as [string, number],
      ),
    )
    const texts: Record<string, string> = {
      a1: "alpha",
      a2: "beta",
      a3: "delta",
      a4: "epsilon",
      h1: "half",
      c1: "gamma",
      c2: "zeta",
      c3: "eta",
      b1: "theta",
      b2: "iota",
    }
    for (const r of items) {
      expect(r.state).toBe("completed")
      expect(r.output).toBe(`mock reply to: ${texts[r.key]}`)
    }
    db.close()
  })

  test("Ctrl+C ends the wait at once, even with a long poll interval, and the run resumes where it was", async () => {
    await using tmp = await tmpdir()
    const { session, ending, db } = await watching(tmp, 60_000)
    // events, not the minute-long poll, bring this one in
    appendFileSync(tmp.join("inbox", "a.jsonl"), line("a2", "beta"))
    await until(() => db.done(2), 10_000, "the appended line, by a file-system event")
    await Bun.sleep(100)
    const stopped = Date.now()
    session.stop(1000)
    expect(await ending).toBe(130)
    expect(Date.now() - stopped).toBeLessThan(1000)

    // while it was stopped: one file arrived, and a plain run reads it and ends
    writeFileSync(tmp.join("inbox", "b.jsonl"), line("b1", "gamma"))
    const again = await start(tmp, false)
    expect(await again.execute()).toBe(0)
    expect(db.items().map((r) => [r.input, r.key, r.state])).toEqual([
      [0, "a1", "completed"],
      [0, "a2", "completed"],
      [2, "b1", "completed"],
    ])
    db.close()
  })

  test("a glob may match nothing yet when following, and the run waits for the first file", async () => {
    await using tmp = await tmpdir()
    process.env.SPOOL_WATCH_POLL_MS = "50"
    writeFileSync(tmp.join("job.toml"), JOB)
    writeFileSync(tmp.join("feed.csv"), "id,text\n")
    // no inbox directory at all: nothing to watch there yet, so polling finds the file
    const session = await start(tmp, true)
    const ending = session.execute()
    const db = ledger(tmp)
    try {
      await Bun.sleep(200)
      expect(db.items()).toEqual([])
      mkdirSync(tmp.join("inbox"))
      writeFileSync(tmp.join("inbox", "first.jsonl"), line("f1", "first"))
      await until(() => db.done(1), 10_000, "the first file")
    } finally {
      session.stop(1000)
    }
    expect(await ending).toBe(130)
    expect(db.inputs().map((i) => [i.idx, i.path])).toEqual([
      [0, tmp.join("feed.csv")],
      [1, tmp.join("inbox", "first.jsonl")],
    ])
    db.close()
  })

  test("an edit to a line already read stops the watch with an error naming the file", async () => {
    await using tmp = await tmpdir()
    const { ending, db } = await watching(tmp, 50)
    writeFileSync(tmp.join("inbox", "a.jsonl"), line("a1", "ALPHA") + line("a2", "beta"))
    const err = await ending.then(
      () => undefined,
      (e: unknown) => e as Error,
    )
    expect(err).toBeInstanceOf(SourceChangedError)
    expect(err!.message).toContain(tmp.join("inbox", "a.jsonl"))
    expect(db.items().map((r) => [r.key, r.state])).toEqual([["a1", "completed"]])
    db.close()
  })
})

describe("globs in a plain run", () => {
  test("new matches are appended as inputs on resume, and a file that is gone is skipped with its items kept", async () => {
    await using tmp = await tmpdir()
    mkdirSync(tmp.join("inbox"))
    writeFileSync(tmp.join("job.toml"), JOB)
    writeFileSync(tmp.join("inbox", "b.jsonl"), line("b1", "beta"))
    writeFileSync(tmp.join("inbox", "a.jsonl"), line("a1", "alpha"))
    writeFileSync(tmp.join("feed.csv"), "id,text\nc1,gamma\n")
    expect(await (await start(tmp, false)).execute()).toBe(0)

    // a file sorting before the others arrives, and one is taken away: the indexes already given do not move
    writeFileSync(tmp.join("inbox", "0.jsonl"), line("z1", "zero"))
    rmSync(tmp.join("inbox", "b.jsonl"))
    expect(await (await start(tmp, false)).execute()).toBe(0)

    const db = ledger(tmp)
    expect(db.inputs().map((i) => [i.idx, i.path])).toEqual([
      [0, tmp.join("inbox", "a.jsonl")],
      [1, tmp.join("inbox", "b.jsonl")],
      [2, tmp.join("feed.csv")],
      [3, tmp.join("inbox", "0.jsonl")],
    ])
    expect(db.items().map((r) => [r.input, r.key, r.state, r.output])).toEqual([
      [0, "a1", "completed", "mock reply to: alpha"],
      [1, "b1", "completed", "mock reply to: beta"],
      [2, "c1", "completed", "mock reply to: gamma"],
      [3, "z1", "completed", "mock reply to: zero"],
    ])
    db.close()
  })
})
