/** `spool cache stats|prune|clear`: the store's response cache (README, "Cache"), looked at and trimmed. */
import { defineCommand, type ArgsDef } from "citty"
import { UsageError } from "../core/base/errors.ts"
import { durationMs } from "../core/job/duration.ts"
import type { CacheStats, Ledger } from "../core/ledger/ledger.ts"
import { common, existingStore, lazyLedger, type Where } from "./common.ts"

const args = {
  json: { type: "boolean", description: "Machine-readable output" },
  ...common,
} as const satisfies ArgsDef

/** Opens the store (--store, SPOOL_STORE or --home) for one use of its cache, and closes it after. */
async function withCache<T>(where: Where, access: "read" | "write", use: (db: Ledger) => Promise<T>) {
  const db = await (await lazyLedger()).open(await existingStore(where), { access })
  try {
    return await use(db)
  } finally {
    await db.close()
  }
}

const n = (x: number) => x.toLocaleString("en-US")
const round = (usd: number) => Math.round(usd * 1e6) / 1e6
const entries = (x: number) => `${n(x)} ${x === 1 ? "entry" : "entries"}`
/** A time to the second, in UTC: 2026-11-04T10:00:00Z. */
const iso = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z")

/** Bytes for people, in powers of 1000: 512 B, 1.2 kB, 5.6 MB. */
function bytes(x: number): string {
  if (x < 1000) return `${x} B`
  const units = ["kB", "MB", "GB", "TB"]
  let unit = 0
  let value = x / 1000
  while (value >= 999.95 && unit < units.length - 1) {
    value /= 1000
    unit++
  }
  return `${value.toFixed(1)} ${units[unit]}`
}

/** How long ago, coarsely: 40s, 12m, 5h, then days from two days on. */
function age(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000))
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m`
  if (s < 2 * 86400) return `${Math.floor(s / 3600)}h`
  return `${Math.floor(s / 86400)}d`
}

/** `cache stats --json`: the ledger's figures, times as ISO strings (as `status --json` gives them). */
function statsJson(s: CacheStats) {
  return {
    ...s,
    saved_usd: round(s.saved_usd),
    oldest: s.oldest === null ? null : new Date(s.oldest).toISOString(),
    newest: s.newest === null ? null : new Date(s.newest).toISOString(),
  }
}

/** `cache stats` as text: what the cache holds and how much the runs of the store took from it, per model. */
function statsText(s: CacheStats, now: number, usd: (x: number) => string): string {
  const served = `served    ${n(s.hits)} hit${s.hits === 1 ? "" : "s"} · ${n(s.misses)} miss${s.misses === 1 ? "" : "es"} · saved ${usd(s.saved_usd)} (every run of this store)`
  if (s.entries === 0 || s.oldest === null || s.newest === null)
    return `${["entries   0: the cache is empty (a run writes each answer it pays for)", served].join("\n")}\n`
  const rows = [
    ["provider", "model", "entries", "size"],
    ...s.models.map((m) => [m.provider, m.model, n(m.entries), bytes(m.bytes)]),
  ]
  const widths = [0, 1, 2, 3].map((c) => Math.max(...rows.map((r) => (r[c] as string).length)))
  // names to the left, figures to the right
  const table = rows.map((r) =>
    r
      .map((cell, c) => (c < 2 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!)))
      .join("  ")
      .trimEnd(),
  )
  return `${[
    `entries   ${n(s.entries)} (${bytes(s.bytes)})`,
    served,
    `oldest    ${iso(s.oldest)} (${age(now - s.oldest)} ago)`,
    `newest    ${iso(s.newest)} (${age(now - s.newest)} ago)`,
    "models",
    ...table.map((line) => `  ${line}`),
  ].join("\n")}\n`
}

const stats = defineCommand({
  meta: {
    name: "stats",
    description:
      "What the response cache holds (entries, size, oldest and newest, per model) and what it served",
  },
  args,
  async run({ args }) {
    const s = await withCache(args, "read", (db) => db.cache.stats())
    const { usd } = await import("../core/report/report.ts")
    process.stdout.write(
      args.json ? `${JSON.stringify(statsJson(s), null, 2)}\n` : statsText(s, Date.now(), usd),
    )
    return 0
  },
})

const prune = defineCommand({
  meta: {
    name: "prune",
    description: "Remove the entries written before a time: older than 30 days by default",
  },
  args: {
    "older-than": {
      type: "string",
      description: "Remove the entries older than this: 30d (the default), 12h, 90m, 45s, 2w",
      valueHint: "duration",
    },
    ...args,
  },
  async run({ args }) {
    const given = args["older-than"] ?? "30d"
    const ms = durationMs(given)
    if (ms === undefined)
      throw new UsageError(
        `--older-than: "${given}" is not a duration`,
        "Give a number and a unit: s, m, h, d or w (seconds to weeks), such as 30d, 12h or 2w.",
      )
    const before = Date.now() - ms
    const gone = await withCache(args, "write", (db) => db.cache.prune(before))
    if (args.json)
      process.stdout.write(
        `${JSON.stringify({ ...gone, before: new Date(before).toISOString() }, null, 2)}\n`,
      )
    else
      process.stderr.write(
        `removed ${entries(gone.entries)} (${bytes(gone.bytes)}) written before ${iso(before)}\n`,
      )
    return 0
  },
})

const clear = defineCommand({
  meta: { name: "clear", description: "Remove every entry of the response cache, or those of one model" },
  args: {
    model: {
      type: "string",
      description: "Only the entries of this model (as `spool cache stats` names it)",
    },
    ...args,
  },
  async run({ args }) {
    const model = args.model
    const { gone, models } = await withCache(args, "write", async (db) => {
      const gone = await db.cache.clear(model)
      // a model the cache has nothing of is likely misspelt: the ones it has are named
      const models = model !== undefined && gone.entries === 0 ? (await db.cache.stats()).models : []
      return { gone, models }
    })
    if (args.json) {
      process.stdout.write(`${JSON.stringify({ ...gone, model: model ?? null }, null, 2)}\n`)
      return 0
    }
    const removed = `removed ${entries(gone.entries)} (${bytes(gone.bytes)})`
    if (model === undefined) process.stderr.write(`${removed}: the cache is empty\n`)
    else if (gone.entries > 0 || models.length === 0)
      process.stderr.write(`${removed} of model ${JSON.stringify(model)}\n`)
    else
      process.stderr.write(
        `${removed}: the cache has no entries of model ${JSON.stringify(model)}; it has ${[...new Set(models.map((m) => JSON.stringify(m.model)))].join(", ")}\n`,
      )
    return 0
  },
})

export const cache = defineCommand({
  meta: {
    name: "cache",
    description: "The store's response cache: stats, prune [--older-than 30d], clear [--model M]",
  },
  subCommands: { stats, prune, clear },
})
