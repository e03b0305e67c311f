/**
 * The kind of request a job sends (docs/EMBEDDINGS.md): `chat` (a prompt, answered with text) or `embedding` (an
 * input, answered with a vector). The keys each kind takes, and the problems of a job that mixes them.
 */
import * as v from "valibot"
import type { ProviderClient } from "../../plugins/api/define.ts"

export type RequestKind = "chat" | "embedding"

/**
 * `[request]`'s keys for the kind (job.ts spreads them into its table). `kind` is left undefined for chat, so that
 * jobs stored before it existed read the same.
 */
export const KIND_ENTRIES = {
  kind: v.optional(
    v.picklist(
      ["chat", "embedding"],
      'must be "chat" (a prompt answered with text) or "embedding" (a vector)',
    ),
  ),
  /** Embeddings: the text to embed, a template with {{field}} placeholders like `prompt`. */
  input: v.optional(
    v.pipe(
      v.string("expected a string (the text to embed, with {{field}} placeholders)"),
      v.minLength(1, "must not be empty"),
    ),
  ),
  /** Embeddings: the vector's length, for models that can shorten theirs (text-embedding-3-*). */
  dimensions: v.optional(
    v.pipe(
      v.number("expected a number"),
      v.integer("expected a whole number"),
      v.minValue(1, "must be at least 1"),
      v.maxValue(65_536, "must be at most 65536"),
    ),
  ),
}

/** The chat keys an embedding job refuses, by their place in the job. */
const CHAT_ONLY = ["request.prompt", "request.system", "request.max_tokens", "request.temperature", "output"]

type Table = Record<string, unknown>
const isTable = (x: unknown): x is Table => typeof x === "object" && x !== null && !Array.isArray(x)

/**
 * What the kind asks of the raw job: a chat job needs a prompt and takes no input or dimensions; an embedding job
 * needs an input and takes none of the chat keys, each named.
 */
export function kindProblems(raw: Table): string[] {
  const request = isTable(raw.request) ? raw.request : {}
  const embedding = request.kind === "embedding"
  const has = (key: string) => {
    const [at, leaf] = key.split(".") as [string, string | undefined]
    return leaf === undefined ? raw[at] !== undefined : request[leaf] !== undefined
  }
  if (!embedding) {
    const out: string[] = []
    if (request.prompt === undefined) out.push("request.prompt: missing (required)")
    for (const key of ["request.input", "request.dimensions"])
      if (has(key)) out.push(`${key}: only for embedding jobs (set [request] kind = "embedding")`)
    return out
  }
  const out = CHAT_ONLY.filter(has).map(
    (key) => `${key}: not for embedding jobs (kind = "embedding" sends only input and dimensions); remove it`,
  )
  const provider = isTable(raw.provider) ? raw.provider : {}
  const endpoint = isTable(provider.options) ? provider.options.endpoint : undefined
  if (provider.name === "openai" && (endpoint === "chat" || endpoint === "responses"))
    out.push(
      `provider.options.endpoint: "${endpoint}" is not for embedding jobs, which send /v1/embeddings; remove it (or set "embeddings")`,
    )
  if (request.input === undefined)
    out.unshift(
      'request.input: missing (required) for kind = "embedding": the text to embed, e.g. "{{text}}"',
    )
  return out
}

/**
 * Why a batch-mode job cannot run on the client its provider made, or undefined when it can: an embedding job needs
 * a batch client with `embedLine` (docs/EMBEDDINGS.md, "Batch mode").
 */
export function batchRefusal(
  provider: string,
  kind: RequestKind | undefined,
  client: ProviderClient,
): { problem: string; hint: string } | undefined {
  if (!client.batch)
    return {
      problem: `provider.mode: provider "${provider}" has no batch mode`,
      hint: 'Batch mode needs a provider with a Batch API: openai or anthropic. Use mode = "realtime" with this one.',
    }
  if (kind === "embedding" && !client.batch.embedLine)
    return {
      problem: `provider.mode: provider "${provider}"'s Batch API does not run embedding jobs`,
      hint: 'kind = "embedding" in batch mode runs with provider "openai"; use mode = "realtime" with this one.',
    }
  return undefined
}
