/** OpenAI chat completions, realtime. The hot call is a direct fetch of the official wire format. */
import * as v from "valibot"
import { defineProvider, type Reply, type Request } from "../define.ts"
import { ProviderError } from "../../core/errors.ts"
import { parseRetryAfter } from "../../core/retry.ts"

export const DEFAULT_BASE_URL = "https://api.openai.com/v1"

/** The chat completions body for a neutral request; `params` are laid over it as they are. */
export function body(model: string, request: Request): Record<string, unknown> {
  const messages: { role: string; content: string }[] = []
  if (request.system) messages.push({ role: "system", content: request.system })
  messages.push({ role: "user", content: request.prompt })
  const out: Record<string, unknown> = { model, messages }
  if (request.max_tokens !== undefined) out.max_completion_tokens = request.max_tokens
  if (request.temperature !== undefined) out.temperature = request.temperature
  return request.params ? { ...out, ...request.params } : out
}

type Completion = {
  choices?: { message?: { content?: unknown } }[]
  usage?: { prompt_tokens?: number; completion_tokens?: number }
}

type ErrorBody = { error?: { message?: string; code?: string | null; type?: string } }

/** Maps an HTTP error response to the project's error, once, here. */
export function classify(status: number, text: string, headers: Headers): ProviderError {
  let detail: ErrorBody["error"]
  try {
    detail = (JSON.parse(text) as ErrorBody).error
  } catch {
    detail = undefined
  }
  const message = `HTTP ${status}: ${detail?.message ?? text.slice(0, 200)}`
  const retryAfterMs = retryAfter(headers)
  const code = detail?.code ?? detail?.type ?? ""
  if (status === 429 && (code === "insufficient_quota" || detail?.type === "insufficient_quota")) {
    return new ProviderError("quota", message, { retryable: false, pause: true, status })
  }
  if (status === 429)
    return new ProviderError("rate_limit", message, { retryable: true, retryAfterMs, status })
  if (status === 401 || status === 403)
    return new ProviderError("auth", message, { retryable: false, pause: true, status })
  if (status === 408) return new ProviderError("timeout", message, { retryable: true, retryAfterMs, status })
  if (status === 409 || status >= 500)
    return new ProviderError("server", message, { retryable: true, retryAfterMs, status })
  if (status === 404) return new ProviderError("not_found", message, { retryable: false, status })
  return new ProviderError("bad_request", message, { retryable: false, status })
}

function retryAfter(headers: Headers): number | undefined {
  const ms = headers.get("retry-after-ms")
  if (ms && /^\d+(\.\d+)?$/.test(ms)) return Math.round(Number(ms))
  return parseRetryAfter(headers.get("retry-after"))
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

/** Reads a completion, or says why the body is not one. */
export function reply(status: number, text: string): Reply {
  let parsed: Completion
  try {
    parsed = JSON.parse(text) as Completion
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
  const content = parsed.choices?.[0]?.message?.content
  if (typeof content !== "string") {
    throw new ProviderError("bad_response", "the completion has no message content", {
      retryable: true,
      status,
    })
  }
  return {
    text: content,
    usage: {
      input_tokens: parsed.usage?.prompt_tokens ?? 0,
      output_tokens: parsed.usage?.completion_tokens ?? 0,
    },
  }
}

export default defineProvider({
  name: "openai",
  options: v.strictObject({}),
  keyEnv: "OPENAI_API_KEY",
  baseUrlEnv: "OPENAI_BASE_URL",
  create(_options, context) {
    const url = `${(context.baseUrl ?? DEFAULT_BASE_URL).replace(/\/+$/, "")}/chat/completions`
    const headers = { authorization: `Bearer ${context.apiKey ?? ""}`, "content-type": "application/json" }
    return {
      async call(request, signal) {
        const timeout = AbortSignal.timeout(context.timeoutMs)
        let response: Response
        let text: string
        try {
          response = await fetch(url, {
            method: "POST",
            headers,
            body: JSON.stringify(body(context.model, request)),
            signal: AbortSignal.any([signal, timeout]),
          })
          text = await response.text()
        } catch (cause) {
          throw failure(cause, signal, context.timeoutMs)
        }
        if (!response.ok) throw classify(response.status, text, response.headers)
        return reply(response.status, text)
      },
    }
  },
})
