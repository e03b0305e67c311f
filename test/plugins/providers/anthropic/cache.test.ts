import { describe, expect, test } from "bun:test"
import anthropic, { minimumTokens } from "../../../../src/plugins/providers/anthropic/anthropic.ts"
import { body } from "../../../../src/plugins/providers/anthropic/wire.ts"
import type { BatchClient, PromptCache, ProviderClient, Request } from "../../../../src/plugins/api/define.ts"
import { validateSchema } from "../../../lib/spec.ts"
import { startFakeAnthropic, type Fake } from "../../../lib/fake-anthropic.ts"
import { tmpdir } from "../../../lib/tmp.ts"
import { downloadOutput, never, read, submit, tagOf } from "../../../lib/batch-helpers.ts"

const MODEL = "claude-sonnet-4-5"
const KEY = "sk-ant-test-0123456789"

const cache = (prefix: number, ttl: PromptCache["ttl"] = "5m", mark = true): PromptCache => ({
  prefix,
  ttl,
  key: "r1-p0",
  mark,
})

const EPHEMERAL = { type: "ephemeral" }

function client(fake: Fake): ProviderClient {
  return anthropic.create({}, { model: MODEL, baseUrl: fake.url, apiKey: KEY, timeoutMs: 5000 })
}

function batchClient(fake: Fake): BatchClient {
  const c = client(fake).batch
  if (!c) throw new Error("the anthropic provider has no batch client")
  return c
}

/** The body of a request, checked against the spec. */
function valid(request: Request): Record<string, unknown> {
  const out = body(MODEL, request) as unknown as Record<string, unknown>
  expect(validateSchema("CreateMessageParams", out, "anthropic")).toEqual([])
  return out
}

/** 8,192 characters: 2,048 tokens by the fake's count, cacheable on claude-sonnet-4-5 (minimum 1,024). */
const SYSTEM = "x".repeat(8192)

