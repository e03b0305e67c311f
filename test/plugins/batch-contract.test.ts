/**
 * The batch client contract suite (test/lib/batch-contract.ts) against both built-in batch clients, each on its
 * provider's fake Batch API: openai (both endpoints) on fake-openai.ts, anthropic on fake-anthropic.ts.
 */
import openai from "../../src/plugins/providers/openai/openai.ts"
import anthropic from "../../src/plugins/providers/anthropic/anthropic.ts"
import type { BatchClient, ProviderClient, Reply } from "../../src/plugins/api/define.ts"
import { testBatchClient, type BatchServer } from "../lib/batch-contract.ts"
import { tokens } from "../lib/batch-helpers.ts"
import { startFake } from "../lib/fake-openai.ts"
import { startFakeAnthropic } from "../lib/fake-anthropic.ts"

const KEY = "contract-key"
const TIMEOUT_MS = 5000

function batchOf(client: ProviderClient): BatchClient {
  if (!client.batch) throw new Error("the provider has no batch client")
  return client.batch
}

/** An ended batch, as `download` needs it, whose output is `output` (OpenAI's file id, Anthropic's results URL). */
const endedWith = (id: string, status: string, output: string) => ({
  id,
  status,
  phase: "ended" as const,
  outcome: "completed" as const,
  createdAt: 0,
  files: { output },
})

// ---------------------------------------------------------------------------------------------------------
// OpenAI: the Files and Batch APIs of fake-openai.ts, for the chat completions and the Responses endpoint

const OPENAI_MODEL = "gpt-4.1-mini"

for (const endpoint of ["chat", "responses"] as const) {
  const client = (baseUrl: string, timeoutMs = TIMEOUT_MS) =>
    batchOf(openai.create({ endpoint }, { model: OPENAI_MODEL, baseUrl, apiKey: KEY, timeoutMs }))
  testBatchClient({
    name: `openai (${endpoint})`,
    async start({ batch, now }) {
      const fake = await startFake({ apiKey: KEY, batch, now })
      const server: BatchServer = {
        client: () => client(fake.url),
        batch: fake.batch,
        [Symbol.asyncDispose]: () => fake.stop(),
      }
      return server
    },
    // the fake answers "echo: <input>", counting a quarter of the characters of what it was sent as input tokens
    reply(k): Reply {
      const text = `echo: item ${k}`
      const sent =
        endpoint === "chat"
          ? JSON.stringify([{ role: "user", content: `item ${k}` }])
          : JSON.stringify(`item ${k}`)
      return {
        text,
        usage: { input_tokens: tokens(sent), output_tokens: tokens(text), cached_input_tokens: undefined },
      }
    },
    lineError: (status) =>
      status === 400
        ? "HTTP 400: Invalid request."
        : "HTTP 500: The server had an error while processing your request.",
    words: {
      created: { status: "validating", phase: "validating" },
      cancelling: "cancelling",
      ended: (outcome) => outcome,
    },
    // created_at is in whole seconds
    createdAt: (ms) => Math.floor(ms / 1000) * 1000,
    unrunFailed: true,
    stalling: (url, timeoutMs) => ({
      client: client(`${url}/v1`, timeoutMs),
      batch: endedWith("batch_1", "completed", "file-1"),
    }),
  })
}

// ---------------------------------------------------------------------------------------------------------
// Anthropic: the Message Batches API of fake-anthropic.ts

const ANTHROPIC_MODEL = "claude-haiku-4-5"

const anthropicClient = (baseUrl: string, timeoutMs = TIMEOUT_MS) =>
  batchOf(anthropic.create({}, { model: ANTHROPIC_MODEL, baseUrl, apiKey: KEY, timeoutMs }))

testBatchClient({
  name: "anthropic",
  async start({ batch, now }) {
    const fake = await startFakeAnthropic({ apiKey: KEY, batch, now })
    const server: BatchServer = {
      client: () => anthropicClient(fake.url),
      batch: fake.batch,
      [Symbol.asyncDispose]: () => fake.stop(),
    }
    return server
  },
  base: { system: "sys" },
  // the fake answers "echo: <input>", counting a quarter of the characters of the system prompt and messages as input
  reply(k): Reply {
    const text = `echo: item ${k}`
    const input = tokens(JSON.stringify(["sys", [{ role: "user", content: `item ${k}` }]]))
    return {
      text,
      usage: { input_tokens: input, output_tokens: tokens(text), cached_input_tokens: undefined },
      finish: "stop",
    }
  },
  lineError: (status) => (status === 400 ? "HTTP 400: Invalid request." : "HTTP 500: Internal server error"),
  words: {
    created: { status: "in_progress", phase: "in_progress" },
    cancelling: "canceling",
    ended: () => "ended",
  },
  createdAt: (ms) => ms,
  unrunFailed: false,
  kind: (result) => (result === "cancelled" ? "canceled" : result),
  stalling: (url, timeoutMs) => ({
    client: anthropicClient(url, timeoutMs),
    batch: endedWith("msgbatch_1", "ended", `${url}/v1/messages/batches/msgbatch_1/results`),
  }),
})
