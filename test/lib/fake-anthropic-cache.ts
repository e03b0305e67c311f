/**
 * The prompt cache and the bill of the fake Anthropic server (fake-anthropic.ts), modelled on the API's: a request's
 * cacheable prefix is everything up to and including the last block that carries `cache_control` (tools, then
 * system, then messages); one seen within its lifetime is read, else written. The fake's own tables: it shares nothing
 * with src/, so a wrong table there cannot make a test agree with itself.
 */
import type { FakeBatch } from "./fake-batch.ts"

/** The fake's token count: a quarter of the characters, at least 1. */
export const tokens = (text: string) => Math.max(1, Math.ceil(text.length / 4))

/** The shortest prefix each model caches (Anthropic's prompt caching docs), by model id without a snapshot date. */
const MINIMUM: Readonly<Record<string, number>> = {
  "claude-opus-4-6": 4096,
  "claude-opus-4-5": 4096,
  "claude-haiku-4-5": 4096,
  "claude-sonnet-4-6": 2048,
  "claude-sonnet-4-5": 1024,
  "claude-opus-4-1": 1024,
  "claude-opus-4-0": 1024,
  "claude-opus-4": 1024,
  "claude-sonnet-4-0": 1024,
  "claude-sonnet-4": 1024,
  "claude-3-7-sonnet": 1024,
  "claude-3-5-haiku": 2048,
  "claude-3-haiku": 2048,
}

/** A model id without its snapshot date or `-latest`: `claude-sonnet-4-5-20250929` is `claude-sonnet-4-5`. */
const baseOf = (model: string) => model.replace(/-(\d{8}|latest)$/, "")

/** The shortest prefix the model caches, in tokens; 1024 for a model the table does not know. */
export function minimumTokens(model: string): number {
  return MINIMUM[baseOf(model)] ?? 1024
}

/** USD per million tokens, input and output. */
export interface Price {
  input: number
  output: number
}

/** The price of a model the `prices` option does not name: claude-sonnet-4-5's. */
export const DEFAULT_PRICE: Price = { input: 3, output: 15 }

export type Ttl = "5m" | "1h"

const TTL_MS: Record<Ttl, number> = { "5m": 5 * 60_000, "1h": 60 * 60_000 }

/** A request's cacheable prefix: its identity, its tokens, and the lifetime its breakpoint asks for. */
export interface Prefix {
  key: string
  tokens: number
  ttl: Ttl
}

/** What the prompt cache did for one request: the prefix tokens it read or wrote (and the ttl written). */
export interface CacheUse {
  read: number
  write: number
  ttl: Ttl
}

/** The usage object of a Message, as the API writes it. */
export interface Usage {
  input_tokens: number
  output_tokens: number
  cache_creation_input_tokens: number
  cache_read_input_tokens: number
  cache_creation: { ephemeral_5m_input_tokens: number; ephemeral_1h_input_tokens: number }
  server_tool_use: null
  service_tier: string
  inference_geo: null
}

type Block = Record<string, unknown>

const isBlock = (x: unknown): x is Block => typeof x === "object" && x !== null && !Array.isArray(x)
const marked = (x: unknown) => isBlock(x) && x.cache_control !== undefined && x.cache_control !== null
const textOf = (b: unknown) => (isBlock(b) && typeof b.text === "string" ? b.text : "")
/** A block as it is cached: its breakpoint is not part of its content. */
const bare = (b: unknown) => {
  if (!isBlock(b)) return b
  const { cache_control: _, ...rest } = b
  return rest
}

/** A system prompt or a message's content as a list of blocks: a string is one text block. */
const blocksOf = (content: unknown): unknown[] =>
  typeof content === "string" ? [{ type: "text", text: content }] : Array.isArray(content) ? content : []

/** A list of blocks that carries a breakpoint, counted as its text (a breakpoint costs nothing); anything else as it is. */
const plain = (content: unknown) =>
  Array.isArray(content) && content.some(marked) ? content.map(textOf).join("") : content

/**
 * A request's input tokens: the fake's count of its system prompt and messages. A request that marks a breakpoint
 * counts as the same request without it would, so caching changes how the input is billed, never how long it is.
 */
export function inputTokens(body: Record<string, unknown>): number {
  const raw = JSON.stringify([body.system ?? "", body.messages ?? ""])
  // a text of the request cannot hold `"cache_control"`: JSON escapes its quotes
  if (!raw.includes('"cache_control"')) return tokens(raw)
  const messages = Array.isArray(body.messages)
    ? body.messages.map((m: unknown) => (isBlock(m) ? { ...m, content: plain(m.content) } : m))
    : (body.messages ?? "")
  return tokens(JSON.stringify([plain(body.system ?? ""), messages]))
}

/**
 * The cacheable prefix of a request: tools, system blocks and message blocks, in that order, up to and including the
 * last one that carries `cache_control`; undefined without one. Its tokens are those of its texts (tools are not
 * counted, as `inputTokens` does not count them), at most the request's input.
 */
