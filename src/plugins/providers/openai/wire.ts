/**
 * OpenAI's wire format, shared by the realtime provider (openai.ts), its Batch API (batch.ts) and the
 * openai-compatible provider: chat completions and Responses API bodies for a neutral request, the readers of their
 * answers, and the classification of an HTTP error. The hot call is a direct fetch (`post`) of the official format.
 */
import type { ProviderContext, Reply, Request } from "../../api/define.ts"
import { firstAnswers, type FirstAnswers } from "../../api/baseurl.ts"
import { ProviderError } from "../../api/errors.ts"
import { byStatus, retryAfterMs } from "../../api/http.ts"

export const DEFAULT_BASE_URL = "https://api.openai.com/v1"

/** The base URL a client uses: the job's, else OpenAI's, without a trailing slash. */
export function baseOf(context: ProviderContext): string {
  return (context.baseUrl ?? DEFAULT_BASE_URL).replace(/\/+$/, "")
}

const isRecord = (x: unknown): x is Record<string, unknown> =>
  typeof x === "object" && x !== null && !Array.isArray(x)

/**
 * Whether a 401 or 404 body is one the OpenAI API documents: an ErrorResponse (`{error: {message, type, param,
 * code}}`), and for a 401 one of the causes its error-code guide lists (an incorrect key, invalid authentication, no
 * organization, an IP not allowed). "You didn't provide an API key" is not among them: this provider always sends one.
 */
export function documented(status: 401 | 404, body: unknown): boolean {
  const error = isRecord(body) && isRecord(body.error) ? body.error : undefined
  if (typeof error?.message !== "string" || typeof error.type !== "string") return false
  if (status === 404) return true
  return (
    error.code === "invalid_api_key" ||
    /incorrect api key|invalid authentication|member of an organization|not authorized/i.test(error.message)
  )
}

/** The first-answer check (api/baseurl.ts) of one openai client, realtime and batch. */
export function first(context: ProviderContext): FirstAnswers {
  return firstAnswers(
    baseOf(context),
    documented,
    "The OpenAI API's paths (/chat/completions, /responses, /files, /batches) go under base_url, which ends in " +
      `/v1: ${DEFAULT_BASE_URL} by default.`,
  )
}

/**
 * What OpenAI's own API is sent beyond a mimic's body: `prompt_cache_key` when the request has a shared prefix
 * (OpenAI caches prefixes by itself; the key routes the requests that share one together), and `service_tier: "flex"`
 * for a flex call (realtime only: a batch line never carries it).
 */
export function extras(request: Request, tier?: "flex"): Record<string, unknown> {
  return {
    ...(request.cache ? { prompt_cache_key: request.cache.key } : {}),
    ...(tier === "flex" ? { service_tier: "flex" } : {}),
  }
}

/**
 * The chat completions body for a neutral request; `extra` (OpenAI's own fields: `extras`), then `params`, are laid
 * over it as they are. `limit` names the output-limit field: OpenAI's current one by default; servers that mimic the
 * older API read `max_tokens`.
 */
export function body(
  model: string,
  request: Request,
  limit: "max_completion_tokens" | "max_tokens" = "max_completion_tokens",
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  const messages: { role: string; content: string }[] = []
  if (request.system) messages.push({ role: "system", content: request.system })
  messages.push({ role: "user", content: request.prompt })
  const out: Record<string, unknown> = { model, messages }
  if (request.max_tokens !== undefined) out[limit] = request.max_tokens
  if (request.temperature !== undefined) out.temperature = request.temperature
  if (request.schema)
    out.response_format = {
      type: "json_schema",
      json_schema: { name: request.schema.name, strict: true, schema: request.schema.schema },
    }
  return { ...out, ...extra, ...request.params }
}

/** How a chat completion ended, in the neutral terms of `Reply.finish`; nothing for a whole answer. */
export function finishOf(reason: unknown): Pick<Reply, "finish"> {
  if (reason === "length") return { finish: "length" }
  if (reason === "content_filter") return { finish: "refusal" }
  return {}
}

/** The Responses API refuses a `max_output_tokens` below this; a smaller limit is raised to it. */
export const MIN_OUTPUT_TOKENS = 16

