/**
 * A provider plugin: any HTTP endpoint that takes a JSON prompt and answers JSON. For in-house model
 * servers, serverless functions and gateways that do not speak the OpenAI wire format.
 *
 * Each item is one `POST options.url` with the body
 *   { "model", "prompt", "system"?, "max_tokens"?, "temperature"?, ...request.params }
 * and the answer's text is read from the JSON reply at `reply_field` (a dotted path, default "text").
 * Token counts are read from `usage.input_tokens` / `usage.output_tokens` when the reply has them.
 * Error answers are classified by spool's own table (`byStatus`): 429, 408, 409 and 5xx answers and network
 * failures are retried by spool (honouring Retry-After or Retry-After-Ms, read by `retryAfterMs`); 401/403 (bad
 * key) and 402 (no credit, this endpoint's own) pause the run; other 4xx fail the item. Rate-limit headers in the
 * OpenAI or Anthropic style, when the endpoint sends them, are reported with `rated` for the runner to learn from.
 */
import { byStatus, defineProvider, ProviderError, rated, retryAfterMs } from "spool/plugin"
import * as v from "valibot"

/** The value at a dotted path ("output.text", "choices.0.text"), or undefined. */
function at(value: unknown, path: string): unknown {
  let here = value
  for (const part of path.split(".")) {
    if (here === null || typeof here !== "object") return undefined
    here = (here as Record<string, unknown>)[part]
  }
  return here
}

/** An error answer: spool's own table (`byStatus`), after the one status this endpoint means its own way. */
function failure(status: number, body: string, headers: Headers): ProviderError {
  const message = `HTTP ${status}: ${body.slice(0, 200)}`
  // no credit left: every item would fail the same way, so the run pauses
  if (status === 402) return new ProviderError("quota", message, { retryable: false, pause: true, status })
  return byStatus(status, message, retryAfterMs(headers))
}

const count = (x: unknown) => (typeof x === "number" && Number.isFinite(x) && x >= 0 ? x : 0)

export default defineProvider({
  name: "http-endpoint",
  options: v.strictObject({
    /** Where every request is POSTed. */
    url: v.pipe(v.string(), v.url("must be a URL such as http://127.0.0.1:8080/generate")),
    /** Dotted path of the answer's text in the JSON reply. */
    reply_field: v.optional(v.pipe(v.string(), v.minLength(1)), "text"),
    /** Extra headers sent with every request (not for secrets: name the key's variable with api_key_env). */
    headers: v.optional(v.record(v.string(), v.string()), {}),
  }),
  // no key by default; a job that sets `api_key_env` sends that variable's value as a bearer token
  keyEnv: undefined,
  create(options, context) {
    const headers: Record<string, string> = { "content-type": "application/json", ...options.headers }
    if (context.apiKey) headers.authorization = `Bearer ${context.apiKey}`
    return {
      async call(request, signal) {
        const body = {
          model: context.model,
          prompt: request.prompt,
          ...(request.system !== undefined && { system: request.system }),
          ...(request.max_tokens !== undefined && { max_tokens: request.max_tokens }),
          ...(request.temperature !== undefined && { temperature: request.temperature }),
          ...request.params,
        }
        let response: Response
        let text: string
        try {
          response = await fetch(options.url, {
            method: "POST",
            headers,
            body: JSON.stringify(body),
            signal: AbortSignal.any([signal, AbortSignal.timeout(context.timeoutMs)]),
          })
          text = await response.text()
        } catch (err) {
          if (signal.aborted) throw err // the run is stopping: not a failure of the call
          const timedOut = (err as Error).name === "TimeoutError"
          throw new ProviderError(
            timedOut ? "timeout" : "network",
            timedOut
              ? `no answer within ${context.timeoutMs / 1000} s`
              : `connection failed: ${(err as Error).message}`,
            { retryable: true, cause: err },
          )
        }
        // the rate limits the answer reports (x-ratelimit-* headers), if any, go on the reply or the error
        return rated(response.headers, () => {
          if (!response.ok) throw failure(response.status, text, response.headers)
          let reply: unknown
          try {
            reply = JSON.parse(text)
          } catch {
            throw new ProviderError("bad_response", `the reply is not JSON: ${text.slice(0, 120)}`, {
              retryable: true,
              status: response.status,
            })
          }
          const answer = at(reply, options.reply_field)
          if (typeof answer !== "string")
            throw new ProviderError("bad_response", `the reply has no text at "${options.reply_field}"`, {
              retryable: true,
              status: response.status,
            })
          const usage = at(reply, "usage")
          return {
            text: answer,
            usage: {
              input_tokens: count(at(usage, "input_tokens")),
              output_tokens: count(at(usage, "output_tokens")),
            },
          }
        })
      },
    }
  },
})
