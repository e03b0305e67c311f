/**
 * The Gemini API's wire format (generativelanguage.googleapis.com, v1beta), shared by the realtime provider
 * (gemini.ts) and the Batch API (batch.ts): the GenerateContentRequest for a neutral request, the check of a job's
 * output schema against what the API accepts, the reader of a GenerateContentResponse, the classification of an
 * error (google.rpc.Status, its RetryInfo and QuotaFailure details), and one HTTP exchange with its failures mapped.
 * No SDK: plain fetch, so nothing of a vendor library can leave this folder.
 *
 * Pages followed: ai.google.dev/api/generate-content (GenerateContentRequest, GenerationConfig, UsageMetadata,
 * FinishReason), ai.google.dev/gemini-api/docs/structured-output (responseJsonSchema and its keywords),
 * ai.google.dev/gemini-api/docs/troubleshooting (error codes: INVALID_ARGUMENT, FAILED_PRECONDITION,
 * PERMISSION_DENIED, NOT_FOUND, RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED),
 * ai.google.dev/gemini-api/docs/rate-limits (429 with RetryInfo.retryDelay, per-minute and per-day quotas).
 */
import type { Reply, Request } from "../../api/define.ts"
import { firstAnswers, shown, type FirstAnswers } from "../../api/baseurl.ts"
import { ProviderError } from "../../api/errors.ts"
import { byStatus, retryAfterMs } from "../../api/http.ts"

/** Where the Gemini API is served when the job names no base URL. */
export const DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"

/** The model's path: a job may name it `gemini-2.5-flash` or, as the API's own names go, `models/gemini-2.5-flash`. */
export function modelPath(model: string): string {
  return model.startsWith("models/") || model.startsWith("tunedModels/") ? model : `models/${model}`
}

const isRecord = (x: unknown): x is Record<string, unknown> =>
  typeof x === "object" && x !== null && !Array.isArray(x)

/**
 * The JSON Schema keywords `generationConfig.responseJsonSchema` accepts (GenerationConfig's reference: "only the
 * following properties are supported"), and the non-standard `propertyOrdering`. Anything else is refused before a
 * call, naming the keyword: the API would answer 400 INVALID_ARGUMENT for every item.
 */
const SCHEMA_KEYWORDS = new Set([
  "$id",
  "$defs",
  "$ref",
  "$anchor",
  "type",
  "format",
  "title",
  "description",
  "enum",
  "items",
  "prefixItems",
  "minItems",
  "maxItems",
  "minimum",
  "maximum",
  "anyOf",
  "oneOf",
  "properties",
  "additionalProperties",
  "required",
  "propertyOrdering",
])

/** Keywords whose value is a map of name → schema. */
const SCHEMA_MAPS = new Set(["properties", "$defs"])
/** Keywords whose value is a list of schemas. */
const SCHEMA_LISTS = new Set(["anyOf", "oneOf", "prefixItems"])

/**
 * What of a JSON Schema the Gemini API does not accept, one line per keyword, each naming its path
 * (`properties.tags.items.pattern: "pattern" is not accepted …`). Empty when the whole schema can be sent.
 */
export function schemaProblems(schema: unknown, at = "output.schema"): string[] {
  if (!isRecord(schema)) return []
  const problems: string[] = []
  for (const [key, value] of Object.entries(schema)) {
    const path = `${at}.${key}`
    if (!SCHEMA_KEYWORDS.has(key)) {
      problems.push(
        `${path}: "${key}" is not a keyword Gemini's responseJsonSchema accepts (it takes ${[...SCHEMA_KEYWORDS].join(", ")})`,
      )
      continue
    }
    if (SCHEMA_MAPS.has(key) && isRecord(value)) {
      for (const [name, sub] of Object.entries(value))
        problems.push(...schemaProblems(sub, `${path}.${name}`))
    } else if (SCHEMA_LISTS.has(key) && Array.isArray(value)) {
      value.forEach((sub, i) => problems.push(...schemaProblems(sub, `${path}.${i}`)))
    } else if ((key === "items" || key === "additionalProperties") && isRecord(value)) {
      problems.push(...schemaProblems(value, path))
    } else if (
      key === "enum" &&
      Array.isArray(value) &&
      value.some((e) => typeof e !== "string" && typeof e !== "number")
    ) {
      problems.push(`${path}: Gemini takes enum values that are strings or numbers only`)
    }
  }
  return problems
}

