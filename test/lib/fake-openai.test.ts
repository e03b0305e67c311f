import { describe, expect, test } from "bun:test"
import { startFake, type Fake } from "./fake-openai.ts"
import { validateSchema } from "./spec.ts"

function post(fake: Fake, body: unknown, key = "k", timeoutMs = 2000) {
  return fetch(`${fake.url}/chat/completions`, {
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
  })
})
