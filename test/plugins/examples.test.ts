/** The example plugins in examples/plugins: the source passes the contract suite, the provider speaks HTTP. */
import { Database } from "bun:sqlite"
import { describe, expect, test } from "bun:test"
import { rmSync } from "node:fs"
import * as v from "valibot"
import sqliteTable from "../../examples/plugins/sqlite-table/sqlite-table.ts"
import httpEndpoint from "../../examples/plugins/http-endpoint/http-endpoint.ts"
import { ProviderError, SourceError } from "../../src/plugins/api/errors.ts"
import type { Request, SourceBatch } from "../../src/plugins/api/define.ts"
import { testSource } from "../lib/source-contract.ts"
import { tmpdir } from "../lib/tmp.ts"

/** Writes rows into table `items` of a fresh database; `null` rows get a NULL id. */
function database(file: string, rows: (Record<string, unknown> | null)[]): string {
  for (const suffix of ["", "-wal", "-shm"]) rmSync(file + suffix, { force: true })
  const db = new Database(file, { create: true })
  db.run("CREATE TABLE items (id TEXT, text TEXT, n INTEGER)")
  const insert = db.prepare("INSERT INTO items (id, text, n) VALUES (?, ?, ?)")
  db.transaction(() => {
    for (const r of rows)
      insert.run(
        (r?.id as string | undefined) ?? null,
        (r?.text as string | undefined) ?? "no id",
        (r?.n as number | undefined) ?? -1,
      )
  })()
  db.close()
  return file
}

testSource(
  sqliteTable,
  {
    write: async (dir, rows) => database(`${dir}/rows.db`, rows),
    malformed: async (dir, a, b) => ({
      path: database(`${dir}/rows.db`, [...a, null, ...b]),
      at: a.length + 1,
    }),
    invalid: { table: "items; DROP TABLE items" },
  },
  { batch_rows: 1000 },
)

describe("the sqlite-table example source", () => {
  const read = async (file: string, options: Record<string, unknown>) => {
    const out: SourceBatch[] = []
    for await (const b of sqliteTable.read(file, { batch_rows: 1000, ...options }, undefined)) out.push(b)
    return out
  }

  test("keys rows by rowid without an id column, and keeps every value JSON-safe", async () => {
    await using tmp = await tmpdir()
    const db = new Database(tmp.join("t.db"), { create: true })
    db.run("CREATE TABLE notes (body TEXT, blob BLOB, score REAL)")
    db.run("INSERT INTO notes VALUES ('a', x'0102ff', 1.5), ('b', NULL, NULL)")
    db.close()
    const rows = (await read(tmp.join("t.db"), {})).flatMap((b) => b.rows)
    expect(rows).toEqual([
      { key: "1", line: 1, data: { body: "a", blob: "AQL/", score: 1.5 } },
      { key: "2", line: 2, data: { body: "b", blob: null, score: null } },
    ])
  })

  test("rows appended after a full read come from its last checkpoint", async () => {
    await using tmp = await tmpdir()
    const file = database(tmp.join("t.db"), [{ id: "a", text: "x", n: 1 }])
    const first = await read(file, { id: "id" })
    const db = new Database(file)
    db.run("INSERT INTO items VALUES ('b', 'y', 2), ('c', 'z', 3)")
    db.close()
    const more: string[] = []
    for await (const b of sqliteTable.read(file, { batch_rows: 1000, id: "id" }, first.at(-1)!.checkpoint))
      more.push(...b.rows.map((r) => r.key))
    expect(more).toEqual(["b", "c"])
  })

  test("says which table to choose, and what is wrong with a file or an id column", async () => {
    await using tmp = await tmpdir()
    const two = new Database(tmp.join("two.db"), { create: true })
    two.run("CREATE TABLE a (x TEXT)")
    two.run("CREATE TABLE b (x TEXT)")
    two.close()
    await expect(read(tmp.join("two.db"), {})).rejects.toThrow(/has 2 tables \(a, b\): say which one/)
    await expect(read(tmp.join("two.db"), { table: "c" })).rejects.toThrow(/has no table "c"/)
    await expect(read(tmp.join("two.db"), { table: "a", id: "nope" })).rejects.toThrow(
      /table "a" of .*two\.db has no column "nope"/,
    )
    await Bun.write(
      tmp.join("text.db"),
      "not a database at all, just some text that is long enough\n".repeat(20),
    )
    await expect(read(tmp.join("text.db"), {})).rejects.toBeInstanceOf(SourceError)
    await expect(read(tmp.join("missing.db"), {})).rejects.toThrow(/no such file/)
  })
})

