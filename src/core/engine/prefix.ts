/**
 * Prompt caching's shared prefix (README, "Paying less"). Most jobs send the same long instructions with every row;
 * providers bill a cached prefix at a tenth of the input price. A request's prefix is its system prompt, then the
 * prompt's text up to its first placeholder whose value varies from row to row: a placeholder at the start whose
 * values repeat (a per-category instruction block) is part of it, so that a job whose rows render to a few distinct
 * prefixes caches each. Which placeholders repeat is learned once per run, from a sample of its rows.
 *
 * The prefix gives each request its `PromptCache` (where the prefix ends, its lifetime, its key) and each row a key by
 * which requests sharing a prefix are sent together.
 */
import type { PromptCache, Provider } from "../../plugins/api/define.ts"
import * as log from "../base/log.ts"
import type { Job } from "../job/job.ts"
import { tokens } from "../job/estimate.ts"
import * as template from "../job/template.ts"
import type { Ledger } from "../ledger/ledger.ts"
import { checkProvider } from "./provider.ts"

/** Rows read to learn which leading placeholders repeat. */
export const SAMPLE = 500

/** A leading placeholder is part of the prefix when it has at most one distinct value per this many sampled rows. */
const REPEATS = 10

/** Distinct prefixes remembered with their key and mark; past this many, the memory starts afresh. */
const MEMO = 10_000

type Part = template.Template["parts"][number]

export class Prefixes {
  /**
   * The template's head: its parts up to the first placeholder whose value varies (static text, and the leading
   * placeholders whose values repeat); undefined until learned. Rendered for a row, it is the row's prefix.
   */
  private head: template.Template | undefined
  /** A head's rendered text → its key and whether it is marked: hashed once per distinct prefix, not per request. */
  private readonly memo = new Map<string, { key: string; mark: boolean }>()
  private readonly ttl: "5m" | "1h"
  private readonly minimum: number
  private told = false

  constructor(
    private readonly job: Job,
    private readonly prompt: template.Template,
    /** The run's name: OpenAI's prompt_cache_key is per run and prefix. */
    private readonly run: string,
    private readonly provider: Pick<Provider, "name" | "promptCache">,
  ) {
    const setting = job.request.cache
    this.ttl = setting === "1h" ? "1h" : "5m"
    this.minimum = provider.promptCache?.minimumTokens(job.provider.model ?? provider.name) ?? 1024
  }

  /** Whether the job sends cache hints at all. */
  static wanted(job: Job, provider: Pick<Provider, "promptCache">): boolean {
    return (
      job.request.cache !== "off" && job.request.kind !== "embedding" && provider.promptCache !== undefined
    )
  }

  /** How long a written prefix lives at the provider (ms). */
  get ttlMs(): number {
    return this.provider.promptCache?.ttlMs(this.ttl) ?? 5 * 60_000
  }

  /** Whether the provider caches only where a request marks it, and needs a batch's prefix primed. */
  get explicit(): boolean {
    return this.provider.promptCache?.explicit ?? false
  }

  get learned(): boolean {
    return this.head !== undefined
  }

  /**
   * Learns from rows (JSON text) which leading placeholders repeat, once; says once what the prefix is worth. A
   * placeholder counts when its values repeat: at most one distinct value per REPEATS rows (and never with fewer than
   * REPEATS rows to tell by).
   */
  learn(rows: string[]): void {
    if (this.head) return
    const parsed = rows.slice(0, SAMPLE).map((r) => JSON.parse(r) as Record<string, unknown>)
    const { parts } = this.prompt
    let end = 0
    for (; end < parts.length; end++) {
      const part = parts[end]!
      if (typeof part === "string") continue
      const values = new Set(parsed.map((row) => JSON.stringify(template.lookup(row, part.path))))
      if (parsed.length < REPEATS || values.size > Math.max(1, Math.floor(parsed.length / REPEATS))) break
    }
    const head = parts.slice(0, end)
    this.head = {
      source: "",
      parts: head,
      fields: head.flatMap((p) => (typeof p === "string" ? [] : [p.field])),
    }
    if (parsed[0]) this.tell(parsed[0])
  }

  /** A row's prefix: its rendered head ("" when the row lacks a field of it). */
  private prefixOf(row: Record<string, unknown>): string {
    // before it is learned, the head is the prompt's static text before its first placeholder
    const text = this.head ? template.render(this.head, row) : this.prompt.parts[0]
    return typeof text === "string" ? text : ""
  }

