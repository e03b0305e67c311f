/** The job: a TOML file and flags, merged and validated before anything is written. */
import * as v from "valibot"
import { existsSync, readFileSync } from "node:fs"
import { basename, dirname, extname, resolve } from "node:path"
import { JobError } from "../../plugins/api/errors.ts"
import * as flags from "./flags.ts"
import { StepShapeSchema, stepsOf, type Step, type StepShape } from "./steps.ts"
import { BUILTIN_PROVIDERS, BUILTIN_SOURCES, SOURCE_OPTIONS } from "./builtins.ts"
import { readToml } from "./toml.ts"
import { distance } from "./pricing.ts"
import { DURATION, DURATION_TEXT } from "./duration.ts"
import { kindProblems } from "./kind.ts"
import { PricingSchema, RequestSchema } from "./request.ts"
import { int, seconds, strict, text } from "./valid.ts"
export { loadDotenv } from "./dotenv.ts"
export type { StepShape } from "./steps.ts"
export { BUILTIN_PROVIDERS, BUILTIN_SOURCES } from "./builtins.ts"

/** A share of a file's rows ("10%") or a number of them. */
const MALFORMED = /^(100(\.0+)?|[0-9]{1,2}(\.[0-9]+)?)%$/
const MALFORMED_MESSAGE = 'expected a share of the rows such as "10%", or a number of rows such as 50'

/** `path`, `id`, `format` and `max_malformed`; any other key is an option of the source, checked against its schema. */
const SourceSchema = v.objectWithRest(
  {
    path: text("the input file, relative to the job file"),
    id: v.optional(text("the field that holds each row's stable id")),
    format: v.optional(text("a source name: jsonl, csv, tsv, parquet, or a plugin's")),
    /** How many malformed rows make a file refused: a share of its rows ("10%") or a number (0: none). */
    max_malformed: v.optional(
      v.union(
        [
          v.pipe(v.string(), v.regex(MALFORMED, MALFORMED_MESSAGE)),
          v.pipe(v.number(), v.integer(MALFORMED_MESSAGE), v.minValue(0, MALFORMED_MESSAGE)),
        ],
        MALFORMED_MESSAGE,
      ),
    ),
  },
  v.unknown(),
  "expected a table ([source] or [[sources]])",
)
const ProviderSchema = strict(
  {
    name: v.optional(text("openai | anthropic | openai-compatible | mock | a plugin's provider"), "openai"),
    model: v.optional(text("the model name")),
    mode: v.optional(
      v.picklist(
        ["realtime", "batch", "flex"],
        'must be "realtime" (direct calls), "batch" (the provider\'s Batch API) or "flex" (direct calls in the flex tier)',
      ),
      "realtime",
    ),
    base_url: v.optional(v.pipe(v.string(), v.url("must be a URL such as http://127.0.0.1:8080/v1"))),
    api_key_env: v.optional(
      v.pipe(v.string(), v.regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be an environment variable name")),
    ),
    options: v.optional(v.record(v.string(), v.unknown())),
  },
  "[provider]",
)

const LimitsSchema = strict(
  {
    concurrency: v.optional(int(1, 4096), 32),
    /** Requests per minute; 0: learn the limit from the provider's rate-limit headers. */
    rpm: v.optional(int(0, 100_000_000), 0),
    /** Tokens per minute (input estimate plus max_tokens); 0: learn it from the provider's headers. */
    tpm: v.optional(int(0, 1_000_000_000_000), 0),
    max_attempts: v.optional(int(1, 100), 5),
    timeout_s: v.optional(seconds(0.001), 120),
    grace_s: v.optional(seconds(0), 10),
    retry_base_s: v.optional(seconds(0), 1),
    retry_cap_s: v.optional(seconds(0), 60),
    /** Batch mode: when no more than this many items are left to do, finish them with direct calls (0: never). */
    tail_realtime: v.optional(int(0, 1_000_000_000), 0),
    /** Stop claiming new work before spend (plus what is in flight) would pass this many USD. */
    max_cost_usd: v.optional(v.pipe(v.number("expected a number of US dollars"), v.minValue(0))),
    /** A new run first sends this many items as direct calls, reports on them and stops (0: none; README "Canary"). */
    canary: v.optional(int(0, 1_000_000_000)),
  },
  "[limits]",
)

/** Batch mode: how batches are packed, how often they are polled, what is kept. */
const BatchSchema = strict(
  {
    /** Requests per batch, at most; the provider's own limit (50,000 OpenAI, 100,000 Anthropic) always holds. */
    batch_size: v.optional(int(1, 100_000)),
    /** While inputs are still being read, a batch that is not full is sent once its first item has waited this long. */
    flush_s: v.optional(seconds(0), 30),
    /** The first wait between two looks at a batch; it grows while nothing changes, up to poll_max_s. */
    poll_s: v.optional(seconds(0.001), 10),
    poll_max_s: v.optional(seconds(0.001), 300),
    /** At most this many batches at the provider at once (0: no limit beyond the provider's queue). */
    max_live: v.optional(int(0, 100_000), 0),
    /** Keep the raw output and error files under .spool/artifacts after their lines are applied. */
    keep_raw: v.optional(v.boolean("expected true or false"), true),
    /**
     * How many downloads of an ended batch's result files may fail verification (cut short, not JSONL, lines that
     * disagree with the provider's counts) before the batch is held and the run stops with the reason.
     */
    download_tries: v.optional(int(1, 100), 5),
  },
  "[batch]",
)

/** Structured output: a JSON Schema file (relative to the job file) or an inline table. */
const OutputSchema = strict(
  {
    schema: v.union(
      [text("a JSON Schema file, relative to the job file"), v.record(v.string(), v.unknown())],
      "expected a JSON Schema file name or an inline table",
    ),
    name: v.optional(
      v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{1,64}$/, "must be 1–64 letters, digits, _ or -")),
      "output",
    ),
  },
  "[output]",
)

