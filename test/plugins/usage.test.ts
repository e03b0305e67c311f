/** Cached input tokens, as each provider reports them, in spool's terms (all input is input; cached is a part). */
import { describe, expect, test } from "bun:test"
import { reply as chat, responsesReply } from "../../src/plugins/providers/openai.ts"
import { reply as messages } from "../../src/plugins/providers/anthropic.ts"

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

  test("anthropic: cache reads and writes are added back to the input; the reads are the cached part", () => {
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
    })
  })
})
