import { describe, expect, test } from "bun:test"
import { startFake, type Fake } from "./fake-openai.ts"
import { validateSchema } from "./spec.ts"

function post(
  fake: Fake,
  body: unknown,
  key = "k",
  timeoutMs = 2000,
  endpoint: "chat/completions" | "responses" = "chat/completions",
) {
  return fetch(`${fake.url}/${endpoint}`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  })
}

const ask = (content: string) => ({ model: "gpt-4.1-mini", messages: [{ role: "user", content }] })

describe("the fake OpenAI server", () => {
  test("serves a completion that conforms to CreateChatCompletionResponse and echoes the input", async () => {
    await using fake = await startFake({ apiKey: "k" })
    const res = await post(fake, {
      ...ask("hello"),
      messages: [
        { role: "system", content: "be brief" },
        { role: "user", content: [{ type: "text", text: "hello" }] },
      ],
    })
    expect(res.status).toBe(200)
    const body = (await res.json()) as { model: string; choices: { message: { content: string } }[] }
    expect(validateSchema("CreateChatCompletionResponse", body)).toEqual([])
    expect(body.choices[0]!.message.content).toBe("echo: hello")
    expect(body.model).toBe("gpt-4.1-mini")
    expect(fake.paid.get("hello")).toBe(1)
    expect(fake.invalid).toEqual([])
  })

  test("serves a response that conforms to Response and echoes the input, for a string or a message list", async () => {
    await using fake = await startFake({ apiKey: "k" })
    const plain = await post(
      fake,
      { model: "gpt-4.1-mini", input: "hello", instructions: "be brief" },
      "k",
      2000,
      "responses",
    )
    expect(plain.status).toBe(200)
    const body = (await plain.json()) as Record<string, unknown> & {
      output: { content: unknown[] }[]
      usage: { input_tokens: number; output_tokens: number; total_tokens: number }
    }
    expect(validateSchema("Response", body)).toEqual([])
    expect([body.object, body.status, body.model, body.instructions]).toEqual([
      "response",
      "completed",
      "gpt-4.1-mini",
      "be brief",
    ])
    expect(String(body.id)).toStartWith("resp_")
    expect(body.output[0]!.content).toEqual([
      { type: "output_text", text: "echo: hello", annotations: [], logprobs: [] },
    ])
    expect(body.usage.total_tokens).toBe(body.usage.input_tokens + body.usage.output_tokens)
    const listed = await post(
      fake,
      { model: "gpt-4.1-mini", input: [{ role: "user", content: "hello" }] },
      "k",
      2000,
      "responses",
    )
    const second = (await listed.json()) as { output: { content: { text: string }[] }[] }
    expect(validateSchema("Response", second)).toEqual([])
    expect(second.output[0]!.content[0]!.text).toBe("echo: hello")
    expect(fake.paid.get("hello")).toBe(2)
    expect(fake.invalid).toEqual([])
  })

  test("the responses endpoint has the same faults and accounting", async () => {
    await using fake = await startFake({ apiKey: "k" })
    fake.script.set("r", ["429", "500", "ok"])
    const statuses: number[] = []
    for (let i = 0; i < 3; i++) {
      const res = await post(fake, { model: "m", input: "r" }, "k", 2000, "responses")
      statuses.push(res.status)
      if (res.status !== 200) expect(validateSchema("ErrorResponse", await res.json())).toEqual([])
      else await res.arrayBuffer()
    }
    expect(statuses).toEqual([429, 500, 200])
    expect([fake.seen.get("r"), fake.paid.get("r")]).toEqual([3, 1])
    expect((await post(fake, { model: "m", input: "r" }, "nope", 2000, "responses")).status).toBe(401)
  })

  test("every error it serves conforms to ErrorResponse, and 429 carries Retry-After", async () => {
    await using fake = await startFake({ apiKey: "k" })
    fake.faults = { rate: 0, kinds: [], retryAfter: "Tue, 24 Nov 2026 12:00:30 GMT" }
    fake.script.set("e", ["429", "quota", "500", "503"])
    const statuses: number[] = []
    for (let i = 0; i < 4; i++) {
      const res = await post(fake, ask("e"))
      statuses.push(res.status)
      expect(validateSchema("ErrorResponse", await res.json())).toEqual([])
      if (i === 0) expect(res.headers.get("retry-after")).toBe("Tue, 24 Nov 2026 12:00:30 GMT")
    }
    expect(statuses).toEqual([429, 429, 500, 503])
    const wrongKey = await post(fake, ask("x"), "nope")
    expect(wrongKey.status).toBe(401)
    const body = (await wrongKey.json()) as { error: { code: string } }
    expect(validateSchema("ErrorResponse", body)).toEqual([])
    expect(body.error.code).toBe("invalid_api_key")
    expect(fake.paid.size).toBe(0)
  })

  test("reset kills the connection, hang never answers, garbage is not JSON; scripted faults run in order, then stop", async () => {
    await using fake = await startFake({ apiKey: "k" })
    fake.script.set("f", ["reset", "hang", "garbage", "ok"])
    const reset = await post(fake, ask("f"))
      .then((r) => r.text())
      .catch((e: Error) => e)
    expect(reset).toBeInstanceOf(Error)
    const hang = await post(fake, ask("f"), "k", 300).catch((e: Error) => e.name)
    expect(hang).toBe("TimeoutError")
    const garbage = await post(fake, ask("f"))
    expect(garbage.status).toBe(200)
    expect(await garbage.text()).toBe("<html>oops</html>")
    for (let i = 0; i < 2; i++) expect((await post(fake, ask("f"))).status).toBe(200)
    expect(fake.seen.get("f")).toBe(5)
    expect(fake.paid.get("f")).toBe(2)
  })

  test("rate-based faults are the same for the same seed and inputs, whatever the order", async () => {
    const kinds = ["429", "500"] as const
    const run = async (order: number[]) => {
      await using fake = await startFake({ faults: { rate: 0.5, kinds: [...kinds], seed: 11 } })
      const out = new Map<number, number>()
      for (const i of order) out.set(i, (await post(fake, ask(`q${i}`))).status)
      return [...out.entries()].sort((a, b) => a[0] - b[0])
    }
    const forward = await run([...Array(40).keys()])
    const backward = await run([...Array(40).keys()].reverse())
    expect(forward).toEqual(backward)
    const faulted = forward.filter(([, s]) => s !== 200).length
    expect(faulted).toBeGreaterThan(5)
    expect(faulted).toBeLessThan(35)
  })

  test("records request bodies that break the spec, and not valid ones", async () => {
    await using fake = await startFake()
    await post(fake, ask("fine"))
    await post(fake, { model: "m", max_tokens: "x" })
    expect(fake.invalid.length).toBe(1)
    expect(fake.invalid[0]!.body).toEqual({ model: "m", max_tokens: "x" })
    expect(fake.invalid[0]!.errors).toContain("/ must have required property 'messages'")
    await post(fake, { model: "m", input: "fine", max_output_tokens: 16 }, "k", 2000, "responses")
    await post(fake, { model: "m", input: 3 }, "k", 2000, "responses")
    expect(fake.invalid.length).toBe(2)
    expect(fake.invalid[1]!.body).toEqual({ model: "m", input: 3 })
  })
})