/**
 * The response cache (README, "Cache"): answers by the key of their request, shared by every run of the store. Not
 * part of the fingerprint: turning it off or on, or changing the ttl, never changes a request.
 */
const CacheSchema = strict(
  {
    /** Read answers from the cache and write new ones to it (`--no-cache`: neither). */
    enabled: v.optional(v.boolean("expected true or false"), true),
    /** Answers older than this are not served (and are replaced by the new answer): "30d", "12h"; default: no expiry. */
    ttl: v.optional(v.pipe(v.string(DURATION_TEXT), v.regex(DURATION, DURATION_TEXT))),
    /** Serve nothing from the cache, but write every new answer to it (`--refresh-cache`). */
    refresh: v.optional(v.boolean("expected true or false"), false),
  },
  "[cache]",
)

/**
 * Where the ledger lives: a PostgreSQL server that many workers share (README, "Options"). Without it, SPOOL_STORE,
 * else the SQLite store under --home. It is the worker's, not the run's: `load` hands it back beside the job, never in
 * it, so a password in the URL is never stored with the run.
 */
const StoreSchema = strict(
  {
    url: v.pipe(
      v.string("expected a string (a postgres:// URL)"),
      v.regex(/^postgres(ql)?:\/\//i, "must be a postgres:// URL such as postgres://user@host:5432/db"),
    ),
  },
  "[store]",
)

export const JobSchema = strict(
  {
    name: v.pipe(
      v.string("expected a string"),
      v.regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/, "must be letters, digits, dot, dash or underscore"),
    ),
    plugins: v.optional(
      v.array(text("a plugin file, relative to the job file"), "expected a list of plugin files"),
    ),
    source: v.optional(SourceSchema),
    sources: v.optional(
      v.pipe(
        v.array(SourceSchema, "expected a list of tables ([[sources]])"),
        v.minLength(1, "must list at least one input"),
      ),
    ),
    provider: ProviderSchema,
    request: RequestSchema,
    limits: v.optional(LimitsSchema, {}),
    batch: v.optional(BatchSchema, {}),
    pricing: v.optional(PricingSchema),
    output: v.optional(OutputSchema),
    cache: v.optional(CacheSchema, {}),
    store: v.optional(StoreSchema),
  },
  "the job",
)