describe("the anthropic provider's prompt cache breakpoints", () => {
  test("a prefix that ends with the system prompt marks it, sent as one text block", () => {
    expect(valid({ system: "rules", prompt: "row 1", cache: cache(0) })).toEqual({
      model: MODEL,
      max_tokens: 4096,
      messages: [{ role: "user", content: "row 1" }],
      system: [{ type: "text", text: "rules", cache_control: EPHEMERAL }],
    })
  })

  test("a prefix inside the prompt splits the user message: the shared text carries the breakpoint, the rest follows", () => {
    expect(valid({ system: "rules", prompt: "Label this: row 1", cache: cache(12) })).toEqual({
      model: MODEL,
      max_tokens: 4096,
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: "Label this: ", cache_control: EPHEMERAL },
            { type: "text", text: "row 1" },
          ],
        },
      ],
      system: "rules",
    })
    // the whole prompt shared: one block
    expect(valid({ prompt: "all of it", cache: cache(9) }).messages).toEqual([
      { role: "user", content: [{ type: "text", text: "all of it", cache_control: EPHEMERAL }] },
    ])
  })

  test("the 1-hour cache says its ttl; the 5-minute one is the default and says none", () => {
    expect(valid({ system: "rules", prompt: "row", cache: cache(0, "1h") }).system).toEqual([
      { type: "text", text: "rules", cache_control: { type: "ephemeral", ttl: "1h" } },
    ])
    expect(valid({ prompt: "ab", cache: cache(1, "1h") }).messages).toEqual([
      {
        role: "user",
        content: [
          { type: "text", text: "a", cache_control: { type: "ephemeral", ttl: "1h" } },
          { type: "text", text: "b" },
        ],
      },
    ])
  })

  test("without a mark (or a prefix to mark) the body is exactly the one without a cache", () => {
    const plain: Request = { system: "rules", prompt: "row 1", max_tokens: 9, temperature: 0 }
    const expected = valid(plain)
    expect(valid({ ...plain, cache: cache(0, "5m", false) })).toEqual(expected)
    expect(valid({ ...plain, cache: cache(3, "1h", false) })).toEqual(expected)
    expect(valid({ prompt: "row 1", cache: cache(0) })).toEqual(valid({ prompt: "row 1" }))
  })

  test("a structured request keeps its forced tool, and marks its system prompt", () => {
    const schema = { name: "answer", schema: { type: "object", properties: { n: { type: "integer" } } } }
    const out = valid({ system: "rules", prompt: "row", schema, cache: cache(0) })
    expect(out.system).toEqual([{ type: "text", text: "rules", cache_control: EPHEMERAL }])
    expect(out.tool_choice).toEqual({ type: "tool", name: "answer" })
  })

  test("declares explicit caching, each model's minimum prefix, and the two lifetimes", () => {
    const pc = anthropic.promptCache!
    expect(pc.explicit).toBe(true)
    expect(pc.minimumTokens).toBe(minimumTokens)
    const minimums = Object.fromEntries(
      [
        "claude-opus-4-6",
        "claude-opus-4-5",
        "claude-opus-4-5-20251101",
        "claude-haiku-4-5",
        "claude-haiku-4-5-20251001",
        "claude-sonnet-4-6",
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        "claude-opus-4-1",
        "claude-opus-4-1-20250805",
        "claude-opus-4-0",
        "claude-opus-4-20250514",
        "claude-sonnet-4-0",
        "claude-sonnet-4-20250514",
        "claude-3-7-sonnet-latest",
        "claude-3-7-sonnet-20250219",
        "claude-3-5-haiku-latest",
        "claude-3-5-haiku-20241022",
        "claude-3-haiku-20240307",
        "claude-next-1",
      ].map((m) => [m, pc.minimumTokens(m)]),
    )
    expect(minimums).toEqual({
      "claude-opus-4-6": 4096,
      "claude-opus-4-5": 4096,
      "claude-opus-4-5-20251101": 4096,
      "claude-haiku-4-5": 4096,
      "claude-haiku-4-5-20251001": 4096,
      "claude-sonnet-4-6": 2048,
      "claude-sonnet-4-5": 1024,
      "claude-sonnet-4-5-20250929": 1024,
      "claude-opus-4-1": 1024,
      "claude-opus-4-1-20250805": 1024,
      "claude-opus-4-0": 1024,
      "claude-opus-4-20250514": 1024,
      "claude-sonnet-4-0": 1024,
      "claude-sonnet-4-20250514": 1024,
      "claude-3-7-sonnet-latest": 1024,
      "claude-3-7-sonnet-20250219": 1024,
      "claude-3-5-haiku-latest": 2048,
      "claude-3-5-haiku-20241022": 2048,
      "claude-3-haiku-20240307": 2048,
      "claude-next-1": 1024,
    })
    expect([pc.ttlMs("5m"), pc.ttlMs("1h")]).toEqual([300_000, 3_600_000])
  })
})

