import { describe, expect, test } from "bun:test"
import openai from "../../../../src/plugins/providers/openai/openai.ts"
import compatible from "../../../../src/plugins/providers/openai-compatible/openai-compatible.ts"
import mock, { mockVector } from "../../../../src/plugins/providers/mock/mock.ts"
import { embedBody } from "../../../../src/plugins/providers/openai/embed.ts"
import { ProviderError } from "../../../../src/plugins/api/errors.ts"
import { EMBEDDINGS, fakeVector, startFake } from "../../../lib/fake-openai.ts"
import { SKIP_SPEC_CHECKS, validateSchema } from "../../../lib/spec.ts"

const KEY = "sk-test-embed-provider-0123"
const signal = () => new AbortController().signal
const context = (baseUrl: string, model = "text-embedding-3-small") => ({
  model,
  baseUrl,
  apiKey: KEY,
  timeoutMs: 10_000,
})

describe("embeddings through the openai provider, against the fake", () => {
  test("many inputs in one request, asked as base64, read back as float32 in the inputs' order", async () => {
    await using fake = await startFake({ apiKey: KEY })
    const client = openai.create({ endpoint: "chat" }, context(fake.url))
    const texts = ["alpha", "beta gamma", "delta"]
    const got = await client.embed!(texts, { dimensions: 12 }, signal())
    expect(got.vectors.map((v) => Array.from(v))).toEqual(texts.map((t) => Array.from(fakeVector(t, 12))))
    expect(got.usage).toEqual({ input_tokens: 2 + 3 + 2, output_tokens: 0 })
    expect(fake.requests).toBe(1)
    expect(fake.invalid).toEqual([])
    expect([...fake.paid.entries()]).toEqual(texts.map((t) => [t, 1]))
  })

  test("a 429 and a 500 are retryable ProviderErrors, as a chat call's", async () => {
    await using fake = await startFake({ apiKey: KEY })
    fake.script.set("a", ["429", "500", "ok"])
    const client = openai.create({ endpoint: "chat" }, context(fake.url))
    const classes: string[] = []
    for (let i = 0; i < 2; i++) {
      try {
        await client.embed!(["a", "b"], {}, signal())
      } catch (e) {
        expect(e).toBeInstanceOf(ProviderError)
        expect((e as ProviderError).retryable).toBe(true)
        classes.push((e as ProviderError).errorClass)
      }
    }
    expect(classes).toEqual(["rate_limit", "server"])
    expect((await client.embed!(["a", "b"], {}, signal())).vectors.length).toBe(2)
    expect(fake.paid.get("a")).toBe(1)
  })

  test("openai-compatible asks for floats at base_url + /embeddings", async () => {
    await using fake = await startFake({ apiKey: KEY })
    const client = compatible.create({}, context(fake.url, "bge-small"))
    const got = await client.embed!(["x", "y"], {}, signal())
    expect(got.vectors.map((v) => Array.from(v))).toEqual([
      Array.from(fakeVector("x", 16)),
      Array.from(fakeVector("y", 16)),
    ])
    expect(fake.invalid).toEqual([])
  })

  test("the mock embeds deterministically: 8 dimensions unless asked", async () => {
    const client = mock.create({ latency_ms: 0, reply: "" }, context("", "m"))
    const a = await client.embed!(["same", "other"], {}, signal())
    const b = await client.embed!(["same"], { dimensions: 4 }, signal())
    expect(a.vectors[0]!.length).toBe(8)
    expect(Array.from(a.vectors[0]!)).toEqual(Array.from(mockVector("same", 8)))
    expect(Array.from(a.vectors[0]!)).not.toEqual(Array.from(a.vectors[1]!))
    expect(b.vectors[0]!.length).toBe(4)
  })
})

describe.skipIf(SKIP_SPEC_CHECKS)("embeddings against the official OpenAI spec", () => {
  test("the request bodies the providers send are valid CreateEmbeddingRequests", () => {
    for (const body of [
      embedBody("text-embedding-3-small", ["a", "b"], {}, "base64"),
      embedBody("text-embedding-3-large", ["a"], { dimensions: 256 }, "float"),
    ])
      expect(validateSchema("CreateEmbeddingRequest", body)).toEqual([])
    // the check can fail
    expect(validateSchema("CreateEmbeddingRequest", { model: "m", input: ["a"], dimensions: 0 })).not.toEqual(
      [],
    )
    expect(
      validateSchema("CreateEmbeddingRequest", {
        model: "m",
        input: Array.from({ length: 2049 }, () => "a"),
      }),
    ).not.toEqual([])
  })

  test("the fake's answers (floats) are valid CreateEmbeddingResponses; the fake checks each request", async () => {
    const body = {
      model: "text-embedding-3-small",
      input: ["a", "b"],
      encoding_format: "float",
      dimensions: 3,
    }
    expect(validateSchema("CreateEmbeddingResponse", EMBEDDINGS.answer(body, "", 1))).toEqual([])
    await using fake = await startFake({ apiKey: KEY })
    await fetch(`${fake.url}/embeddings`, {
      method: "POST",
      headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "m", input: ["a"], encoding_format: "hex" }),
    })
    expect(fake.invalid.length).toBe(1)
  })
})
