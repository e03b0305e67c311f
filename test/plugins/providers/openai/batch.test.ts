import { describe, expect, test } from "bun:test"
import type { Batch } from "openai/resources/batches"
import openai from "../../../../src/plugins/providers/openai/openai.ts"
import { batchError, enqueuedLimit, remote } from "../../../../src/plugins/providers/openai/batch.ts"
import { announced } from "../../../../src/plugins/api/batch.ts"
import { StoreError, type ErrorClass } from "../../../../src/plugins/api/errors.ts"
import type { BatchClient, RemoteBatch, Request } from "../../../../src/plugins/api/define.ts"
import { validateSchema } from "../../../lib/spec.ts"
import { enqueuedLimitMessage, startFake } from "../../../lib/fake-openai.ts"
import { tmpdir } from "../../../lib/tmp.ts"
import {
  answerLine,
  bigReply,
  cancelPartWay,
  caught,
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
  measured,
  modeOf,
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
  tagNo,
  tagOf,
  thrown,
  tokens,
  unrunLine,
  untilEnded,
} from "../../../lib/batch-helpers.ts"

const MODEL = "gpt-4.1-mini"
const KEY = "sk-test-0123456789"

function batchClient(
  endpoint: "chat" | "responses",
  baseUrl = "http://127.0.0.1:9",
  timeoutMs = 5000,
): BatchClient {
  const client = openai.create({ endpoint }, { model: MODEL, baseUrl, apiKey: KEY, timeoutMs })
  if (!client.batch) throw new Error("the openai provider has no batch client")
  return client.batch
}

const SHAPES: Request[] = [
  { prompt: "plain" },
  { system: "sys", prompt: "with system" },
  { prompt: "limits", max_tokens: 50, temperature: 0.2 },
  { prompt: "params", params: { top_p: 0.5, seed: 3, user: "u1", stop: ["\n"] } },
  {
    prompt: "structured",
    schema: {
      name: "answer",
      schema: {
        type: "object",
        properties: { n: { type: "integer" } },
        required: ["n"],
        additionalProperties: false,
      },
    },
  },
  { prompt: 'unicode ✓ \u2028 "quoted" \\ back' },
]

const CUSTOM_ID = /^[A-Za-z0-9_-]{1,64}$/

// Lines of output and error files, shaped as the Batch API guide shows them (BatchRequestOutput).
const chatCompletion = {
  id: "chatcmpl-123",
  object: "chat.completion",
  created: 1711652795,
  model: "gpt-3.5-turbo-0125",
  choices: [
    {
      index: 0,
      message: { role: "assistant", content: "Hello.", refusal: null },
      logprobs: null,
      finish_reason: "stop",
    },
  ],
  usage: { prompt_tokens: 22, completion_tokens: 2, total_tokens: 24 },
  system_fingerprint: "fp_123",
}

const response = {
  id: "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
  object: "response",
  created_at: 1741476542,
  status: "completed",
  error: null,
  incomplete_details: null,
  instructions: null,
  max_output_tokens: null,
  model: "gpt-4.1-2025-04-14",
  output: [
    {
      type: "message",
      id: "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
      status: "completed",
      role: "assistant",
      content: [{ type: "output_text", text: "In a peaceful grove.", annotations: [], logprobs: [] }],
    },
  ],
  parallel_tool_calls: true,
  previous_response_id: null,
  reasoning: { effort: null, summary: null },
  store: true,
  temperature: 1.0,
  text: { format: { type: "text" } },
  tool_choice: "auto",
  tools: [],
  top_p: 1.0,
  truncation: "disabled",
  usage: {
    input_tokens: 36,
    input_tokens_details: { cached_tokens: 12, cache_write_tokens: 0 },
    output_tokens: 87,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: 123,
  },
  metadata: {},
}

const ok = (customId: string, body: unknown) =>
  JSON.stringify({
    id: "batch_req_123",
    custom_id: customId,
    response: { status_code: 200, request_id: "req_123", body },
    error: null,
  })

const failed = (customId: string, status: number, code: string | null, type: string, message: string) =>
  JSON.stringify({
    id: "batch_req_456",
    custom_id: customId,
    response: {
      status_code: status,
      request_id: "req_789",
      body: { error: { message, type, param: null, code } },
    },
    error: null,
  })

const notRun = (customId: string, code: string, message: string) =>
  JSON.stringify({ id: "batch_req_789", custom_id: customId, response: null, error: { code, message } })