type Parsed = v.InferOutput<typeof JobSchema>

/**
 * A job as a run keeps it in the ledger: the JSON of a loaded `Job` (inputs resolved, defaults filled, the output
 * schema read), checked with the job's own tables when it is read back. Keys it does not know are dropped rather
 * than refused, and a job stored before `sources` existed reads as one with none (`shaping` compares it so).
 */
export const StoredJobSchema = v.object({
  ...v.omit(JobSchema, ["source", "sources", "output", "store"]).entries,
  sources: v.optional(
    v.array(
      v.object({
        path: v.string(),
        id: v.optional(v.string()),
        format: v.optional(v.string()),
        options: v.record(v.string(), v.unknown()),
        at: v.string(),
        max_malformed: v.optional(v.union([v.string(), v.number()])),
      }),
    ),
    [],
  ),
  output: v.optional(v.object({ name: v.string(), schema: v.record(v.string(), v.unknown()) })),
  request: v.strictObject({ ...RequestSchema.entries, prompt: v.string() }),
  pipeline: v.optional(v.array(StepShapeSchema)),
})

/** One input of a run, as the job gives it. */
export interface Input {
  /** Absolute path. */
  path: string
  id?: string | undefined
  format?: string | undefined
  /** The source's own options (the table's other keys), checked against the source's schema. */
  options: Record<string, unknown>
  /** How many malformed rows make the file refused (ingest.ts `tolerance`); outside the fingerprint, so it can change. */
  max_malformed?: string | number | undefined
  /** Where it came from in the job, for error messages: "source" or "sources.2". */
  at: string
}

/** A validated job: `[source]` and `[[sources]]` both become `sources`, in the order given. */
export type Job = Omit<Parsed, "source" | "sources" | "output" | "store" | "request"> & {
  /** An embedding job's `prompt` is its `input` (kind.ts), so that every renderer of the prompt renders the input. */
  request: Parsed["request"] & { prompt: string }
  sources: Input[]
  /** The schema read and parsed, whether the job named a file or gave it inline. */
  output?: { name: string; schema: Record<string, unknown> } | undefined
  /** A pipeline run's steps, in order (docs/PIPELINES.md); each step's own job is its run's. */
  pipeline?: StepShape[] | undefined
}

/**
 * Flags by name (`FLAGS`), each overriding the file's value: `{ input: ["a.jsonl"], "max-tokens": "20" }`. Each
 * `input` is an input, in order, and they replace the file's inputs.
 */
export type Flags = flags.Given

export interface Loaded {
  job: Job
  /** The job file, when there is one. */
  file: string | undefined
  /** `[store] url` (or `--store`): the ledger's PostgreSQL URL, kept out of the job so that it is never stored. */
  store: string | undefined
  /** A pipeline's steps (`[[step]]` tables), checked; undefined for a one-step job (docs/PIPELINES.md). */
  steps?: Step<Job>[] | undefined
}

type Table = Record<string, unknown>

