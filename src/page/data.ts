/**
 * What the status page and its API show of a run beyond its counts: the chart, the job, items found and one item
 * opened. Every read is bounded (an index walk, a look-up, or a scan of at most SEARCH_SCAN items), so a request
 * costs the same for a run of a million items as for ten.
 */
import * as report from "../core/report/report.ts"
import type { Ledger } from "../core/ledger/ledger.ts"
import type { State } from "../core/ledger/states.ts"
import { PROGRESS_BUCKET_MS, type PagedItem, type Run } from "../core/ledger/types.ts"
import { parse, requestOf } from "../core/job/template.ts"
import { shown } from "../plugins/api/baseurl.ts"
import { REDACTED, scrub } from "../plugins/api/redact.ts"
import type { Chart, ItemDetail, ItemPage, ItemView, JobView, StepCell } from "./types.ts"

/** The chart has at most about this many slots, however long the run. */
export const CHART_SLOTS = 120
/** A run with no more attempts than this in its life is charted from them, in slots finer than 10 s. */
const FINE_MAX = 20_000
/** Errors per slot are counted up to this: a mark's strength, at a bounded cost. */
const ERROR_CAP = 100
/** Slot lengths the chart picks from (ms): the smallest that keeps it within CHART_SLOTS. */
const SLOTS = [
  0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
].map((s) => s * 1000)
/** How many items one search request reads by default (about 15 ms on SQLite); the page goes on from its cursor. */
export const SEARCH_SCAN = 20_000

/**
 * The chart over the run's own life: from its creation to its end (its last attempt's, when it is not going on;
 * now, while it is). A short run is charted from its attempts, a long or large one from the 10 s progress buckets,
 * with its errors counted per slot up to ERROR_CAP. `counted` are the runs whose attempts it counts: the run's own,
 * or a pipeline run's steps (its own items are never called), summed slot by slot over the pipeline's life.
 */
export async function chartOf(
  db: Ledger,
  run: Run,
  state: string,
  now: number,
  counted: Run[] = [run],
): Promise<Chart> {
  const from = run.created_at
  const going = state === "running" || state === "cancelling"
  let last: number | null = null
  if (!going)
    for (const r of counted) {
      const ended = (await db.reads.summary(r.id, now)).lastEnded
      if (ended !== null) last = Math.max(last ?? ended, ended)
    }
  const to = Math.max(from + 1000, run.finished_at ?? last ?? now)
  const ideal = SLOTS.find((s) => (to - from) / s <= CHART_SLOTS) ?? Math.ceil((to - from) / CHART_SLOTS)
  if (ideal < PROGRESS_BUCKET_MS) {
    const each = []
    for (const r of counted) each.push(await db.reads.endings(r.id, from, ideal, FINE_MAX))
    if (each.every((e) => e !== null)) {
      const ended = summed(each.flat())
      return {
        from,
        to,
        slot_ms: ideal,
        points: ended
          .filter((e) => e.completed || e.failed)
          .map(({ at, completed, failed }) => ({ at, completed, failed })),
        errors: ended.filter((e) => e.errors).map(({ at, errors }) => ({ at, errors })),
        error_cap: null,
      }
    }
  }
  const slot = Math.ceil(Math.max(ideal, PROGRESS_BUCKET_MS) / PROGRESS_BUCKET_MS) * PROGRESS_BUCKET_MS
  // progress buckets are whole 10 s from the epoch: the first slot starts at the one the run was created in
  const origin = Math.floor(from / PROGRESS_BUCKET_MS) * PROGRESS_BUCKET_MS
  const slots = Math.ceil((to - origin) / slot)
  const points = []
  const errors = []
  for (const r of counted) {
    points.push(...(await db.reads.progress(r.id, origin, slot)))
    errors.push(...(await db.reads.errorMarks(r.id, origin, slot, slots, ERROR_CAP)))
  }
  return { from, to, slot_ms: slot, points: summed(points), errors: summed(errors), error_cap: ERROR_CAP }
}

/** Slots of several runs' charts (the same `from` and slot length, so the same `at`), added up: one per `at`, in order. */
function summed<T extends { at: number }>(slots: T[]): T[] {
  const by = new Map<number, T>()
  for (const s of slots) {
    const seen = by.get(s.at)
    if (!seen) {
      by.set(s.at, { ...s })
      continue
    }
    const sums = seen as Record<string, number>
    for (const [k, n] of Object.entries(s)) if (k !== "at") sums[k] = (sums[k] ?? 0) + (n as number)
  }
  return [...by.values()].sort((a, b) => a.at - b.at)
}

/**
 * The job of a run as the page shows it: never a key, and the base URL without credentials. An input's format is
 * the job's, or the one the run read it as.
 */
export async function jobView(db: Ledger, run: Run): Promise<JobView> {
  const { provider, request, limits, batch, output, sources } = run.job
  const reviews = await reviewed(db, run)
  const read = new Map((await db.runs.inputs(run.id)).map((i) => [i.path, i.format]))
  return {
    name: run.job.name,
    provider: provider.name,
    model: provider.model ?? null,
    mode: provider.mode,
    base_url: provider.base_url ? shown(provider.base_url) : null,
    api_key_env: provider.api_key_env ?? null,
    options: unsecret(provider.options ?? {}) as Record<string, unknown>,
    inputs: sources.map((s) => ({
      path: s.path,
      format: s.format ?? read.get(s.path) ?? null,
      id: s.id ?? null,
    })),
    system: request.system ?? null,
    prompt: request.prompt,
    max_tokens: request.max_tokens ?? null,
    temperature: request.temperature ?? null,
    params: request.params ?? {},
    output: output?.name ?? null,
    limits,
    batch: provider.mode === "batch" ? batch : null,
    ...(reviews === null ? {} : { reviews }),
  }
}

