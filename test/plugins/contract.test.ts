/**
 * The provider contract suite (test/lib/provider-contract.ts) against every built-in provider and the example
 * provider plugin, each on a server it can script faults on; the mock provider, which talks to no server, on none.
 *
 * A check runs only where its fault exists: Anthropic's 529 (overloaded) is not a status OpenAI's API sends, so
 * the OpenAI fake (openai, both endpoints, and openai-compatible) is not asked for it.
 */
import openai from "../../src/plugins/providers/openai/openai.ts"
import anthropic from "../../src/plugins/providers/anthropic/anthropic.ts"
import compatible from "../../src/plugins/providers/openai-compatible/openai-compatible.ts"
import mock from "../../src/plugins/providers/mock/mock.ts"
import httpEndpoint from "../../examples/plugins/http-endpoint/http-endpoint.ts"
import type { Request, Usage } from "../../src/plugins/api/define.ts"
import { startFake, wireFault, type FaultKind as OpenAIFault } from "../lib/fake-openai.ts"
import { startFakeAnthropic, type FaultKind as AnthropicFault } from "../lib/fake-anthropic.ts"
import {
  NOT_JSON,
  testProvider,
  type Fault,
  type HarnessServer,
  type ProviderHarness,
  type ScriptedFault,
} from "../lib/provider-contract.ts"

const KEY = "contract-key"

/** Both fakes, and the http-endpoint harness, count tokens so. */
const tokens = (text: string) => Math.max(1, Math.ceil(text.length / 4))
const echo = (prompt: string) => `echo: ${prompt}`

function unsupported(server: string, fault: ScriptedFault): never {
  throw new Error(`${server} cannot produce "${fault}": leave it out of the harness's supports`)
}

// ---------------------------------------------------------------------------------------------------------
// The OpenAI fake: openai (chat and responses) and openai-compatible

const OPENAI_FAULTS: Partial<Record<ScriptedFault, OpenAIFault>> = {
  "429": "429",
  "429-date": "429",
  "500": "500",
  hang: "hang",
  reset: "reset",
  garbage: "garbage",
  quota: "quota",
}

/** What the fakes answer a request that carries a schema (see ProviderHarness.structured). */
const structuredAnswer = (input: string) =>
  input === NOT_JSON ? "Here is my answer in prose." : JSON.stringify({ label: input })

const OPENAI_SUPPORTS: Fault[] = ["429", "429-date", "500", "hang", "reset", "garbage", "auth", "quota"]

/** The OpenAI fake, requiring `Bearer KEY`, as a harness server for a provider that takes `options`. */
function openaiServer<O>(options: O, model: string): () => Promise<HarnessServer<O>> {
  return async () => {
    const bodies: Record<string, unknown>[] = []
    const fake = await startFake({
      apiKey: KEY,
      reply: (input, body) => {
        bodies.push(body)
        return body.response_format || body.text ? structuredAnswer(input) : echo(input)
      },
    })
    return {
      args: ({ timeoutMs, apiKey = KEY }) => [options, { model, baseUrl: fake.url, apiKey, timeoutMs }],
      fail(prompt, fault, retryAfter) {
        const kind = OPENAI_FAULTS[fault] ?? unsupported("the OpenAI fake", fault)
        if (retryAfter !== undefined) fake.faults = { rate: 0, kinds: [], retryAfter }
        fake.script.set(prompt, [kind])
      },
      echo,
      bodies,
      invalid: fake.invalid,
      [Symbol.asyncDispose]: () => fake.stop(),
    }
  }
}

/** Chat completions: the system prompt as the first message; `limit` names the output-limit field. */
function chatWire(limit: "max_completion_tokens" | "max_tokens") {
  return (model: string, request: Request): Record<string, unknown> => ({
    model,
    messages: [
      ...(request.system ? [{ role: "system", content: request.system }] : []),
      { role: "user", content: request.prompt },
    ],
    ...(request.max_tokens !== undefined && { [limit]: request.max_tokens }),
    ...(request.temperature !== undefined && { temperature: request.temperature }),
    ...request.params,
  })
}

const chatUsage = (body: Record<string, unknown>, text: string): Usage => ({
  input_tokens: tokens(JSON.stringify(body.messages ?? "")),
  output_tokens: tokens(text),
})

