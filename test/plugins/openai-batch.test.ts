import { describe, expect, test } from "bun:test"
import type { Batch } from "openai/resources/batches"
import openai from "../../src/plugins/providers/openai.ts"
import { batchError, enqueuedLimit, remote } from "../../src/plugins/providers/openai-batch.ts"
import { ProviderError, StoreError, type ErrorClass } from "../../src/core/errors.ts"
import type { BatchClient, BatchLine, RemoteBatch, Request } from "../../src/plugins/define.ts"
import { validateSchema } from "../lib/spec.ts"
import { enqueuedLimitMessage, startFake } from "../lib/fake-openai.ts"
import { tmpdir } from "../lib/tmp.ts"
import { stat } from "node:fs/promises"

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

/** The fields of a ProviderError the runner reads. */
function fields(e: ProviderError | undefined) {
  if (!e) return undefined
  expect(e).toBeInstanceOf(ProviderError)
  return {
    class: e.errorClass,
    retryable: e.retryable,
    pause: e.pause,
    status: e.status,
    message: e.message,
    queueLimit: e.queueLimit,
  }
}

/** A parsed line with its error reduced to the fields the runner reads. */
function read(line: BatchLine) {
  return {
    customId: line.customId,
    reply: line.reply,
    error: fields(line.error),
    keys: Object.keys(line).sort(),
  }
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
    const c = batchClient("chat")
    const started = performance.now()
    let bytes = 0
    for (let n = 0; n < 100_000; n++) bytes += c.line(`tag_${n}`, { system: "s", prompt: `item ${n}` }).length
    expect(bytes).toBeGreaterThan(100_000 * 100)
    expect(performance.now() - started).toBeLessThan(5000)
  })

  test("the fixtures below are shaped as the spec says", () => {
    expect(validateSchema("CreateChatCompletionResponse", chatCompletion)).toEqual([])
    expect(validateSchema("Response", response)).toEqual([])
    expect(validateSchema("Batch", batch())).toEqual([])
  })

  test("reads a chat completions answer line as the realtime reader reads the answer", () => {
    const c = batchClient("chat")
    expect(read(c.parse(ok("tag_1", chatCompletion)))).toEqual({
      customId: "tag_1",
      reply: {
        text: "Hello.",
        usage: { input_tokens: 22, output_tokens: 2, cached_input_tokens: undefined },
      },
      error: undefined,
      keys: ["customId", "reply"],
    })
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
    expect(read(c.parse(ok("tag_7", response)))).toEqual({
      customId: "tag_7",
      reply: {
        text: "In a peaceful grove.",
        usage: { input_tokens: 36, output_tokens: 87, cached_input_tokens: 12 },
      },
      error: undefined,
      keys: ["customId", "reply"],
    })
    // the same line read as a chat completion has no message content: a line error, not a throw
    expect(read(batchClient("chat").parse(ok("tag_7", response)))).toEqual({
      customId: "tag_7",
      reply: undefined,
      error: {
        class: "bad_response",
        retryable: true,
        pause: false,
        status: 200,
        message: "the completion has no message content",
        queueLimit: undefined,
      },
      keys: ["customId", "error"],
    })
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
      expect(read(line)).toEqual({
        customId: `tag_${status}`,
        reply: undefined,
        error: {
          class: cls,
          retryable,
          pause,
          status,
          message: `HTTP ${status}: Invalid value for 'model'.`,
          queueLimit: undefined,
        },
        keys: ["customId", "error"],
      })
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
    expect(read(expired)).toEqual({
      customId: "tag_3",
      reply: undefined,
      error: undefined,
      keys: ["customId"],
    })
    const cancelled = c.parse(notRun("tag_4", "batch_cancelled", "This request was cancelled."))
    expect(read(cancelled)).toEqual({
      customId: "tag_4",
      reply: undefined,
      error: undefined,
      keys: ["customId"],
    })
    expect(read(c.parse(notRun("tag_5", "invalid_request", "The body is not valid JSON.")))).toEqual({
      customId: "tag_5",
      reply: undefined,
      error: {
        class: "bad_request",
        retryable: false,
        pause: false,
        status: undefined,
        message: "invalid_request: The body is not valid JSON.",
        queueLimit: undefined,
      },
      keys: ["customId", "error"],
    })
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

  test("maps every status to a phase and an outcome, with counts, files and the creation time", () => {
    const cases: [Batch["status"], string, string | undefined][] = [
      ["validating", "validating", undefined],
      ["in_progress", "in_progress", undefined],
      ["finalizing", "finalizing", undefined],
      ["cancelling", "cancelling", undefined],
      ["completed", "ended", "completed"],
      ["expired", "ended", "expired"],
      ["cancelled", "ended", "cancelled"],
    ]
    for (const [status, phase, outcome] of cases) {
      expect(remote(batch({ status }))).toEqual({
        id: "batch_abc123",
        status,
        phase: phase as never,
        outcome: outcome as never,
        counts: { total: 100, done: 100, failed: 5 },
        createdAt: 1711471533000,
        files: { output: "file-cvaTdG", errors: "file-HOWS94" },
      })
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
    expect(fields(r.error)).toEqual({
      class: "queue_limit",
      retryable: true,
      pause: false,
      status: undefined,
      message: `the batch was refused (token_limit_exceeded): ${TOKEN_LIMIT}`,
      queueLimit: { tokens: 90_000 },
    })
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
    expect(fields(r.error)).toEqual({
      class: "bad_request",
      retryable: false,
      pause: false,
      status: undefined,
      message:
        "the batch failed: invalid_json_line at line 2: This line is not parseable as valid JSON.; missing_required_parameter at line 5: Missing 'url'.; duplicate_custom_id at line 7: The custom ID 'x' is not unique. (and 1 more)",
      queueLimit: undefined,
    })
    expect(fields(remote(batch({ status: "failed" })).error)).toEqual({
      class: "bad_request",
      retryable: false,
      pause: false,
      status: undefined,
      message: "the batch failed and the API gave no reason",
      queueLimit: undefined,
    })
    // only a failed batch has an error
    expect(
      remote(batch({ status: "completed", errors: { data: [{ code: "x", message: "y" }] } })).error,
    ).toBeUndefined()
  })
})

// ---------------------------------------------------------------------------------------------------------------
// Against the fake server (test/lib/fake-openai.ts): real HTTP on 127.0.0.1, through the official SDK.

const never = () => new AbortController().signal
const tokens = (text: string) => Math.max(1, Math.ceil(text.length / 4))
const TAG = "r1-b0001"

/** Writes a request file of `n` lines (`${tag}_${k}`, prompt "item k") and returns the requests. */
async function requestFile(c: BatchClient, path: string, n: number, tag = TAG): Promise<Request[]> {
  const requests = Array.from({ length: n }, (_, k) => ({ prompt: `item ${k}` }))
  await Bun.write(path, requests.map((r, k) => c.line(`${tag}_${k}`, r)).join("\n") + "\n")
  return requests
}

/** What a call throws: the fields of its ProviderError. */
async function thrown(run: () => Promise<unknown>) {
  try {
    await run()
  } catch (e) {
    if (!(e instanceof ProviderError)) throw e
    return fields(e)
  }
  throw new Error("it did not throw")
}

/** Every line of a downloaded file, parsed. */
async function lines(c: BatchClient, path: string): Promise<BatchLine[]> {
  const text = await Bun.file(path).text()
  return text
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => c.parse(l))
}

