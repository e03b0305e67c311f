/** Reads a run's inputs into the ledger, a checkpointed batch at a time (DESIGN §4 rule 5). */
import { existsSync, statSync } from "node:fs"
import { sep } from "node:path"
import { JobError, SourceError } from "../../plugins/api/errors.ts"
import * as log from "../base/log.ts"
import { crashPoint } from "./crash.ts"
import * as registry from "../../plugins/registry.ts"
import type { Asked, Ledger } from "../ledger/ledger.ts"
import type { Input, Run } from "../ledger/types.ts"
import * as template from "../job/template.ts"
import { GLOB_CHARS, type Job } from "../job/job.ts"
import type { Source, SourceBatch, SourceCommon, SourceProblem, SourceRow } from "../../plugins/api/define.ts"

/** An input as the job gives it, its source resolved and its options checked: one file, or a glob of files. */
export interface Spec {
  /** Absolute: a file, or a pattern when `glob` is set. */
  path: string
  /** Where it is in the job ("source", "sources.1"), for messages. */
  at: string
  source: Source
  options: Record<string, unknown> & SourceCommon
  glob: boolean
  /** `[source] max_malformed`: when the file is refused for its malformed rows (see `guard`). */
  max_malformed?: string | number | undefined
}

/** One input file with its source resolved and its options checked. */
export type Planned = Omit<Spec, "glob"> & {
  /** The pattern (absolute) that matched this file, when the job gave a glob. */
  glob?: string | undefined
}

/** A path is a glob when it holds a glob character and is not itself a file (`data[1].csv` stays a file name). */
export function isGlob(path: string): boolean {
  return GLOB_CHARS.test(path) && !existsSync(path)
}

/** Resolves every input's source and checks its options; reads nothing from the disk but the globs' test. */
export function specs(job: Job, follow = false): Spec[] {
  const problems: string[] = []
  const out: Spec[] = []
  for (const input of job.sources) {
    const source = registry.source(input.path, input.format, input.at)
    try {
      const options = registry.options(source.options, input.options, input.at) as Record<string, unknown>
      out.push({
        path: input.path,
        at: input.at,
        source,
        options: { ...options, id: input.id, ...(follow && { follow: true }) },
        glob: isGlob(input.path),
        max_malformed: input.max_malformed,
      })
    } catch (err) {
      if (!(err instanceof JobError)) throw err
      problems.push(...err.problems)
    }
  }
  if (problems.length)
    throw new JobError("the job is not valid", problems, "Fix the keys listed above; nothing was run.")
  return out
}

/** The directory a glob is scanned from (its part before the first glob character), and the rest of it. */
export function globBase(pattern: string): { dir: string; rest: string } {
  const parts = pattern.split(sep)
  const first = parts.findIndex((p) => GLOB_CHARS.test(p))
  return { dir: parts.slice(0, first).join(sep) || sep, rest: parts.slice(first).join("/") }
}

/** The files a glob matches now, sorted by path; none when its directory does not exist (yet). */
export function matches(pattern: string): string[] {
  const { dir, rest } = globBase(pattern)
  if (!existsSync(dir)) return []
  const found = [...new Bun.Glob(rest).scanSync({ cwd: dir, absolute: true, onlyFiles: true })]
  return found.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
}

/**
 * One input per file: a glob becomes the files it matches, sorted by path. A glob matching nothing is an error
 * unless `follow` (`spool watch` waits for files to arrive); a missing file always is.
 */
export function expand(specs: Spec[], follow = false): Planned[] {
  const planned: Planned[] = []
  for (const { glob, ...s } of specs) {
    if (!glob) {
      if (!existsSync(s.path))
        throw new SourceError(
          `the input ${s.path} does not exist`,
          `Check ${s.at}.path (relative to the job file).`,
        )
      planned.push(s)
      continue
    }
    const files = matches(s.path)
    if (files.length === 0 && !follow)
      throw new SourceError(
        `${s.at}.path: ${s.path} matches no file`,
        `Check ${s.at}.path (relative to the job file). \`spool watch\` waits for matching files to arrive.`,
      )
    for (const file of files) planned.push({ ...s, path: file, glob: s.path })
  }
  return planned
}

/**
 * Resolves every input's source, checks its options and its existence, and expands globs (DESIGN §9: `spool watch`
 * passes `follow`, which lets a glob match nothing yet). Throws before anything is written.
 */
