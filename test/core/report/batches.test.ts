/** The batches in `spool status`'s text: every live one, the last few that ended, and how many more ended. */
import { describe, expect, test } from "bun:test"
import * as sqlite from "../../../src/core/ledger/sqlite/sqlite.ts"
import { status, statusText, type BatchView, type StatusView } from "../../../src/core/report/report.ts"
import { seed } from "../../lib/ledger.ts"
import { tmpdir } from "../../lib/tmp.ts"

const batch = (id: number, phase: string, done: number | null): BatchView => ({
  id,
  tag: `tag${id}`,
  provider_id: `batch_${id}`,
  phase,
  status: phase === "ended" ? "completed" : phase,
  outcome: phase === "ended" ? "completed" : null,
  items: 40,
  done,
  failed: null,
  error: null,
  created_at: "2026-01-01T00:00:00.000Z",
  ended_at: phase === "ended" ? "2026-01-01T00:10:00.000Z" : null,
})

/** A real run's status, with these batches in it. */
async function viewWith(batches: BatchView[], total = batches.length): Promise<StatusView> {
  await using tmp = await tmpdir()
  const l = sqlite.open(tmp.path)
  const { run } = await seed(l, 1)
  const v = await status(l, run)
  await l.close()
  return { ...v, batches, batches_total: total }
}

/** The status text's batch lines. */
const batchLines = (v: StatusView) => {
  const lines = statusText(v).split("\n")
  const from = lines.findIndex((l) => l.startsWith("batches"))
  return lines.slice(
    from,
    lines.findIndex((l, i) => i > from && !l.startsWith("  ")),
  )
}

describe("the batches in the status text", () => {
  test("four that ended: the last three, and one more counted, none dropped unsaid", async () => {
    const v = await viewWith([1, 2, 3, 4].map((id) => batch(id, "ended", 40)))
    expect(batchLines(v)).toEqual([
      "batches   4: 0 live, 4 ended or given up",
      "  #2 batch_2  ended (completed) 40/40",
      "  #3 batch_3  ended (completed) 40/40",
      "  #4 batch_4  ended (completed) 40/40",
      "  … and 1 more ended (spool status --json lists every batch)",
    ])
  })

  test("three that ended: all of them, and no 'more' line", async () => {
    const v = await viewWith([1, 2, 3].map((id) => batch(id, "ended", 40)))
    expect(batchLines(v)).toEqual([
      "batches   3: 0 live, 3 ended or given up",
      "  #1 batch_1  ended (completed) 40/40",
      "  #2 batch_2  ended (completed) 40/40",
      "  #3 batch_3  ended (completed) 40/40",
    ])
  })

  test("every live batch is listed, however many, among the last three that ended, in id order", async () => {
    const ended = [1, 2, 3, 4, 5].map((id) => batch(id, id === 2 ? "abandoned" : "ended", 40))
    const live = Array.from({ length: 25 }, (_, i) => batch(6 + i, "in_progress", i))
    // one live batch older than some that ended
    const early = batch(0, "validating", null)
    const v = await viewWith([early, ...ended, ...live])
    const lines = batchLines(v)
    expect(lines[0]).toBe("batches   31: 26 live, 5 ended or given up")
    expect(lines.slice(1, 6)).toEqual([
      "  #0 batch_0  validating 40 items",
      "  #3 batch_3  ended (completed) 40/40",
      "  #4 batch_4  ended (completed) 40/40",
      "  #5 batch_5  ended (completed) 40/40",
      "  #6 batch_6  in progress 0/40",
    ])
    expect(lines.filter((l) => / in progress /.test(l))).toHaveLength(25)
    expect(lines.at(-2)).toBe("  #30 batch_30  in progress 24/40")
    expect(lines.at(-1)).toBe("  … and 2 more ended (spool status --json lists every batch)")
    expect(lines).toHaveLength(1 + 1 + 3 + 25 + 1)
  })

  test("a view of the recent batches only counts the others from batches_total", async () => {
    const v = await viewWith([batch(9, "ended", 40), batch(10, "in_progress", 5)], 10)
    expect(batchLines(v)).toEqual([
      "batches   10: 1 live, 9 ended or given up",
      "  #9 batch_9  ended (completed) 40/40",
      "  #10 batch_10  in progress 5/40",
      "  … and 8 more ended (spool status --json lists every batch)",
    ])
  })
})
