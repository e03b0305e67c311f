/**
 * openai-compatible's batch profiles (src/plugins/providers/openai-compatible/profiles.ts): the provider contract and
 * the batch client contract against the OpenAI fake serving as each profile's service (fake-openai.ts `profile`), and
 * each service's differences on the wire: Azure's `api-version`, `api-key` and deployment paths, Together's file
 * purpose, UPPERCASE statuses and wrapped create, Groq's longer completion windows.
 */
import { describe, expect, test } from "bun:test"
import compatible from "../../src/plugins/providers/openai-compatible/openai-compatible.ts"
import { PROFILES, resolve } from "../../src/plugins/providers/openai-compatible/profiles.ts"
import { OPENAI_SHAPE, remote } from "../../src/plugins/providers/openai/batch.ts"
import * as registry from "../../src/plugins/registry.ts"
import { JobError, ProviderError } from "../../src/plugins/api/errors.ts"
import type { BatchClient, Reply, Request, Usage } from "../../src/plugins/api/define.ts"
import type { Batch } from "openai/resources/batches"
import { testBatchClient, type BatchServer } from "../lib/batch-contract.ts"
import { NOT_JSON, testProvider, type HarnessServer, type ScriptedFault } from "../lib/provider-contract.ts"
import { never, submit, tagOf, tokens, untilEnded } from "../lib/batch-helpers.ts"
import { startFake, type FakeProfile, type FaultKind } from "../lib/fake-openai.ts"
import { tmpdir } from "../lib/tmp.ts"

const KEY = "contract-key"
const TIMEOUT_MS = 5000
const MODEL = "llama-3.1-8b-instant"

/** The fake's service for each built-in profile. */
const SERVICES: Record<string, FakeProfile> = {
  generic: "openai",
  azure: "azure",
  groq: "groq",
  together: "together",
}

/** A batch client of openai-compatible under `profile`, against `baseUrl`. */
function batchClient(profile: string, baseUrl: string, timeoutMs = TIMEOUT_MS, apiKey = KEY): BatchClient {
  const client = compatible.create({ batch: { profile } }, { model: MODEL, baseUrl, apiKey, timeoutMs })
  if (!client.batch) throw new Error("openai-compatible gave no batch client")
  return client.batch
}

/** The fake's fault for a scripted one: the same name, but for a 429 dated, which is its 429 with a dated Retry-After. */
const faultOf = (fault: ScriptedFault): FaultKind => {
  if (fault === "429-date") return "429"
  if (fault === "529") throw new Error('the OpenAI fake cannot produce "529"')
  return fault
}

const echo = (prompt: string) => `echo: ${prompt}`

/** How the client reads the fake's answer to a prompt sent alone: its echo, a quarter of the characters as tokens. */
function answerTo(prompt: string): Reply {
  const text = echo(prompt)
  const input = tokens(JSON.stringify([{ role: "user", content: prompt }]))
  return { text, usage: { input_tokens: input, output_tokens: tokens(text), cached_input_tokens: undefined } }
}

/** The message of a line the fake errored with a status, as the client gives it. */
const LINE_ERRORS = {
  400: "HTTP 400: Invalid request.",
  500: "HTTP 500: The server had an error while processing your request.",
} as const

