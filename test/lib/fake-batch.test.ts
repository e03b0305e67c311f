import Anthropic from "@anthropic-ai/sdk"
import { describe, expect, test } from "bun:test"
import OpenAI from "openai"
import { QUEUE_LIMIT_MESSAGE, startFakeAnthropic, type Fake as AnthropicFake } from "./fake-anthropic.ts"
import { GATEWAY_PAGE, type BatchOptions } from "./fake-batch.ts"
import { enqueuedLimitMessage, startFake, type Fake } from "./fake-openai.ts"
import { SKIP_SPEC_CHECKS, validateSchema } from "./spec.ts"

/** A clock a test moves by hand: `now` for a fake, `at(ms)` to set it to T0 + ms. */
const T0 = 1_800_000_000_000
function clock() {
  const c = { t: T0, now: () => c.t, at: (ms: number) => (c.t = T0 + ms) }
  return c
}
const unix = (ms: number) => Math.floor((T0 + ms) / 1000)
const iso = (ms: number) => new Date(T0 + ms).toISOString()
/** A fake's options: key "k", the clock `c`, and these batch options. */
const onClock = (c: ReturnType<typeof clock>, batch: BatchOptions) => ({ apiKey: "k", now: c.now, batch })

// ---------------------------------------------------------------------------------------------------------------
// OpenAI

const openai = (fake: Fake) => new OpenAI({ apiKey: "k", baseURL: fake.url, maxRetries: 0 })

type Line = { custom_id: string; method: string; url: string; body: Record<string, unknown> }
const chatLine = (customId: string, content: string, model = "gpt-4.1-mini"): Line => ({
  custom_id: customId,
  method: "POST",
  url: "/v1/chat/completions",
  body: { model, messages: [{ role: "user", content }] },
})
const items = (n: number, tag = "t") =>
  Array.from({ length: n }, (_, i) => chatLine(`${tag}_${i}`, `item ${i}`))
const jsonlOf = (lines: unknown[]) =>
  lines.map((l) => (typeof l === "string" ? l : JSON.stringify(l))).join("\n") + "\n"

async function submit(
  client: OpenAI,
  lines: unknown[],
  options: { endpoint?: "/v1/chat/completions" | "/v1/responses"; metadata?: Record<string, string> } = {},
) {
  const file = await client.files.create({ file: new File([jsonlOf(lines)], "in.jsonl"), purpose: "batch" })
  return client.batches.create({
    input_file_id: file.id,
    endpoint: options.endpoint ?? "/v1/chat/completions",
    completion_window: "24h",
    ...(options.metadata ? { metadata: options.metadata } : {}),
  })
}

type OutLine = {
  id: string
  custom_id: string
  response: { status_code: number; request_id: string; body: Record<string, any> } | null
  error: { code: string; message: string } | null
}
async function fileLines(client: OpenAI, id: string | null | undefined): Promise<OutLine[]> {
  if (!id) return []
  const text = await (await client.files.content(id)).text()
  return text
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as OutLine)
}

/** Retrieves a batch and checks it against the spec's Batch schema. */
async function retrieve(client: OpenAI, id: string) {
  const batch = await client.batches.retrieve(id)
  expect(validateSchema("Batch", batch)).toEqual([])
  return batch
}

const counts = (b: OpenAI.Batches.Batch) => [
  b.status,
  b.request_counts!.total,
  b.request_counts!.completed,
  b.request_counts!.failed,
]

/** A batch that failed as a whole at `ms`, for one reason (`code`, `message`) that names no line. */
function expectFailed(b: OpenAI.Batches.Batch, ms: number, code: string, message: string) {
  expect(b.failed_at).toBe(unix(ms))
  expect(b.errors).toEqual({ object: "list", data: [{ code, message, param: null, line: null }] })
}

