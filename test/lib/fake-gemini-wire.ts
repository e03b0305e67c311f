/**
 * The Gemini API's shapes as the fake (fake-gemini.ts) speaks them: the check of a GenerateContentRequest against its
 * reference, the user text and prompt tokens of a request, the error bodies (google.rpc.Status with its details), and
 * the GenerateContentResponse for an answer. The pages they follow are listed at the top of fake-gemini.ts.
 */
import Ajv2020 from "ajv/dist/2020"
import { existsSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { SPECS_AT } from "./spec.ts"

/** What one realtime request gets. */
export type FaultKind =
  | "ok"
  /** 429 RESOURCE_EXHAUSTED of a per-minute quota, with RetryInfo retryDelay `${retryDelay}s`. */
  | "429"
  /** 429 RESOURCE_EXHAUSTED of a per-day quota: spent until tomorrow. */
  | "quota"
  | "500"
  | "503"
  /** 400 INVALID_ARGUMENT. */
  | "invalid"
  /** No headers until the client gives up. */
  | "hang"
  /** Headers, then the connection dies mid-body. */
  | "reset"
  /** A 200 whose body is not JSON. */
  | "garbage"
  /** The answer cut at maxOutputTokens, finishReason MAX_TOKENS. */
  | "max_tokens"
  /** The prompt blocked: promptFeedback.blockReason SAFETY and no candidate. */
  | "blocked"

/** Tokens as the fake counts them: a quarter of the characters, rounded up, at least 1. */
export const tokens = (text: string) => Math.max(1, Math.ceil(text.length / 4))
/** Whether a value is a JSON object. */
export const isRecord = (x: unknown): x is Record<string, unknown> =>
  typeof x === "object" && x !== null && !Array.isArray(x)

/** GenerationConfig's fields (ai.google.dev/api/generate-content#generationconfig). */
const CONFIG_FIELDS = new Set([
  "stopSequences",
  "responseMimeType",
  "responseSchema",
  "responseJsonSchema",
  "responseModalities",
  "candidateCount",
  "maxOutputTokens",
  "temperature",
  "topP",
  "topK",
  "seed",
  "presencePenalty",
  "frequencyPenalty",
  "responseLogprobs",
  "logprobs",
  "enableEnhancedCivicAnswers",
  "speechConfig",
  "thinkingConfig",
  "imageConfig",
  "mediaResolution",
])

/** A Content's problems: `{role?, parts: [{text}]}`, the role "user" or "model" when given. */
export function contentProblems(c: unknown, at: string): string[] {
  if (!isRecord(c)) return [`${at}: must be a Content object`]
  const out: string[] = []
  if (c.role !== undefined && c.role !== "user" && c.role !== "model")
    out.push(`${at}.role: "user" or "model"`)
  if (!Array.isArray(c.parts) || c.parts.length === 0) return [...out, `${at}.parts: a non-empty list`]
  c.parts.forEach((p, i) => {
    if (!isRecord(p) || typeof p.text !== "string") out.push(`${at}.parts[${i}].text: a string`)
  })
  return out
}

/**
 * What is wrong with a GenerateContentRequest against its reference: `contents` required, Content shapes,
 * GenerationConfig's fields and types, responseJsonSchema with responseMimeType application/json and not beside
 * responseSchema. Unknown top-level fields are not flagged: the contract suite's FULL request carries OpenAI-style
 * params (top_p, metadata), which the real API would refuse with "Unknown name" and a job would not send to Gemini.
 */
export function checkRequest(body: Record<string, unknown>): string[] {
  const out: string[] = discoveryErrors("GenerateContentRequest", body)
  if (!Array.isArray(body.contents) || body.contents.length === 0)
    out.push("contents: required, a non-empty list")
  else body.contents.forEach((c, i) => out.push(...contentProblems(c, `contents[${i}]`)))
  if (body.systemInstruction !== undefined)
    out.push(...contentProblems(body.systemInstruction, "systemInstruction"))
  const config = body.generationConfig
  if (config !== undefined) {
    if (!isRecord(config)) return [...out, "generationConfig: an object"]
    for (const k of Object.keys(config))
      if (!CONFIG_FIELDS.has(k)) out.push(`generationConfig.${k}: unknown field`)
    if (config.maxOutputTokens !== undefined && !Number.isInteger(config.maxOutputTokens))
      out.push("generationConfig.maxOutputTokens: an integer")
    const t = config.temperature
    if (t !== undefined && (typeof t !== "number" || t < 0 || t > 2))
      out.push("generationConfig.temperature: 0 to 2")
    if (config.responseJsonSchema !== undefined) {
      if (config.responseMimeType !== "application/json")
        out.push("generationConfig.responseJsonSchema: needs responseMimeType application/json")
      if (config.responseSchema !== undefined)
        out.push("generationConfig: responseSchema and responseJsonSchema are exclusive")
    }
  }
  return out
}

/** The user text of a request: its last user turn's text parts. */
export function inputOf(body: Record<string, unknown>): string {
  const contents = Array.isArray(body.contents)
    ? (body.contents as { role?: string; parts?: { text?: string }[] }[])
    : []
  const user = contents.findLast((c) => c.role === undefined || c.role === "user")
  return (user?.parts ?? []).map((p) => p.text ?? "").join("")
}

/** The prompt's token count the fake reports: the system instruction's and the contents' JSON. */
export const promptTokens = (body: Record<string, unknown>) =>
  tokens(JSON.stringify([body.systemInstruction ?? "", body.contents ?? ""]))

/** A google.rpc.Status body, as every error answer of the API carries it. */
export function status(code: number, word: string, message: string, details: unknown[] = [], headers = {}) {
  return Response.json(
    { error: { code, message, status: word, ...(details.length && { details }) } },
    { status: code, headers },
  )
}

/** One detail of a google.rpc.Status, of `@type` google.rpc.`type`. */
export const rpc = (type: string, fields: Record<string, unknown>) => ({
  "@type": `type.googleapis.com/google.rpc.${type}`,
  ...fields,
})

/** The 429 of a quota: per minute (a rate limit, with its RetryInfo) or per day. */
export function exhausted(perDay: boolean, retryDelay: string): Response {
  const quotaId = perDay
    ? "GenerateRequestsPerDayPerProjectPerModel"
    : "GenerateRequestsPerMinutePerProjectPerModel"
  return status(
    429,
    "RESOURCE_EXHAUSTED",
    "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
    [
      rpc("QuotaFailure", {
        violations: [
          {
            quotaMetric: "generativelanguage.googleapis.com/generate_content_paid_tier_requests",
            quotaId,
            quotaDimensions: { location: "global", model: "gemini-2.5-flash" },
            quotaValue: perDay ? "10000" : "1000",
          },
        ],
      }),
      rpc("Help", {
        links: [
          {
            description: "Learn more about Gemini API quotas",
            url: "https://ai.google.dev/gemini-api/docs/rate-limits",
          },
        ],
      }),
      ...(perDay ? [] : [rpc("RetryInfo", { retryDelay: `${retryDelay}s` })]),
    ],
  )
}

/** The GenerateContentResponse for a request and its answer text. */
export function answer(
  body: Record<string, unknown>,
  text: string,
  kind: FaultKind,
  cached: number,
  n: number,
) {
  const prompt = promptTokens(body) + cached
  const usage = (out: number) => ({
    promptTokenCount: prompt,
    candidatesTokenCount: out,
    totalTokenCount: prompt + out,
    ...(cached > 0 && { cachedContentTokenCount: cached }),
    promptTokensDetails: [{ modality: "TEXT", tokenCount: prompt }],
  })
  if (kind === "blocked")
    return { promptFeedback: { blockReason: "SAFETY" }, usageMetadata: usage(0), modelVersion: "gemini-fake" }
  const config = isRecord(body.generationConfig) ? body.generationConfig : {}
  const limit = typeof config.maxOutputTokens === "number" ? config.maxOutputTokens : 0
  const said = kind === "max_tokens" ? text.slice(0, Math.max(1, limit) * 4) : text
  return {
    candidates: [
      {
        content: { parts: [{ text: said }], role: "model" },
        finishReason: kind === "max_tokens" ? "MAX_TOKENS" : "STOP",
        index: 0,
      },
    ],
    usageMetadata: usage(tokens(said)),
    modelVersion: "gemini-fake",
    responseId: `fake-${n}`,
  }
}

// ---- the discovery document

/**
 * Google's machine-readable description of the API (https://generativelanguage.googleapis.com/$discovery/rest?version=v1beta),
 * looked for beside the OpenAPI specs (test/lib/spec.ts's SPECS_AT) under this name. None was found whole to copy
 * there (only a snapshot cut short before its `schemas`), and ../shared/specs holds none: the checks run once the
 * file is put there, and until then the fake follows the pages listed in fake-gemini.ts. (It prints no SKIPPED line:
 * that line is the OpenAPI spec checks', which .ci/run requires; this document is not one ../shared provides.)
 */
export const DISCOVERY_AT = join(SPECS_AT, "generativelanguage-v1beta.json")

type DiscoverySchema = {
  $ref?: string
  type?: string
  properties?: Record<string, DiscoverySchema>
  additionalProperties?: DiscoverySchema
  items?: DiscoverySchema
  enum?: unknown[]
}

/**
 * A discovery document's schema as JSON Schema: `$ref: "Name"` points into `$defs`, `type: "any"` is anything, and
 * objects, arrays and enums keep their shape. Unknown fields are not refused: the document does not say they are.
 */
function toJsonSchema(node: DiscoverySchema): Record<string, unknown> {
  if (node.$ref) return { $ref: `#/$defs/${node.$ref}` }
  const out: Record<string, unknown> = {}
  if (node.type && node.type !== "any") out.type = node.type
  if (node.enum) out.enum = node.enum
  if (node.properties)
    out.properties = Object.fromEntries(Object.entries(node.properties).map(([k, v]) => [k, toJsonSchema(v)]))
  if (node.additionalProperties) out.additionalProperties = toJsonSchema(node.additionalProperties)
  if (node.items) out.items = toJsonSchema(node.items)
  return out
}

/** A checker of values against a discovery document's schemas: `check("GenerateContentRequest", body)`. */
export function discoveryChecker(doc: { schemas?: Record<string, DiscoverySchema> }) {
  const defs = Object.fromEntries(Object.entries(doc.schemas ?? {}).map(([k, v]) => [k, toJsonSchema(v)]))
  const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false })
  ajv.addSchema({ $id: "discovery", $defs: defs })
  return (name: string, value: unknown): string[] => {
    const validate = ajv.getSchema(`discovery#/$defs/${name}`)
    if (!validate) return [`no schema ${name} in the discovery document`]
    if (validate(value)) return []
    return (validate.errors ?? []).map((e) => `${e.instancePath || "/"} ${e.message ?? "invalid"}`)
  }
}

