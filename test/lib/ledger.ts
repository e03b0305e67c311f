/** Runs of `n` ingested rows (keys k1…kn), for ledger tests. */
import * as jobs from "../../src/core/job/job.ts"
import type { Ledger } from "../../src/core/ledger/ledger.ts"

/** A job as `spool run` keeps it: loaded and checked, one input, `/in.jsonl`. */
export const JOB: jobs.Job = jobs.load(undefined, {
  name: "r",
  input: ["/in.jsonl"],
  prompt: "Say {{text}}",
  model: "gpt-4o-mini",
}).job

/** The rows of a run's first `n` lines: k1…kn, each with its text. */
export function rows(n: number, from = 1) {
  return Array.from({ length: n }, (_, i) => ({
    key: `k${from + i}`,
    line: from + i,
    data: { text: `t${from + i}` },
  }))
}

/** A run named `name` of `n` ingested rows in `ledger`, its inputs read to their end. */
export async function seed(ledger: Ledger, n: number, name = "r") {
  const { run } = await ledger.runs.create({
    name,
    job: { ...JOB, name },
    fingerprint: "fp",
    resume: "spool run job.toml",
    inputs: [{ path: "/in.jsonl", format: "jsonl" }],
  })
  const input = (await ledger.runs.inputs(run.id))[0]!
  await ledger.ingest.add(run.id, input, { rows: rows(n), problems: [], checkpoint: { offset: n } }, true)
  await ledger.ingest.done(run.id)
  return { run, input }
}
