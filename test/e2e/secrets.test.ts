/**
 * A provider (or a gateway before it) that echoes the credentials it was sent into its error messages: the key never
 * reaches the store, the log, `status`, `results`, the run's own output or the status page, in any mode.
 */
import { describe, expect, test } from "bun:test"
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { served, spool, start } from "../lib/spool.ts"
import { tmpdir } from "../lib/tmp.ts"

const KEY = "sk-test-echoed-0123456789abcdefXYZ"

/**
 * A gateway that answers every request with an error whose message repeats the request's credentials: a 500 first
 * (retryable), a 401 after (which pauses the run). The body is OpenAI's error shape, or Anthropic's.
 */
function gateway(shape: "openai" | "anthropic") {
  let requests = 0
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req) {
      requests++
      const status = requests === 1 ? 500 : 401
      const auth = req.headers.get("authorization")
      const xkey = req.headers.get("x-api-key")
      const got = auth !== null ? `Authorization: ${auth}` : `x-api-key: ${xkey}`
      const message = `the gateway got ${got}; key ${xkey ?? auth?.replace(/^Bearer /, "")}`
      const type = status === 401 ? "authentication_error" : "api_error"
      const body =
        shape === "anthropic"
          ? { type: "error", error: { type, message } }
          : // OpenAI's own 401 (code invalid_api_key), so it is not taken for a wrong base_url's answer
            { error: { message, type, param: null, code: status === 401 ? "invalid_api_key" : null } }
      return Response.json(body, { status })
    },
  })
  return {
    url: `http://127.0.0.1:${server.port}`,
    [Symbol.dispose]: () => void server.stop(true),
  }
}

/** Every file under a directory. */
function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)],
  )
}

/** How often the key, or its first 12 characters (a key cut short), occurs in a text. */
const leaks = (text: string) => text.split(KEY.slice(0, 12)).length - 1

/** Reads an event stream until `until` has been seen, or 3 s have passed. */
async function stream(url: string, until: string): Promise<string> {
  const abort = new AbortController()
  const res = await fetch(url, { signal: abort.signal })
  const reader = res.body!.getReader()
  const decoder = new TextDecoder()
  let text = ""
  const deadline = Date.now() + 3000
  while (!text.includes(until) && Date.now() < deadline) {
    const { done, value } = await reader.read()
    if (done) break
    text += decoder.decode(value)
  }
  abort.abort()
  return text
}

/** Everything the status page's server answers about the run: the page, the list, the detail, items, events. */
async function pages(cwd: string, home: string, until: string): Promise<string[]> {
  const child = start(["serve", "--port", "0", "--home", home], { cwd })
  try {
    const { url } = await served(child.stderr)
    const texts = await Promise.all(
      ["", "api/runs", "api/runs/1", "api/runs/1/items", "api/runs/1/items?state=failed"].map(async (p) => {
        const res = await fetch(`${url}${p}`)
        expect(res.status).toBe(200)
        return res.text()
      }),
    )
    return [...texts, await stream(`${url}api/runs/1/events?since=0&runs=1`, until)]
  } finally {
    child.kill("SIGINT")
    await child.exited
  }
}

const cases = [
  { provider: "openai", mode: "realtime", shape: "openai", path: "/v1" },
  { provider: "openai-compatible", mode: "realtime", shape: "openai", path: "/v1" },
  { provider: "anthropic", mode: "realtime", shape: "anthropic", path: "" },
  { provider: "openai", mode: "batch", shape: "openai", path: "/v1" },
  { provider: "anthropic", mode: "batch", shape: "anthropic", path: "" },
] as const

describe("an API key echoed back in a provider's errors", () => {
  for (const c of cases) {
    test(`is never stored, logged or shown: ${c.provider}, ${c.mode}`, async () => {
      await using tmp = await tmpdir()
      using gw = gateway(c.shape)
      writeFileSync(tmp.join("in.jsonl"), '{"t":"one"}\n{"t":"two"}\n')
      writeFileSync(
        tmp.join("job.toml"),
        `name = "echo"
[source]
path = "in.jsonl"
[provider]
name = "${c.provider}"
model = "m"
mode = "${c.mode}"
base_url = "${gw.url}${c.path}"
api_key_env = "ECHO_KEY"
[request]
prompt = "{{t}}"
max_tokens = 10
[limits]
concurrency = 1
max_attempts = 1
retry_base_s = 0
${c.mode === "batch" ? "[batch]\npoll_s = 0.01\npoll_max_s = 0.01\n" : ""}`,
      )
      const home = tmp.join("home")
      const env = { ECHO_KEY: KEY }
      const run = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
      // what the gateway said, with every copy of the key taken out
      const said = (status: number) =>
        c.shape === "anthropic"
          ? `HTTP ${status}: the gateway got x-api-key: [redacted]; key [redacted]`
          : `HTTP ${status}: the gateway got Authorization: Bearer [redacted]; key [redacted]`
      expect(run.code).toBe(1)
      expect(run.stderr).toContain(`spool: run "echo" paused: ${said(401)}\n`)

      const text = await spool(["status", "--home", home], { cwd: tmp.path })
      const json = await spool(["status", "--json", "--home", home], { cwd: tmp.path })
      const results = await spool(["results", "--home", home], { cwd: tmp.path })
      const view = JSON.parse(json.stdout) as {
        state: string
        reason: string
        counts: Record<string, number>
        errors: { class: string; example: string }[]
        batches: { error: string | null }[]
      }
      expect(view.state).toBe("paused")
      expect(view.reason).toBe(said(401))
      if (c.mode === "realtime") {
        // the 500 failed the first item (one attempt allowed); the 401 paused the run at the second
        expect(view.counts.failed).toBe(1)
        expect(view.errors.find((e) => e.class === "server")?.example).toBe(said(500))
        expect(results.stdout).toContain(`"error":{"class":"server","message":"${said(500)}"}`)
      } else {
        expect(view.batches.map((b) => b.error)).toEqual([said(401)])
        // the 500 was waited out, and logged as it was
        expect(readFileSync(join(home, "logs", "spool.log"), "utf8")).toContain(said(500))
      }

      const files = walk(home)
      expect(files.some((f) => f.endsWith("spool.log"))).toBe(true)
      expect(files.some((f) => f.endsWith("spool.db"))).toBe(true)
      const found = [
        ...files.map((f) => ({ where: f, n: leaks(readFileSync(f).toString("latin1")) })),
        ...[run.stdout, run.stderr, text.stdout, json.stdout, results.stdout].map((t, i) => ({
          where: `output ${i}`,
          n: leaks(t),
        })),
        // a batch run's attempts have no errors to stream; a realtime run's do
        ...(await pages(tmp.path, home, c.mode === "batch" ? "event: run" : "event: errors")).map((t, i) => ({
          where: `page ${i}`,
          n: leaks(t),
        })),
      ]
      expect(found.filter((f) => f.n > 0)).toEqual([])
      // the WAL, if the last connection left one, was read as well
      if (existsSync(join(home, "spool.db-wal"))) expect(files).toContain(join(home, "spool.db-wal"))
    }, 30_000)
  }
})
