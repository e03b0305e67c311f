/**
 * Steady, the OpenAPI mock server the official SDKs test against, serving one of the specs (test/lib/spec.ts finds
 * them) on 127.0.0.1; and a recording proxy that keeps what Steady said of each request it passed on.
 *
 * Steady 0.22 answers every request with `X-Steady-Request-Valid: true|false` and, per problem,
 * `X-Steady-Error-N-Code/-Path/-Message`. It refuses an invalid request with a 400 (reject-on-sdk-error is on
 * by default) and answers a valid one with a body generated from the response schema (deterministic seed).
 */
import type { Subprocess } from "bun"
import { existsSync } from "node:fs"
import { isAbsolute, join } from "node:path"
import { SPECS_AT, SPECS_HINT } from "./spec.ts"

const BIN = join(import.meta.dir, "..", "..", "node_modules", ".bin", "steady")

const FLAGS = [
  "--validator-query-array-format=brackets",
  "--validator-form-array-format=brackets",
  "--validator-query-object-format=brackets",
  "--validator-form-object-format=brackets",
]

export interface Steady extends AsyncDisposable {
  /** http://127.0.0.1:PORT, with no path: the spec's paths follow it as they are written. */
  url: string
  stop(): Promise<void>
}

/** The last `max` characters of a stream, read to its end so the child never blocks on a full pipe. */
function drain(stream: ReadableStream<Uint8Array>, max = 16_000): () => string {
  let kept = ""
  void (async () => {
    const decoder = new TextDecoder()
    for await (const chunk of stream) kept = (kept + decoder.decode(chunk, { stream: true })).slice(-max)
  })().catch(() => {})
  return () => kept
}

/** A port nothing listens on now. Another process may take it first; startSteady then retries. */
function freePort(): number {
  const probe = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response(null) })
  const port = probe.port ?? 0
  probe.stop(true)
  return port
}

async function healthy(url: string): Promise<boolean> {
  try {
    const response = await fetch(`${url}/_x-steady/health`, { signal: AbortSignal.timeout(2000) })
    await response.arrayBuffer()
    return response.ok
  } catch {
    return false
  }
}

async function kill(child: Subprocess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  // the npm wrapper forwards SIGTERM to the real binary; SIGKILL would orphan it, so it is the last resort
  child.kill("SIGTERM")
  const gone = await Promise.race([child.exited.then(() => true), Bun.sleep(5000).then(() => false)])
  if (!gone) {
    child.kill("SIGKILL")
    await child.exited
  }
}

/**
 * Starts Steady on a free port of 127.0.0.1 for `spec` (a file name in the specs' directory, or a path) and waits
 * until `/_x-steady/health` answers. Throws, with Steady's output, when it does not come up in `timeoutMs`.
 *
 * @example
 * await using steady = await startSteady("openai-openapi.yaml")
 * await fetch(`${steady.url}/chat/completions`, { method: "POST", ... })
 */
export async function startSteady(spec: string, options: { timeoutMs?: number } = {}): Promise<Steady> {
  const file = isAbsolute(spec) ? spec : join(SPECS_AT, spec)
  if (!existsSync(file)) throw new Error(`[steady] no spec at ${file}: ${SPECS_HINT}`)
  if (!existsSync(BIN))
    throw new Error(`[steady] ${BIN} is missing: run bun install (dev dependency @stdy/cli)`)
  const timeoutMs = options.timeoutMs ?? 90_000
  for (let attempt = 1; ; attempt++) {
    const port = freePort()
    const url = `http://127.0.0.1:${port}`
    // run the npm wrapper with this Bun, so no separate node is needed
    const child = Bun.spawn(
      [process.execPath, BIN, "--host", "127.0.0.1", "-p", String(port), ...FLAGS, file],
      {
        stdin: "ignore",
        stdout: "pipe",
        stderr: "pipe",
        env: { ...process.env, NO_COLOR: "1" },
      },
    )
    const stdout = drain(child.stdout)
    const stderr = drain(child.stderr)
    const started = Date.now()
    const output = () => `\n--- stderr\n${stderr()}\n--- stdout\n${stdout()}`
    while (child.exitCode === null && child.signalCode === null && Date.now() - started < timeoutMs) {
      if (await healthy(url)) {
        const steady: Steady = {
          url,
          stop: () => kill(child),
          [Symbol.asyncDispose]: () => kill(child),
        }
        return steady
      }
      await Bun.sleep(100)
    }
    await kill(child)
    await Bun.sleep(50) // let the last output arrive
    const exited = Date.now() - started < timeoutMs
    if (exited && attempt < 3 && /in use/i.test(stderr() + stdout())) continue
    throw new Error(
      exited
        ? `[steady] exited (code ${child.exitCode}) before it was ready on ${url}, serving ${file}${output()}`
        : `[steady] not ready on ${url} within ${timeoutMs / 1000} s, serving ${file}${output()}`,
    )
  }
}

/** One request the recorder passed on, and what Steady said of it. */
export interface Exchange {
  method: string
  path: string
  /** The request body, parsed when it is JSON. */
  body: unknown
  status: number
  /** `X-Steady-Request-Valid`: "true", "false", or null when the answer had none. */
  valid: string | null
  /** Steady's problems with the request, as "CODE path: message". */
  errors: string[]
  /** The response body as Steady sent it. */
  reply: string
}

export interface Recorder extends AsyncDisposable {
  url: string
  exchanges: Exchange[]
  stop(): Promise<void>
}

function problems(headers: Headers): string[] {
  const count = Number(headers.get("x-steady-error-count") ?? 0)
  return Array.from({ length: count }, (_, i) => {
    const h = (part: string) => headers.get(`x-steady-error-${i + 1}-${part}`) ?? "?"
    return `${h("code")} ${h("path")}: ${h("message")}`
  })
}

/**
 * A proxy on 127.0.0.1 in front of `target` (Steady) that passes every request on unchanged and records it
 * with Steady's verdict, so a provider can be tested over real HTTP without a hook in its code.
 */
export function record(target: string): Recorder {
  const exchanges: Exchange[] = []
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      const { pathname, search } = new URL(req.url)
      const text = await req.text()
      const headers = new Headers(req.headers)
      headers.delete("host")
      headers.set("accept-encoding", "identity")
      const response = await fetch(`${target}${pathname}${search}`, {
        method: req.method,
        headers,
        body: req.method === "GET" || req.method === "HEAD" ? undefined : text,
      })
      const reply = await response.text()
      let body: unknown = text
      try {
        body = JSON.parse(text)
      } catch {}
      exchanges.push({
        method: req.method,
        path: pathname,
        body,
        status: response.status,
        valid: response.headers.get("x-steady-request-valid"),
        errors: problems(response.headers),
        reply,
      })
      const out = new Headers(response.headers)
      for (const h of ["content-encoding", "content-length", "transfer-encoding"]) out.delete(h)
      return new Response(reply, { status: response.status, headers: out })
    },
  })
  const stop = () => server.stop(true)
  return { url: `http://127.0.0.1:${server.port}`, exchanges, stop, [Symbol.asyncDispose]: stop }
}