// [SYSTEM, [{role, content: "item k"}]] is 8,233 characters: 2,059 input tokens, 2,048 of them the system prompt;
// "echo: item k" is 3 output tokens
describe("the anthropic provider against the fake's prompt cache", () => {
  test("realtime: the first call writes the prefix, the next reads it, one after it lapsed writes it again; no beta header", async () => {
    let t = 1_000_000
    await using fake = await startFakeAnthropic({ apiKey: KEY, now: () => t })
    const c = client(fake)
    const ask = (k: number, ttl: PromptCache["ttl"] = "5m") =>
      c.call({ system: SYSTEM, prompt: `item ${k}`, cache: cache(0, ttl) }, never())
    expect((await ask(0)).usage).toEqual({ input_tokens: 2059, output_tokens: 3, cache_write_tokens: 2048 })
    t += 60_000
    expect((await ask(1)).usage).toEqual({ input_tokens: 2059, output_tokens: 3, cached_input_tokens: 2048 })
    t += 300_001
    expect((await ask(2)).usage).toEqual({ input_tokens: 2059, output_tokens: 3, cache_write_tokens: 2048 })
    // the 1-hour breakpoint is of the Messages API itself: sent, and honoured, without an anthropic-beta header
    t += 300_001
    expect((await ask(3, "1h")).usage).toEqual({
      input_tokens: 2059,
      output_tokens: 3,
      cache_write_tokens: 2048,
    })
    expect(fake.bodies.at(-1)!.system).toEqual([
      { type: "text", text: SYSTEM, cache_control: { type: "ephemeral", ttl: "1h" } },
    ])
    expect(fake.headers?.get("anthropic-beta")).toBeNull()
    t += 50 * 60_000
    expect((await ask(4, "1h")).usage).toEqual({
      input_tokens: 2059,
      output_tokens: 3,
      cached_input_tokens: 2048,
    })
    expect(fake.cached()).toEqual({ reads: 2, writes: 3, readTokens: 4096, writeTokens: 6144 })
    expect(fake.invalid).toEqual([])
  })

  test("an unmarked request is sent without a breakpoint and caches nothing", async () => {
    await using fake = await startFakeAnthropic({ apiKey: KEY })
    const c = client(fake)
    for (const k of [0, 1]) {
      const reply = await c.call(
        { system: SYSTEM, prompt: `item ${k}`, cache: cache(0, "5m", false) },
        never(),
      )
      expect(reply.usage).toEqual({ input_tokens: 2059, output_tokens: 3 })
    }
    expect(fake.bodies.map((b) => b.system)).toEqual([SYSTEM, SYSTEM])
    expect(fake.cached()).toEqual({ reads: 0, writes: 0, readTokens: 0, writeTokens: 0 })
  })

  test("batch: the lines carry the breakpoint; a cold batch of 10 writes on every line, a primed one reads on every line", async () => {
    await using tmp = await tmpdir()
    const base = { system: SYSTEM, cache: cache(0) }
    const written = { input_tokens: 2059, output_tokens: 3, cache_write_tokens: 2048 }
    const readBack = { input_tokens: 2059, output_tokens: 3, cached_input_tokens: 2048 }
    {
      await using fake = await startFakeAnthropic({ apiKey: KEY })
      const c = batchClient(fake)
      expect(JSON.parse(c.line("t_0", { ...base, prompt: "item 0" })).params.system).toEqual([
        { type: "text", text: SYSTEM, cache_control: EPHEMERAL },
      ])
      const cold = await downloadOutput(
        c,
        await c.retrieve((await submit(c, tmp, tagOf(10), base)).id, never()),
        tmp,
      )
      expect(cold.map((l) => read(l).reply?.usage)).toEqual(Array(10).fill(written))
      expect(fake.cached()).toEqual({ reads: 0, writes: 10, readTokens: 0, writeTokens: 20480 })
      expect(fake.invalid).toEqual([])
    }
    {
      await using fake = await startFakeAnthropic({ apiKey: KEY })
      // priming: one realtime request of the shared prefix, answered before the batch is created
      expect((await client(fake).call({ ...base, prompt: "item 0" }, never())).usage).toEqual(written)
      const c = batchClient(fake)
      const primed = await downloadOutput(
        c,
        await c.retrieve((await submit(c, tmp, tagOf(10), base)).id, never()),
        tmp,
      )
      expect(primed.map((l) => read(l).reply?.usage)).toEqual(Array(10).fill(readBack))
      expect(fake.cached()).toEqual({ reads: 10, writes: 1, readTokens: 20480, writeTokens: 2048 })
      expect(fake.invalid).toEqual([])
    }
  })

  test("batch: a prefix inside the prompt is split into two blocks in each line, and cached as such", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFakeAnthropic({ apiKey: KEY })
    const c = batchClient(fake)
    // the prompts are "item k": "item " (5 characters) is their shared part, after the system prompt
    const base = { system: SYSTEM, cache: cache(5) }
    expect(JSON.parse(c.line("t_0", { ...base, prompt: "item 0" })).params.messages).toEqual([
      {
        role: "user",
        content: [
          { type: "text", text: "item ", cache_control: EPHEMERAL },
          { type: "text", text: "0" },
        ],
      },
    ])
    const lines = await downloadOutput(
      c,
      await c.retrieve((await submit(c, tmp, tagOf(4), base)).id, never()),
      tmp,
    )
    // the prefix is the system prompt and "item ": 8,197 characters, 2,050 tokens; the line counts as unmarked
    expect(lines.map((l) => read(l).reply?.usage)).toEqual(
      Array(4).fill({ input_tokens: 2059, output_tokens: 3, cache_write_tokens: 2050 }),
    )
    expect(fake.invalid).toEqual([])
  })
})
