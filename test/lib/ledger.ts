/** Runs of `n` ingested rows (keys k1…kn), for ledger tests. */
import * as jobs from "../../src/core/job/job.ts"
import { cacheWrite, Lookup, type CacheUse } from "../../src/core/engine/cache.ts"
import type { Ledger } from "../../src/core/ledger/ledger.ts"
import type { Run } from "../../src/core/ledger/types.ts"

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

/**
 * Looks up, claims and completes every item of the run with `answer(text)` and `tokens(text)` input tokens (100
 * unless told), writing the answers to the cache: a paid run, for the response cache's tests.
 */
export async function pay(
  l: Ledger,
  run: Run,
  use: CacheUse,
  answer: (text: string) => string,
  tokens: (text: string) => number = () => 100,
): Promise<void> {
  await new Lookup(l, run, "w", use, undefined).sweep(Infinity)
  const claimed = await l.claims.step(run.id, "w", [], 100, 60_000, { looked: true })
  await l.claims.step(
    run.id,
    "w",
    claimed.map((c) => {
      const text = (JSON.parse(c.data) as { text: string }).text
      const usage = { input_tokens: tokens(text), output_tokens: 10 }
      return {
        item: c.id,
        attempt: c.attempt,
        to: "completed" as const,
        label: "ok",
        output: answer(text),
        inputTokens: usage.input_tokens,
        outputTokens: usage.output_tokens,
        latencyMs: 1,
        endedAt: Date.now(),
        cache: cacheWrite(use, usage, false),
      }
    }),
    0,
    60_000,
  )
}
