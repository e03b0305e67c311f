/**
 * Anthropic's Messages wire format, shared by the realtime provider (anthropic.ts) and the Message Batches API
 * (batch.ts): the body for a neutral request, the reader of a Message, the classification of an HTTP error, and the
 * official SDK client one run uses. The SDK's errors are mapped here (`failure`) and never leave this folder.
 */
import Anthropic, {
  AnthropicError,
  APIConnectionError,
  APIConnectionTimeoutError,
  APIError,
  APIUserAbortError,
} from "@anthropic-ai/sdk"
import type { Message, MessageCreateParamsNonStreaming } from "@anthropic-ai/sdk/resources/messages"
import type { PromptCache, ProviderContext, Reply, Request } from "../../api/define.ts"
import { firstAnswers, shown, type FirstAnswers } from "../../api/baseurl.ts"
import { ProviderError } from "../../api/errors.ts"
import { byStatus, retryAfterMs, unanswered, type SdkErrors } from "../../api/http.ts"

/**
 * The API requires `max_tokens`; a job that gives none gets this. 4096 is the largest output that every model
 * in the API's list accepts (claude-3-haiku-20240307 stops there), so no job is refused for want of a value,
 * whatever its model. A job that wants longer answers sets `max_tokens`.
 */
export const DEFAULT_MAX_TOKENS = 4096

/**
 * The `cache_control` of a breakpoint: the 5-minute cache is the API's default and goes without `ttl`. The 1-hour
 * one is part of the Messages API (CacheControlEphemeral's `ttl` enum): it needs no beta header.
 */
const breakpointOf = (ttl: PromptCache["ttl"]) =>
  ttl === "1h" ? { type: "ephemeral", ttl: "1h" } : { type: "ephemeral" }

/**
 * Where `cache_control` goes (README, "Paying less"): on the system prompt when the prefix ends with it, else on a
 * first text block of the user message that holds the prompt's shared part (the rest follows in a second block).
 * The API caches tools, then system, then messages up to the block that carries the breakpoint.
 */
function marked(request: Request): { system?: unknown; content: unknown } {
  const cache = request.cache
  if (!cache?.mark) return { system: request.system, content: request.prompt }
  const cache_control = breakpointOf(cache.ttl)
  const cut = Math.min(Math.max(0, cache.prefix), request.prompt.length)
  if (cut === 0) {
    // nothing of the prompt is shared: the prefix is the system prompt, or (without one) there is none to mark
    if (!request.system) return { content: request.prompt }
    return { system: [{ type: "text", text: request.system, cache_control }], content: request.prompt }
  }
  const rest = request.prompt.slice(cut)
  const shared = { type: "text", text: request.prompt.slice(0, cut), cache_control }
  return { system: request.system, content: rest ? [shared, { type: "text", text: rest }] : [shared] }
}

/**
 * The Messages body for a neutral request; `params` are laid over it as they are. With `request.cache` marked, the
 * end of the shared prefix carries a `cache_control` breakpoint (`marked`); without it, the prompt and the system
 * prompt are plain strings.
 */
export function body(model: string, request: Request): MessageCreateParamsNonStreaming {
  const { system, content } = marked(request)
  const out: Record<string, unknown> = {
    model,
    max_tokens: request.max_tokens ?? DEFAULT_MAX_TOKENS,
    messages: [{ role: "user", content }],
  }
  if (system) out.system = system
  if (request.temperature !== undefined) out.temperature = request.temperature
  if (request.schema) {
    // structured output as a forced tool call: the one tool's input is the answer, shaped by the job's schema.
    // (The pinned SDK's Messages API has tools and tool_choice; a forced tool works on every current model.)
    out.tools = [
      {
        name: request.schema.name,
        description: "Give the answer by calling this tool; its input is the whole answer.",
        input_schema: request.schema.schema,
      },
    ]
    out.tool_choice = { type: "tool", name: request.schema.name }
  }
  return { ...out, ...request.params } as unknown as MessageCreateParamsNonStreaming
}

