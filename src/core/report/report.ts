/** What the CLI shows: status views, the runs list, result lines, and live progress. */
import { basename } from "node:path"
import type { Listed } from "../../plugins/registry.ts"
import type { State } from "../ledger/states.ts"
import { alive, usageOf, type Ledger, type Worker } from "../ledger/ledger.ts"
import type { AttemptRow, Batch, CachedUsage, ResultRow, Run, Summary } from "../ledger/types.ts"
import { jobPrice, paidCost, paidSaving, spentOf, type Priced } from "../job/pricing.ts"
import { primingOf, promptCacheOf, type PrimingView, type PromptCacheView } from "./savings.ts"
import { workerViews, type WorkerView } from "./workers.ts"

export interface StatusView {
  id: number
  name: string
  /** The run's state as shown: its stored one, or `interrupted` (see `shown`). */
  state: string
  reason: string | null
  /** How many processes are working on the run now (the worker registry). */
  workers: number
  /**
   * The run's registered workers, the first started first: where each runs (its host and pid, from its owner id),
   * how many items it holds now, its last heartbeat, and whether it is alive (a fresh beat, a process not gone).
   */
  worker_list: WorkerView[]
  created_at: string
  finished_at: string | null
  counts: Record<State, number>
  total: number
  attempts: number
  usage: { input_tokens: number; output_tokens: number; cached_input_tokens: number }
  /** USD at full precision; null when the model's price is unknown (never 0 for unknown). */
  spend: {
    usd: number | null
    /**
     * What the items not yet finished will cost at the average so far (of the items called for, not those the cache
     * served); null until such an item has finished.
     */
    remaining_usd: number | null
    prices: Priced | null
  }
  /**
   * The response cache for this run: items served from it, items it was asked for and could not serve, and what the
   * answers served had cost when they were paid for (USD; those of unknown price count 0). Zeros when never asked.
   */
  cache: { hits: number; misses: number; saved_usd: number }
  /** The provider's prompt cache (README, "Paying less"): tokens read and written, and what it saved. */
  prompt_cache: PromptCacheView
  /** The run's priming calls: how many, how many failed, what the answered ones cost (in `spend` too). */
  priming: PrimingView
  errors: { class: string; count: number; example: string; id: string }[]
  malformed: { count: number; duplicates: number; sample: { file: string; line: number; reason: string }[] }
  /** Batch mode: every provider batch of the run, oldest first (the page: the live ones and the last 50). */
  batches: BatchView[]
  batches_total: number
  /** Queue limits learned from the provider (batch mode), when it reported one. */
  queue: { tokens: number | null; requests: number | null }
  elapsed_s: number
  /** 0 for an interrupted run: nothing is going on. */
  rate_per_s: number
  /** null when unknown, and for a run that is not going (paused, cancelled, interrupted). */
  eta_s: number | null
  resume: string
}

/** What a run is shown as when it is `running` in the ledger but no process works on it any more. */
export const INTERRUPTED = "interrupted"

/** Why a run is shown as interrupted, said once wherever it is shown. */
export const INTERRUPTED_WHY = "no spool process is working on it"

/**
 * A run's state as shown, and how many workers are alive on it. The ledger keeps a stopped run `running` (its
 * items are still to do, and `spool run` goes on with it); it is shown `interrupted` when none of its registered
 * workers is alive (ledger.ts `alive`).
 */
export async function shown(
  db: Ledger,
  run: Run,
  now = Date.now(),
): Promise<{ state: string; workers: number }> {
  return shownOf(run, await db.workers.list(run.id), now)
}

function shownOf(run: Run, list: Worker[], now: number): { state: string; workers: number } {
  const workers = alive(list, now)
  return { state: run.state === "running" && workers === 0 ? INTERRUPTED : run.state, workers }
}

/** The prices of a run's model, from the job it was (last) run with (its cache lifetime's write price). */
export function pricesOf(run: Run): Priced | undefined {
  return jobPrice(run.job)
}

const round = (usd: number) => Math.round(usd * 1e6) / 1e6

export interface BatchView {
  id: number
  tag: string
  provider_id: string | null
  /** creating, validating, in_progress, finalizing, cancelling, downloading, applying, ended, abandoned */
  phase: string
  /** The provider's own status word. */
  status: string | null
  outcome: string | null
  items: number
  /** Requests done of the total, as the provider reports them. */
  done: number | null
  failed: number | null
  error: string | null
  created_at: string
  ended_at: string | null
}

