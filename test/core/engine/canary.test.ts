/**
 * The canary in the engine (src/core/engine/canary.ts, run.ts), against the fake OpenAI server: which items it
 * sends, what its report counts, and what each next start of the run does.
 */
import { describe, expect, test } from "bun:test"
import { writeFileSync } from "node:fs"
import * as engine from "../../../src/core/engine/run.ts"
import type { CanaryReport } from "../../../src/core/report/canary.ts"
import * as sqlite from "../../../src/core/ledger/sqlite/sqlite.ts"
import { UsageError } from "../../../src/core/base/errors.ts"
import { startFake } from "../../lib/fake-openai.ts"
import { itemsOf } from "../../lib/ledger-contract.ts"
import { tmpdir, type Tmp } from "../../lib/tmp.ts"

const KEY = "sk-test-canary-engine-0123456789"

const SCHEMA = {
  type: "object",
  properties: { label: { type: "string", enum: ["a", "b"] } },
  required: ["label"],
  additionalProperties: false,
}

/** A realtime job of `n` tickets ("Ticket 1" …) against the fake, with the schema above and `limits`. */
function write(tmp: Tmp, url: string, n: number, limits = ""): void {
  process.env.OPENAI_API_KEY = KEY
  writeFileSync(
    tmp.join("in.jsonl"),
    Array.from({ length: n }, (_, i) => JSON.stringify({ id: `t${i + 1}`, n: i + 1 })).join("\n") + "\n",
  )
  writeFileSync(tmp.join("label.schema.json"), JSON.stringify(SCHEMA))
  writeFileSync(
    tmp.join("job.toml"),
    `name = "canary"\n[source]\npath = "in.jsonl"\nid = "id"\n[provider]\nmodel = "gpt-4.1-mini"\nbase_url = "${url}"\n[request]\nprompt = "Ticket {{n}}"\n[output]\nschema = "label.schema.json"\n[limits]\nmax_attempts = 2\nretry_base_s = 0\nretry_cap_s = 0\n${limits}\n`,
  )
}

const open = (tmp: Tmp, canary?: number) =>
  engine.prepare({
    file: tmp.join("job.toml"),
    flags: {},
    home: tmp.join(".spool"),
    newRun: false,
    reingest: false,
    resume: "spool run job.toml",
    canary,
  })

/** Runs a start of the run to its end; the reports it was asked about, and its exit code. */
async function run(tmp: Tmp, canary: number | undefined, answer = false) {
  const reports: CanaryReport[] = []
  const code = await (
    await open(tmp, canary)
  ).execute(undefined, async (r) => {
    reports.push(r)
    return answer
  })
  return { code, reports }
}

async function states(tmp: Tmp): Promise<string[]> {
  const db = sqlite.open(tmp.join(".spool"))
  const run = (await db.runs.latest("canary"))!
  const out = (await itemsOf(db, run.id)).map((i) => i.state)
  await db.close()
  return out
}

