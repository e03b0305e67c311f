/**
 * Embedding jobs, realtime (docs/EMBEDDINGS.md): claimed items cut into requests of many inputs each, by the
 * provider's count limit and an estimate of tokens; an input over the model's limit failed alone, never sent, never
 * truncated; each answer's vectors and usage handed back to their items. The runner (runner.ts) drives the calls.
 */
import type { Embedded } from "../../plugins/api/define.ts"
import type { Job } from "../job/job.ts"
import { tokens } from "../job/estimate.ts"
import * as template from "../job/template.ts"
import type { Claimed, Outcome } from "../ledger/types.ts"

/** What a job that names a provider without embeddings is told. */
export const EMBEDDERS =
  'kind = "embedding" runs with provider "openai", "openai-compatible" (vLLM, Ollama, TEI) or "mock", or a plugin\'s ' +
  "provider that has `embed`."

/** How much one embeddings request may carry. */
export interface EmbedLimits {
  /** Inputs per request (OpenAI: 2048, CreateEmbeddingRequest `input` maxItems). */
  inputs: number
  /** Estimated tokens summed over a request's inputs (OpenAI: 300,000, less a margin for the estimate's error). */
  tokens: number
  /** Estimated tokens of one input (OpenAI: 8192 for every embedding model); undefined when not known. */
  perInput: number | undefined
}

/**
 * OpenAI's limits, from its OpenAPI spec (CreateEmbeddingRequest.input): at most 2048 inputs, each at most 8192
 * tokens, "a maximum of 300,000 tokens summed across all inputs in a single request". Tokens here are estimated
 * (job/estimate.ts: UTF-8 bytes / 4), which runs up to a quarter low for non-Latin text: a request is cut at 80% of
 * the sum, so that an estimate that low still fits.
 */
export const OPENAI_LIMITS: EmbedLimits = { inputs: 2048, tokens: 240_000, perInput: 8192 }

/**
 * The limits of a job's provider: OpenAI's for openai, and for an openai-compatible server serving an OpenAI model
 * name; another server's per-input limit is its model's (vLLM, TEI and Ollama refuse or cut an input over it
 * themselves), so only the count and the sum hold there.
 */
export function limitsOf(job: Job): EmbedLimits {
  const openaiModel = /^text-embedding-/.test(job.provider.model ?? "")
  if (job.provider.name === "openai" || openaiModel) return OPENAI_LIMITS
  return { ...OPENAI_LIMITS, perInput: undefined }
}

/** Inputs of one request, with their items and estimated tokens. */
export interface Group {
  items: Claimed[]
  inputs: string[]
  estimates: number[]
  /** The estimates' sum: what the request counts against a tokens-per-minute limit. */
  tokens: number
}

/**
 * The text an item's row gives the input template, and its estimated tokens; or why it is never sent: the row cannot
 * fill the template, or the input is over the model's limit (spool never truncates). Realtime and batch mode alike.
 */
export function inputOf(
  input: template.Template,
  data: string,
  limits: Pick<EmbedLimits, "perInput">,
  model: string,
): { text: string; estimate: number } | { errorClass: "template" | "bad_request"; error: string } {
  const text = template.render(input, JSON.parse(data) as Record<string, unknown>)
  if (typeof text !== "string") {
    const fields = text.missing.map((f) => `"${f}"`).join(", ")
    return { errorClass: "template", error: `the row has no field ${fields} for the input's placeholders` }
  }
  const estimate = Math.max(1, tokens(text))
  const over = limits.perInput
  if (over !== undefined && estimate > over)
    return {
      errorClass: "bad_request",
      error:
        `the input is about ${estimate} tokens (estimated as UTF-8 bytes / 4), over ${model}'s limit of ` +
        `${over} tokens per input; it was not sent, and spool never truncates: shorten it and run it again`,
    }
  return { text, estimate }
}

