/** Deterministic offline replies: for trying spool without a key, and for tests and benchmarks. */
import * as v from "valibot"
import { defineProvider } from "../../api/define.ts"

const tokens = (text: string) => Math.ceil(text.length / 4)

export default defineProvider({
  name: "mock",
  options: v.strictObject({
    /** Simulated latency of every call, in milliseconds. */
    latency_ms: v.optional(v.pipe(v.number(), v.minValue(0)), 0),
    /** The reply; `{{prompt}}` stands for the rendered prompt. */
    reply: v.optional(v.string(), "mock reply to: {{prompt}}"),
  }),
  keyEnv: undefined,
  modelOptional: true,
  create(options) {
    return {
      async call(request, signal) {
        // as a real provider's fetch does: a call whose run is already stopping is not made
        signal.throwIfAborted()
        if (options.latency_ms > 0) {
          await new Promise<void>((done, fail) => {
            const timer = setTimeout(done, options.latency_ms)
            signal.addEventListener("abort", () => (clearTimeout(timer), fail(signal.reason)), { once: true })
          })
        }
        const text = options.reply.replaceAll("{{prompt}}", request.prompt)
        return {
          text,
          usage: {
            input_tokens: tokens((request.system ?? "") + request.prompt),
            output_tokens: tokens(text),
          },
        }
      },
    }
  },
})