describe("the fake OpenAI Batch API", () => {
  test("a batch moves validating → in_progress (n of m) → finalizing → completed on the fake's clock, conforming all along", async () => {
    const c = clock()
    await using fake = await startFake(
      onClock(c, { validatingMs: 1000, processingMs: 10_000, finalizingMs: 2000 }),
    )
    const client = openai(fake)
    const lines = items(10)
    const text = jsonlOf(lines)
    const file = await client.files.create({ file: new File([text], "in.jsonl"), purpose: "batch" })
    expect(validateSchema("OpenAIFile", file)).toEqual([])
    expect([file.object, file.purpose, file.bytes, file.filename, file.status, file.created_at]).toEqual([
      "file",
      "batch",
      Buffer.byteLength(text),
      "in.jsonl",
      "processed",
      unix(0),
    ])
    expect(file.id).toMatch(/^file-[0-9A-Za-z]{22}$/)
    const created = await client.batches.create({
      input_file_id: file.id,
      endpoint: "/v1/chat/completions",
      completion_window: "24h",
      metadata: { spool_tag: "t", spool_run: "run-1" },
    })
    expect(validateSchema("Batch", created)).toEqual([])
    expect(created.id).toMatch(/^batch_[0-9a-f]{32}$/)
    expect([
      created.object,
      created.endpoint,
      created.model,
      created.input_file_id,
      created.completion_window,
    ]).toEqual(["batch", "/v1/chat/completions", "gpt-4.1-mini", file.id, "24h"])
    expect([created.created_at, created.expires_at]).toEqual([unix(0), unix(86_400_000)])
    expect(created.metadata).toEqual({ spool_tag: "t", spool_run: "run-1" })
    expect(counts(created)).toEqual(["validating", 0, 0, 0])

    const seen: unknown[] = []
    for (const ms of [999, 1000, 3500, 6000, 10_999, 11_000, 12_999, 13_000]) {
      c.at(ms)
      const b = await retrieve(client, created.id)
      seen.push([ms, ...counts(b), fake.batch.paidLines, fake.paid.size])
    }
    expect(seen).toEqual([
      [999, "validating", 0, 0, 0, 0, 0],
      [1000, "in_progress", 10, 0, 0, 0, 0],
      [3500, "in_progress", 10, 2, 0, 2, 2],
      [6000, "in_progress", 10, 5, 0, 5, 5],
      [10_999, "in_progress", 10, 9, 0, 9, 9],
      [11_000, "finalizing", 10, 10, 0, 10, 10],
      [12_999, "finalizing", 10, 10, 0, 10, 10],
      [13_000, "completed", 10, 10, 0, 10, 10],
    ])
    const done = await retrieve(client, created.id)
    expect([done.in_progress_at, done.finalizing_at, done.completed_at]).toEqual([
      unix(1000),
      unix(11_000),
      unix(13_000),
    ])
    expect([done.failed_at, done.expired_at, done.cancelling_at, done.cancelled_at, done.errors]).toEqual([
      undefined,
      undefined,
      undefined,
      undefined,
      undefined,
    ])
    expect(done.error_file_id).toBeUndefined()
    expect(done.output_file_id).toMatch(/^file-[0-9A-Za-z]{22}$/)

    const output = await fileLines(client, done.output_file_id)
    expect(output.map((l) => l.custom_id).sort()).toEqual(lines.map((l) => l.custom_id).sort())
    expect(output.map((l) => l.custom_id)).not.toEqual(lines.map((l) => l.custom_id))
    for (const line of output) {
      expect(line.id).toMatch(/^batch_req_[0-9a-f]{32}$/)
      expect(line.response!.request_id).toMatch(/^req_[0-9a-f]{32}$/)
      expect([line.response!.status_code, line.error]).toEqual([200, null])
      expect(validateSchema("CreateChatCompletionResponse", line.response!.body)).toEqual([])
      const n = line.custom_id.slice(2)
      expect(line.response!.body.choices[0].message.content).toBe(`echo: item ${n}`)
      // the same body the realtime endpoint builds: prompt tokens of the messages
      expect(line.response!.body.usage.prompt_tokens).toBe(
        Math.ceil(JSON.stringify([{ role: "user", content: `item ${n}` }]).length / 4),
      )
    }
    expect(new Set(output.map((l) => l.id)).size).toBe(10)
    const outFile = await client.files.retrieve(done.output_file_id!)
    expect(validateSchema("OpenAIFile", outFile)).toEqual([])
    const outText = await (await client.files.content(done.output_file_id!)).text()
    expect([outFile.purpose, outFile.bytes]).toEqual(["batch_output", Buffer.byteLength(outText)])
    expect(await (await client.files.content(file.id)).text()).toBe(text)
    expect(await client.files.delete(file.id)).toEqual(
      expect.objectContaining({ id: file.id, deleted: true }),
    )
    expect(await client.files.content(file.id).catch((e: unknown) => e)).toBeInstanceOf(OpenAI.NotFoundError)

    expect(fake.batch.batches.map((b) => [b.id, b.status, b.metadata, b.custom_ids, b.createdAt])).toEqual([
      [created.id, "completed", { spool_tag: "t", spool_run: "run-1" }, lines.map((l) => l.custom_id), T0],
    ])
    expect(fake.batch.byTag("t").map((b) => b.id)).toEqual([created.id])
    expect(fake.batch.byTag("u")).toEqual([])
    expect(fake.batch.creates).toEqual([{ at: T0, status: 200, id: created.id, requests: 10 }])
    expect([...fake.paid.values()]).toEqual(Array(10).fill(1))
    expect(fake.invalid).toEqual([])
  })

  test("runs /v1/responses batches with Response bodies, and lists newest first with cursor pagination", async () => {
    await using fake = await startFake({ apiKey: "k" })
    const client = openai(fake)
    const lines = Array.from({ length: 3 }, (_, i) => ({
      custom_id: `r_${i}`,
      method: "POST",
      url: "/v1/responses",
      body: { model: "gpt-4.1-mini", input: `q ${i}`, instructions: "be brief" },
    }))
    const first = await submit(client, lines, { endpoint: "/v1/responses" })
    const done = await retrieve(client, first.id)
    expect(counts(done)).toEqual(["completed", 3, 3, 0])
    const output = await fileLines(client, done.output_file_id)
    expect(output.length).toBe(3)
    for (const line of output) {
      expect(validateSchema("Response", line.response!.body)).toEqual([])
      expect(line.response!.body.output[0].content[0].text).toBe(`echo: q ${line.custom_id.slice(2)}`)
    }
    expect(Object.fromEntries(fake.paid)).toEqual({ "q 0": 1, "q 1": 1, "q 2": 1 })

    const second = await submit(client, items(2, "b"))
    const third = await submit(client, items(2, "c"))
    const page = async (query: string) => {
      // without /v1, as the realtime routes are also served
      const res = await fetch(`http://127.0.0.1:${fake.port}/batches?${query}`, {
        headers: { authorization: "Bearer k" },
      })
      const body = (await res.json()) as {
        data: { id: string }[]
        has_more: boolean
        first_id?: string
        last_id?: string
      }
      expect(validateSchema("ListBatchesResponse", body)).toEqual([])
      return [body.data.map((b) => b.id), body.has_more, body.first_id, body.last_id]
    }
    expect(await page("limit=2")).toEqual([[third.id, second.id], true, third.id, second.id])
    expect(await page(`limit=2&after=${second.id}`)).toEqual([[first.id], false, first.id, first.id])
    const all: string[] = []
    for await (const b of client.batches.list({ limit: 2 })) all.push(b.id)
    expect(all).toEqual([third.id, second.id, first.id])
    expect(fake.batch.byTag("c").map((b) => b.id)).toEqual([third.id])
  })

  test("a cancel answers cancelling, then after cancelMs the batch is cancelled: done lines in the output, the rest batch_cancelled", async () => {
    const c = clock()
    await using fake = await startFake(onClock(c, { processingMs: 10_000, cancelMs: 5000 }))
    const client = openai(fake)
    const created = await submit(client, items(10))
    c.at(3000)
    const cancelling = await client.batches.cancel(created.id)
    expect(validateSchema("Batch", cancelling)).toEqual([])
    expect(counts(cancelling)).toEqual(["cancelling", 10, 3, 0])
    expect([cancelling.in_progress_at, cancelling.cancelling_at, cancelling.cancelled_at]).toEqual([
      unix(0),
      unix(3000),
      undefined,
    ])
    c.at(7999)
    expect(counts(await retrieve(client, created.id))).toEqual(["cancelling", 10, 3, 0])
    c.at(8000)
    const cancelled = await retrieve(client, created.id)
    expect(counts(cancelled)).toEqual(["cancelled", 10, 3, 7])
    expect([cancelled.cancelling_at, cancelled.cancelled_at]).toEqual([unix(3000), unix(8000)])
    const output = await fileLines(client, cancelled.output_file_id)
    const errors = await fileLines(client, cancelled.error_file_id)
    expect([output.length, errors.length]).toEqual([3, 7])
    expect([...output, ...errors].map((l) => l.custom_id).sort()).toEqual(
      items(10)
        .map((l) => l.custom_id)
        .sort(),
    )
    for (const line of errors) {
      expect(line.id).toMatch(/^batch_req_[0-9a-f]{32}$/)
      expect(line.response).toBeNull()
      expect(line.error).toEqual({
        code: "batch_cancelled",
        message: "This request was not executed because the batch was cancelled.",
      })
    }
    expect([fake.batch.paidLines, fake.paid.size]).toEqual([3, 3])
    const again = await client.batches.cancel(created.id).catch((e: unknown) => e)
    expect(again).toBeInstanceOf(OpenAI.BadRequestError)
    expect((again as InstanceType<typeof OpenAI.BadRequestError>).error).toEqual({
      message: "Cannot cancel a batch with status 'cancelled'.",
      type: "invalid_request_error",
      param: null,
      code: null,
    })
  })

  test("end faults, scripted per batch before the global one: failed, cancelled and expired part-way, with exact result lines", async () => {
    const c = clock()
    await using fake = await startFake(onClock(c, { processingMs: 10_000 }))
    const client = openai(fake)
    fake.batch.faults = { end: { outcome: "expired", after: 0.4 } }
    fake.batch.script = [
      { end: { outcome: "failed", after: 0.5 } },
      { end: { outcome: "cancelled", after: 0.2 } },
    ]
    const failed = await submit(client, items(10, "f"))
    const cancelled = await submit(client, items(10, "c"))
    const expired = await submit(client, items(10, "e"))
    expect(fake.batch.script).toEqual([])

    c.at(3999)
    expect(counts(await retrieve(client, expired.id))).toEqual(["in_progress", 10, 3, 0])
    expect(counts(await retrieve(client, cancelled.id))).toEqual(["cancelled", 10, 2, 8])
    c.at(4000)
    const e = await retrieve(client, expired.id)
    expect(counts(e)).toEqual(["expired", 10, 4, 6])
    expect([e.expired_at, e.completed_at]).toEqual([unix(4000), undefined])
    const expiredErrors = await fileLines(client, e.error_file_id)
    expect([(await fileLines(client, e.output_file_id)).length, expiredErrors.length]).toEqual([4, 6])
    for (const line of expiredErrors) {
      expect(line.response).toBeNull()
      expect(line.error).toEqual({
        code: "batch_expired",
        message: "This request could not be executed before the completion window expired.",
      })
    }

    c.at(5000)
    const f = await retrieve(client, failed.id)
    expect(counts(f)).toEqual(["failed", 10, 5, 0])
    expectFailed(
      f,
      5000,
      "server_error",
      "The batch failed while processing. The requests it processed are in its output and error files.",
    )
    const failedOutput = await fileLines(client, f.output_file_id)
    expect([failedOutput.length, f.error_file_id]).toEqual([5, undefined])
    // the 5 lines never run have no line at all
    const missing = items(10, "f").filter((l) => !failedOutput.some((o) => o.custom_id === l.custom_id))
    expect(missing.length).toBe(5)

    const cc = await retrieve(client, cancelled.id)
    expect([cc.cancelling_at, cc.cancelled_at]).toEqual([unix(2000), unix(2000)])
    const cancelErrors = await fileLines(client, cc.error_file_id)
    expect([(await fileLines(client, cc.output_file_id)).length, cancelErrors.length]).toEqual([2, 8])
    expect(cancelErrors.every((l) => l.error?.code === "batch_cancelled")).toBe(true)

    // the script is used up: the next batch gets the global fault
    const next = await submit(client, items(10, "n"))
    c.at(5000 + 4000)
    expect(counts(await retrieve(client, next.id))).toEqual(["expired", 10, 4, 6])
    expect(fake.batch.paidLines).toBe(5 + 2 + 4 + 4)
    // the four batches ask the same inputs (item 0 … item 9): each paid once per batch that ran it
    expect([...fake.paid.values()].reduce((a, b) => a + b, 0)).toBe(5 + 2 + 4 + 4)
  })

  test("line errors go to the error file with the official error body; they are not paid", async () => {
    await using fake = await startFake({ apiKey: "k" })
    const client = openai(fake)
    fake.batch.faults = {
      lineError: (customId, input) =>
        customId === "t_3"
          ? { status: 500 }
          : customId === "t_5"
            ? { status: 400, type: "invalid_request_error", message: "bad line" }
            : input === "item 7"
              ? { status: 429 }
              : undefined,
    }
    const created = await submit(client, items(10))
    const done = await retrieve(client, created.id)
    expect(counts(done)).toEqual(["completed", 10, 7, 3])
    const errors = await fileLines(client, done.error_file_id)
    expect((await fileLines(client, done.output_file_id)).length).toBe(7)
    const byId = Object.fromEntries(
      errors.map((l) => {
        expect(l.error).toBeNull()
        expect(validateSchema("ErrorResponse", l.response!.body)).toEqual([])
        const e = l.response!.body.error
        return [l.custom_id, [l.response!.status_code, e.type, e.code, e.message, e.param]]
      }),
    )
    expect(byId).toEqual({
      t_3: [500, "server_error", null, "The server had an error while processing your request.", null],
      t_5: [400, "invalid_request_error", null, "bad line", null],
      t_7: [429, "requests", "rate_limit_exceeded", "Rate limit reached for requests", null],
    })
    expect(fake.batch.paidLines).toBe(7)
    expect([
      fake.paid.has("item 3"),
      fake.paid.has("item 5"),
      fake.paid.has("item 7"),
      fake.paid.size,
    ]).toEqual([false, false, false, 7])
  })

  test("results come out of request order, the same order on every fake; shuffle: false keeps request order", async () => {
    const order = async (shuffle: boolean | undefined) => {
      await using fake = await startFake({ apiKey: "k" })
      if (shuffle !== undefined) fake.batch.faults = { shuffle }
      const client = openai(fake)
      const done = await retrieve(client, (await submit(client, items(20))).id)
      return (await fileLines(client, done.output_file_id)).map((l) => l.custom_id)
    }
    const requestOrder = items(20).map((l) => l.custom_id)
    const a = await order(undefined)
    const b = await order(true)
    expect(a).toEqual(b)
    expect(a).not.toEqual(requestOrder)
    expect([...a].sort()).toEqual([...requestOrder].sort())
    expect(await order(false)).toEqual(requestOrder)
  })

  test("notFoundOnce: the first GET after create is a 404 in the official shape, the next one works", async () => {
    await using fake = await startFake({ apiKey: "k", batch: { faults: { notFoundOnce: true } } })
    const client = openai(fake)
    const created = await submit(client, items(2))
    const res = await fetch(`${fake.url}/batches/${created.id}`, { headers: { authorization: "Bearer k" } })
    expect(res.status).toBe(404)
    const body = await res.json()
    expect(validateSchema("ErrorResponse", body)).toEqual([])
    expect(body).toEqual({
      error: {
        message: `No batch found with id '${created.id}'.`,
        type: "invalid_request_error",
        param: "batch_id",
        code: null,
      },
    })
    expect(counts(await retrieve(client, created.id))).toEqual(["completed", 2, 2, 0])
    const second = await submit(client, items(2, "s"))
    expect(await client.batches.retrieve(second.id).catch((e: unknown) => e)).toBeInstanceOf(
      OpenAI.NotFoundError,
    )
    expect(counts(await retrieve(client, second.id))).toEqual(["completed", 2, 2, 0])
  })

  test("the enqueued-token limit fails a batch that would pass it, with the API's message; it frees up as batches end", async () => {
    const c = clock()
    await using fake = await startFake(
      onClock(c, { validatingMs: 1000, processingMs: 10_000, enqueuedTokenLimit: 1500 }),
    )
    const client = openai(fake)
    const big = (tag: string, n: number) =>
      Array.from({ length: n }, (_, i) => chatLine(`${tag}_${i}`, `${"x".repeat(500)}${tag}${i}`))
    // 133 tokens a line: what the line's usage.prompt_tokens says
    const perLine = Math.ceil(JSON.stringify([{ role: "user", content: `${"x".repeat(500)}a0` }]).length / 4)
    expect(perLine).toBe(133)
    const first = await submit(client, big("a", 10)) // 1,330 tokens enqueued
    const refused = await submit(client, big("b", 2)) // 266 more: 1,596 > 1,500
    expect(counts(refused)).toEqual(["validating", 0, 0, 0])
    const fits = await submit(client, big("c", 1)) // 133 more: 1,463
    c.at(999)
    expect(counts(await retrieve(client, refused.id))).toEqual(["validating", 0, 0, 0])
    c.at(1000)
    const failed = await retrieve(client, refused.id)
    expect(counts(failed)).toEqual(["failed", 0, 0, 0])
    expectFailed(
      failed,
      1000,
      "token_limit_exceeded",
      "Enqueued token limit reached for gpt-4.1-mini in organization org-fake. Limit: 1,500 enqueued tokens. Please try submitting an input file with fewer tokens, or wait for current batches to complete.",
    )
    expect(enqueuedLimitMessage("gpt-4.1-mini", 1500)).toBe(failed.errors!.data![0]!.message!)
    expect([failed.output_file_id, failed.error_file_id]).toEqual([undefined, undefined])
    expect(counts(await retrieve(client, fits.id))).toEqual(["in_progress", 1, 0, 0])
    c.at(11_000) // both ended: the queue is empty again
    expect(counts(await retrieve(client, first.id))).toEqual(["completed", 10, 10, 0])
    const again = await submit(client, big("b", 2))
    c.at(12_000)
    expect(counts(await retrieve(client, again.id))).toEqual(["in_progress", 2, 0, 0])
    expect(fake.batch.creates.map((r) => [r.status, r.id, r.requests, r.error])).toEqual([
      [200, first.id, 10, undefined],
      [200, refused.id, 2, enqueuedLimitMessage("gpt-4.1-mini", 1500)],
      [200, fits.id, 1, undefined],
      [200, again.id, 2, undefined],
    ])
    expect(fake.paid.size).toBe(11)
  })

  test("a file of more than 50,000 lines, one too large, or an empty one fails validation with errors.data", async () => {
    await using fake = await startFake({ apiKey: "k" })
    const client = openai(fake)
    const reason = async (lines: unknown[]) => {
      const b = await retrieve(client, (await submit(client, lines)).id)
      expect(counts(b)).toEqual(["failed", 0, 0, 0])
      return b.errors!.data
    }
    const many = Array.from({ length: 50_001 }, (_, i) => chatLine(`m_${i}`, `${i}`))
    expect(await reason(many)).toEqual([
      {
        code: "too_many_tasks",
        message:
          "The batch input file has 50,001 requests; a batch may have at most 50,000. Please try again with fewer requests.",
        param: null,
        line: null,
      },
    ])
    fake.batch.maxBytes = 200
    expect(await reason(items(3))).toEqual([
      {
        code: "file_too_large",
        message:
          "The batch input file is larger than the 200 byte maximum. Please try again with a smaller file.",
        param: null,
        line: null,
      },
    ])
    expect(await reason([])).toEqual([
      { code: "empty_file", message: "The batch input file is empty.", param: null, line: null },
    ])
    expect([fake.paid.size, fake.batch.paidLines]).toEqual([0, 0])
  })

  test.skipIf(SKIP_SPEC_CHECKS)(
    "records bad lines and bad bodies in fake.invalid; bad lines fail the batch, bad bodies still run",
    async () => {
      await using fake = await startFake({ apiKey: "k" })
      const client = openai(fake)
      const { method: _method, ...noMethod } = chatLine("t_1", "one")
      const lines = [
        chatLine("t_0", "zero"),
        noMethod,
        chatLine("t_0", "again"),
        { ...chatLine("t_3", "three"), url: "/v1/responses" },
        chatLine("t_4", "four", "gpt-4o"),
        "{oops",
      ]
      const failed = await retrieve(client, (await submit(client, lines)).id)
      expect(counts(failed)).toEqual(["failed", 0, 0, 0])
      expect(failed.errors!.data!.map((e) => [e.code, e.line, e.param])).toEqual([
        ["missing_required_parameter", 2, "method"],
        ["duplicate_custom_id", 3, "custom_id"],
        ["url_mismatch", 4, "url"],
        ["model_mismatch", 5, "body.model"],
        ["invalid_json_line", 6, null],
      ])
      expect(fake.invalid.flatMap((i) => i.errors)).toEqual([
        "line 2: missing_required_parameter: Missing required parameter: 'method'.",
        "line 3: duplicate_custom_id: The custom_id 't_0' is a duplicate of another request's. The custom_id parameter must be unique for each request in a batch.",
        "line 4: url_mismatch: The url '/v1/responses' does not match the batch's endpoint '/v1/chat/completions'.",
        "line 6: invalid_json_line: This line is not parseable as valid JSON.",
        "the lines use different models: gpt-4.1-mini, gpt-4o",
      ])
      expect(fake.batch.batches[0]!.custom_ids).toEqual(["t_0", "t_0", "t_3", "t_4"])

      fake.invalid.length = 0
      const badBody = {
        model: "gpt-4.1-mini",
        messages: [{ role: "user", content: "two" }],
        temperature: "hot",
      }
      const runs = await submit(client, [
        chatLine("t_1", "one"),
        { ...chatLine("t_2", "two"), body: badBody },
      ])
      expect(counts(await retrieve(client, runs.id))).toEqual(["completed", 2, 2, 0])
      const expected = validateSchema("CreateChatCompletionRequest", badBody)
      expect(expected.length).toBeGreaterThan(0)
      expect(fake.invalid).toEqual([{ body: badBody, errors: expected.map((e) => `line 2: body${e}`) }])
      expect(Object.fromEntries(fake.paid)).toEqual({ one: 1, two: 1 })
    },
  )

  test.skipIf(SKIP_SPEC_CHECKS)(
    "refuses a bad upload or create in the official error shape, and records refused creates",
    async () => {
      await using fake = await startFake({ apiKey: "k" })
      const client = openai(fake)
      const error = (e: unknown) => {
        const err = e as InstanceType<typeof OpenAI.APIError>
        expect(validateSchema("ErrorResponse", { error: err.error })).toEqual([])
        return [err.status, (err.error as { param: string | null }).param]
      }
      const text = jsonlOf(items(1))
      expect(
        error(
          await client.files
            .create({ file: new File([text], "in.jsonl"), purpose: "fine-tune" })
            .catch((e) => e),
        ),
      ).toEqual([400, "purpose"])
      expect(
        error(
          await client.files.create({ file: new File([text], "in.txt"), purpose: "batch" }).catch((e) => e),
        ),
      ).toEqual([400, null])
      expect(error(await client.files.content("file-nope").catch((e) => e))).toEqual([404, "id"])
      const file = await client.files.create({ file: new File([text], "in.jsonl"), purpose: "batch" })
      const create = (body: Record<string, unknown>) =>
        client.batches
          .create({
            input_file_id: file.id,
            endpoint: "/v1/chat/completions",
            completion_window: "24h",
            ...body,
          } as never)
          .catch((e) => e)
      expect(error(await create({ input_file_id: "file-nope" }))).toEqual([404, "input_file_id"])
      expect(error(await create({ endpoint: "/v1/moderations" }))).toEqual([400, "endpoint"])
      expect(error(await create({ completion_window: "48h" }))).toEqual([400, "completion_window"])
      expect(error(await create({ metadata: { spool_tag: "t", n: 5 } }))).toEqual([400, "metadata.n"])
      expect(fake.batch.creates.map((r) => [r.status, r.id, r.error])).toEqual([
        [404, undefined, "No such File object: file-nope"],
        [
          400,
          undefined,
          "Invalid value for 'endpoint': '/v1/moderations'. This server runs batches of '/v1/chat/completions', '/v1/responses' and '/v1/embeddings'.",
        ],
        [400, undefined, "Invalid value for 'completion_window': '48h'. Supported values are: '24h'."],
        [400, undefined, "Invalid type for 'metadata.n': expected a string, but got a number instead."],
      ])
      // the bodies that break CreateBatchRequest are recorded too
      const base = { input_file_id: file.id, endpoint: "/v1/chat/completions", completion_window: "24h" }
      const wrong = [
        { ...base, completion_window: "48h" },
        { ...base, metadata: { spool_tag: "t", n: 5 } },
      ]
      expect(fake.invalid).toEqual(
        wrong.map((body) => ({ body, errors: validateSchema("CreateBatchRequest", body) })),
      )
      expect(fake.invalid.every((i) => i.errors.length > 0)).toBe(true)
      expect(fake.batch.batches).toEqual([])
      const denied = await new OpenAI({ apiKey: "nope", baseURL: fake.url, maxRetries: 0 }).batches
        .list()
        .catch((e) => e)
      expect(denied).toBeInstanceOf(OpenAI.AuthenticationError)
    },
  )

  test("a batch line and a direct call of the same input are both paid, once each", async () => {
    await using fake = await startFake({ apiKey: "k" })
    const client = openai(fake)
    await client.chat.completions.create({
      model: "gpt-4.1-mini",
      messages: [{ role: "user", content: "item 1" }],
    })
    fake.batch.faults = { lineError: (id) => (id === "t_0" ? { status: 500 } : undefined) }
    const done = await retrieve(client, (await submit(client, items(3))).id)
    expect(counts(done)).toEqual(["completed", 3, 2, 1])
    expect(Object.fromEntries(fake.paid)).toEqual({ "item 1": 2, "item 2": 1 })
    expect(fake.batch.paidLines).toBe(2)
  })

  test("an instant 50,000-line batch is done at its first GET, and its output has every line", async () => {
    await using fake = await startFake({ apiKey: "k", validate: false })
    const client = openai(fake)
    const lines = Array.from({ length: 50_000 }, (_, i) => chatLine(`big_${i}`, `item ${i}`))
    const created = await submit(client, lines, { metadata: { spool_tag: "big" } })
    const done = await retrieve(client, created.id)
    expect(counts(done)).toEqual(["completed", 50_000, 50_000, 0])
    const output = await fileLines(client, done.output_file_id)
    expect(output.length).toBe(50_000)
    expect(new Set(output.map((l) => l.custom_id)).size).toBe(50_000)
    expect(
      output.every(
        (l) => l.response!.body.choices[0].message.content === `echo: item ${l.custom_id.slice(4)}`,
      ),
    ).toBe(true)
    expect([fake.paid.size, fake.batch.paidLines]).toEqual([50_000, 50_000])
    expect(fake.batch.byTag("big").length).toBe(1)
  })
})

