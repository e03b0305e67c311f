/**
 * The batch client contract suite (test/lib/batch-contract.ts) against the gemini provider's Batch API client, on the
 * fake Gemini API (test/lib/fake-gemini.ts, its batches read through `contractView`). Gemini's own words: a batch
 * just created is BATCH_STATE_PENDING (validating), one running BATCH_STATE_RUNNING; there is no cancelling state (a
 * cancel ends the batch as BATCH_STATE_CANCELLED); and the requests a batch never ran have no line in its results.
 */
import gemini from "../../src/plugins/providers/gemini/gemini.ts"
import { remote } from "../../src/plugins/providers/gemini/batch.ts"
import type { BatchClient, Reply } from "../../src/plugins/api/define.ts"
import { testBatchClient, type BatchServer } from "../lib/batch-contract.ts"
import { tokens } from "../lib/batch-helpers.ts"
import { contractView, promptTokens, startFakeGemini } from "../lib/fake-gemini.ts"

const KEY = "gemini-batch-contract-key"
const MODEL = "gemini-2.5-flash"

/** The batch client of a gemini provider at `baseUrl`. */
function client(baseUrl: string, timeoutMs = 5000): BatchClient {
  const batch = gemini.create({}, { model: MODEL, baseUrl, apiKey: KEY, timeoutMs }).batch
  if (!batch) throw new Error("the gemini provider has no batch client")
  return batch
}

/** The state word of each end. */
const ENDED = {
  completed: "BATCH_STATE_SUCCEEDED",
  expired: "BATCH_STATE_EXPIRED",
  cancelled: "BATCH_STATE_CANCELLED",
}

testBatchClient({
  name: "gemini",
  async start({ batch, now }) {
    const fake = await startFakeGemini({ apiKey: KEY, batch, now })
    const server: BatchServer = {
      client: () => client(fake.url),
      batch: contractView(fake),
      [Symbol.asyncDispose]: () => fake.stop(),
    }
    return server
  },
  // the fake answers "echo: <input>", counting a quarter of the characters of the system instruction and contents
  reply(k): Reply {
    const text = `echo: item ${k}`
    const input = promptTokens({ contents: [{ role: "user", parts: [{ text: `item ${k}` }] }] })
    return {
      text,
      usage: { input_tokens: input, output_tokens: tokens(text), cached_input_tokens: undefined },
      finish: "stop",
    }
  },
  lineError: (status) =>
    status === 400
      ? "HTTP 400: INVALID_ARGUMENT: Request contains an invalid argument."
      : "HTTP 500: INTERNAL: An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
  words: {
    created: { status: "BATCH_STATE_PENDING", phase: "validating" },
    running: { status: "BATCH_STATE_RUNNING", phase: "in_progress" },
    ended: (outcome) => ENDED[outcome],
  },
  // createTime is an RFC 3339 time to the millisecond
  createdAt: (ms) => ms,
  unrunFailed: false,
  unrunLines: "absent",
  // an ended batch whose responses file the client downloads from the stalling server
  stalling: (url, timeoutMs) => ({
    client: client(url, timeoutMs),
    batch: remote({
      name: "batches/stall",
      done: true,
      metadata: {
        state: "BATCH_STATE_SUCCEEDED",
        createTime: new Date(0).toISOString(),
        batchStats: { requestCount: "2", successfulRequestCount: "2" },
      },
      response: { responsesFile: "files/stall" },
    }),
  }),
})
