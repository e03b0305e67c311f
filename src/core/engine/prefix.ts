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
import * as template from "../job/template.ts"
import type { Ledger } from "../ledger/ledger.ts"
import { checkProvider } from "./provider.ts"

/** Rows read to learn which leading placeholders repeat. */
export const SAMPLE = 500

/** A leading placeholder is part of the prefix when it has at most one distinct value per this many sampled rows. */
const REPEATS = 10

/** About four characters a token, as spool estimates everywhere (budget, packing). */
export const tokensOf = (chars: number): number => Math.ceil(chars / 4)

type Part = template.Template["parts"][number]

export class Prefixes {
  /** The leading placeholders that are part of the prefix; undefined until learned. */
  private fields: Set<string> | undefined
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
    return this.fields !== undefined
  }

  /**
   * Learns from rows (JSON text) which leading placeholders repeat, once; says once what the prefix is worth. A
   * placeholder counts when its values repeat: at most one distinct value per REPEATS rows (and never with fewer than
   * REPEATS rows to tell by).
   */
  learn(rows: string[]): void {
    if (this.fields) return
    const parsed = rows.slice(0, SAMPLE).map((r) => JSON.parse(r) as Record<string, unknown>)
    const fields = new Set<string>()
    for (const part of this.prompt.parts) {
      if (typeof part === "string") continue
      const values = new Set(parsed.map((row) => JSON.stringify(template.lookup(row, part.path))))
      if (parsed.length < REPEATS || values.size > Math.max(1, Math.floor(parsed.length / REPEATS))) break
      fields.add(part.field)
    }
    this.fields = fields
    if (parsed[0]) this.tell(parsed[0])
  }

  /** The characters of a rendered prompt that belong to its prefix. */
  private prefixOf(row: Record<string, unknown>): number {
    let chars = 0
    for (const part of this.prompt.parts) {
      if (typeof part === "string") {
        chars += part.length
        continue
      }
      if (!this.fields?.has(part.field)) break
      const value = template.lookup(row, part.path)
      chars += typeof value === "string" ? value.length : JSON.stringify(value ?? "").length
    }
    return chars
  }

  /** The request's cache hints, for a row and its rendered prompt. */
  of(row: Record<string, unknown>, prompt: string): PromptCache {
    const prefix = Math.min(this.prefixOf(row), prompt.length)
    const system = this.job.request.system ?? ""
    const tokens = tokensOf(system.length + prefix)
    const mark = this.job.request.cache !== "auto" || tokens >= this.minimum
    return { prefix, ttl: this.ttl, key: this.keyOf(system, prompt.slice(0, prefix)), mark }
  }

  /** A row's prefix key ("" when its row cannot be read): requests sharing one are sent together. */
  rowKey(data: string): string {
    try {
      const row = JSON.parse(data) as Record<string, unknown>
      const text = template.render(this.prompt, row)
      if (typeof text !== "string") return ""
      return this.of(row, text).key
    } catch {
      return ""
    }
  }

  /** Sorts items so that those sharing a prefix are next to each other, in their first one's place (stable). */
  order<T extends { data: string }>(items: T[]): T[] {
    if (items.length < 2) return items
    const keys = items.map((i) => this.rowKey(i.data))
    const first = new Map<string, number>()
    keys.forEach((k, i) => first.has(k) || first.set(k, i))
    if (first.size < 2) return items
    return items
      .map((item, i) => ({ item, at: first.get(keys[i]!)!, i }))
      .sort((a, b) => a.at - b.at || a.i - b.i)
      .map((x) => x.item)
  }

  /** `spool-` and a hash of the run and the prefix: 64 characters at most, letters, digits and dashes. */
  private keyOf(system: string, prefix: string): string {
    const hash = new Bun.CryptoHasher("sha256").update(`${this.run}\0${system}\0${prefix}`).digest("hex")
    return `spool-${hash.slice(0, 32)}`
  }

  /** Says once, from the first row, when the prefix is too short to cache, or how to make it longer. */
  private tell(row: Record<string, unknown>): void {
    if (this.told) return
    this.told = true
    const system = this.job.request.system ?? ""
    const tokens = tokensOf(system.length + this.prefixOf(row))
    const model = this.job.provider.model ?? this.provider.name
    const hint = moveHint(this.prompt.parts, this.fields ?? new Set(), this.minimum)
    if (tokens >= this.minimum) {
      log.info(`prompt caching: the shared prefix is ~${tokens} tokens; cached after its first request`)
    } else {
      const what = !this.explicit
        ? "so the provider does not cache it"
        : this.job.request.cache === "auto"
          ? "so it is not marked for caching"
          : "so the provider may not cache it"
      log.info(
        `prompt caching: the shared prefix is ~${tokens} tokens, below ${model}'s minimum of ${this.minimum}, ${what}`,
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
    if (first !== undefined) longest = Math.max(longest, tokensOf(part.length))
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
