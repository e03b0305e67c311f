/**
 * The flags of `run`, `watch` and `estimate`: one for every job key a flag can set (src/core/job/flags.ts makes the
 * list from the job's schema), with its help text, and how the command line's values become the job's flags.
 */
import type { ArgDef, ArgsDef } from "citty"
import { UsageError } from "../core/base/errors.ts"
import { FLAGS, type Flags } from "../core/job/job.ts"
import type { Kind } from "../core/job/flags.ts"
import { canaryArgs } from "./canary.ts"
import { common } from "./common.ts"

/**
 * The built-in providers and input formats, as src/plugins/registry.ts lists them, for the help texts. Written out so
 * that `--help` does not load the registry (and every plugin with it); test/cli.test.ts checks them against it.
 */
export const PROVIDERS = ["openai", "anthropic", "openai-compatible", "mock", "gemini"] as const
export const FORMATS = ["jsonl", "csv", "tsv", "parquet"] as const
const choices = (names: readonly string[]) => `${names.join(" | ")} | a plugin's`

/** What each flag does, by its job key; the key follows in brackets. A key without a line here shows the key alone. */
const HELP: Record<string, string> = {
  name: "Run name (default: the job file's name)",
  plugins: "Plugin file (plugins = [...]); repeat it for several",
  "source.path": "Input file; repeat it for several inputs, read in order",
  "source.id": "Field with each row's stable id",
  "source.format": `Input format, when the extension does not tell: ${choices(FORMATS)}`,
  "source.max_malformed": 'Malformed rows that make a file refused: a share ("10%") or a number of rows',
  "source.delimiter": 'CSV delimiter: "," ";" "\\t" (tab) or "|"; default: sniffed from the header line',
  "source.chunk_bytes": "Bytes of input per committed batch",
  "source.max_line_bytes": "The longest line read",
  "source.columns": "Parquet: read only these columns, separated by commas",
  "source.batch_rows": "Parquet: rows read at a time",
  "provider.name": choices(PROVIDERS),
  "provider.model": "Model name",
  "provider.mode":
    "realtime (direct calls), batch (the provider's Batch API) or flex (direct calls in OpenAI's flex tier)",
  "provider.base_url": "Provider base URL",
  "provider.api_key_env": "Variable holding the API key",
  "request.kind": "chat (a prompt, answered with text) or embedding (an input, answered with a vector)",
  "request.input": "Embeddings: the text to embed, a template with {{field}} placeholders",
  "request.dimensions": "Embeddings: the vector's length, for models that can shorten it",
  "request.system": "System prompt",
  "request.prompt": "Prompt template with {{field}} placeholders",
  "request.max_tokens": "Longest answer, in tokens",
  "request.temperature": "Sampling temperature, 0 to 2",
  "request.cache": 'The provider\'s prompt cache: "auto", "off", "5m" or "1h" (README, "Paying less")',
  "request.prime": "Batch mode, Anthropic: prime the prompt cache before each batch (--no-prime: never)",
  "limits.concurrency": "Parallel calls",
  "limits.rpm": "Requests per minute (0: learned from the provider's headers)",
  "limits.tpm": "Tokens per minute (0: learned from the provider's headers)",
  "limits.max_attempts": "Attempts per item",
  "limits.timeout_s": "Per-request timeout in seconds",
  "limits.grace_s": "Seconds in-flight calls get after Ctrl+C",
  "limits.retry_base_s": "First backoff in seconds",
  "limits.retry_cap_s": "Longest backoff in seconds",
  "limits.tail_realtime": "Batch mode: finish the last N items with direct calls",
  "limits.max_cost_usd": "Spend cap in USD; raise it to resume",
  "batch.batch_size": "Requests per batch, at most",
  "batch.flush_s": "Seconds a batch that is not full waits for more items",
  "batch.poll_s": "First wait between two looks at a batch, in seconds",
  "batch.poll_max_s": "Longest wait between two looks at a batch, in seconds",
  "batch.max_live": "Most batches at the provider at once (0: no limit)",
  "batch.keep_raw": "Keep raw batch output files once applied (--no-keep-raw deletes them)",
  "batch.download_tries": "Downloads of a batch's results that may fail verification",
  "pricing.input": "USD per million input tokens",
  "pricing.output": "USD per million output tokens",
  "pricing.cached_input": "USD per million cached input tokens",
  "pricing.batch_discount": "Share of the price a batch takes off (0.5: half)",
  "pricing.cache_write": "USD per million tokens written to the prompt cache (default: input)",
  "pricing.cache_write_1h": "USD per million tokens written to the 1-hour prompt cache",
  "pricing.flex_discount": "Share of the price the flex tier takes off (default: batch_discount)",
  "output.schema": "JSON Schema file for structured output",
  "output.name": "The schema's name, as the provider sees it",
  "store.url": common.store.description,
  "cache.enabled": "Use the response cache (--no-cache: neither read nor write it)",
  "cache.ttl": 'Serve cached answers no older than this: "30d", "12h" (default: any age)',
  "cache.refresh": "Serve nothing from the cache, but write every new answer to it",
}

