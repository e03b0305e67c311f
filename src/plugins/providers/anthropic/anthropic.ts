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

export default defineProvider({
  name: "anthropic",
  options: v.strictObject({}),
  keyEnv: "ANTHROPIC_API_KEY",
  baseUrlEnv: "ANTHROPIC_BASE_URL",
  create(_options, context) {
    const { client, timeoutMs, first } = sdk(context)
    return {
      async call(request, signal) {
        const timeout = AbortSignal.timeout(timeoutMs)
        let message: Message
        let headers: Headers | undefined
        try {
          const { data, response } = await client.messages
            .create(body(context.model, request), { signal: AbortSignal.any([signal, timeout]) })
            .withResponse()
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
