import { describe, expect, test } from "bun:test"
import type { MessageBatch } from "@anthropic-ai/sdk/resources/messages/batches"
import anthropic from "../../../../src/plugins/providers/anthropic/anthropic.ts"
import { DEFAULT_MAX_TOKENS } from "../../../../src/plugins/providers/anthropic/wire.ts"
import { createBody } from "../../../../src/plugins/providers/anthropic/batch.ts"
import {
  createBodyBytes,
  queueLimit,
  queuedRequests,
  remote,
} from "../../../../src/plugins/providers/anthropic/batch.ts"
import { ProviderError, type ErrorClass } from "../../../../src/plugins/api/errors.ts"
import type { BatchClient, RemoteBatch, Reply, Request } from "../../../../src/plugins/api/define.ts"
import { validateSchema } from "../../../lib/spec.ts"
import { QUEUE_LIMIT_MESSAGE, startFakeAnthropic, type Fake } from "../../../lib/fake-anthropic.ts"
import { tmpdir } from "../../../lib/tmp.ts"
import {
  answerLine,
  bigReply,
  cancelPartWay,
  customIds,
  downloadOutput,
  errorFields,
  errorLine,
  expectBigDownload,
  expectCallersAbort,
  expectConnectionFailed,
  expectHalfRun,
  expectNotFoundOnce,
  expectQuickLines,
  expectShuffled,
  expectStalledDownload,
  fields,
  halfExpired,
  handClock,
  itemOf,
  lines,
  never,
  outputs,
  plainServer,
  read,
  SERVED,
  SLOW_CANCEL,
  STALL_MS,
  stallingServer,
  submit,
  TAG,
  measured,
  tagNo,
  tagOf,
  thrown,
  tokens,
  unrunLine,
  untilEnded,
} from "../../../lib/batch-helpers.ts"

const MODEL = "claude-haiku-4-5"
const KEY = "sk-ant-test-0123456789"

function batchClient(baseUrl = "http://127.0.0.1:9", timeoutMs = 5000): BatchClient {
  const client = anthropic.create({}, { model: MODEL, baseUrl, apiKey: KEY, timeoutMs })
  if (!client.batch) throw new Error("the anthropic provider has no batch client")
  return client.batch
}

const SHAPES: Request[] = [
  { prompt: "plain" },
  { system: "sys", prompt: "with system" },
  { prompt: "limits", max_tokens: 50, temperature: 0.2 },
  { prompt: "params", params: { top_p: 0.5, top_k: 3, stop_sequences: ["\n"] } },
  {
    prompt: "structured",
    schema: {
      name: "answer",
      schema: { type: "object", properties: { n: { type: "integer" } }, required: ["n"] },
    },
  },
  { prompt: 'unicode ✓ \u2028 "quoted" \\ back' },
]

const CUSTOM_ID = /^[a-zA-Z0-9_-]{1,64}$/

/** A Message as the API returns it (every field the spec requires). */
const message = {
  id: "msg_014VwiXbi91y3JMjcpyGBHX5",
  type: "message",
  role: "assistant",
  model: "claude-haiku-4-5",
  content: [{ type: "text", text: "Hello again! It's nice to see you.", citations: null }],
  stop_reason: "end_turn",
  stop_sequence: null,
  stop_details: null,
  container: null,
  usage: {
    input_tokens: 11,
    output_tokens: 36,
    cache_creation_input_tokens: 4,
    cache_read_input_tokens: 20,
    cache_creation: { ephemeral_5m_input_tokens: 4, ephemeral_1h_input_tokens: 0 },
    server_tool_use: null,
    service_tier: "batch",
    inference_geo: null,
  },
}

// Lines of a results file, shaped as the batch processing guide shows them (MessageBatchIndividualResponse).
const succeeded = (customId: string, m: unknown = message) =>
  JSON.stringify({ custom_id: customId, result: { type: "succeeded", message: m } })
const errored = (customId: string, type: string, text: string) =>
  JSON.stringify({
    custom_id: customId,
    result: {
      type: "errored",
      error: { type: "error", error: { type, message: text }, request_id: "req_011CSHoEeqs5C35K2UUqR7Fy" },
    },
  })
const ended = (customId: string, type: "canceled" | "expired") =>
  JSON.stringify({ custom_id: customId, result: { type } })

