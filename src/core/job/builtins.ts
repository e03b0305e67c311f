/**
 * What the job loader knows of the built-in sources and providers before any is loaded (job.ts): their option keys,
 * so that a misspelt key is found with the job's other problems.
 */
import * as v from "valibot"

/**
 * The built-in sources: their formats, file endings and option keys, so that a job's unknown keys are found when
 * it is loaded, before the sources or any plugin are (test/core/job.test.ts holds this list to the registry's).
 */
export const BUILTIN_SOURCES: { name: string; extensions: string[]; keys: string[] }[] = [
  { name: "jsonl", extensions: [".jsonl", ".ndjson"], keys: ["chunk_bytes", "max_line_bytes"] },
  { name: "csv", extensions: [".csv"], keys: ["delimiter", "chunk_bytes", "max_line_bytes"] },
  { name: "tsv", extensions: [".tsv", ".tab"], keys: ["delimiter", "chunk_bytes", "max_line_bytes"] },
  { name: "parquet", extensions: [".parquet"], keys: ["columns", "batch_rows"] },
]

/**
 * The built-in sources' options, as flags give them (`--delimiter`, `--columns`): test/core/job/flags.test.ts holds
 * them to the sources' own schemas.
 */
export const SOURCE_OPTIONS = {
  delimiter: v.optional(v.string()),
  chunk_bytes: v.optional(v.number()),
  max_line_bytes: v.optional(v.number()),
  columns: v.optional(v.array(v.string())),
  batch_rows: v.optional(v.number()),
}

/**
 * The built-in providers: whether they need a model, and their option keys, so that a job's missing model and
 * misspelt options are listed with its other problems (test/core/job/job.test.ts holds this list to the registry's).
 */
export const BUILTIN_PROVIDERS: { name: string; model: boolean; keys: string[] }[] = [
  { name: "openai", model: true, keys: ["endpoint"] },
  { name: "anthropic", model: true, keys: [] },
  { name: "openai-compatible", model: true, keys: ["batch"] },
  { name: "mock", model: false, keys: ["latency_ms", "reply"] },
  { name: "gemini", model: true, keys: [] },
]
