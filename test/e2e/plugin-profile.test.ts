/**
 * A plugin's batch profile (docs/PLUGINS.md, "A batch profile of your own"), through dist/spool: a plugin file adds a
 * named profile with `definePlugin({ profiles })`, `spool plugins` lists it, a job picks it by name and runs in batch
 * mode against the service it describes; a profile of the wrong shape, or with a built-in profile's name, is refused
 * before anything runs, naming the file, the profile and the key.
 */
import { describe, expect, test } from "bun:test"
import { existsSync, writeFileSync } from "node:fs"
import { startFake } from "../lib/fake-openai.ts"
import { spool } from "../lib/spool.ts"
import { tmpdir, type Tmp } from "../lib/tmp.ts"

const KEY = "sk-plugin-profile-0123"
const env = { ACME_KEY: KEY }

function setUp(tmp: Tmp, url: string, profiles: string): void {
  writeFileSync(
    tmp.join("acme.ts"),
    `import { definePlugin } from "spool/plugin"\nexport default definePlugin({ profiles: ${profiles} })\n`,
  )
  const rows = Array.from({ length: 50 }, (_, i) => JSON.stringify({ id: `id-${i + 1}`, n: i + 1 }))
  writeFileSync(tmp.join("in.jsonl"), `${rows.join("\n")}\n`)
  writeFileSync(
    tmp.join("job.toml"),
    `name = "acme"
plugins = ["acme.ts"]
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "openai-compatible"
model = "m"
mode = "batch"
base_url = "${url}"
api_key_env = "ACME_KEY"
[provider.options.batch]
profile = "acme"
[request]
prompt = "Row {{n}}"
max_tokens = 20
[batch]
poll_s = 0.05
poll_max_s = 0.2
`,
  )
}

describe("a plugin's batch profile", () => {
  test("is listed by spool plugins, and a job that names it runs in batch mode against its service", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, profile: "together", batch: { processingMs: 50 } })
    // Together's words and purpose, with a cap of 20 requests a batch of its own
    setUp(tmp, fake.url, `[{ name: "acme", profile: "together", max_requests: 20 }]`)
    const listed = await spool(["plugins", "job.toml", "--json"], { cwd: tmp.path })
    expect(listed.code).toBe(0)
    const compatible = (
      JSON.parse(listed.stdout) as { name: string; profiles?: Record<string, unknown> }[]
    ).find((p) => p.name === "openai-compatible")!
    expect(Object.keys(compatible.profiles!)).toEqual(["generic", "azure", "groq", "together", "acme"])
    expect(compatible.profiles!.acme).toMatchObject({ purpose: "batch-api", max_requests: 20 })

    const run = await spool(["run", "job.toml", "--home", tmp.join("h")], { cwd: tmp.path, env })
    expect(run.code).toBe(0)
    expect(run.stderr).toContain('run "acme": 50 completed, 0 failed of 50')
    // the plugin's cap: 50 items in batches of at most 20
    expect(fake.batch.batches.map((b) => b.custom_ids.length)).toEqual([20, 20, 10])
    for (let i = 1; i <= 50; i++) expect(fake.paid.get(`Row ${i}`)).toBe(1)
    expect(fake.invalid).toEqual([])
  }, 30_000)

  test("a profile of the wrong shape, or named as a built-in one, is refused before anything runs", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    setUp(
      tmp,
      fake.url,
      `[{ name: "acme", statuses: { DONE: "done" }, max_bytes: -1 }, { name: "azure", purpose: "x" }]`,
    )
    const run = await spool(["run", "job.toml", "--home", tmp.join("h")], { cwd: tmp.path, env })
    expect(run.code).toBe(2)
    expect(run.stderr).toContain(`plugin ${tmp.join("acme.ts")}: wrong shape`)
    expect(run.stderr).toContain("profile acme: statuses.DONE:")
    expect(run.stderr).toContain("profile acme: max_bytes:")
    expect(run.stderr).toContain('profile azure: name "azure" is taken by a built-in profile')
    expect(fake.requests).toBe(0)
    expect(existsSync(tmp.join("h", "spool.db"))).toBe(false)
  }, 30_000)
})
