/** `spool serve`, `spool run --serve` and `spool retry`, through the compiled binary. */
import { describe, expect, test } from "bun:test"
import { readFileSync, writeFileSync } from "node:fs"
import { connect } from "node:net"
import { open } from "../../src/core/ledger/open.ts"
import { served, spool, start } from "../lib/spool.ts"
import { tmpdir } from "../lib/tmp.ts"

/** An empty store under `dir`/.spool: `spool serve` serves only a store that is there. */
async function store(dir: string): Promise<void> {
  await (await open(`${dir}/.spool`)).close()
}

/** Sends `request` as it is over TCP and reads the answer to the end: its status line and headers, and its body. */
function raw(port: number, request: string): Promise<{ head: string[]; body: string }> {
  return new Promise((done, fail) => {
    const socket = connect(port, "127.0.0.1", () => socket.end(request))
    const chunks: Buffer[] = []
    socket.on("data", (chunk: Buffer) => chunks.push(chunk))
    socket.on("error", fail)
    socket.on("close", () => {
      const text = Buffer.concat(chunks).toString("utf8")
      const at = text.indexOf("\r\n\r\n")
      const head = text.slice(0, at).split("\r\n")
      done({ head: [head[0]!, ...head.slice(1).map((h) => h.toLowerCase())], body: text.slice(at + 4) })
    })
  })
}

/** An events stream's text until it has sent a `run` event (or 3 s have passed). */
async function events(url: string): Promise<string> {
  const abort = new AbortController()
  const reader = (await fetch(url, { signal: abort.signal })).body!.getReader()
  const decoder = new TextDecoder()
  let text = ""
  for (const deadline = Date.now() + 3000; !text.includes("event: run\n") && Date.now() < deadline;) {
    const { done, value } = await reader.read()
    if (done) break
    text += decoder.decode(value)
  }
  abort.abort()
  return text
}

function job(dir: string, rows: number, options: { latency?: number; holes?: number[] } = {}): void {
  const lines = Array.from({ length: rows }, (_, i) =>
    JSON.stringify(
      options.holes?.includes(i + 1) ? { id: `t${i + 1}` } : { id: `t${i + 1}`, text: `row ${i + 1}` },
    ),
  )
  writeFileSync(`${dir}/in.jsonl`, `${lines.join("\n")}\n`)
  writeFileSync(
    `${dir}/job.toml`,
    `name = "served"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "mock"
[provider.options]
latency_ms = ${options.latency ?? 0}
[request]
prompt = "Label: {{text}}"
[limits]
concurrency = 2
`,
  )
}

