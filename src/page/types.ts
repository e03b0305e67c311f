/** What the status page draws and its JSON API answers with. */
import type { ResultLine, RunLine, StatusView } from "../core/report/report.ts"
import type { PipelineView } from "../core/report/pipeline.ts"
import type { AttemptRow } from "../core/ledger/types.ts"
import type { State } from "../core/ledger/states.ts"
import type { Job, StepShape } from "../core/job/job.ts"
import type { Request } from "../plugins/api/define.ts"

/** A run as the list at the top of the page shows it. */
export interface RunRow extends RunLine {
  rate_per_s: number
  eta_s: number | null
  /** A pipeline step's rows that it did not run (its `when` false, or a step it needs not completed): done too. */
  skipped: number
  /** A pipeline run's: its steps' spend together. */
  spend_usd: number | null
  /** A pipeline step's run: the pipeline run it belongs to, and its step's name; both null for any other run. */
  parent: number | null
  step: string | null
  /** A pipeline run (docs/PIPELINES.md): its steps' names, and how many of its rows wait for review; else null. */
  pipeline: { steps: string[]; review: number } | null
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
  /**
   * A pipeline run's steps, each with its run and counts (report/pipeline.ts); null for any other run. Its steps'
   * prompt cache and priming are drawn when given.
   */
  pipeline:
    | (Omit<PipelineView, "run" | "prompt_cache" | "priming"> &
        Partial<Pick<PipelineView, "prompt_cache" | "priming">>)
    | null
  /** A pipeline step's run: which step of which pipeline run it is; null for any other run. */
  step: StepOf | null
}

/** What a step's run is: its step's shape, and the pipeline run it belongs to. */
export interface StepOf extends StepShape {
  parent: number
  parent_name: string
}

/**
 * A row's item at one step, as a pipeline run's item list shows it beside the others: null `item_id` and `state` when
 * the row has not reached the step yet.
 */
export interface StepCell {
  step: string
  run: number
  item_id: number | null
  state: State | null
  output: unknown
  error: { class: string | null; message: string } | null
}

/** A row of a pipeline run at each of its steps (`GET /api/runs/:id/items/:item/steps`), in the job's order. */
export interface RowSteps {
  /** The row: its id as result lines name it, its ledger id, where it was read and the input row itself. */
  row: { id: string; item_id: number; source: ResultLine["source"]; input: unknown }
  /** Per step: its shape, its run, and the row's item there (with its attempts), or null when not reached. */
  steps: (StepShape & { run: number; run_name: string; item: ItemView | null })[]
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
  /** A pipeline run's row: its item at each step, side by side (pipeline order). */
  steps?: StepCell[]
}

/** A page of items, or of a search's finds: `next` is where the next one starts, or null at the run's end. */
export interface ItemPage {
  items: ItemView[]
  next: string | null
  /** A search only: how many items this request read (at most SEARCH_SCAN). */
  scanned?: number
}

/** One item opened: its result line, its input row and the request spool makes of it. */
export interface ItemDetail extends Omit<ItemView, "steps"> {
  /** The input row as the source read it. */
  input: unknown
  /** The provider-neutral request (the job's request, the prompt rendered over the row), or why the row cannot fill it. */
  request: (Request & { provider: string; model: string | null }) | { unfilled: string }
  /** A pipeline run's row: its items at every step (the row of a step's item opened: `step`). */
  steps?: RowSteps["steps"]
  /** An item of a pipeline step's run: the step, and the row it belongs to in the pipeline run (its item id there). */
  step?: StepOf & { row_item: number | null }
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
  /** A pipeline's review step only: the step whose answers it reviews (the job shown is that step's; it calls no model). */
  reviews?: string
}
