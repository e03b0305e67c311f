/**
 * Anthropic Messages, realtime, through the official SDK (wire.ts makes the client and maps its errors); the Message
 * Batches API is in batch.ts.
 */
import type { Message } from "@anthropic-ai/sdk/resources/messages"
import * as v from "valibot"
import { defineProvider } from "../../api/define.ts"
import { ProviderError } from "../../api/errors.ts"
import { rated } from "../../api/http.ts"
import { fromHeaders } from "../../api/ratelimit.ts"
import { anthropicBatch } from "./batch.ts"
import { body, failure, reply, sdk } from "./wire.ts"

/**
 * The shortest prefix each model caches, in tokens (Anthropic's prompt caching docs); a shorter one is processed
 * without caching, silently. Keyed by model id without its snapshot date.
 */
const MINIMUM_TOKENS: Readonly<Record<string, number>> = {
  "claude-opus-4-6": 4096,
  "claude-opus-4-5": 4096,
  "claude-haiku-4-5": 4096,
  "claude-sonnet-4-6": 2048,
  "claude-sonnet-4-5": 1024,
  "claude-opus-4-1": 1024,
  "claude-opus-4-0": 1024,
  "claude-opus-4": 1024,
  "claude-sonnet-4-0": 1024,
  "claude-sonnet-4": 1024,
  "claude-3-7-sonnet": 1024,
  "claude-3-5-haiku": 2048,
  "claude-3-haiku": 2048,
}

/** A model unknown to the table: the smallest minimum of any model, so a prefix is never left unmarked for want of it. */
const DEFAULT_MINIMUM_TOKENS = 1024

/** The model's entry in MINIMUM_TOKENS: `claude-sonnet-4-5-20250929` and `claude-3-5-haiku-latest` are their models'. */
export function minimumTokens(model: string): number {
  const base = model.replace(/-(\d{8}|latest)$/, "")
  return MINIMUM_TOKENS[base] ?? DEFAULT_MINIMUM_TOKENS
}

export default defineProvider({
  name: "anthropic",
  options: v.strictObject({}),
  keyEnv: "ANTHROPIC_API_KEY",
  baseUrlEnv: "ANTHROPIC_BASE_URL",
  // explicit breakpoints; a batch's requests run concurrently, so they read a prefix only once it was written
  promptCache: {
    explicit: true,
    minimumTokens,
    ttlMs: (ttl) => (ttl === "1h" ? 60 : 5) * 60_000,
  },
  create(_options, context) {
    const { client, timeoutMs, first } = sdk(context)
    let warned = false
    return {
      async call(request, signal) {
        const timeout = AbortSignal.timeout(timeoutMs)
        let message: Message
        let headers: Headers | undefined
        try {
          const options = { signal: AbortSignal.any([signal, timeout]) }
          const params = body(context.model, request)
          // the SDK's create warns on stderr of a deprecated model at every call: the first call says it once, the
          // others post the same body to the same path
          const sent = warned
            ? client.post<Message>("/v1/messages", { body: params, ...options })
            : client.messages.create(params, options)
          warned = true
          const { data, response } = await sent.withResponse()
          message = data
          headers = response.headers
          first.ok()
        } catch (cause) {
          const err = failure(cause, signal, timeoutMs, first)
          // the limits an error response reported (a 429's above all) teach the runner as much as a success's
          if (err instanceof ProviderError) {
            const headers = (cause as { headers?: unknown } | null)?.headers
            err.rate ??= headers instanceof Headers ? fromHeaders(headers) : undefined
          }
          throw err
        }
        return rated(headers, () => reply(message))
      },
      batch: anthropicBatch(client, context.model, timeoutMs, first),
    }
  },
})
