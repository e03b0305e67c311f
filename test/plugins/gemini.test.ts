/**
 * The gemini provider: the provider contract (test/lib/provider-contract.ts) against the fake Gemini API
 * (test/lib/fake-gemini.ts), then what is Gemini's own: its error classes (RetryInfo, per-day quotas, an invalid key
 * as a 400), the schema check before any call, usage with cached tokens, refusals and cut answers, the base URL, and
 * the Batch API inline and through a file, found again by its display name, cancelled, its lines read.
 */
import { describe, expect, test } from "bun:test"
import gemini from "../../src/plugins/providers/gemini/gemini.ts"
import { INLINE_LIMIT_BYTES, remote } from "../../src/plugins/providers/gemini/batch.ts"
import { body, durationMs, schemaProblems } from "../../src/plugins/providers/gemini/wire.ts"
import type { BatchClient, ProviderClient, Request } from "../../src/plugins/api/define.ts"
import { ProviderError, StoreError } from "../../src/plugins/api/errors.ts"
import {
  expectCallersAbort,
  expectStalledDownload,
  outputs,
  STALL_MS,
  stallingServer,
} from "../lib/batch-helpers.ts"
import { NOT_JSON, testProvider, type ScriptedFault } from "../lib/provider-contract.ts"
import {
  promptTokens,
  startFakeGemini,
  type Fake,
  type FakeOptions,
  type FaultKind,
} from "../lib/fake-gemini.ts"
import { discoveryChecker } from "../lib/fake-gemini-wire.ts"
import { tmpdir, type Tmp } from "../lib/tmp.ts"

const KEY = "gemini-contract-key"
const MODEL = "gemini-2.5-flash"
const tokens = (text: string) => Math.max(1, Math.ceil(text.length / 4))
const echo = (prompt: string) => `echo: ${prompt}`
const structured = (input: string) =>
  input === NOT_JSON ? "Here is my answer in prose." : JSON.stringify({ label: input })
const never = () => new AbortController().signal

const FAULTS: Partial<Record<ScriptedFault, FaultKind>> = {
  "429": "429",
  "500": "500",
  hang: "hang",
  reset: "reset",
  garbage: "garbage",
  quota: "quota",
}

testProvider(gemini, {
  // no "429-date" (the API gives its wait as RetryInfo, not an HTTP-date), no "529"; and no "auth": a wrong key is a
  // 400 INVALID_ARGUMENT with reason API_KEY_INVALID, not the contract's 401 (tested below)
  supports: ["429", "500", "hang", "reset", "garbage", "quota"],
  async start() {
    const bodies: Record<string, unknown>[] = []
    const fake = await startFakeGemini({
      apiKey: KEY,
      reply: (input, b) => {
        bodies.push(b)
        const config = b.generationConfig as Record<string, unknown> | undefined
        return config?.responseJsonSchema ? structured(input) : echo(input)
      },
    })
    return {
      args: ({ timeoutMs, apiKey = KEY }) => [{}, { model: MODEL, baseUrl: fake.url, apiKey, timeoutMs }],
      fail(prompt, fault, retryAfter) {
        const kind = FAULTS[fault]
        if (!kind) throw new Error(`the Gemini fake cannot produce "${fault}"`)
        if (retryAfter !== undefined) fake.retryDelay = retryAfter
        fake.script.set(prompt, [kind])
      },
      echo,
      bodies,
      invalid: fake.invalid,
      [Symbol.asyncDispose]: () => fake.stop(),
    }
  },
  // GenerateContentRequest (ai.google.dev/api/generate-content): the prompt as one user turn, the system prompt as
  // systemInstruction, the limits in generationConfig; params laid over the body
  wire: (_model, request) => ({
    contents: [{ role: "user", parts: [{ text: request.prompt }] }],
    ...(request.system && { systemInstruction: { parts: [{ text: request.system }] } }),
    ...((request.max_tokens !== undefined || request.temperature !== undefined) && {
      generationConfig: {
        ...(request.max_tokens !== undefined && { maxOutputTokens: request.max_tokens }),
        ...(request.temperature !== undefined && { temperature: request.temperature }),
      },
    }),
    ...request.params,
  }),
  usage: (b, text) => ({ input_tokens: promptTokens(b), output_tokens: tokens(text) }),
  options: { given: {}, parsed: {} },
  structured: {
    schemaIn: (b) => (b.generationConfig as Record<string, unknown> | undefined)?.responseJsonSchema,
  },
})

