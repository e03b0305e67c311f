/** The openai-compatible provider against local servers answering as vLLM, Ollama, LM Studio and gateways do. */
import { describe, expect, test } from "bun:test"
import compatible from "../../../../src/plugins/providers/openai-compatible/openai-compatible.ts"
import { JobError, ProviderError } from "../../../../src/plugins/api/errors.ts"
import type { Request } from "../../../../src/plugins/api/define.ts"

type Answer = () => Response | Promise<Response>

interface Seen {
  path: string
  authorization: string | null
  body: Record<string, unknown>
}

interface Server extends AsyncDisposable {
  /** The base URL users write for such a server: http://127.0.0.1:PORT/v1 */
  url: string
  seen: Seen[]
}

/** A server that answers each prompt (the last user message) as scripted. */
function serve(answers: Record<string, Answer>): Server {
  const seen: Seen[] = []
  const hung = new Set<() => void>()
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      const body = (await req.json()) as Record<string, unknown>
      seen.push({ path: new URL(req.url).pathname, authorization: req.headers.get("authorization"), body })
      const messages = body.messages as { role: string; content: string }[]
      const prompt = messages.findLast((m) => m.role === "user")?.content ?? ""
      if (prompt === "hang")
        return new Promise<Response>((resolve) => hung.add(() => resolve(new Response(null))))
      const answer = answers[prompt]
      return answer ? answer() : new Response(`no answer scripted for ${prompt}`, { status: 599 })
    },
  })
  return {
    url: `http://127.0.0.1:${server.port}/v1`,
    seen,
    async [Symbol.asyncDispose]() {
      for (const release of hung) release()
      await server.stop(true)
    },
  }
}

const json =
  (body: unknown, status = 200, headers: Record<string, string> = {}): Answer =>
  () =>
    Response.json(body, { status, headers })
const text =
  (body: string, status: number, headers: Record<string, string> = {}): Answer =>
  () =>
    new Response(body, { status, headers: { "content-type": "text/plain", ...headers } })

const context = (baseUrl: string | undefined, apiKey?: string) => ({
  model: "llama3.2",
  baseUrl,
  apiKey,
  timeoutMs: 300,
})

const call = (url: string, request: Request | string, apiKey?: string) =>
  compatible
    .create({}, context(url, apiKey))
    .call(typeof request === "string" ? { prompt: request } : request, new AbortController().signal)

/** How a call failed, in full: everything the runner reads of the error. */
async function failure(url: string, prompt: string) {
  try {
    await call(url, prompt)
  } catch (e) {
    if (!(e instanceof ProviderError)) throw e
    const { errorClass, retryable, pause, retryAfterMs, status, message } = e
    return { errorClass, retryable, pause, retryAfterMs, status, message }
  }
  throw new Error(`${prompt}: the call did not fail`)
}

type Failure = Awaited<ReturnType<typeof failure>>

const VLLM = {
  id: "chatcmpl-7f1c",
  object: "chat.completion",
  created: 1_760_000_000,
  model: "meta-llama/Llama-3.1-8B-Instruct",
  choices: [
    {
      index: 0,
      message: { role: "assistant", reasoning_content: null, content: "Paris", tool_calls: [] },
      logprobs: null,
      finish_reason: "stop",
      stop_reason: null,
    },
  ],
  usage: { prompt_tokens: 12, total_tokens: 15, completion_tokens: 3, prompt_tokens_details: null },
  prompt_logprobs: null,
  kv_transfer_params: null,
}

const OLLAMA_NO_USAGE = {
  id: "chatcmpl-123",
  object: "chat.completion",
  created: 1_760_000_000,
  model: "llama3.2",
  system_fingerprint: "fp_ollama",
  choices: [{ index: 0, message: { role: "assistant", content: "Bonjour" }, finish_reason: "stop" }],
}