/** Where a batch is, in one word: the ledger's step until the provider has it, then the provider's phase. */
export function batchPhase(b: Batch): string {
  if (b.state === "intent") return "creating"
  if (b.state === "submitted") return b.phase ?? "validating"
  if (b.state === "done") return "ended"
  return b.state
}

export function batchView(b: Batch): BatchView {
  return {
    id: b.id,
    tag: b.tag,
    provider_id: b.provider_id,
    phase: batchPhase(b),
    status: b.status,
    outcome: b.outcome,
    items: b.count,
    done: b.done,
    failed: b.failed,
    error: b.error,
    created_at: new Date(b.created_at).toISOString(),
    ended_at: b.ended_at ? new Date(b.ended_at).toISOString() : null,
  }
}

function batchText(b: BatchView): string {
  const of = b.done !== null ? ` ${n(b.done)}/${n(b.items)}` : ` ${n(b.items)} items`
  const phase = b.phase === "in_progress" ? "in progress" : b.phase
  const end = b.outcome ? ` (${b.outcome})` : ""
  const why = b.error ? ` — ${b.error}` : ""
  return `  #${b.id} ${b.provider_id ?? b.tag}  ${phase}${end}${of}${b.failed ? `, ${n(b.failed)} failed` : ""}${why}`
}

/**
 * A run's status. `recentBatches`: only the live batches and the last N that ended (a page's update must not grow
 * with a run's history); `batches_total` says how many there are in all.
 */
export async function status(
  db: Ledger,
  run: Run,
  now = Date.now(),
  o: { recentBatches?: number } = {},
): Promise<StatusView> {
  // independent reads, sent together (on PostgreSQL they go out at once; SQLite's answer at once anyway)
  const [s, list, held, batches] = await Promise.all([
    db.reads.summary(run.id, now),
    db.workers.list(run.id),
    db.workers.held(run.id),
    batchesOf(db, run, o.recentBatches),
  ])
  const { state, workers } = shownOf(run, list, now)
  const going = state === "running"
  const prices = pricesOf(run)
  const tokens = {
    input_tokens: s.inputTokens,
    output_tokens: s.outputTokens,
    cached_input_tokens: s.cachedTokens,
  }
  const spent = prices ? spentOf(prices, s) : null
  // the average is of the items that were called for: a hit of the cache cost nothing, and says nothing of the rest
  const called =
    s.counts.completed + s.counts.failed + s.counts.needs_review + s.counts.rejected - s.cache.hits
  const start = s.firstStarted ?? run.created_at
  const end = run.finished_at ?? (s.lastEnded && !going ? s.lastEnded : now)
  const elapsed = Math.max(1, (end - start) / 1000)
  // a live run: the last minute's pace; a finished one: its whole length; an interrupted one: none
  const rate =
    state === INTERRUPTED
      ? 0
      : going
        ? s.recentCompleted / (s.recentWindowMs / 1000)
        : s.counts.completed / elapsed
  const left =
    s.counts.pending + s.counts.running + s.counts.retry_wait + s.counts.queued + s.counts.submitted
  return {
    id: run.id,
    name: run.name,
    state,
    reason: run.reason,
    workers,
    worker_list: workerViews(list, held, now),
    created_at: new Date(run.created_at).toISOString(),
    finished_at: run.finished_at ? new Date(run.finished_at).toISOString() : null,
    counts: s.counts,
    total: s.total,
    attempts: s.attempts,
    usage: tokens,
    spend: {
      // at full precision, as each result's cost_usd: their sum is this (the text shows it rounded)
      usd: spent,
      remaining_usd: spent === null || called <= 0 ? null : round((spent / called) * left),
      prices: prices ?? null,
    },
    cache: { hits: s.cache.hits, misses: s.cache.misses, saved_usd: round(s.cache.savedUsd) },
    prompt_cache: promptCacheOf(s, prices),
    priming: primingOf(s, prices),
    errors: s.errors.map((e) => ({ class: e.class, count: e.count, example: e.example, id: e.key })),
    malformed: s.problems,
    ...batches,
    queue: { tokens: run.queue_tokens ?? null, requests: run.queue_requests ?? null },
    elapsed_s: Math.max(0, Math.round((end - start) / 1000)),
    rate_per_s: Math.round(rate * 100) / 100,
    // only a run that is going has an ETA: a paused, cancelled or interrupted one waits for someone
    eta_s: left === 0 ? 0 : going && rate > 0 ? Math.round(left / rate) : null,
    resume: run.resume,
  }
}

