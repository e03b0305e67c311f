/** `spool pause | retry` on a cancelled run (src/core/engine/control.ts), on a real SQLite ledger. */
import { describe, expect, test } from "bun:test"
import * as control from "../../../src/core/engine/control.ts"
import { UsageError } from "../../../src/core/base/errors.ts"
import * as sqlite from "../../../src/core/ledger/sqlite/sqlite.ts"
import { ok } from "../../lib/ledger-contract.ts"
import { seed } from "../../lib/ledger.ts"
import { tmpdir } from "../../lib/tmp.ts"

describe("a cancelled run, from outside", () => {
  test("is not paused or resumed, and the refusal says that spool run goes on with it; its failed items can be retried", async () => {
    await using tmp = await tmpdir()
    const db = sqlite.open(tmp.path)
    const { run } = await seed(db, 5)
    const [a, b] = await db.claims.step(run.id, "w", [], 2, 60_000)
    const failed = { ...ok(b!.id, 1), to: "failed" as const, label: "failed", errorClass: "server" as const }
    await db.claims.step(run.id, "w", [ok(a!.id, 1), failed], 0, 60_000)
    await db.runs.setState(run.id, "cancelled", "cancelled by `spool cancel`")
    const hint =
      "2 finished item(s) kept (`spool results` gives them), 3 left. `spool run job.toml` goes on with the 3 left and sends nothing finished again; add --new-run to start over instead."
    for (const verb of ["pause", "resume"] as const) {
      const err = await control[verb](db, "r").catch((e: unknown) => e)
      expect(err).toBeInstanceOf(UsageError)
      expect([(err as UsageError).message, (err as UsageError).hint]).toEqual([
        `run "r" is cancelled: there is nothing to ${verb}`,
        hint,
      ])
    }
    expect(await control.retry(db, "r", "failed")).toBe(
      '1 failed item(s) of run "r" are pending again. Process them with:\n  spool run job.toml\n',
    )
    expect(await db.reads.counts(run.id)).toMatchObject({ completed: 1, failed: 0, pending: 4 })
    await db.runs.setState(run.id, "cancelling")
    await expect(control.retry(db, "r", "failed")).rejects.toThrow('run "r" is being cancelled')
    await db.close()
  })
})
