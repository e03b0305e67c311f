/** Reads a run's inputs into the ledger, a checkpointed batch at a time (DESIGN §4 rule 5). */
import { JobError } from "./errors.ts"
import * as registry from "../plugins/registry.ts"
import { Store, type Run } from "./store.ts"
import * as template from "./template.ts"
import type { Job } from "./job.ts"

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
  job: Job,
  renew: () => void,
  signal?: AbortSignal,
  onBatch?: (added: number) => void,
): Promise<Ingested> {
  let rows = 0
  let problems = 0
  let last = Date.now()
  for (const input of store.inputs(run.id)) {
    const source = registry.source(input.path, input.format)
    const options = { ...registry.options(source.options, {}, "source"), id: job.source.id }
    const batches = source.read(input.path, options, Store.checkpoint(input), signal)
    for await (const batch of batches) {
      const added = store.ingest(run.id, input, batch, false)
      rows += added.added
      problems += batch.problems.length + added.duplicates
      onBatch?.(added.added)
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
 * Catches, before a run is created, a placeholder that no row could fill. Reads only until every placeholder
 * has been seen once (usually the first row); a placeholder absent from every row is reported with the
 * fields the rows do have.
 */
export async function preflight(job: Job, prompt: template.Template): Promise<void> {
  if (prompt.fields.length === 0) return
  const unseen = new Set(prompt.fields)
  const fields = new Set<string>()
  const source = registry.source(job.source.path, job.source.format)
  let any = false
  const options = { ...registry.options(source.options, {}, "source"), id: job.source.id }
  for await (const batch of source.read(job.source.path, options, undefined)) {
    for (const row of batch.rows) {
      any = true
      if (fields.size < 50) for (const k of Object.keys(row.data)) fields.add(k)
      for (const field of unseen)
        if (template.missing({ ...prompt, fields: [field] }, row.data).length === 0) unseen.delete(field)
      if (unseen.size === 0) return
    }
  }
  if (!any) return
  const names = [...unseen].map((f) => `{{${f}}}`).join(", ")
  throw new JobError(
    `request.prompt: ${names} ${unseen.size > 1 ? "are" : "is"} in no row of ${job.source.path}`,
    [],
    `The rows have the fields: ${[...fields].join(", ") || "(none)"}. Fix the prompt or the input.`,
  )
}