/**
 * A batch object as the API reference's example shows it (less the fields it gives as null, which the spec does not
 * allow), with the fields a test changes; a field set to `undefined` is left out.
 */
function batch(over: { [K in keyof Batch]?: Batch[K] | null } = {}): Batch {
  const out: Record<string, unknown> = {
    id: "batch_abc123",
    object: "batch",
    endpoint: "/v1/chat/completions",
    input_file_id: "file-abc123",
    completion_window: "24h",
    status: "completed",
    output_file_id: "file-cvaTdG",
    error_file_id: "file-HOWS94",
    created_at: 1711471533,
    in_progress_at: 1711471538,
    expires_at: 1711557933,
    finalizing_at: 1711493133,
    completed_at: 1711493163,
    request_counts: { total: 100, completed: 95, failed: 5 },
    metadata: { customer_id: "user_123456789", batch_description: "Nightly eval job" },
    ...over,
  }
  for (const [k, v] of Object.entries(out)) if (v === undefined) delete out[k]
  return out as unknown as Batch
}

const TOKEN_LIMIT =
  "Enqueued token limit reached for gpt-4o in organization org-abc123. Limit: 90,000 enqueued tokens. Please try again once some in_progress batches have been completed."

describe("the openai batch client, without a server", () => {
  test("has the Batch API's limits", () => {
    expect(batchClient("chat").limits).toEqual({ maxRequests: 50_000, maxBytes: 200_000_000 })
    expect(batchClient("responses").limits).toEqual({ maxRequests: 50_000, maxBytes: 200_000_000 })
  })

  test("writes chat completions lines: the realtime body, valid against the spec, one JSON line each", () => {
    const c = batchClient("chat")
    const lines = SHAPES.map((shape, n) => c.line(`a1b2-c3_${n}`, shape))
    for (const [n, text] of lines.entries()) {
      expect(text.includes("\n")).toBe(false)
      const line = JSON.parse(text) as Record<string, unknown>
      expect(Object.keys(line)).toEqual(["custom_id", "method", "url", "body"])
      expect(line.custom_id).toBe(`a1b2-c3_${n}`)
      expect(line.custom_id).toMatch(CUSTOM_ID)
      expect(line.method).toBe("POST")
      expect(line.url).toBe("/v1/chat/completions")
      expect(validateSchema("CreateChatCompletionRequest", line.body)).toEqual([])
    }
    expect(JSON.parse(lines[0]!)).toEqual({
      custom_id: "a1b2-c3_0",
      method: "POST",
      url: "/v1/chat/completions",
      body: { model: MODEL, messages: [{ role: "user", content: "plain" }] },
    })
    expect(JSON.parse(lines[2]!).body).toEqual({
      model: MODEL,
      messages: [{ role: "user", content: "limits" }],
      max_completion_tokens: 50,
      temperature: 0.2,
    })
    expect(JSON.parse(lines[1]!).body.messages).toEqual([
      { role: "system", content: "sys" },
      { role: "user", content: "with system" },
    ])
    expect(JSON.parse(lines[4]!).body.response_format).toEqual({
      type: "json_schema",
      json_schema: { name: "answer", strict: true, schema: SHAPES[4]!.schema!.schema },
    })
    expect(JSON.parse(lines[5]!).body.messages[0].content).toBe(SHAPES[5]!.prompt)
  })

  test("writes Responses API lines: the realtime body, valid against the spec", () => {
    const c = batchClient("responses")
    for (const [n, shape] of SHAPES.entries()) {
      const line = JSON.parse(c.line(`t_${n}`, shape)) as Record<string, unknown>
      expect(Object.keys(line)).toEqual(["custom_id", "method", "url", "body"])
      expect(line.url).toBe("/v1/responses")
      expect(validateSchema("CreateResponse", line.body)).toEqual([])
    }
    expect(JSON.parse(c.line("t_0", { system: "sys", prompt: "p", max_tokens: 5 }))).toEqual({
      custom_id: "t_0",
      method: "POST",
      url: "/v1/responses",
      body: { model: MODEL, input: "p", instructions: "sys", max_output_tokens: 16 },
    })
  })

  test("writes 100,000 lines quickly", () => {
    expectQuickLines(batchClient("chat"), 100)
  })

  test("the fixtures below are shaped as the spec says", () => {
    expect(validateSchema("CreateChatCompletionResponse", chatCompletion)).toEqual([])
    expect(validateSchema("Response", response)).toEqual([])
    expect(validateSchema("Batch", batch())).toEqual([])
  })

  test("reads a chat completions answer line as the realtime reader reads the answer", () => {
    const c = batchClient("chat")
    expect(read(c.parse(ok("tag_1", chatCompletion)))).toEqual(
      answerLine("tag_1", {
        text: "Hello.",
        usage: { input_tokens: 22, output_tokens: 2, cached_input_tokens: undefined },
      }),
    )
    const cut = { ...chatCompletion, choices: [{ ...chatCompletion.choices[0]!, finish_reason: "length" }] }
    expect(c.parse(ok("tag_2", cut)).reply?.finish).toBe("length")
    const refused = {
      ...chatCompletion,
      choices: [
        { ...chatCompletion.choices[0]!, message: { role: "assistant", content: null, refusal: "No." } },
      ],
    }
    expect(c.parse(ok("tag_3", refused)).reply).toEqual({
      text: "No.",
      usage: { input_tokens: 22, output_tokens: 2, cached_input_tokens: undefined },
      finish: "refusal",
    })
  })

  test("reads a Responses API answer line with the Responses reader", () => {
    const c = batchClient("responses")
    expect(read(c.parse(ok("tag_7", response)))).toEqual(
      answerLine("tag_7", {
        text: "In a peaceful grove.",
        usage: { input_tokens: 36, output_tokens: 87, cached_input_tokens: 12 },
      }),
    )
    // the same line read as a chat completion has no message content: a line error, not a throw
    expect(read(batchClient("chat").parse(ok("tag_7", response)))).toEqual(
      errorLine(
        "tag_7",
        errorFields("bad_response", "the completion has no message content", {
          retryable: true,
          status: 200,
        }),
      ),
    )
  })

  test("classifies an error line as a direct call's error of that status", () => {
    const c = batchClient("chat")
    const cases: [number, string | null, string, ErrorClass, boolean, boolean][] = [
      [400, null, "invalid_request_error", "bad_request", false, false],
      [429, "rate_limit_exceeded", "requests", "rate_limit", true, false],
      [429, "insufficient_quota", "insufficient_quota", "quota", false, true],
      [401, "invalid_api_key", "invalid_request_error", "auth", false, true],
      [404, "model_not_found", "invalid_request_error", "not_found", false, false],
      [500, null, "server_error", "server", true, false],
    ]
    for (const [status, code, type, cls, retryable, pause] of cases) {
      const line = c.parse(failed(`tag_${status}`, status, code, type, "Invalid value for 'model'."))
      expect(read(line)).toEqual(
        errorLine(
          `tag_${status}`,
          errorFields(cls, `HTTP ${status}: Invalid value for 'model'.`, { retryable, pause, status }),
        ),
      )
    }
  })

  test("an expired or cancelled request is neither an answer nor an error; another line error is the request's fault", () => {
    const c = batchClient("chat")
    const expired = c.parse(
      notRun(
        "tag_3",
        "batch_expired",
        "This request could not be executed before the completion window expired.",
      ),
    )
    expect(read(expired)).toEqual(unrunLine("tag_3"))
    const cancelled = c.parse(notRun("tag_4", "batch_cancelled", "This request was cancelled."))
    expect(read(cancelled)).toEqual(unrunLine("tag_4"))
    expect(read(c.parse(notRun("tag_5", "invalid_request", "The body is not valid JSON.")))).toEqual(
      errorLine("tag_5", errorFields("bad_request", "invalid_request: The body is not valid JSON.")),
    )
  })

  test("throws on a line that is not a result line at all", () => {
    const c = batchClient("chat")
    expect(() => c.parse("not json")).toThrow()
    expect(() => c.parse("")).toThrow()
    expect(() => c.parse("null")).toThrow("no custom_id")
    expect(() => c.parse(JSON.stringify({ id: "batch_req_1", response: null, error: null }))).toThrow(
      "no custom_id",
    )
    expect(() => c.parse(JSON.stringify({ custom_id: "tag_1", response: null, error: null }))).toThrow(
      "neither a response nor an error",
    )
  })

  test("reads the enqueued limit a refusal names, with thousands separators", () => {
    expect(enqueuedLimit(TOKEN_LIMIT)).toEqual({ tokens: 90_000 })
    expect(
      enqueuedLimit(
        "Enqueued request limit reached for text-embedding-3-small in organization org-XXXXXX. Limit: 1,000,000 enqueued requests. Please try again once some in_progress batches have been completed.",
      ),
    ).toEqual({ requests: 1_000_000 })
    expect(enqueuedLimit("Limit: 2000000 enqueued tokens")).toEqual({ tokens: 2_000_000 })
    expect(enqueuedLimit("Enqueued token limit reached.")).toBeUndefined()
  })

  test("a response announces the length of its body by its Content-Length, unless the body was compressed", () => {
    const served = (headers: Record<string, string>) => new Response("abc", { headers })
    expect(announced(served({ "content-length": "3" }))).toBe(3)
    expect(announced(served({ "content-length": "0" }))).toBe(0)
    expect(announced(served({ "content-length": "3", "content-encoding": "identity" }))).toBe(3)
    // fetch inflates a compressed body: its Content-Length is not the length of the bytes read
    expect(announced(served({ "content-length": "3", "content-encoding": "gzip" }))).toBeUndefined()
    expect(announced(served({ "content-length": "3", "content-encoding": "br" }))).toBeUndefined()
    expect(announced(served({}))).toBeUndefined()
    expect(announced(served({ "content-length": "3x" }))).toBeUndefined()
    expect(announced(served({ "content-length": "-3" }))).toBeUndefined()
    // a streamed body has none
    expect(announced(new Response(new Blob(["abc"]).stream()))).toBeUndefined()
  })

  test("maps every status to a phase and an outcome, with counts, files, the creation time, and once ended the lines its files hold", () => {
    // request_counts: 100 in all, 95 completed, 5 failed
    const ended = { output: { min: 95, max: 95 }, errors: { min: 5, max: 5 } }
    const cases: [Batch["status"], string, string | undefined, RemoteBatch["expect"]][] = [
      ["validating", "validating", undefined, undefined],
      ["in_progress", "in_progress", undefined, undefined],
      ["finalizing", "finalizing", undefined, undefined],
      ["cancelling", "cancelling", undefined, undefined],
      ["completed", "ended", "completed", ended],
      ["expired", "ended", "expired", ended],
      ["cancelled", "ended", "cancelled", ended],
    ]
    for (const [status, phase, outcome, lines] of cases) {
      const r = remote(batch({ status }))
      expect(r).toEqual({
        id: "batch_abc123",
        status,
        phase: phase as never,
        outcome: outcome as never,
        counts: { total: 100, done: 100, failed: 5 },
        createdAt: 1711471533000,
        files: { output: "file-cvaTdG", errors: "file-HOWS94" },
        expect: lines,
      })
      expect("expect" in r).toBe(lines !== undefined)
    }
    // 30 requests neither completed nor failed: an expired or cancelled batch's error file may hold a line for each
    // of them (or not); a completed batch's may not
    const cut = { total: 100, completed: 60, failed: 10 }
    const bounds: [Batch["status"], RemoteBatch["expect"]][] = [
      ["completed", { output: { min: 60, max: 60 }, errors: { min: 10, max: 10 } }],
      ["expired", { output: { min: 60, max: 60 }, errors: { min: 10, max: 40 } }],
      ["cancelled", { output: { min: 60, max: 60 }, errors: { min: 10, max: 40 } }],
    ]
    for (const [status, lines] of bounds) {
      expect(remote(batch({ status, request_counts: cut })).expect).toEqual(lines)
    }
    const running = remote(
      batch({
        status: "in_progress",
        output_file_id: null,
        error_file_id: null,
        request_counts: { total: 10, completed: 3, failed: 1 },
      }),
    )
    expect(running).toEqual({
      id: "batch_abc123",
      status: "in_progress",
      phase: "in_progress",
      counts: { total: 10, done: 4, failed: 1 },
      createdAt: 1711471533000,
    })
    expect(Object.keys(running).sort()).toEqual(["counts", "createdAt", "id", "phase", "status"])
    expect(remote(batch({ error_file_id: null })).files).toEqual({ output: "file-cvaTdG" })
  })

  test("a batch refused for the enqueued-token limit is a retryable queue_limit with the limit", () => {
    const failedBatch = batch({
      status: "failed",
      output_file_id: undefined,
      error_file_id: undefined,
      completed_at: undefined,
      finalizing_at: undefined,
      failed_at: 1711471540,
      request_counts: { total: 0, completed: 0, failed: 0 },
      errors: {
        object: "list",
        data: [{ code: "token_limit_exceeded", message: TOKEN_LIMIT, param: null, line: null }],
      },
    })
    expect(validateSchema("Batch", failedBatch)).toEqual([])
    const r = remote(failedBatch)
    expect([r.phase, r.outcome]).toEqual(["ended", "failed"])
    expect(r.expect).toEqual({ output: { min: 0, max: 0 }, errors: { min: 0, max: 0 } })
    expect(fields(r.error)).toEqual(
      errorFields("queue_limit", `the batch was refused (token_limit_exceeded): ${TOKEN_LIMIT}`, {
        retryable: true,
        queueLimit: { tokens: 90_000 },
      }),
    )
    // a limit message without a number still tells what happened
    const bare = batchError(
      batch({
        status: "failed",
        errors: { data: [{ code: "token_limit_exceeded", message: "Enqueued token limit reached." }] },
      }),
    )
    expect([bare?.errorClass, bare?.retryable, bare?.queueLimit]).toEqual(["queue_limit", true, undefined])
  })

  test("a batch whose file did not validate is a bad_request naming the codes and lines", () => {
    const r = remote(
      batch({
        status: "failed",
        errors: {
          object: "list",
          data: [
            {
              code: "invalid_json_line",
              message: "This line is not parseable as valid JSON.",
              param: null,
              line: 2,
            },
            { code: "missing_required_parameter", message: "Missing 'url'.", param: "url", line: 5 },
            {
              code: "duplicate_custom_id",
              message: "The custom ID 'x' is not unique.",
              param: null,
              line: 7,
            },
            { code: "invalid_url", message: "The URL provided is not supported.", param: "url", line: 9 },
          ],
        },
      }),
    )
    expect(fields(r.error)).toEqual(
      errorFields(
        "bad_request",
        "the batch failed: invalid_json_line at line 2: This line is not parseable as valid JSON.; missing_required_parameter at line 5: Missing 'url'.; duplicate_custom_id at line 7: The custom ID 'x' is not unique. (and 1 more)",
      ),
    )
    expect(fields(remote(batch({ status: "failed" })).error)).toEqual(
      errorFields("bad_request", "the batch failed and the API gave no reason"),
    )
    // only a failed batch has an error
    expect(
      remote(batch({ status: "completed", errors: { data: [{ code: "x", message: "y" }] } })).error,
    ).toBeUndefined()
  })
})

