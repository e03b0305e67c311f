/**
 * The prompt-caching scenario of issue 20, run by test/e2e/prompt-cache.test.ts (which asserts on it) and by
 * bench/prompt-cache.ts (which writes its table into docs/BENCHMARKS.md): a job of N items sharing a 3,000-token system
 * prompt, run by `dist/spool` against a fresh fake of the provider, realtime or batch, with a given `[request] cache`.
 * Each run reports what the fake billed, what spool says it spent, and what the provider's prompt cache did.
 */
import { readFileSync, writeFileSync } from "node:fs"
import { startFakeAnthropic } from "./fake-anthropic.ts"
import { startFake } from "./fake-openai.ts"
import { spool } from "./spool.ts"
import { tmpdir } from "./tmp.ts"

/** 12,000 characters: 3,000 tokens at the fakes' four characters a token. */
export const SYSTEM =
  `You label support tickets as billing, bug, account or other. ${"Read the whole ticket before you decide. ".repeat(300)}`.slice(
    0,
    12_000,
  )

export interface Scenario {
  provider: "anthropic" | "openai"
  mode: "realtime" | "batch" | "flex"
  /** `[request] cache` */
  cache: "auto" | "off" | "5m" | "1h"
  /** `[request] prime` (batch mode) */
  prime?: boolean
  items: number
}

export interface Figures extends Scenario {
  /** USD the fake billed. */
  billed: number
  /** USD `spool status --json` reports spent. */
  spent: number
  /** Requests (realtime calls and batch lines, priming included) that read the prefix, and that wrote it. */
  reads: number
  writes: number
  /** Priming calls, as `spool status --json` reports them. */
  primes: number
  /** What spool says the prompt cache saved (`prompt_cache.saved_usd`). */
  saved: number | null
  /** OpenAI: the `prompt_cache_key` of every chat request the fake received (null for none); [] for Anthropic. */
  keys: (string | null)[]
  /** The exit code of `spool run`. */
  code: number
  /** spool run's stderr, for a failing test's message. */
  stderr: string
}

const MODELS = { anthropic: "claude-sonnet-4-5", openai: "gpt-5-mini" }

function jobText(s: Scenario, url: string): string {
  return `name = "labels"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "${s.provider}"
model = "${MODELS[s.provider]}"
mode = "${s.mode}"
base_url = "${url}"
[request]
system = ${JSON.stringify(SYSTEM)}
prompt = "Ticket {{id}}: {{body}}"
max_tokens = 16
cache = "${s.cache}"
prime = ${s.prime ?? true}
[limits]
concurrency = 8
timeout_s = 20
retry_base_s = 0.01
retry_cap_s = 0.1
[batch]
poll_s = 0.05
poll_max_s = 0.2
[cache]
enabled = false
`
}

/** Runs the scenario once, from a fresh store and a fresh fake. */
export async function measure(s: Scenario): Promise<Figures> {
  await using tmp = await tmpdir()
  const rows = Array.from({ length: s.items }, (_, i) =>
    JSON.stringify({ id: `t${i + 1}`, body: `my invoice ${i + 1} was charged twice` }),
  )
  writeFileSync(tmp.join("in.jsonl"), `${rows.join("\n")}\n`)
  const anthropic = s.provider === "anthropic" ? await startFakeAnthropic({}) : undefined
  const openai = s.provider === "openai" ? await startFake({}) : undefined
  const url = anthropic ? anthropic.url : openai!.url
  try {
    writeFileSync(tmp.join("job.toml"), jobText(s, url))
    const env = { ANTHROPIC_API_KEY: "sk-ant-test", OPENAI_API_KEY: "sk-test" }
    const run = await spool(["run", "job.toml", "--home", tmp.join(".spool")], { cwd: tmp.path, env })
    const status = await spool(["status", "labels", "--home", tmp.join(".spool"), "--json"], {
      cwd: tmp.path,
      env,
    })
    const view = JSON.parse(status.stdout) as {
      spend: { usd: number }
      prompt_cache?: { saved_usd: number | null }
      priming?: { calls: number }
    }
    const counts = anthropic
      ? anthropic.cached()
      : { reads: openai!.cache.hits, writes: 0, readTokens: openai!.cache.cachedTokens, writeTokens: 0 }
    return {
      ...s,
      billed: anthropic ? anthropic.billed() : openai!.cache.billed,
      spent: view.spend.usd,
      reads: counts.reads,
      writes: counts.writes,
      primes: view.priming?.calls ?? 0,
      saved: view.prompt_cache?.saved_usd ?? null,
      keys: openai ? [...openai.cache.keys] : [],
      code: run.code,
      stderr: run.stderr,
    }
  } finally {
    await anthropic?.stop()
    await openai?.stop()
  }
}

/** Reads a results file of `spool results` (JSONL) into its rows. */
export function resultsOf(file: string): Record<string, unknown>[] {
  return readFileSync(file, "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as Record<string, unknown>)
}
