/** Deterministic offline replies: for trying spool without a key, and for tests and benchmarks. */
import * as v from "valibot"
import { defineProvider } from "../../api/define.ts"

const tokens = (text: string) => Math.ceil(text.length / 4)

/** The mock's vectors, without `dimensions`: short, so that quickstarts and benches store little. */
const MOCK_DIMENSIONS = 8

/**
 * A deterministic vector of a text: FNV-1a of the text seeds a xorshift, each dimension in [-1, 1). The same text
 * gives the same vector in every run (test/lib/fake-openai.ts `vectorOf` is the same function).
 */
export function mockVector(text: string, dimensions: number): Float32Array {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0
  let x = h || 1
  const out = new Float32Array(dimensions)
  for (let d = 0; d < dimensions; d++) {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    out[d] = x / 2 ** 31 - 1
  }
  return out
}

/** Waits `ms`, or throws the signal's reason when it is aborted first. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((done, fail) => {
    const timer = setTimeout(done, ms)
    signal.addEventListener("abort", () => (clearTimeout(timer), fail(signal.reason)), { once: true })
  })
}

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
        if (options.latency_ms > 0) await sleep(options.latency_ms, signal)
        const text = options.reply.replaceAll("{{prompt}}", request.prompt)
        return {
          text,
          usage: {
            input_tokens: tokens((request.system ?? "") + request.prompt),
            output_tokens: tokens(text),
          },
        }
      },
      async embed(inputs, embed, signal) {
        signal.throwIfAborted()
        if (options.latency_ms > 0) await sleep(options.latency_ms, signal)
        const dimensions = embed.dimensions ?? MOCK_DIMENSIONS
        return {
          vectors: inputs.map((text) => mockVector(text, dimensions)),
          usage: { input_tokens: inputs.reduce((sum, text) => sum + tokens(text), 0), output_tokens: 0 },
        }
      },
    }
  },
})