export function plan(job: Job, follow = false): Planned[] {
  const planned = expand(specs(job, follow), follow)
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

export interface IngestOptions {
  signal?: AbortSignal | undefined
  /** After each stored batch, with the items it added. */
  onBatch?: ((added: number) => void) | undefined
  /**
   * Follow mode (`spool watch`): the run is never marked ingested, and an input is read only when its size or
   * modification time changed since this map (path → stamp) last saw it, so an idle pass costs one stat a file.
   */
  follow?: Map<string, string> | undefined
  /**
   * The response cache, asked for each source batch's rows before they are stored (engine/cache.ts `Lookup.ask`):
   * what it answers is stored completed. Unless the job turns the cache off.
   */
  ask?: ((rows: SourceRow[]) => Promise<Asked>) | undefined
}

/** What tells a file changed between two passes; undefined when it is gone. */
function stamp(path: string): string | undefined {
  try {
    const s = statSync(path)
    return `${s.ino}:${s.size}:${s.mtimeMs}`
  } catch {
    return undefined
  }
}

/**
 * Streams every input from its checkpoint to its end. Rows appended since the last run are picked up; a
 * changed prefix is refused by the source. An input of the run with no file planned (a glob's match that is
 * gone) is skipped. Returns what this call added.
 */
export async function ingest(
  ledger: Ledger,
  run: Run,
  inputs: Planned[],
  renew: () => Promise<unknown>,
  o: IngestOptions = {},
): Promise<Ingested> {
  const { signal, follow } = o
  const byPath = new Map<string, Planned>()
  for (const p of inputs) if (!byPath.has(p.path)) byPath.set(p.path, p)
  let rows = 0
  let problems = 0
  let last = Date.now()
  for (const input of await ledger.runs.inputs(run.id)) {
    if (signal?.aborted) return { rows, problems }
    const planned = byPath.get(input.path)
    if (!planned) continue
    const before = follow ? stamp(input.path) : undefined
    if (follow && (before === undefined || follow.get(input.path) === before)) continue
    const added = await read(ledger, run, input, planned, o, async () => {
      if (Date.now() - last <= 5_000) return
      await renew()
      last = Date.now()
    })
    rows += added.rows
    problems += added.problems
    if (signal?.aborted) return { rows, problems }
    if (follow && before) follow.set(input.path, before)
  }
  if (!follow) await ledger.ingest.done(run.id)
  return { rows, problems }
}

/** One input from its checkpoint to its end (in follow mode: to its last whole line). */
async function read(
  ledger: Ledger,
  run: Run,
  input: Input,
  planned: Planned,
  o: IngestOptions,
  renew: () => Promise<unknown>,
): Promise<Ingested> {
  const { signal, onBatch, ask } = o
  let rows = 0
  let problems = 0
  const check = guard(planned, input)
  const batches = planned.source.read(input.path, planned.options, input.checkpoint, signal)
  /** A batch read and checked, its rows being asked of the cache, stored once the batch before it is. */
  let ahead: { batch: SourceBatch; asked: Promise<Asked | undefined> } | undefined
  const store = async ({ batch, asked: asking }: NonNullable<typeof ahead>): Promise<void> => {
    // until it has stored (its look-ups, its rows, the lease renewed), a store that fails leaves nothing more to
    // store: a later batch stored past it would move the checkpoint over its rows
    broken = true
    const asked = await asking
    const added = await ledger.ingest.add(run.id, input, batch, false, asked)
    if (asked && asked.hits.size > 0) crashPoint("hits")
    rows += added.added
    problems += batch.problems.length + added.duplicates
    onBatch?.(added.added)
    // the rows just stored are garbage now: a hint to collect keeps peak memory flat however long the input
    Bun.gc(false)
    await renew()
    broken = false
  }
  /** A store failed (or is under way): nothing more is stored, and its error goes up as it is. */
  let broken = false
  try {
    for await (const batch of batches) {
      for (const warning of batch.warnings ?? []) log.warn(warning, { run: run.name, input: input.path })
      // a batch refused (too many malformed rows) throws: the batches before it are stored (below), as its message says
      check.check(batch)
      if (!ask) {
        await store({ batch, asked: Promise.resolve(undefined) })
        if (signal?.aborted) break
        continue
      }
      // with the cache: this batch's rows are asked (by the asker's worker) while the one before is stored
      const asked = batch.rows.length > 0 ? ask(batch.rows) : Promise.resolve(undefined)
      // (awaited by store; should the batch before fail to store first, its error is the one that goes up)
      asked.catch(() => undefined)
      const before = ahead
      ahead = { batch, asked }
      if (before) await store(before)
      if (signal?.aborted) break
    }
  } catch (err) {
    // a source's or a check's error: the batch read before it is stored, as it was before reading ahead
    if (ahead && !broken) await store(ahead).catch(() => undefined)
    throw err
  }
  // the batch read last is stored too, also when the run was stopped: its rows were read and asked
  if (ahead) await store(ahead)
  return { rows, problems }
}

/** A share is judged once this many rows are read: before, only a file whose first rows are all malformed is. */
const JUDGED_AFTER = 1000
/** A file whose first this many rows are all malformed is refused at once (unless max_malformed is "100%"). */
const FIRST = 100

/**
 * Counts a file's rows and malformed rows as its batches are read, and refuses the file (SourceError, exit 2) when
 * so many are malformed that it is evidently not what the job says. `[source] max_malformed` is a share of the rows
 * ("10%", the default, judged once 1,000 rows are read; a file whose first 100 rows are all malformed is refused
 * at once) or a number of rows. `check` refuses the batch that crosses the line before it is stored; `whole`, for a
 * file read to its end before a run is created, refuses one with malformed rows and no good one. `past` is the
 * ledger's input, whose counts go on from its checkpoint.
 */
export function guard(planned: Planned, past?: Input) {
  const limit = planned.max_malformed ?? "10%"
  const share = typeof limit === "string" ? Number(limit.slice(0, -1)) / 100 : undefined
  const resumed = past?.checkpoint ? past : undefined
  let good = resumed?.rows ?? 0
  let bad = resumed ? resumed.problems - resumed.duplicates : 0
  // malformed rows before the first good one, while there is none
  let leading = good === 0 ? bad : -1
  let example: SourceProblem | undefined
  const refuse = (what: string, from: number) =>
    new SourceError(
      `${planned.path}: ${what}, so it does not look like ${planned.source.name} data; the first is line ` +
        `${example!.line}: ${example!.reason}`,
      `Check ${planned.at}.path and ${planned.at}.format. To read it anyway, skipping the malformed rows, raise ` +
        `${planned.at}.max_malformed (now ${JSON.stringify(limit)}; a share such as "50%", or a number of rows). ` +
        `Nothing from line ${from} on was stored.`,
    )
  return {
    check(batch: SourceBatch): void {
      const { problems } = batch
      good += batch.rows.length
      bad += problems.length
      if (problems.length === 0) {
        if (batch.rows.length > 0) leading = -1
        return
      }
      example ??= problems[0]
      const from = Math.min(problems[0]!.line, batch.rows[0]?.line ?? Infinity)
      if (share === undefined) {
        if (bad > (limit as number))
          throw refuse(`${bad} rows are malformed, more than max_malformed allows (${limit})`, from)
        return
      }
      if (share >= 1) return
      if (leading >= 0) {
        const first = batch.rows[0]?.line ?? Infinity
        leading += problems.filter((p) => p.line < first).length
        if (leading >= FIRST) throw refuse(`its first ${FIRST} rows are all malformed`, from)
        if (batch.rows.length > 0) leading = -1
      }
      const total = good + bad
      if (total >= JUDGED_AFTER && bad > share * total) {
        const percent = Math.round((bad / total) * 1000) / 10
        const what = `${bad} of its first ${total} rows are malformed (${percent}%), more than max_malformed allows (${limit})`
        throw refuse(what, from)
      }
    },
    whole(): void {
      if (good > 0 || bad === 0 || (share ?? 0) >= 1 || share === undefined) return
      throw refuse(
        bad === 1 ? "its only row is malformed" : `all ${bad} of its rows are malformed`,
        example!.line,
      )
    },
  }
}

/**
 * Checks, before a resumed run makes any call, that the part of each input already read is unchanged: a source
 * refuses a changed prefix (SourceChangedError) when it is opened at its checkpoint.
 */
export async function verify(ledger: Ledger, run: Run, inputs: Planned[]): Promise<void> {
  const byPath = new Map(inputs.map((p) => [p.path, p]))
  for (const input of await ledger.runs.inputs(run.id)) {
    const checkpoint = input.checkpoint
    const planned = byPath.get(input.path)
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
export async function preflight(
  inputs: Planned[],
  prompt: template.Template,
  /** The job's key the template is: an embedding job's is `request.input`. */
  key = "request.prompt",
): Promise<void> {
  const unseen = new Set(prompt.fields)
  const fields = new Set<string>()
  let any = false
  for (const input of inputs) {
    // every input is opened once, so an unreadable one stops the run before it is created
    const check = guard(input)
    // read on until a row is seen as well: a file with none is read whole, and refused if it is all malformed
    let whole = true
    let rows = false
    for await (const batch of input.source.read(input.path, input.options, undefined)) {
      check.check(batch)
      for (const row of batch.rows) {
        any = true
        rows = true
        if (fields.size < 50) for (const k of Object.keys(row.data)) fields.add(k)
        for (const field of unseen)
          if (template.missing({ ...prompt, fields: [field] }, row.data).length === 0) unseen.delete(field)
        if (unseen.size === 0) break
      }
      if (unseen.size === 0 && rows) {
        whole = false
        break
      }
    }
    if (whole) check.whole()
  }
  if (!any || unseen.size === 0) return
  const names = [...unseen].map((f) => `{{${f}}}`).join(", ")
  const files = inputs.map((i) => i.path).join(", ")
  throw new JobError(
    `${key}: ${names} ${unseen.size > 1 ? "are" : "is"} in no row of ${files}`,
    [],
    `The rows have the fields: ${[...fields].join(", ") || "(none)"}. Fix ${key === "request.input" ? "the input template" : "the prompt"} or the input file.`,
  )
}
