/**
 * Throughput under a provider rate limit. One contender per process, against a fake (bench/fake.ts --rpm R) that
 * enforces R requests per minute and counts what it answered (GET /_stats):
 *
 *   bun bench/ratelimit.ts spool|naive URL ITEMS DIR
 *
 * prints one JSON line: items completed, elapsed ms, achieved rpm (200s served ÷ elapsed minutes), requests sent,
 * 429s the rate limit sent and their share of the requests. `spool` runs the engine as bench/realtime.ts does, at
 * concurrency 64 with no rpm/tpm configured: whatever pacing it does comes from the provider's answers. `naive` is a
 * plain-fetch loop at concurrency 64 that retries a 429 at once, with no persistence.
 *
 *   bun bench/ratelimit.ts both RPM ITEMS DIR [LATENCY_MS=200] [BURST_SECONDS=1]
 *
 * runs both, spool first, each against a fresh fake in its own process, and prints one JSON line
 * `{ rpm, items, latencyMs, burstSeconds, spool: {...}, naive: {...} }` (what bench/run.ts reports).
 *
 * Why burst 1 s: with a bucket holding a whole minute (the fake's default), R requests pass at once and the first
 * minute of any run is a free burst, so items ÷ time says little about the rate kept up; the providers say their
 * per-minute limits may be enforced over shorter spans (OpenAI: "60,000 requests/minute may be enforced as 1,000
 * requests/second"), which --burst 1 models: R/60 at once, then R/60 a second. A client that keeps to the limit
 * perfectly then serves R/60 + R·t/60s items by time t, so ITEMS = 2R + R/60 takes exactly two minutes.
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import type { Stats } from "../test/lib/fake-openai.ts"

const [mode, ...rest] = process.argv.slice(2) as [string, ...string[]]
process.env.OPENAI_API_KEY = "sk-bench"
process.env.SPOOL_QUIET = "1"

const CONCURRENCY = 64
const statsOf = async (url: string) => (await (await fetch(new URL("/_stats", url))).json()) as Stats

if (mode === "both") {
  const [rpmArg, itemsArg, dir, latencyArg, burstArg] = rest as [string, string, string, string?, string?]
  const latencyMs = Number(latencyArg ?? 200)
  const burstSeconds = Number(burstArg ?? 1)
  const results: Record<string, unknown> = {}
  for (const contender of ["spool", "naive"]) {
    const server = Bun.spawn(
      [
        "bun",
        join(import.meta.dir, "fake.ts"),
        String(latencyMs),
        "--rpm",
        rpmArg,
        "--burst",
        String(burstSeconds),
      ],
      { stdout: "pipe", stderr: "inherit" },
    )
    try {
      const { value } = await server.stdout.getReader().read()
      const url = new TextDecoder().decode(value).trim()
      const where = join(dir, contender)
      rmSync(where, { recursive: true, force: true })
      const out = Bun.spawnSync(["bun", import.meta.path, contender, url, itemsArg, where], {
        stderr: "inherit",
      })
      const line = out.stdout.toString().trim().split("\n").at(-1) ?? ""
      if (out.exitCode !== 0) throw new Error(`${contender} failed (exit ${out.exitCode}): ${line}`)
      results[contender] = JSON.parse(line)
      console.error(`ratelimit ${contender}: ${line}`)
    } finally {
      server.kill("SIGTERM")
      await server.exited
    }
  }
  console.log(
    JSON.stringify({ rpm: Number(rpmArg), items: Number(itemsArg), latencyMs, burstSeconds, ...results }),
  )
  process.exit(0)
}

const [url, itemsArg, dir] = rest as [string, string, string]
const items = Number(itemsArg)
mkdirSync(dir, { recursive: true })
const prompts = Array.from(
  { length: items },
  (_, i) => `Label ticket ${i}: the app crashes when I click save`,
)

const before = await statsOf(url)
let done = 0
let failed = 0
const started = performance.now()

if (mode === "naive") {
  let next = 0
  const headers = { authorization: "Bearer sk-bench", "content-type": "application/json" }
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      for (let i = next++; i < items; i = next++) {
        for (;;) {
          const res = await fetch(`${url}/chat/completions`, {
            method: "POST",
            headers,
            body: JSON.stringify({
              model: "gpt-4.1-mini",
              messages: [{ role: "user", content: prompts[i]! }],
            }),
          })
          if (res.status === 429) {
            await res.arrayBuffer()
            continue
          }
          const body = (await res.json()) as { choices?: { message: { content: string } }[] }
          if (body.choices?.[0]?.message.content) done++
          else failed++
          break
        }
      }
    }),
  )
} else if (mode === "spool") {
  const engine = await import("../src/core/engine/run.ts")
  const { open } = await import("../src/core/ledger/open.ts")
  const input = join(dir, "in.jsonl")
  writeFileSync(input, prompts.map((p) => JSON.stringify({ p })).join("\n") + "\n")
  const home = join(dir, "home")
  const session = await engine.prepare({
    file: undefined,
    flags: {
      input: [input],
      prompt: "{{p}}",
      model: "gpt-4.1-mini",
      "base-url": url,
      concurrency: String(CONCURRENCY),
      name: "bench",
    },
    home,
    newRun: true,
    reingest: false,
    resume: "",
    synchronous: "FULL",
  })
  await session.execute()
  const db = await open(home)
  const counts = await db.reads.counts((await db.runs.latest("bench"))!.id)
  done = counts.completed
  failed = items - counts.completed
  await db.close()
} else {
  throw new Error(`unknown mode ${mode}: spool, naive or both`)
}

const ms = performance.now() - started
const after = await statsOf(url)
const requests = after.requests - before.requests
const limited = after.limited - before.limited
const served = after.served - before.served
console.log(
  JSON.stringify({
    mode,
    items: done,
    failed,
    ms,
    rpm: served / (ms / 60_000),
    served,
    requests,
    limited,
    share429: requests ? limited / requests : 0,
    limit: after.rateLimit?.rpm ?? null,
  }),
)