// ---------------------------------------------------------------------------------------------------------------
// Against the fake server (test/lib/fake-openai.ts): real HTTP on 127.0.0.1, through the official SDK.

/**
 * What the client gives for the batch `created` once it has ended with `outcome` (its status says the same), with
 * these files, which hold `lines`.
 */
const endedAs = (
  created: RemoteBatch,
  outcome: NonNullable<RemoteBatch["outcome"]>,
  counts: RemoteBatch["counts"],
  files: RemoteBatch["files"],
  lines: RemoteBatch["expect"],
): RemoteBatch => ({
  id: created.id,
  status: outcome,
  phase: "ended",
  outcome,
  counts,
  createdAt: created.createdAt,
  files,
  expect: lines,
})

describe("the openai batch client, against the fake Batch API", () => {
  for (const endpoint of ["chat", "responses"] as const) {
    test(`${endpoint}: create, retrieve until ended, download and parse every line, out of order`, async () => {
      await using fake = await startFake({ apiKey: KEY })
      await using tmp = await tmpdir()
      const c = batchClient(endpoint, fake.url)
      const created = await submit(c, tmp, { ...tagOf(40), run: "nightly-run" })
      expect(created).toEqual({
        id: fake.batch.batches[0]!.id,
        status: "validating",
        phase: "validating",
        counts: { total: 0, done: 0, failed: 0 },
        createdAt: Math.floor(fake.batch.batches[0]!.createdAt / 1000) * 1000,
      })
      expect(created.id).toMatch(/^batch_[0-9a-f]{32}$/)
      // the file went up as a .jsonl of purpose batch, and the batch carries the run and the tag
      const input = [...fake.files.values()][0]!
      expect([input.filename, input.purpose, input.bytes?.length]).toEqual([
        `${TAG}.jsonl`,
        "batch",
        Bun.file(tmp.join("requests.jsonl")).size,
      ])
      expect(fake.batch.batches[0]!.metadata).toEqual({ spool_run: "nightly-run", spool_tag: TAG })
      expect(fake.batch.batches[0]!.data.endpoint).toBe(
        endpoint === "chat" ? "/v1/chat/completions" : "/v1/responses",
      )
      const batch = await untilEnded(c, created)
      const files = { output: fake.batch.batches[0]!.data.outputFileId! }
      expect(batch).toEqual(
        endedAs(created, "completed", { total: 40, done: 40, failed: 0 }, files, {
          output: { min: 40, max: 40 },
          errors: { min: 0, max: 0 },
        }),
      )
      const parsed = await downloadOutput(c, batch, tmp)
      expect(parsed.length).toBe(40)
      // results come in another order than the requests went in; every request has exactly one
      expectShuffled(
        parsed.map((l) => l.customId),
        Array.from({ length: 40 }, (_, k) => `${TAG}_${k}`),
      )
      for (const line of parsed) {
        const k = itemOf(line.customId)
        const text = `echo: item ${k}`
        const input =
          endpoint === "chat"
            ? tokens(JSON.stringify([{ role: "user", content: `item ${k}` }]))
            : tokens(JSON.stringify(`item ${k}`))
        expect(line).toEqual({
          customId: `${TAG}_${k}`,
          reply: {
            text,
            usage: { input_tokens: input, output_tokens: tokens(text), cached_input_tokens: undefined },
          },
        })
      }
      expect(fake.batch.paidLines).toBe(40)
      expect(fake.invalid).toEqual([])
    })
  }

  test("line errors and an expiry: answers, classified errors and unrun lines from the output and error files", async () => {
    await using fake = await startFake({ apiKey: KEY, batch: halfExpired(400, 500) })
    await using tmp = await tmpdir()
    const c = batchClient("chat", fake.url)
    const created = await submit(c, tmp, tagOf(20))
    const batch = await c.retrieve(created.id, never())
    const d = fake.batch.batches[0]!
    const files = { output: d.data.outputFileId!, errors: d.data.errorFileId! }
    // 10 run (8 answered, 2 errored), 10 expired: the fake counts those never run as failed
    expect(batch).toEqual(
      endedAs(created, "expired", { total: 20, done: 20, failed: 12 }, files, {
        output: { min: 8, max: 8 },
        errors: { min: 12, max: 12 },
      }),
    )
    const written = await c.download(batch, outputs(tmp), never())
    // the fake streams its files, chunked: no length is announced
    expect(written).toEqual({ output: tmp.join("out.jsonl"), errors: tmp.join("err.jsonl"), announced: {} })
    expect(await modeOf(tmp.join("err.jsonl"))).toBe(0o600)
    const out = await lines(c, tmp.join("out.jsonl"))
    const err = await lines(c, tmp.join("err.jsonl"))
    // as many lines as the batch said its files hold
    expect([out.length, err.length]).toEqual([8, 12])
    const all = [...out, ...err]
    expectHalfRun(
      all,
      d,
      {
        1: errorFields("bad_request", "HTTP 400: Invalid request.", { status: 400 }),
        2: errorFields("server", "HTTP 500: The server had an error while processing your request.", {
          retryable: true,
          status: 500,
        }),
      },
      (line, k) => expect(line.reply?.text).toBe(`echo: item ${k}`),
    )
  })

  test("cancel: the batch is cancelling, then cancelled with the lines it ran; the others come back unrun", async () => {
    const clock = handClock()
    await using fake = await startFake({ apiKey: KEY, now: clock.now, batch: SLOW_CANCEL })
    await using tmp = await tmpdir()
    const c = batchClient("responses", fake.url)
    const { created, ended } = await cancelPartWay(c, tmp, clock, {
      ranMs: 3_000,
      done: 3,
      word: "cancelling",
    })
    const d = fake.batch.batches[0]!
    const files = { output: d.data.outputFileId!, errors: d.data.errorFileId! }
    expect(ended).toEqual(
      endedAs(created, "cancelled", { total: 10, done: 10, failed: 7 }, files, {
        output: { min: 3, max: 3 },
        errors: { min: 7, max: 7 },
      }),
    )
    await c.download(ended, outputs(tmp), never())
    const out = await lines(c, tmp.join("out.jsonl"))
    const err = await lines(c, tmp.join("err.jsonl"))
    expect(out.map((l) => l.reply?.text).sort()).toEqual(
      Array.from(d.order.slice(0, 3), (i) => `echo: item ${i}`).sort(),
    )
    expect(err.length).toBe(7)
    for (const line of err) expect(Object.keys(line)).toEqual(["customId"])
    // an ended batch cannot be cancelled: the API's 400, not retried
    expect(await thrown(() => c.cancel(created.id, never()))).toEqual(
      errorFields("bad_request", "HTTP 400: Cannot cancel a batch with status 'cancelled'.", { status: 400 }),
    )
  })

  test("find: the batch whose metadata carries the tag, through every page of the list; none for a tag never sent", async () => {
    await using fake = await startFake({ apiKey: KEY })
    await using tmp = await tmpdir()
    const c = batchClient("chat", fake.url)
    const since = Date.now()
    const ids: string[] = []
    // 105 batches: the oldest is on the list's second page (100 a page)
    for (let b = 0; b < 105; b++) ids.push((await submit(c, tmp, tagOf(1, since, tagNo(b)))).id)
    const oldest = await c.find({ tag: "r1-b0000", run: "r", count: 1, since }, never())
    expect("found" in oldest && oldest.found.id).toBe(ids[0]!)
    const newest = await c.find({ tag: "r1-b0104", run: "r", count: 1, since }, never())
    expect("found" in newest && newest.found).toEqual(await c.retrieve(ids[104]!, never()))
    expect(await c.find({ tag: "r1-b9999", run: "r", count: 1, since }, never())).toEqual({ none: true })
    // batches made long (more than the clock slack) before the intent are not looked at
    const later = since + 60 * 60_000
    expect(await c.find({ tag: "r1-b0104", run: "r", count: 1, since: later }, never())).toEqual({
      none: true,
    })
    // within the slack they are
    const near = since + 5 * 60_000
    expect("found" in (await c.find({ tag: "r1-b0104", run: "r", count: 1, since: near }, never()))).toBe(
      true,
    )
  })

  test("the enqueued-token limit: the batch fails validation, a retryable queue_limit with the limit", async () => {
    await using fake = await startFake({ apiKey: KEY, batch: { enqueuedTokenLimit: 30 } })
    await using tmp = await tmpdir()
    const c = batchClient("chat", fake.url)
    const created = await submit(c, tmp, tagOf(10))
    const batch = await c.retrieve(created.id, never())
    expect([batch.status, batch.phase, batch.outcome, batch.files, batch.expect]).toEqual([
      "failed",
      "ended",
      "failed",
      undefined,
      { output: { min: 0, max: 0 }, errors: { min: 0, max: 0 } },
    ])
    expect(fields(batch.error)).toEqual(
      errorFields(
        "queue_limit",
        `the batch was refused (token_limit_exceeded): ${enqueuedLimitMessage(MODEL, 30)}`,
        { retryable: true, queueLimit: { tokens: 30 } },
      ),
    )
    // nothing to download
    expect(await c.download(batch, outputs(tmp), never())).toEqual({ announced: {} })
    expect(await Bun.file(tmp.join("out.jsonl")).exists()).toBe(false)
  })

  test("a file that does not validate fails the batch: a bad_request naming the code and the line", async () => {
    await using fake = await startFake({ apiKey: KEY, validate: false })
    await using tmp = await tmpdir()
    const c = batchClient("chat", fake.url)
    const good = c.line(`${TAG}_0`, { prompt: "a" })
    const wrong = c.line(`${TAG}_1`, { prompt: "b" }).replace("/v1/chat/completions", "/v1/responses")
    await Bun.write(tmp.join("requests.jsonl"), `${good}\n${wrong}\n`)
    const created = await c.create(tmp.join("requests.jsonl"), tagOf(2), never())
    const batch = await c.retrieve(created.id, never())
    expect(fields(batch.error)).toEqual(
      errorFields(
        "bad_request",
        "the batch failed: url_mismatch at line 2: The url '/v1/responses' does not match the batch's endpoint '/v1/chat/completions'.",
      ),
    )
  })

  test("a 404 right after create is not_found, and the next retrieve finds the batch", async () => {
    await using fake = await startFake({ apiKey: KEY, batch: { script: [{ notFoundOnce: true }] } })
    await expectNotFoundOnce(batchClient("chat", fake.url), (id) => `No batch found with id '${id}'.`)
  })

  test("failures of the calls: a wrong key pauses, a dead server is a network error, an abort is the caller's", async () => {
    await using fake = await startFake({ apiKey: "another-key" })
    await using tmp = await tmpdir()
    const c = batchClient("chat", fake.url)
    const tag = tagOf(1)
    expect(await thrown(() => submit(c, tmp, tag))).toEqual(
      errorFields("auth", "HTTP 401: Incorrect API key provided.", { pause: true, status: 401 }),
    )
    expect(await thrown(() => c.find(tag, never()))).toMatchObject({ class: "auth", status: 401 })
    const dead = batchClient("chat", "http://127.0.0.1:9/v1")
    await expectConnectionFailed(() => dead.retrieve("batch_1", never()))
    await expectCallersAbort((signal) => batchClient("chat", fake.url).retrieve("batch_1", signal))
    // no key at all: the Batch API cannot be used
    const keyless = openai.create(
      { endpoint: "chat" },
      { model: MODEL, baseUrl: fake.url, apiKey: undefined, timeoutMs: 5000 },
    )
    expect(await thrown(() => keyless.batch!.retrieve("batch_1", never()))).toMatchObject({
      class: "auth",
      pause: true,
    })
  })

  test("create streams a 150 MB request file up, in a process whose memory does not grow with it", async () => {
    await using fake = await startFake({ apiKey: KEY, validate: false })
    await using tmp = await tmpdir()
    const c = batchClient("chat", fake.url)
    const pad = "y".repeat(3_000)
    const requests = Array.from({ length: 50_000 }, (_, k) =>
      c.line(`${TAG}_${k}`, { prompt: `item ${k} ${pad}` }),
    )
    await Bun.write(tmp.join("requests.jsonl"), requests.join("\n") + "\n")
    const size = Bun.file(tmp.join("requests.jsonl")).size
    expect(size).toBeGreaterThan(150_000_000)
    expect(size).toBeLessThan(200_000_000)
    const source = new URL("../../../../src/plugins/providers/openai/batch.ts", import.meta.url).pathname
    const { result: batch, growth } = await measured<RemoteBatch>(
      tmp,
      "create.ts",
      `import { openaiBatch } from ${JSON.stringify(source)}
const c = openaiBatch({ model: ${JSON.stringify(MODEL)}, baseUrl: ${JSON.stringify(fake.url)}, apiKey: ${JSON.stringify(KEY)}, timeoutMs: 60000 }, "chat")`,
      `c.create(${JSON.stringify(tmp.join("requests.jsonl"))}, ${JSON.stringify(tagOf(50_000))}, new AbortController().signal)`,
    )
    expect([batch.id, batch.phase]).toEqual([fake.batch.batches[0]!.id, "validating"])
    expect(growth).toBeLessThan(100_000_000)
    // every byte arrived
    expect([...fake.files.values()][0]!.bytes?.length).toBe(size)
    expect(fake.batch.batches[0]!.lines.length).toBe(50_000)
  })

  test("a download streams a 150 MB file to disk, in a process whose memory does not grow with it", async () => {
    await using fake = await startFake({ apiKey: KEY, validate: false, reply: bigReply })
    // the download runs in a process of its own, so that only the client's memory is measured
    const source = new URL("../../../../src/plugins/providers/openai/batch.ts", import.meta.url).pathname
    await expectBigDownload(
      batchClient("chat", fake.url),
      `import { openaiBatch } from ${JSON.stringify(source)}
const c = openaiBatch({ model: ${JSON.stringify(MODEL)}, baseUrl: ${JSON.stringify(fake.url)}, apiKey: ${JSON.stringify(KEY)}, timeoutMs: 5000 }, "chat")`,
    )
  })
})