/**
 * The Responses API body for a neutral request: the prompt as the `input` string, the system prompt as
 * `instructions`; `extra` (`extras`), then `params`, are laid over it as they are.
 */
export function responsesBody(
  model: string,
  request: Request,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  const out: Record<string, unknown> = { model, input: request.prompt }
  if (request.system) out.instructions = request.system
  if (request.max_tokens !== undefined)
    out.max_output_tokens = Math.max(MIN_OUTPUT_TOKENS, request.max_tokens)
  if (request.temperature !== undefined) out.temperature = request.temperature
  if (request.schema)
    out.text = {
      format: { type: "json_schema", name: request.schema.name, schema: request.schema.schema, strict: true },
    }
  return { ...out, ...extra, ...request.params }
}

type ResponseObject = {
  status?: unknown
  incomplete_details?: { reason?: unknown } | null
  output?: unknown
  usage?: {
    input_tokens?: number
    output_tokens?: number
    input_tokens_details?: { cached_tokens?: number } | null
  } | null
}

/** Reads a Responses API answer: the `output_text` parts of its `message` items, joined; or says why it has none. */
export function responsesReply(status: number, text: string): Reply {
  return responsesReplyOf(status, json(status, text))
}

/** `responsesReply` of a body already parsed (a batch output line's `response.body`). */
export function responsesReplyOf(status: number, body: unknown): Reply {
  const parsed = (body ?? {}) as ResponseObject
  const parts: string[] = []
  const refusals: string[] = []
  for (const item of Array.isArray(parsed.output) ? parsed.output : []) {
    const message = item as { type?: unknown; content?: unknown } | null
    if (message?.type !== "message" || !Array.isArray(message.content)) continue
    for (const part of message.content as ({ type?: unknown; text?: unknown; refusal?: unknown } | null)[]) {
      if (part?.type === "output_text" && typeof part.text === "string") parts.push(part.text)
      if (part?.type === "refusal" && typeof part.refusal === "string") refusals.push(part.refusal)
    }
  }
  const usage = {
    input_tokens: parsed.usage?.input_tokens ?? 0,
    output_tokens: parsed.usage?.output_tokens ?? 0,
    cached_input_tokens: parsed.usage?.input_tokens_details?.cached_tokens || undefined,
  }
  if (parts.length === 0 && refusals.length > 0) return { text: refusals.join(""), usage, finish: "refusal" }
  const content = parts.join("")
  if (parsed.status === "incomplete" && content === "") {
    const reason = parsed.incomplete_details?.reason
    throw new ProviderError(
      "bad_response",
      `the response is incomplete (${typeof reason === "string" ? reason : "no reason given"}) and has no text`,
      { retryable: false, status },
    )
  }
  if (parts.length === 0) {
    throw new ProviderError("bad_response", "the response has no output_text", { retryable: true, status })
  }
  // an incomplete response with text is returned marked, so the runner never takes it as complete
  const reason = parsed.status === "incomplete" ? parsed.incomplete_details?.reason : undefined
  return {
    text: content,
    usage,
    ...(reason === "max_output_tokens" ? { finish: "length" as const } : {}),
    ...(reason === "content_filter" ? { finish: "refusal" as const } : {}),
  }
}

type Completion = {
  choices?: { message?: { content?: unknown; refusal?: unknown }; finish_reason?: unknown }[]
  usage?: {
    prompt_tokens?: number
    completion_tokens?: number
    prompt_tokens_details?: { cached_tokens?: number } | null
  }
}

/** What an error body says of itself; OpenAI sends `{ error: { message, type, code } }`. */
export type ErrorDetail = {
  message?: string | undefined
  code?: string | null | undefined
  type?: string | undefined
}

function detailOf(text: string): ErrorDetail | undefined {
  try {
    return (JSON.parse(text) as { error?: ErrorDetail }).error
  } catch {
    return undefined
  }
}

/**
 * Whether an error says the flex tier has no capacity just now: Flex processing's 429 "Resource Unavailable", which
 * its guide tells apart from a rate limit (and does not bill). Read from the code, the type or the message, as the
 * guide names no code.
 */