/** A Message Batch as the API returns it, with the fields a test changes. */
function batch(over: Partial<MessageBatch> = {}): MessageBatch {
  return {
    id: "msgbatch_013Zva2CMHLNnXjNJJKqJ2EF",
    type: "message_batch",
    processing_status: "in_progress",
    request_counts: { processing: 100, succeeded: 0, errored: 0, canceled: 0, expired: 0 },
    ended_at: null,
    created_at: "2024-09-24T18:37:24.100435Z",
    expires_at: "2024-09-25T18:37:24.100435Z",
    archived_at: null,
    cancel_initiated_at: null,
    results_url: null,
    ...over,
  } as MessageBatch
}

const RESULTS = "https://api.anthropic.com/v1/messages/batches/msgbatch_013Zva2CMHLNnXjNJJKqJ2EF/results"
const CREATED = Date.parse("2024-09-24T18:37:24.100Z")

describe("the anthropic batch client, without a server", () => {
  test("has the Message Batches API's limits, counted on the create body", () => {
    expect(batchClient().limits).toEqual({ maxRequests: 100_000, maxBytes: 256_000_000 })
    const c = batchClient()
    const lines = SHAPES.map((shape, n) => c.line(`tag_${n}`, shape))
    const bytes = lines.reduce((sum, line) => sum + Buffer.byteLength(line), 0)
    // the body the SDK sends for these lines is exactly as long as counted
    const sent = JSON.stringify({ requests: lines.map((line) => JSON.parse(line)) })
    expect(createBodyBytes(bytes, lines.length)).toBe(Buffer.byteLength(sent))
    expect(createBodyBytes(0, 0)).toBe('{"requests":[]}'.length)
  })

  test("writes lines of the realtime Messages body, valid against the spec, one JSON line each", () => {
    const c = batchClient()
    for (const [n, shape] of SHAPES.entries()) {
      const text = c.line(`a1b2-c3_${n}`, shape)
      expect(text.includes("\n")).toBe(false)
      const line = JSON.parse(text) as Record<string, unknown>
      expect(Object.keys(line)).toEqual(["custom_id", "params"])
      expect(line.custom_id).toBe(`a1b2-c3_${n}`)
      expect(line.custom_id).toMatch(CUSTOM_ID)
      expect(validateSchema("CreateMessageParams", line.params, "anthropic")).toEqual([])
      expect(validateSchema("MessageBatchIndividualRequestParams", line, "anthropic")).toEqual([])
    }
    expect(JSON.parse(c.line("t_0", { prompt: "plain" }))).toEqual({
      custom_id: "t_0",
      params: {
        model: MODEL,
        max_tokens: DEFAULT_MAX_TOKENS,
        messages: [{ role: "user", content: "plain" }],
      },
    })
    expect(JSON.parse(c.line("t_1", { system: "sys", prompt: "p", max_tokens: 5, temperature: 0 }))).toEqual({
      custom_id: "t_1",
      params: {
        model: MODEL,
        max_tokens: 5,
        messages: [{ role: "user", content: "p" }],
        system: "sys",
        temperature: 0,
      },
    })
    expect(JSON.parse(c.line("t_4", SHAPES[4]!)).params.tool_choice).toEqual({ type: "tool", name: "answer" })
  })

  test("writes 100,000 lines quickly", () => {
    expectQuickLines(batchClient(), 90)
  })

  test("the fixtures below are shaped as the spec says", () => {
    expect(validateSchema("Message", message, "anthropic")).toEqual([])
    for (const line of [
      succeeded("a_1"),
      errored("a_2", "invalid_request_error", "m"),
      ended("a_3", "canceled"),
      ended("a_4", "expired"),
    ]) {
      expect(validateSchema("MessageBatchIndividualResponse", JSON.parse(line), "anthropic")).toEqual([])
    }
    expect(validateSchema("MessageBatch", batch(), "anthropic")).toEqual([])
  })

  test("reads a succeeded line as the realtime reader reads the Message", () => {
    const c = batchClient()
    expect(read(c.parse(succeeded("tag_1")))).toEqual(
      answerLine(
        "tag_1",
        {
          text: "Hello again! It's nice to see you.",
          usage: { input_tokens: 35, output_tokens: 36, cached_input_tokens: 20, cache_write_tokens: 4 },
          finish: "stop",
        },
        "succeeded",
      ),
    )
    const tool = {
      ...message,
      content: [
        { type: "tool_use", id: "toolu_01", name: "answer", input: { n: 3 }, caller: { type: "direct" } },
      ],
      stop_reason: "tool_use",
    }
    expect(c.parse(succeeded("tag_2", tool)).reply?.text).toBe('{"n":3}')
    const cut = { ...message, stop_reason: "max_tokens" }
    expect(c.parse(succeeded("tag_3", cut)).reply?.finish).toBe("length")
    // a Message with no text is a line error, as a direct call's would be; the line still counts as succeeded
    expect(read(c.parse(succeeded("tag_4", { ...message, content: [] })))).toEqual(
      errorLine(
        "tag_4",
        errorFields("bad_response", "the message has no text block", { retryable: true, status: 200 }),
        "succeeded",
      ),
    )
  })

  test("classifies an errored line by its error type as a direct call's error of that status", () => {
    const c = batchClient()
    const cases: [string, number, ErrorClass, boolean, boolean][] = [
      ["invalid_request_error", 400, "bad_request", false, false],
      ["authentication_error", 401, "auth", false, true],
      ["billing_error", 402, "quota", false, true],
      ["permission_error", 403, "auth", false, true],
      ["not_found_error", 404, "not_found", false, false],
      ["request_too_large", 413, "bad_request", false, false],
      ["rate_limit_error", 429, "rate_limit", true, false],
      ["api_error", 500, "server", true, false],
      ["timeout_error", 504, "timeout", true, false],
      ["overloaded_error", 529, "server", true, false],
      ["some_new_error", 500, "server", true, false],
    ]
    for (const [type, status, cls, retryable, pause] of cases) {
      expect(read(c.parse(errored(`tag_${status}`, type, "Something happened.")))).toEqual(
        errorLine(
          `tag_${status}`,
          errorFields(cls, `HTTP ${status}: Something happened.`, { retryable, pause, status }),
          "errored",
        ),
      )
    }
    // an empty credit balance reads as a quota, as the realtime classifier reads it
    const credit = c.parse(
      errored(
        "tag_c",
        "invalid_request_error",
        "Your credit balance is too low to access the Anthropic API.",
      ),
    )
    expect([credit.error?.errorClass, credit.error?.pause]).toEqual(["quota", true])
    // the inner error alone (as older docs show it) reads the same
    const bare = JSON.stringify({
      custom_id: "tag_b",
      result: { type: "errored", error: { type: "overloaded_error", message: "Overloaded" } },
    })
    expect(read(c.parse(bare))).toEqual(
      errorLine(
        "tag_b",
        errorFields("server", "HTTP 529: Overloaded", { retryable: true, status: 529 }),
        "errored",
      ),
    )
  })

  test("a canceled or expired line is neither an answer nor an error", () => {
    const c = batchClient()
    expect(read(c.parse(ended("tag_5", "canceled")))).toEqual(unrunLine("tag_5", "canceled"))
    expect(read(c.parse(ended("tag_6", "expired")))).toEqual(unrunLine("tag_6", "expired"))
  })

  test("throws on a line that is not a result line at all", () => {
    const c = batchClient()
    expect(() => c.parse("{")).toThrow()
    expect(() => c.parse("null")).toThrow("no custom_id")
    expect(() => c.parse(JSON.stringify({ result: { type: "expired" } }))).toThrow("no custom_id")
    expect(() => c.parse(JSON.stringify({ custom_id: "tag_1" }))).toThrow("no result")
    expect(() => c.parse(JSON.stringify({ custom_id: "tag_1", result: { type: "other" } }))).toThrow(
      "no result",
    )
  })

  test("maps a batch's processing status, counts, results URL, creation time, and once ended the lines of each type its results hold", () => {
    expect(remote(batch())).toEqual({
      id: "msgbatch_013Zva2CMHLNnXjNJJKqJ2EF",
      status: "in_progress",
      phase: "in_progress",
      counts: { total: 100, done: 0, failed: 0 },
      createdAt: CREATED,
    })
    expect(
      remote(
        batch({
          processing_status: "canceling",
          cancel_initiated_at: "2024-09-24T18:39:03.114875Z",
          request_counts: { processing: 60, succeeded: 30, errored: 10, canceled: 0, expired: 0 },
        }),
      ),
    ).toEqual({
      id: "msgbatch_013Zva2CMHLNnXjNJJKqJ2EF",
      status: "canceling",
      phase: "cancelling",
      counts: { total: 100, done: 40, failed: 10 },
      createdAt: CREATED,
    })
    const done = {
      processing_status: "ended" as const,
      ended_at: "2024-09-24T19:37:24.100435Z",
      results_url: RESULTS,
    }
    // every request has one line in the results, whatever its type
    const all = { output: { min: 100, max: 100 } }
    const cases: [Partial<MessageBatch>, string, RemoteBatch["expect"]][] = [
      [
        { request_counts: { processing: 0, succeeded: 90, errored: 10, canceled: 0, expired: 0 } },
        "completed",
        { ...all, kinds: { succeeded: 90, errored: 10, canceled: 0, expired: 0 } },
      ],
      [
        { request_counts: { processing: 0, succeeded: 90, errored: 0, canceled: 0, expired: 10 } },
        "expired",
        { ...all, kinds: { succeeded: 90, errored: 0, canceled: 0, expired: 10 } },
      ],
      [
        {
          cancel_initiated_at: "2024-09-24T18:39:03.114875Z",
          request_counts: { processing: 0, succeeded: 50, errored: 10, canceled: 30, expired: 10 },
        },
        "cancelled",
        { ...all, kinds: { succeeded: 50, errored: 10, canceled: 30, expired: 10 } },
      ],
    ]
    for (const [over, outcome, lines] of cases) {
      const b = batch({ ...done, ...over })
      expect(validateSchema("MessageBatch", b, "anthropic")).toEqual([])
      const c = b.request_counts
      expect(remote(b)).toEqual({
        id: "msgbatch_013Zva2CMHLNnXjNJJKqJ2EF",
        status: "ended",
        phase: "ended",
        outcome: outcome as never,
        counts: { total: 100, done: 100, failed: c.errored },
        createdAt: CREATED,
        files: { output: RESULTS },
        expect: lines,
      })
    }
    // a batch that has not ended says nothing of its results
    expect("expect" in remote(batch())).toBe(false)
  })

  test("a 429 that speaks of the batch queue is a retryable queue_limit with the number it gives; any other error stays", () => {
    const queue = new ProviderError(
      "rate_limit",
      "HTTP 429: Your organization has reached its limit of 100,000 batch requests in the processing queue for this model. Please try again once some batches have ended.",
      { retryable: true, retryAfterMs: 30_000, status: 429 },
    )
    const out = queueLimit(queue) as ProviderError
    expect(fields(out)).toEqual(
      errorFields("queue_limit", queue.message, {
        retryable: true,
        status: 429,
        queueLimit: { requests: 100_000 },
      }),
    )
    expect(out.retryAfterMs).toBe(30_000)
    const plain = new ProviderError("rate_limit", "HTTP 429: Number of batch requests in queue exceeded", {
      retryable: true,
      status: 429,
    })
    expect(fields(queueLimit(plain) as ProviderError)).toEqual(
      errorFields("queue_limit", "HTTP 429: Number of batch requests in queue exceeded", {
        retryable: true,
        status: 429,
      }),
    )
    const rate = new ProviderError(
      "rate_limit",
      "HTTP 429: This request would exceed your organization's rate limit of 50 requests per minute.",
      { retryable: true, status: 429 },
    )
    expect(queueLimit(rate)).toBe(rate)
    const server = new ProviderError("server", "HTTP 500: queue broke", { retryable: true, status: 500 })
    expect(queueLimit(server)).toBe(server)
    expect(queuedRequests("… a maximum of 500,000 requests in the processing queue")).toBe(500_000)
    expect(queuedRequests("200,000 batch requests are already in the processing queue")).toBe(200_000)
    expect(queuedRequests("the processing queue is full")).toBeUndefined()
  })
})