// ---------------------------------------------------------------------------------------------------------------
// Anthropic

/** The SDK sends `apiKey` as a bearer token; the API (and the fake) take it in x-api-key, as spool sends it. */
const anthropic = (fake: AnthropicFake) =>
  new Anthropic({
    apiKey: "k",
    baseURL: fake.url,
    maxRetries: 0,
    defaultHeaders: { "x-api-key": "k", authorization: null },
  })

const request = (customId: string, content: string, extra: Record<string, unknown> = {}) => ({
  custom_id: customId,
  params: {
    model: "claude-haiku-4-5",
    max_tokens: 64,
    messages: [{ role: "user" as const, content }],
    ...extra,
  },
})
const requests = (n: number, tag = "t") =>
  Array.from({ length: n }, (_, i) => request(`${tag}_${i}`, `item ${i}`))

type Result = { custom_id: string; result: { type: string; message?: any; error?: any } }

/** The inner `error` of the body an SDK error of class `cls` carries; the body is checked against the spec. */
function errorOf(
  e: unknown,
  cls: abstract new (...args: never[]) => InstanceType<typeof Anthropic.APIError>,
) {
  expect(e).toBeInstanceOf(cls)
  const body = (e as InstanceType<typeof Anthropic.APIError>).error
  expect(validateSchema("ErrorResponse", body, "anthropic")).toEqual([])
  return (body as { error: unknown }).error
}

