/**
 * Embedding jobs against the chat path (issue 17): the same N short texts through the fake OpenAI server (realtime,
 * no latency, bench/fake.ts in a process of its own), once as an embedding job (`kind = "embedding"`, many inputs a
 * request) and once as a chat job (one call an item). `bun bench/embeddings.ts [--quick]` measures both and writes
 * the section "Embeddings (issue 17)" of docs/BENCHMARKS.md (1,000,000 rows; 100,000 with --quick). Each contender
 * runs in a process of its own and prints JSON:
 *
 *   bun bench/embeddings.ts embed|chat FILE DIR URL   `spool run`'s engine (prepare, execute), start to done
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { cpus } from "node:os"
import { join } from "node:path"
import { open } from "../src/core/ledger/open.ts"
import { prepare } from "../src/core/engine/run.ts"
import { child, dataDir, type Figures, fmt, root, rowsFile, splice, withFake } from "./shared.ts"

const HEADING = "## Embeddings (issue 17)"

const [mode, file, dir, url] = process.argv.slice(2) as [string, string, string, string]
if (mode === undefined || mode === "--quick") {
  await report(mode === "--quick")
  process.exit(0)
}
mkdirSync(dir, { recursive: true })
process.env.OPENAI_API_KEY = "sk-bench-embeddings"
const request =
  mode === "embed"
    ? `kind = "embedding"\ninput = "{{subject}}"\ndimensions = 64`
    : `prompt = "{{subject}}"\nmax_tokens = 20`
const jobFile = join(dir, "job.toml")
writeFileSync(
  jobFile,
  `name = "bench-${mode}"
[source]
path = "${file}"
id = "id"
[provider]
name = "openai"
model = "${mode === "embed" ? "text-embedding-3-small" : "gpt-4.1-mini"}"
base_url = "${url}"
[request]
${request}
[limits]
concurrency = 32
[cache]
enabled = false
`,
)
const started = performance.now()
const session = await prepare({
  file: jobFile,
  flags: {},
  home: dir,
  newRun: false,
  reingest: false,
  resume: "",
})
const code = await session.execute()
const ms = performance.now() - started
if (code !== 0) throw new Error(`the run ended with ${code}`)
const db = await open(dir)
const rows = (await db.reads.summary(session.run.id)).counts.completed
await db.close()
console.log(
  JSON.stringify({
    mode,
    rows,
    ms,
    rowsPerSec: rows / (ms / 1000),
    maxRssMB: process.resourceUsage().maxRSS / 1024,
  }),
)

/** Runs both contenders against one fake and writes the section of docs/BENCHMARKS.md. */
async function report(quick: boolean): Promise<void> {
  const rows = quick ? 100_000 : 1_000_000
  const data = dataDir()
  const input = rowsFile(rows)
  const runs = await withFake(0, (fake) => {
    const out: Record<string, Figures> = {}
    for (const m of ["embed", "chat"]) {
      const at = join(data, `embeddings-${m}`)
      rmSync(at, { recursive: true, force: true })
      out[m] = child(["bench/embeddings.ts", m, input, at, fake])
      rmSync(at, { recursive: true, force: true })
    }
    return out
  })
  const embed = runs.embed!
  const chat = runs.chat!
  const rate = (r: Figures) => Number(r.rowsPerSec)
  const s = (r: Figures) => `${fmt(Number(r.ms) / 1000, 1)} s`
  const mb = (r: Figures) => `${fmt(Number(r.maxRssMB))} MB`
  console.error(`embeddings: ${fmt(rate(embed))} items/s vs chat ${fmt(rate(chat))} items/s`)
  const md = `${HEADING}

Measured ${new Date().toISOString().slice(0, 10)} on ${cpus().length} × ${cpus()[0]?.model ?? "unknown CPU"}, Bun ${Bun.version}${quick ? " (quick mode)" : ""}, by
\`bun bench/embeddings.ts\`: ${fmt(rows)} short texts (the \`subject\` of bench/data.ts's rows) through the fake OpenAI server
(bench/fake.ts, no latency, its own process), realtime, \`concurrency = 32\`, the cache off; each contender \`spool run\`'s
engine in a process of its own, start (ingest included) to done, one run each in the same session.

| contender | items/s | time | peak RSS |
| --- | ---: | ---: | ---: |
| chat: \`prompt = "{{subject}}"\`, one call an item (the baseline) | ${fmt(rate(chat))} | ${s(chat)} | ${mb(chat)} |
| **embeddings**: \`kind = "embedding"\`, \`dimensions = 64\`, up to 2,048 inputs a request, vectors stored as float32 bytes | ${fmt(rate(embed))} | ${s(embed)} | ${mb(embed)} |

Embeddings go at **${(rate(embed) / rate(chat)).toFixed(2)}×** the chat path's items/s, at ${(Number(embed.maxRssMB) / Number(chat.maxRssMB)).toFixed(2)}× its peak RSS.
`
  const path = join(root, "docs", "BENCHMARKS.md")
  writeFileSync(path, splice(readFileSync(path, "utf8"), HEADING, md))
}