for (const [profile, service] of Object.entries(SERVICES)) {
  // Together's UPPERCASE statuses are read as OpenAI's words (the fake serves them UPPERCASE)
  const word = (w: string) => w

  testProvider(compatible, {
    label: `profile "${profile}"`,
    supports: ["429", "429-date", "500", "hang", "reset", "garbage", "auth", "quota"],
    async start(): Promise<HarnessServer<{ batch: { profile: string } }>> {
      const bodies: Record<string, unknown>[] = []
      const fake = await startFake({
        apiKey: KEY,
        profile: service,
        reply: (input, body) => {
          bodies.push(body)
          if (!body.response_format) return echo(input)
          return input === NOT_JSON ? "Here is my answer in prose." : JSON.stringify({ label: input })
        },
      })
      return {
        args: ({ timeoutMs, apiKey = KEY }) => [
          { batch: { profile } },
          { model: MODEL, baseUrl: fake.url, apiKey, timeoutMs },
        ],
        fail(prompt, fault, retryAfter) {
          if (retryAfter !== undefined) fake.faults = { rate: 0, kinds: [], retryAfter }
          fake.script.set(prompt, [faultOf(fault)])
        },
        echo,
        bodies,
        invalid: fake.invalid,
        [Symbol.asyncDispose]: () => fake.stop(),
      }
    },
    // chat completions as openai-compatible sends them: the output limit as max_tokens
    wire: (model: string, request: Request) => ({
      model,
      messages: [
        ...(request.system ? [{ role: "system", content: request.system }] : []),
        { role: "user", content: request.prompt },
      ],
      ...(request.max_tokens !== undefined && { max_tokens: request.max_tokens }),
      ...(request.temperature !== undefined && { temperature: request.temperature }),
      ...request.params,
    }),
    usage: (body, text): Usage => ({
      input_tokens: tokens(JSON.stringify(body.messages ?? "")),
      output_tokens: tokens(text),
    }),
    options: { given: { batch: { profile } }, parsed: { batch: { profile } } },
    structured: {
      schemaIn: (body) => (body.response_format as { json_schema: { schema: unknown } }).json_schema.schema,
    },
  })

  testBatchClient({
    name: `openai-compatible, profile "${profile}"`,
    async start({ batch, now }) {
      const fake = await startFake({ apiKey: KEY, batch, now, profile: service })
      const server: BatchServer = {
        client: () => batchClient(profile, fake.url),
        batch: fake.batch,
        [Symbol.asyncDispose]: () => fake.stop(),
      }
      return server
    },
    reply: (k) => answerTo(`item ${k}`),
    lineError: (status) => LINE_ERRORS[status],
    words: {
      created: { status: word("validating"), phase: "validating" },
      cancelling: word("cancelling"),
      ended: (outcome) => word(outcome),
    },
    createdAt: (ms) => Math.floor(ms / 1000) * 1000,
    unrunFailed: true,
    stalling: (url, timeoutMs) => ({
      client: batchClient(profile, `${url}/v1`, timeoutMs),
      batch: {
        id: "batch_1",
        status: word("completed"),
        phase: "ended",
        outcome: "completed",
        createdAt: 0,
        files: { output: "file-1" },
      },
    }),
  })
}

