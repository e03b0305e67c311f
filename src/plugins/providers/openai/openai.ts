/**
 * OpenAI chat completions or the Responses API (option `endpoint`), realtime, and embeddings (embed.ts). The hot call is a direct fetch of
 * the official wire format (wire.ts). The Batch API (`mode = "batch"`, chat or embedding lines) is in batch.ts,
 * through the official SDK.
 */
import * as v from "valibot"
import { defineProvider } from "../../api/define.ts"
import { JobError } from "../../api/errors.ts"
import { rated } from "../../api/http.ts"
import { openaiBatch } from "./batch.ts"
import { baseOf, body, classify, first, json, post, reply, responsesBody, responsesReply } from "./wire.ts"
import { embedBody, embedReplyOf } from "./embed.ts"

export default defineProvider({
  name: "openai",
  options: v.strictObject({
    /** chat (default) or responses; an embedding job needs none ("embeddings" or "/v1/embeddings" is taken too). */
    endpoint: v.optional(v.picklist(["chat", "responses", "embeddings", "/v1/embeddings"]), "chat"),
  }),
  keyEnv: "OPENAI_API_KEY",
  baseUrlEnv: "OPENAI_BASE_URL",
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
    const build = responses ? responsesBody : body
    const read = responses ? responsesReply : reply
    return {
      async call(request, signal) {
        const { response, text } = await post(
          url,
          headers,
          build(context.model, request),
          signal,
          context.timeoutMs,
        )
        return rated(response.headers, () => {
          if (!response.ok) throw answers.check(classify(response.status, text, response.headers), text)
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