describe("spool serve", () => {
  test("refuses an address beyond loopback without a token, before listening", async () => {
    await using tmp = await tmpdir()
    await store(tmp.path)
    const out = await spool(["serve", "--host", "0.0.0.0", "--port", "0"], { cwd: tmp.path })
    expect(out.code).toBe(2)
    expect(out.stderr).toContain("spool: refusing to serve on 0.0.0.0 without a token")
    expect(out.stderr).toContain("Pass --token <secret> (or set SPOOL_TOKEN)")
  })

  test("a busy port is a clear error naming it", async () => {
    await using tmp = await tmpdir()
    await store(tmp.path)
    const other = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("") })
    try {
      const out = await spool(["serve", "--port", String(other.port)], { cwd: tmp.path })
      expect(out.code).toBe(2)
      expect(out.stderr).toContain(`spool: port ${other.port} on 127.0.0.1 is in use`)
    } finally {
      other.stop(true)
    }
  })

  test("with SPOOL_TOKEN, the API needs the token; Ctrl+C ends it with exit 0", async () => {
    await using tmp = await tmpdir()
    job(tmp.path, 3)
    expect((await spool(["run", "job.toml"], { cwd: tmp.path })).code).toBe(0)
    const token = "tok-0123456789abcdef"
    const child = start(["serve", "--port", "0"], { cwd: tmp.path, env: { SPOOL_TOKEN: token } })
    try {
      const { url } = await served(child.stderr)
      expect((await fetch(`${url}api/runs`)).status).toBe(401)
      const res = await fetch(`${url}api/runs/served`, { headers: { authorization: `Bearer ${token}` } })
      expect(res.status).toBe(200)
      expect(((await res.json()) as { counts: { completed: number } }).counts.completed).toBe(3)
      child.kill("SIGINT")
      expect(await child.exited).toBe(0)
    } finally {
      child.kill("SIGKILL")
    }
  })

  test("spool run --serve serves the live run, then ends with it", async () => {
    await using tmp = await tmpdir()
    job(tmp.path, 40, { latency: 100 })
    const child = start(["run", "job.toml", "--serve", "--port", "0"], { cwd: tmp.path })
    try {
      const { url, rest } = await served(child.stderr)
      // the page is up before the run is made (a busy port is refused first): wait for the run to appear
      let first = await fetch(`${url}api/runs/served`)
      for (let i = 0; i < 100 && first.status === 404; i++) {
        await Bun.sleep(20)
        first = await fetch(`${url}api/runs/served`)
      }
      expect(((await first.json()) as { state: string }).state).toBe("running")
      const page = await (await fetch(url)).text()
      expect(page).toContain("<title>served · spool</title>")
      expect(await child.exited).toBe(0)
      expect(await rest()).toContain('run "served": 40 completed, 0 failed of 40')
      // the page ended with the run
      expect(
        await fetch(url).then(
          () => "answered",
          () => "closed",
        ),
      ).toBe("closed")
    } finally {
      child.kill("SIGKILL")
    }
  })

  test("spool run --serve shows no key from its environment, nor the base URL's credentials, in any page, answer or event", async () => {
    await using tmp = await tmpdir()
    // about 3 s of work: the server ends with the run, and every request below comes before that
    job(tmp.path, 60, { latency: 100 })
    const key = "sk-served-0123456789abcdefXYZ"
    writeFileSync(
      `${tmp.path}/job.toml`,
      `${readFileSync(`${tmp.path}/job.toml`, "utf8")}`.replace(
        '[provider]\nname = "mock"\n',
        `[provider]\nname = "mock"\napi_key_env = "SERVED_KEY"\nbase_url = "http://ann:pw-in-url-4455667788@127.0.0.1:9/v1"\n`,
      ),
    )
    const child = start(["run", "job.toml", "--serve", "--port", "0"], {
      cwd: tmp.path,
      env: { SERVED_KEY: key },
    })
    try {
      const { url } = await served(child.stderr)
      let first = await fetch(`${url}api/runs/served`)
      for (let i = 0; i < 100 && first.status === 404; i++) {
        await Bun.sleep(20)
        first = await fetch(`${url}api/runs/served`)
      }
      // its first item, whatever its state yet
      const items = (await (await fetch(`${url}api/runs/served/items?limit=1`)).json()) as {
        items: { item_id: number }[]
      }
      const item = items.items[0]?.item_id
      expect(typeof item).toBe("number")
      const texts: [string, string][] = []
      for (const path of [
        "",
        "?run=served",
        "api/runs",
        "api/runs/served",
        "api/runs/served/job",
        "api/runs/served/items",
        "api/runs/served/items?q=row",
        `api/runs/served/items/${item}`,
        "api/runs/served/results",
      ]) {
        const res = await fetch(`${url}${path}`)
        texts.push([`${res.status} ${path}`, await res.text()])
      }
      texts.push(["events", await events(`${url}api/runs/served/events?runs=1&since=0`)])
      const job = JSON.parse(texts[4]![1]) as { api_key_env: string; base_url: string }
      expect([job.api_key_env, job.base_url]).toEqual(["SERVED_KEY", "http://127.0.0.1:9/v1"])
      expect(texts.map(([where]) => where.split(" ")[0])).toEqual([...Array(9).fill("200"), "events"])
      expect(texts[9]![1]).toContain("event: run\n")
      const leaks = texts.filter(([, text]) => text.includes(key.slice(0, 12)) || text.includes("pw-in-url"))
      expect(leaks.map(([where]) => where)).toEqual([])
      expect(await child.exited).toBe(0)
    } finally {
      child.kill("SIGKILL")
    }
  })

  test("a token shorter than 16 characters is refused with exit 2, before listening or running", async () => {
    await using tmp = await tmpdir()
    job(tmp.path, 1)
    await store(tmp.path)
    const said = (n: number) =>
      `spool: refusing a token of ${n} character${n === 1 ? "" : "s"}: it must have at least 16, or it could be guessed\n` +
      "  Pass a longer --token (or SPOOL_TOKEN), such as the output of `openssl rand -hex 16`.\n"
    const flag = await spool(["serve", "--port", "0", "--token", "x"], { cwd: tmp.path })
    expect({ code: flag.code, stderr: flag.stderr }).toEqual({ code: 2, stderr: said(1) })
    const env = await spool(["serve", "--port", "0"], { cwd: tmp.path, env: { SPOOL_TOKEN: "a".repeat(15) } })
    expect({ code: env.code, stderr: env.stderr }).toEqual({ code: 2, stderr: said(15) })
    const run = await spool(["run", "job.toml", "--serve", "--port", "0", "--token", "short"], {
      cwd: tmp.path,
    })
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 2, stderr: said(5) })
    expect((await spool(["runs", "--json"], { cwd: tmp.path })).stdout).toBe("[]\n")
  })

  test("a request without a Host header gets the JSON error, never Bun's error page, with or without a token", async () => {
    await using tmp = await tmpdir()
    await store(tmp.path)
    for (const env of [{}, { SPOOL_TOKEN: "tok-0123456789abcdef" }] as Record<string, string>[]) {
      const child = start(["serve", "--port", "0"], { cwd: tmp.path, env })
      try {
        const { url } = await served(child.stderr)
        // HTTP/1.0 lets a client leave Host out; fetch always sends it, so the request is written by hand
        const answer = await raw(Number(new URL(url).port), "GET / HTTP/1.0\r\n\r\n")
        const body = '{"error":"the request has no Host header: send one (HTTP/1.1 requires it)"}'
        expect(answer.head[0]).toBe("HTTP/1.1 400 Bad Request")
        expect(answer.head).toContain("content-type: application/json")
        expect(answer.body).toBe(body)
      } finally {
        child.kill("SIGKILL")
        await child.exited
      }
    }
  })

  test("--port without --serve is refused", async () => {
    await using tmp = await tmpdir()
    job(tmp.path, 1)
    const out = await spool(["run", "job.toml", "--port", "5000"], { cwd: tmp.path })
    expect(out.code).toBe(2)
    expect(out.stderr).toContain("--port, --host and --token go with --serve")
  })
})