/** For a pipeline's review step, the step whose answers it reviews (its last need); else null. */
async function reviewed(db: Ledger, run: Run): Promise<string | null> {
  if (run.parent === null) return null
  const shape = (await db.runs.get(run.parent))?.job.pipeline?.find((s) => s.name === run.step)
  return shape?.kind === "review" ? (shape.needs.at(-1) ?? null) : null
}

/** An option whose name says it holds a secret (`api_key`, `x-api-key`, `token`, `Authorization`, `password`, …). */
const SECRET_NAME = /(^|[-_])(key|apikey|token|secret|password|passwd|authorization|cookie|credentials?)$/i

/**
 * A provider's options as the page shows them. A key belongs in the environment (`api_key_env`), but a plugin's
 * options may still carry one (a header, a URL with credentials): a value under a secret's name, a URL's
 * credentials, a bearer token or an API-key header in a text, and any key this process was given, are taken out.
 */
function unsecret(x: unknown, name = ""): unknown {
  if (SECRET_NAME.test(name)) return REDACTED
  if (typeof x === "string") return scrub(x.replace(/(\/\/)[^/@\s]*@/g, `$1${REDACTED}@`))
  if (Array.isArray(x)) return x.map((y) => unsecret(y))
  if (x !== null && typeof x === "object")
    return Object.fromEntries(Object.entries(x).map(([k, y]) => [k, unsecret(y, k)]))
  return x
}

type Line = Awaited<ReturnType<typeof report.resultLine>>

/** An item of a page as the API gives it: its result line, its id (the cursor) and its attempts. */
export function itemView(line: Line, row: PagedItem): Omit<ItemView, "steps"> {
  return {
    ...line(row),
    item_id: row.id,
    history: row.attempts_list.map((a) => ({
      ...a,
      note: report.attemptNote(a),
      started_at: new Date(a.started_at).toISOString(),
      ended_at: a.ended_at === null ? null : new Date(a.ended_at).toISOString(),
    })),
  }
}

/** What gives a pipeline run's row its items at each step (pipeline.ts `cellsOf`); undefined for any other run. */
export type Cells = ((row: { input: number; key: string }) => Promise<StepCell[]>) | undefined

/** Items of a page as the API gives them, each with its cells at every step when `cells` is given (a pipeline's). */
export async function viewsOf(line: Line, rows: PagedItem[], cells: Cells): Promise<ItemView[]> {
  const out: ItemView[] = []
  for (const row of rows)
    out.push(cells ? { ...itemView(line, row), steps: await cells(row) } : itemView(line, row))
  return out
}

/**
 * A search of a run's items for `q`. The items whose id is `q` come first, on the first page (`after` not given):
 * an index look-up, by the key alone or, with several inputs, as `file:key` the way result lines name it. Then the
 * items whose row, output or error holds `q` (a scan of at most `scan` items from `after`), without those.
 */
export async function search(
  db: Ledger,
  run: Run,
  q: { text: string; state?: State | undefined; after?: number | undefined; limit: number; scan: number },
  cells?: Cells,
): Promise<ItemPage> {
  const line = await report.resultLine(db, run)
  const byId = (await keyed(db, run, q.text)).filter((i) => !q.state || i.state === q.state)
  const known = new Set(byId.map((i) => i.id))
  const found = await db.reads.search(run.id, q)
  const first = q.after === undefined ? await viewsOf(line, byId, cells) : []
  const rest = await viewsOf(
    line,
    found.items.filter((i) => !known.has(i.id)),
    cells,
  )
  return {
    items: [
      ...first.map((i) => ({ ...i, match: "id" as const })),
      ...rest.map((i) => ({ ...i, match: "text" as const })),
    ],
    next: found.next === null ? null : String(found.next),
    scanned: found.scanned,
  }
}

/** The items whose key is `id` in any input, or that `file:key` names as result lines do (report.namespaces). */
async function keyed(db: Ledger, run: Run, id: string): Promise<PagedItem[]> {
  const labels = report.namespaces((await db.runs.inputs(run.id)).map((i) => i.path))
  const prefixed = labels.flatMap((label, input) =>
    label !== undefined && id.startsWith(`${label}:`) ? [{ input, key: id.slice(label.length + 1) }] : [],
  )
  const found = await db.reads.keyed(run.id, id)
  for (const p of prefixed)
    found.push(...(await db.reads.keyed(run.id, p.key)).filter((i) => i.input === p.input))
  return found.filter((item, at) => found.findIndex((i) => i.id === item.id) === at)
}

/** One item opened: its result line and attempts, its input row, and the request spool makes of it; or null. */
export async function itemDetail(db: Ledger, run: Run, id: number): Promise<ItemDetail | null> {
  const row = await db.reads.item(run.id, id)
  if (!row) return null
  const made = requestOf(run.job, parse(run.job.request.prompt), row.data)
  const request =
    "unfilled" in made
      ? made
      : { provider: run.job.provider.name, model: run.job.provider.model ?? null, ...made }
  return { ...itemView(await report.resultLine(db, run), row), input: JSON.parse(row.data), request }
}