describe("the openai-compatible provider", () => {
  test("sends the chat completions body to BASE/chat/completions, with max_tokens and no key unless given", async () => {
    await using server = serve({ q: json(VLLM) })
    await call(server.url, { system: "s", prompt: "q", max_tokens: 5, temperature: 0, params: { top_k: 20 } })
    await call(`${server.url}/`, "q", "sk-local")
    await call(`${server.url}/chat/completions`, "q")
    expect(server.seen).toEqual([
      {
        path: "/v1/chat/completions",
        authorization: null,
        body: {
          model: "llama3.2",
          messages: [
            { role: "system", content: "s" },
            { role: "user", content: "q" },
          ],
          max_tokens: 5,
          temperature: 0,
          top_k: 20,
        },
      },
      {
        path: "/v1/chat/completions",
        authorization: "Bearer sk-local",
        body: { model: "llama3.2", messages: [{ role: "user", content: "q" }] },
      },
      {
        path: "/v1/chat/completions",
        authorization: null,
        body: { model: "llama3.2", messages: [{ role: "user", content: "q" }] },
      },
    ])
  })

  test("reads a vLLM completion, ignoring the fields OpenAI does not send", async () => {
    await using server = serve({ q: json(VLLM) })
    expect(await call(server.url, "q")).toEqual({
      text: "Paris",
      usage: { input_tokens: 12, output_tokens: 3 },
    })
  })

  test("reads answers without usage, with usage named input/output, and with no finish_reason or headers", async () => {
    await using server = serve({
      ollama: json(OLLAMA_NO_USAGE),
      named: json({
        choices: [{ message: { content: "ok" } }],
        usage: { input_tokens: 7, output_tokens: 2 },
      }),
      bare: () => new Response(JSON.stringify({ choices: [{ message: { content: "bare" } }] })),
    })
    expect(await call(server.url, "ollama")).toEqual({
      text: "Bonjour",
      usage: { input_tokens: 0, output_tokens: 0 },
    })
    expect(await call(server.url, "named")).toEqual({
      text: "ok",
      usage: { input_tokens: 7, output_tokens: 2 },
    })
    expect(await call(server.url, "bare")).toEqual({
      text: "bare",
      usage: { input_tokens: 0, output_tokens: 0 },
    })
  })

  test("joins the text parts of content given as a list of parts", async () => {
    await using server = serve({
      parts: json({
        choices: [
          {
            message: {
              role: "assistant",
              content: [
                { type: "text", text: "Hello, " },
                { type: "thinking", thinking: "hidden" },
                { type: "image_url", image_url: { url: "data:," } },
                { type: "text", text: "world" },
              ],
            },
            finish_reason: "stop",
          },
        ],
        usage: { prompt_tokens: 4, completion_tokens: 3 },
      }),
    })
    expect(await call(server.url, "parts")).toEqual({
      text: "Hello, world",
      usage: { input_tokens: 4, output_tokens: 3 },
    })
  })

  test("never takes reasoning for the answer: no content is a bad response, final when max_tokens ran out", async () => {
    const thinking = (finish_reason: string) =>
      json({
        choices: [
          { message: { role: "assistant", content: null, reasoning_content: "Let me think" }, finish_reason },
        ],
      })
    await using server = serve({
      length: thinking("length"),
      stop: thinking("stop"),
      empty: json({ choices: [] }),
    })
    expect(await failure(server.url, "length")).toEqual({
      errorClass: "bad_response",
      retryable: false,
      pause: false,
      retryAfterMs: undefined,
      status: 200,
      message:
        "the completion has reasoning but no answer: it reached max_tokens while reasoning (raise max_tokens)",
    })
    expect(await failure(server.url, "stop")).toEqual({
      errorClass: "bad_response",
      retryable: true,
      pause: false,
      retryAfterMs: undefined,
      status: 200,
      message: "the completion has reasoning but no answer",
    })
    expect(await failure(server.url, "empty")).toEqual({
      errorClass: "bad_response",
      retryable: true,
      pause: false,
      retryAfterMs: undefined,
      status: 200,
      message: "the completion has no message content",
    })
  })

  test("classifies error bodies of every common shape as the openai provider classifies statuses", async () => {
    const cases: [string, Answer, Failure][] = [
      [
        "plain text 500",
        text("Internal Server Error", 500),
        {
          errorClass: "server",
          retryable: true,
          pause: false,
          retryAfterMs: undefined,
          status: 500,
          message: "HTTP 500: Internal Server Error",
        },
      ],
      [
        "html 502 with retry-after",
        text("<html><body>Bad Gateway</body></html>", 502, { "retry-after": "7" }),
        {
          errorClass: "server",
          retryable: true,
          pause: false,
          retryAfterMs: 7000,
          status: 502,
          message: "HTTP 502: <html><body>Bad Gateway</body></html>",
        },
      ],
      [
        "ollama string error",
        json({ error: 'model "llama9" not found, try pulling it first' }, 404),
        {
          errorClass: "not_found",
          retryable: false,
          pause: false,
          retryAfterMs: undefined,
          status: 404,
          message: 'HTTP 404: model "llama9" not found, try pulling it first',
        },
      ],
      [
        "string error 503",
        json({ error: "server busy" }, 503),
        {
          errorClass: "server",
          retryable: true,
          pause: false,
          retryAfterMs: undefined,
          status: 503,
          message: "HTTP 503: server busy",
        },
      ],
      [
        "detail 401",
        json({ detail: "Invalid API key" }, 401),
        {
          errorClass: "auth",
          retryable: false,
          pause: true,
          retryAfterMs: undefined,
          status: 401,
          message: "HTTP 401: Invalid API key",
        },
      ],
      [
        "fastapi 422",
        json({ detail: [{ loc: ["body", "messages"], msg: "Field required", type: "missing" }] }, 422),
        {
          errorClass: "bad_request",
          retryable: false,
          pause: false,
          retryAfterMs: undefined,
          status: 422,
          message: "HTTP 422: body.messages: Field required",
        },
      ],
      [
        "old vllm 400",
        json(
          {
            object: "error",
            message: "This model's maximum context length is 8192 tokens.",
            type: "BadRequestError",
            param: null,
            code: 400,
          },
          400,
        ),
        {
          errorClass: "bad_request",
          retryable: false,
          pause: false,
          retryAfterMs: undefined,
          status: 400,
          message: "HTTP 400: This model's maximum context length is 8192 tokens.",
        },
      ],
      [
        "openai-shaped 429",
        json({ error: { message: "slow down", type: "rate_limit_error", code: 429 } }, 429, {
          "retry-after": "2",
        }),
        {
          errorClass: "rate_limit",
          retryable: true,
          pause: false,
          retryAfterMs: 2000,
          status: 429,
          message: "HTTP 429: slow down",
        },
      ],
      [
        "gateway quota",
        json(
          { error: { message: "quota exceeded", type: "insufficient_quota", code: "insufficient_quota" } },
          429,
        ),
        {
          errorClass: "quota",
          retryable: false,
          pause: true,
          retryAfterMs: undefined,
          status: 429,
          message: "HTTP 429: quota exceeded",
        },
      ],
    ]
    await using server = serve(Object.fromEntries(cases.map(([name, answer]) => [name, answer])))
    for (const [name, , expected] of cases)
      expect([name, await failure(server.url, name)]).toEqual([name, expected])
  })

  test("a 200 whose body is an error is a failure, classified by the status it carries", async () => {
    await using server = serve({
      "string error": json({ error: "No models loaded. Please load a model first." }),
      "numeric code": json({ error: { message: "Rate limit exceeded", code: 429 } }, 200, {
        "retry-after": "4",
      }),
      "upstream down": json({ error: { message: "Provider returned error", code: 502, metadata: {} } }),
      "error object": json({
        object: "error",
        message: "engine crashed",
        type: "InternalServerError",
        code: 500,
      }),
    })
    expect(await failure(server.url, "string error")).toEqual({
      errorClass: "server",
      retryable: true,
      pause: false,
      retryAfterMs: undefined,
      status: 200,
      message: "HTTP 200 with an error: No models loaded. Please load a model first.",
    })
    expect(await failure(server.url, "numeric code")).toEqual({
      errorClass: "rate_limit",
      retryable: true,
      pause: false,
      retryAfterMs: 4000,
      status: 429,
      message: "HTTP 429: Rate limit exceeded",
    })
    expect(await failure(server.url, "upstream down")).toMatchObject({
      errorClass: "server",
      retryable: true,
      status: 502,
    })
    expect(await failure(server.url, "error object")).toMatchObject({
      errorClass: "server",
      retryable: true,
      status: 500,
    })
  })

  test("a 200 that is not JSON, and a server that never answers, are retryable", async () => {
    await using server = serve({ garbage: text("<html>oops</html>", 200) })
    expect(await failure(server.url, "garbage")).toMatchObject({
      errorClass: "bad_response",
      retryable: true,
    })
    expect(await failure(server.url, "hang")).toMatchObject({ errorClass: "timeout", retryable: true })
  })

  test("refuses to start without a base URL, naming provider.base_url", () => {
    let error: unknown
    try {
      compatible.create({}, context(undefined))
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(JobError)
    expect((error as JobError).problems).toEqual([
      'provider.base_url: missing (required: provider "openai-compatible" has no default server)',
    ])
    expect((error as JobError).hint).toContain("OPENAI_BASE_URL")
  })
})
