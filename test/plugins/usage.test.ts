/** Cached input tokens, as each provider reports them, in spool's terms (all input is input; cached is a part). */
import { describe, expect, test } from "bun:test"
import { reply as chat, responsesReply } from "../../src/plugins/providers/openai/wire.ts"
import { reply as messages } from "../../src/plugins/providers/anthropic/wire.ts"

describe("usage with a prompt cache", () => {
  test("openai chat completions: prompt_tokens_details.cached_tokens", () => {
    const body = {
      choices: [{ message: { content: "ok" }, finish_reason: "stop" }],
      usage: { prompt_tokens: 1200, completion_tokens: 5, prompt_tokens_details: { cached_tokens: 1024 } },
    }
    expect(chat(200, JSON.stringify(body)).usage).toEqual({
      input_tokens: 1200,
      output_tokens: 5,
      cached_input_tokens: 1024,
    })
  })

  test("openai responses: input_tokens_details.cached_tokens", () => {
    const body = {
      status: "completed",
      output: [{ type: "message", content: [{ type: "output_text", text: "ok" }] }],
      usage: { input_tokens: 2000, output_tokens: 3, input_tokens_details: { cached_tokens: 1536 } },
    }
    expect(responsesReply(200, JSON.stringify(body)).usage).toEqual({
      input_tokens: 2000,
      output_tokens: 3,
      cached_input_tokens: 1536,
    })
  })

  test("anthropic: cache reads and writes are added back to the input; the reads are the cached part, the writes the cache writes", () => {
    const message = {
      content: [{ type: "text", text: "ok" }],
      stop_reason: "end_turn",
      usage: {
        input_tokens: 50,
        output_tokens: 7,
        cache_read_input_tokens: 3000,
        cache_creation_input_tokens: 200,
      },
    }
    expect(messages(message as never).usage).toEqual({
      input_tokens: 3250,
      output_tokens: 7,
      cached_input_tokens: 3000,
      cache_write_tokens: 200,
    })
  })
})

describe("how an answer ended", () => {
  const completion = (message: Record<string, unknown>, finish_reason: string) =>
    JSON.stringify({
      choices: [{ message, finish_reason }],
      usage: { prompt_tokens: 3, completion_tokens: 2 },
    })

  test("openai chat: length is a cut answer; a refusal or a content filter is a refusal; stop is whole", () => {
    expect(chat(200, completion({ content: '{"label":' }, "length")).finish).toBe("length")
    expect(chat(200, completion({ content: null, refusal: "I can't help with that." }, "stop"))).toEqual({
      text: "I can't help with that.",
      usage: { input_tokens: 3, output_tokens: 2 },
      finish: "refusal",
    })
    expect(chat(200, completion({ content: "" }, "content_filter")).finish).toBe("refusal")
    expect(chat(200, completion({ content: "ok" }, "stop")).finish).toBeUndefined()
  })

  test("openai responses: incomplete at max_output_tokens is a cut answer; a refusal part is a refusal", () => {
    const response = (extra: Record<string, unknown>, content: unknown[]) =>
      JSON.stringify({
        output: [{ type: "message", content }],
        usage: { input_tokens: 3, output_tokens: 2 },
        ...extra,
      })
    const cut = response({ status: "incomplete", incomplete_details: { reason: "max_output_tokens" } }, [
      { type: "output_text", text: '{"label":' },
    ])
    expect(responsesReply(200, cut).finish).toBe("length")
    const refused = response({ status: "completed" }, [{ type: "refusal", refusal: "No." }])
    expect(responsesReply(200, refused)).toMatchObject({ text: "No.", finish: "refusal" })
  })

  test("anthropic: max_tokens is a cut answer, refusal a refusal, end_turn and tool_use whole", () => {
    const message = (stop_reason: string, content: unknown[]) =>
      ({ content, stop_reason, usage: { input_tokens: 3, output_tokens: 2 } }) as never
    expect(messages(message("max_tokens", [{ type: "text", text: "cut" }])).finish).toBe("length")
    expect(messages(message("refusal", [{ type: "text", text: "No." }])).finish).toBe("refusal")
    expect(messages(message("end_turn", [{ type: "text", text: "ok" }])).finish).toBe("stop")
    expect(
      messages(message("tool_use", [{ type: "tool_use", id: "t", name: "o", input: { a: 1 } }])),
    ).toMatchObject({
      text: '{"a":1}',
      finish: "stop",
    })
  })
})