/**
 * The job's flags on these commands. `--canary` is run's own (src/cli/canary.ts): it asks for a canary outright,
 * where `[limits] canary` starts one only on a run that has sent nothing; watch sends none.
 */
const JOB_FLAGS = FLAGS.filter((f) => !(f.name in canaryArgs))

/** What `--help` shows a flag's value as: `--rpm=<n>` (citty's default, the key's name, made the column too wide). */
const HINTS: Record<Kind, string> = {
  text: "text",
  number: "n",
  switch: "",
  count: "n|n%",
  paths: "file",
  names: "a,b",
}
const FILES = new Set(["output.schema"])
const URLS = new Set(["store.url"])

const argOf = (f: (typeof FLAGS)[number]): ArgDef => ({
  type: f.kind === "switch" ? "boolean" : "string",
  description: HELP[f.key] ? `${HELP[f.key]} (${f.key})` : f.key,
  ...(f.kind !== "switch" && {
    valueHint: FILES.has(f.key) ? "file" : URLS.has(f.key) ? "url" : HINTS[f.kind],
  }),
})

/** The common flags but `--store`, which is a job key here (`[store] url`) and comes with the others. */
const { store: _store, ...others } = common

/** `run`'s flags (and, without new-run and reingest, estimate's and watch's). */
export const runArgs = {
  job: { type: "positional", required: false, description: "The job file (TOML)" },
  ...Object.fromEntries(JOB_FLAGS.map((f) => [f.name, argOf(f)])),
  "new-run": { type: "boolean", description: "Start a fresh run even if one of this name exists" },
  reingest: { type: "boolean", description: "Read the inputs again from the start (after they changed)" },
  "rerun-from": {
    type: "string",
    description: "A pipeline's step to run again for every row, with the steps after it that reach it",
    valueHint: "STEP",
  },
  ...others,
} as const satisfies ArgsDef

/** Every value of a flag given several times (`--input a --input b`, or `--input=a`), in order. */
function repeated(rawArgs: string[], name: string): string[] | undefined {
  const values: string[] = []
  for (let i = 0; i < rawArgs.length; i++) {
    const arg = rawArgs[i] as string
    if (arg === "--") break
    if (arg.startsWith(`--${name}=`)) values.push(arg.slice(name.length + 3))
    else if (arg === `--${name}` && i + 1 < rawArgs.length) values.push(rawArgs[++i] as string)
  }
  return values.length ? values : undefined
}

/** The job keys given as flags (shared by run, watch and estimate); a flag given twice takes its last value. */
export function jobFlags(args: Record<string, unknown>, rawArgs: string[]): Flags {
  const out: Flags = {}
  for (const f of JOB_FLAGS) {
    const value = args[f.name] as string | string[] | boolean | undefined
    out[f.name] = f.kind === "paths" ? repeated(rawArgs, f.name) : Array.isArray(value) ? value.at(-1) : value
  }
  return out
}

/**
 * `spool run` (or watch, estimate) with neither a job file nor `--input`/`--prompt`: a newcomer's first try. It is
 * told how to start rather than shown every key the empty job lacks.
 */
export function mustHaveJob(command: string, args: Record<string, unknown>): void {
  if (args.job !== undefined || args.input !== undefined || args.prompt !== undefined) return
  throw new UsageError(
    `nothing to ${command}: give a job file, or the job as flags`,
    [
      `spool ${command} job.toml`,
      `  spool ${command} --input FILE --prompt "Label: {{field}}" --provider openai --model gpt-4.1-mini`,
      "  A job file to start from: examples/quickstart/job.toml in spool's source (the offline mock provider, no key).",
      `  Every flag: spool ${command} --help`,
    ].join("\n"),
  )
}