/**
 * The error a job's schema that Gemini cannot take gives, before anything is sent: not retryable, and it pauses the
 * run, since every item would be refused the same way.
 */
export function schemaRefusal(problems: string[]): ProviderError {
  return new ProviderError(
    "bad_request",
    `the output schema cannot be sent to Gemini:\n  × ${problems.join("\n  × ")}`,
    {
      retryable: false,
      pause: true,
      hint: "Remove or rewrite the keywords listed (describe the constraint in `description` instead), then resume the run.",
    },
  )
}

/**
 * The GenerateContentRequest for a neutral request: the prompt as one user turn, the system prompt as
 * `systemInstruction`, max_tokens and temperature in `generationConfig`, and a schema as `responseJsonSchema` with
 * `responseMimeType: application/json` (the job's JSON Schema as it is; the older `responseSchema` takes an OpenAPI
 * subset without `additionalProperties` or type lists, which schemas written for OpenAI's strict mode use).
 * `params` are laid over the body; a `generationConfig` among them is merged into ours key by key.
 */
export function body(request: Request): Record<string, unknown> {
  const config: Record<string, unknown> = {}
  if (request.max_tokens !== undefined) config.maxOutputTokens = request.max_tokens
  if (request.temperature !== undefined) config.temperature = request.temperature
  if (request.schema) {
    config.responseMimeType = "application/json"
    config.responseJsonSchema = request.schema.schema
  }
  const out: Record<string, unknown> = { contents: [{ role: "user", parts: [{ text: request.prompt }] }] }
  if (request.system) out.systemInstruction = { parts: [{ text: request.system }] }
  const { generationConfig, ...rest } = request.params ?? {}
  const merged = { ...config, ...(isRecord(generationConfig) ? generationConfig : {}) }
  if (Object.keys(merged).length) out.generationConfig = merged
  return { ...out, ...rest }
}

/** usageMetadata as the API reports it (counts are integers in JSON). */
type UsageMetadata = {
  promptTokenCount?: number
  candidatesTokenCount?: number
  cachedContentTokenCount?: number
  thoughtsTokenCount?: number
  toolUsePromptTokenCount?: number
}

/**
 * Gemini's usage in spool's terms: `promptTokenCount` already holds the tokens read from the context cache
 * (`cachedContentTokenCount`), so it is all the input; thinking tokens (`thoughtsTokenCount`) are billed as output
 * and counted with the candidates'.
 */
export function usageOf(usage: UsageMetadata | undefined): Reply["usage"] {
  const cached = usage?.cachedContentTokenCount ?? 0
  return {
    input_tokens: (usage?.promptTokenCount ?? 0) + (usage?.toolUsePromptTokenCount ?? 0),
    output_tokens: (usage?.candidatesTokenCount ?? 0) + (usage?.thoughtsTokenCount ?? 0),
    cached_input_tokens: cached || undefined,
  }
}

/** Finish reasons that say the model (or its filters) declined to answer: the answer is a refusal. */
const REFUSED = new Set([
  "SAFETY",
  "RECITATION",
  "LANGUAGE",
  "BLOCKLIST",
  "PROHIBITED_CONTENT",
  "SPII",
  "IMAGE_SAFETY",
])

type Part = { text?: unknown; thought?: unknown }
type Candidate = { content?: { parts?: Part[] }; finishReason?: string }
type GenerateContentResponse = {
  candidates?: Candidate[]
  promptFeedback?: { blockReason?: string }
  usageMetadata?: UsageMetadata
}

/**
 * Reads a GenerateContentResponse, or says why the body is not one. The first candidate's text parts (thoughts
 * left out) are the answer; a prompt blocked by the API (`promptFeedback.blockReason`, no candidate) or an answer
 * stopped by its filters is a refusal, its reason as the text.
 */
export function reply(response: unknown): Reply {
  if (!isRecord(response)) {
    throw new ProviderError("bad_response", "HTTP 200 with a body that is not a GenerateContentResponse", {
      retryable: true,
      status: 200,
    })
  }
  const r = response as GenerateContentResponse
  const usage = usageOf(r.usageMetadata)
  const candidate = Array.isArray(r.candidates) ? r.candidates[0] : undefined
  const blocked = r.promptFeedback?.blockReason
  if (!candidate && blocked) return { text: `the prompt was blocked (${blocked})`, usage, finish: "refusal" }
  const parts = Array.isArray(candidate?.content?.parts) ? candidate.content.parts : []
  const texts = parts
    .filter((p) => typeof p.text === "string" && p.thought !== true)
    .map((p) => p.text as string)
  const reason = candidate?.finishReason ?? ""
  if (REFUSED.has(reason)) {
    return { text: texts.join("") || `the answer was stopped (${reason})`, usage, finish: "refusal" }
  }
  if (texts.length === 0) {
    throw new ProviderError(
      "bad_response",
      `the response has no text part (finishReason ${reason || "none"})`,
      {
        retryable: true,
        status: 200,
      },
    )
  }
  return { text: texts.join(""), usage, finish: reason === "MAX_TOKENS" ? "length" : "stop" }
}

