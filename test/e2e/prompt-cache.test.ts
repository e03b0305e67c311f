/**
 * Paying less for shared prefixes (issue 20), through `dist/spool` and the fakes, which model each provider's prompt
 * cache and bill in USD: Anthropic's `cache_control` breakpoints and priming, OpenAI's automatic caching with
 * `prompt_cache_key`, and the flex tier. Every case checks spool's reported spend against the fake's bill (C1: within
 * 1%).
 */
import { describe, expect, test } from "bun:test"
import { writeFileSync } from "node:fs"
import { startFakeAnthropic } from "../lib/fake-anthropic.ts"
import { startFake } from "../lib/fake-openai.ts"
import { measure, resultsOf, SYSTEM, type Figures } from "../lib/prompt-cache-scenario.ts"
import { requireBinary, spool } from "../lib/spool.ts"
import { tmpdir } from "../lib/tmp.ts"

requireBinary()

/** Spend as spool reports it, within 1% of what the fake billed. */
function billedRight(f: Figures): void {
  expect(f.code, f.stderr).toBe(0)
  expect(Math.abs(f.spent - f.billed) / f.billed).toBeLessThan(0.01)
}

describe("prompt caching (Anthropic cache_control)", () => {
  test("1,000 items, 3,000-token system prompt, realtime: auto reads the prefix on all but the first calls", async () => {
    const off = await measure({ provider: "anthropic", mode: "realtime", cache: "off", items: 1000 })
    const auto = await measure({ provider: "anthropic", mode: "realtime", cache: "auto", items: 1000 })
    billedRight(off)
    billedRight(auto)
    expect([off.reads, off.writes]).toEqual([0, 0])
    // concurrency 8: at most the first 8 calls find the prefix not yet written
    expect(auto.writes).toBeGreaterThanOrEqual(1)
    expect(auto.writes).toBeLessThanOrEqual(8)
    expect(auto.reads + auto.writes).toBe(1000)
    // 3,000 of ~3,008 input tokens at a tenth of the price: well under a fifth of the bill
    expect(auto.billed / off.billed).toBeLessThan(0.2)
    // what spool says it saved is what the bill shows, to the cent
    expect(Math.abs(auto.saved! - (off.billed - auto.billed))).toBeLessThan(0.01)
    expect(auto.primes).toBe(0)
  }, 120_000)

  test("batch: a cold batch reads nothing and pays the write premium; one priming call makes it read ~100%", async () => {
    const off = await measure({ provider: "anthropic", mode: "batch", cache: "off", items: 1000 })
    const cold = await measure({
      provider: "anthropic",
      mode: "batch",
      cache: "auto",
      prime: false,
      items: 1000,
    })
    const primed = await measure({ provider: "anthropic", mode: "batch", cache: "auto", items: 1000 })
    for (const f of [off, cold, primed]) billedRight(f)
    // the published measurement: a cold batch got 0% reads and cost more than no caching
    expect([cold.reads, cold.writes, cold.primes]).toEqual([0, 1000, 0])
    expect(cold.billed).toBeGreaterThan(off.billed)
    expect(cold.saved!).toBeLessThan(0)
    // primed: the priming call writes, every one of the batch's 1,000 lines reads
    expect([primed.reads, primed.writes, primed.primes]).toEqual([1000, 1, 1])
    expect(primed.billed / off.billed).toBeLessThan(0.2)
  }, 120_000)

  test("rows that render to a few prefixes are packed prefix by prefix, and each prefix is primed once", async () => {
    await using tmp = await tmpdir()
    const guides = ["billing", "bugs", "accounts"].map((g) => `${g}: ${"Decide carefully. ".repeat(400)}`)
    const rows = Array.from({ length: 60 }, (_, i) =>
      JSON.stringify({ id: `r${i}`, guide: guides[i % 3], body: `b${i}` }),
    )
    writeFileSync(tmp.join("in.jsonl"), `${rows.join("\n")}\n`)
    const fake = await startFakeAnthropic({})
    try {
      writeFileSync(
        tmp.join("job.toml"),
        `name = "g"\n[source]\npath = "in.jsonl"\nid = "id"\n[provider]\nname = "anthropic"\nmodel = "claude-sonnet-4-5"\nmode = "batch"\nbase_url = "${fake.url}"\n[request]\nprompt = "{{guide}}\\n\\nTicket {{id}}: {{body}}"\nmax_tokens = 8\n[batch]\npoll_s = 0.05\n[cache]\nenabled = false\n`,
      )
      const env = { ANTHROPIC_API_KEY: "sk-ant-test" }
      const run = await spool(["run", "job.toml", "--home", tmp.join(".spool")], { cwd: tmp.path, env })
      expect(run.code, run.stderr).toBe(0)
      // the batch's lines: three runs of 20, one per guide, each in its first row's place
      const lines = fake.batch.batches[0]!.lines.map((l) => guideOf(l.body))
      expect(runsOf(lines)).toEqual([
        ["billing", 20],
        ["bugs", 20],
        ["accounts", 20],
      ])
      // one priming call per prefix, each with its guide as the cached block, before the batch: every line reads
      const primes = fake.bodies.filter((b) => "messages" in b && b.max_tokens === 1)
      expect(primes.map(guideOf)).toEqual(["billing", "bugs", "accounts"])
      expect(fake.cached()).toMatchObject({ reads: 60, writes: 3 })
    } finally {
      await fake.stop()
    }
  }, 120_000)

  test("the results give each row's cache writes and what caching saved it; status says what priming cost", async () => {
    await using tmp = await tmpdir()
    const rows = Array.from({ length: 20 }, (_, i) => JSON.stringify({ id: `t${i}`, body: `b${i}` }))
    writeFileSync(tmp.join("in.jsonl"), `${rows.join("\n")}\n`)
    const fake = await startFakeAnthropic({})
    try {
      writeFileSync(
        tmp.join("job.toml"),
        `name = "r"\n[source]\npath = "in.jsonl"\nid = "id"\n[provider]\nname = "anthropic"\nmodel = "claude-sonnet-4-5"\nmode = "batch"\nbase_url = "${fake.url}"\n[request]\nsystem = ${JSON.stringify(SYSTEM)}\nprompt = "Ticket {{id}}: {{body}}"\nmax_tokens = 8\n[batch]\npoll_s = 0.05\n`,
      )
      const env = { ANTHROPIC_API_KEY: "sk-ant-test" }
      const run = await spool(["run", "job.toml", "--home", tmp.join(".spool")], { cwd: tmp.path, env })
      expect(run.code, run.stderr).toBe(0)
      expect(run.stderr).toContain("prompt caching: the shared prefix is ~3002 tokens")
      const out = await spool(["results", "r", "--home", tmp.join(".spool"), "--out", tmp.join("r.jsonl")], {
        cwd: tmp.path,
        env,
      })
      expect(out.code, out.stderr).toBe(0)
      const results = resultsOf(tmp.join("r.jsonl"))
      expect(results).toHaveLength(20)
      // every line read the 3,000-token prefix the priming call wrote: no line wrote
      for (const r of results) expect((r.usage as { cache_write_tokens: number }).cache_write_tokens).toBe(0)
      const status = await spool(["status", "r", "--home", tmp.join(".spool")], { cwd: tmp.path, env })
      expect(status.stdout).toMatch(/^priming +1 call · \$0\.01\d+$/m)
      expect(status.stdout).toMatch(
        /^caching +60,040 tokens read, 3,002 written · saved \$0\.0\d+ \(\d+% of input\)$/m,
      )
    } finally {
      await fake.stop()
    }
  }, 60_000)

  test("a template that puts a row field before long instructions gets the one-line hint", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("in.jsonl"), `${JSON.stringify({ id: "a", body: "x" })}\n`)
    const fake = await startFakeAnthropic({})
    try {
      const prompt = `{{body}}\\n\\n${"Follow these instructions with care. ".repeat(150)}`
      writeFileSync(
        tmp.join("job.toml"),
        `name = "h"\n[source]\npath = "in.jsonl"\nid = "id"\n[provider]\nname = "anthropic"\nmodel = "claude-sonnet-4-5"\nbase_url = "${fake.url}"\n[request]\nprompt = "${prompt}"\nmax_tokens = 8\n`,
      )
      const run = await spool(["run", "job.toml", "--home", tmp.join(".spool")], {
        cwd: tmp.path,
        env: { ANTHROPIC_API_KEY: "sk-ant-test" },
      })
      expect(run.code, run.stderr).toBe(0)
      expect(run.stderr).toContain(
        "prompt caching: the shared prefix is ~0 tokens, below claude-sonnet-4-5's minimum of 1024, so it is not marked for caching",
      )
      // the field is backquoted as code: a terminal highlights it and drops the quotes, a CI log (CI=true) keeps them
      expect(run.stderr.replaceAll("`", "")).toContain(
        "move {{body}} after the instructions to make them cacheable (~1388 tokens",
      )
      // nothing marked: the request carries no breakpoint
      expect(JSON.stringify(fake.bodies[0])).not.toContain("cache_control")
    } finally {
      await fake.stop()
    }
  }, 60_000)
})