/** Reads the job file (if any), lays the flags over it, resolves paths, and validates the whole. */
export function load(file: string | undefined, given: Flags, cwd = process.cwd()): Loaded {
  const path = file ? resolve(cwd, file) : undefined
  const raw: Table = path ? readToml(path) : {}
  const base = path ? dirname(path) : cwd
  const table = (key: string): Table => {
    const value = raw[key]
    if (value === undefined) return (raw[key] = {}) as Table
    return value as Table
  }
  // a name that is no flag is a caller's slip (a flag is `max-tokens`, not `maxTokens`): never ignore it quietly
  for (const name of Object.keys(given))
    if (!FLAGS.some((f) => f.name === name)) throw new Error(`jobs.load: no flag is named "${name}"`)
  table("provider")
  table("request")
  for (const flag of FLAGS) {
    const value = flags.valueOf(flag, given, cwd)
    if (value === undefined) continue
    const [at, key] = flag.key.includes(".") ? (flag.key.split(".") as [string, string]) : ["", flag.key]
    if (flag.key === "source.path") {
      if (!(value as string[]).length) continue
      // the file's single [source] lends its other keys (id, format, options) to every input given
      const template = raw.sources === undefined ? { ...table("source") } : {}
      delete raw.source
      raw.sources = (value as string[]).map((path) => ({ ...template, path }))
    } else if (at === "source" && Array.isArray(raw.sources))
      for (const s of raw.sources as Table[]) s[key] = value
    else (at ? table(at) : raw)[key] = value
  }
  const list = Array.isArray(raw.sources) ? (raw.sources as unknown[]) : [raw.source]
  for (const s of list) {
    if (s && typeof s === "object" && typeof (s as Table).path === "string")
      (s as Table).path = resolve(base, (s as Table).path as string)
  }
  if (Array.isArray(raw.plugins))
    raw.plugins = raw.plugins.map((p: unknown) => (typeof p === "string" ? resolve(base, p) : p))
  if (raw.name === undefined) raw.name = defaultName(path, (list[0] as Table | undefined)?.path)
  const steps = raw.step
  delete raw.step
  if (steps === undefined) return validated(raw, path, base)
  // [store] is the top level's alone (a step does not set it): any valid step gives it
  let store: string | undefined
  const checked = stepsOf(
    steps,
    raw,
    (r) => {
      const one = validated(r, path, base)
      store = one.store
      return one.job
    },
    path ?? "the flags",
  )
  // the pipeline run's own job: its first step's (a review comes after a model step), which reads the rows
  const first = checked.find((s) => s.job !== undefined)!.job!
  return { job: first, file: path, store, steps: checked }
}

/** Validates a job's raw tables, flags laid over them: the job, or a JobError listing every problem. */
function validated(raw: Table, path: string | undefined, base: string): Loaded {
  const invalid = (problems: string[]) =>
    new JobError(
      `${path ?? "the flags"}: the job is not valid`,
      problems,
      "Fix the keys listed above; nothing was run.",
    )
  // `[provider.batch]` (issue 19's spelling) is `[provider.options.batch]`: openai-compatible's batch profile
  const p = raw.provider as Table | undefined
  if (p?.batch !== undefined && (p.options as Table | undefined)?.batch === undefined) {
    p.options = { ...(p.options as Table | undefined), batch: p.batch }
    delete p.batch
  }
  const parsed = v.safeParse(JobSchema, raw)
  const problems = problemsOf(raw, parsed)
  if (!parsed.success || problems.length) throw invalid(problems)
  const { source, sources, ...rest } = parsed.output
  const inputs = (sources ?? [source!]).map(({ path, id, format, max_malformed, ...options }, i): Input => ({
    path,
    id,
    format,
    options,
    at: sources ? `sources.${i}` : "source",
    ...(max_malformed !== undefined && { max_malformed }),
  }))
  const { output, store, request, ...others } = rest
  return {
    job: {
      ...others,
      request: { ...request, prompt: (request.prompt ?? request.input)! },
      sources: inputs,
      output: output && outputOf(output, base),
    },
    file: path,
    store: store?.url,
  }
}

/** The strict tables of a job, by key. */
const TABLES: Record<string, v.ObjectEntries> = {
  provider: ProviderSchema.entries,
  request: RequestSchema.entries,
  limits: LimitsSchema.entries,
  batch: BatchSchema.entries,
  pricing: PricingSchema.entries,
  output: OutputSchema.entries,
  cache: CacheSchema.entries,
  store: StoreSchema.entries,
}

/** The job's keys that a flag sets (flags.ts), in the order of the schema. */
export const FLAGS: flags.Flag[] = flags.flagsOf({
  "": JobSchema.entries,
  source: { ...SourceSchema.entries, ...SOURCE_OPTIONS },
  ...TABLES,
})

const isTable = (value: unknown): value is Table =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/**
 * The keys a source table may hold: its own (`path`, `id`, …) and its source's options. Undefined when a plugin may
 * be its source (plugins load after the job: the registry checks their options then).
 */
