/**
 * The openai batch client made for an embedding job (ProviderContext.kind = "embedding"): its `/v1/embeddings` lines,
 * the batch created for that endpoint, and result lines read back as vectors; against the fake Batch API, which
 * checks each request line against CreateEmbeddingRequest and each answer against CreateEmbeddingResponse.
 */
import { describe, expect, test } from "bun:test"
import openai from "../../../../src/plugins/providers/openai/openai.ts"
import type { BatchClient } from "../../../../src/plugins/api/define.ts"
import { JobError } from "../../../../src/plugins/api/errors.ts"
import { EMBEDDINGS, embeddingAnswerErrors, fakeVector, startFake } from "../../../lib/fake-openai.ts"
import { SKIP_SPEC_CHECKS, validateSchema } from "../../../lib/spec.ts"
import { tmpdir } from "../../../lib/tmp.ts"
import { downloadOutput, never, TAG, tokens, untilEnded } from "../../../lib/batch-helpers.ts"

const MODEL = "text-embedding-3-small"
const KEY = "sk-test-0123456789"

function embedClient(baseUrl = "http://127.0.0.1:9", endpoint?: string): BatchClient {
  const options = endpoint === undefined ? {} : { endpoint }
  const client = openai.create({ endpoint: "chat", ...options } as never, {
    model: MODEL,
    baseUrl,
    apiKey: KEY,
    timeoutMs: 5000,
    kind: "embedding",
  })
  return client.batch!
}

describe("the openai batch client for embedding jobs", () => {
  test("writes one input a line, base64, with dimensions when asked: a CreateEmbeddingRequest body", () => {
    const c = embedClient()
    const line = c.embedLine!("t_1", "hello", { dimensions: 8 })
    const parsed = JSON.parse(line) as Record<string, unknown> & { body: Record<string, unknown> }
    expect(parsed).toEqual({
      custom_id: "t_1",
      method: "POST",
      url: "/v1/embeddings",
      body: { model: MODEL, input: ["hello"], encoding_format: "base64", dimensions: 8 },
    })
    expect(validateSchema("CreateEmbeddingRequest", parsed.body)).toEqual([])
    expect(JSON.parse(c.embedLine!("t_2", "x", {})).body).toEqual({
      model: MODEL,
      input: ["x"],
      encoding_format: "base64",
    })
    // a batch holds one endpoint: this client writes no chat line
    expect(() => c.line("t_3", { prompt: "p" })).toThrow("this batch client was made for embeddings")
  })

  test("a chat job's batch client has no embedLine; the endpoint option is held to the job's kind", () => {
    const chat = openai.create(
      { endpoint: "chat" },
      { model: "gpt-4.1-mini", baseUrl: undefined, apiKey: KEY, timeoutMs: 1 },
    )
    expect(chat.batch?.embedLine).toBeUndefined()
    expect(embedClient(undefined, "embeddings").embedLine).toBeDefined()
    expect(embedClient(undefined, "/v1/embeddings").embedLine).toBeDefined()
    const refused = (make: () => unknown) => {
      try {
        make()
      } catch (err) {
        expect(err).toBeInstanceOf(JobError)
        return (err as JobError).problems
      }
      throw new Error("expected a JobError")
    }
    expect(refused(() => embedClient(undefined, "responses"))).toEqual([
      'provider.options.endpoint: "responses" is not for embedding jobs',
    ])
    expect(
      refused(() =>
        openai.create(
          { endpoint: "embeddings" },
          { model: "m", baseUrl: undefined, apiKey: KEY, timeoutMs: 1 },
        ),
      ),
    ).toEqual(['provider.options.endpoint: "embeddings" is not for chat jobs'])
  })

  test("creates a /v1/embeddings batch the fake runs; each result line reads back as its input's exact vector and usage", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    const c = embedClient(fake.url)
    const texts = Array.from({ length: 20 }, (_, k) => `passage ${k} ${"ab ".repeat(k)}`)
    const lines = texts.map((t, k) => c.embedLine!(`${TAG}_${k}`, t, { dimensions: 12 }))
    await Bun.write(tmp.join("requests.jsonl"), lines.join("\n") + "\n")
    const created = await c.create(
      tmp.join("requests.jsonl"),
      { tag: TAG, run: "r", count: 20, since: 0 },
      never(),
    )
    expect(fake.batch.batches[0]!.data.endpoint).toBe("/v1/embeddings")
    const ended = await untilEnded(c, created)
    expect([ended.outcome, ended.counts]).toEqual(["completed", { total: 20, done: 20, failed: 0 }])
    const read = await downloadOutput(c, ended, tmp)
    expect(read.length).toBe(20)
    for (const line of read) {
      const k = Number(line.customId.slice(TAG.length + 1))
      expect(line.error).toBeUndefined()
      expect(line.reply!.text).toBe("")
      expect(line.reply!.usage).toEqual({ input_tokens: tokens(texts[k]!), output_tokens: 0 })
      expect(Array.from(line.reply!.vector!)).toEqual(Array.from(fakeVector(texts[k]!, 12)))
    }
    for (const t of texts) expect(fake.paid.get(t)).toBe(1)
    expect(fake.invalid).toEqual([])
  })

  test("a line whose answer is not an embedding is a bad response of that line, not a broken file", () => {
    const c = embedClient()
    const line = (body: unknown) =>
      JSON.stringify({ id: "x", custom_id: `${TAG}_1`, response: { status_code: 200, body }, error: null })
    const bad = c.parse(line({ object: "list", data: [], usage: { prompt_tokens: 1, total_tokens: 1 } }))
    expect([bad.customId, bad.error?.errorClass, bad.error?.message]).toEqual([
      `${TAG}_1`,
      "bad_response",
      "the embeddings response has 0 embeddings for 1 inputs",
    ])
    const good = c.parse(
      line({
        object: "list",
        model: MODEL,
        data: [{ object: "embedding", index: 0, embedding: [0.5, -0.25] }],
        usage: { prompt_tokens: 3, total_tokens: 3 },
      }),
    )
    expect(Array.from(good.reply!.vector!)).toEqual([0.5, -0.25])
    expect(good.reply!.usage).toEqual({ input_tokens: 3, output_tokens: 0 })
  })
})