export function unavailable(detail: ErrorDetail | undefined): boolean {
  if (detail?.code === "rate_limit_exceeded" || detail?.code === "insufficient_quota") return false
  const said = `${detail?.code ?? ""} ${detail?.type ?? ""} ${detail?.message ?? ""}`
  return /resources?[ _]unavailable|resources? (?:are |is )?(?:currently )?unavailable/i.test(said)
}

/**
 * Maps an HTTP error response to the project's error, once, here. `detail` is what the body says; a provider
 * that reads other error shapes passes its own reading. `tier` is the call's: a flex call's 429 that says the tier
 * has no capacity is "unavailable" (retried, with the wait asked for, but no sign of a rate limit).
 */
export function classify(
  status: number,
  text: string,
  headers: Headers,
  detail: ErrorDetail | undefined = detailOf(text),
  tier?: "flex",
): ProviderError {
  const message = `HTTP ${status}: ${detail?.message ?? text.slice(0, 200)}`
  const code = detail?.code ?? detail?.type ?? ""
  if (status === 429 && (code === "insufficient_quota" || detail?.type === "insufficient_quota")) {
    return new ProviderError("quota", message, { retryable: false, pause: true, status })
  }
  if (status === 429 && tier === "flex" && unavailable(detail)) {
    return new ProviderError("unavailable", message, {
      retryable: true,
      retryAfterMs: retryAfterMs(headers),
      status,
    })
  }
  return byStatus(status, message, retryAfterMs(headers))
}

/** Turns a fetch failure into a ProviderError; an abort by the caller is rethrown as it is. */
export function failure(cause: unknown, signal: AbortSignal, timeoutMs: number): unknown {
  if (signal.aborted) return cause
  const name = (cause as Error)?.name
  if (name === "TimeoutError" || name === "AbortError") {
    return new ProviderError("timeout", `no answer within ${timeoutMs / 1000} s`, { retryable: true, cause })
  }
  return new ProviderError("network", `connection failed: ${(cause as Error)?.message ?? String(cause)}`, {
    retryable: true,
    cause,
  })
}

/** One POST of a JSON body: the answer and its text, or a ProviderError when no answer came. */
export async function post(
  url: string,
  headers: Record<string, string>,
  payload: unknown,
  signal: AbortSignal,
  timeoutMs: number,
): Promise<{ response: Response; text: string }> {
  const timeout = AbortSignal.timeout(timeoutMs)
  try {
    const response = await fetch(url, {
      method: "POST",
      headers,
      body: JSON.stringify(payload),
      signal: AbortSignal.any([signal, timeout]),
    })
    return { response, text: await response.text() }
  } catch (cause) {
    throw failure(cause, signal, timeoutMs)
  }
}

/** The JSON of a successful answer's body, or a retryable bad_response when it is not JSON. */
export function json(status: number, text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    throw new ProviderError(
      "bad_response",
      `HTTP ${status} with a body that is not JSON: ${text.slice(0, 120)}`,
      {
        retryable: true,
        status,
      },
    )
  }
}

/** Reads a completion, or says why the body is not one. */
export function reply(status: number, text: string): Reply {
  return replyOf(status, json(status, text))
}

/** `reply` of a body already parsed (a batch output line's `response.body`). */
export function replyOf(status: number, body: unknown): Reply {
  const parsed = (body ?? {}) as Completion
  const choice = parsed.choices?.[0]
  const content = choice?.message?.content
  const refusal = choice?.message?.refusal
  const usage = {
    input_tokens: parsed.usage?.prompt_tokens ?? 0,
    output_tokens: parsed.usage?.completion_tokens ?? 0,
    cached_input_tokens: parsed.usage?.prompt_tokens_details?.cached_tokens || undefined,
  }
  // a refusal is an answer of its own kind: the runner records it as such (and never as a completed item)
  if (typeof refusal === "string" && refusal !== "") return { text: refusal, usage, finish: "refusal" }
  if (typeof content !== "string") {
    throw new ProviderError("bad_response", "the completion has no message content", {
      retryable: true,
      status,
    })
  }
  return { text: content, usage, ...finishOf(choice?.finish_reason) }
}