async function fetchBatch(client: Anthropic, id: string) {
  const batch = await client.messages.batches.retrieve(id)
  expect(validateSchema("MessageBatch", batch, "anthropic")).toEqual([])
  return batch
}
const tally = (b: Anthropic.Messages.MessageBatch) => [b.processing_status, b.request_counts]
async function results(client: Anthropic, id: string): Promise<Result[]> {
  const out: Result[] = []
  for await (const line of await client.messages.batches.results(id)) {
    expect(validateSchema("MessageBatchIndividualResponse", line, "anthropic")).toEqual([])
    out.push(line as Result)
  }
  return out
}
const rc = (processing: number, succeeded: number, errored = 0, canceled = 0, expired = 0) => ({
  processing,
  succeeded,
  errored,
  canceled,
  expired,
})

describe("the fake Anthropic Message Batches API", () => {
  test("a batch is in_progress (n of m), then ended with a results_url; results are Messages the realtime endpoint would build", async () => {
    const c = clock()
    await using fake = await startFakeAnthropic(
      onClock(c, { validatingMs: 1000, processingMs: 10_000, finalizingMs: 500 }),
    )
    const client = anthropic(fake)
    const created = await client.messages.batches.create({ requests: requests(10) })
    expect(validateSchema("MessageBatch", created, "anthropic")).toEqual([])
    expect(created.id).toMatch(/^msgbatch_[0-9A-Za-z]{24}$/)
    expect(tally(created)).toEqual(["in_progress", rc(10, 0)])
    expect([created.created_at, created.expires_at, created.ended_at, created.results_url]).toEqual([
      iso(0),
      iso(86_400_000),
      null,
      null,
    ])
    const seen: unknown[] = []
    for (const ms of [999, 1000, 3500, 10_999, 11_000, 11_499, 11_500]) {
      c.at(ms)
      const b = await fetchBatch(client, created.id)
      seen.push([ms, ...tally(b), b.ended_at, fake.batch.paidLines])
    }
    expect(seen).toEqual([
      [999, "in_progress", rc(10, 0), null, 0],
      [1000, "in_progress", rc(10, 0), null, 0],
      [3500, "in_progress", rc(8, 2), null, 2],
      [10_999, "in_progress", rc(1, 9), null, 9],
      [11_000, "in_progress", rc(0, 10), null, 10],
      [11_499, "in_progress", rc(0, 10), null, 10],
      [11_500, "ended", rc(0, 10), iso(11_500), 10],
    ])
    const done = await fetchBatch(client, created.id)
    expect(done.results_url).toBe(`${fake.url}/v1/messages/batches/${created.id}/results`)
    const lines = await results(client, created.id)
    expect(lines.map((l) => l.custom_id).sort()).toEqual(
      requests(10)
        .map((r) => r.custom_id)
        .sort(),
    )
    expect(lines.map((l) => l.custom_id)).not.toEqual(requests(10).map((r) => r.custom_id))
    for (const line of lines) {
      expect(line.result.type).toBe("succeeded")
      expect(validateSchema("Message", line.result.message, "anthropic")).toEqual([])
      expect(line.result.message.content).toEqual([
        { type: "text", text: `echo: item ${line.custom_id.slice(2)}`, citations: null },
      ])
    }
    expect(new Set(lines.map((l) => l.result.message.id)).size).toBe(10)
    expect(fake.batch.batches.map((b) => [b.id, b.status, b.metadata, b.custom_ids, b.createdAt])).toEqual([
      [created.id, "ended", null, requests(10).map((r) => r.custom_id), T0],
    ])
    expect(fake.batch.byTag("t_").length).toBe(1)
    expect([...fake.paid.values()]).toEqual(Array(10).fill(1))
    expect(fake.invalid).toEqual([])
  })

  test("lists newest first, with after_id and before_id pages", async () => {
    await using fake = await startFakeAnthropic({ apiKey: "k" })
    const client = anthropic(fake)
    const [a, b, c] = [
      await client.messages.batches.create({ requests: requests(1, "a") }),
      await client.messages.batches.create({ requests: requests(1, "b") }),
      await client.messages.batches.create({ requests: requests(1, "c") }),
    ]
    const page = async (query: string) => {
      const res = await fetch(`${fake.url}/v1/messages/batches?${query}`, {
        headers: { "x-api-key": "k", "anthropic-version": "2023-06-01" },
      })
      const body = (await res.json()) as {
        data: { id: string }[]
        has_more: boolean
        first_id: string
        last_id: string
      }
      expect(validateSchema("ListResponse_MessageBatch_", body, "anthropic")).toEqual([])
      return [body.data.map((x) => x.id), body.has_more, body.first_id, body.last_id]
    }
    expect(await page("limit=2")).toEqual([[c!.id, b!.id], true, c!.id, b!.id])
    expect(await page(`limit=2&after_id=${b!.id}`)).toEqual([[a!.id], false, a!.id, a!.id])
    expect(await page(`limit=1&before_id=${a!.id}`)).toEqual([[b!.id], true, b!.id, b!.id])
    expect(await page(`limit=5&before_id=${b!.id}`)).toEqual([[c!.id], false, c!.id, c!.id])
    const all: string[] = []
    for await (const x of client.messages.batches.list({ limit: 2 })) all.push(x.id)
    expect(all).toEqual([c!.id, b!.id, a!.id])
  })

  test("a cancel answers canceling, then the batch ends with the rest canceled", async () => {
    const c = clock()
    await using fake = await startFakeAnthropic(onClock(c, { processingMs: 10_000, cancelMs: 3000 }))
    const client = anthropic(fake)
    const created = await client.messages.batches.create({ requests: requests(10) })
    c.at(4000)
    const canceling = await client.messages.batches.cancel(created.id)
    expect(validateSchema("MessageBatch", canceling, "anthropic")).toEqual([])
    expect([...tally(canceling), canceling.cancel_initiated_at]).toEqual(["canceling", rc(6, 4), iso(4000)])
    c.at(6999)
    expect(tally(await fetchBatch(client, created.id))).toEqual(["canceling", rc(6, 4)])
    c.at(7000)
    const ended = await fetchBatch(client, created.id)
    expect([...tally(ended), ended.ended_at, ended.cancel_initiated_at]).toEqual([
      "ended",
      rc(0, 4, 0, 6),
      iso(7000),
      iso(4000),
    ])
    const lines = await results(client, created.id)
    expect(lines.map((l) => l.result.type).sort()).toEqual([
      ...Array(6).fill("canceled"),
      ...Array(4).fill("succeeded"),
    ])
    expect([fake.batch.paidLines, fake.paid.size]).toEqual([4, 4])
    // an ended batch is not cancelled again
    expect(tally(await client.messages.batches.cancel(created.id))).toEqual(["ended", rc(0, 4, 0, 6)])
  })

  test("faults: expired, cancelled and failed part-way, line errors, and results out of order unless shuffle is off", async () => {
    await using fake = await startFakeAnthropic({ apiKey: "k" })
    const client = anthropic(fake)
    fake.batch.script = [
      { end: { outcome: "expired", after: 0.3 } },
      { end: { outcome: "cancelled", after: 0.6 } },
      { end: { outcome: "failed", after: 0.5 } },
      {
        shuffle: false,
        lineError: (customId, input) =>
          customId === "t_1"
            ? { status: 529 }
            : input === "item 2"
              ? { status: 400, message: "prompt is too long" }
              : customId === "t_3"
                ? { status: 500, type: "api_error", message: "boom" }
                : undefined,
      },
    ]
    const run = async () => {
      const b = await client.messages.batches.create({ requests: requests(10) })
      const done = await fetchBatch(client, b.id)
      return { counts: tally(done), lines: await results(client, b.id) }
    }
    const types = (lines: Result[]) =>
      lines.reduce<Record<string, number>>(
        (n, l) => ({ ...n, [l.result.type]: (n[l.result.type] ?? 0) + 1 }),
        {},
      )

    const expired = await run()
    expect(expired.counts).toEqual(["ended", rc(0, 3, 0, 0, 7)])
    expect(types(expired.lines)).toEqual({ succeeded: 3, expired: 7 })
    const cancelled = await run()
    expect(cancelled.counts).toEqual(["ended", rc(0, 6, 0, 4)])
    expect(types(cancelled.lines)).toEqual({ succeeded: 6, canceled: 4 })
    const failed = await run()
    expect(failed.counts).toEqual(["ended", rc(0, 5, 5)])
    expect(types(failed.lines)).toEqual({ succeeded: 5, errored: 5 })
    for (const l of failed.lines.filter((x) => x.result.type === "errored")) {
      expect(l.result.error).toEqual({
        type: "error",
        error: { type: "api_error", message: "Internal server error" },
        request_id: null,
      })
    }
    const lineErrors = await run()
    expect(lineErrors.counts).toEqual(["ended", rc(0, 7, 3)])
    // shuffle: false: request order
    expect(lineErrors.lines.map((l) => l.custom_id)).toEqual(requests(10).map((r) => r.custom_id))
    expect(lineErrors.lines.slice(1, 4).map((l) => l.result.error.error)).toEqual([
      { type: "overloaded_error", message: "Overloaded" },
      { type: "invalid_request_error", message: "prompt is too long" },
      { type: "api_error", message: "boom" },
    ])
    expect(fake.batch.paidLines).toBe(3 + 6 + 5 + 7)
    expect([...fake.paid.values()].reduce((a, b) => a + b, 0)).toBe(3 + 6 + 5 + 7)
    expect([fake.paid.has("item 1"), fake.paid.has("item 2"), fake.paid.has("item 3")].includes(true)).toBe(
      true,
    )
    // the default order is not the request order
    const shuffled = await run()
    expect(shuffled.lines.map((l) => l.custom_id)).not.toEqual(requests(10).map((r) => r.custom_id))
  })

  test("notFoundOnce: the first GET after create is a not_found_error, then it is found", async () => {
    await using fake = await startFakeAnthropic({ apiKey: "k", batch: { script: [{ notFoundOnce: true }] } })
    const client = anthropic(fake)
    const created = await client.messages.batches.create({ requests: requests(2) })
    const missing = await client.messages.batches.retrieve(created.id).catch((e: unknown) => e)
    expect(errorOf(missing, Anthropic.NotFoundError)).toEqual({
      type: "not_found_error",
      message: `No Message Batch found with id '${created.id}'.`,
    })
    expect(tally(await fetchBatch(client, created.id))).toEqual(["ended", rc(0, 2)])
    // the script held one fault: the next batch is found at once
    const next = await client.messages.batches.create({ requests: requests(2, "n") })
    expect(tally(await fetchBatch(client, next.id))).toEqual(["ended", rc(0, 2)])
  })

  test("the queue limit answers 429 rate_limit_error past it; the queue frees up as batches end", async () => {
    const c = clock()
    await using fake = await startFakeAnthropic(onClock(c, { processingMs: 10_000, queueLimit: 15 }))
    const client = anthropic(fake)
    const first = await client.messages.batches.create({ requests: requests(10, "a") })
    const refused = await client.messages.batches
      .create({ requests: requests(6, "b") })
      .catch((e: unknown) => e)
    expect(errorOf(refused, Anthropic.RateLimitError)).toEqual({
      type: "rate_limit_error",
      message: QUEUE_LIMIT_MESSAGE,
    })
    expect(QUEUE_LIMIT_MESSAGE).toContain("batch")
    expect(QUEUE_LIMIT_MESSAGE).toContain("queue")
    const fits = await client.messages.batches.create({ requests: requests(5, "c") })
    c.at(10_000)
    const again = await client.messages.batches.create({ requests: requests(6, "b") })
    expect(fake.batch.creates.map((r) => [r.status, r.id, r.requests, r.error])).toEqual([
      [200, first.id, 10, undefined],
      [429, undefined, 6, QUEUE_LIMIT_MESSAGE],
      [200, fits.id, 5, undefined],
      [200, again.id, 6, undefined],
    ])
    expect(fake.batch.batches.map((b) => b.id)).toEqual([first.id, fits.id, again.id])
  })

  test.skipIf(SKIP_SPEC_CHECKS)(
    "refuses bad custom_ids and more than 100,000 requests with 400; records bad params in fake.invalid and runs them",
    async () => {
      await using fake = await startFakeAnthropic({ apiKey: "k" })
      const post = (body: unknown) =>
        fetch(`${fake.url}/v1/messages/batches`, {
          method: "POST",
          headers: {
            "x-api-key": "k",
            "anthropic-version": "2023-06-01",
            "content-type": "application/json",
          },
          body: JSON.stringify(body),
        })
      const refusal = async (body: unknown) => {
        const res = await post(body)
        const json = (await res.json()) as { error: { type: string; message: string } }
        // the spec's ErrorResponse does not list request_too_large, which the API documents for 413
        if (res.status !== 413) expect(validateSchema("ErrorResponse", json, "anthropic")).toEqual([])
        return [res.status, json.error.type, json.error.message]
      }
      expect(await refusal({ requests: [request("bad id!", "x")] })).toEqual([
        400,
        "invalid_request_error",
        "requests.0.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'",
      ])
      expect(await refusal({ requests: [request("a", "x"), request("b", "y"), request("a", "z")] })).toEqual([
        400,
        "invalid_request_error",
        "requests.2.custom_id: Duplicate custom_id 'a'; custom_ids must be unique within a Message Batch.",
      ])
      expect(await refusal({ requests: [request("x".repeat(65), "x")] })).toEqual([
        400,
        "invalid_request_error",
        "requests.0.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'",
      ])
      const many = Array.from({ length: 100_001 }, (_, i) => request(`m${i}`, "x"))
      expect(await refusal({ requests: many })).toEqual([
        400,
        "invalid_request_error",
        "requests: List should have at most 100000 items after validation, not 100001",
      ])
      fake.batch.maxBytes = 100
      expect(await refusal({ requests: requests(2) })).toEqual([
        413,
        "request_too_large",
        "Request exceeds the maximum allowed number of bytes.",
      ])
      fake.batch.maxBytes = 256 * 1024 * 1024
      expect(fake.batch.batches).toEqual([])
      expect(fake.batch.creates.map((r) => [r.status, r.requests])).toEqual([
        [400, 1],
        [400, 3],
        [400, 1],
        [400, 100_001],
        [413, 0],
      ])
      expect(fake.invalid.map((i) => i.errors)).toEqual([
        ["requests.0.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'"],
        ["requests.2.custom_id: Duplicate custom_id 'a'; custom_ids must be unique within a Message Batch."],
        ["requests.0.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'"],
        ["requests: List should have at most 100000 items after validation, not 100001"],
      ])

      fake.invalid.length = 0
      const bad = request("t_1", "two", { max_tokens: "lots" })
      const res = await post({ requests: [request("t_0", "one"), bad] })
      expect(res.status).toBe(200)
      const expected = validateSchema("CreateMessageParams", bad.params, "anthropic")
      expect(expected.length).toBeGreaterThan(0)
      expect(fake.invalid).toEqual([{ body: bad, errors: expected.map((e) => `requests.1.params${e}`) }])
      const client = anthropic(fake)
      const id = ((await res.json()) as { id: string }).id
      expect(tally(await fetchBatch(client, id))).toEqual(["ended", rc(0, 2)])
      expect(Object.fromEntries(fake.paid)).toEqual({ one: 1, two: 1 })
    },
  )

  test("a batch request and a direct call of the same input are both paid; a forced tool gets a tool_use block", async () => {
    await using fake = await startFakeAnthropic({
      apiKey: "k",
      reply: (input) => JSON.stringify({ label: input }),
    })
    const client = anthropic(fake)
    await client.messages.create({
      model: "claude-haiku-4-5",
      max_tokens: 64,
      messages: [{ role: "user", content: "item 1" }],
    })
    const tool = {
      tools: [{ name: "answer", input_schema: { type: "object" as const, properties: {} } }],
      tool_choice: { type: "tool" as const, name: "answer" },
    }
    const created = await client.messages.batches.create({
      requests: [request("t_1", "item 1", tool), request("t_2", "item 2")],
    })
    const lines = await results(client, created.id)
    const byId = Object.fromEntries(lines.map((l) => [l.custom_id, l.result.message.content[0]]))
    expect(byId.t_1.type).toBe("tool_use")
    expect([byId.t_1.name, byId.t_1.input]).toEqual(["answer", { label: "item 1" }])
    expect(byId.t_2).toEqual({ type: "text", text: JSON.stringify({ label: "item 2" }), citations: null })
    expect(Object.fromEntries(fake.paid)).toEqual({ "item 1": 2, "item 2": 1 })
    expect(fake.batch.paidLines).toBe(2)
  })

  test("the batch routes check x-api-key and anthropic-version as the Messages route does", async () => {
    await using fake = await startFakeAnthropic({ apiKey: "k" })
    const get = (headers: Record<string, string>) => fetch(`${fake.url}/v1/messages/batches`, { headers })
    const noKey = await get({ "anthropic-version": "2023-06-01", authorization: "Bearer k" })
    expect(noKey.status).toBe(401)
    expect(validateSchema("ErrorResponse", await noKey.json(), "anthropic")).toEqual([])
    expect((await get({ "x-api-key": "k" })).status).toBe(400)
    expect((await get({ "x-api-key": "k", "anthropic-version": "2023-06-01" })).status).toBe(200)
  })
})

