/** Reads a run's inputs into the ledger, a checkpointed batch at a time (DESIGN §4 rule 5). */
import { existsSync } from "node:fs"
import { JobError, SourceError } from "./errors.ts"
import * as log from "./log.ts"
import * as registry from "../plugins/registry.ts"
import { Store, type Run } from "./store.ts"
import * as template from "./template.ts"
import type { Job } from "./job.ts"
import type { Source, SourceCommon } from "../plugins/define.ts"

/** An input with its source resolved and its options checked. */
export interface Planned {
  path: string
  /** Where it is in the job ("source", "sources.1"), for messages. */
  at: string
  source: Source
  options: Record<string, unknown> & SourceCommon
}

/** Resolves every input's source and checks its options and its existence; throws before anything is written. */
export function plan(job: Job): Planned[] {
  const problems: string[] = []
  const planned: Planned[] = []
  for (const input of job.sources) {
    const source = registry.source(input.path, input.format, input.at)
    try {
      const options = registry.options(source.options, input.options, input.at) as Record<string, unknown>
      planned.push({ path: input.path, at: input.at, source, options: { ...options, id: input.id } })
    } catch (err) {
      if (!(err instanceof JobError)) throw err
      problems.push(...err.problems)
    }
  }
  if (problems.length)
    throw new JobError("the job is not valid", problems, "Fix the keys listed above; nothing was run.")
  for (const p of planned) {
    if (!existsSync(p.path))
      throw new SourceError(
        `the input ${p.path} does not exist`,
        `Check ${p.at}.path (relative to the job file).`,
      )
  }
  const seen = new Set<string>()
  for (const p of planned) {
    if (seen.has(p.path))
      throw new JobError(`${p.at}.path: ${p.path} is given twice`, [], "List each input once.")
    seen.add(p.path)
  }
  return planned
}

export interface Ingested {
  rows: number
  problems: number
}

/**
 * Streams every input from its checkpoint to its end. Rows appended since the last run are picked up; a
 * changed prefix is refused by the source. Returns what this call added.
 */
export async function ingest(
  store: Store,
  run: Run,
  inputs: Planned[],
  renew: () => void,
  signal?: AbortSignal,
  onBatch?: (added: number) => void,
): Promise<Ingested> {
  let rows = 0
  let problems = 0
  let last = Date.now()
  for (const input of store.inputs(run.id)) {
    const planned = inputs[input.idx]
    if (!planned || planned.path !== input.path) throw new Error(`input ${input.idx} is not ${input.path}`)
    const batches = planned.source.read(input.path, planned.options, Store.checkpoint(input), signal)
    for await (const batch of batches) {
      for (const warning of batch.warnings ?? []) log.warn(warning, { run: run.name, input: input.path })
      const added = store.ingest(run.id, input, batch, false)
      rows += added.added
      problems += batch.problems.length + added.duplicates
      onBatch?.(added.added)
      // the rows just stored are garbage now: a hint to collect keeps peak memory flat however long the input
      Bun.gc(false)
      if (Date.now() - last > 5_000) {
        renew()
        last = Date.now()
      }
      if (signal?.aborted) return { rows, problems }
    }
  }
  store.markIngested(run.id)
  return { rows, problems }
}

/**
 * Checks, before a resumed run makes any call, that the part of each input already read is unchanged: a source
 * refuses a changed prefix (SourceChangedError) when it is opened at its checkpoint.
 */
export async function verify(store: Store, run: Run, inputs: Planned[]): Promise<void> {
  for (const input of store.inputs(run.id)) {
    const checkpoint = Store.checkpoint(input)
    const planned = inputs[input.idx]
    if (!checkpoint || !planned) continue
    const batches = planned.source.read(input.path, planned.options, checkpoint)[Symbol.asyncIterator]()
    await batches.next()
    await batches.return?.(undefined)
  }
}

/**
 * Catches, before a run is created, an input that cannot be read and a placeholder that no row could fill.
 * Reads each input only until every placeholder has been seen once (usually its first batch); a placeholder
 * absent from every row is reported with the fields the rows do have.
 */
export async function preflight(inputs: Planned[], prompt: template.Template): Promise<void> {
  const unseen = new Set(prompt.fields)
  const fields = new Set<string>()
  let any = false
  for (const input of inputs) {
    // every input is opened once, so an unreadable one stops the run before it is created
    for await (const batch of input.source.read(input.path, input.options, undefined)) {
      for (const row of batch.rows) {
        any = true
        if (fields.size < 50) for (const k of Object.keys(row.data)) fields.add(k)
        for (const field of unseen)
          if (template.missing({ ...prompt, fields: [field] }, row.data).length === 0) unseen.delete(field)
        if (unseen.size === 0) break
      }
      if (unseen.size === 0) break
    }
  }
  if (!any || unseen.size === 0) return
  const names = [...unseen].map((f) => `{{${f}}}`).join(", ")
  const files = inputs.map((i) => i.path).join(", ")
  throw new JobError(
    `request.prompt: ${names} ${unseen.size > 1 ? "are" : "is"} in no row of ${files}`,
    [],
    `The rows have the fields: ${[...fields].join(", ") || "(none)"}. Fix the prompt or the input.`,
  )
}