/** A client of the fake, with the key it takes unless another is given. */
async function started(options: FakeOptions = {}, key = KEY, baseUrl?: string) {
  const fake = await startFakeGemini({ apiKey: KEY, ...options })
  const client = gemini.create(
    {},
    { model: MODEL, baseUrl: baseUrl ?? fake.url, apiKey: key, timeoutMs: 5000 },
  )
  return { fake, client, [Symbol.asyncDispose]: () => fake.stop() }
}

async function failure(client: ProviderClient, request: Request): Promise<ProviderError> {
  try {
    await client.call(request, never())
  } catch (e) {
    if (e instanceof ProviderError) return e
    throw e
  }
  throw new Error("expected a ProviderError")
}

const fields = (e: ProviderError) => ({
  class: e.errorClass,
  retryable: e.retryable,
  pause: e.pause,
  retryAfterMs: e.retryAfterMs,
  status: e.status,
})

describe("gemini: errors", () => {
  test("429 RESOURCE_EXHAUSTED of a per-minute quota: rate_limit, retried after the RetryInfo's retryDelay", async () => {
    await using s = await started()
    s.fake.retryDelay = "12.5"
    s.fake.script.set("a", ["429"])
    const e = await failure(s.client, { prompt: "a" })
    expect(fields(e)).toEqual({
      class: "rate_limit",
      retryable: true,
      pause: false,
      retryAfterMs: 12_500,
      status: 429,
    })
    expect(e.message).toStartWith("HTTP 429: RESOURCE_EXHAUSTED: You exceeded your current quota")
  })

  test("429 of a per-day quota: quota, pauses the run", async () => {
    await using s = await started()
    s.fake.script.set("a", ["quota"])
    expect(fields(await failure(s.client, { prompt: "a" }))).toEqual({
      class: "quota",
      retryable: false,
      pause: true,
      retryAfterMs: undefined,
      status: 429,
    })
  })

  test("an invalid key (400 API_KEY_INVALID): auth, pauses the run, and the key is sent in x-goog-api-key", async () => {
    await using s = await started({}, "wrong-key")
    const e = await failure(s.client, { prompt: "a" })
    expect(fields(e)).toEqual({
      class: "auth",
      retryable: false,
      pause: true,
      retryAfterMs: undefined,
      status: 400,
    })
    expect(s.fake.headers?.get("x-goog-api-key")).toBe("wrong-key")
    expect(s.fake.bodies).toEqual([])
  })

  test("no key at all (403 PERMISSION_DENIED): auth, pauses the run", async () => {
    await using s = await started({}, "")
    expect(fields(await failure(s.client, { prompt: "a" }))).toMatchObject({
      class: "auth",
      pause: true,
      status: 403,
    })
  })

  test("400 INVALID_ARGUMENT: bad_request, not retried; 503 UNAVAILABLE: server, retried", async () => {
    await using s = await started()
    s.fake.script.set("a", ["invalid"])
    s.fake.script.set("b", ["503"])
    expect(fields(await failure(s.client, { prompt: "a" }))).toEqual({
      class: "bad_request",
      retryable: false,
      pause: false,
      retryAfterMs: undefined,
      status: 400,
    })
    expect(fields(await failure(s.client, { prompt: "b" }))).toEqual({
      class: "server",
      retryable: true,
      pause: false,
      retryAfterMs: undefined,
      status: 503,
    })
  })

  test("a base URL ending in /v1beta is taken as the root; a wrong one is told from a missing model", async () => {
    await using s = await started()
    const infos: string[] = []
    const client = gemini.create(
      {},
      {
        model: MODEL,
        baseUrl: `${s.fake.url}/v1beta/`,
        apiKey: KEY,
        timeoutMs: 5000,
        info: (m) => infos.push(m),
      },
    )
    expect((await client.call({ prompt: "x" }, never())).text).toBe("echo: x")
    expect(infos).toEqual([
      `the base URL ${s.fake.url}/v1beta ends in /v1beta, which the Gemini API's paths carry already: using ${s.fake.url}`,
    ])
    const wrong = gemini.create(
      {},
      { model: MODEL, baseUrl: `${s.fake.url}/gemini`, apiKey: KEY, timeoutMs: 5000 },
    )
    const e = await failure(wrong, { prompt: "x" })
    expect([e.errorClass, e.pause, e.status]).toEqual(["not_found", true, 404])
    expect(e.message).toEndWith(`; check base_url (it is ${s.fake.url}/gemini)`)
  })

  test("protobuf durations: 51s, 0.5s, and nothing else", () => {
    expect([
      durationMs("51s"),
      durationMs("0.5s"),
      durationMs("1.250s"),
      durationMs("5m"),
      durationMs(7),
    ]).toEqual([51_000, 500, 1250, undefined, undefined])
  })
})