  /** The key and mark of a prefix, from the memo. */
  private entry(prefix: string): { key: string; mark: boolean } {
    let e = this.memo.get(prefix)
    if (!e) {
      const system = this.job.request.system ?? ""
      const hash = new Bun.CryptoHasher("sha256").update(`${this.run}\0${system}\0${prefix}`).digest("hex")
      const mark = this.job.request.cache !== "auto" || tokens(system) + tokens(prefix) >= this.minimum
      // `spool-` and a hash of the run and the prefix: 64 characters at most, letters, digits and dashes
      e = { key: `spool-${hash.slice(0, 32)}`, mark }
      if (this.memo.size >= MEMO) this.memo.clear()
      this.memo.set(prefix, e)
    }
    return e
  }

  /** The request's cache hints, for a row and its rendered prompt. */
  of(row: Record<string, unknown>, prompt: string): PromptCache {
    const prefix = this.prefixOf(row)
    return { prefix: Math.min(prefix.length, prompt.length), ttl: this.ttl, ...this.entry(prefix) }
  }

  /** Sorts items so that those sharing a prefix are next to each other, in their first one's place (stable). */
  order<T extends { data: string }>(items: T[]): T[] {
    // with no repeating field in it, the head is static text alone: every row has the same prefix
    if (items.length < 2 || !this.head?.fields.length) return items
    const keys = items.map((i) => this.prefixOf(JSON.parse(i.data) as Record<string, unknown>))
    const first = new Map<string, number>()
    keys.forEach((k, i) => first.has(k) || first.set(k, i))
    if (first.size < 2) return items
    return items
      .map((item, i) => ({ item, at: first.get(keys[i]!)!, i }))
      .sort((a, b) => a.at - b.at || a.i - b.i)
      .map((x) => x.item)
  }

  /** Says once, from the first row, when the prefix is too short to cache, or how to make it longer. */
  private tell(row: Record<string, unknown>): void {
    if (this.told) return
    this.told = true
    const system = this.job.request.system ?? ""
    const count = tokens(system) + tokens(this.prefixOf(row))
    const model = this.job.provider.model ?? this.provider.name
    const hint = moveHint(this.prompt.parts, new Set(this.head?.fields), this.minimum)
    if (count >= this.minimum) {
      log.info(`prompt caching: the shared prefix is ~${count} tokens; cached after its first request`)
    } else {
      const what = !this.explicit
        ? "so the provider does not cache it"
        : this.job.request.cache === "auto"
          ? "so it is not marked for caching"
          : "so the provider may not cache it"
      log.info(
        `prompt caching: the shared prefix is ~${count} tokens, below ${model}'s minimum of ${this.minimum}, ${what}`,
      )
    }
    if (hint) log.info(hint)
  }
}

/**
 * The one-line hint for a template that puts a varying field before a long static text: the text after it would be a
 * cacheable prefix if the field came later. Undefined when no static text after the prefix is long enough to matter.
 */
export function moveHint(parts: Part[], fields: Set<string>, minimum: number): string | undefined {
  let first: string | undefined
  let longest = 0
  for (const part of parts) {
    if (typeof part !== "string") {
      if (!fields.has(part.field)) first ??= part.field
      continue
    }
    if (first !== undefined) longest = Math.max(longest, tokens(part))
  }
  if (first === undefined || longest < Math.min(minimum, 1024)) return undefined
  return `move \`{{${first}}}\` after the instructions to make them cacheable (~${longest} tokens of static text come after it)`
}

/**
 * Items in the order to send them: those sharing a prefix together. The prefixes are learned first, once, from the
 * run's first SAMPLE items in the ledger.
 */
export async function arrange<T extends { data: string }>(
  prefixes: Prefixes | undefined,
  items: T[],
  ledger: Pick<Ledger, "reads">,
  run: number,
): Promise<T[]> {
  if (!prefixes || items.length === 0) return items
  if (!prefixes.learned) {
    const rows: string[] = []
    for await (const item of ledger.reads.items(run)) {
      rows.push(item.data)
      if (rows.length >= SAMPLE) break
    }
    prefixes.learn(rows.length > 0 ? rows : items.map((i) => i.data))
  }
  return prefixes.order(items)
}

/** A run's prefixes, unless its job sends no cache hints (`cache = "off"`, embeddings, a provider without a cache). */
export function prefixesOf(job: Job, run: string): Prefixes | undefined {
  const { provider } = checkProvider(job)
  if (!Prefixes.wanted(job, provider)) return undefined
  return new Prefixes(job, template.parse(job.request.prompt), run, provider)
}
