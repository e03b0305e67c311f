/**
 * Chat completions against any OpenAI-compatible base URL (vLLM, Ollama, LM Studio, llama.cpp, gateways),
 * realtime. It builds and sends requests with the `openai` provider's code, and reads answers more
 * tolerantly.
 *
 * Differences from api.openai.com handled here, and nothing else:
 * - `base_url` is required: there is no default server (refused before a run starts, naming
 *   `provider.base_url`). `/chat/completions` is appended to it, unless it already ends so.
 * - The output limit is sent as `max_tokens`, which Ollama, llama.cpp, LM Studio and vLLM all read, not
 *   OpenAI's newer `max_completion_tokens` (which Ollama, for one, does not list). `params` may send either.
 * - A key is optional: `Authorization: Bearer …` is sent only when the job names one with `api_key_env`.
 * - No `usage` block: usage 0/0.
 * - Usage named `input_tokens`/`output_tokens` instead of `prompt_tokens`/`completion_tokens`.
 * - No `x-ratelimit-*` or `retry-after` headers: nothing here needs them.
 * - `content` as a list of parts: the `text` of its text parts (type "text" or no type), joined; other parts
 *   (images, thinking) are skipped.
 * - `content` null or missing beside `reasoning_content` (or `reasoning`): the reasoning is never taken as
 *   the answer. It is a bad_response, not retryable when `finish_reason` is "length" (the model spent
 *   max_tokens thinking and would again: raise max_tokens), retryable otherwise.
 * - `finish_reason` missing, and unknown fields anywhere: ignored.
 * - Error bodies of any of these shapes, read for their message (and code, for quota):
 *   `{error:{message,type,code}}` (OpenAI, newer vLLM, Ollama's /v1), `{error:"text"}` (Ollama, LM Studio,
 *   TGI), `{detail:"text"}` or FastAPI's `{detail:[{loc,msg}]}`, `{object:"error",message,type,code}`
 *   (older vLLM), or plain text / HTML.
 * - A 200 whose body is an error (`error` not null, `object: "error"`, or no `choices` but one of the
 *   shapes above): a failure, never a reply. Classified as that HTTP status when it carries a numeric code
 *   400–599 (as OpenRouter does), else a retryable server error.
 *
 * Batch mode (`mode = "batch"`) is the openai provider's Batch API client, shaped by a profile (profiles.ts:
 * `[provider.options.batch] profile = "azure" | "groq" | "together" | "generic"`, any field overridden beside it).
 * The profile's key header, query parameters and deployment paths apply to realtime calls too, so one job runs
 * either way against the same service.
 *
 * Classification of HTTP errors is the openai provider's: 429/408/409/5xx retryable with Retry-After,
 * 401/403 and quota pause the run, 404 not_found, other 4xx bad_request. Before any call has been answered well,
 * a 404 or 401 that names a path, has no error shape above, or is a bare "Not Found" says to check base_url and
 * pauses the run (api/baseurl.ts).
 */
import * as v from "valibot"
import { defineProvider, type Reply } from "../../api/define.ts"
import { JobError, ProviderError } from "../../api/errors.ts"
import { rated } from "../../api/http.ts"
import { firstAnswers, shown } from "../../api/baseurl.ts"
import { body, classify, finishOf, json, post, type ErrorDetail } from "../openai/wire.ts"
import { embedBody, embedReplyOf } from "../openai/embed.ts"
import { openaiBatch, type BatchShape } from "../openai/batch.ts"
import { BatchOptions, resolve, type Profile } from "./profiles.ts"

type Detail = ErrorDetail & {
  /** A numeric code, when the body gives one: an HTTP status for servers that send errors with a 200. */
  status?: number | undefined
}

const isRecord = (x: unknown): x is Record<string, unknown> =>
  typeof x === "object" && x !== null && !Array.isArray(x)

const str = (x: unknown): string | undefined => (typeof x === "string" && x !== "" ? x : undefined)

function fields(error: Record<string, unknown>): Detail {
  const code = error.code
  return {
    message: str(error.message) ?? (error.message === undefined ? undefined : JSON.stringify(error.message)),
    type: str(error.type),
    code: typeof code === "number" ? String(code) : (str(code) ?? null),
    status: typeof code === "number" ? code : undefined,
  }
}