/** google.rpc.Status as the API writes it under `error`. */
type Status = { code?: unknown; message?: unknown; status?: unknown; details?: unknown }

/** The details of a Status of one `@type` (`google.rpc.RetryInfo`, `google.rpc.QuotaFailure`, …). */
function details(error: Status | undefined, type: string): Record<string, unknown>[] {
  if (!Array.isArray(error?.details)) return []
  return (error.details as unknown[]).filter(
    (d): d is Record<string, unknown> =>
      isRecord(d) && d["@type"] === `type.googleapis.com/google.rpc.${type}`,
  )
}

/** A protobuf Duration as JSON ("51s", "0.5s", "1.250s") in milliseconds; undefined for anything else. */
export function durationMs(text: unknown): number | undefined {
  if (typeof text !== "string") return undefined
  const m = /^(\d+(?:\.\d+)?)s$/.exec(text.trim())
  return m?.[1] ? Math.round(Number(m[1]) * 1000) : undefined
}

/**
 * A 429 RESOURCE_EXHAUSTED is a quota spent for the day (or one of 0: the model is not open to the project's tier)
 * when its QuotaFailure names such a quota: waiting a minute cannot help, so the run pauses. Per-minute quotas are
 * rate limits, retried after the RetryInfo's delay.
 */
function spent(error: Status | undefined): boolean {
  for (const failure of details(error, "QuotaFailure")) {
    const violations = Array.isArray(failure.violations) ? (failure.violations as unknown[]) : []
    for (const v of violations) {
      if (!isRecord(v)) continue
      const id = `${String(v.quotaId ?? "")} ${String(v.quotaMetric ?? "")}`
      if (/per ?day/i.test(id) || String(v.quotaValue ?? "") === "0") return true
    }
  }
  return false
}

/**
 * Maps an HTTP error answer to the project's error, once, here. `detail` is the parsed body
 * (`{error: {code, message, status, details}}`) or, when it was not JSON, its text.
 */
export function classify(status: number, detail: unknown, headers: Headers): ProviderError {
  const error = isRecord(detail) && isRecord(detail.error) ? (detail.error as Status) : undefined
  const text =
    typeof error?.message === "string"
      ? error.message
      : typeof detail === "string"
        ? detail.slice(0, 200)
        : ""
  const word = typeof error?.status === "string" ? error.status : ""
  const message = `HTTP ${status}: ${word ? `${word}: ` : ""}${text || "no body"}`
  const wait = durationMs(details(error, "RetryInfo")[0]?.retryDelay) ?? retryAfterMs(headers)
  const reasons = details(error, "ErrorInfo").map((d) => String(d.reason ?? ""))
  // an API key that is not valid is a 400 INVALID_ARGUMENT with ErrorInfo reason API_KEY_INVALID
  if (reasons.some((r) => r === "API_KEY_INVALID" || r === "API_KEY_SERVICE_BLOCKED"))
    return new ProviderError("auth", message, { retryable: false, pause: true, status })
  if (status === 429 && spent(error))
    return new ProviderError("quota", message, {
      retryable: false,
      pause: true,
      status,
      hint: "A daily quota of the Gemini API is spent, or the model is not open to this project's tier: resume the run once it is reset or raised (aistudio.google.com, billing).",
    })
  // billing not set up where the free tier is not offered ("… Please enable billing on your project …")
  if (word === "FAILED_PRECONDITION")
    return new ProviderError("quota", message, { retryable: false, pause: true, status })
  if (word === "DEADLINE_EXCEEDED" || status === 504)
    return new ProviderError("timeout", message, { retryable: true, retryAfterMs: wait, status })
  return byStatus(status, message, wait)
}

/**
 * Whether a 401 or 404 body is the API's own: a google.rpc.Status under `error`, UNAUTHENTICATED for a 401 and
 * NOT_FOUND for a 404 (a path Google does not serve gets an HTML page instead).
 */
