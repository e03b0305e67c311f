/**
 * One realtime contender per process: `bun bench/realtime.ts spool|bare|sdk|fetch URL ITEMS CONCURRENCY DIR [sync]`.
 * Prints JSON with items/s. All three send the same requests to the same fake server.
 */
import { Database } from "bun:sqlite"
import { mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import OpenAI from "openai"
import * as engine from "../src/core/engine/run.ts"
import { open } from "../src/core/ledger/open.ts"

const [mode, url, itemsArg, concArg, dir, sync] = process.argv.slice(2) as [
  string,
  string,
  string,
  string,
  string,
  string?,
]
const items = Number(itemsArg)
const concurrency = Number(concArg)
mkdirSync(dir, { recursive: true })
const prompts = Array.from(
  { length: items },
  (_, i) => `Label ticket ${i}: the app crashes when I click save`,
)
process.env.OPENAI_API_KEY = "sk-bench"
process.env.SPOOL_QUIET = "1"

async function pool(worker: () => Promise<boolean>): Promise<void> {
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (await worker()) {}
    }),
  )
}

const input = join(dir, "in.jsonl")
if (mode === "spool") writeFileSync(input, prompts.map((p) => JSON.stringify({ p })).join("\n") + "\n")

let done = 0
const started = performance.now()

if (mode === "sdk") {
  // the official SDK, naively: no persistence at all
  const client = new OpenAI({ baseURL: url, apiKey: "sk-bench", maxRetries: 0 })
  let next = 0
  await pool(async () => {
    const i = next++
    if (i >= items) return false
    const r = await client.chat.completions.create({
      model: "gpt-4.1-mini",
      messages: [{ role: "user", content: prompts[i]! }],
    })
    if (r.choices[0]?.message.content) done++
    return true
  })
} else if (mode === "fetch") {
  // the same wire format over plain fetch, no persistence: what the SDK costs on top of the HTTP itself
  let next = 0
  const headers = { authorization: "Bearer sk-bench", "content-type": "application/json" }
  await pool(async () => {
    const i = next++
    if (i >= items) return false
    const res = await fetch(`${url}/chat/completions`, {
      method: "POST",
      headers,
      body: JSON.stringify({ model: "gpt-4.1-mini", messages: [{ role: "user", content: prompts[i]! }] }),
    })
    const body = (await res.json()) as { choices: { message: { content: string } }[] }
    if (body.choices[0]?.message.content) done++
    return true
  })
} else if (mode === "bare") {
  // the least a durable loop can do: claim one row, call, write the answer; each its own commit
  const db = new Database(join(dir, "bare.db"), { create: true })
  db.run("PRAGMA journal_mode = WAL")
  db.run(`PRAGMA synchronous = ${sync ?? "FULL"}`)
  db.run("CREATE TABLE items (id INTEGER PRIMARY KEY, prompt TEXT, state TEXT, output TEXT)")
  const insert = db.prepare("INSERT INTO items (prompt, state) VALUES (?, 'pending')")
  db.transaction(() => prompts.forEach((p) => insert.run(p)))()
  const claim = db.prepare<{ id: number; prompt: string }, []>(
    "UPDATE items SET state = 'running' WHERE id = (SELECT id FROM items WHERE state = 'pending' LIMIT 1) RETURNING id, prompt",
  )
  const write = db.prepare("UPDATE items SET state = 'completed', output = ? WHERE id = ?")
  const headers = { authorization: "Bearer sk-bench", "content-type": "application/json" }
  await pool(async () => {
    const item = claim.get()
    if (!item) return false
    const res = await fetch(`${url}/chat/completions`, {
      method: "POST",
      headers,
      body: JSON.stringify({ model: "gpt-4.1-mini", messages: [{ role: "user", content: item.prompt }] }),
    })
    const body = (await res.json()) as { choices: { message: { content: string } }[] }
    write.run(body.choices[0]!.message.content, item.id)
    done++
    return true
  })
  db.close()
} else {
  const home = join(dir, "home")
  const session = await engine.prepare({
    file: undefined,
    flags: {
      input: [input],
      prompt: "{{p}}",
      model: "gpt-4.1-mini",
      "base-url": url,
      concurrency: String(concurrency),
      name: "bench",
    },
    home,
    newRun: true,
    reingest: false,
    resume: "",
    synchronous: sync === "NORMAL" ? "NORMAL" : "FULL",
  })
  await session.execute()
  const db = await open(home)
  done = (await db.reads.counts((await db.runs.latest("bench"))!.id)).completed
  await db.close()
}

const ms = performance.now() - started
console.log(JSON.stringify({ mode, items: done, ms, itemsPerSec: done / (ms / 1000) }))