// ---------------------------------------------------------------------------------------------------------------
// Against the fake server (test/lib/fake-anthropic.ts): real HTTP on 127.0.0.1, through the official SDK.

/** What every request of these tests has besides its prompt ("item k"). */
const SYS = { system: "sys" }

/** The reply the fake gives "item k" asked with system "sys". */
function expected(k: number): Reply {
  const text = `echo: item ${k}`
  const input = tokens(JSON.stringify(["sys", [{ role: "user", content: `item ${k}` }]]))
  return {
    text,
    usage: { input_tokens: input, output_tokens: tokens(text), cached_input_tokens: undefined },
    finish: "stop",
  }
}

const resultsUrl = (fake: Fake, id: string) => `${fake.url}/v1/messages/batches/${id}/results`

/**
 * What the client gives for the batch `created` once it has ended with `outcome`: its results at its results URL,
 * which hold `lines`.
 */
const endedAs = (
  fake: Fake,
  created: RemoteBatch,
  outcome: RemoteBatch["outcome"],
  counts: RemoteBatch["counts"],
  lines: RemoteBatch["expect"],
): RemoteBatch => ({
  id: created.id,
  status: "ended",
  phase: "ended",
  outcome,
  counts,
  createdAt: created.createdAt,
  files: { output: resultsUrl(fake, created.id) },
  expect: lines,
})