describe("the profiles", () => {
  test("a profile is its built-in settings with the job's fields over them; a window the profile lacks, or a name none has, is the job's mistake", () => {
    expect(resolve(undefined)).toEqual(PROFILES.generic!)
    expect(resolve({ profile: "groq", completion_window: "7d" })).toEqual({
      ...PROFILES.groq!,
      completion_window: "7d",
    })
    expect(resolve({ profile: "azure", query: { "api-version": "2025-03-01-preview" } }).query).toEqual({
      "api-version": "2025-03-01-preview",
    })
    // a job's own list of windows, none named: the first
    expect(resolve({ completion_windows: ["48h", "24h"] }).completion_window).toBe("48h")
    const badWindow = (() => {
      try {
        resolve({ profile: "together", completion_window: "7d" })
      } catch (error) {
        return error
      }
    })() as JobError
    expect(badWindow).toBeInstanceOf(JobError)
    expect(badWindow.problems).toEqual([
      'provider.options.batch.completion_window: "7d" is not one the together profile allows (24h)',
    ])
    expect(() => resolve({ profile: "nebula" })).toThrow(JobError)
  })

  test("the options schema refuses a key no profile has and a status word that is not OpenAI's", () => {
    const schema = compatible.options
    expect(() => compatible.create({ batch: { profile: "nebula" } }, ctx("http://127.0.0.1:1/v1"))).toThrow(
      'provider.options.batch.profile: "nebula" is not a profile (generic, azure, groq, together)',
    )
    const parse = (batch: unknown) => schema["~standard"].validate({ batch })
    expect("issues" in (parse({ profil: "azure" }) as object)).toBe(true)
    expect("issues" in (parse({ statuses: { DONE: "done" } }) as object)).toBe(true)
    expect("issues" in (parse({ statuses: { DONE: "completed" }, max_requests: 10 }) as object)).toBe(false)
  })

  test("spool plugins lists every profile with its settings", () => {
    const listed = registry.list().find((p) => p.kind === "provider" && p.name === "openai-compatible")!
    expect(Object.keys(listed.profiles ?? {})).toEqual(["generic", "azure", "groq", "together"])
    expect(listed.profiles!.together).toMatchObject({
      purpose: "batch-api",
      max_requests: 50_000,
      max_bytes: 100_000_000,
      statuses: { IN_PROGRESS: "in_progress" },
    })
    expect(listed.profiles!.azure).toMatchObject({ auth: "api-key", model: "deployment", expires: false })
    expect(listed.options.map((o) => o.name)).toEqual(["batch"])
  })

  test("a queue refusal that names no number is learned as the profile's documented enqueued-token cap", () => {
    const failed = {
      id: "batch_1",
      status: "FAILED",
      created_at: "2026-01-02T03:04:05Z",
      errors: { data: [{ code: "token_limit_exceeded", message: "The queue is full." }] },
    } as unknown as Batch
    const shape = { ...OPENAI_SHAPE, statuses: { FAILED: "failed" as const }, enqueuedTokens: 30_000_000_000 }
    const r = remote(failed, shape)
    expect([r.status, r.phase, r.outcome, r.createdAt]).toEqual([
      "failed",
      "ended",
      "failed",
      Date.parse("2026-01-02T03:04:05Z"),
    ])
    expect(r.error).toBeInstanceOf(ProviderError)
    expect([r.error!.errorClass, r.error!.queueLimit]).toEqual(["queue_limit", { tokens: 30_000_000_000 }])
  })
})

const ctx = (baseUrl: string) => ({ model: MODEL, baseUrl, apiKey: KEY, timeoutMs: TIMEOUT_MS })

