/**
 * Base URLs through the compiled binary, against the fake providers on 127.0.0.1 (issue 14): an Anthropic base_url
 * written the OpenAI way (ending in /v1) works, and a wrong one, in realtime or batch mode, pauses the run on its
 * first answer saying "check base_url (it is …)" instead of blaming the key or the model.
 */
import { describe, expect, test } from "bun:test"
import { writeFileSync } from "node:fs"
import { startFake } from "../lib/fake-openai.ts"
import { startFakeAnthropic } from "../lib/fake-anthropic.ts"
import { spool } from "../lib/spool.ts"
import { tmpdir, type Tmp } from "../lib/tmp.ts"

const KEY = "sk-test-baseurl-0123456789"
const env = { OPENAI_API_KEY: KEY, ANTHROPIC_API_KEY: KEY }
const N = 6

/** A job of N items for `provider` at `url`; batch mode polls fast. */
function job(tmp: Tmp, provider: string, url: string, mode: "realtime" | "batch"): void {
  writeFileSync(
    tmp.join("in.jsonl"),
    Array.from({ length: N }, (_, i) => JSON.stringify({ id: `id-${i + 1}`, t: `t${i + 1}` })).join("\n") +
      "\n",
  )
  writeFileSync(
    tmp.join("job.toml"),
    `name = "urls"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "${provider}"
model = "${provider === "anthropic" ? "claude-haiku-4-5" : "gpt-4.1-mini"}"
mode = "${mode}"
base_url = "${url}"
[request]
prompt = "{{t}}"
max_tokens = 20
[limits]
retry_base_s = 0.01
retry_cap_s = 0.05
[batch]
poll_s = 0.05
poll_max_s = 0.2
`,
  )
}

/** Runs the job; returns what it printed and the run's state and counts. */
async function run(tmp: Tmp) {
  const out = await spool(["run", "job.toml"], { cwd: tmp.path, env })
  const status = JSON.parse((await spool(["status", "--json"], { cwd: tmp.path, env })).stdout) as {
    state: string
    counts: Record<string, number>
  }
  return { ...out, state: status.state, counts: status.counts }
}

/** Runs the job, which must pause with `reason` without failing an item; returns what it printed. */
async function pausedWith(tmp: Tmp, reason: string) {
  const out = await run(tmp)
  expect(out.code).toBe(1)
  expect(out.stderr).toContain(`paused: ${reason}`)
  expect([out.state, out.counts.failed]).toEqual(["paused", 0])
  return out
}

/** A gateway's 401 at a path it does not route, in OpenAI's words: not Anthropic's authentication_error. */
const gateway401 = () =>
  Response.json(
    {
      error: {
        message:
          "You didn't provide an API key. You need to provide your API key in an Authorization header.",
        type: "invalid_request_error",
        param: null,
        code: null,
      },
    },
    { status: 401 },
  )

describe("dist/spool and base_url", () => {
  for (const mode of ["realtime", "batch"] as const)
    test(`an Anthropic base_url ending in /v1 is used without it, with one info line (${mode})`, async () => {
      await using tmp = await tmpdir()
      await using fake = await startFakeAnthropic({ apiKey: KEY })
      job(tmp, "anthropic", `${fake.url}/v1`, mode)
      const out = await run(tmp)
      expect(out.code).toBe(0)
      const said = `the base URL ${fake.url}/v1 ends in /v1, which the Anthropic API's paths carry already: using ${fake.url}`
      expect(out.stderr.split(said).length - 1).toBe(1)
      expect([out.state, out.counts.completed]).toEqual(["completed", N])
      expect(fake.paid.size).toBe(N)
      expect(fake.invalid).toEqual([])
    })

  test("anthropic, realtime: a 404 for a path the server lacks pauses the run, naming base_url; nothing is failed or paid", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFakeAnthropic({ apiKey: KEY })
    job(tmp, "anthropic", `${fake.url}/api`, "realtime")
    const out = await pausedWith(
      tmp,
      `HTTP 404: Not Found: POST /api/v1/messages; check base_url (it is http://127.0.0.1:${fake.port}/api)`,
    )
    expect(out.stderr).toContain(
      "base_url is the server's root, without /v1: https://api.anthropic.com by default.",
    )
    expect(out.counts.pending).toBe(N)
    expect(fake.paid.size).toBe(0)
  })

  test("anthropic, batch: a gateway's 401 that is not Anthropic's pauses the run, naming base_url and the key", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFakeAnthropic({ apiKey: KEY, unrouted: gateway401 })
    job(tmp, "anthropic", `${fake.url}/api`, "batch")
    const out = await pausedWith(
      tmp,
      `HTTP 401: You didn't provide an API key. You need to provide your API key in an Authorization header; check base_url (it is http://127.0.0.1:${fake.port}/api)`,
    )
    expect(out.stderr).toContain("If base_url is right, check the API key.")
    expect(fake.batch.creates).toEqual([])

    // base_url mended: the paused run resumes and finishes, each item paid once
    job(tmp, "anthropic", fake.url, "batch")
    const mended = await run(tmp)
    expect(mended.code).toBe(0)
    expect([mended.state, mended.counts.completed]).toEqual(["completed", N])
    expect([...fake.paid.values()]).toEqual(Array(N).fill(1))
  })

  test("openai, realtime: /v1 twice gets a 404 naming the path, and the run pauses naming base_url", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    // the fake's URL ends in /v1 already, as OpenAI's does
    job(tmp, "openai", `${fake.url}/v1`, "realtime")
    const out = await pausedWith(
      tmp,
      `HTTP 404: Unknown request URL: POST /v1/v1/chat/completions; check base_url (it is http://127.0.0.1:${fake.port}/v1/v1)`,
    )
    expect(out.counts.pending).toBe(N)
    expect(fake.paid.size).toBe(0)
  })

  test("openai, batch: a proxy's plain-text 401 pauses the run naming base_url; OpenAI's own 401 does not", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({
      apiKey: KEY,
      unrouted: () => new Response("Unauthorized", { status: 401 }),
    })
    job(tmp, "openai", `${fake.url}/v1`, "batch")
    const out = await pausedWith(
      tmp,
      `HTTP 401: Unauthorized; check base_url (it is http://127.0.0.1:${fake.port}/v1/v1)`,
    )

    // the right URL and a wrong key: OpenAI's own answer, as it was
    await using other = await tmpdir()
    job(other, "openai", fake.url, "batch")
    const wrong = await spool(["run", "job.toml"], {
      cwd: other.path,
      env: { OPENAI_API_KEY: "sk-wrong-0000000000" },
    })
    expect(wrong.code).toBe(1)
    expect(wrong.stderr).toContain("paused: HTTP 401: Incorrect API key provided.")
    expect(wrong.stderr).not.toContain("check base_url")
  })
})
