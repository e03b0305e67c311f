import { describe, expect, test } from "bun:test"
import { cpSync, existsSync, readdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { spool } from "../lib/spool.ts"
import { tmpdir } from "../lib/tmp.ts"

const QUICKSTART = join(import.meta.dir, "../../examples/quickstart/job.toml")

describe("spool estimate", () => {
  test("the quickstart: 12 items, exact tokens, unknown cost, and nothing written", async () => {
    await using tmp = await tmpdir()
    const out = await spool(["estimate", QUICKSTART, "--json"], { cwd: tmp.path })
    expect(out.code).toBe(0)
    const e = JSON.parse(out.stdout)
    expect(e.items).toBe(12)
    expect(e.requests).toBe(12)
    expect(e.malformed.count).toBe(0)
    expect(e.unfilled.count).toBe(0)
    // per ticket: system 55 bytes → 14 + 3, subject → ceil(bytes / 4) + 3, reply priming 3
    expect(e.tokens).toMatchObject({ input: 357, output: 600, output_upper_bound: true })
    expect(e.cost).toMatchObject({ realtime_usd: null, batch_usd: null, prices: null }) // mock-1: no price
    // no store, no log file: SPOOL_HOME points into the cwd, which stays empty
    expect(existsSync(tmp.join(".spool"))).toBe(false)
    expect(readdirSync(tmp.path)).toEqual([])
  })

  test("the example plugin jobs: plugins loaded by the binary, every row counted, no key needed, nothing written", async () => {
    await using tmp = await tmpdir()
    cpSync(join(import.meta.dir, "../../examples"), tmp.join("examples"), { recursive: true })
    const cases: [string, number, string][] = [
      ["examples/plugins/sqlite-table/job.toml", 6, "mock"],
      ["examples/plugins/http-endpoint/job.toml", 12, "http-endpoint"],
    ]
    for (const [job, items, provider] of cases) {
      const out = await spool(["estimate", job, "--json"], { cwd: tmp.path })
      expect(out.code).toBe(0)
      const e = JSON.parse(out.stdout)
      expect([e.provider, e.items, e.requests, e.malformed.count, e.unfilled.count]).toEqual([
        provider,
        items,
        items,
        0,
        0,
      ])
      expect(e.tokens.output).toBe(items * 20) // max_tokens = 20 in both jobs
      expect(e.cost.realtime_usd).toBeNull() // neither model has a price
    }
    expect(existsSync(tmp.join(".spool"))).toBe(false)
  })

  test("a priced model gives exact costs, in JSON and in text, with no API key", async () => {
    await using tmp = await tmpdir()
    const rows = ["abcd", "abcdefgh", "abcdefghi"].map((t, i) => JSON.stringify({ n: i, t }))
    writeFileSync(tmp.join("in.jsonl"), `${rows.join("\n")}\n{oops\n{"n":9}\n`)
    writeFileSync(
      tmp.join("job.toml"),
      `name = "e"\n[source]\npath = "in.jsonl"\nid = "n"\n[provider]\nname = "openai"\nmodel = "gpt-4.1-mini"\n` +
        `[request]\nprompt = "{{t}}"\nmax_tokens = 1000\n`,
    )
    // input: 1 + 2 + 3 tokens of text, + 6 framing each = 24; output ≤ 3 × 1,000
    // realtime (24 × 0.40 + 3,000 × 1.60) / 1e6 = 0.0048096 → 0.00481; batch half: 0.0024048 → 0.002405
    const json = await spool(["estimate", "job.toml", "--json"], { cwd: tmp.path })
    expect(json.code).toBe(0)
    const e = JSON.parse(json.stdout)
    expect(e).toMatchObject({
      items: 4,
      requests: 3,
      malformed: { count: 1 },
      unfilled: { count: 1, sample: [{ file: "in.jsonl", line: 5, id: "9", missing: ["t"] }] },
      tokens: { input: 24, output: 3000 },
      cost: { realtime_usd: 0.00481, batch_usd: 0.002405, output_included: true },
    })
    const text = await spool(["estimate", "job.toml"], { cwd: tmp.path })
    expect(text.code).toBe(0)
    expect(text.stdout).toContain("4 read · 3 request(s) · 1 malformed row(s) skipped · 1 with a template")
    expect(text.stdout).toContain("in ~24 (estimated: ceil(UTF-8 bytes / 4) per text")
    expect(text.stdout).toContain("out ≤ 3,000 (max_tokens per request: an upper bound)")
    expect(text.stdout).toContain("cost      ~$0.0048 realtime · ~$0.0024 batch")
    expect(text.stdout).toContain("in.jsonl:5 9  missing {{t}}")
    expect(text.stdout).toContain("in.jsonl:4  not valid JSON")
    // flags override the job as for run: a model with no price has an unknown cost
    const flagged = await spool(["estimate", "job.toml", "--model", "my-model", "--max-tokens", "10"], {
      cwd: tmp.path,
    })
    expect(flagged.stdout).toContain("out ≤ 30 ")
    expect(flagged.stdout).toContain("cost      unknown (no price for my-model")
    expect(existsSync(tmp.join(".spool"))).toBe(false)
  })

  test("a bad job exits 2 like run, and nothing is created", async () => {
    await using tmp = await tmpdir()
    writeFileSync(
      tmp.join("job.toml"),
      `name = "bad"\n[source]\npath = "in.jsonl"\n[provider]\nname = "openai"\nmodle = "x"\n[request]\nprompt = 3\n`,
    )
    const out = await spool(["estimate", "job.toml"], { cwd: tmp.path })
    expect(out.code).toBe(2)
    expect(out.stderr).toContain('× provider.modle: unknown key; did you mean "model"?')
    expect(out.stderr).toContain("× request.prompt: expected a string")
    expect(existsSync(tmp.join(".spool"))).toBe(false)
  })

  test("a mistyped model is priced as nothing: one warning naming the nearest model, at estimate and at run start", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("in.jsonl"), `${["a", "b", "c"].map((t) => JSON.stringify({ t })).join("\n")}\n`)
    const warning = 'no price for model "gpt-4.1-mnii" (did you mean "gpt-4.1-mini"?); cost shows as unknown'
    const times = (text: string, part: string) => text.split(part).length - 1
    const flags = ["--input", "in.jsonl", "--prompt", "{{t}}", "--max-tokens", "10"]

    const est = await spool(["estimate", ...flags, "--provider", "openai", "--model", "gpt-4.1-mnii"], {
      cwd: tmp.path,
    })
    expect(est.code).toBe(0)
    expect(times(est.stderr, warning)).toBe(1)
    expect(est.stdout).toContain("cost      unknown (no price for gpt-4.1-mnii")

    // the mock calls nothing, so the run is offline; a mistyped priced name is warned about with it too
    const run = await spool(["run", ...flags, "--provider", "mock", "--model", "gpt-4.1-mnii"], {
      cwd: tmp.path,
    })
    expect(run.code).toBe(0)
    expect(times(run.stderr, warning)).toBe(1)
    const status = JSON.parse((await spool(["status", "--json"], { cwd: tmp.path })).stdout)
    expect(status.spend).toEqual({ usd: null, remaining_usd: null, prices: null })

    // a model near nothing: the warning says how to price it; the mock's own models are not warned about
    const local = await spool(["estimate", ...flags, "--provider", "openai", "--model", "llama3.2"], {
      cwd: tmp.path,
    })
    expect(times(local.stderr, "no price for model")).toBe(1)
    expect(local.stderr).toContain(
      'no price for model "llama3.2"; cost shows as unknown (set input and output in [pricing] to count it)',
    )
    const mock = await spool(["estimate", ...flags, "--provider", "mock", "--model", "mock-1"], {
      cwd: tmp.path,
    })
    expect(mock.stderr).not.toContain("no price")
    // a dated snapshot of a priced model is priced, silently
    const dated = await spool(
      ["estimate", ...flags, "--provider", "openai", "--model", "gpt-4.1-mini-2025-04-14", "--json"],
      { cwd: tmp.path },
    )
    expect(dated.stderr).not.toContain("no price")
    expect(JSON.parse(dated.stdout).cost.prices.source).toBe("built-in prices for gpt-4.1-mini (2025-11)")
  })

  test("a semicolon CSV with no delimiter set is read by its header's delimiter; one set wrong is refused with the fix", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("in.csv"), "id;name;note\n1;Ann;a, b\n2;Bo;c\n3;Cy;d\n")
    const flags = ["--input", "in.csv", "--prompt", "{{name}}: {{note}}", "--provider", "mock", "--json"]
    const out = await spool(["estimate", ...flags], { cwd: tmp.path })
    expect(out.code).toBe(0)
    expect(JSON.parse(out.stdout)).toMatchObject({ items: 3, requests: 3, malformed: { count: 0 } })
    const said = `${tmp.join("in.csv")}: read with delimiter ";", sniffed from its header line`
    expect(out.stderr.split(said).length - 1).toBe(1)

    writeFileSync(
      tmp.join("job.toml"),
      `name = "semi"\n[source]\npath = "in.csv"\nid = "id"\ndelimiter = ","\n[provider]\nname = "mock"\n[request]\nprompt = "{{name}}"\n`,
    )
    const wrong = await spool(["estimate", "job.toml"], { cwd: tmp.path })
    expect(wrong.code).toBe(2)
    expect(wrong.stderr).toContain(
      `${tmp.join("in.csv")}: no "id" column for the id field; the header has id;name;note`,
    )
    expect(wrong.stderr).toContain(
      'The header looks separated by ";": set delimiter = ";" in [source] (or pass --delimiter ";").',
    )
  })
})