describe("the canary in the engine", () => {
  test("its report counts every answer at each gate, its items by how they ended and why, and the errors met", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({
      apiKey: KEY,
      reply: (input) =>
        input === "Ticket 2" ? "not json" : input === "Ticket 3" ? '{"label":"z"}' : '{"label":"a"}',
    })
    fake.script.set("Ticket 4", ["500", "500"])
    fake.script.set("Ticket 5", ["429"])
    write(tmp, fake.url, 20)
    const { code, reports } = await run(tmp, 6)
    expect(code).toBe(0)
    expect(reports.length).toBe(1)
    const r = reports[0]!
    expect(r).toMatchObject({ run: "canary", items: 6, total: 20, rest: 14, mode: "realtime" })
    // 1 + 2 + 2 + 0 + 1 + 1 answers: Ticket 2 and 3 were each tried twice, Ticket 4 never answered
    expect(r.gates).toEqual({ answers: 7, truncated: 0, refused: 0, notJson: 2, invalid: 2 })
    expect(r.ended).toEqual({
      completed: 3,
      review: [
        { reason: "not JSON", count: 1 },
        { reason: "schema violation", count: 1 },
      ],
      failed: [{ reason: "server", count: 1 }],
      open: 0,
    })
    expect(r.errors.map((e) => [e.class, e.count])).toEqual([
      ["output", 4],
      ["server", 2],
      ["rate_limit", 1],
    ])
    expect(r.outputs).toEqual([
      { id: "t1", state: "completed", text: '{"label":"a"}' },
      { id: "t2", state: "needs_review", text: "[not JSON] not json" },
      { id: "t3", state: "needs_review", text: '[schema violation] {"label":"z"}' },
      {
        id: "t4",
        state: "failed",
        text: "[server] HTTP 500: The server had an error while processing your request.",
      },
      { id: "t5", state: "completed", text: '{"label":"a"}' },
    ])
    // only the first 6 were sent; the run waits, paused, for the next start
    expect(fake.seen.has("Ticket 7")).toBe(false)
    expect(await states(tmp)).toEqual([
      "completed",
      "needs_review",
      "needs_review",
      "failed",
      "completed",
      "completed",
      ...Array(14).fill("pending"),
    ])
  })

  test("off a terminal (no answer given) the run stops after the report; the next start goes on with the rest only", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, reply: () => '{"label":"b"}' })
    write(tmp, fake.url, 9)
    expect(await (await open(tmp, 4)).execute()).toBe(0)
    expect(fake.requests).toBe(4)
    const db = sqlite.open(tmp.join(".spool"))
    const stopped = (await db.runs.latest("canary"))!
    expect([stopped.state, stopped.reason]).toEqual([
      "paused",
      "canary: the first 4 item(s) are done; `spool run job.toml` goes on with the other 5",
    ])
    await db.close()
    const next = await run(tmp, undefined)
    expect(next).toEqual({ code: 0, reports: [] })
    expect(fake.requests).toBe(9)
    expect([...fake.paid.values()]).toEqual(Array(9).fill(1))
  })

  test("asked again on a run still at its canary, the report is shown again without a call; asked wider, only the new items are sent", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, reply: () => '{"label":"a"}' })
    write(tmp, fake.url, 10)
    await run(tmp, 3)
    const again = await run(tmp, 2)
    expect(again.reports.map((r) => [r.items, r.rest])).toEqual([[3, 7]])
    expect(fake.requests).toBe(3)
    const wider = await run(tmp, 5)
    expect(wider.reports.map((r) => [r.items, r.rest, r.ended.completed])).toEqual([[5, 5, 5]])
    expect(fake.requests).toBe(5)
    expect(await states(tmp)).toEqual([...Array(5).fill("completed"), ...Array(5).fill("pending")])
  })

  test("a canary as wide as the run finishes it: the report is shown and the run completes", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, reply: () => '{"label":"a"}' })
    write(tmp, fake.url, 3)
    const { code, reports } = await run(tmp, 10)
    expect(code).toBe(0)
    expect(reports.map((r) => [r.items, r.total, r.rest])).toEqual([[3, 3, 0]])
    const db = sqlite.open(tmp.join(".spool"))
    expect((await db.runs.latest("canary"))!.state).toBe("completed")
    await db.close()
  })

  test("the report waits for the inputs to be read to their end: its projection counts every item", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, reply: () => '{"label":"a"}' })
    write(tmp, fake.url, 30_000)
    const { reports } = await run(tmp, 2)
    expect(reports.map((r) => [r.items, r.total, r.rest])).toEqual([[2, 30_000, 29_998]])
    expect(fake.requests).toBe(2)
  })

  test("a signal while the question is asked ends the start (130) and leaves the report due: the next start asks again, sending nothing", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, reply: () => '{"label":"a"}' })
    write(tmp, fake.url, 6)
    const session = await open(tmp, 2)
    const asked = Promise.withResolvers<void>()
    const ending = session.execute(undefined, () => {
      asked.resolve()
      return new Promise<boolean>(() => {})
    })
    await asked.promise
    session.stop(0)
    expect(await ending).toBe(130)
    const next = await run(tmp, undefined, true)
    expect(next.code).toBe(0)
    expect(next.reports.map((r) => r.items)).toEqual([2])
    expect(fake.requests).toBe(6)
  })

  test("--canary on a run that sent items outside a canary is refused before anything changes; limits.canary there is passed over", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, reply: () => '{"label":"a"}' })
    write(tmp, fake.url, 4)
    expect((await run(tmp, undefined)).code).toBe(0)
    await expect(open(tmp, 2)).rejects.toThrow(
      new UsageError(
        '--canary: run "canary" is past its first items (4 item(s) were sent outside a canary); nothing was changed',
      ),
    )
    // the job now asks for a canary: the run has sent its items, so there is none, and nothing is sent
    write(tmp, fake.url, 4, "canary = 2")
    expect(await run(tmp, undefined)).toEqual({ code: 0, reports: [] })
    expect(fake.requests).toBe(4)
  })
})
