import { describe, expect, test } from "bun:test"
import { writeFileSync } from "node:fs"
import { JobError } from "../../../src/plugins/api/errors.ts"
import * as jobs from "../../../src/core/job/job.ts"
import { keyer } from "../../../src/core/job/cache.ts"
import { cacheUse } from "../../../src/core/engine/cache.ts"
import { tmpdir } from "../../lib/tmp.ts"

const HEAD = `name = "vecs"\n[source]\npath = "in.jsonl"\n[provider]\nname = "openai"\nmodel = "text-embedding-3-small"\n`

function problems(fn: () => unknown): string[] {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(JobError)
    return (err as JobError).problems
  }
  throw new Error("expected a JobError")
}

describe("an embedding job", () => {
  test("reads kind, input and dimensions; its input is the template every renderer renders", async () => {
    await using tmp = await tmpdir()
    writeFileSync(
      tmp.join("job.toml"),
      `${HEAD}[request]\nkind = "embedding"\ninput = "{{text}}"\ndimensions = 256\n`,
    )
    const { job } = jobs.load("job.toml", {}, tmp.path)
    expect(job.request.kind).toBe("embedding")
    expect(job.request.input).toBe("{{text}}")
    expect(job.request.prompt).toBe("{{text}}")
    expect(job.request.dimensions).toBe(256)
  })

  test("flags set them: --kind, --embed-input, --dimensions", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("job.toml"), HEAD)
    const given = { kind: "embedding", "embed-input": "{{title}}", dimensions: "64" }
    const { job } = jobs.load("job.toml", given, tmp.path)
    expect([job.request.kind, job.request.input, job.request.dimensions]).toEqual([
      "embedding",
      "{{title}}",
      64,
    ])
  })

  test("refuses each chat key by name, and a missing input", async () => {
    await using tmp = await tmpdir()
    writeFileSync(
      tmp.join("job.toml"),
      `${HEAD}[request]\nkind = "embedding"\nprompt = "x"\nsystem = "y"\nmax_tokens = 5\ntemperature = 0\n[output]\nschema = { type = "object" }\n`,
    )
    expect(problems(() => jobs.load("job.toml", {}, tmp.path))).toEqual([
      'request.input: missing (required) for kind = "embedding": the text to embed, e.g. "{{text}}"',
      'request.prompt: not for embedding jobs (kind = "embedding" sends only input and dimensions); remove it',
      'request.system: not for embedding jobs (kind = "embedding" sends only input and dimensions); remove it',
      'request.max_tokens: not for embedding jobs (kind = "embedding" sends only input and dimensions); remove it',
      'request.temperature: not for embedding jobs (kind = "embedding" sends only input and dimensions); remove it',
      'output: not for embedding jobs (kind = "embedding" sends only input and dimensions); remove it',
    ])
  })

  test("batch mode takes embeddings; an openai endpoint for chat is refused by name, embeddings' own taken", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("job.toml"), `${HEAD}[request]\nkind = "embedding"\ninput = "{{text}}"\n`)
    expect(jobs.load("job.toml", { mode: "batch" }, tmp.path).job.provider.mode).toBe("batch")
    for (const endpoint of ["chat", "responses"]) {
      writeFileSync(
        tmp.join("job.toml"),
        `${HEAD}[provider.options]\nendpoint = "${endpoint}"\n[request]\nkind = "embedding"\ninput = "{{text}}"\n`,
      )
      expect(problems(() => jobs.load("job.toml", { mode: "batch" }, tmp.path))).toEqual([
        `provider.options.endpoint: "${endpoint}" is not for embedding jobs, which send /v1/embeddings; remove it (or set "embeddings")`,
      ])
    }
    for (const endpoint of ["embeddings", "/v1/embeddings"]) {
      writeFileSync(
        tmp.join("job.toml"),
        `${HEAD}[provider.options]\nendpoint = "${endpoint}"\n[request]\nkind = "embedding"\ninput = "{{text}}"\n`,
      )
      expect(jobs.load("job.toml", { mode: "batch" }, tmp.path).job.provider.options).toEqual({ endpoint })
    }
  })

  test("a chat job needs its prompt and refuses input, dimensions and a bad kind", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("job.toml"), `${HEAD}[request]\ninput = "{{text}}"\ndimensions = 0\n`)
    expect(problems(() => jobs.load("job.toml", {}, tmp.path))).toEqual([
      "request.prompt: missing (required)",
      'request.input: only for embedding jobs (set [request] kind = "embedding")',
      'request.dimensions: only for embedding jobs (set [request] kind = "embedding")',
      "request.dimensions: must be at least 1",
    ])
    writeFileSync(tmp.join("job.toml"), `${HEAD}[request]\nkind = "vector"\nprompt = "x"\n`)
    expect(problems(() => jobs.load("job.toml", {}, tmp.path))).toEqual([
      'request.kind: must be "chat" (a prompt answered with text) or "embedding" (a vector)',
    ])
  })

  test("its cache key differs from a chat request's with the same text; the cache is off for it", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("e.toml"), `${HEAD}[request]\nkind = "embedding"\ninput = "{{text}}"\n`)
    writeFileSync(tmp.join("c.toml"), `${HEAD}[request]\nprompt = "{{text}}"\n`)
    writeFileSync(
      tmp.join("d.toml"),
      `${HEAD}[request]\nkind = "embedding"\ninput = "{{text}}"\ndimensions = 8\n`,
    )
    const who = { provider: "openai", baseUrl: undefined, model: "text-embedding-3-small", options: {} }
    const key = (f: string) => keyer(jobs.load(f, {}, tmp.path).job, who)({ text: "hello" })
    const keys = ["e.toml", "c.toml", "d.toml"].map(key)
    expect(new Set(keys).size).toBe(3)
    expect(cacheUse(jobs.load("e.toml", {}, tmp.path).job, who)).toBeUndefined()
    expect(cacheUse(jobs.load("c.toml", {}, tmp.path).job, who)).toBeDefined()
  })

  test("its fingerprint holds the kind and dimensions; a chat job's is as before", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("e.toml"), `${HEAD}[request]\nkind = "embedding"\ninput = "{{text}}"\n`)
    writeFileSync(tmp.join("c.toml"), `${HEAD}[request]\nprompt = "{{text}}"\n`)
    const e = jobs.shaping(jobs.load("e.toml", {}, tmp.path).job)
    const c = jobs.shaping(jobs.load("c.toml", {}, tmp.path).job)
    expect(e["request.kind"]).toBe("embedding")
    expect("request.kind" in c).toBe(false)
  })
})