/**
 * Anthropic's usage in spool's terms: its `input_tokens` leaves out the tokens read from and written to the prompt
 * cache, so they are added back (all input is input); the ones read from the cache are the cached input, the ones
 * written to it the cache writes.
 */
function usageOf(usage: Message["usage"] | undefined): Reply["usage"] {
  const read = usage?.cache_read_input_tokens ?? 0
  const written = usage?.cache_creation_input_tokens ?? 0
  return {
    input_tokens: (usage?.input_tokens ?? 0) + read + written,
    output_tokens: usage?.output_tokens ?? 0,
    cached_input_tokens: read || undefined,
    cache_write_tokens: written || undefined,
  }
}

/** How a Message ended, in the neutral terms of `Reply.finish`. */
function finishOf(stop: string | null | undefined): Reply["finish"] {
  if (stop === "max_tokens") return "length"
  if (stop === "refusal") return "refusal"
  return "stop"
}

/** Error codes (error.details.error_code) that say the organization may not spend more: no item can pass. */
const SPENT = new Set([
  "contract_spend_limit_reached",
  "enforced_spend_limit_reached",
  "linked_organization_billing_unavailable",
  "linked_organization_spend_limit_reached",
])

/**
 * The API reports an empty credit balance as a plain 400 invalid_request_error ("Your credit balance is too low
 * to access the Anthropic API. Please go to Plans & Billing…") and reached usage limits likewise ("You have
 * reached your specified API usage limits…"), with no code: only the wording tells them from a bad request.
 * The words are narrow on purpose: a 400 about, say, the `billing_policy` parameter is the request's fault.
 */
const BILLING = /credit balance|plans & billing|api usage limits|spend limit/i

type ErrorBody = { error?: { type?: string; message?: string; details?: { error_code?: unknown } } }

/**
 * Maps an HTTP error response to the project's error, once, here. `detail` is the parsed error body
 * (`{type: "error", error: {type, message}}`) or, when the body was not JSON, its text.
 */
export function classify(status: number, detail: unknown, headers: Headers): ProviderError {
  const error = typeof detail === "object" && detail !== null ? (detail as ErrorBody).error : undefined
  const text = error?.message ?? (typeof detail === "string" ? detail.slice(0, 200) : "")
  const message = `HTTP ${status}: ${text || "no body"}`
  const type = error?.type ?? ""
  const code = typeof error?.details?.error_code === "string" ? error.details.error_code : ""
  if (status === 402 || type === "billing_error" || SPENT.has(code) || (status === 400 && BILLING.test(text)))
    return new ProviderError("quota", message, { retryable: false, pause: true, status })
  // a gateway timeout (504) reported as timeout_error is a timeout, not a server error; 529 is "overloaded_error"
  if (type === "timeout_error")
    return new ProviderError("timeout", message, {
      retryable: true,
      retryAfterMs: retryAfterMs(headers),
      status,
    })
  return byStatus(status, message, retryAfterMs(headers))
}

/** The SDK's error classes, for `unanswered`. */
const SDK_ERRORS: SdkErrors = {
  timeout: APIConnectionTimeoutError,
  abort: APIUserAbortError,
  connection: APIConnectionError,
  base: AnthropicError,
}

/**
 * Turns whatever the SDK threw into a ProviderError (with `first`, checked as a first answer). An abort by the
 * caller is rethrown as the caller's own reason: the runner tells it by its signal, and an SDK class must not get out.
 */
export function failure(
  cause: unknown,
  signal: AbortSignal,
  timeoutMs: number,
  first?: FirstAnswers,
): unknown {
  if (signal.aborted) return signal.reason ?? cause
  if (cause instanceof APIError && cause.status !== undefined && cause.headers) {
    // the parsed body; without a JSON body the SDK's message is "<status> <body text>"
    const detail: unknown = cause.error ?? cause.message.replace(/^\d+ /, "")
    const err = classify(cause.status, detail, cause.headers)
    return first ? first.check(err, detail) : err
  }
  return unanswered(cause, timeoutMs, SDK_ERRORS)
}