describe("gemini: answers", () => {
  test("usage: promptTokenCount holds the cached tokens, which are the cached input", async () => {
    await using s = await started({ cached: () => 1000 })
    const reply = await s.client.call({ prompt: "cached" }, never())
    const prompt = promptTokens(s.fake.bodies[0]!) + 1000
    expect(reply.usage).toEqual({
      input_tokens: prompt,
      output_tokens: tokens("echo: cached"),
      cached_input_tokens: 1000,
    })
  })

  test("an answer cut at maxOutputTokens is finish length; a blocked prompt is a refusal", async () => {
    await using s = await started()
    s.fake.script.set("long", ["max_tokens"])
    s.fake.script.set("bad", ["blocked"])
    const cut = await s.client.call({ prompt: "long", max_tokens: 1 }, never())
    expect([cut.text, cut.finish]).toEqual(["echo", "length"])
    const refused = await s.client.call({ prompt: "bad" }, never())
    expect([refused.text, refused.finish]).toEqual(["the prompt was blocked (SAFETY)", "refusal"])
  })

  test("params: a generationConfig among them is merged key by key; others go on the body as they are", () => {
    expect(
      body({ prompt: "p", max_tokens: 5, params: { generationConfig: { topK: 3 }, safetySettings: [] } }),
    ).toEqual({
      contents: [{ role: "user", parts: [{ text: "p" }] }],
      generationConfig: { maxOutputTokens: 5, topK: 3 },
      safetySettings: [],
    })
  })

  test("a schema with a keyword Gemini refuses pauses the run before anything is sent, naming the keyword", async () => {
    await using s = await started()
    const schema = {
      type: "object",
      properties: { tags: { type: "array", items: { type: "string", pattern: "^[a-z]+$" } } },
      required: ["tags"],
      additionalProperties: false,
    }
    const e = await failure(s.client, { prompt: "x", schema: { name: "s", schema } })
    expect(fields(e)).toEqual({
      class: "bad_request",
      retryable: false,
      pause: true,
      retryAfterMs: undefined,
      status: undefined,
    })
    expect(e.message).toContain('output.schema.properties.tags.items.pattern: "pattern" is not a keyword')
    expect(s.fake.requests).toBe(0)
    expect(
      schemaProblems({ anyOf: [{ type: "string", minLength: 2 }], $defs: { a: { enum: [true] } } }),
    ).toEqual([
      'output.schema.anyOf.0.minLength: "minLength" is not a keyword Gemini\'s responseJsonSchema accepts (it takes $id, $defs, $ref, $anchor, type, format, title, description, enum, items, prefixItems, minItems, maxItems, minimum, maximum, anyOf, oneOf, properties, additionalProperties, required, propertyOrdering)',
      "output.schema.$defs.a.enum: Gemini takes enum values that are strings or numbers only",
    ])
  })
})

// ---------------------------------------------------------------------------------------------------------
// The Batch API

