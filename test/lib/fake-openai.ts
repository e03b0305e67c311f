/**
 * A fake OpenAI server on 127.0.0.1 (`POST /v1/chat/completions` and `POST /v1/responses`) that speaks the official
 * wire format, with switchable faults.
 */
import { validateSchema } from "./spec.ts"

export type FaultKind = "ok" | "429" | "quota" | "500" | "503" | "hang" | "reset" | "garbage"

export interface Faults {
  /** Share of requests that get a fault, decided per (seed, input, how often the input was seen). */
  rate: number
  kinds: FaultKind[]
  seed?: number
  /** The Retry-After header of 429s: seconds or an HTTP-date. */
  retryAfter?: string
}

export interface FakeOptions {
  apiKey?: string
  latencyMs?: number
  /** Check every request body against CreateChatCompletionRequest or CreateResponse (default on). */
  validate?: boolean
  faults?: Faults
  reply?: (input: string, body: Record<string, unknown>) => string
}

export interface Fake extends AsyncDisposable {
  url: string
  port: number
  latencyMs: number
  faults: Faults | undefined
  /** input → the faults its 1st, 2nd, … requests get ("ok" for none); wins over `faults`. */
  script: Map<string, FaultKind[]>
  /** input → 200 completions (or responses) served: what the provider would bill. */
  paid: Map<string, number>
  /** input → requests received, faulted or not. */
  seen: Map<string, number>
  requests: number
  invalid: { body: unknown; errors: string[] }[]
  stop(): Promise<void>
}

const tokens = (text: string) => Math.max(1, Math.ceil(text.length / 4))

function errorBody(
  status: number,
  message: string,
  type: string,
  code: string | null,
  init: ResponseInit = {},
) {
  return Response.json({ error: { message, type, param: null, code } }, { status, ...init })
}

/** The text of the last user message: content may be a string or a list of text parts. */
function userText(messages: unknown): string {
  const list = Array.isArray(messages) ? (messages as { role?: string; content?: unknown }[]) : []
  const user = list.findLast((m) => m?.role === "user")
  if (typeof user?.content === "string") return user.content
  if (Array.isArray(user?.content)) {
    return (user.content as { text?: string }[]).map((p) => p.text ?? "").join("")
  }
  return ""
}

/** One endpoint the fake serves: its request schema, where its input text is, and its success body. */
interface Api {
  schema: string
  input(body: Record<string, unknown>): string
  answer(body: Record<string, unknown>, content: string, n: number): Record<string, unknown>
}

const model = (body: Record<string, unknown>) => (typeof body.model === "string" ? body.model : "unknown")

const CHAT: Api = {
  schema: "CreateChatCompletionRequest",
  input: (body) => userText(body.messages),
  answer(body, content, n) {
    const prompt = tokens(JSON.stringify(body.messages ?? ""))
    const completion = tokens(content)
    return {
      id: `chatcmpl-${n}`,
      object: "chat.completion",
      created: Math.floor(Date.now() / 1000),
      model: model(body),
      choices: [
        {
          index: 0,
          message: { role: "assistant", content, refusal: null },
          logprobs: null,
          finish_reason: "stop",
        },
      ],
      usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion },
    }
  },
}

/** `input` is a string or a list of input items; `instructions` counts toward the input tokens. */
const RESPONSES: Api = {
  schema: "CreateResponse",
  input: (body) => (typeof body.input === "string" ? body.input : userText(body.input)),
  answer(body, content, n) {
    const instructions = typeof body.instructions === "string" ? body.instructions : null
    const input = tokens(JSON.stringify(body.input ?? "")) + (instructions ? tokens(instructions) : 0)
    const output = tokens(content)
    const now = Math.floor(Date.now() / 1000)
    const hex = n.toString(16).padStart(8, "0")
    return {
      id: `resp_${hex}`,
      object: "response",
      created_at: now,
      status: "completed",
      completed_at: now,
      error: null,
      incomplete_details: null,
      instructions,
      max_output_tokens: typeof body.max_output_tokens === "number" ? body.max_output_tokens : null,
      model: model(body),
      output: [
        {
          type: "message",
          id: `msg_${hex}`,
          status: "completed",
          role: "assistant",
          content: [{ type: "output_text", text: content, annotations: [], logprobs: [] }],
        },
      ],
      parallel_tool_calls: true,
      previous_response_id: null,
      reasoning: { effort: null, summary: null },
      store: true,
      temperature: typeof body.temperature === "number" ? body.temperature : 1,
      text: { format: { type: "text" } },
      tool_choice: "auto",
      tools: [],
      top_p: typeof body.top_p === "number" ? body.top_p : 1,
      truncation: "disabled",
      usage: {
        input_tokens: input,
        input_tokens_details: { cached_tokens: 0, cache_write_tokens: 0 },
        output_tokens: output,
        output_tokens_details: { reasoning_tokens: 0 },
        total_tokens: input + output,
      },
      ...(typeof body.user === "string" ? { user: body.user } : {}),
      metadata: body.metadata ?? {},
    }
  },
}