let checker: ((name: string, value: unknown) => string[]) | undefined

/** Violations of `value` against the discovery document's schema `name`; none when the document is not there. */
export function discoveryErrors(name: string, value: unknown): string[] {
  if (!checker) {
    if (!existsSync(DISCOVERY_AT)) return []
    checker = discoveryChecker(
      JSON.parse(readFileSync(DISCOVERY_AT, "utf8")) as { schemas?: Record<string, DiscoverySchema> },
    )
  }
  return checker(name, value)
}

/** The google.rpc.Code and status word of an HTTP status (google.rpc.code.proto), for a batch line's error. */
const CODE_OF_HTTP: Readonly<Record<number, { code: number; status: string; message: string }>> = {
  400: { code: 3, status: "INVALID_ARGUMENT", message: "Request contains an invalid argument." },
  403: { code: 7, status: "PERMISSION_DENIED", message: "The caller does not have permission." },
  404: { code: 5, status: "NOT_FOUND", message: "Requested entity was not found." },
  429: { code: 8, status: "RESOURCE_EXHAUSTED", message: "Resource has been exhausted (e.g. check quota)." },
  500: {
    code: 13,
    status: "INTERNAL",
    message:
      "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
  },
  503: { code: 14, status: "UNAVAILABLE", message: "The model is overloaded. Please try again later." },
}

/**
 * The google.rpc.Status a batch line ends in for a shared fault's line error (fake-batch.ts `LineError`: an HTTP
 * status, a message perhaps), so the contract suite's `halfExpired(400, 500)` reads on Gemini as the API's own errors.
 */
export function lineStatus(e: { status: number; message?: string }): {
  code: number
  message: string
  status: string
} {
  const known = CODE_OF_HTTP[e.status] ?? CODE_OF_HTTP[500]!
  return { code: known.code, status: known.status, message: e.message ?? known.message }
}