/** A request file of `n` items (custom_ids `${tag}_${k}`), written with the client's own lines. */
async function requests(c: BatchClient, tmp: Tmp, tag: string, n: number, pad = 0): Promise<string> {
  const file = tmp.join(`${tag}.jsonl`)
  const text = Array.from(
    { length: n },
    (_, k) => `${c.line(`${tag}_${k}`, { prompt: `item ${k}${"x".repeat(pad)}`, max_tokens: 16 })}\n`,
  ).join("")
  await Bun.write(file, text)
  return file
}

const tagOf = (tag: string, count: number, since = Date.now()) => ({ tag, run: "r1", count, since })

async function lines(c: BatchClient, file: string) {
  return (await Bun.file(file).text())
    .trim()
    .split("\n")
    .map((l) => c.parse(l))
}

describe("gemini: batch", () => {
  test("a small batch goes inline, named by its tag; polled to its end; every answer read once", async () => {
    let t = 1_000_000
    await using s = await started({
      now: () => t,
      processingMs: 10_000,
      lineError: (i) =>
        i === "item 2"
          ? { code: 3, message: "Request contains an invalid argument.", status: "INVALID_ARGUMENT" }
          : undefined,
    })
    await using tmp = await tmpdir()
    const c = s.client.batch!
    const file = await requests(c, tmp, "r1-b0001", 4)
    const created = await c.create(file, tagOf("r1-b0001", 4, t), never())
    const b = s.fake.batches[0]!
    expect([b.via, b.displayName, b.model, b.lines.map((l) => l.key)]).toEqual([
      "inline",
      "r1-b0001",
      "models/gemini-2.5-flash",
      ["r1-b0001_0", "r1-b0001_1", "r1-b0001_2", "r1-b0001_3"],
    ])
    expect(created).toEqual({
      id: b.name,
      status: "BATCH_STATE_PENDING",
      phase: "validating",
      counts: { total: 4, done: 0, failed: 0 },
      createdAt: t,
    })
    t += 5_000
    expect(await c.retrieve(created.id, never())).toMatchObject({
      status: "BATCH_STATE_RUNNING",
      phase: "in_progress",
      counts: { total: 4, done: 2, failed: 0 },
    })
    t += 5_000
    const ended = await c.retrieve(created.id, never())
    expect(ended).toMatchObject({
      status: "BATCH_STATE_SUCCEEDED",
      phase: "ended",
      outcome: "completed",
      counts: { total: 4, done: 4, failed: 1 },
      files: { output: b.name },
      expect: { output: { min: 4, max: 4 } },
    })
    const to = { output: tmp.join("out.jsonl"), errors: tmp.join("err.jsonl") }
    expect((await c.download(ended, to, never())).output).toBe(to.output)
    const got = await lines(c, to.output)
    expect(got.map((l) => [l.customId, l.reply?.text, l.error?.errorClass])).toEqual([
      ["r1-b0001_0", "echo: item 0", undefined],
      ["r1-b0001_1", "echo: item 1", undefined],
      ["r1-b0001_2", undefined, "bad_request"],
      ["r1-b0001_3", "echo: item 3", undefined],
    ])
    expect(got[0]!.reply!.usage).toEqual({
      input_tokens: promptTokens(b.lines[0]!.request),
      output_tokens: tokens("echo: item 0"),
      cached_input_tokens: undefined,
    })
    expect(got[2]!.error!.message).toBe("HTTP 400: INVALID_ARGUMENT: Request contains an invalid argument.")
    expect(s.fake.paid.get("item 0")).toBe(1)
    expect(s.fake.paid.get("item 2")).toBeUndefined()
  })

  test("a batch over the inline limit goes as a JSONL file through the Files API, and its responses file is downloaded", async () => {
    await using s = await started()
    await using tmp = await tmpdir()
    const c = s.client.batch!
    // 3 requests of ~7 MB each: over 20 MB together
    const file = await requests(c, tmp, "r1-b0002", 3, 7_000_000)
    expect(Bun.file(file).size).toBeGreaterThan(INLINE_LIMIT_BYTES)
    const created = await c.create(file, tagOf("r1-b0002", 3), never())
    const b = s.fake.batches[0]!
    expect(b.via).toBe("file")
    expect(s.fake.files.get("files/upload1")).toBe(await Bun.file(file).text())
    expect(created).toMatchObject({
      phase: "ended",
      outcome: "completed",
      files: { output: `files/batch-${b.name.slice(8)}` },
    })
    const to = { output: tmp.join("out.jsonl"), errors: tmp.join("err.jsonl") }
    const written = await c.download(created, to, never())
    expect(written.announced?.output).toBe(Bun.file(to.output).size)
    expect((await lines(c, to.output)).map((l) => l.customId)).toEqual([
      "r1-b0002_0",
      "r1-b0002_1",
      "r1-b0002_2",
    ])
  })

  test("after a crash, the batch is found by its display name (the tag); another tag, or one too old, is none", async () => {
    await using s = await started({ processingMs: 60_000 })
    await using tmp = await tmpdir()
    const c = s.client.batch!
    const since = Date.now()
    await c.create(await requests(c, tmp, "r9-b0001", 3), tagOf("r9-b0001", 3, since), never())
    await c.create(await requests(c, tmp, "r1-b0001", 3), tagOf("r1-b0001", 3, since), never())
    const ours = s.fake.batches[1]!.name
    expect(await c.find(tagOf("r1-b0001", 3, since), never())).toEqual({
      found: await c.retrieve(ours, never()),
    })
    expect(await c.find(tagOf("r1-b9999", 3, since), never())).toEqual({ none: true })
    expect(await c.find(tagOf("r1-b0001", 3, since + 60 * 60_000), never())).toEqual({ none: true })
  })

  test("cancel part way: ended as cancelled, the lines run keep their answers", async () => {
    let t = 5_000_000
    await using s = await started({ now: () => t, processingMs: 10_000 })
    await using tmp = await tmpdir()
    const c = s.client.batch!
    const created = await c.create(await requests(c, tmp, "r1-b0003", 10), tagOf("r1-b0003", 10, t), never())
    t += 4_000
    const cancelled = await c.cancel(created.id, never())
    expect(cancelled).toMatchObject({
      status: "BATCH_STATE_CANCELLED",
      phase: "ended",
      outcome: "cancelled",
      counts: { total: 10, done: 4, failed: 0 },
    })
    const to = { output: tmp.join("out.jsonl"), errors: tmp.join("err.jsonl") }
    await c.download(cancelled, to, never())
    expect((await lines(c, to.output)).map((l) => l.reply?.text)).toEqual([
      "echo: item 0",
      "echo: item 1",
      "echo: item 2",
      "echo: item 3",
    ])
  })

  test("a schema Gemini refuses stops the create before anything is sent", async () => {
    await using s = await started()
    await using tmp = await tmpdir()
    const c = s.client.batch!
    const line = c.line("r1-b0004_0", {
      prompt: "x",
      schema: { name: "s", schema: { type: "string", minLength: 3 } },
    })
    await Bun.write(tmp.join("r.jsonl"), `${line}\n`)
    const e = await c.create(tmp.join("r.jsonl"), tagOf("r1-b0004", 1), never()).catch((x: unknown) => x)
    expect(e).toBeInstanceOf(ProviderError)
    expect((e as ProviderError).pause).toBe(true)
    expect(s.fake.requests).toBe(0)
  })

  test("a failed batch carries its error, classified; JOB_STATE_* words are read as BATCH_STATE_* ones", () => {
    const failed = remote({
      name: "batches/x",
      done: true,
      metadata: {
        state: "JOB_STATE_FAILED",
        createTime: "2026-12-01T00:00:00Z",
        batchStats: { requestCount: "2" },
      },
      error: { code: 8, message: "Quota exceeded." },
    })
    expect([failed.phase, failed.outcome, failed.error?.errorClass, failed.error?.status]).toEqual([
      "ended",
      "failed",
      "rate_limit",
      429,
    ])
    expect(remote({ name: "batches/y", metadata: { state: "JOB_STATE_RUNNING" } }).phase).toBe("in_progress")
  })
})