async function batchesOf(db: Ledger, run: Run, recent: number | undefined) {
  if (recent === undefined) {
    const all = await db.batches.list(run.id)
    return { batches: all.map(batchView), batches_total: all.length }
  }
  const { batches, total } = await db.batches.recent(run.id, recent)
  return { batches: batches.map(batchView), batches_total: total }
}

export function duration(seconds: number): string {
  if (seconds < 60) return `${seconds}s`
  const m = Math.floor(seconds / 60)
  if (m < 60) return `${m}m ${seconds % 60}s`
  return `${Math.floor(m / 60)}h ${m % 60}m`
}

const n = (x: number) => x.toLocaleString("en-US")

/** A count and its noun: `1 hit`, `1,200 hits`, `2 misses`. */
const count = (x: number, noun: string) =>
  `${n(x)} ${x === 1 ? noun : noun.endsWith("s") ? `${noun}es` : `${noun}s`}`

/** Dollars with enough digits to be useful for small runs: $0.0123, $4.56, $1,234.50. */
export function usd(x: number): string {
  return `$${x.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: x < 1 ? 4 : 2 })}`
}

function spendText(spend: StatusView["spend"]): string {
  if (spend.usd === null)
    return "unknown (no price for this model: set input and output in [pricing], USD per million tokens)"
  const rest = spend.remaining_usd ? ` · ~${usd(spend.remaining_usd)} for the rest` : ""
  return `${usd(spend.usd)} so far${rest} (${spend.prices?.source})`
}

/** The order `spool status` lists the states in: the ended ones first, then those under way. */
export const STATE_ORDER: readonly State[] = [
  "completed",
  "failed",
  "needs_review",
  "rejected",
  "skipped",
  "pending",
  "running",
  "retry_wait",
  "queued",
  "submitted",
]

export function statusText(v: StatusView): string {
  const counts = STATE_ORDER.filter((s) => v.counts[s] > 0 || s === "completed")
    .map((s) => `${s} ${n(v.counts[s])}`)
    .join(" · ")
  const lines = [
    `run ${v.name} (#${v.id}) · ${stateText(v)}`,
    `items     ${n(v.total)}: ${counts}`,
    `attempts  ${n(v.attempts)} · tokens in ${n(v.usage.input_tokens)}${
      v.usage.cached_input_tokens ? ` (${n(v.usage.cached_input_tokens)} cached)` : ""
    } out ${n(v.usage.output_tokens)}`,
    `spend     ${spendText(v.spend)}`,
  ]
  const { hits, misses, saved_usd } = v.cache
  // answers of unknown price count 0 in what was saved: with no price for the model, that 0 says nothing
  const saved = hits > 0 && saved_usd === 0 && v.spend.usd === null ? "unknown (no price)" : usd(saved_usd)
  if (hits + misses > 0)
    lines.push(`cache     ${count(hits, "hit")} · ${count(misses, "miss")} · saved ${saved}`)
  const read = v.prompt_cache.read_tokens
  const written = v.prompt_cache.write_tokens
  if (read + written > 0)
    lines.push(`caching   ${n(read)} tokens read, ${n(written)} written · saved ${savedText(v.prompt_cache)}`)
  if (v.priming.calls > 0) {
    const failed = v.priming.failed ? ` (${n(v.priming.failed)} failed)` : ""
    const paid = v.priming.cost_usd === null ? "cost unknown (no price)" : usd(v.priming.cost_usd)
    lines.push(`priming   ${count(v.priming.calls, "call")}${failed} · ${paid}`)
  }
  lines.push(`time      ${timeText(v)}`)
  // one worker is the common case, said by the state line; several (a shared store) are listed, each where it runs
  if (v.worker_list.length > 1) {
    lines.push("workers")
    for (const w of v.worker_list)
      lines.push(
        `  ${w.host}${w.pid === null ? "" : ` pid ${w.pid}`} · ${n(w.items)} item(s) held · last beat ${w.beat_at.slice(11, 19)} UTC${w.alive ? "" : " · gone"}`,
      )
  }
  if (v.errors.length) {
    lines.push("errors")
    for (const e of v.errors) lines.push(`  ${e.class} ×${n(e.count)}  e.g. ${e.id}: ${e.example}`)
  }
  if (v.batches.length) {
    lines.push(...batchesText(v))
    if (v.queue.tokens || v.queue.requests)
      lines.push(
        `  queue limit learned: ${[v.queue.tokens ? `${n(v.queue.tokens)} enqueued tokens` : "", v.queue.requests ? `${n(v.queue.requests)} requests` : ""].filter(Boolean).join(", ")}`,
      )
  }
  if (v.malformed.count) {
    lines.push(
      `input     ${n(v.malformed.count)} line(s) skipped (${n(v.malformed.duplicates)} duplicate ids)`,
    )
    for (const p of v.malformed.sample) lines.push(`  ${p.file}:${p.line}  ${p.reason}`)
  }
  if (v.state === "paused" || v.state === "running" || v.state === INTERRUPTED)
    lines.push(`resume    ${v.resume}`)
  return `${lines.join("\n")}\n`
}