const modeOf = async (path: string) => (await stat(path)).mode & 0o777

describe("the openai batch client, against the fake Batch API", () => {
  for (const endpoint of ["chat", "responses"] as const) {
    test(`${endpoint}: create, retrieve until ended, download and parse every line, out of order`, async () => {
      await using fake = await startFake({ apiKey: KEY })
      await using tmp = await tmpdir()
      const c = batchClient(endpoint, fake.url)
      const requests = await requestFile(c, tmp.join("requests.jsonl"), 40)
      const since = Date.now()
      const created = await c.create(
        tmp.join("requests.jsonl"),
        { tag: TAG, run: "nightly-run", count: 40, since },
        never(),
      )
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
      let batch = created
      while (batch.phase !== "ended") batch = await c.retrieve(created.id, never())
      expect(batch).toEqual({
        id: created.id,
        status: "completed",
        phase: "ended",
        outcome: "completed",
        counts: { total: 40, done: 40, failed: 0 },
        createdAt: created.createdAt,
        files: { output: fake.batch.batches[0]!.data.outputFileId! },
      })
      const written = await c.download(
        batch,
        { output: tmp.join("out.jsonl"), errors: tmp.join("err.jsonl") },
        never(),
      )
      expect(written).toEqual({ output: tmp.join("out.jsonl") })
      expect(await modeOf(tmp.join("out.jsonl"))).toBe(0o600)
      expect(await Bun.file(tmp.join("out.jsonl.part")).exists()).toBe(false)
      expect(await Bun.file(tmp.join("err.jsonl")).exists()).toBe(false)
      const parsed = await lines(c, tmp.join("out.jsonl"))
      expect(parsed.length).toBe(40)
      const ids = parsed.map((l) => l.customId)
      // results come in another order than the requests went in; every request has exactly one
      expect(ids).not.toEqual(requests.map((_, k) => `${TAG}_${k}`))
      expect(ids.slice().sort()).toEqual(requests.map((_, k) => `${TAG}_${k}`).sort())
      for (const line of parsed) {
        const k = Number(line.customId.slice(TAG.length + 1))
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
    await using fake = await startFake({
      apiKey: KEY,
      batch: {
        script: [
          {
            end: { outcome: "expired", after: 0.5 },
            lineError: (customId) =>
              customId.endsWith("_1")
                ? { status: 400 }
                : customId.endsWith("_2")
                  ? { status: 500 }
                  : undefined,
          },
        ],
      },
    })
    await using tmp = await tmpdir()
    const c = batchClient("chat", fake.url)
    await requestFile(c, tmp.join("requests.jsonl"), 20)
    const created = await c.create(
      tmp.join("requests.jsonl"),
      { tag: TAG, run: "r", count: 20, since: Date.now() },
      never(),
    )
    const batch = await c.retrieve(created.id, never())
    const d = fake.batch.batches[0]!
    expect(batch).toEqual({
      id: created.id,
      status: "expired",
      phase: "ended",
      outcome: "expired",
      counts: { total: 20, done: 20, failed: 20 - d.succeeded },
      createdAt: created.createdAt,
      files: { output: d.data.outputFileId!, errors: d.data.errorFileId! },
    })
    const written = await c.download(
      batch,
      { output: tmp.join("out.jsonl"), errors: tmp.join("err.jsonl") },
      never(),
    )
    expect(written).toEqual({ output: tmp.join("out.jsonl"), errors: tmp.join("err.jsonl") })
    expect(await modeOf(tmp.join("err.jsonl"))).toBe(0o600)
    const all = [...(await lines(c, tmp.join("out.jsonl"))), ...(await lines(c, tmp.join("err.jsonl")))]
    expect(all.length).toBe(20)
    const processed = new Set(Array.from(d.order.slice(0, d.done), (i) => `${TAG}_${i}`))
    expect(processed.size).toBe(10)
    for (const line of all) {
      const k = Number(line.customId.slice(TAG.length + 1))
      if (!processed.has(line.customId)) {
        expect(Object.keys(line)).toEqual(["customId"])
      } else if (k === 1) {
        expect(fields(line.error)).toEqual({
          class: "bad_request",
          retryable: false,
          pause: false,
          status: 400,
          message: "HTTP 400: Invalid request.",
          queueLimit: undefined,
        })
      } else if (k === 2) {
        expect(fields(line.error)).toEqual({
          class: "server",
          retryable: true,
          pause: false,
          status: 500,
          message: "HTTP 500: The server had an error while processing your request.",
          queueLimit: undefined,
        })
      } else {
        expect(line.reply?.text).toBe(`echo: item ${k}`)
      }
    }
    expect(all.filter((l) => l.reply).length).toBe(d.succeeded)
  })

  test("cancel: the batch is cancelling, then cancelled with the lines it ran; the others come back unrun", async () => {
    let clock = Date.now()
    await using fake = await startFake({
      apiKey: KEY,
      now: () => clock,
      batch: { processingMs: 10_000, cancelMs: 5_000 },
    })
    await using tmp = await tmpdir()
    const c = batchClient("responses", fake.url)
    await requestFile(c, tmp.join("requests.jsonl"), 10)
    const created = await c.create(
      tmp.join("requests.jsonl"),
      { tag: TAG, run: "r", count: 10, since: clock },
      never(),
    )
    clock += 3_000
    expect(await c.retrieve(created.id, never())).toEqual({
      id: created.id,
      status: "in_progress",
      phase: "in_progress",
      counts: { total: 10, done: 3, failed: 0 },
      createdAt: created.createdAt,
    })
    const cancelling = await c.cancel(created.id, never())
    expect([cancelling.status, cancelling.phase, cancelling.outcome]).toEqual([
      "cancelling",
      "cancelling",
      undefined,
    ])
    clock += 5_000
    const ended = await c.retrieve(created.id, never())
    const d = fake.batch.batches[0]!
    expect(ended).toEqual({
      id: created.id,
      status: "cancelled",
      phase: "ended",
      outcome: "cancelled",
      counts: { total: 10, done: 10, failed: 7 },
      createdAt: created.createdAt,
      files: { output: d.data.outputFileId!, errors: d.data.errorFileId! },
    })
    await c.download(ended, { output: tmp.join("out.jsonl"), errors: tmp.join("err.jsonl") }, never())
    const out = await lines(c, tmp.join("out.jsonl"))
    const err = await lines(c, tmp.join("err.jsonl"))
    expect(out.map((l) => l.reply?.text).sort()).toEqual(
      Array.from(d.order.slice(0, 3), (i) => `echo: item ${i}`).sort(),
    )
    expect(err.length).toBe(7)
    for (const line of err) expect(Object.keys(line)).toEqual(["customId"])
    // an ended batch cannot be cancelled: the API's 400, not retried
    expect(await thrown(() => c.cancel(created.id, never()))).toEqual({
      class: "bad_request",
      retryable: false,
      pause: false,
      status: 400,
      message: "HTTP 400: Cannot cancel a batch with status 'cancelled'.",
      queueLimit: undefined,
    })
  })

  test("find: the batch whose metadata carries the tag, through every page of the list; none for a tag never sent", async () => {
    await using fake = await startFake({ apiKey: KEY })
    await using tmp = await tmpdir()
    const c = batchClient("chat", fake.url)
    const since = Date.now()
    const ids: string[] = []
    // 105 batches: the oldest is on the list's second page (100 a page)
    for (let b = 0; b < 105; b++) {
      const tag = `r1-b${String(b).padStart(4, "0")}`
      await requestFile(c, tmp.join("requests.jsonl"), 1, tag)
      ids.push((await c.create(tmp.join("requests.jsonl"), { tag, run: "r", count: 1, since }, never())).id)
    }
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
    await requestFile(c, tmp.join("requests.jsonl"), 10)
    const created = await c.create(
      tmp.join("requests.jsonl"),
      { tag: TAG, run: "r", count: 10, since: Date.now() },
      never(),
    )
    const batch = await c.retrieve(created.id, never())
    expect([batch.status, batch.phase, batch.outcome, batch.files]).toEqual([
      "failed",
      "ended",
      "failed",
      undefined,
    ])
    expect(fields(batch.error)).toEqual({
      class: "queue_limit",
      retryable: true,
      pause: false,
      status: undefined,
      message: `the batch was refused (token_limit_exceeded): ${enqueuedLimitMessage(MODEL, 30)}`,
      queueLimit: { tokens: 30 },
    })
    // nothing to download
    expect(
      await c.download(batch, { output: tmp.join("out.jsonl"), errors: tmp.join("err.jsonl") }, never()),
    ).toEqual({})
    expect(await Bun.file(tmp.join("out.jsonl")).exists()).toBe(false)
  })

  test("a file that does not validate fails the batch: a bad_request naming the code and the line", async () => {
    await using fake = await startFake({ apiKey: KEY, validate: false })
    await using tmp = await tmpdir()
    const c = batchClient("chat", fake.url)
    const good = c.line(`${TAG}_0`, { prompt: "a" })
    const wrong = c.line(`${TAG}_1`, { prompt: "b" }).replace("/v1/chat/completions", "/v1/responses")
    await Bun.write(tmp.join("requests.jsonl"), `${good}\n${wrong}\n`)
    const created = await c.create(
      tmp.join("requests.jsonl"),
      { tag: TAG, run: "r", count: 2, since: Date.now() },
      never(),
    )
    const batch = await c.retrieve(created.id, never())
    expect(fields(batch.error)).toEqual({
      class: "bad_request",
      retryable: false,
      pause: false,
      status: undefined,
      message:
        "the batch failed: url_mismatch at line 2: The url '/v1/responses' does not match the batch's endpoint '/v1/chat/completions'.",
      queueLimit: undefined,
    })
  })

  test("a 404 right after create is not_found, and the next retrieve finds the batch", async () => {
    await using fake = await startFake({ apiKey: KEY, batch: { script: [{ notFoundOnce: true }] } })
    await using tmp = await tmpdir()
    const c = batchClient("chat", fake.url)
    await requestFile(c, tmp.join("requests.jsonl"), 2)
    const created = await c.create(
      tmp.join("requests.jsonl"),
      { tag: TAG, run: "r", count: 2, since: Date.now() },
      never(),
    )
    expect(await thrown(() => c.retrieve(created.id, never()))).toEqual({
      class: "not_found",
      retryable: false,
      pause: false,
      status: 404,
      message: `HTTP 404: No batch found with id '${created.id}'.`,
      queueLimit: undefined,
    })
    expect((await c.retrieve(created.id, never())).outcome).toBe("completed")
  })

  test("failures of the calls: a wrong key pauses, a dead server is a network error, an abort is the caller's", async () => {
    await using fake = await startFake({ apiKey: "another-key" })
    await using tmp = await tmpdir()
    const c = batchClient("chat", fake.url)
    await requestFile(c, tmp.join("requests.jsonl"), 1)
    const tag = { tag: TAG, run: "r", count: 1, since: Date.now() }
    expect(await thrown(() => c.create(tmp.join("requests.jsonl"), tag, never()))).toEqual({
      class: "auth",
      retryable: false,
      pause: true,
      status: 401,
      message: "HTTP 401: Incorrect API key provided.",
      queueLimit: undefined,
    })
    expect(await thrown(() => c.find(tag, never()))).toMatchObject({ class: "auth", status: 401 })
    const dead = batchClient("chat", "http://127.0.0.1:9/v1")
    const down = await thrown(() => dead.retrieve("batch_1", never()))
    expect([down?.class, down?.retryable, down?.message.startsWith("connection failed: ")]).toEqual([
      "network",
      true,
      true,
    ])
    const controller = new AbortController()
    const reason = new Error("stopped by the caller")
    controller.abort(reason)
    let caught: unknown
    try {
      await batchClient("chat", fake.url).retrieve("batch_1", controller.signal)
    } catch (e) {
      caught = e
    }
    expect(caught).toBe(reason)
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
    const lines = Array.from({ length: 50_000 }, (_, k) =>
      c.line(`${TAG}_${k}`, { prompt: `item ${k} ${pad}` }),
    )
    await Bun.write(tmp.join("requests.jsonl"), lines.join("\n") + "\n")
    const size = Bun.file(tmp.join("requests.jsonl")).size
    expect(size).toBeGreaterThan(150_000_000)
    expect(size).toBeLessThan(200_000_000)
    const script = tmp.join("create.ts")
    const source = new URL("../../src/plugins/providers/openai-batch.ts", import.meta.url).pathname
    const tag = { tag: TAG, run: "r", count: 50_000, since: Date.now() }
    await Bun.write(
      script,
      `import { openaiBatch } from ${JSON.stringify(source)}
const c = openaiBatch({ model: ${JSON.stringify(MODEL)}, baseUrl: ${JSON.stringify(fake.url)}, apiKey: ${JSON.stringify(KEY)}, timeoutMs: 60000 }, "chat")
Bun.gc(true)
const before = process.memoryUsage().rss
let peak = before
const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 2)
const batch = await c.create(${JSON.stringify(tmp.join("requests.jsonl"))}, ${JSON.stringify(tag)}, new AbortController().signal)
clearInterval(sampler)
console.log(JSON.stringify({ batch, growth: peak - before }))
`,
    )
    const child = Bun.spawn([process.execPath, script], { stdout: "pipe", stderr: "pipe" })
    const [out, err, code] = await Promise.all([
      new Response(child.stdout).text(),
      new Response(child.stderr).text(),
      child.exited,
    ])
    expect([code, err]).toEqual([0, ""])
    const { batch, growth } = JSON.parse(out) as { batch: RemoteBatch; growth: number }
    expect([batch.id, batch.phase]).toEqual([fake.batch.batches[0]!.id, "validating"])
    expect(growth).toBeLessThan(100_000_000)
    // every byte arrived
    expect([...fake.files.values()][0]!.bytes?.length).toBe(size)
    expect(fake.batch.batches[0]!.lines.length).toBe(50_000)
  })

  test("a download streams a 150 MB file to disk, in a process whose memory does not grow with it", async () => {
    const reply = (input: string) => `${input} ${"x".repeat(7_500)}`
    await using fake = await startFake({ apiKey: KEY, validate: false, reply })
    await using tmp = await tmpdir()
    const c = batchClient("chat", fake.url)
    await requestFile(c, tmp.join("requests.jsonl"), 20_000)
    const since = Date.now()
    const created = await c.create(
      tmp.join("requests.jsonl"),
      { tag: TAG, run: "r", count: 20_000, since },
      never(),
    )
    const batch = await c.retrieve(created.id, never())
    // the download runs in a process of its own, so that only the client's memory is measured
    const script = tmp.join("download.ts")
    const source = new URL("../../src/plugins/providers/openai-batch.ts", import.meta.url).pathname
    await Bun.write(
      script,
      `import { openaiBatch } from ${JSON.stringify(source)}
const c = openaiBatch({ model: ${JSON.stringify(MODEL)}, baseUrl: ${JSON.stringify(fake.url)}, apiKey: ${JSON.stringify(KEY)}, timeoutMs: 5000 }, "chat")
Bun.gc(true)
const before = process.memoryUsage().rss
let peak = before
const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 2)
const written = await c.download(${JSON.stringify(batch)}, { output: ${JSON.stringify(tmp.join("out.jsonl"))}, errors: ${JSON.stringify(tmp.join("err.jsonl"))} }, new AbortController().signal)
clearInterval(sampler)
console.log(JSON.stringify({ written, growth: peak - before }))
`,
    )
    const child = Bun.spawn([process.execPath, script], { stdout: "pipe", stderr: "pipe" })
    const [out, err, code] = await Promise.all([
      new Response(child.stdout).text(),
      new Response(child.stderr).text(),
      child.exited,
    ])
    expect([code, err]).toEqual([0, ""])
    const { written, growth } = JSON.parse(out) as { written: unknown; growth: number }
    expect(written).toEqual({ output: tmp.join("out.jsonl") })
    const size = Bun.file(tmp.join("out.jsonl")).size
    expect(size).toBeGreaterThan(150_000_000)
    expect(growth).toBeLessThan(100_000_000)
    let n = 0
    for (const line of (await Bun.file(tmp.join("out.jsonl")).text()).split("\n")) {
      if (!line) continue
      const parsed = c.parse(line)
      expect(parsed.reply?.text).toBe(reply(`item ${parsed.customId.slice(TAG.length + 1)}`))
      n++
    }
    expect(n).toBe(20_000)
  })
})

describe("the openai batch client's downloads, against a server that misbehaves", () => {
  test("a body that stalls is a retryable timeout and leaves nothing behind; a disk that fails is a StoreError", async () => {
    using server = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      idleTimeout: 0,
      fetch: () =>
        new Response(
          new ReadableStream({
            start(controller) {
              controller.enqueue(new TextEncoder().encode('{"custom_id":"t_0",'))
              // and nothing more: the connection stays open
            },
          }),
        ),
    })
    await using tmp = await tmpdir()
    const c = batchClient("chat", `http://127.0.0.1:${server.port}/v1`, 300)
    const batch: RemoteBatch = {
      id: "batch_1",
      status: "completed",
      phase: "ended",
      outcome: "completed",
      createdAt: 0,
      files: { output: "file-1" },
    }
    const to = { output: tmp.join("out.jsonl"), errors: tmp.join("err.jsonl") }
    expect(await thrown(() => c.download(batch, to, never()))).toEqual({
      class: "timeout",
      retryable: true,
      pause: false,
      status: undefined,
      message: "no answer within 0.3 s",
      queueLimit: undefined,
    })
    expect(await Bun.file(to.output).exists()).toBe(false)
    expect(await Bun.file(`${to.output}.part`).exists()).toBe(false)
    let caught: unknown
    try {
      await c.download(batch, { output: tmp.join("missing", "out.jsonl"), errors: to.errors }, never())
    } catch (e) {
      caught = e
    }
    expect(caught).toBeInstanceOf(StoreError)
    expect((caught as StoreError).message).toStartWith(
      `cannot write ${tmp.join("missing", "out.jsonl.part")}: `,
    )
  })
})