// the fake checks lines and answers against the official spec: without it (a user's clone) these skip, said once
describe.skipIf(SKIP_SPEC_CHECKS)("the fake Batch API's embedding batches", () => {
  test("a request line that breaks CreateEmbeddingRequest is recorded with its line number", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    const c = embedClient(fake.url)
    const good = c.embedLine!(`${TAG}_0`, "fine", {})
    const wrong = JSON.stringify({
      custom_id: `${TAG}_1`,
      method: "POST",
      url: "/v1/embeddings",
      body: { model: MODEL, input: ["x"], encoding_format: "hex" },
    })
    await Bun.write(tmp.join("requests.jsonl"), `${good}\n${wrong}\n`)
    await c.create(tmp.join("requests.jsonl"), { tag: TAG, run: "r", count: 2, since: 0 }, never())
    expect(fake.invalid.length).toBe(1)
    expect(fake.invalid[0]!.errors[0]).toStartWith("line 2: body")
  })
  test("each answer it writes is checked against CreateEmbeddingResponse, a base64 vector decoded", () => {
    const body = { model: MODEL, input: ["a", "b"], encoding_format: "base64", dimensions: 4 }
    const answer = EMBEDDINGS.answer(body, "", 1)
    expect(typeof (answer.data as { embedding: unknown }[])[0]!.embedding).toBe("string")
    expect(embeddingAnswerErrors(answer)).toEqual([])
    expect(embeddingAnswerErrors({ ...answer, usage: { prompt_tokens: 2 } }).length).toBeGreaterThan(0)
    expect(embeddingAnswerErrors({ ...answer, object: "embedding" }).length).toBeGreaterThan(0)
  })
})
