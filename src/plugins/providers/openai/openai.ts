/**
 * OpenAI chat completions or the Responses API (option `endpoint`), realtime, and embeddings (embed.ts). The hot call is a direct fetch of
 * the official wire format (wire.ts). The Batch API (`mode = "batch"`, chat or embedding lines) is in batch.ts,
 * through the official SDK. Prompt caching is automatic (a request only names its prefix: `prompt_cache_key`), and
 * the flex tier (`mode = "flex"`) is the realtime API with `service_tier: "flex"`.
 */
import * as v from "valibot"
import { defineProvider, type Request } from "../../api/define.ts"
import { JobError } from "../../api/errors.ts"
import { rated } from "../../api/http.ts"
import { openaiBatch } from "./batch.ts"
import {
  baseOf,
  body,
  classify,
  extras,
  first,
  json,
  post,
  reply,
  responsesBody,
  responsesReply,
} from "./wire.ts"
import { embedBody, embedReplyOf } from "./embed.ts"

/**
 * The models Flex processing serves (the pricing page's flex tier): GPT-5 and its mini and nano, the GPT-5.x releases
 * and their mini and nano, o3 and o4-mini; a dated snapshot (`gpt-5-mini-2025-08-07`) as its model.
 */
const FLEX = /^(?:gpt-5(?:\.\d+)?(?:-mini|-nano)?|o3|o4-mini)(?:-\d{4}-\d{2}-\d{2})?$/

export default defineProvider({
  name: "openai",
  options: v.strictObject({
    /** chat (default) or responses; an embedding job needs none ("embeddings" or "/v1/embeddings" is taken too). */
    endpoint: v.optional(v.picklist(["chat", "responses", "embeddings", "/v1/embeddings"]), "chat"),
  }),
  keyEnv: "OPENAI_API_KEY",
  baseUrlEnv: "OPENAI_BASE_URL",
  // the prompt-caching guide: every prefix of 1,024 tokens or more, kept 5 to 10 minutes unread (up to an hour off-peak)
  promptCache: {
    explicit: false,
    minimumTokens: () => 1024,
    ttlMs: (ttl) => (ttl === "1h" ? 60 : 5) * 60_000,
  },
  flex(model) {
    return FLEX.test(model)
  },
  create(options, context) {
    const embedding = context.kind === "embedding"
    const named = options.endpoint === "/v1/embeddings" ? "embeddings" : options.endpoint
    // "chat", the default, is taken as no choice at all for an embedding job (a default cannot be told from it)
    if (embedding ? named === "responses" : named === "embeddings")
      throw new JobError(
        "the job is not valid",
        [
          `provider.options.endpoint: "${options.endpoint}" is not for ${embedding ? "embedding" : "chat"} jobs`,
        ],
        embedding
          ? 'An embedding job needs no endpoint (it sends /v1/embeddings): remove it, or set endpoint = "embeddings".'
          : 'endpoint = "embeddings" is for [request] kind = "embedding": set that, or endpoint = "chat" | "responses".',
      )
    const base = baseOf(context)
    // a wrong base URL told from a wrong key or model by the first answers, realtime and batch alike
    const answers = first(context)
    const headers = { authorization: `Bearer ${context.apiKey ?? ""}`, "content-type": "application/json" }
    const responses = named === "responses"
    const url = `${base}/${responses ? "responses" : "chat/completions"}`
    const build = (request: Request) =>
      responses
        ? responsesBody(context.model, request, extras(request, context.tier))
        : body(context.model, request, undefined, extras(request, context.tier))
    const read = responses ? responsesReply : reply
    return {
      async call(request, signal) {
        const { response, text } = await post(url, headers, build(request), signal, context.timeoutMs)
        return rated(response.headers, () => {
          if (!response.ok)
            throw answers.check(
              classify(response.status, text, response.headers, undefined, context.tier),
              text,
            )
          answers.ok()
          return read(response.status, text)
        })
      },
      async embed(inputs, embedOptions, signal) {
        const payload = embedBody(context.model, inputs, embedOptions, "base64")
        const { response, text } = await post(
          `${base}/embeddings`,
          headers,
          payload,
          signal,
          context.timeoutMs,
        )
        return rated(response.headers, () => {
          if (!response.ok) throw answers.check(classify(response.status, text, response.headers), text)
          answers.ok()
          return embedReplyOf(response.status, json(response.status, text), inputs.length, embedOptions)
        })
      },
      batch: openaiBatch(context, embedding ? "embeddings" : (named as "chat" | "responses"), answers),
    }
  },
})
