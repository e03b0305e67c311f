/**
 * Every request shape the built-in providers send, checked by Steady against the provider's official OpenAPI
 * spec over real HTTP: provider → recording proxy → Steady. Skipped, with one line from the preload, where the
 * specs are missing (test/lib/spec.ts); failed instead under SPOOL_REQUIRE_ALL=1, as in CI.
 */
import { describe, expect, test } from "bun:test"
import { ProviderError } from "../../src/plugins/api/errors.ts"
import type { Provider, Request } from "../../src/plugins/api/define.ts"
import openai from "../../src/plugins/providers/openai/openai.ts"
import compatible from "../../src/plugins/providers/openai-compatible/openai-compatible.ts"
import anthropic from "../../src/plugins/providers/anthropic/anthropic.ts"
import { SKIP_SPEC_CHECKS } from "../lib/spec.ts"
import { record, startSteady } from "../lib/steady.ts"

/** One provider, the spec it must conform to, and the shapes only its API has. */
export interface ProviderCase {
  provider: Provider
  options?: Record<string, unknown>
  /** A file in the specs' directory. */
  spec: string
  /** The spec path every call must match, as Steady reports it in X-Steady-Matched-Path. */
  path: string
  /** The provider's base URL for a server at `url` (a spec whose paths carry no version prefix gets none). */
  baseUrl(url: string): string
  model: string
  apiKey: string | undefined
  /** Request shapes beyond `COMMON_SHAPES`: mostly `params` this API knows. */
  shapes: Request[]
  /** `params` that break the spec, to show a wrong request from the provider is caught. */
  wrong: Record<string, unknown>
  /** A body the spec refuses, sent straight to Steady at `path`. */
  invalid: Record<string, unknown>
}

/** Shapes every provider must send validly: spool's neutral request without `params`. */
export const COMMON_SHAPES: Request[] = [
  { prompt: "plain" },
  { system: "You are terse.", prompt: "with a system prompt" },
  { prompt: "with limits", max_tokens: 50, temperature: 0.2 },
  { system: "sys", prompt: "everything", max_tokens: 1, temperature: 0 },
]

const OPENAI_SHAPES: Request[] = [
  { prompt: "sampling params", params: { top_p: 0.5, seed: 3, stop: ["\n"], user: "u1" } },
  { prompt: "penalties", params: { frequency_penalty: 0.5, presence_penalty: -0.5, n: 1, logprobs: false } },
  { prompt: "json mode", params: { response_format: { type: "json_object" } } },
  {
    prompt: "structured output",
    max_tokens: 200,
    params: {
      response_format: {
        type: "json_schema",
        json_schema: {
          name: "answer",
          strict: true,
          schema: {
            type: "object",
            properties: { label: { type: "string" } },
            required: ["label"],
            additionalProperties: false,
          },
        },
      },
    },
  },
]

const OPENAI_INVALID = {
  model: "gpt-4.1-mini",
  messages: "not a list",
  temperature: "hot",
}

/** The Responses API: its own names for sampling, metadata and structured output (`text.format`). */
const OPENAI_RESPONSES_SHAPES: Request[] = [
  { prompt: "sampling params", params: { top_p: 0.5, store: false, safety_identifier: "u1" } },
  { prompt: "metadata", params: { metadata: { run: "r-1", row: "7" }, prompt_cache_key: "spool" } },
  { prompt: "json mode", params: { text: { format: { type: "json_object" } } } },
  {
    prompt: "structured output",
    max_tokens: 200,
    params: {
      text: {
        format: {
          type: "json_schema",
          name: "answer",
          strict: true,
          schema: {
            type: "object",
            properties: { label: { type: "string" } },
            required: ["label"],
            additionalProperties: false,
          },
        },
      },
    },
  },
]

const ANTHROPIC_SHAPES: Request[] = [
  { prompt: "sampling params", params: { top_k: 5, top_p: 0.9, stop_sequences: ["\n\n"] } },
  { prompt: "metadata", params: { metadata: { user_id: "u-1" } } },
]