describe("spool retry", () => {
  test("puts failed items back to pending, and the next run finishes them", async () => {
    await using tmp = await tmpdir()
    // rows 2 and 4 have no text: their requests cannot be made, so they fail
    job(tmp.path, 5, { holes: [2, 4] })
    expect((await spool(["run", "job.toml"], { cwd: tmp.path })).code).toBe(3)
    const bad = await spool(["retry", "served", "--state", "completed"], { cwd: tmp.path })
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain('--state: "completed" cannot be retried')
    const out = await spool(["retry", "served"], { cwd: tmp.path })
    expect(out.code).toBe(0)
    expect(out.stderr).toBe(
      '2 failed item(s) of run "served" are pending again. Process them with:\n  spool run job.toml\n',
    )
    const status = JSON.parse((await spool(["status", "served", "--json"], { cwd: tmp.path })).stdout) as {
      state: string
      resume: string
      counts: Record<string, number>
    }
    // reopened, with no process working on it yet: shown interrupted, with the command that goes on
    expect([status.state, status.resume]).toEqual(["interrupted", "spool run job.toml"])
    expect(status.counts).toMatchObject({ completed: 3, failed: 0, pending: 2 })
    const none = await spool(["retry", "served", "--state", "needs_review"], { cwd: tmp.path })
    expect(none.stderr).toBe('run "served" has no needs_review items\n')
  })
})