/** FastAPI's validation errors: `[{ loc: ["body", "messages"], msg: "Field required" }]`. */
function problems(detail: unknown[]): string {
  return detail
    .map((d) => {
      if (!isRecord(d)) return String(d)
      const at = Array.isArray(d.loc) ? `${d.loc.join(".")}: ` : ""
      return `${at}${str(d.msg) ?? JSON.stringify(d)}`
    })
    .join("; ")
}

/** What a parsed body says went wrong, in whichever of the known shapes it says it; undefined when none. */
function explain(parsed: unknown): Detail | undefined {
  if (!isRecord(parsed)) return undefined
  const { error, detail } = parsed
  if (typeof error === "string") return { message: error }
  if (isRecord(error)) return fields(error)
  if (parsed.object === "error") return fields(parsed)
  if (typeof detail === "string") return { message: detail }
  if (Array.isArray(detail)) return { message: problems(detail) }
  if (isRecord(detail)) return fields(detail)
  return undefined
}

/** Reads what an error body says, JSON or not. */
function detailOf(text: string): Detail | undefined {
  try {
    return explain(JSON.parse(text))
  } catch {
    return undefined
  }
}

/** A 200 whose body reports an error. */
function failed(status: number, text: string, headers: Headers, detail: Detail): ProviderError {
  if (detail.status !== undefined && detail.status >= 400 && detail.status <= 599) {
    return classify(detail.status, text, headers, detail)
  }
  return new ProviderError(
    "server",
    `HTTP ${status} with an error: ${detail.message ?? text.slice(0, 200)}`,
    {
      retryable: true,
      status,
    },
  )
}

/** The answer's text: a string, or the text parts of a list of parts; undefined when there is none. */
function textOf(content: unknown): string | undefined {
  if (typeof content === "string") return content
  if (!Array.isArray(content)) return undefined
  const texts: string[] = []
  for (const part of content) {
    if (!isRecord(part) || typeof part.text !== "string") continue
    if (part.type === "text" || part.type === undefined) texts.push(part.text)
  }
  return texts.length ? texts.join("") : undefined
}

function count(usage: unknown, ...names: string[]): number {
  if (!isRecord(usage)) return 0
  for (const name of names) {
    const n = usage[name]
    if (typeof n === "number" && Number.isFinite(n)) return n
  }
  return 0
}

/** Reads a completion however the server shaped it, or says why the body is not one. */
function reply(status: number, text: string, headers: Headers): Reply {
  const parsed = json(status, text)
  const completion = isRecord(parsed) ? parsed : {}
  if (completion.error != null || completion.object === "error" || !Array.isArray(completion.choices)) {
    const detail = explain(parsed)
    if (detail) throw failed(status, text, headers, detail)
  }
  const choice = Array.isArray(completion.choices) ? completion.choices[0] : undefined
  const message = isRecord(choice) && isRecord(choice.message) ? choice.message : {}
  const content = textOf(message.content)
  if (content === undefined) {
    const finish = isRecord(choice) ? choice.finish_reason : undefined
    if (str(message.reasoning_content) ?? str(message.reasoning)) {
      const spent = finish === "length"
      const why = spent ? ": it reached max_tokens while reasoning (raise max_tokens)" : ""
      throw new ProviderError("bad_response", `the completion has reasoning but no answer${why}`, {
        retryable: !spent,
        status,
      })
    }
    throw new ProviderError("bad_response", "the completion has no message content", {
      retryable: true,
      status,
    })
  }
  return {
    text: content,
    usage: {
      input_tokens: count(completion.usage, "prompt_tokens", "input_tokens"),
      output_tokens: count(completion.usage, "completion_tokens", "output_tokens"),
      cached_input_tokens:
        count(
          isRecord(completion.usage) ? completion.usage.prompt_tokens_details : undefined,
          "cached_tokens",
        ) || undefined,
    },
    ...finishOf(isRecord(choice) ? choice.finish_reason : undefined),
  }
}

/**
 * Whether a 401 or 404 body is an error these servers send about what they serve: one of the shapes above, with a
 * message (Ollama's "model … not found", vLLM's "Unauthorized"). Text, HTML or no body is what a server or proxy
 * sends for a path it has no route for; so is FastAPI's bare `{detail: "Not Found"}`, which `firstAnswers` tells
 * by its wording.
 */
