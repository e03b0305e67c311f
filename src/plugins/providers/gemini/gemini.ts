/**
 * Google's Gemini API, realtime: `POST /v1beta/models/{model}:generateContent` with the key in `x-goog-api-key`
 * (wire.ts holds the format, the schema check and the error classes). The Batch API is in batch.ts.
 */
import * as v from "valibot"
import { defineProvider } from "../../api/define.ts"
import { rated } from "../../api/http.ts"
import { geminiBatch } from "./batch.ts"
import { body, modelPath, reply, schemaProblems, schemaRefusal, send, wire } from "./wire.ts"

/** The `gemini` provider: `GEMINI_API_KEY`, `base_url` or `GEMINI_BASE_URL`, no options of its own. */
export default defineProvider({
  name: "gemini",
  options: v.strictObject({}),
  keyEnv: "GEMINI_API_KEY",
  baseUrlEnv: "GEMINI_BASE_URL",
  // a job whose schema Gemini would refuse is refused with the job, before anything is opened or sent
  checkSchema: (schema) => schemaProblems(schema),
  create(_options, context) {
    const w = wire(context)
    const path = `/v1beta/${modelPath(context.model)}:generateContent`
    // the schema is checked once per client: every request of a job carries the same one
    const checked = new WeakMap<object, string[]>()
    const problems = (schema: Record<string, unknown>) => {
      const known = checked.get(schema)
      if (known) return known
      const found = schemaProblems(schema)
      checked.set(schema, found)
      return found
    }
    return {
      async call(request, signal) {
        signal.throwIfAborted()
        const refused = request.schema ? problems(request.schema.schema) : []
        if (refused.length) throw schemaRefusal(refused)
        const answer = await send(w, "POST", path, signal, {
          body: JSON.stringify(body(request)),
          headers: { "content-type": "application/json" },
        })
        return rated(answer.headers, () => reply(answer.json))
      },
      batch: geminiBatch(w, context.model, problems),
    }
  },
})