const isRecord = (x: unknown): x is Record<string, unknown> =>
  typeof x === "object" && x !== null && !Array.isArray(x)

/**
 * Whether a 401 or 404 body is the Messages API's own (its ErrorResponse): `{type: "error", error: {type, message}}`,
 * of type authentication_error for a 401 (`invalid x-api-key`) and not_found_error for a 404.
 */
export function documented(status: 401 | 404, body: unknown): boolean {
  const error = isRecord(body) && body.type === "error" && isRecord(body.error) ? body.error : undefined
  const type = status === 401 ? "authentication_error" : "not_found_error"
  return typeof error?.message === "string" && error.type === type
}

export const DEFAULT_BASE_URL = "https://api.anthropic.com"

/**
 * The base URL to give the SDK. The Messages API's paths carry their /v1 (the SDK sends /v1/messages), so a base URL
 * ending in /v1, as OpenAI's do, would send /v1/v1/messages: the /v1 is dropped, and `info` says so. Only a last
 * path segment of exactly `v1` is: no server serves Anthropic's API under /v1/v1.
 */
export function rootOf(url: string | undefined, info?: (message: string) => void): string | undefined {
  if (!url) return undefined
  const trimmed = url.replace(/\/+$/, "")
  if (!trimmed.endsWith("/v1")) return url
  const root = trimmed.slice(0, -"/v1".length)
  info?.(
    `the base URL ${shown(url)} ends in /v1, which the Anthropic API's paths carry already: using ${shown(root)}`,
  )
  return root
}

/** Reads a Message, or says why the body is not one. */
export function reply(message: Message | string): Reply {
  const content = typeof message === "object" && message !== null ? message.content : undefined
  const tool = Array.isArray(content) ? content.find((b) => b.type === "tool_use") : undefined
  if (tool && typeof message === "object") {
    // a structured answer: the forced tool call's input, as JSON text
    return {
      text: JSON.stringify(tool.input),
      usage: usageOf(message.usage),
      finish: finishOf(message.stop_reason),
    }
  }
  const texts = Array.isArray(content) ? content.filter((b) => b.type === "text").map((b) => b.text) : []
  if (texts.length === 0) {
    const what = typeof message === "string" ? "a body that is not JSON" : "no text block"
    throw new ProviderError("bad_response", `the message has ${what}`, { retryable: true, status: 200 })
  }
  const usage = typeof message === "object" ? message.usage : undefined
  return {
    text: texts.join(""),
    usage: usageOf(usage),
    finish: typeof message === "object" ? finishOf(message.stop_reason) : undefined,
  }
}

/**
 * The SDK client of one run, shared by realtime calls and the Batch API, its timeout in whole milliseconds, and the
 * first-answer check they share.
 */
export function sdk(context: ProviderContext): { client: Anthropic; timeoutMs: number; first: FirstAnswers } {
  // The SDK rejects a timeout that is not a whole number of milliseconds (timeout_s = 0.07 is 70.00000000000001).
  const timeoutMs = Math.max(1, Math.ceil(context.timeoutMs))
  // A key always given (even empty) keeps the SDK from looking for credentials in the environment and on disk.
  const key = context.apiKey ?? ""
  const base = rootOf(context.baseUrl, context.info)
  const first = firstAnswers(
    base ?? DEFAULT_BASE_URL,
    documented,
    "The Anthropic API's paths carry /v1 themselves (/v1/messages, /v1/messages/batches), so base_url is the " +
      `server's root, without /v1: ${DEFAULT_BASE_URL} by default.`,
  )
  const client = new Anthropic({
    apiKey: key,
    // This SDK sends `apiKey` as `Authorization: Bearer`; the Messages API takes a key in `x-api-key`.
    defaultHeaders: { "x-api-key": key, authorization: null },
    baseURL: base ?? null,
    maxRetries: 0,
    timeout: timeoutMs,
    // spool writes every attempt to its ledger and prints its own errors: no spans, and nothing on stdout
    openTelemetry: false,
    logLevel: "off",
  })
  return { client, timeoutMs, first }
}