testProvider(openai, {
  label: 'endpoint = "chat"',
  supports: OPENAI_SUPPORTS,
  start: openaiServer({ endpoint: "chat" } as const, "gpt-4.1-mini"),
  wire: chatWire("max_completion_tokens"),
  usage: chatUsage,
  options: { given: {}, parsed: { endpoint: "chat" } },
  structured: {
    schemaIn: (body) => (body.response_format as { json_schema: { schema: unknown } }).json_schema.schema,
  },
})

testProvider(openai, {
  label: 'endpoint = "responses"',
  supports: OPENAI_SUPPORTS,
  start: openaiServer({ endpoint: "responses" } as const, "gpt-4.1-mini"),
  // the prompt as `input`, the system prompt as `instructions`; the API refuses a limit below 16
  wire: (model, request) => ({
    model,
    input: request.prompt,
    ...(request.system && { instructions: request.system }),
    ...(request.max_tokens !== undefined && { max_output_tokens: Math.max(16, request.max_tokens) }),
    ...(request.temperature !== undefined && { temperature: request.temperature }),
    ...request.params,
  }),
  usage: (body, text) => ({
    input_tokens:
      tokens(JSON.stringify(body.input ?? "")) +
      (typeof body.instructions === "string" && body.instructions ? tokens(body.instructions) : 0),
    output_tokens: tokens(text),
  }),
  options: { given: { endpoint: "responses" }, parsed: { endpoint: "responses" } },
  structured: { schemaIn: (body) => (body.text as { format: { schema: unknown } }).format.schema },
})

testProvider(compatible, {
  label: "on the OpenAI fake",
  supports: OPENAI_SUPPORTS,
  start: openaiServer({}, "llama3.2"),
  wire: chatWire("max_tokens"),
  usage: chatUsage,
  options: { given: {}, parsed: {} },
  structured: {
    schemaIn: (body) => (body.response_format as { json_schema: { schema: unknown } }).json_schema.schema,
  },
})

// ---------------------------------------------------------------------------------------------------------
// The Anthropic fake

const ANTHROPIC_FAULTS: Partial<Record<ScriptedFault, AnthropicFault>> = {
  "429": "429",
  "429-date": "429",
  "500": "500",
  "529": "529",
  hang: "hang",
  reset: "reset",
  garbage: "garbage",
  quota: "credit",
}

testProvider(anthropic, {
  supports: ["429", "429-date", "500", "529", "hang", "reset", "garbage", "auth", "quota"],
  async start() {
    const bodies: Record<string, unknown>[] = []
    const fake = await startFakeAnthropic({
      apiKey: KEY,
      reply: (input, body) => {
        bodies.push(body)
        return body.tools ? structuredAnswer(input) : echo(input)
      },
    })
    return {
      args: ({ timeoutMs, apiKey = KEY }) => [
        {},
        { model: "claude-haiku-4-5", baseUrl: fake.url, apiKey, timeoutMs },
      ],
      fail(prompt, fault, retryAfter) {
        const kind = ANTHROPIC_FAULTS[fault] ?? unsupported("the Anthropic fake", fault)
        if (retryAfter !== undefined) fake.faults = { rate: 0, kinds: [], retryAfter }
        fake.script.set(prompt, [kind])
      },
      echo,
      bodies,
      invalid: fake.invalid,
      [Symbol.asyncDispose]: () => fake.stop(),
    }
  },
  // max_tokens is required by the API: 4096 when the request gives none
  wire: (model, request) => ({
    model,
    max_tokens: request.max_tokens ?? 4096,
    messages: [{ role: "user", content: request.prompt }],
    ...(request.system && { system: request.system }),
    ...(request.temperature !== undefined && { temperature: request.temperature }),
    ...request.params,
  }),
  usage: (body, text) => ({
    input_tokens: tokens(JSON.stringify([body.system ?? "", body.messages ?? ""])),
    output_tokens: tokens(text),
  }),
  options: { given: {}, parsed: {} },
  // a forced tool call: the tool's input schema is the job's
  structured: { schemaIn: (body) => (body.tools as { input_schema: unknown }[])[0]?.input_schema },
})

// ---------------------------------------------------------------------------------------------------------
// The example provider plugin, on a server that answers as its documentation says

type EndpointOptions = Parameters<typeof httpEndpoint.create>[0]

/** What the endpoint harness reports: the whole body's tokens in, the answer's out. */
const endpointUsage = (body: Record<string, unknown>, text: string): Usage => ({
  input_tokens: tokens(JSON.stringify(body)),
  output_tokens: tokens(text),
})