/** How many lines there are of each kind. */
const kindsOf = (lines: { kind?: string | undefined }[]) => {
  const out: Record<string, number> = {}
  for (const { kind } of lines) out[String(kind)] = (out[String(kind)] ?? 0) + 1
  return out
}

describe("the anthropic batch client, against the fake Message Batches API", () => {
  test("create, retrieve until ended, download the raw results and parse every line, out of order", async () => {
    await using fake = await startFakeAnthropic({ apiKey: KEY })
    await using tmp = await tmpdir()
    const c = batchClient(fake.url)
    const created = await submit(c, tmp, tagOf(40), SYS)
    const b = fake.batch.batches[0]!
    const createdAt = Date.parse(new Date(b.createdAt).toISOString())
    expect(created).toEqual({
      id: b.id,
      status: "in_progress",
      phase: "in_progress",
      counts: { total: 40, done: 0, failed: 0 },
      createdAt,
    })
    expect(created.id).toMatch(/^msgbatch_[0-9A-Za-z]{24}$/)
    expect(fake.batch.creates.map(({ at: _at, ...record }) => record)).toEqual([
      { status: 200, id: b.id, requests: 40 },
    ])
    expect(b.custom_ids).toEqual(Array.from({ length: 40 }, (_, k) => `${TAG}_${k}`))
    const batch = await untilEnded(c, created)
    expect(batch).toEqual(
      endedAs(
        fake,
        created,
        "completed",
        { total: 40, done: 40, failed: 0 },
        {
          output: { min: 40, max: 40 },
          kinds: { succeeded: 40, errored: 0, canceled: 0, expired: 0 },
        },
      ),
    )
    const parsed = await downloadOutput(c, batch, tmp)
    // the raw bytes the API served, not re-serialised: the file is what a plain GET of the results gives
    const raw = await (
      await fetch(resultsUrl(fake, created.id), {
        headers: { "x-api-key": KEY, "anthropic-version": "2023-06-01" },
      })
    ).text()
    expect(await Bun.file(tmp.join("out.jsonl")).text()).toBe(raw)
    expectShuffled(
      parsed.map((l) => l.customId),
      b.custom_ids,
    )
    for (const line of parsed) {
      const k = itemOf(line.customId)
      expect(line).toEqual({ customId: `${TAG}_${k}`, kind: "succeeded", reply: expected(k) })
    }
    expect(fake.batch.paidLines).toBe(40)
    expect(fake.invalid).toEqual([])
  })

  test("line errors and an expiry: answers, classified errors and unrun lines", async () => {
    await using fake = await startFakeAnthropic({ apiKey: KEY, batch: halfExpired(529, 400) })
    await using tmp = await tmpdir()
    const c = batchClient(fake.url)
    const created = await submit(c, tmp, tagOf(20), SYS)
    const batch = await c.retrieve(created.id, never())
    const b = fake.batch.batches[0]!
    // 10 run (8 succeeded, 2 errored), 10 expired
    expect(batch).toEqual(
      endedAs(
        fake,
        created,
        "expired",
        { total: 20, done: 20, failed: 2 },
        {
          output: { min: 20, max: 20 },
          kinds: { succeeded: 8, errored: 2, canceled: 0, expired: 10 },
        },
      ),
    )
    await c.download(batch, outputs(tmp), never())
    const all = await lines(c, tmp.join("out.jsonl"))
    expect(all.length).toBe(20)
    expect(kindsOf(all)).toEqual({ succeeded: 8, errored: 2, expired: 10 })
    expectHalfRun(
      all,
      b,
      {
        1: errorFields("server", "HTTP 529: Overloaded", { retryable: true, status: 529 }),
        2: errorFields("bad_request", "HTTP 400: Invalid request.", { status: 400 }),
      },
      (line, k) => expect(line).toEqual({ customId: `${TAG}_${k}`, kind: "succeeded", reply: expected(k) }),
      "expired",
    )
  })

  test("cancel: canceling, then ended as cancelled; the lines not run come back canceled", async () => {
    const clock = handClock()
    await using fake = await startFakeAnthropic({ apiKey: KEY, now: clock.now, batch: SLOW_CANCEL })
    await using tmp = await tmpdir()
    const c = batchClient(fake.url)
    // requests count as processing until the batch ends (as the API's do)
    const { created, ended } = await cancelPartWay(
      c,
      tmp,
      clock,
      { ranMs: 4_000, done: 4, word: "canceling" },
      SYS,
    )
    expect(ended).toEqual(
      endedAs(
        fake,
        created,
        "cancelled",
        { total: 10, done: 10, failed: 0 },
        {
          output: { min: 10, max: 10 },
          kinds: { succeeded: 4, errored: 0, canceled: 6, expired: 0 },
        },
      ),
    )
    await c.download(ended, outputs(tmp), never())
    const all = await lines(c, tmp.join("out.jsonl"))
    const b = fake.batch.batches[0]!
    expect(
      all
        .filter((l) => l.reply)
        .map((l) => l.customId)
        .sort(),
    ).toEqual(customIds(b.order.slice(0, 4)).sort())
    expect(kindsOf(all)).toEqual({ succeeded: 4, canceled: 6 })
    for (const line of all.filter((l) => !l.reply))
      expect(read(line)).toEqual(unrunLine(line.customId, "canceled"))
  })

  test("find: an ended batch by its results' custom_ids, through every page; none for a tag never sent", async () => {
    await using fake = await startFakeAnthropic({ apiKey: KEY })
    await using tmp = await tmpdir()
    const c = batchClient(fake.url)
    const since = Date.now()
    const ids: string[] = []
    // 105 ended batches of 2 requests: the oldest is on the list's second page (100 a page)
    for (let b = 0; b < 105; b++) ids.push((await submit(c, tmp, tagOf(2, since, tagNo(b)), SYS)).id)
    const oldest = await c.find({ tag: "r1-b0000", run: "r", count: 2, since }, never())
    expect(oldest).toEqual({ found: await c.retrieve(ids[0]!, never()) })
    const middle = await c.find({ tag: "r1-b0050", run: "r", count: 2, since }, never())
    expect("found" in middle && middle.found.id).toBe(ids[50]!)
    // same size, other tags, all ended: none is ours
    expect(await c.find({ tag: "r1-b9999", run: "r", count: 2, since }, never())).toEqual({ none: true })
    // another size: no candidate at all
    expect(await c.find({ tag: "r1-b0000", run: "r", count: 3, since }, never())).toEqual({ none: true })
    // batches made long (more than the clock slack) before the intent are not looked at
    expect(
      await c.find({ tag: "r1-b0104", run: "r", count: 2, since: since + 60 * 60_000 }, never()),
    ).toEqual({
      none: true,
    })
  })

  test("find: one unended candidate is taken provisionally; several mean waiting until they end", async () => {
    let clock = Date.now()
    await using fake = await startFakeAnthropic({
      apiKey: KEY,
      now: () => clock,
      batch: { processingMs: 60_000 },
    })
    await using tmp = await tmpdir()
    const c = batchClient(fake.url)
    const since = clock
    const first = await submit(c, tmp, tagOf(3, since, "r1-b0001"), SYS)
    // a batch of another size is no candidate
    await submit(c, tmp, tagOf(4, since, "r1-b0009"), SYS)
    expect(await c.find({ tag: "r1-b0001", run: "r", count: 3, since }, never())).toEqual({
      found: { ...first, counts: { total: 3, done: 0, failed: 0 } },
    })
    clock += 1_000
    const second = await submit(c, tmp, tagOf(3, since, "r1-b0002"), SYS)
    const waiting = await c.find({ tag: "r1-b0001", run: "r", count: 3, since }, never())
    expect(waiting).toEqual({
      wait: `2 unended batches of 3 requests were created since the batch's intent (${second.id}, ${first.id}); which one is r1-b0001 can be told only once they end`,
    })
    // once they end, each is told by its results
    clock += 60_000
    expect(await c.find({ tag: "r1-b0001", run: "r", count: 3, since }, never())).toEqual({
      found: await c.retrieve(first.id, never()),
    })
    expect(await c.find({ tag: "r1-b0002", run: "r", count: 3, since }, never())).toEqual({
      found: await c.retrieve(second.id, never()),
    })
    expect(await c.find({ tag: "r1-b0003", run: "r", count: 3, since }, never())).toEqual({ none: true })
  })

  test("a create past the processing-queue limit is a retryable queue_limit; under it, batches are created", async () => {
    await using fake = await startFakeAnthropic({
      apiKey: KEY,
      batch: { processingMs: 60_000, queueLimit: 5 },
    })
    await using tmp = await tmpdir()
    const c = batchClient(fake.url)
    await submit(c, tmp, tagOf(4), SYS)
    const tag = tagOf(2, Date.now(), "r1-b0002")
    expect(await thrown(() => submit(c, tmp, tag, SYS))).toEqual(
      errorFields("queue_limit", `HTTP 429: ${QUEUE_LIMIT_MESSAGE}`, { retryable: true, status: 429 }),
    )
    expect(fake.batch.batches.length).toBe(1)
    const one = await submit(c, tmp, { ...tag, tag: "r1-b0003", count: 1 }, SYS)
    expect(one.counts).toEqual({ total: 1, done: 0, failed: 0 })
  })

  test("a 404 right after create is not_found, and the next retrieve finds the batch", async () => {
    await using fake = await startFakeAnthropic({ apiKey: KEY, batch: { script: [{ notFoundOnce: true }] } })
    await expectNotFoundOnce(batchClient(fake.url), (id) => `No Message Batch found with id '${id}'.`, SYS)
  })

  test("failures of the calls: a wrong key pauses, a dead server is a network error, an abort is the caller's", async () => {
    await using fake = await startFakeAnthropic({ apiKey: "another-key" })
    await using tmp = await tmpdir()
    const c = batchClient(fake.url)
    const tag = tagOf(1)
    expect(await thrown(() => submit(c, tmp, tag, SYS))).toEqual(
      errorFields("auth", "HTTP 401: invalid x-api-key", { pause: true, status: 401 }),
    )
    expect(await thrown(() => c.find(tag, never()))).toMatchObject({ class: "auth", status: 401 })
    expect(await thrown(() => c.retrieve("msgbatch_1", never()))).toMatchObject({
      class: "auth",
      status: 401,
    })
    await expectConnectionFailed(() => batchClient("http://127.0.0.1:9").cancel("msgbatch_1", never()))
    await expectCallersAbort((signal) => c.retrieve("msgbatch_1", signal))
  })

  test("a download streams 150 MB of results to disk, in a process whose memory does not grow with it", async () => {
    await using fake = await startFakeAnthropic({ apiKey: KEY, validate: false, reply: bigReply })
    const source = new URL("../../../../src/plugins/providers/anthropic/anthropic.ts", import.meta.url)
      .pathname
    await expectBigDownload(
      batchClient(fake.url),
      `import anthropic from ${JSON.stringify(source)}
const c = anthropic.create({}, { model: ${JSON.stringify(MODEL)}, baseUrl: ${JSON.stringify(fake.url)}, apiKey: ${JSON.stringify(KEY)}, timeoutMs: 5000 }).batch`,
      SYS,
    )
  })
})