describe("gemini: batch downloads and aborts", () => {
  test("a responses file whose stream stalls is a retryable timeout and leaves neither the file nor its .part", async () => {
    using server = stallingServer()
    await using tmp = await tmpdir()
    const client = gemini.create(
      {},
      { model: MODEL, baseUrl: `http://127.0.0.1:${server.port}`, apiKey: KEY, timeoutMs: STALL_MS },
    )
    const batch = remote({
      name: "batches/s",
      done: true,
      metadata: {
        state: "BATCH_STATE_SUCCEEDED",
        createTime: "2026-12-01T00:00:00Z",
        batchStats: { requestCount: "2", successfulRequestCount: "2" },
      },
      response: { responsesFile: "files/s" },
    })
    await expectStalledDownload(client.batch!, batch, outputs(tmp))
  })

  test("a download the disk fails under is a StoreError naming the file, and leaves no .part", async () => {
    await using s = await started()
    await using tmp = await tmpdir()
    const c = s.client.batch!
    const ended = await c.create(await requests(c, tmp, "r1-b0005", 2), tagOf("r1-b0005", 2), never())
    const output = tmp.join("missing", "out.jsonl")
    const failed = await c
      .download(ended, { output, errors: tmp.join("err.jsonl") }, never())
      .catch((e: unknown) => e)
    expect(failed).toBeInstanceOf(StoreError)
    expect((failed as StoreError).message).toStartWith(`cannot write ${output}.part: `)
    expect(await Bun.file(`${output}.part`).exists()).toBe(false)
  })

  test("every batch call passes a caller's abort through as the caller's own reason, and makes nothing", async () => {
    await using s = await started()
    await using tmp = await tmpdir()
    const c = s.client.batch!
    const file = await requests(c, tmp, "r1-b0006", 2)
    const ended = await c.create(file, tagOf("r1-b0006", 2), never())
    await expectCallersAbort((signal) => c.create(file, tagOf("r1-b0007", 2), signal))
    await expectCallersAbort((signal) => c.retrieve(ended.id, signal))
    await expectCallersAbort((signal) => c.find(tagOf("r1-b0006", 2), signal))
    await expectCallersAbort((signal) => c.cancel(ended.id, signal))
    await expectCallersAbort((signal) => c.download(ended, outputs(tmp), signal))
    expect(s.fake.batches.length).toBe(1)
    expect(await Bun.file(outputs(tmp).output).exists()).toBe(false)
  })
})