/**
 * What the prompt cache saved, as the status text says it: `$8.09 (89% of input)`, the share rounded down (never more
 * than was saved); a loss with its sign, and why.
 */
function savedText(p: PromptCacheView): string {
  if (p.saved_usd === null) return "unknown (no price)"
  const share = p.saved_share === null ? "" : ` (${Math.trunc(p.saved_share * 100)}% of input)`
  if (p.saved_usd >= 0) return `${usd(p.saved_usd)}${share}`
  return `-${usd(-p.saved_usd)}${share}: the cache writes cost more than its reads saved`
}

/** How many of the batches that ended the status text lists: the last ones. */
export const ENDED_SHOWN = 3

/**
 * The batches of a status: how many, then every live one and the last ENDED_SHOWN that ended, in id order, and how
 * many more ended (`--json` has them all). A view of the recent ones only (the page's) counts from batches_total.
 */
function batchesText(v: StatusView): string[] {
  const live = v.batches.filter((b) => b.phase !== "ended" && b.phase !== "abandoned")
  const ended = v.batches.filter((b) => !live.includes(b)).slice(-ENDED_SHOWN)
  const endedTotal = v.batches_total - live.length
  const out = [`batches   ${n(v.batches_total)}: ${n(live.length)} live, ${n(endedTotal)} ended or given up`]
  for (const b of [...ended, ...live].sort((a, b) => a.id - b.id)) out.push(batchText(b))
  const more = endedTotal - ended.length
  if (more > 0) out.push(`  … and ${n(more)} more ended (spool status --json lists every batch)`)
  return out
}

/** The state in the status's first line: why a run is interrupted or paused, and how many work on a live one. */
function stateText(v: StatusView): string {
  if (v.state === INTERRUPTED) return `${INTERRUPTED} — ${INTERRUPTED_WHY}`
  const workers = v.state === "running" && v.workers > 1 ? ` (${v.workers} workers)` : ""
  return `${v.state}${workers}${v.reason ? ` — ${v.reason}` : ""}`
}

function timeText(v: StatusView): string {
  const elapsed = `elapsed ${duration(v.elapsed_s)}`
  if (v.state === INTERRUPTED) return `${elapsed} · no rate or ETA while nothing runs it`
  const rate = `${elapsed} · ${v.rate_per_s}/s${v.state === "running" ? " over the last minute" : ""}`
  // a finished run has nothing left to wait for
  if (v.state === "completed" || v.state === "completed_with_failures") return rate
  return `${rate} · ETA ${v.eta_s === null ? "unknown" : duration(v.eta_s)}`
}

export interface RunLine {
  id: number
  name: string
  /** As shown: the stored state, or `interrupted` (see `shown`). */
  state: string
  completed: number
  failed: number
  total: number
  created_at: string
  /** How many processes are working on the run now. */
  workers: number
  /** The command that goes on with an interrupted run; null for any other. */
  resume: string | null
  /** A pipeline run (docs/PIPELINES.md): its items are its rows, and it has this many steps (each a run listed). */
  steps?: number
}

export async function runLine(db: Ledger, run: Run, now = Date.now()): Promise<RunLine> {
  const [counts, list] = await Promise.all([db.reads.counts(run.id), db.workers.list(run.id)])
  const total = Object.values(counts).reduce((a, b) => a + b, 0)
  const { state, workers } = shownOf(run, list, now)
  return {
    id: run.id,
    name: run.name,
    state,
    completed: counts.completed,
    failed: counts.failed + counts.needs_review + counts.rejected,
    total,
    created_at: new Date(run.created_at).toISOString(),
    workers,
    resume: state === INTERRUPTED ? run.resume : null,
    ...(run.job.pipeline && { steps: run.job.pipeline.length }),
  }
}