describe("the http-endpoint example provider", () => {
  type Seen = { body: Record<string, unknown>; auth: string | null; extra: string | null }

  /** An endpoint on 127.0.0.1 that answers from a script of responses, then echoes. */
  async function endpoint(script: (() => Response)[] = []) {
    const seen: Seen[] = []
    const server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      async fetch(req) {
        const body = (await req.json()) as Record<string, unknown>
        seen.push({ body, auth: req.headers.get("authorization"), extra: req.headers.get("x-team") })
        const next = script.shift()
        if (next) return next()
        return Response.json({
          output: { text: `echo: ${body.prompt}` },
          usage: { input_tokens: 7, output_tokens: 3 },
        })
      },
    })
    return {
      url: `http://127.0.0.1:${server.port}/generate`,
      seen,
      [Symbol.dispose]: () => server.stop(true),
    }
  }

  const client = (url: string, extra: Record<string, unknown> = {}, apiKey?: string) =>
    httpEndpoint.create(v.parse(httpEndpoint.options, { url, reply_field: "output.text", ...extra }), {
      model: "in-house-7b",
      baseUrl: undefined,
      apiKey,
      timeoutMs: 2000,
    })
  const signal = () => new AbortController().signal

  test("sends the neutral request as JSON and reads the text at reply_field, with usage", async () => {
    using server = await endpoint()
    const c = client(server.url, { headers: { "x-team": "support" } }, "secret-key")
    const request: Request = {
      system: "sys",
      prompt: "hello",
      max_tokens: 20,
      temperature: 0.1,
      params: { top_k: 5 },
    }
    expect(await c.call(request, signal())).toEqual({
      text: "echo: hello",
      usage: { input_tokens: 7, output_tokens: 3 },
    })
    expect(await c.call({ prompt: "plain" }, signal())).toEqual({
      text: "echo: plain",
      usage: { input_tokens: 7, output_tokens: 3 },
    })
    expect(server.seen).toEqual([
      {
        body: {
          model: "in-house-7b",
          prompt: "hello",
          system: "sys",
          max_tokens: 20,
          temperature: 0.1,
          top_k: 5,
        },
        auth: "Bearer secret-key",
        extra: "support",
      },
      { body: { model: "in-house-7b", prompt: "plain" }, auth: "Bearer secret-key", extra: "support" },
    ])
  })

  test("classifies failures: what spool retries, what pauses the run, what fails the item", async () => {
    const text =
      (status: number, headers: Record<string, string> = {}) =>
      () =>
        new Response("nope", { status, headers })
    using server = await endpoint([
      text(429, { "retry-after": "2" }),
      text(503),
      text(408),
      text(401),
      text(400),
      text(404),
      () => new Response("<html>", { status: 200 }),
      () => Response.json({ output: {} }),
    ])
    const c = client(server.url)
    const outcomes: [string, boolean, boolean, number | undefined][] = []
    for (let i = 0; i < 8; i++) {
      const err = await c.call({ prompt: `p${i}` }, signal()).then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(err).toBeInstanceOf(ProviderError)
      const e = err as ProviderError
      outcomes.push([e.errorClass, e.retryable, e.pause, e.retryAfterMs])
    }
    expect(outcomes).toEqual([
      ["rate_limit", true, false, 2000],
      ["server", true, false, undefined],
      ["timeout", true, false, undefined],
      ["auth", false, true, undefined],
      ["bad_request", false, false, undefined],
      ["not_found", false, false, undefined],
      ["bad_response", true, false, undefined],
      ["bad_response", true, false, undefined],
    ])
  })

  test("reports the rate limits an answer's headers give, on a reply and on an error, for the runner to learn from", async () => {
    const limits = {
      "x-ratelimit-limit-requests": "60",
      "x-ratelimit-remaining-requests": "59",
      "x-ratelimit-reset-requests": "1s",
      "x-ratelimit-limit-tokens": "10000",
      "x-ratelimit-remaining-tokens": "9990",
    }
    using server = await endpoint([
      () =>
        Response.json(
          { output: { text: "limited" }, usage: { input_tokens: 7, output_tokens: 3 } },
          { headers: limits },
        ),
      () => new Response("slow down", { status: 429, headers: { ...limits, "retry-after-ms": "1500" } }),
    ])
    const c = client(server.url)
    const rate = {
      requests: { limit: 60, remaining: 59, resetMs: 1000 },
      tokens: { limit: 10_000, remaining: 9990, resetMs: undefined },
    }
    expect(await c.call({ prompt: "p" }, signal())).toEqual({
      text: "limited",
      usage: { input_tokens: 7, output_tokens: 3 },
      rate,
    })
    const err = await c.call({ prompt: "q" }, signal()).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ProviderError)
    const e = err as ProviderError
    expect([e.errorClass, e.retryable, e.retryAfterMs, e.status, e.message]).toEqual([
      "rate_limit",
      true,
      1500,
      429,
      "HTTP 429: slow down",
    ])
    expect(e.rate).toEqual(rate)
    // an answer with no such headers has no `rate` (the earlier tests' toEqual checks the same)
    expect(await c.call({ prompt: "r" }, signal())).toEqual({
      text: "echo: r",
      usage: { input_tokens: 7, output_tokens: 3 },
    })
  })

  test("402 (no credit) is this endpoint's quota: not retried, pauses the run", async () => {
    using server = await endpoint([() => new Response("no credit", { status: 402 })])
    const err = await client(server.url)
      .call({ prompt: "p" }, signal())
      .catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ProviderError)
    const e = err as ProviderError
    expect([e.errorClass, e.retryable, e.pause, e.status]).toEqual(["quota", false, true, 402])
  })

  test("a refused connection is a retryable network error; an abort by the run is passed through", async () => {
    let url: string
    {
      using server = await endpoint()
      url = server.url
    }
    const err = await client(url)
      .call({ prompt: "p" }, signal())
      .catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ProviderError)
    expect([(err as ProviderError).errorClass, (err as ProviderError).retryable]).toEqual(["network", true])

    using slow = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: () => Bun.sleep(1000).then(() => Response.json({ output: { text: "late" } })),
    })
    const abort = new AbortController()
    const pending = client(`http://127.0.0.1:${slow.port}/`)
      .call({ prompt: "p" }, abort.signal)
      .catch((e: unknown) => e)
    abort.abort(new Error("run stopping"))
    const aborted = await pending
    expect(aborted).not.toBeInstanceOf(ProviderError)
  })

  test("its options need a URL and refuse unknown keys", () => {
    expect(v.safeParse(httpEndpoint.options, {}).success).toBe(false)
    expect(v.safeParse(httpEndpoint.options, { url: "not a url" }).success).toBe(false)
    expect(v.safeParse(httpEndpoint.options, { url: "http://127.0.0.1:1/x", replyfield: "a" }).success).toBe(
      false,
    )
    expect(v.parse(httpEndpoint.options, { url: "http://127.0.0.1:1/x" })).toEqual({
      url: "http://127.0.0.1:1/x",
      reply_field: "text",
      headers: {},
    })
  })
})