describe("each service's differences on the wire", () => {
  test("azure: calls carry api-version and api-key, realtime goes to the deployment, lines name it as model; the fake refuses a call without them", async () => {
    await using fake = await startFake({ apiKey: KEY, profile: "azure" })
    // the fake as Azure answers: no api-version, a Bearer token
    const bare = await fetch(`${fake.url}/files`)
    expect([bare.status, await bare.json()]).toEqual([
      404,
      { error: { code: "404", message: "Resource not found" } },
    ])
    const bearer = await fetch(`${fake.url}/batches?api-version=2024-10-21`, {
      headers: { authorization: `Bearer ${KEY}` },
    })
    expect(bearer.status).toBe(401)
    const client = compatible.create(
      { batch: { profile: "azure" } },
      { ...ctx(fake.url), model: "my-deployment" },
    )
    const reply = await client.call({ prompt: "hello" }, never())
    expect(reply.text).toBe("echo: hello")
    await using tmp = await tmpdir()
    const batch = await submit(client.batch!, tmp, tagOf(3))
    const ended = await untilEnded(client.batch!, batch)
    expect([ended.status, ended.outcome]).toEqual(["completed", "completed"])
    const record = fake.batch.batches[0]!
    expect(record.data.endpoint).toBe("/chat/completions")
    expect(record.lines.map((l) => [l.body.model, l.input])).toEqual([
      ["my-deployment", "item 0"],
      ["my-deployment", "item 1"],
      ["my-deployment", "item 2"],
    ])
    expect(fake.invalid).toEqual([])
  })

  test("azure: a job that takes the api-version away gets Azure's own not_found, not retried", async () => {
    await using fake = await startFake({ apiKey: KEY, profile: "azure" })
    const client = compatible.create({ batch: { profile: "azure", query: {} } }, ctx(fake.url))
    const error = (await client.batch!.retrieve("batch_1", never()).catch((e: unknown) => e)) as ProviderError
    expect(error).toBeInstanceOf(ProviderError)
    expect([error.errorClass, error.retryable, error.status]).toEqual(["not_found", false, 404])
    expect(error.message).toContain("Resource not found")
  })

  test("together: the file goes up with purpose batch-api, the create's batch is read from under job, UPPERCASE statuses are read as OpenAI's words", async () => {
    await using fake = await startFake({ apiKey: KEY, profile: "together", batch: { processingMs: 50 } })
    const c = batchClient("together", fake.url)
    await using tmp = await tmpdir()
    const batch = await submit(c, tmp, tagOf(2))
    expect([batch.id, batch.status, batch.phase]).toEqual([
      fake.batch.batches[0]!.id,
      "validating",
      "validating",
    ])
    expect([...fake.files.values()][0]!.filename.endsWith(".jsonl")).toBe(true)
    const ended = await untilEnded(c, batch)
    expect([ended.status, ended.phase, ended.outcome]).toEqual(["completed", "ended", "completed"])
    // the service's own word, read as OpenAI's
    const raw = await fetch(`${fake.url}/batches/${batch.id}`, {
      headers: { authorization: `Bearer ${KEY}` },
    })
    expect(((await raw.json()) as { status: string }).status).toBe("COMPLETED")
    // the generic profile's purpose is refused by this service
    const generic = await submit(
      batchClient("generic", fake.url),
      tmp,
      tagOf(1, Date.now(), "r1-b0002"),
    ).catch((e: unknown) => e)
    expect(generic).toBeInstanceOf(ProviderError)
    expect((generic as ProviderError).message).toContain("This server takes 'batch-api' files only.")
  })

  test("groq: a seven-day window is asked for when the job sets it, and the service takes it", async () => {
    await using fake = await startFake({ apiKey: KEY, profile: "groq" })
    const client = compatible.create({ batch: { profile: "groq", completion_window: "7d" } }, ctx(fake.url))
    await using tmp = await tmpdir()
    const batch = await submit(client.batch!, tmp, tagOf(1))
    expect(batch.phase).toBe("validating")
    expect(fake.batch.creates.map((c) => c.status)).toEqual([200])
    expect(fake.url.endsWith("/openai/v1")).toBe(true)
    // the generic profile's find looks the batch up by its tag, on Groq as on OpenAI
    const found = await client.batch!.find(tagOf(1), never())
    expect("found" in found && found.found.id).toBe(batch.id)
  })

  test("a service that keeps no metadata: the batch made before a crash is found by its request file's name", async () => {
    await using fake = await startFake({ apiKey: KEY, profile: "together", metadata: false })
    const c = batchClient("together", fake.url)
    await using tmp = await tmpdir()
    const ours = await submit(c, tmp, tagOf(2))
    const theirs = await submit(c, tmp, tagOf(3, Date.now(), "r9-b0002"))
    expect(fake.batch.batches.map((b) => b.metadata)).toEqual([null, null])
    expect(await c.find(tagOf(2), never())).toEqual({ found: await c.retrieve(ours.id, never()) })
    expect(await c.find(tagOf(3, Date.now(), "r9-b0002"), never())).toEqual({
      found: await c.retrieve(theirs.id, never()),
    })
    expect(await c.find(tagOf(1, Date.now(), "r1-b9999"), never())).toEqual({ none: true })
    // a request file deleted since is not taken for ours, and does not fail the look-up
    fake.files.clear()
    expect(await c.find(tagOf(2), never())).toEqual({ none: true })
  })
})
