/**
 * OpenAI's embeddings wire format (`POST /v1/embeddings`, CreateEmbeddingRequest and CreateEmbeddingResponse in the
 * official OpenAPI spec), shared by the openai and openai-compatible providers and by the Batch API's embedding lines.
 * Many inputs go in one request; each answer's `data[].index` maps it back to its input.
 */
import type { Embedded, EmbedOptions, Reply } from "../../api/define.ts"
import { ProviderError } from "../../api/errors.ts"

/**
 * The request body. OpenAI is asked for `encoding_format: "base64"` (float32 little-endian bytes: a third of the
 * JSON's size, and no float parsing); a server that mimics it may not know that, so it is asked for floats.
 */
export function embedBody(
  model: string,
  inputs: string[],
  options: EmbedOptions,
  encoding: "base64" | "float",
): Record<string, unknown> {
  const out: Record<string, unknown> = { model, input: inputs, encoding_format: encoding }
  if (options.dimensions !== undefined) out.dimensions = options.dimensions
  return out
}

const bad = (status: number, message: string) =>
  new ProviderError("bad_response", `the embeddings response ${message}`, { retryable: true, status })

/** A vector as the answer gives it: base64 of float32 little-endian bytes, or an array of numbers. */
function vectorOf(status: number, embedding: unknown, at: number): Float32Array {
  if (typeof embedding === "string") {
    const bytes = Buffer.from(embedding, "base64")
    if (bytes.length % 4 !== 0 || bytes.length === 0)
      throw bad(
        status,
        `has a base64 embedding at data[${at}] that is not float32 bytes (${bytes.length} bytes)`,
      )
    const out = new Float32Array(bytes.length / 4)
    new Uint8Array(out.buffer).set(bytes)
    return out
  }
  if (Array.isArray(embedding) && embedding.length > 0 && embedding.every((x) => typeof x === "number"))
    return Float32Array.from(embedding as number[])
  throw bad(status, `has no embedding at data[${at}] (neither base64 text nor a list of numbers)`)
}

/**
 * Reads an embeddings answer to `count` inputs: its vectors put back in the inputs' order by `data[].index`, which
 * must be a permutation of 0…count-1, every vector of one length (`dimensions` when asked for), and its usage.
 */
export function embedReplyOf(status: number, body: unknown, count: number, options: EmbedOptions): Embedded {
  const parsed = (body ?? {}) as {
    data?: unknown
    usage?: { prompt_tokens?: unknown; total_tokens?: unknown }
  }
  if (!Array.isArray(parsed.data)) throw bad(status, "has no data list")
  if (parsed.data.length !== count)
    throw bad(status, `has ${parsed.data.length} embeddings for ${count} inputs`)
  const vectors: (Float32Array | undefined)[] = new Array(count)
  for (const [at, entry] of (parsed.data as { index?: unknown; embedding?: unknown }[]).entries()) {
    const index = entry?.index
    if (typeof index !== "number" || !Number.isInteger(index) || index < 0 || index >= count)
      throw bad(status, `has data[${at}].index ${JSON.stringify(index)}, not one of 0…${count - 1}`)
    if (vectors[index]) throw bad(status, `has index ${index} twice`)
    vectors[index] = vectorOf(status, entry.embedding, at)
  }
  const length = options.dimensions ?? vectors[0]!.length
  for (const [i, vector] of (vectors as Float32Array[]).entries())
    if (vector.length !== length)
      throw bad(
        status,
        `has a vector of ${vector.length} dimensions for input ${i}, where ${options.dimensions !== undefined ? "dimensions asks for" : "the first has"} ${length}`,
      )
  const usage = parsed.usage
  const prompt = typeof usage?.prompt_tokens === "number" ? usage.prompt_tokens : undefined
  const total = typeof usage?.total_tokens === "number" ? usage.total_tokens : undefined
  // embeddings bill their input alone: prompt_tokens (total_tokens, the same, when a server gives only that)
  const input = prompt ?? total
  if (input === undefined) throw bad(status, "has no usage (prompt_tokens)")
  return { vectors: vectors as Float32Array[], usage: { input_tokens: input, output_tokens: 0 } }
}

/**
 * An embedding batch line's answer (the Batch API's `response.body`, a CreateEmbeddingResponse to one input): its
 * vector and usage as a `Reply`, `text` empty.
 */
export function embedLineReplyOf(status: number, body: unknown): Reply {
  const got = embedReplyOf(status, body, 1, {})
  return { text: "", usage: got.usage, vector: got.vectors[0]! }
}
