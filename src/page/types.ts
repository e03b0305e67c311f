/** What the status page draws and its JSON API answers with. */
import type { ResultLine, RunLine, StatusView } from "../core/report/report.ts"
import type { AttemptRow } from "../core/ledger/types.ts"
import type { Job } from "../core/job/job.ts"
import type { Request } from "../plugins/api/define.ts"

/** A run as the list at the top of the page shows it. */
export interface RunRow extends RunLine {
  rate_per_s: number
  eta_s: number | null
  spend_usd: number | null
}

/** The chart of a run: items finished and errors over the run's own life. */
export interface Chart {
  /** What the time axis spans, in ms since the epoch: from the run's creation to its end, or now while it goes. */
  from: number
  to: number
  slot_ms: number
  /** Items finished per slot (completed; failed or needs_review), oldest first; only the slots that have some. */
  points: { at: number; completed: number; failed: number }[]
  /** Failed attempts per slot, retried ones too, each slot counted up to `error_cap` (null: every one). */
  errors: { at: number; errors: number }[]
  error_cap: number | null
}

/** What `GET /api/runs/:id` returns: the status view of `spool status --json`, with its chart. */
export interface RunDetail extends StatusView {
  chart: Chart
}

/** An attempt of an item as the API gives it: times as ISO strings; `note` says why one did not count. */
export type AttemptView = Omit<AttemptRow, "started_at" | "ended_at"> & {
  started_at: string
  ended_at: string | null
  note: string | null
}

/** An item as `GET /api/runs/:id/items` returns it: its result line, with every attempt. */
export interface ItemView extends ResultLine {
  item_id: number
  /** Every attempt, oldest first (report.ts `attemptNote` says why one numbered 0 did not count). */
  history: AttemptView[]
  /** In a search: found by its id (exactly), or by text in its row, output or error. */
  match?: "id" | "text"
}

/** A page of items, or of a search's finds: `next` is where the next one starts, or null at the run's end. */
export interface ItemPage {
  items: ItemView[]
  next: string | null
  /** A search only: how many items this request read (at most SEARCH_SCAN). */
  scanned?: number
}

/** One item opened: its result line, its input row and the request spool makes of it. */
export interface ItemDetail extends ItemView {
  /** The input row as the source read it. */
  input: unknown
  /** The provider-neutral request (the job's request, the prompt rendered over the row), or why the row cannot fill it. */
  request: (Request & { provider: string; model: string | null }) | { unfilled: string }
}

/** A run's job as the page shows it: what it sends and how; never a key (the job keeps only its variable's name). */
export interface JobView {
  name: string
  provider: string
  model: string | null
  mode: string
  /** Without credentials, query or fragment. */
  base_url: string | null
  /** The environment variable the key is read from; null: the provider's own default. */
  api_key_env: string | null
  options: Record<string, unknown>
  inputs: { path: string; format: string | null; id: string | null }[]
  system: string | null
  prompt: string
  max_tokens: number | null
  temperature: number | null
  params: Record<string, unknown>
  /** The output schema's name, or null for free text. */
  output: string | null
  limits: Job["limits"]
  /** Batch mode's settings; null for a realtime job. */
  batch: Job["batch"] | null
}