/** A failed outcome of an item that is never sent. */
function refused(item: Claimed, errorClass: "template" | "bad_request", error: string): Outcome {
  const now = Date.now()
  return {
    item: item.id,
    attempt: item.attempt,
    to: "failed",
    label: "failed",
    errorClass,
    error,
    latencyMs: 0,
    endedAt: now,
  }
}

export class Embedder {
  readonly limits: EmbedLimits
  private readonly input: template.Template
  private readonly model: string

  constructor(
    private readonly job: Job,
    limits?: EmbedLimits,
  ) {
    this.limits = limits ?? limitsOf(job)
    this.input = template.parse(job.request.prompt)
    this.model = job.provider.model ?? job.provider.name
  }

  /**
   * Takes from the front of `queue` the next request's inputs: at most `most` of them (and the provider's count),
   * their estimated tokens under the provider's sum. An item whose row cannot fill the input, or whose input is over
   * the model's limit, is taken out and failed alone (`failed`); the others are sent.
   */
  take(queue: Claimed[], most: number): { group: Group | undefined; failed: Outcome[] } {
    const failed: Outcome[] = []
    const cap = Math.max(1, Math.min(most, this.limits.inputs))
    const group: Group = { items: [], inputs: [], estimates: [], tokens: 0 }
    while (queue.length > 0 && group.items.length < cap) {
      const item = queue[0]!
      const got = inputOf(this.input, item.data, this.limits, this.model)
      if ("error" in got) {
        queue.shift()
        failed.push(refused(item, got.errorClass, got.error))
        continue
      }
      const { text, estimate } = got
      if (group.items.length > 0 && group.tokens + estimate > this.limits.tokens) break
      queue.shift()
      group.items.push(item)
      group.inputs.push(text)
      group.estimates.push(estimate)
      group.tokens += estimate
    }
    return { group: group.items.length > 0 ? group : undefined, failed }
  }

  /**
   * The outcomes of a request's answer: each item completed with its vector and its share of the usage. An answer
   * that does not fit the request (a vector missing, or of another length than the others or than `dimensions`)
   * throws, and the runner fails the request as it would any bad response.
   */
  settle(group: Group, got: Embedded, ended: { latencyMs: number; endedAt: number }): Outcome[] {
    check(got.vectors, group.items.length, this.job.request.dimensions)
    const shares = split(got.usage.input_tokens, group.estimates)
    return group.items.map((item, i) => ({
      item: item.id,
      attempt: item.attempt,
      to: "completed" as const,
      label: "ok",
      status: 200,
      inputTokens: shares[i]!,
      outputTokens: 0,
      cachedTokens: 0,
      vector: got.vectors[i]!,
      ...ended,
    }))
  }
}

/** Throws unless there are `count` vectors, all of one length (`dimensions`, when the job asks for it). */
export function check(vectors: Float32Array[], count: number, dimensions: number | undefined): void {
  if (vectors.length !== count) throw new Error(`${vectors.length} vectors came back for ${count} inputs`)
  const length = dimensions ?? vectors[0]?.length ?? 0
  if (length === 0) throw new Error("the vectors are empty")
  for (const [i, v] of vectors.entries())
    if (v.length !== length)
      throw new Error(
        `vector ${i} has ${v.length} dimensions, where ${dimensions ? "dimensions is" : "the first has"} ${length}`,
      )
}

/**
 * A request's tokens shared among its items in proportion to their estimates, as whole numbers that sum to `total`
 * exactly: each item its share rounded down, the last item the remainder.
 */
export function split(total: number, estimates: number[]): number[] {
  const n = estimates.length
  if (n === 0) return []
  const sum = estimates.reduce((a, b) => a + b, 0)
  const out = new Array<number>(n)
  let given = 0
  for (let i = 0; i < n - 1; i++) {
    const share = sum > 0 ? Math.floor((total * estimates[i]!) / sum) : Math.floor(total / n)
    out[i] = share
    given += share
  }
  out[n - 1] = total - given
  return out
}
