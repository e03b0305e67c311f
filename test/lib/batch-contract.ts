/**
 * The contract every batch client must honour; run it with `testBatchClient(harness)`, beside `testProvider`. A
 * harness puts the client in front of its provider's fake Batch API (test/lib/fake-openai.ts, fake-anthropic.ts, both
 * on the engine of fake-batch.ts) and says, in the provider's own words, what the client must make of it: the status
 * words, the reply and error message of a line, the kinds of lines. The checks are what the batcher relies on: a
 * batch is created from a request file and polled through its phases to its end; a batch created just before a crash
 * is found again by its tag; a download writes what the provider serves, or, when its stream stalls or the disk
 * fails, a retryable timeout or a StoreError and nothing behind; a cancel keeps the lines run; an expired batch's
 * lines that never ran, and its errored lines, are told apart from its answers (or, for a provider that leaves the
 * lines never run out, such as Gemini, they are absent and the download is still trusted whole); a caller's abort
 * passes through.
 */
import { describe, expect, test } from "bun:test"
import type {
  BatchClient,
  BatchExpect,
  BatchLine,
  Reply,
  RemoteBatch,
  Request,
} from "../../src/plugins/api/define.ts"
import { StoreError } from "../../src/plugins/api/errors.ts"
import { check } from "../../src/core/engine/results.ts"
import {
  answerLine,
  cancelPartWay,
  caught,
  customIds,
  errorFields,
  errorLine,
  expectCallersAbort,
  expectStalledDownload,
  halfExpired,
  handClock,
  itemOf,
  TAG,
  lines,
  never,
  outputs,
  read,
  SLOW_CANCEL,
  STALL_MS,
  stallingServer,
  submit,
  tagOf,
  unrunLine,
  untilEnded,
} from "./batch-helpers.ts"
import type { BatchOptions } from "./fake-batch.ts"
import { tmpdir, type Tmp } from "./tmp.ts"

/** What a line's result is, in neutral words (a harness names each in its provider's words, as `kind`). */
export type Result = "succeeded" | "errored" | "expired" | "cancelled"

/** What the contract reads of a fake's batch record (fake-batch.ts `FakeBatch`). */
export interface FakeRecord {
  id: string
  /** When it was created, on the fake's clock (ms). */
  createdAt: number
  /** Its requests' custom_ids, in request order. */
  custom_ids: string[]
  /** Processing order (line indexes), and how many of them were processed. */
  order: Uint32Array
  done: number
}

/** One running fake of a harness. */
export interface BatchServer extends AsyncDisposable {
  /** A client of this fake (its timeout 5 s). */
  client(): BatchClient
  /** The fake's batch engine: its records, and its options (a change applies to the batches created after it). */
  batch: { batches: readonly FakeRecord[]; processingMs: number; paidLines: number }
}

export interface BatchHarness {
  /** Names the suite: "openai (chat)". */
  name: string
  /** Starts the provider's fake with these batch options, on the clock `now` (default Date.now). */
  start(options: { batch?: BatchOptions; now?: () => number }): Promise<BatchServer>
  /** What every request of the suite carries besides its prompt "item k". */
  base?: Omit<Request, "prompt">
  /** The reply the fake gives the request "item k" (over `base`), as the client must read it: text and usage. */
  reply(k: number): Reply
  /** The message the client gives a line that errored with `status` in the fake's words: "HTTP 400: Invalid request.". */
  lineError(status: 400 | 500): string
  /**
   * The provider's status word and phase of a batch just created and of one running (default: status and phase
   * "in_progress"), and its status word of one cancelling and one ended. A provider with no cancelling state (Gemini:
   * a cancel ends the batch) gives no `cancelling`: its cancel must answer the batch ended as cancelled.
   */
  words: {
    created: { status: string; phase: RemoteBatch["phase"] }
    running?: { status: string; phase: RemoteBatch["phase"] }
    cancelling?: string
    ended(outcome: "completed" | "expired" | "cancelled"): string
  }
  /** The creation time the provider reports for a batch the fake made at `ms` (OpenAI's is in whole seconds). */
  createdAt(ms: number): number
  /** Whether the provider counts a request never run as failed (OpenAI does; Anthropic counts it apart). */
  unrunFailed: boolean
  /**
   * What an ended batch's results say of a request it never ran (cancelled or expired first): "listed" (the default;
   * OpenAI, Anthropic) gives it a line that is neither an answer nor an error, and counts it done; "absent" (Gemini)
   * gives it no line, and counts done only the requests that ran (`unrunFailed` then counts nothing).
   */
  unrunLines?: "listed" | "absent"
  /** The provider's word for each kind of line, when it gives one (Anthropic's result types); none for OpenAI. */
  kind?(result: Result): string
  /**
   * A client that downloads from `url` (a server whose answers stall) with the timeout `timeoutMs`, and an ended batch
   * whose results it would download from there.
   */
  stalling(url: string, timeoutMs: number): { client: BatchClient; batch: RemoteBatch }
}