describe("the anthropic batch client's downloads, against a plain server", () => {
  test("returns the length the results were served with; none for results served compressed, which are written inflated", async () => {
    using server = plainServer()
    await using tmp = await tmpdir()
    const c = batchClient(`http://127.0.0.1:${server.port}`)
    const at = (path: string): RemoteBatch => ({
      id: "msgbatch_1",
      status: "ended",
      phase: "ended",
      outcome: "completed",
      createdAt: 0,
      files: { output: `http://127.0.0.1:${server.port}/v1/messages/batches/${path}/results` },
    })
    const to = outputs(tmp)
    // SERVED: 62 characters, 64 bytes
    expect(await c.download(at("msgbatch_1"), to, never())).toEqual({
      output: to.output,
      announced: { output: 64 },
    })
    expect(await Bun.file(to.output).text()).toBe(SERVED)
    expect(await c.download(at("gzip"), to, never())).toEqual({ output: to.output, announced: {} })
    expect(await Bun.file(to.output).text()).toBe(SERVED)
  })
})

describe("the anthropic batch client's downloads, against a server that misbehaves", () => {
  test("results that stall are a retryable timeout and leave nothing behind", async () => {
    using server = stallingServer()
    await using tmp = await tmpdir()
    const c = batchClient(`http://127.0.0.1:${server.port}`, STALL_MS)
    const batch = {
      id: "msgbatch_1",
      status: "ended",
      phase: "ended" as const,
      outcome: "completed" as const,
      createdAt: 0,
      files: { output: `http://127.0.0.1:${server.port}/v1/messages/batches/msgbatch_1/results` },
    }
    const to = outputs(tmp)
    await expectStalledDownload(c, batch, to)
    // a batch without results (not ended, or archived) has nothing to download
    expect(await c.download({ ...batch, files: undefined }, to, never())).toEqual({})
  })
})