export function documented(status: 401 | 404, detail: unknown): boolean {
  const error = isRecord(detail) && isRecord(detail.error) ? detail.error : undefined
  return (
    typeof error?.message === "string" && error.status === (status === 401 ? "UNAUTHENTICATED" : "NOT_FOUND")
  )
}

/**
 * The base URL without a trailing /v1beta (or /v1), which the API's paths carry already: a base URL copied from
 * a REST example would otherwise send /v1beta/v1beta/…. `info` says so when it drops one.
 */
export function rootOf(url: string | undefined, info?: (message: string) => void): string {
  if (!url) return DEFAULT_BASE_URL
  const trimmed = url.replace(/\/+$/, "")
  const m = /\/(v1beta|v1)$/.exec(trimmed)
  if (!m) return trimmed
  const root = trimmed.slice(0, -m[0].length)
  info?.(
    `the base URL ${shown(url)} ends in /${m[1]}, which the Gemini API's paths carry already: using ${shown(root)}`,
  )
  return root
}

/** What one client of a run shares: where it sends, its key, its timeout, and the first-answer check. */
export interface Wire {
  base: string
  key: string
  timeoutMs: number
  first: FirstAnswers
}

/** The wire of one run's client. */
export function wire(context: {
  baseUrl: string | undefined
  apiKey: string | undefined
  timeoutMs: number
  info?: ((message: string) => void) | undefined
}): Wire {
  const base = rootOf(context.baseUrl, context.info)
  return {
    base,
    key: context.apiKey ?? "",
    timeoutMs: Math.max(1, Math.ceil(context.timeoutMs)),
    first: firstAnswers(
      base,
      documented,
      `The Gemini API's paths carry /v1beta themselves (/v1beta/models/…:generateContent), so base_url is the server's root, without /v1beta: ${DEFAULT_BASE_URL} by default.`,
    ),
  }
}

/**
 * What was thrown while no answer came, as a ProviderError: our timer (a TimeoutError), or the connection. An abort
 * by the caller is rethrown as the caller's own reason: the runner tells it by its signal.
 */
export function unanswered(cause: unknown, signal: AbortSignal, timeoutMs: number): unknown {
  if (signal.aborted) return signal.reason ?? cause
  if (cause instanceof ProviderError) return cause
  const name = (cause as Error | null)?.name
  if (name === "TimeoutError" || name === "AbortError")
    return new ProviderError("timeout", `no answer within ${timeoutMs / 1000} s`, { retryable: true, cause })
  const text = (cause as Error | null)?.message ?? String(cause)
  return new ProviderError("network", `connection failed: ${text}`, { retryable: true, cause })
}

/** One exchange: its status, headers and parsed JSON body (or the text, when it is not JSON). */
export interface Answer {
  status: number
  headers: Headers
  json: unknown
  text: string
}

/**
 * Sends one request to `path` (under the base URL) with the key in `x-goog-api-key`, and reads the whole answer
 * within the client's timeout (or `timeoutMs`). A 2xx is returned; an error answer is thrown classified, checked as
 * a first answer; no answer is thrown as timeout or network.
 */
export async function send(
  w: Wire,
  method: "GET" | "POST" | "DELETE",
  path: string,
  signal: AbortSignal,
  init: { body?: string | Blob; headers?: Record<string, string>; timeoutMs?: number } = {},
): Promise<Answer> {
  const timeoutMs = init.timeoutMs ?? w.timeoutMs
  const url = /^https?:/.test(path) ? path : `${w.base}${path}`
  let answer: Answer
  try {
    const response = await fetch(url, {
      method,
      headers: { "x-goog-api-key": w.key, ...init.headers },
      body: init.body,
      signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]),
    })
    const text = await response.text()
    let json: unknown = text
    try {
      json = JSON.parse(text) as unknown
    } catch {}
    answer = { status: response.status, headers: response.headers, json, text }
  } catch (cause) {
    throw unanswered(cause, signal, timeoutMs)
  }
  if (answer.status >= 200 && answer.status < 300) {
    w.first.ok()
    if (typeof answer.json === "string" && answer.text !== "") {
      throw new ProviderError(
        "bad_response",
        `HTTP ${answer.status} with a body that is not JSON: ${answer.text.slice(0, 100)}`,
        {
          retryable: true,
          status: answer.status,
        },
      )
    }
    return answer
  }
  throw w.first.check(classify(answer.status, answer.json, answer.headers), answer.json)
}