export function prefixOf(body: Record<string, unknown>): Prefix | undefined {
  const tools = Array.isArray(body.tools) ? (body.tools as unknown[]) : []
  const system = blocksOf(body.system)
  const messages = Array.isArray(body.messages) ? (body.messages as unknown[]) : []
  const contents = messages.map((m) => blocksOf(isBlock(m) ? m.content : undefined))
  // the last breakpoint, as [list, index]: 0 = tools, 1 = system, 2 + i = message i
  let last: [number, number] | undefined
  const lists = [tools, system, ...contents]
  lists.forEach((list, l) => list.forEach((b, i) => marked(b) && (last = [l, i])))
  if (!last) return undefined
  const [l, i] = last
  const cut = (list: unknown[], at: number) => (l > at ? list : l === at ? list.slice(0, i + 1) : [])
  const parts = {
    tools: cut(tools, 0).map(bare),
    system: cut(system, 1).map(bare),
    messages: contents.slice(0, Math.max(0, l - 1)).map((c, k) => ({
      role: isBlock(messages[k]) ? messages[k].role : undefined,
      content: cut(c, k + 2).map(bare),
    })),
  }
  const text = [...parts.system, ...parts.messages.flatMap((m) => m.content)].map(textOf).join("")
  const control = lists[l]![i] as { cache_control: { ttl?: unknown } }
  const model = typeof body.model === "string" ? body.model : ""
  return {
    key: String(Bun.hash(JSON.stringify([model, parts]))),
    tokens: Math.min(tokens(text), inputTokens(body)),
    ttl: control.cache_control.ttl === "1h" ? "1h" : "5m",
  }
}

/** The usage of a Message: `total` input tokens, of which the cache read or wrote some, and `output` tokens. */
export function usageOf(total: number, output: number, use: CacheUse | undefined): Usage {
  const read = use?.read ?? 0
  const write = use?.write ?? 0
  return {
    input_tokens: total - read - write,
    output_tokens: output,
    cache_creation_input_tokens: write,
    cache_read_input_tokens: read,
    cache_creation: {
      ephemeral_5m_input_tokens: use?.ttl === "5m" ? write : 0,
      ephemeral_1h_input_tokens: use?.ttl === "1h" ? write : 0,
    },
    server_tool_use: null,
    service_tier: "standard",
    inference_geo: null,
  }
}

/** Prompt-cache use so far: the requests (realtime and batch lines) that read or wrote a prefix, and their tokens. */
export interface CacheCounts {
  reads: number
  writes: number
  readTokens: number
  writeTokens: number
}

/**
 * The fake's prompt cache, on its clock, and its bill. Realtime requests are looked up as they arrive and kept once
 * served; a Message Batch's lines are all decided against the cache as it stood when the batch began processing (at
 * the API they run concurrently: a cold batch reads nothing), then its writes are kept.
 */
export class PromptCacheModel {
  /** Prefix key → when it lapses, on the fake's clock; every read or write pushes it on by the ttl. */
  private readonly expires = new Map<string, number>()
  private readonly batches = new WeakMap<object, (CacheUse | undefined)[]>()
  readonly counts: CacheCounts = { reads: 0, writes: 0, readTokens: 0, writeTokens: 0 }
  /** USD billed, in millionths (the per-million prices times the tokens), summed; `billed()` divides once. */
  private micro = 0

  constructor(private readonly prices: Record<string, Price> = {}) {}

  /** What a request arriving at `at` would get: a read, a write, or nothing (no breakpoint, or below the minimum). */
  lookup(body: Record<string, unknown>, at: number): CacheUse | undefined {
    const prefix = prefixOf(body)
    const model = typeof body.model === "string" ? body.model : ""
    if (!prefix || prefix.tokens < minimumTokens(model)) return undefined
    const alive = (this.expires.get(prefix.key) ?? -Infinity) > at
    return alive
      ? { read: prefix.tokens, write: 0, ttl: prefix.ttl }
      : { read: 0, write: prefix.tokens, ttl: prefix.ttl }
  }

  /** Keeps (or refreshes) the prefix of a request the cache was used for at `at`. */
  keep(body: Record<string, unknown>, use: CacheUse | undefined, at: number): void {
    if (!use) return
    const prefix = prefixOf(body)!
    const until = at + TTL_MS[use.ttl]
    this.expires.set(prefix.key, Math.max(this.expires.get(prefix.key) ?? -Infinity, until))
  }

  /**
   * The use of one line of a batch: on the first ask, every line of the batch is decided against the cache as it
   * was when the batch began processing (`at`), and the writes are kept afterwards.
   */
  line(batch: FakeBatch, index: number): CacheUse | undefined {
    let uses = this.batches.get(batch)
    if (!uses) {
      const at = batch.createdAt + batch.timeline.validatingMs
      uses = batch.lines.map((l) => this.lookup(l.body, at))
      batch.lines.forEach((l, i) => this.keep(l.body, uses![i], at))
      this.batches.set(batch, uses)
    }
    return uses[index]
  }

  /** Bills a served Message: uncached input, cache writes (1.25×, 2× for 1 h) and reads (0.1×), output; batch at half. */
  bill(model: string, usage: Usage, batch: boolean): void {
    const price = this.prices[model] ?? this.prices[baseOf(model)] ?? DEFAULT_PRICE
    const { ephemeral_5m_input_tokens: w5, ephemeral_1h_input_tokens: w1 } = usage.cache_creation
    const read = usage.cache_read_input_tokens
    const cost =
      usage.input_tokens * price.input +
      (w5 * price.input * 5) / 4 +
      w1 * price.input * 2 +
      (read * price.input) / 10 +
      usage.output_tokens * price.output
    this.micro += batch ? cost / 2 : cost
    if (read > 0) {
      this.counts.reads++
      this.counts.readTokens += read
    }
    if (usage.cache_creation_input_tokens > 0) {
      this.counts.writes++
      this.counts.writeTokens += usage.cache_creation_input_tokens
    }
  }

  /** USD billed so far. */
  billed(): number {
    return this.micro / 1e6
  }
}
