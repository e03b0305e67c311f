import { describe, expect, test } from "bun:test"
import { mkdirSync, writeFileSync } from "node:fs"
import { JobError, SourceError } from "../../../src/plugins/api/errors.ts"
import * as jobs from "../../../src/core/job/job.ts"
import { plan } from "../../../src/core/engine/ingest.ts"
import { tmpdir, type Tmp } from "../../lib/tmp.ts"

const REST = `[provider]\nname = "mock"\n[request]\nprompt = "{{text}}"\n`

function job(tmp: Tmp, sources: string): jobs.Job {
  writeFileSync(tmp.join("job.toml"), `name = "p"\n${sources}\n${REST}`)
  return jobs.load("job.toml", {}, tmp.path).job
}

function failure(fn: () => unknown): Error {
  try {
    fn()
  } catch (err) {
    return err as Error
  }
  throw new Error("expected an error")
}

describe("plan: globs", () => {
  test("a glob becomes one input per matching file, sorted by path, between the inputs around it", async () => {
    await using tmp = await tmpdir()
    mkdirSync(tmp.join("inbox", "sub"), { recursive: true })
    for (const f of ["b.jsonl", "a.jsonl", "c.jsonl", "sub/d.jsonl", "x.csv", ".hidden.jsonl"])
      writeFileSync(tmp.join("inbox", f), "")
    writeFileSync(tmp.join("first.csv"), "id\n")
    const planned = plan(
      job(
        tmp,
        `[[sources]]\npath = "first.csv"\n[[sources]]\npath = "inbox/*.jsonl"\nid = "id"\n[[sources]]\npath = "inbox/*.csv"`,
      ),
    )
    expect(planned.map((p) => [p.path, p.at, p.source.name, p.glob ?? null, p.options.id ?? null])).toEqual([
      [tmp.join("first.csv"), "sources.0", "csv", null, null],
      [tmp.join("inbox", "a.jsonl"), "sources.1", "jsonl", tmp.join("inbox", "*.jsonl"), "id"],
      [tmp.join("inbox", "b.jsonl"), "sources.1", "jsonl", tmp.join("inbox", "*.jsonl"), "id"],
      [tmp.join("inbox", "c.jsonl"), "sources.1", "jsonl", tmp.join("inbox", "*.jsonl"), "id"],
      [tmp.join("inbox", "x.csv"), "sources.2", "csv", tmp.join("inbox", "*.csv"), null],
    ])
    expect(planned.every((p) => p.options.follow === undefined)).toBe(true)

    const deep = plan(job(tmp, `[source]\npath = "inbox/**/*.jsonl"`)).map((p) => p.path)
    expect(deep).toEqual(["a.jsonl", "b.jsonl", "c.jsonl", "sub/d.jsonl"].map((f) => tmp.join("inbox", f)))
  })

  test("a glob that matches no file is an error naming the key in a run, and an empty list when following", async () => {
    await using tmp = await tmpdir()
    const given = job(tmp, `[source]\npath = "inbox/*.jsonl"`)
    // no inbox directory at all
    const missing = failure(() => plan(given))
    expect(missing).toBeInstanceOf(SourceError)
    expect(missing.message).toBe(`source.path: ${tmp.join("inbox", "*.jsonl")} matches no file`)
    mkdirSync(tmp.join("inbox"))
    writeFileSync(tmp.join("inbox", "a.csv"), "id\n")
    expect(failure(() => plan(given)).message).toBe(
      `source.path: ${tmp.join("inbox", "*.jsonl")} matches no file`,
    )
    expect(plan(given, true)).toEqual([])

    writeFileSync(tmp.join("inbox", "a.jsonl"), "")
    const followed = plan(given, true)
    expect(followed.map((p) => [p.path, p.options.follow])).toEqual([[tmp.join("inbox", "a.jsonl"), true]])
  })

  test("a named file stays an error when missing, even when following", async () => {
    await using tmp = await tmpdir()
    const err = failure(() => plan(job(tmp, `[source]\npath = "in.jsonl"`), true))
    expect(err).toBeInstanceOf(SourceError)
    expect(err.message).toBe(`the input ${tmp.join("in.jsonl")} does not exist`)
  })

  test("a file whose name holds glob characters is read as that file", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("data[1].jsonl"), "")
    writeFileSync(tmp.join("data1.jsonl"), "")
    const planned = plan(job(tmp, `[source]\npath = "data[1].jsonl"`))
    expect(planned.map((p) => [p.path, p.glob ?? null])).toEqual([[tmp.join("data[1].jsonl"), null]])
  })

  test("a file both named and matched by a glob is given twice", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("a.jsonl"), "")
    const err = failure(() => plan(job(tmp, `[[sources]]\npath = "a.jsonl"\n[[sources]]\npath = "*.jsonl"`)))
    expect(err).toBeInstanceOf(JobError)
    expect(err.message).toBe(`sources.1.path: ${tmp.join("a.jsonl")} is given twice`)
  })

  test("the job's fingerprint holds the glob as written, so a new matching file is not another job", async () => {
    await using tmp = await tmpdir()
    mkdirSync(tmp.join("inbox"))
    writeFileSync(tmp.join("inbox", "a.jsonl"), "")
    const before = job(tmp, `[source]\npath = "inbox/*.jsonl"`)
    writeFileSync(tmp.join("inbox", "b.jsonl"), "")
    const after = job(tmp, `[source]\npath = "inbox/*.jsonl"`)
    expect(after.sources.map((s) => s.path)).toEqual([tmp.join("inbox", "*.jsonl")])
    expect(jobs.fingerprint(after)).toBe(jobs.fingerprint(before))
    expect(jobs.fingerprint(job(tmp, `[source]\npath = "inbox/*.ndjson"`))).not.toBe(jobs.fingerprint(before))
  })
})