/** A completed batch with these files, as a test of the downloads alone needs it. */
const completed = (files: RemoteBatch["files"]): RemoteBatch => ({
  id: "batch_1",
  status: "completed",
  phase: "ended",
  outcome: "completed",
  createdAt: 0,
  files,
})

describe("the openai batch client's downloads, against a plain server", () => {
  test("returns the length each file was served with; none for a file served compressed, which is written inflated", async () => {
    using server = plainServer()
    await using tmp = await tmpdir()
    const c = batchClient("chat", `http://127.0.0.1:${server.port}/v1`)
    const batch = completed({ output: "file-plain", errors: "file-gzip" })
    const to = outputs(tmp)
    // SERVED: 62 characters, 64 bytes
    expect(await c.download(batch, to, never())).toEqual({ ...to, announced: { output: 64 } })
    expect(await Bun.file(to.output).text()).toBe(SERVED)
    expect(await Bun.file(to.errors).text()).toBe(SERVED)
    expect(Bun.file(to.output).size).toBe(64)
  })
})

describe("the openai batch client's downloads, against a server that misbehaves", () => {
  test("a body that stalls is a retryable timeout and leaves nothing behind; a disk that fails is a StoreError", async () => {
    using server = stallingServer()
    await using tmp = await tmpdir()
    const c = batchClient("chat", `http://127.0.0.1:${server.port}/v1`, STALL_MS)
    const batch = completed({ output: "file-1" })
    const to = outputs(tmp)
    await expectStalledDownload(c, batch, to)
    const failed = await caught(() =>
      c.download(batch, { output: tmp.join("missing", "out.jsonl"), errors: to.errors }, never()),
    )
    expect(failed).toBeInstanceOf(StoreError)
    expect((failed as StoreError).message).toStartWith(
      `cannot write ${tmp.join("missing", "out.jsonl.part")}: `,
    )
  })
})
