/** A store in a temporary directory with one run of `n` ingested rows (keys k1…kn), for ledger tests. */
import * as store from "../../src/core/ledger/sqlite/store.ts"

export function seeded(home: string, n: number) {
  const db = store.open(home)
  const run = db.createRun("r", "{}", "fp", "spool run job.toml", [
    { path: "/in.jsonl", format: "jsonl" },
  ]).run
  const input = db.inputs(run.id)[0]!
  const rows = Array.from({ length: n }, (_, i) => ({
    key: `k${i + 1}`,
    line: i + 1,
    data: { text: `t${i + 1}` },
  }))
  db.ingest(run.id, input, { rows, problems: [], checkpoint: { offset: n } }, true)
  db.markIngested(run.id)
  return { db, run, input }
}