describe("the anthropic create body, streamed from the request file", () => {
  const read = async (file: string) => await new Response(createBody(file)).text()

  test('is the request lines joined by commas inside {"requests":[…]}, across read boundaries, with or without a last newline', async () => {
    await using tmp = await tmpdir()
    const c = batchClient()
    // lines long enough that the file spans many of the stream's chunks
    const lines = Array.from({ length: 3000 }, (_, i) =>
      c.line(`${TAG}_${i}`, { prompt: `item ${i}\nwith a newline inside and ${"y".repeat(i % 97)}` }),
    )
    await Bun.write(tmp.join("a.jsonl"), `${lines.join("\n")}\n`)
    await Bun.write(tmp.join("b.jsonl"), lines.join("\n"))
    await Bun.write(tmp.join("one.jsonl"), `${lines[0]}\n`)
    for (const [file, want] of [
      ["a.jsonl", lines],
      ["b.jsonl", lines],
      ["one.jsonl", lines.slice(0, 1)],
    ] as const) {
      const text = await read(tmp.join(file))
      expect(text).toBe(`{"requests":[${want.join(",")}]}`)
      const parsed = JSON.parse(text) as { requests: unknown[] }
      expect(parsed.requests.length).toBe(want.length)
      expect(validateSchema("CreateMessageBatchParams", parsed, "anthropic")).toEqual([])
    }
    expect(Bun.file(tmp.join("a.jsonl")).size).toBeGreaterThan(200_000)
  })

  test("a 150 MB request file is sent without the process's memory growing with it", async () => {
    await using tmp = await tmpdir()
    const line = batchClient().line(`${TAG}_1`, { prompt: "z".repeat(7_500) })
    const writer = Bun.file(tmp.join("big.jsonl")).writer()
    for (let i = 0; i < 20_000; i++) writer.write(`${line}\n`)
    await writer.end()
    expect(Bun.file(tmp.join("big.jsonl")).size).toBeGreaterThan(150_000_000)
    const source = new URL("../../../../src/plugins/providers/anthropic/batch.ts", import.meta.url).pathname
    const { result, growth } = await measured<number>(
      tmp,
      "create-body.ts",
      `import { createBody } from ${JSON.stringify(source)}
async function drain(stream: ReadableStream<Uint8Array>) {
  let bytes = 0
  for await (const chunk of stream) bytes += chunk.length
  return bytes
}`,
      `drain(createBody(${JSON.stringify(tmp.join("big.jsonl"))}))`,
    )
    // every byte of the file (its last newline dropped) plus the 15 bytes of the wrapper
    expect(result).toBe(Bun.file(tmp.join("big.jsonl")).size - 1 + 15)
    expect(growth).toBeLessThan(100_000_000)
  })
})
