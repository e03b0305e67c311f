import { describe, expect, test } from "bun:test"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { Provider } from "../../../src/plugins/api/define.ts"
import * as jobs from "../../../src/core/job/job.ts"
import * as template from "../../../src/core/job/template.ts"
import { moveHint, Prefixes } from "../../../src/core/engine/prefix.ts"
import { primingRequest, PRIME_PROMPT } from "../../../src/core/engine/prime.ts"

const INSTRUCTIONS = "Label the ticket as billing, bug or other. ".repeat(100) // 4,300 characters: ~1,075 tokens

/** A provider as the prefixes see it: Anthropic-like, 1,024 tokens at least. */
const provider: Pick<Provider, "name" | "promptCache"> = {
  name: "anthropic",
  promptCache: {
    explicit: true,
    minimumTokens: () => 1024,
    ttlMs: (t) => (t === "1h" ? 3_600_000 : 300_000),
  },
}

function jobOf(request: string): jobs.Job {
  const dir = mkdtempSync(join(tmpdir(), "spool-prefix-"))
  try {
    writeFileSync(join(dir, "in.jsonl"), "")
    writeFileSync(
      join(dir, "job.toml"),
      `name = "t"\n[source]\npath = "in.jsonl"\n[provider]\nname = "anthropic"\nmodel = "claude-sonnet-4-5"\n[request]\n${request}\n`,
    )
    return jobs.load(join(dir, "job.toml"), {}).job
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

const rows = (n: number, f: (i: number) => Record<string, unknown>) =>
  Array.from({ length: n }, (_, i) => JSON.stringify(f(i)))

describe("prompt-cache prefixes", () => {
  test("the system prompt and the prompt's text before its first field: marked once long enough", () => {
    const job = jobOf(`system = ${JSON.stringify(INSTRUCTIONS)}\nprompt = "Ticket: {{body}}"`)
    const p = new Prefixes(job, template.parse(job.request.prompt), "run-a", provider)
    p.learn(rows(100, (i) => ({ body: `text ${i}` })))
    const a = p.of({ body: "x" }, "Ticket: x")
    const b = p.of({ body: "y" }, "Ticket: y")
    expect(a).toEqual({ prefix: "Ticket: ".length, ttl: "5m", key: a.key, mark: true })
    expect(a.key).toMatch(/^spool-[0-9a-f]{32}$/)
    expect(b.key).toBe(a.key)
    // another run's key differs: OpenAI's prompt_cache_key is per run and prefix
    const other = new Prefixes(job, template.parse(job.request.prompt), "run-b", provider)
    expect(other.of({ body: "x" }, "Ticket: x").key).not.toBe(a.key)
  })

  test("below the model's minimum, auto marks nothing; an explicit lifetime marks anyway", () => {
    const short = jobOf(`system = "Be brief."\nprompt = "Ticket: {{body}}"`)
    const p = new Prefixes(short, template.parse(short.request.prompt), "r", provider)
    p.learn(rows(20, (i) => ({ body: `${i}` })))
    expect(p.of({ body: "1" }, "Ticket: 1").mark).toBe(false)
    const hour = jobOf(`system = "Be brief."\nprompt = "Ticket: {{body}}"\ncache = "1h"`)
    const q = new Prefixes(hour, template.parse(hour.request.prompt), "r", provider)
    q.learn(rows(20, (i) => ({ body: `${i}` })))
    expect(q.of({ body: "1" }, "Ticket: 1")).toMatchObject({ mark: true, ttl: "1h" })
    expect(q.ttlMs).toBe(3_600_000)
  })

  test("a leading field whose values repeat is part of the prefix; one that varies ends it", () => {
    const job = jobOf(`prompt = "{{guide}}\\n\\nTicket {{id}}: {{body}}"`)
    const t = template.parse(job.request.prompt)
    const guides = ["A".repeat(5000), "B".repeat(5000), "C".repeat(5000)]
    const data = rows(300, (i) => ({ guide: guides[i % 3], id: i, body: `b${i}` }))
    const p = new Prefixes(job, t, "r", provider)
    p.learn(data)
    const row = JSON.parse(data[4]!) as Record<string, unknown>
    const text = template.render(t, row) as string
    const c = p.of(row, text)
    // the guide and the static text after it, up to {{id}}: "BBB…\n\nTicket "
    expect(c.prefix).toBe(5000 + "\n\nTicket ".length)
    expect(text.slice(0, c.prefix)).toBe(`${"B".repeat(5000)}\n\nTicket `)
    // three prefixes: items interleaved 0,1,2,0,1,2… are sent prefix by prefix, each in its first one's place
    const items = data.slice(0, 9).map((d, i) => ({ id: i, data: d }))
    expect(p.order(items).map((i) => i.id)).toEqual([0, 3, 6, 1, 4, 7, 2, 5, 8])
    // a field that varies first ends the prefix at once
    const varying = new Prefixes(job, t, "r", provider)
    varying.learn(rows(300, (i) => ({ guide: `g${i}`, id: i, body: "b" })))
    expect(varying.of({ guide: "g1", id: 1, body: "b" }, "g1\n\nTicket 1: b").prefix).toBe(0)
  })

  test("too few rows to tell: no field counts as repeating", () => {
    const job = jobOf(`prompt = "{{guide}} {{body}}"`)
    const p = new Prefixes(job, template.parse(job.request.prompt), "r", provider)
    p.learn(rows(5, () => ({ guide: "same", body: "b" })))
    expect(p.of({ guide: "same", body: "b" }, "same b").prefix).toBe(0)
  })

  test("the hint for a field before a long static text", () => {
    const t = template.parse(`{{body}}\n\n${INSTRUCTIONS}`)
    expect(moveHint(t.parts, new Set(), 1024)).toBe(
      "move `{{body}}` after the instructions to make them cacheable (~1076 tokens of static text come after it)",
    )
    // a short text after the field, or the field already part of the prefix: no hint
    expect(moveHint(template.parse("{{body}} please").parts, new Set(), 1024)).toBeUndefined()
    expect(moveHint(t.parts, new Set(["body"]), 1024)).toBeUndefined()
  })

  test("a priming request: the same prefix, a short question, one token of answer", () => {
    const request = {
      system: "S",
      prompt: "Instructions. Ticket: 42",
      max_tokens: 200,
      temperature: 0.5,
      cache: { prefix: "Instructions. ".length, ttl: "5m" as const, key: "spool-k", mark: true },
    }
    expect(primingRequest(request)).toEqual({
      system: "S",
      prompt: `Instructions. \n\n${PRIME_PROMPT}`,
      max_tokens: 1,
      temperature: undefined,
      cache: request.cache,
    })
    expect(primingRequest({ ...request, cache: { ...request.cache, prefix: 0 } }).prompt).toBe(PRIME_PROMPT)
  })
})