/** How many lines of each `kind` `all` holds. */
function kindsOf(all: BatchLine[]): Record<string, number> {
  const out: Record<string, number> = {}
  for (const { kind } of all) out[String(kind)] = (out[String(kind)] ?? 0) + 1
  return out
}

/**
 * The files a download wrote hold what the ended batch said they would (`RemoteBatch.expect`), as spool verifies a
 * download before it applies a line of it: lines of each file within their bounds, lines of each kind exactly.
 */
function expectHeld(batch: RemoteBatch, out: BatchLine[], err: BatchLine[]): void {
  const e: BatchExpect | undefined = batch.expect
  if (!e) throw new Error(`the ended batch ${batch.id} says nothing of the lines its files hold`)
  const bounded = (n: number, range: { min: number; max: number } | undefined) => {
    expect(n).toBeGreaterThanOrEqual(range?.min ?? 0)
    expect(n).toBeLessThanOrEqual(range?.max ?? 0)
  }
  bounded(out.length, e.output)
  // a provider that says nothing of an error file has none
  bounded(err.length, e.errors)
  if (e.kinds) {
    const given = Object.fromEntries(Object.entries(e.kinds).filter(([, n]) => n > 0))
    expect(kindsOf([...out, ...err])).toEqual(given)
  }
}

/** Downloads an ended batch to tmp: the lines of its output file and of its error file (none when it has none). */
async function download(c: BatchClient, batch: RemoteBatch, tmp: Tmp) {
  const to = outputs(tmp)
  const written = await c.download(batch, to, never())
  expect(written.output).toBe(to.output)
  const out = await lines(c, to.output)
  const err = written.errors === undefined ? [] : await lines(c, written.errors)
  expectHeld(batch, out, err)
  return [...out, ...err]
}

