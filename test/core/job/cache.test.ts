/** The response cache's key (job/cache.ts): what is in it and what is not, and its canonical form. */
import { describe, expect, test } from "bun:test"
import { canonical, keyer, place, type Identity } from "../../../src/core/job/cache.ts"
import { durationMs } from "../../../src/core/job/duration.ts"
import * as jobs from "../../../src/core/job/job.ts"

const WHO: Identity = {
  provider: "openai",
  baseUrl: "http://127.0.0.1:8080/v1",
  model: "gpt-4.1-mini",
  options: { endpoint: "chat" },
}

const load = (flags: jobs.Flags = {}) =>
  jobs.load(undefined, {
    name: "r",
    input: ["/in.jsonl"],
    prompt: "Label: {{text}}",
    model: "gpt-4.1-mini",
    system: "You label tickets.",
    "max-tokens": "50",
    ...flags,
  }).job

const ROW = { text: "printer on fire", id: "7" }
const keyOf = (job = load(), who = WHO, row: Record<string, unknown> = ROW) => keyer(job, who)(row)

describe("the cache key", () => {
  test("is a SHA-256 of the canonical request: the same for the same request, whatever run or mode asks", () => {
    const key = keyOf()
    expect(key).toMatch(/^[0-9a-f]{64}$/)
    expect(keyOf()).toBe(key)
    // the run's name, the mode, the limits, the pricing and the cache's own settings are not in it
    expect(keyOf(load({ name: "another", mode: "batch", concurrency: "3", "max-attempts": "1" }))).toBe(key)
    expect(keyOf(load({ "pricing-input": "1", "pricing-output": "2", "cache-ttl": "1d" }))).toBe(key)
    // nor is the row's id, or a field the prompt does not use
    expect(keyOf(undefined, undefined, { text: "printer on fire", id: "8", other: 1 })).toBe(key)
  })

  test("is the exact SHA-256 of the canonical text it documents", () => {
    const job = load()
    const text = canonical({
      form: 1,
      provider: "openai",
      base: "127.0.0.1:8080/v1",
      model: "gpt-4.1-mini",
      options: { endpoint: "chat" },
      request: {
        system: "You label tickets.",
        prompt: "Label: printer on fire",
        max_tokens: 50,
        temperature: undefined,
        params: undefined,
        schema: undefined,
      },
      sample: 0,
    })
    expect(keyOf(job)).toBe(new Bun.CryptoHasher("sha256").update(text).digest("hex"))
  })

  test("changes with everything that changes the answer", () => {
    const key = keyOf()
    const changed = [
      keyOf(undefined, undefined, { text: "printer fine" }),
      keyOf(load({ "max-tokens": "51" })),
      keyOf(load({ model: "gpt-4.1" }), { ...WHO, model: "gpt-4.1" }),
      keyOf(load({ system: "You label tickets!" })),
      keyOf(load({ temperature: "0.5" })),
      keyOf(load({ prompt: "Label:  {{text}}" })),
      keyOf(undefined, { ...WHO, baseUrl: "http://127.0.0.1:8081/v1" }),
      keyOf(undefined, { ...WHO, baseUrl: "http://127.0.0.1:8080/v2" }),
      keyOf(undefined, { ...WHO, baseUrl: undefined }),
      keyOf(undefined, { ...WHO, provider: "openai-compatible" }),
      keyOf(undefined, { ...WHO, options: { endpoint: "responses" } }),
      keyer(load(), WHO, 1)(ROW),
    ]
    expect(new Set([key, ...changed]).size).toBe(changed.length + 1)
  })

  test("[request.params] and the output schema are in it, their keys in any order", () => {
    const params = (p: Record<string, unknown>) => ({ ...load(), request: { ...load().request, params: p } })
    expect(keyOf(params({ top_p: 0.5, seed: 3 }))).toBe(keyOf(params({ seed: 3, top_p: 0.5 })))
    expect(keyOf(params({ top_p: 0.5 }))).not.toBe(keyOf(params({ top_p: 0.6 })))
    const schema = (properties: Record<string, unknown>) => ({
      ...load(),
      output: { name: "output", schema: { type: "object", properties, required: ["label"] } },
    })
    const a = schema({ label: { type: "string" }, score: { type: "number" } })
    const b = schema({ score: { type: "number" }, label: { type: "string" } })
    expect(keyOf(a)).toBe(keyOf(b))
    expect(keyOf(a)).not.toBe(keyOf())
    expect(keyOf(a)).not.toBe(keyOf(schema({ label: { type: "string" } })))
    expect(keyOf({ ...a, output: { ...a.output!, name: "other" } })).not.toBe(keyOf(a))
  })

  test("is empty for a row that cannot fill the prompt: nothing is cached for it", () => {
    expect(keyOf(undefined, undefined, { other: "x" })).toBe("")
  })
})

describe("canonical JSON", () => {
  test("sorts object keys at every depth, keeps array order, drops undefined", () => {
    expect(canonical({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: undefined } })).toBe(
      '{"a":{"d":[3,{"y":2,"z":1}]},"b":1}',
    )
  })
})

describe("a base URL's place", () => {
  test("is its host and path: scheme, query, trailing slash and the host's case apart", () => {
    expect(place("http://LocalHost:8080/v1/")).toBe("localhost:8080/v1")
    expect(place("https://localhost:8080/v1?x=1")).toBe("localhost:8080/v1")
    expect(place(undefined)).toBe("")
  })
})

describe("durations", () => {
  test("seconds to weeks; anything else is not one", () => {
    expect(durationMs("30d")).toBe(30 * 86_400_000)
    expect(durationMs(" 1.5h ")).toBe(5_400_000)
    expect(durationMs("2w")).toBe(14 * 86_400_000)
    expect(durationMs("45s")).toBe(45_000)
    expect(durationMs("90m")).toBe(5_400_000)
    for (const bad of ["30", "d", "1y", "-1d", "1d2h", ""]) expect(durationMs(bad)).toBeUndefined()
  })

  test("a job's [cache] ttl must be one", () => {
    expect(() => load({ "cache-ttl": "soon" })).toThrow("the job is not valid")
    expect(load({ "cache-ttl": "12h" }).cache).toEqual({ enabled: true, ttl: "12h", refresh: false })
    expect(load({ cache: false }).cache.enabled).toBe(false)
    expect(load({ "refresh-cache": true }).cache.refresh).toBe(true)
  })
})