function sourceKeys(table: Table, plugins: boolean): Set<string> | undefined {
  const own = Object.keys(SourceSchema.entries)
  const { format, path } = table
  const ext = typeof path === "string" ? extname(path).toLowerCase() : ""
  const found = BUILTIN_SOURCES.find((s) =>
    typeof format === "string" ? s.name === format : ext !== "" && s.extensions.includes(ext),
  )
  if (found) return new Set([...own, ...found.keys])
  if (plugins) return undefined
  // no plugin to read it, whatever it is: a key that no built-in source takes is unknown
  return new Set([...own, ...BUILTIN_SOURCES.flatMap((s) => s.keys)])
}

/**
 * The key a misspelt one most likely meant, of those valid in its place: the nearest by edits (pricing.ts
 * `distance`), when near enough to be a slip: one edit for every four characters, and at least one.
 */
export function meant(key: string, known: Iterable<string>): string | undefined {
  let best: { name: string; edits: number } | undefined
  for (const name of known) {
    const edits = distance(key, name)
    if (!best || edits < best.edits) best = { name, edits }
  }
  return best && best.edits <= Math.max(1, Math.floor(key.length / 4)) ? best.name : undefined
}

/** The built-in provider a job names (openai when it names none), or undefined for a plugin's. */
function builtinProvider(raw: Table): (typeof BUILTIN_PROVIDERS)[number] | undefined {
  const name = isTable(raw.provider) && raw.provider.name !== undefined ? raw.provider.name : "openai"
  return BUILTIN_PROVIDERS.find((p) => p.name === name)
}

/**
 * Every key of the raw job that nothing reads, as `path: unknown key`, with the key it most likely meant, in the
 * order the job gives them.
 */
function unknownKeys(raw: Table): string[] {
  const out: string[] = []
  const report = (table: Table, known: Set<string> | undefined, at: string) => {
    if (!known) return
    for (const key of Object.keys(table)) {
      if (known.has(key)) continue
      const guess = meant(key, known)
      const why = guess ? `unknown key; did you mean "${guess}"?` : "unknown key (check its spelling)"
      out.push(`${at ? `${at}.` : ""}${key}: ${why}`)
    }
  }
  const plugins = Array.isArray(raw.plugins) && raw.plugins.length > 0
  for (const [key, value] of Object.entries(raw)) {
    if (!(key in JobSchema.entries)) {
      report({ [key]: value }, new Set(Object.keys(JobSchema.entries)), "")
      continue
    }
    const entries = TABLES[key]
    if (entries && isTable(value)) report(value, new Set(Object.keys(entries)), key)
    const builtin = key === "provider" ? builtinProvider(raw) : undefined
    if (builtin && isTable(value) && isTable(value.options))
      report(value.options, new Set(builtin.keys), "provider.options")
    if (key === "source" && isTable(value)) report(value, sourceKeys(value, plugins), "source")
    if (key === "sources" && Array.isArray(value))
      for (const [i, s] of value.entries()) if (isTable(s)) report(s, sourceKeys(s, plugins), `sources.${i}`)
  }
  return out
}

function outputOf(output: NonNullable<Parsed["output"]>, base: string): NonNullable<Job["output"]> {
  if (typeof output.schema !== "string") return { name: output.name, schema: output.schema }
  const file = resolve(base, output.schema)
  let text: string
  try {
    text = readFileSync(file, "utf8")
  } catch {
    throw new JobError(
      "the job is not valid",
      [`output.schema: cannot read ${file}`],
      "The path is relative to the job file.",
    )
  }
  try {
    const schema: unknown = JSON.parse(text)
    if (schema === null || typeof schema !== "object" || Array.isArray(schema))
      throw new Error("not a JSON object")
    return { name: output.name, schema: schema as Record<string, unknown> }
  } catch (err) {
    throw new JobError("the job is not valid", [
      `output.schema: ${file} is not a JSON Schema: ${(err as Error).message}`,
    ])
  }
}

