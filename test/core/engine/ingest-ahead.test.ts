/**
 * Ingest with the response cache asked (engine/ingest.ts): a batch is read and asked while the one before is stored.
 * On a real SQLite store, with a JSONL input read in small batches.
 */
import { describe, expect, test } from "bun:test"
import { writeFileSync } from "node:fs"
import { ingest, plan } from "../../../src/core/engine/ingest.ts"
import * as jobs from "../../../src/core/job/job.ts"
import type { Asked } from "../../../src/core/ledger/ledger.ts"
import * as sqlite from "../../../src/core/ledger/sqlite/sqlite.ts"
import type { SourceRow } from "../../../src/plugins/api/define.ts"
import { tmpdir } from "../../lib/tmp.ts"

const ROWS = 300

describe("ingest reading a batch ahead while the cache is asked", () => {
  test("a batch whose look-up fails is not stepped over: the rows after it wait for the next pass, and none is lost", async () => {
    await using tmp = await tmpdir()
    const lines = Array.from({ length: ROWS }, (_, i) =>
      JSON.stringify({ id: `r${i + 1}`, text: `t${i + 1}` }),
    )
    writeFileSync(tmp.join("in.jsonl"), `${lines.join("\n")}\n`)
    writeFileSync(
      tmp.join("job.toml"),
      `name = "a"\n[source]\npath = "in.jsonl"\nid = "id"\nchunk_bytes = 1024\n[provider]\nname = "mock"\n[request]\nprompt = "Say {{text}}"\n`,
    )
    const { job } = jobs.load(tmp.join("job.toml"), {})
    const inputs = plan(job)
    const l = sqlite.open(tmp.join(".spool"))
    const { run } = await l.runs.create({
      name: "a",
      job,
      fingerprint: "fp",
      resume: "",
      inputs: [{ path: inputs[0]!.path, format: "jsonl" }],
    })
    const none = (rows: SourceRow[]): Asked => ({ owner: "me", keys: rows.map(() => ""), hits: new Map() })
    // the second batch's look-up fails; the third's, asked while the second is being stored, succeeds
    let asked = 0
    const failing = async (rows: SourceRow[]) => {
      if (++asked === 2) throw new Error("the look-up failed")
      return none(rows)
    }
    await expect(ingest(l, run, inputs, async () => {}, { ask: failing })).rejects.toThrow(
      "the look-up failed",
    )
    expect(asked).toBe(3)
    // the first batch alone is stored, and the checkpoint is at its end
    const first = (await l.reads.counts(run.id)).pending
    expect(first).toBeGreaterThan(0)
    expect(first).toBeLessThan(ROWS / 3)
    expect((await l.runs.inputs(run.id))[0]!.rows).toBe(first)
    // the next pass reads on from there: every row, once
    await ingest(l, run, inputs, async () => {}, { ask: async (rows) => none(rows) })
    expect((await l.reads.counts(run.id)).pending).toBe(ROWS)
    const keys: string[] = []
    for await (const item of l.reads.items(run.id)) keys.push(item.key)
    expect(keys).toEqual(lines.map((_, i) => `r${i + 1}`))
    await l.close()
  })
})