export function runsText(list: RunLine[]): string {
  if (!list.length) return "no runs yet — start one with `spool run job.toml`\n"
  const rows = list.map(
    (r) =>
      `${String(r.id).padStart(4)}  ${r.name.padEnd(24)} ${r.state.padEnd(24)} ${r.steps === undefined ? `${n(r.completed)}/${n(r.total)} done${r.failed ? `, ${n(r.failed)} failed` : ""}` : `${n(r.total)} rows, ${r.steps} steps`}  ${r.created_at}${
        r.resume ? `\n      resume: ${r.resume}` : ""
      }`,
  )
  return `${["  id  name                     state                    progress", ...rows].join("\n")}\n`
}

/**
 * With several inputs, an id is prefixed by its input's file name (or, when two inputs share a name, by its
 * position and name), so equal ids in two files stay apart. One input keeps its ids as they are.
 */
export function namespaces(paths: string[]): (string | undefined)[] {
  if (paths.length < 2) return paths.map(() => undefined)
  const names = paths.map((p) => basename(p))
  const clash = new Set(names.filter((n, i) => names.indexOf(n) !== i))
  return names.map((n, i) => (clash.has(n) ? `${i + 1}.${n}` : n))
}

/** One result line (DESIGN §7). */
export interface ResultLine {
  id: string
  state: State
  output: unknown
  error: { class: string | null; message: string } | null
  attempts: number
  /** Its calls' tokens: `cached_input_tokens` read from the prompt cache, `cache_write_tokens` written to it. */
  usage: {
    input_tokens: number
    output_tokens: number
    cached_input_tokens: number
    cache_write_tokens: number
  }
  /** USD; null when the model's price is unknown. 0 for an item served from the cache: no call was made. */
  cost_usd: number | null
  /**
   * USD the prompt cache saved on its calls (pricing.ts `paidSaving`, each part at the price it was paid); negative
   * when its writes cost more than its reads saved; null when the model's price is unknown.
   */
  prompt_cache_saved_usd: number | null
  /** Served from the response cache: completed with no call, its own usage 0. */
  cached: boolean
  /** A hit only: what its answer cost when it was paid for (tokens, and USD or null when unknown). */
  cached_usage?: CachedUsage
  source: { file: string; row: number; id: string | null }
}

/** Makes a run's result lines (DESIGN §7): its ids namespaced by input, its outputs parsed, its costs priced. */
export async function resultLine(db: Ledger, run: Run): Promise<(item: ResultRow) => ResultLine> {
  const label = namespaces((await db.runs.inputs(run.id)).map((i) => i.path))
  const prices = pricesOf(run)
  const structured = run.job.output !== undefined
  return (item) => ({
    id: label[item.input] === undefined ? item.key : `${label[item.input]}:${item.key}`,
    state: item.state,
    // the parsed object with a schema; for an item left for review, the answer that failed its gate
    output:
      item.state === "completed"
        ? structured && item.output !== null
          ? (JSON.parse(item.output) as unknown)
          : item.output
        : item.state === "needs_review" || item.state === "rejected"
          ? item.output
          : null,
    error: item.error ? { class: item.error_class, message: item.error } : null,
    attempts: item.attempts,
    usage: {
      input_tokens: item.input_tokens,
      output_tokens: item.output_tokens,
      cached_input_tokens: item.cached_input_tokens,
      cache_write_tokens: item.cache_write_tokens,
    },
    // at full precision: a cheap item's cost rounded to 6 decimals was off by up to 5%, and their sum drifted from
    // the run's spend (issue 17)
    cost_usd: item.cached_usage !== null ? 0 : prices ? paidCost(prices, item) : null,
    prompt_cache_saved_usd: item.cached_usage !== null ? 0 : prices ? paidSaving(prices, item) : null,
    cached: item.cached_usage !== null,
    ...(item.cached_usage === null ? {} : { cached_usage: usageOf(item.cached_usage) }),
    source: { file: item.path, row: item.row, id: item.source_id },
  })
}

/**
 * Why an attempt of an item's history did not count toward max_attempts, or null when it did. A stop (Ctrl+C,
 * SIGTERM) cuts calls short after the grace period and sends back the items claimed ahead: the ledger takes those
 * attempts back and keeps them numbered 0 (sqlite/claims.ts `record`). A hit of the response cache is one too.
 */