// ---------------------------------------------------------------------------------------------------------------
// Result file downloads, spoiled as a broken gateway or proxy spoils them

/**
 * A GET with plain fetch: its status, content type and body. The fakes stream result files, chunked, but Bun sends a
 * Content-Length for a streamed body it has whole and shorter than 256 bytes (an empty body, the gateway page): when
 * there is one, it is the length of the body.
 */
async function download(url: string, headers: Record<string, string>) {
  const response = await fetch(url, { headers })
  const body = await response.text()
  const length = response.headers.get("content-length")
  if (length !== null) expect(Number(length)).toBe(Buffer.byteLength(body))
  return { status: response.status, type: response.headers.get("content-type"), body }
}

/** A download cut short: a 200 of the file's type, its body a part of the intact one's, cut inside a line. */
function expectTruncated(
  truncated: Awaited<ReturnType<typeof download>>,
  intact: Awaited<ReturnType<typeof download>>,
) {
  expect([truncated.status, truncated.type]).toEqual([200, intact.type])
  expect(truncated.body.length).toBeGreaterThan(0)
  expect(truncated.body.length).toBeLessThan(intact.body.length)
  expect(intact.body.startsWith(truncated.body)).toBe(true)
  expect(truncated.body.endsWith("\n")).toBe(false)
}

