/** `spool estimate`: every input read, every request rendered and counted, nothing called or written. */
import { describe, expect, test } from "bun:test"
import { existsSync, writeFileSync } from "node:fs"
import { estimate, estimateText } from "../../../src/core/engine/estimate.ts"
import * as jobs from "../../../src/core/job/job.ts"
import { JobError } from "../../../src/plugins/api/errors.ts"
import { tmpdir, type Tmp } from "../../lib/tmp.ts"

// system "abcdefgh": 8 bytes → 2 tokens, + 3 for its message = 5 per request
const ROWS = [
  `{"id":"a","q":"1234"}`, // "Q: 1234": 7 bytes → 2, + 3 message + 3 request + 5 system = 13
  `{"id":"b","q":"12345678901"}`, // "Q: 12345678901": 14 bytes → 4, + 11 = 15
  `{"id":"c","q":"é"}`, // "Q: é": 5 UTF-8 bytes → 2, + 11 = 13
  `{"id":"d","other":1}`, // no q: cannot be filled
  `{not json`, // malformed
]
const INPUT_TOKENS = 13 + 15 + 13

function job(tmp: Tmp, provider: string, extra = ""): jobs.Job {
  writeFileSync(tmp.join("in.jsonl"), `${ROWS.join("\n")}\n`)
  writeFileSync(
    tmp.join("job.toml"),
    `name = "est"\n[source]\npath = "in.jsonl"\nid = "id"\n[provider]\n${provider}\n` +
      `[request]\nsystem = "abcdefgh"\nprompt = "Q: {{q}}"\n${extra}`,
  )
  return jobs.load(tmp.join("job.toml"), {}).job
}

describe("estimate", () => {
  test("exact items, tokens and costs; an unfillable row and a malformed row are counted", async () => {
    await using tmp = await tmpdir()
    // no OPENAI_API_KEY here (the preload removes it): estimate needs none
    const e = await estimate(job(tmp, `name = "openai"\nmodel = "gpt-4.1-mini"`, "max_tokens = 100\n"))
    expect(e.items).toBe(4)
    expect(e.requests).toBe(3)
    expect(e.malformed.count).toBe(1)
    expect(e.malformed.sample[0]).toMatchObject({ file: "in.jsonl", line: 5 })
    expect(e.unfilled).toEqual({ count: 1, sample: [{ file: "in.jsonl", line: 4, id: "d", missing: ["q"] }] })
    expect(e.tokens).toMatchObject({ input: INPUT_TOKENS, output: 300, output_upper_bound: true })
    // gpt-4.1-mini: $0.40 in, $1.60 out per million; batch half price
    expect(e.cost.realtime_usd).toBe(0.000496) // (41 × 0.4 + 300 × 1.6) / 1e6 = 0.0004964, rounded to 1e-6
    expect(e.cost.batch_usd).toBe(0.000248)
    expect(e.cost.flex_usd).toBeNull() // gpt-4.1-mini has no flex tier
    expect(e.cost.output_included).toBe(true)
    expect(e.cost.prices?.source).toContain("gpt-4.1-mini")
    const text = estimateText(e)
    expect(text).toContain("4 read · 3 request(s) · 1 malformed row(s) skipped · 1 with a template")
    expect(text).toContain("in ~41")
    expect(text).toContain("≤ 300")
    expect(text).toContain("in.jsonl:4 d  missing {{q}}")
    expect(existsSync(tmp.join(".spool"))).toBe(false)
  })

  test("a model with a flex tier: its flex cost beside realtime and batch, whatever the job's mode", async () => {
    await using tmp = await tmpdir()
    for (const mode of ["realtime", "flex"]) {
      const e = await estimate(
        job(tmp, `name = "openai"\nmodel = "gpt-5-mini"\nmode = "${mode}"`, "max_tokens = 100\n"),
      )
      // gpt-5-mini: $0.25 in, $2 out per million; flex and batch at half
      expect(e.cost).toMatchObject({ realtime_usd: 0.00061, flex_usd: 0.000305, batch_usd: 0.000305 })
      expect(estimateText(e)).toContain("cost      ~$0.0006 realtime · ~$0.0003 flex · ~$0.0003 batch")
    }
  })

  test("without max_tokens the output is unknown and the cost covers the input only", async () => {
    await using tmp = await tmpdir()
    const e = await estimate(job(tmp, `name = "openai"\nmodel = "gpt-4.1-mini"`))
    expect(e.tokens.output).toBeNull()
    expect(e.cost).toMatchObject({ realtime_usd: 0.000016, batch_usd: 0.000008, output_included: false })
    expect(estimateText(e)).toContain("out unknown (no max_tokens)")
  })

  test("an unknown model has unknown costs, never $0; [pricing] gives it one", async () => {
    await using tmp = await tmpdir()
    const e = await estimate(job(tmp, `name = "openai"\nmodel = "my-own-model"`, "max_tokens = 100\n"))
    expect(e.tokens.input).toBe(INPUT_TOKENS)
    expect(e.cost).toEqual({
      realtime_usd: null,
      batch_usd: null,
      flex_usd: null,
      output_included: true,
      prices: null,
    })
    expect(estimateText(e)).toContain("cost      unknown (no price for my-own-model")
    const priced = await estimate(
      job(
        tmp,
        `name = "openai"\nmodel = "my-own-model"`,
        "max_tokens = 100\n[pricing]\ninput = 1\noutput = 2\n",
      ),
    )
    expect(priced.cost.realtime_usd).toBe((41 * 1 + 300 * 2) / 1e6)
  })

  test("validates the job as run does: unknown provider options, a missing model", async () => {
    await using tmp = await tmpdir()
    // a built-in provider's are found as the job loads (test/core/job/job.test.ts); estimate checks them again, for
    // a plugin's provider, whose options and need of a model are known only once it is loaded
    const mock = job(tmp, `name = "mock"`)
    await expect(estimate({ ...mock, provider: { ...mock.provider, options: { nope: 1 } } })).rejects.toThrow(
      JobError,
    )
    const openai = job(tmp, `name = "openai"\nmodel = "m"`)
    await expect(estimate({ ...openai, provider: { ...openai.provider, model: undefined } })).rejects.toThrow(
      "provider.model: missing (required)",
    )
  })
})