/**
 * `POST /generate` taking `{ model, prompt, system?, max_tokens?, temperature?, ...params }` with
 * `Authorization: Bearer KEY`, answering `{ output: { text }, usage: { input_tokens, output_tokens } }` (the
 * shape of the example's job.toml and server.ts), with the contract's faults scripted per prompt.
 */
async function startEndpoint(): Promise<HarnessServer<EndpointOptions>> {
  const hung = new Set<() => void>()
  const script = new Map<string, { fault: ScriptedFault; retryAfter: string | undefined }>()
  const bodies: Record<string, unknown>[] = []
  const error = (status: number, message: string, headers: Record<string, string> = {}) =>
    Response.json({ error: message }, { status, headers })

  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeout: 0,
    async fetch(req) {
      const path = new URL(req.url).pathname
      if (req.method !== "POST" || path !== "/generate") return error(404, `no ${req.method} ${path}`)
      if (req.headers.get("authorization") !== `Bearer ${KEY}`) return error(401, "invalid key")
      const body = (await req.json()) as Record<string, unknown>
      const prompt = typeof body.prompt === "string" ? body.prompt : ""
      const scripted = script.get(prompt)
      script.delete(prompt)
      switch (scripted?.fault) {
        case "429":
        case "429-date":
          return error(429, "slow down", scripted.retryAfter ? { "retry-after": scripted.retryAfter } : {})
        case "500":
          return error(500, "internal error")
        case "529":
          return error(529, "overloaded")
        case "garbage":
        case "reset":
        case "hang":
          // the same broken answers the provider fakes give (a garbage 200, a body cut mid-way, no answer at all)
          return wireFault(scripted.fault, req.signal, hung)!
        case "quota":
          return error(402, "payment required: the account has no credit left")
        case undefined:
          break
      }
      bodies.push(body)
      const text = echo(prompt)
      return Response.json({ output: { text }, usage: endpointUsage(body, text) })
    },
    error(e) {
      return new Response(String(e), { status: 500 })
    },
  })

  const url = `http://127.0.0.1:${server.port}/generate`
  return {
    args: ({ timeoutMs, apiKey = KEY }) => [
      { url, reply_field: "output.text", headers: {} },
      { model: "in-house-7b", baseUrl: undefined, apiKey, timeoutMs },
    ],
    fail(prompt, fault, retryAfter) {
      script.set(prompt, { fault, retryAfter })
    },
    echo,
    bodies,
    async [Symbol.asyncDispose]() {
      for (const release of [...hung]) release()
      await server.stop(true)
    },
  }
}

const endpointHarness: ProviderHarness<EndpointOptions> = {
  supports: ["429", "429-date", "500", "529", "hang", "reset", "garbage", "auth", "quota"],
  start: startEndpoint,
  wire: (model, request) => ({
    model,
    prompt: request.prompt,
    ...(request.system !== undefined && { system: request.system }),
    ...(request.max_tokens !== undefined && { max_tokens: request.max_tokens }),
    ...(request.temperature !== undefined && { temperature: request.temperature }),
    ...request.params,
  }),
  usage: endpointUsage,
  options: {
    given: { url: "http://127.0.0.1:8080/generate" },
    parsed: { url: "http://127.0.0.1:8080/generate", reply_field: "text", headers: {} },
  },
}

testProvider(httpEndpoint, endpointHarness)

// ---------------------------------------------------------------------------------------------------------
// The mock provider: no server, so no faults and no wire; its options, replies, usage and aborts are the contract's

testProvider(mock, {
  label: "offline",
  supports: [],
  async start() {
    return {
      args: ({ timeoutMs, apiKey }) => [
        { latency_ms: 0, reply: "echo: {{prompt}}" },
        { model: "mock", baseUrl: undefined, apiKey, timeoutMs },
      ],
      fail: (_prompt, fault) => unsupported("the mock provider", fault),
      echo,
      bodies: [],
      [Symbol.asyncDispose]: async () => {},
    }
  },
  // a token per 4 characters, rounded up: the system prompt and the prompt in, the reply out
  usage: (request, text) => ({
    input_tokens: Math.ceil(
      `${typeof request.system === "string" ? request.system : ""}${String(request.prompt)}`.length / 4,
    ),
    output_tokens: Math.ceil(text.length / 4),
  }),
  options: { given: {}, parsed: { latency_ms: 0, reply: "mock reply to: {{prompt}}" } },
})