/** The lines of a file that ends with a newline. */
const linesOf = (text: string) => {
  expect(text.endsWith("\n")).toBe(true)
  return text.slice(0, -1).split("\n")
}

describe("the fakes' result file downloads, with download faults", () => {
  test("OpenAI: each fault spoils one download of a result file, in order, with a 200; then the file is served intact", async () => {
    await using fake = await startFake({ apiKey: "k" })
    const client = openai(fake)
    const done = await retrieve(client, (await submit(client, items(6))).id)
    expect(done.status).toBe("completed")
    const get = () =>
      download(`${fake.url}/files/${done.output_file_id}/content`, { authorization: "Bearer k" })
    const intact = await get()
    expect([intact.status, intact.type]).toEqual([200, "application/octet-stream"])
    const full = linesOf(intact.body)
    expect(full.length).toBe(6)
    expect(await get()).toEqual(intact)

    fake.batch.downloadFaults = ["truncated", "empty", "html", "missing_line", "duplicate_line", null]
    expectTruncated(await get(), intact)
    expect(await get()).toEqual({ ...intact, body: "" })
    expect(await get()).toEqual({ ...intact, type: "text/html; charset=utf-8", body: GATEWAY_PAGE })
    // the middle line (of 6, the 4th) left out, the others intact and in order
    expect(linesOf((await get()).body)).toEqual([...full.slice(0, 3), ...full.slice(4)])
    expect(linesOf((await get()).body)).toEqual([full[0]!, ...full])
    // null: this one intact
    expect(await get()).toEqual(intact)
    expect(fake.batch.downloadFaults).toEqual([])
    // each fault was used once: the file is intact again
    expect(await get()).toEqual(intact)
    expect(await get()).toEqual(intact)
    expect(fake.batch.downloads).toBe(10)
  })

  test("OpenAI: faults are used by the output and error files alike, in download order, and never by an input file", async () => {
    await using fake = await startFake({
      apiKey: "k",
      batch: { faults: { end: { outcome: "expired", after: 0.5 } } },
    })
    const client = openai(fake)
    const created = await submit(client, items(6))
    const done = await retrieve(client, created.id)
    expect(counts(done)).toEqual(["expired", 6, 3, 3])
    const get = (id: string | null | undefined) =>
      download(`${fake.url}/files/${id}/content`, { authorization: "Bearer k" })
    const output = (await get(done.output_file_id)).body
    const errors = (await get(done.error_file_id)).body
    expect([linesOf(output).length, linesOf(errors).length]).toEqual([3, 3])
    fake.batch.downloadFaults = ["empty", "duplicate_line"]
    // the batch's input file is no result file: it takes no fault, and is not counted
    const input = await get(done.input_file_id)
    expect([input.status, input.body]).toEqual([200, jsonlOf(items(6))])
    expect(fake.batch.downloadFaults).toEqual(["empty", "duplicate_line"])
    expect((await get(done.error_file_id)).body).toBe("")
    const first = linesOf(output)[0]!
    expect((await get(done.output_file_id)).body).toBe(`${first}\n${output}`)
    expect([(await get(done.output_file_id)).body, (await get(done.error_file_id)).body]).toEqual([
      output,
      errors,
    ])
    expect(fake.batch.downloads).toBe(6)
  })

  test("OpenAI: garbledLine cuts that line of every result file to its first half, on every download, and leaves the others", async () => {
    await using fake = await startFake({ apiKey: "k" })
    const client = openai(fake)
    const done = await retrieve(client, (await submit(client, items(6))).id)
    const get = () =>
      download(`${fake.url}/files/${done.output_file_id}/content`, { authorization: "Bearer k" })
    const full = linesOf((await get()).body)
    fake.batch.garbledLine = 1
    const garbled = await get()
    const lines = linesOf(garbled.body)
    expect(lines.length).toBe(6)
    expect([lines[0], ...lines.slice(2)]).toEqual([full[0]!, ...full.slice(2)])
    expect(lines[1]!.length).toBe(Math.floor(full[1]!.length / 2))
    expect(full[1]!.startsWith(lines[1]!)).toBe(true)
    expect(() => JSON.parse(lines[1]!)).toThrow()
    // the same bytes every time: downloading again does not mend it
    expect(await get()).toEqual(garbled)
    expect(await get()).toEqual(garbled)
    // a line past the end of the file garbles nothing
    fake.batch.garbledLine = 6
    expect(linesOf((await get()).body)).toEqual(full)
  })

  test("Anthropic: the results take the faults as OpenAI's files do, and garbledLine on every download, a fault's too", async () => {
    await using fake = await startFakeAnthropic({ apiKey: "k" })
    const client = anthropic(fake)
    const created = await client.messages.batches.create({ requests: requests(6) })
    expect((await fetchBatch(client, created.id)).processing_status).toBe("ended")
    const get = () =>
      download(`${fake.url}/v1/messages/batches/${created.id}/results`, {
        "x-api-key": "k",
        "anthropic-version": "2023-06-01",
      })
    const intact = await get()
    expect([intact.status, intact.type]).toEqual([200, "application/binary"])
    const full = linesOf(intact.body)
    expect(full.length).toBe(6)

    fake.batch.downloadFaults = ["html", "truncated", "missing_line"]
    expect(await get()).toEqual({ ...intact, type: "text/html; charset=utf-8", body: GATEWAY_PAGE })
    expectTruncated(await get(), intact)
    expect(linesOf((await get()).body)).toEqual([...full.slice(0, 3), ...full.slice(4)])
    expect(await get()).toEqual(intact)

    fake.batch.garbledLine = 0
    fake.batch.downloadFaults = ["duplicate_line"]
    const half = full[0]!.slice(0, Math.floor(full[0]!.length / 2))
    expect(linesOf((await get()).body)).toEqual([half, half, ...full.slice(1)])
    const garbled = await get()
    expect(linesOf(garbled.body)).toEqual([half, ...full.slice(1)])
    expect(await get()).toEqual(garbled)
    expect(fake.batch.downloads).toBe(8)
  })
})
