/** Plugin files loaded by the compiled binary from a folder with no node_modules, as a user would have them. */
import { Database } from "bun:sqlite"
import { describe, expect, test } from "bun:test"
import { cpSync, existsSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { spool } from "../lib/spool.ts"
import { tmpdir, type Tmp } from "../lib/tmp.ts"

const EXAMPLES = join(import.meta.dir, "..", "..", "examples")

/** examples/ copied into a temporary directory: nothing above it has node_modules or a package.json. */
function copyExamples(tmp: Tmp): string {
  cpSync(EXAMPLES, tmp.join("examples"), { recursive: true })
  return tmp.join("examples", "plugins")
}

const lines = (text: string) =>
  text
    .trim()
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>)

describe("plugins in dist/spool", () => {
  test("the sqlite-table example source runs its job: one item per row, keyed by the id column", async () => {
    await using tmp = await tmpdir()
    const dir = copyExamples(tmp)
    const job = join(dir, "sqlite-table", "job.toml")
    const run = await spool(["run", job], { cwd: tmp.path })
    expect(run.code).toBe(0)
    const results = lines((await spool(["results"], { cwd: tmp.path })).stdout)
    const db = new Database(join(dir, "sqlite-table", "tickets.db"), { readonly: true })
    const rows = db.query("SELECT rowid, * FROM tickets ORDER BY rowid").all() as Record<string, string>[]
    db.close()
    expect(results.length).toBe(6)
    expect(results).toEqual(
      rows.map((r) => ({
        id: r.ticket_id,
        state: "completed",
        output: `mock reply to: ${r.subject}: ${r.body}`,
        error: null,
        attempts: 1,
        usage: expect.any(Object),
        cost_usd: null,
        prompt_cache_saved_usd: null,
        cached: false,
        source: { file: join(dir, "sqlite-table", "tickets.db"), row: Number(r.rowid), id: r.ticket_id },
      })),
    )

    // rows added to the table later are picked up by the next run; the first six are not sent again
    const db2 = new Database(join(dir, "sqlite-table", "tickets.db"))
    db2.run(
      "INSERT INTO tickets VALUES ('T-1007', 'Refund please', 'Cancel and refund my plan.', '2026-03-08')",
    )
    db2.close()
    expect((await spool(["run", job], { cwd: tmp.path })).code).toBe(0)
    const again = lines((await spool(["results"], { cwd: tmp.path })).stdout)
    expect(again.map((r) => [r.id, r.attempts])).toEqual([
      ...rows.map((r) => [r.ticket_id, 1]),
      ["T-1007", 1],
    ])
  })

  test("the http-endpoint example provider runs its job against a local endpoint", async () => {
    await using tmp = await tmpdir()
    const dir = copyExamples(tmp)
    const prompts: string[] = []
    using server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      async fetch(req) {
        const body = (await req.json()) as {
          prompt: string
          model: string
          system: string
          max_tokens: number
        }
        prompts.push(body.prompt)
        expect([body.model, body.max_tokens]).toEqual(["in-house-7b", 20])
        return Response.json({
          output: { text: `label(${body.prompt})` },
          usage: { input_tokens: 9, output_tokens: 2 },
        })
      },
    })
    const job = join(dir, "http-endpoint", "job.toml")
    writeFileSync(
      job,
      readFileSync(job, "utf8").replace(
        "http://127.0.0.1:8080/generate",
        `http://127.0.0.1:${server.port}/gen`,
      ),
    )
    const run = await spool(["run", job], { cwd: tmp.path })
    expect(run.code).toBe(0)
    const tickets = lines(readFileSync(join(EXAMPLES, "quickstart", "tickets.jsonl"), "utf8"))
    const results = lines((await spool(["results"], { cwd: tmp.path })).stdout)
    expect(results.map((r) => [r.id, r.output, r.usage])).toEqual(
      tickets.map((t) => [
        t.ticket_id,
        `label(${t.subject})`,
        { input_tokens: 9, output_tokens: 2, cached_input_tokens: 0, cache_write_tokens: 0 },
      ]),
    )
    expect(prompts.sort()).toEqual(tickets.map((t) => String(t.subject)).sort())
  })

  test("spool plugins --json lists the loaded plugins with their origin and options", async () => {
    await using tmp = await tmpdir()
    const dir = copyExamples(tmp)
    writeFileSync(
      join(dir, "both.toml"),
      `plugins = ["sqlite-table/sqlite-table.ts", "http-endpoint/http-endpoint.ts"]\n[source]\npath = "sqlite-table/tickets.db"\n[provider]\nname = "mock"\n[request]\nprompt = "{{subject}}"\n`,
    )
    const out = await spool(["plugins", join(dir, "both.toml"), "--json"], { cwd: tmp.path })
    expect(out.code).toBe(0)
    const listed = JSON.parse(out.stdout) as {
      kind: string
      name: string
      origin: string
      options: { name: string; required: boolean }[]
    }[]
    const plugin = (name: string) => listed.find((p) => p.name === name)
    expect(plugin("sqlite-table")).toMatchObject({
      kind: "source",
      origin: join(dir, "sqlite-table", "sqlite-table.ts"),
      extensions: [".db", ".sqlite", ".sqlite3"],
    })
    expect(plugin("sqlite-table")!.options.map((o) => [o.name, o.required])).toEqual([
      ["table", false],
      ["batch_rows", false],
    ])
    expect(plugin("http-endpoint")).toMatchObject({
      kind: "provider",
      origin: join(dir, "http-endpoint", "http-endpoint.ts"),
    })
    expect(plugin("http-endpoint")!.options.map((o) => [o.name, o.required])).toEqual([
      ["url", true],
      ["reply_field", false],
      ["headers", false],
    ])
    expect(plugin("csv")).toMatchObject({ kind: "source", origin: "built-in" })
    expect(plugin("openai")).toMatchObject({ kind: "provider", origin: "built-in" })
  })

  describe("a plugin that cannot be used stops the run before any work, naming its file", () => {
    const cases: [string, string, RegExp][] = [
      ["a syntax error", "export default {\n", /failed to load/],
      ["a throw at import", 'throw new Error("no config found")\n', /failed to load: no config found/],
      ["no default export", "export const x = 1\n", /default export is not a source, a provider or a plugin/],
      [
        "a source of the wrong shape",
        'import { defineSource } from "spool/plugin"\nexport default defineSource({ name: "Bad Name", extensions: ["txt"], options: {}, read: 1 } as any)\n',
        /wrong shape[\s\S]*name must be lowercase[\s\S]*extensions must be[\s\S]*options must be a valibot schema[\s\S]*read must be/,
      ],
      [
        "a name that clashes with a built-in",
        'import { defineSource } from "spool/plugin"\nimport * as v from "valibot"\nexport default defineSource({ name: "csv", extensions: [".x"], options: v.object({}), async *read() {} })\n',
        /source "csv" clashes with the built-in/,
      ],
    ]
    for (const [what, code, message] of cases) {
      test(what, async () => {
        await using tmp = await tmpdir()
        writeFileSync(tmp.join("in.jsonl"), '{"t":"a"}\n')
        writeFileSync(tmp.join("plugin.ts"), code)
        writeFileSync(
          tmp.join("job.toml"),
          `plugins = ["plugin.ts"]\n[source]\npath = "in.jsonl"\n[provider]\nname = "mock"\n[request]\nprompt = "{{t}}"\n`,
        )
        const out = await spool(["run", "job.toml"], { cwd: tmp.path })
        expect(out.code).toBe(2)
        expect(out.stderr).toContain(`plugin ${tmp.join("plugin.ts")}:`)
        expect(out.stderr).toMatch(message)
        // nothing was created: not even the store
        expect(existsSync(tmp.join(".spool", "spool.db"))).toBe(false)
      })
    }

    test("a missing file, and a file that is not .ts or .js", async () => {
      await using tmp = await tmpdir()
      writeFileSync(tmp.join("in.jsonl"), '{"t":"a"}\n')
      writeFileSync(tmp.join("plugin.py"), "print(1)\n")
      for (const [file, message] of [
        ["nope.ts", "no such file"],
        ["plugin.py", "not a .ts or .js file"],
      ]) {
        writeFileSync(
          tmp.join("job.toml"),
          `plugins = ["${file}"]\n[source]\npath = "in.jsonl"\n[provider]\nname = "mock"\n[request]\nprompt = "{{t}}"\n`,
        )
        const out = await spool(["run", "job.toml"], { cwd: tmp.path })
        expect(out.code).toBe(2)
        expect(out.stderr).toContain(`plugin ${tmp.join(file!)}: ${message}`)
      }
    })
  })
})