function documented(_status: 401 | 404, body: unknown): boolean {
  return explain(body)?.message !== undefined
}

/** The base URL without a trailing slash or the endpoint it may already name. */
function baseOf(baseUrl: string): string {
  const base = baseUrl.replace(/\/+$/, "")
  return base.endsWith("/chat/completions") ? base.slice(0, -"/chat/completions".length) : base
}

/** A URL with the profile's query parameters. */
function withQuery(url: string, query: Record<string, string>): string {
  const params = new URLSearchParams(query).toString()
  return params ? `${url}?${params}` : url
}

/** The headers that carry the key, as the profile sends it. */
function keyHeaders(profile: Profile, apiKey: string | undefined): Record<string, string> {
  if (!apiKey) return {}
  return profile.auth === "api-key" ? { "api-key": apiKey } : { authorization: `Bearer ${apiKey}` }
}

/** The openai batch client's shape for a profile: its settings, and this provider's own line body and reader. */
function shapeOf(profile: Profile, apiKey: string | undefined): BatchShape {
  return {
    limits: { maxRequests: profile.max_requests, maxBytes: profile.max_bytes },
    purpose: profile.purpose,
    window: profile.completion_window,
    prefix: profile.url_prefix,
    statuses: profile.statuses,
    headers: profile.auth === "api-key" ? { authorization: null, "api-key": apiKey ?? null } : {},
    query: profile.query,
    enqueuedTokens: profile.max_enqueued_tokens || undefined,
    body: (model, request) => body(model, request, "max_tokens"),
    read: (status, parsed) => reply(status, JSON.stringify(parsed), new Headers()),
  }
}

export default defineProvider({
  name: "openai-compatible",
  options: v.strictObject({
    /** The service's Batch API, for `mode = "batch"`: a profile's name and any fields to override (profiles.ts). */
    batch: v.optional(BatchOptions),
  }),
  keyEnv: undefined,
  baseUrlEnv: "OPENAI_BASE_URL",
  create(options, context) {
    if (!context.baseUrl) {
      throw new JobError(
        "the job is not valid",
        ['provider.base_url: missing (required: provider "openai-compatible" has no default server)'],
        'Set base_url = "http://127.0.0.1:8000/v1" under [provider], pass --base-url, or export OPENAI_BASE_URL.',
      )
    }
    const profile = resolve(options.batch)
    const base = baseOf(context.baseUrl)
    // a deployment's calls go under its name (Azure); the model named in the body is then that deployment too
    const root =
      profile.model === "deployment" ? `${base}/deployments/${encodeURIComponent(context.model)}` : base
    const url = withQuery(`${root}/chat/completions`, profile.query)
    const embeddings = withQuery(`${root}/embeddings`, profile.query)
    const answers = firstAnswers(
      context.baseUrl,
      documented,
      `spool sends POST ${shown(url)}: base_url is what comes before /chat/completions, for most servers ending in /v1 ` +
        "(vLLM http://127.0.0.1:8000/v1, Ollama http://127.0.0.1:11434/v1).",
    )
    const headers = { "content-type": "application/json", ...keyHeaders(profile, context.apiKey) }
    return {
      async call(request, signal) {
        const payload = body(context.model, request, "max_tokens")
        const { response, text } = await post(url, headers, payload, signal, context.timeoutMs)
        return rated(response.headers, () => {
          if (!response.ok)
            throw answers.check(classify(response.status, text, response.headers, detailOf(text)), text)
          answers.ok()
          return reply(response.status, text, response.headers)
        })
      },
      // vLLM, Ollama and TEI answer /embeddings in OpenAI's shape; floats, which every one of them speaks
      async embed(inputs, embedOptions, signal) {
        const payload = embedBody(context.model, inputs, embedOptions, "float")
        const { response, text } = await post(embeddings, headers, payload, signal, context.timeoutMs)
        return rated(response.headers, () => {
          if (!response.ok)
            throw answers.check(classify(response.status, text, response.headers, detailOf(text)), text)
          answers.ok()
          return embedReplyOf(response.status, json(response.status, text), inputs.length, embedOptions)
        })
      },
      // chat lines only: these services' batch endpoints are chat completions
      ...(context.kind !== "embedding" && {
        batch: openaiBatch({ ...context, baseUrl: base }, "chat", answers, shapeOf(profile, context.apiKey)),
      }),
    }
  },
})