export function attemptNote(a: Pick<AttemptRow, "n" | "outcome">): string | null {
  if (a.n !== 0) return null
  if (a.outcome === "interrupted") return "interrupted by Ctrl+C or a stop signal; not counted"
  if (a.outcome === "unsent") return "claimed but not sent before the run stopped; not counted"
  if (a.outcome === "cached") return "served from the response cache: no call, not counted"
  return null
}

/** The result lines of DESIGN §7, streamed in ledger order. Only committed data is ever read. */
export async function* results(db: Ledger, run: Run, state?: State): AsyncGenerator<string> {
  const line = await resultLine(db, run)
  for await (const item of db.reads.items(run.id, state)) yield `${JSON.stringify(line(item))}\n`
}

/** A run's progress as `progress` shows it: the whole run's counts, from the store (every worker's items). */
export interface Ticker {
  total: number
  /** Items in a final state: completed, failed, needs_review or rejected. */
  done: number
  failed: number
  /** Items left for a person to review (needs_review), apart from `failed`. */
  review: number
  startedAt: number
  doneAtStart: number
  /** The run's response cache (its summary's), read once the run has ended: what the closing line says of it. */
  cache?: Summary["cache"]
}

/** Off a terminal (a CI log, a file), a progress line this often at most. */
export const PLAIN_EVERY_MS = 5_000
/** On a terminal, the line is redrawn this often at most. */
const REDRAW_MS = 200
/**
 * The rate and ETA wait for something to base them on: this long since the process started, and this many items
 * ended in it. One item in the first second says nothing of the next ten thousand.
 */
export const RATE_AFTER_MS = 5_000
export const RATE_AFTER_ITEMS = 3

/**
 * One progress line at `now`: the run's counts, then the rate this process has seen and the ETA it gives once they
 * are measured (`measuring the rate` before), or only the rate once nothing is left.
 */
export function progressLine(t: Ticker, now: number): string {
  const review = t.review ? ` · ${n(t.review)} need review` : ""
  const head = `${n(t.done)}/${n(t.total)} done · ${n(t.failed)} failed${review}`
  const ms = now - t.startedAt
  const measured = t.done - t.doneAtStart
  const known = ms >= RATE_AFTER_MS && measured >= RATE_AFTER_ITEMS
  const left = Math.max(0, t.total - t.done)
  if (!known) return left === 0 ? head : `${head} · measuring the rate`
  const rate = measured / (ms / 1000)
  const pace = `${rate.toFixed(1)}/s`
  return left === 0 ? `${head} · ${pace}` : `${head} · ${pace} · ETA ${duration(Math.round(left / rate))}`
}

/** Live progress on stderr: one redrawn line on a terminal, a plain line every PLAIN_EVERY_MS otherwise. */
export function progress(
  out: { write(text: string): unknown; isTTY?: boolean },
  tty = out.isTTY === true,
  clock: () => number = Date.now,
) {
  let last: number | undefined
  let shown: Ticker | undefined
  const every = tty ? REDRAW_MS : PLAIN_EVERY_MS
  return {
    tick(t: Ticker) {
      shown = t
      const now = clock()
      if (last !== undefined && now - last < every) return
      last = now
      const line = progressLine(t, now)
      out.write(tty ? `\r\x1b[K${line}` : `${line}\n`)
    },
    end() {
      if (tty && shown) out.write(`\r\x1b[K${progressLine(shown, clock())}\n`)
    },
  }
}

/** `spool plugins` as text: one block per kind, each with its options. */
export function pluginsText(list: Listed[]): string {
  const out: string[] = []
  for (const kind of ["source", "provider"] as const) {
    out.push(kind === "source" ? "Sources" : "Providers")
    for (const p of list.filter((l) => l.kind === kind)) {
      const what =
        kind === "source" ? (p.extensions?.join(" ") ?? "") : p.keyEnv ? `key: $${p.keyEnv}` : "no key"
      out.push(`  ${p.name.padEnd(20)} ${what.padEnd(24)} ${p.origin}`)
      for (const o of p.options) {
        const def = o.default === undefined ? "" : ` = ${JSON.stringify(o.default)}`
        out.push(`      ${o.name}: ${o.type}${o.required ? " (required)" : def}`)
      }
    }
    out.push("")
  }
  return `${out.join("\n")}`
}