function pick(faults: Faults, input: string, nth: number): FaultKind {
  const h = Number(Bun.hash(`${faults.seed ?? 0}|${input}|${nth}`) % 1_000_000n) / 1_000_000
  if (h >= faults.rate || faults.kinds.length === 0) return "ok"
  const which = Number(Bun.hash(`kind|${faults.seed ?? 0}|${input}|${nth}`) % BigInt(faults.kinds.length))
  return faults.kinds[which] ?? "ok"
}

export async function startFake(options: FakeOptions = {}): Promise<Fake> {
  const hung = new Set<() => void>()
  const reply = options.reply ?? ((input: string) => `echo: ${input}`)

  const fault = (kind: FaultKind, signal: AbortSignal): Response | Promise<Response> | undefined => {
    switch (kind) {
      case "429":
        return errorBody(429, "Rate limit reached for requests", "requests", "rate_limit_exceeded", {
          headers: { "retry-after": fake.faults?.retryAfter ?? "0" },
        })
      case "quota":
        return errorBody(
          429,
          "You exceeded your current quota, please check your plan and billing details.",
          "insufficient_quota",
          "insufficient_quota",
        )
      case "500":
        return errorBody(500, "The server had an error while processing your request.", "server_error", null)
      case "503":
        return errorBody(
          503,
          "The engine is currently overloaded, please try again later.",
          "server_error",
          null,
        )
      case "garbage":
        return new Response("<html>oops</html>", {
          status: 200,
          headers: { "content-type": "application/json" },
        })
      case "reset":
        // headers go out, then the connection dies mid-body: the client sees a network error
        return new Response(
          new ReadableStream({
            start(controller) {
              controller.enqueue(new TextEncoder().encode('{"id":'))
              controller.error()
            },
          }),
          { status: 200, headers: { "content-type": "application/json" } },
        )
      case "hang":
        return new Promise<Response>((resolve) => {
          const release = () => {
            hung.delete(release)
            resolve(new Response(null, { status: 499 }))
          }
          hung.add(release)
          signal.addEventListener("abort", release, { once: true })
        })
      case "ok":
        return undefined
    }
  }

  const complete = async (req: Request, api: Api): Promise<Response> => {
    fake.requests++
    if (options.apiKey !== undefined && req.headers.get("authorization") !== `Bearer ${options.apiKey}`) {
      return errorBody(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
    }
    let body: Record<string, unknown>
    try {
      body = (await req.json()) as Record<string, unknown>
    } catch {
      return errorBody(
        400,
        "We could not parse the JSON body of your request.",
        "invalid_request_error",
        null,
      )
    }
    if (options.validate !== false) {
      const errors = validateSchema(api.schema, body)
      if (errors.length) fake.invalid.push({ body, errors })
    }
    const input = api.input(body)
    const nth = fake.seen.get(input) ?? 0
    fake.seen.set(input, nth + 1)
    const scripted = fake.script.get(input)
    const kind = scripted ? (scripted[nth] ?? "ok") : fake.faults ? pick(fake.faults, input, nth) : "ok"
    if (fake.latencyMs > 0 && kind !== "hang") await Bun.sleep(fake.latencyMs)
    const failed = fault(kind, req.signal)
    if (failed) return failed
    const content = reply(input, body)
    fake.paid.set(input, (fake.paid.get(input) ?? 0) + 1)
    return Response.json(api.answer(body, content, fake.requests))
  }

  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    idleTimeout: 0,
    fetch(req) {
      const path = new URL(req.url).pathname
      if (req.method === "POST" && (path === "/v1/chat/completions" || path === "/chat/completions")) {
        return complete(req, CHAT)
      }
      if (req.method === "POST" && (path === "/v1/responses" || path === "/responses")) {
        return complete(req, RESPONSES)
      }
      return errorBody(
        404,
        `Unknown request URL: ${req.method} ${path}`,
        "invalid_request_error",
        "unknown_url",
      )
    },
    error() {
      return new Response(null, { status: 500 })
    },
  })

  const fake: Fake = {
    url: `http://127.0.0.1:${server.port}/v1`,
    port: server.port ?? 0,
    latencyMs: options.latencyMs ?? 0,
    faults: options.faults,
    script: new Map(),
    paid: new Map(),
    seen: new Map(),
    requests: 0,
    invalid: [],
    async stop() {
      for (const release of [...hung]) release()
      await server.stop(true)
    },
    async [Symbol.asyncDispose]() {
      await fake.stop()
    },
  }
  return fake
}
