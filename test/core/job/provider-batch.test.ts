/** `[provider.batch]` (issue 19's spelling) is openai-compatible's `[provider.options.batch]`, in a job and in a step. */
import { describe, expect, test } from "bun:test"
import { writeFileSync } from "node:fs"
import * as jobs from "../../../src/core/job/job.ts"
import { tmpdir } from "../../lib/tmp.ts"

const JOB = `name = "p"
[source]
path = "in.jsonl"
[provider]
name = "openai-compatible"
model = "m"
mode = "batch"
base_url = "http://127.0.0.1:1/v1"
[provider.batch]
profile = "together"
max_requests = 20
[request]
prompt = "{{text}}"
`

describe("[provider.batch]", () => {
  test("is read as [provider.options.batch], at the top and in a step that sets its own", async () => {
    await using tmp = await tmpdir()
    writeFileSync(
      tmp.join("job.toml"),
      `${JOB}[[step]]\nname = "a"\n[[step]]\nname = "b"\nneeds = ["a"]\nprovider = { batch = { profile = "azure" } }\n`,
    )
    const loaded = jobs.load("job.toml", {}, tmp.path)
    expect(loaded.job.provider.options).toEqual({ batch: { profile: "together", max_requests: 20 } })
    expect(loaded.steps!.map((s) => s.job!.provider.options)).toEqual([
      { batch: { profile: "together", max_requests: 20 } },
      { batch: { profile: "azure" } },
    ])
  })

  test("given beside [provider.options.batch], it is refused as a key the provider table does not have", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("job.toml"), `${JOB}[provider.options.batch]\nprofile = "groq"\n`)
    expect(() => jobs.load("job.toml", {}, tmp.path)).toThrow("the job is not valid")
  })
})