/** The one list of providers checked here; a new built-in provider adds its case to it. */
export const PROVIDER_CASES: ProviderCase[] = [
  {
    provider: openai,
    spec: "openai-openapi.yaml",
    path: "/chat/completions",
    baseUrl: (url) => url,
    model: "gpt-4.1-mini",
    apiKey: "sk-test",
    shapes: OPENAI_SHAPES,
    wrong: { temperature: "hot" },
    invalid: OPENAI_INVALID,
  },
  {
    provider: openai,
    options: { endpoint: "responses" },
    spec: "openai-openapi.yaml",
    path: "/responses",
    baseUrl: (url) => url,
    model: "gpt-4.1-mini",
    apiKey: "sk-test",
    shapes: OPENAI_RESPONSES_SHAPES,
    // metadata values must be strings
    wrong: { metadata: { row: 7 } },
    invalid: { model: "gpt-4.1-mini", input: 42, max_output_tokens: "many" },
  },
  {
    provider: compatible,
    spec: "openai-openapi.yaml",
    path: "/chat/completions",
    // with a trailing slash, as such base URLs are often written
    baseUrl: (url) => `${url}/`,
    model: "llama3.2",
    apiKey: undefined,
    shapes: OPENAI_SHAPES,
    wrong: { messages: [{ role: "wizard", content: "x" }] },
    invalid: OPENAI_INVALID,
  },
  {
    provider: anthropic,
    spec: "anthropic-openapi.json",
    path: "/v1/messages",
    // the SDK adds /v1 itself
    baseUrl: (url) => url,
    model: "claude-haiku-4-5",
    apiKey: "sk-ant-test",
    shapes: ANTHROPIC_SHAPES,
    wrong: { temperature: "hot" },
    invalid: { model: "claude-haiku-4-5", messages: "not a list", max_tokens: "many" },
  },
]

const signal = () => new AbortController().signal

/** What a call came to: "reply", or the class of the ProviderError it threw. */
async function outcome(call: Promise<unknown>): Promise<string> {
  try {
    await call
    return "reply"
  } catch (e) {
    if (e instanceof ProviderError) return e.errorClass
    throw e
  }
}

for (const c of PROVIDER_CASES) {
  describe.skipIf(SKIP_SPEC_CHECKS)(`the ${c.provider.name} provider against ${c.spec} (${c.path})`, () => {
    const client = (url: string) =>
      c.provider.create(c.options ?? {}, {
        model: c.model,
        baseUrl: c.baseUrl(url),
        apiKey: c.apiKey,
        timeoutMs: 30_000,
      })

    test("every request shape it can send is valid against the official spec", async () => {
      await using steady = await startSteady(c.spec)
      await using proxy = record(steady.url)
      const shapes = [...COMMON_SHAPES, ...c.shapes]
      const provider = client(proxy.url)
      const outcomes: string[] = []
      for (const shape of shapes) outcomes.push(await outcome(provider.call(shape, signal())))

      expect(proxy.exchanges.map((e) => [e.path, e.valid, e.errors])).toEqual(
        shapes.map(() => [c.path, "true", []]),
      )
      // a valid request gets a 200 whose body Steady generated from the response schema: the provider
      // reads it, or calls it a bad response; it is never refused
      for (const o of outcomes) expect(["reply", "bad_response"]).toContain(o)
    }, 120_000)

    test("the check can fail: a body that breaks the spec is reported invalid", async () => {
      await using steady = await startSteady(c.spec)
      const straight = await fetch(`${steady.url}${c.path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(c.invalid),
      })
      expect([straight.status, straight.headers.get("x-steady-request-valid")]).toEqual([400, "false"])
      expect(Number(straight.headers.get("x-steady-error-count"))).toBeGreaterThan(0)
      await straight.arrayBuffer()

      await using proxy = record(steady.url)
      const made = await outcome(client(proxy.url).call({ prompt: "wrong", params: c.wrong }, signal()))
      expect(made).toBe("bad_request")
      expect(proxy.exchanges.map((e) => [e.status, e.valid])).toEqual([[400, "false"]])
      expect(proxy.exchanges[0]?.errors.length).toBeGreaterThan(0)
    }, 120_000)
  })
}