describe("OpenAI: prompt_cache_key and flex", () => {
  test("realtime: the prefix is cached automatically; prompt_cache_key is sent per run and prefix", async () => {
    const auto = await measure({ provider: "openai", mode: "realtime", cache: "auto", items: 1000 })
    const off = await measure({ provider: "openai", mode: "realtime", cache: "off", items: 1000 })
    billedRight(auto)
    billedRight(off)
    expect(auto.reads).toBeGreaterThanOrEqual(992)
    expect(auto.saved!).toBeGreaterThan(0)
    // one key for the run's one prefix, on every request; none with the cache hints off
    expect(auto.keys).toHaveLength(1000)
    expect(new Set(auto.keys).size).toBe(1)
    expect(auto.keys[0]).toMatch(/^spool-[0-9a-f]{32}$/)
    expect(off.keys).toEqual(Array(1000).fill(null))
  }, 120_000)

  test("mode = flex: every call asks the flex tier and is billed at half; a 429 Resource Unavailable waits and retries", async () => {
    await using tmp = await tmpdir()
    const rows = Array.from({ length: 30 }, (_, i) => JSON.stringify({ id: `f${i}`, body: `b${i}` }))
    writeFileSync(tmp.join("in.jsonl"), `${rows.join("\n")}\n`)
    const fake = await startFake({})
    fake.script.set("Ticket f3: b3", ["flex_unavailable", "ok"])
    try {
      writeFileSync(
        tmp.join("job.toml"),
        `name = "flex"\n[source]\npath = "in.jsonl"\nid = "id"\n[provider]\nname = "openai"\nmodel = "gpt-5-mini"\nmode = "flex"\nbase_url = "${fake.url}"\n[request]\nprompt = "Ticket {{id}}: {{body}}"\nmax_tokens = 8\n[limits]\nretry_base_s = 0.01\nretry_cap_s = 0.2\n`,
      )
      const env = { OPENAI_API_KEY: "sk-test" }
      const run = await spool(["run", "job.toml", "--home", tmp.join(".spool")], { cwd: tmp.path, env })
      expect(run.code, run.stderr).toBe(0)
      // 30 answers and one 429, each asked of the flex tier: billed at half, as spool prices them (below)
      expect(fake.requests).toBe(31)
      const status = await spool(["status", "flex", "--home", tmp.join(".spool"), "--json"], {
        cwd: tmp.path,
        env,
      })
      const view = JSON.parse(status.stdout) as {
        spend: { usd: number }
        errors: { class: string; count: number }[]
      }
      expect(Math.abs(view.spend.usd - fake.cache.billed) / fake.cache.billed).toBeLessThan(0.01)
      expect(view.errors.map((e) => [e.class, e.count])).toEqual([["unavailable", 1]])
    } finally {
      await fake.stop()
    }
  }, 60_000)

  test("mode = flex for a model without a flex tier is refused before anything is read or sent", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("in.jsonl"), `${JSON.stringify({ id: "a", body: "x" })}\n`)
    writeFileSync(
      tmp.join("job.toml"),
      `name = "nf"\n[source]\npath = "in.jsonl"\n[provider]\nname = "openai"\nmodel = "gpt-4.1"\nmode = "flex"\n[request]\nprompt = "{{body}}"\n`,
    )
    const run = await spool(["run", "job.toml", "--home", tmp.join(".spool")], {
      cwd: tmp.path,
      env: { OPENAI_API_KEY: "sk-test" },
    })
    expect(run.code).toBe(2)
    expect(run.stderr).toContain('provider.mode: "flex" is not offered for the model "gpt-4.1"')
  }, 60_000)
})

/** The guide a request's first user block starts with ("billing: Decide…" → "billing"). */
function guideOf(body: unknown): string | undefined {
  const messages = (body as { messages: { content: string | { text: string }[] }[] }).messages
  const content = messages[0]!.content
  const text = typeof content === "string" ? content : content[0]!.text
  return text.split(":")[0]
}

/** Consecutive runs of equal values: [value, length] each. */
function runsOf(values: (string | undefined)[]): [string | undefined, number][] {
  const runs: [string | undefined, number][] = []
  for (const v of values) {
    const last = runs.at(-1)
    if (last && last[0] === v) last[1]++
    else runs.push([v, 1])
  }
  return runs
}