describe("gemini: the fake's discovery-document check", () => {
  test("a discovery document's schemas check values as JSON Schema: $ref, arrays, enums, types", () => {
    // the format of generativelanguage's $discovery/rest document, cut to three schemas
    const check = discoveryChecker({
      schemas: {
        GenerateContentRequest: {
          type: "object",
          properties: {
            contents: { type: "array", items: { $ref: "Content" } },
            generationConfig: { $ref: "GenerationConfig" },
          },
        },
        Content: {
          type: "object",
          properties: { role: { type: "string" }, parts: { type: "array", items: { type: "any" } } },
        },
        GenerationConfig: {
          type: "object",
          properties: {
            maxOutputTokens: { type: "integer" },
            responseMimeType: { type: "string" },
            mediaResolution: { type: "string", enum: ["MEDIA_RESOLUTION_LOW", "MEDIA_RESOLUTION_HIGH"] },
          },
        },
      },
    })
    expect(check("GenerateContentRequest", body({ prompt: "p", max_tokens: 5 }))).toEqual([])
    expect(
      check("GenerateContentRequest", {
        contents: [{ role: 1, parts: [] }],
        generationConfig: { maxOutputTokens: "5", mediaResolution: "MEDIUM" },
      }),
    ).toEqual([
      "/contents/0/role must be string",
      "/generationConfig/maxOutputTokens must be integer",
      "/generationConfig/mediaResolution must be equal to one of the allowed values",
    ])
    expect(check("Nope", {})).toEqual(["no schema Nope in the discovery document"])
  })
})