export function testBatchClient(harness: BatchHarness): void {
  const kind = (result: Result) => harness.kind?.(result)
  const base = harness.base ?? {}
  const running = harness.words.running ?? { status: "in_progress", phase: "in_progress" as const }
  const absent = harness.unrunLines === "absent"

  /**
   * The counts of an ended batch of `total` requests of which `ran` ran, `errored` of those with an error: a provider
   * that lists the requests never run counts them done (and failed when `unrunFailed`); one that leaves them absent
   * counts only those that ran.
   */
  const endedCounts = (total: number, ran: number, errored: number) =>
    absent
      ? { total, done: ran, failed: errored }
      : { total, done: total, failed: errored + (harness.unrunFailed ? total - ran : 0) }

  /**
   * Downloads an ended batch (`download`); when the provider leaves the lines never run out, the download is also
   * checked as spool checks one before it applies a line of it (src/core/engine/results.ts `check`): with lines
   * absent it must still be trusted whole, no problem found and no file suspect. That is what makes "absent" safe:
   * salvage.ts applies every line of a trusted download, then `Batches.finish` puts each item of the batch left
   * without a line back to pending, unpaid, so a request never run is packed into a later batch, as an unrun line's
   * item is (a line with no result settles nothing, decide.ts), and never lost nor paid twice.
   */
  const downloaded = async (c: BatchClient, batch: RemoteBatch, tmp: Tmp, b: FakeRecord) => {
    const all = await download(c, batch, tmp)
    if (absent) {
      const files = { output: outputs(tmp).output }
      const items = new Set(b.custom_ids.map(itemOf))
      const checked = await check(files, batch.expect, { parse: (t) => c.parse(t), prefix: `${TAG}_`, items })
      expect([checked.problems, [...checked.suspect], checked.broken]).toEqual([[], [], []])
    }
    return all
  }

  /**
   * Every request of the batch `b` (a fake's record) has exactly one line in `all`: an answer for a line the fake ran,
   * an error for the items `errors` names (their fields), and an unrun line of `unrun` for one it never ran; or, when
   * the provider leaves those out (`unrunLines` "absent"), none for a request never run.
   */
  const expectLines = (
    all: BatchLine[],
    b: FakeRecord,
    unrun: Result,
    errors: Record<number, ReturnType<typeof errorFields>> = {},
  ) => {
    const ran = new Set(customIds(b.order.slice(0, b.done)))
    const listed = absent ? b.custom_ids.filter((id) => ran.has(id)) : b.custom_ids
    expect(all.map((l) => l.customId).sort()).toEqual(listed.slice().sort())
    for (const line of all) {
      const k = itemOf(line.customId)
      const want = !ran.has(line.customId)
        ? unrunLine(line.customId, kind(unrun))
        : errors[k]
          ? errorLine(line.customId, errors[k], kind("errored"))
          : answerLine(line.customId, harness.reply(k), kind("succeeded"))
      expect(read(line)).toEqual(want)
    }
  }

  describe(`batch client contract: ${harness.name}`, () => {
    test("creates a batch of the request file and polls it through its phases to its end; every answer is downloaded once", async () => {
      const clock = handClock()
      await using fake = await harness.start({ now: clock.now, batch: { processingMs: 10_000 } })
      await using tmp = await tmpdir()
      const c = fake.client()
      const created = await submit(c, tmp, tagOf(10, clock.t), base)
      const b = fake.batch.batches[0]!
      expect(b.custom_ids).toEqual(customIds([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]))
      expect([created.id, created.status, created.phase, created.outcome, created.createdAt]).toEqual([
        b.id,
        harness.words.created.status,
        harness.words.created.phase,
        undefined,
        harness.createdAt(b.createdAt),
      ])
      clock.t += 3_000
      expect(await c.retrieve(created.id, never())).toEqual({
        id: created.id,
        status: running.status,
        phase: running.phase,
        counts: { total: 10, done: 3, failed: 0 },
        createdAt: created.createdAt,
      })
      clock.t += 7_000
      const ended = await c.retrieve(created.id, never())
      expect([ended.status, ended.phase, ended.outcome, ended.counts, ended.error]).toEqual([
        harness.words.ended("completed"),
        "ended",
        "completed",
        { total: 10, done: 10, failed: 0 },
        undefined,
      ])
      // every line ran: none is unrun
      expectLines(await downloaded(c, ended, tmp, b), b, "expired")
      expect(fake.batch.paidLines).toBe(10)
    })

    test("a batch created just before a crash is found by its tag, running or ended; a tag never sent is none", async () => {
      const clock = handClock()
      await using fake = await harness.start({ now: clock.now, batch: { processingMs: 60_000 } })
      await using tmp = await tmpdir()
      const c = fake.client()
      const since = clock.t
      // another run's batch, of another size, still running
      await submit(c, tmp, tagOf(4, since, "r9-b0001"), base)
      // ours: created, and the process dies before it records the answer
      await submit(c, tmp, tagOf(3, since), base)
      const ours = fake.batch.batches[1]!.id
      expect(await c.find(tagOf(3, since), never())).toEqual({ found: await c.retrieve(ours, never()) })
      // both end; a third batch of our size, another tag, ends at once: ours is told from it by its tag
      clock.t += 60_000
      fake.batch.processingMs = 0
      await submit(c, tmp, tagOf(3, clock.t, "r9-b0002"), base)
      const theirs = fake.batch.batches[2]!.id
      const found = await c.find(tagOf(3, since), never())
      expect(found).toEqual({ found: await c.retrieve(ours, never()) })
      expect("found" in found && found.found.phase).toBe("ended")
      expect(await c.find(tagOf(3, since, "r9-b0002"), never())).toEqual({
        found: await c.retrieve(theirs, never()),
      })
      expect(await c.find(tagOf(3, since, "r1-b9999"), never())).toEqual({ none: true })
      // batches made long (more than the clock slack) before the intent are not looked at
      expect(await c.find(tagOf(3, since + 60 * 60_000), never())).toEqual({ none: true })
    })

    test("a download whose stream stalls is a retryable timeout and leaves neither the file nor its .part", async () => {
      using server = stallingServer()
      await using tmp = await tmpdir()
      const { client, batch } = harness.stalling(`http://127.0.0.1:${server.port}`, STALL_MS)
      await expectStalledDownload(client, batch, outputs(tmp))
    })

    test("a download the disk fails under is a StoreError naming the file, and leaves no .part", async () => {
      await using fake = await harness.start({})
      await using tmp = await tmpdir()
      const c = fake.client()
      const batch = await untilEnded(c, await submit(c, tmp, tagOf(2), base))
      const output = tmp.join("missing", "out.jsonl")
      const failed = await caught(() => c.download(batch, { output, errors: tmp.join("err.jsonl") }, never()))
      expect(failed).toBeInstanceOf(StoreError)
      expect((failed as StoreError).message).toStartWith(`cannot write ${output}.part: `)
      expect(await Bun.file(`${output}.part`).exists()).toBe(false)
    })

    test("cancel part way: cancelling (where the provider has that state), then ended as cancelled; the lines run keep their answers, the others are unrun", async () => {
      const clock = handClock()
      await using fake = await harness.start({ now: clock.now, batch: SLOW_CANCEL })
      await using tmp = await tmpdir()
      const c = fake.client()
      const cancelling = harness.words.cancelling
      const at = {
        ranMs: 4_000,
        done: 4,
        running,
        word: cancelling ?? harness.words.ended("cancelled"),
        ends: cancelling === undefined,
      }
      const { created, ended } = await cancelPartWay(c, tmp, clock, at, base)
      expect(ended).toMatchObject({
        id: created.id,
        status: harness.words.ended("cancelled"),
        phase: "ended",
        outcome: "cancelled",
        counts: endedCounts(10, 4, 0),
        createdAt: created.createdAt,
      })
      const b = fake.batch.batches[0]!
      expect(b.done).toBe(4)
      expectLines(await downloaded(c, ended, tmp, b), b, "cancelled")
      expect(fake.batch.paidLines).toBe(4)
    })

    test("an expired batch: its errored lines are classified as a direct call's, the lines it never ran come back unrun (or absent)", async () => {
      await using fake = await harness.start({ batch: halfExpired(400, 500) })
      await using tmp = await tmpdir()
      const c = fake.client()
      const created = await submit(c, tmp, tagOf(20), base)
      const ended = await c.retrieve(created.id, never())
      // 10 run (8 answered, 2 errored), 10 expired
      expect(ended).toMatchObject({
        id: created.id,
        status: harness.words.ended("expired"),
        phase: "ended",
        outcome: "expired",
        counts: endedCounts(20, 10, 2),
      })
      const b = fake.batch.batches[0]!
      expect(b.done).toBe(10)
      expectLines(await downloaded(c, ended, tmp, b), b, "expired", {
        1: errorFields("bad_request", harness.lineError(400), { status: 400 }),
        2: errorFields("server", harness.lineError(500), { retryable: true, status: 500 }),
      })
      expect(fake.batch.paidLines).toBe(8)
    })

    test("every call passes a caller's abort through as the caller's own reason", async () => {
      await using fake = await harness.start({})
      await using tmp = await tmpdir()
      const c = fake.client()
      const ended = await untilEnded(c, await submit(c, tmp, tagOf(2), base))
      await expectCallersAbort((signal) =>
        c.create(tmp.join("requests.jsonl"), tagOf(2, Date.now(), "r1-b0002"), signal),
      )
      await expectCallersAbort((signal) => c.retrieve(ended.id, signal))
      await expectCallersAbort((signal) => c.find(tagOf(2), signal))
      await expectCallersAbort((signal) => c.cancel(ended.id, signal))
      await expectCallersAbort((signal) => c.download(ended, outputs(tmp), signal))
      // none of them made a batch or wrote a file
      expect(fake.batch.batches.length).toBe(1)
      expect(await Bun.file(outputs(tmp).output).exists()).toBe(false)
    })
  })
}
