/**
 * The fake OpenAI server in a process of its own, so the contenders do not share its CPU. Prints its URL.
 * `bun bench/fake.ts [LATENCY_MS] [--rpm R] [--tpm T] [--burst SECONDS]`: with --rpm, the fake enforces a rate limit
 * (test/lib/fake-openai.ts's RateLimit; --burst is its burstSeconds) and its counters are at GET /_stats.
 */
import { startFake, type RateLimit } from "../test/lib/fake-openai.ts"

const args = process.argv.slice(2)
const flag = (name: string): number | undefined => {
  const i = args.indexOf(name)
  return i >= 0 ? Number(args[i + 1]) : undefined
}
const latencyMs = Number(args[0] && !args[0].startsWith("--") ? args[0] : 0)
const rpm = flag("--rpm")
const rateLimit: RateLimit | undefined =
  rpm === undefined ? undefined : { rpm, tpm: flag("--tpm"), burstSeconds: flag("--burst") }
const fake = await startFake({ latencyMs, validate: false, rateLimit })
console.log(fake.url)
process.on("SIGTERM", () => fake.stop().then(() => process.exit(0)))