/** The characters that make a source path a glob (\`inbox/*.jsonl\`); see ingest.ts \`isGlob\`. */
export const GLOB_CHARS = /[*?[{]/

function defaultName(path: string | undefined, input: unknown): string | undefined {
  let from = path ?? (typeof input === "string" ? input : undefined)
  if (!from) return undefined
  // a glob (`inbox/*.jsonl`) names its run after the folder it scans
  const parts = from.split("/")
  const glob = parts.findIndex((p) => GLOB_CHARS.test(p))
  if (!path && glob >= 0) from = basename(resolve(parts.slice(0, glob).join("/") || "."))
  return basename(from, extname(from)).replace(/[^A-Za-z0-9._-]/g, "-") || undefined
}

/**
 * Every problem of a job, at once: the schema's, what it cannot say (a missing model or input, both kinds of input),
 * in the schema's order, then every unknown key (valibot's strict objects name only their first), each once.
 */
function problemsOf(raw: Table, parsed: v.SafeParseResult<typeof JobSchema>): string[] {
  const noInput = raw.source === undefined && raw.sources === undefined
  const issues = (parsed.success ? [] : parsed.issues.filter((i) => i.expected !== "never").map(describe))
    // with neither a job file nor an input there is no name to take: the input is what is missing
    .filter((p) => !(noInput && p === "name: missing (required)"))
  const more: string[] = []
  // a plugin's provider says whether it needs a model once it is loaded (engine/run.ts checkProvider)
  if (builtinProvider(raw)?.model && isTable(raw.provider) && raw.provider.model === undefined)
    more.push("provider.model: missing (required): the model's name, or --model")
  if (noInput) more.push("source: missing (required): a [source] table with a path, or --input")
  if (raw.source !== undefined && raw.sources !== undefined)
    more.push("source: give either [source] or [[sources]], not both")
  // the kind's problems first: a missing prompt comes before the schema's problems of the keys after it
  return [...inOrder([...kindProblems(raw), ...issues], more), ...unknownKeys(raw)]
}

/** The schema's problems with `more` put among them by their table, in the schema's order. */
function inOrder(issues: string[], more: string[]): string[] {
  const order = Object.keys(JobSchema.entries)
  const rank = (problem: string) => order.indexOf(problem.split(/[.:]/)[0] as string)
  return [...issues, ...more].sort((a, b) => rank(a) - rank(b))
}

function describe(issue: v.BaseIssue<unknown>): string {
  const path = issue.path?.map((p) => String(p.key)).join(".") ?? ""
  const where = path || "(top level)"
  if (issue.input === undefined && issue.kind === "schema") return `${where}: missing (required)`
  return `${where}: ${issue.message}`
}

/**
 * A hash of everything that shapes the requests; a run refuses a job whose fingerprint changed. Limits are
 * left out: changing concurrency between resumes is fine.
 */
export function fingerprint(job: Job): string {
  return new Bun.CryptoHasher("sha256").update(JSON.stringify(shaping(job))).digest("hex")
}

export function shaping(job: Job): Record<string, unknown> {
  return {
    sources: (job.sources ?? []).map((s) => ({
      path: s.path,
      id: s.id ?? null,
      format: s.format ?? null,
      options: s.options,
    })),
    "provider.name": job.provider.name,
    "provider.model": job.provider.model ?? null,
    "provider.options": job.provider.options ?? null,
    "request.system": job.request.system ?? null,
    "request.prompt": job.request.prompt,
    "request.max_tokens": job.request.max_tokens ?? null,
    "request.temperature": job.request.temperature ?? null,
    "request.params": job.request.params ?? null,
    // only when set, so that runs started before structured output existed keep their fingerprint
    ...(job.output && { "output.schema": job.output.schema }),
    // likewise: a batch run's items are in provider batches, which a realtime process would never poll
    ...(job.provider.mode === "batch" && { "provider.mode": "batch" }),
    // and a flex run's spend is priced at the flex tier's prices, which a realtime process would not pay
    ...(job.provider.mode === "flex" && { "provider.mode": "flex" }),
    ...(job.request.kind === "embedding" && {
      "request.kind": "embedding",
      "request.dimensions": job.request.dimensions ?? null,
    }),
  }
}

/** The keys whose values differ between two jobs' shaping parts. */
export function changedKeys(before: Job, after: Job): string[] {
  const a = shaping(before)
  const b = shaping(after)
  return Object.keys(b).filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]))
}
