/**
 * The public plugin API, importable as `spool/plugin`. Built-in sources and providers use exactly this.
 *
 * @example
 * import { defineSource } from "spool/plugin"
 * import * as v from "valibot"
 * export default defineSource({
 *   name: "lines",
 *   extensions: [".txt"],
 *   options: v.object({}),
 *   async *read(file, options, checkpoint) { ... },
 * })
 */
import type * as v from "valibot"
import type { ProviderError } from "./errors.ts"
import type { RateInfo } from "./ratelimit.ts"

/** Any valibot object schema; its output type is the options type a plugin receives. */
export type OptionsSchema = v.GenericSchema<Record<string, unknown>, Record<string, unknown>>

/** Opaque, JSON-serialisable resume position of a source. Committed in the same transaction as the items. */
export type Checkpoint = { readonly [key: string]: string | number | boolean | null }

/** One input row. */
export interface SourceRow {
  /** Stable key of the row within its file: the id field's value, or the row number. */
  key: string
  /** 1-based line (or row) number in the file, for lineage and error messages. */
  line: number
  /** The original id value, when the source has an id field. */
  id?: string
  /** The row's fields, as the prompt template sees them. */
  data: Record<string, unknown>
  /** `data` as JSON text, when the source already holds it; saves the ledger a re-serialisation. */
  raw?: string
}

/** A row that could not be read. It is skipped, counted and reported; it never stops a run. */
export interface SourceProblem {
  line: number
  reason: string
  /** The first 200 bytes of the offending row. */
  excerpt: string
}

/** A group of rows and problems, and the checkpoint that is true once they are stored. */
export interface SourceBatch {
  rows: SourceRow[]
  problems: SourceProblem[]
  checkpoint: Checkpoint
  /** Things the user should know that are not row problems (say, a row group too large for memory). Logged. */
  warnings?: string[]
}

/** Options every source receives from the job's `[source]` table, besides its own. */
export interface SourceCommon {
  /** Field holding a stable id; default: the row number. */
  id?: string | undefined
  /**
   * Set by `spool watch`: the file may still be being written. Read only what is complete, and leave the rest
   * for a later read from the checkpoint: a last line (record) with no line end yet is not consumed (the
   * checkpoint stays before it), and a file that cannot be parsed yet (a Parquet file with no footer) yields
   * nothing rather than failing. Without it, the end of the file is the end of the data, as always.
   */
  follow?: boolean | undefined
}

/** Reads one kind of input. Write `read` in method syntax, as an async generator. */
export interface Source<S extends OptionsSchema = OptionsSchema> {
  /** The `format` a job names it by: lowercase letters, digits and dashes; unique among all sources. */
  name: string
  /** File name endings this source reads, with the dot (".jsonl"); chosen by extension when no format is set. */
  extensions: string[]
  /**
   * Its options, given as keys of the job's `[source]` table (beside `path`, `id` and `format`). Keys the schema
   * does not name are refused before a run starts.
   */
  options: S
  /**
   * Streams the file from `checkpoint` (or the start), in a deterministic order, holding only a bounded
   * part of it in memory. A source must refuse (SourceChangedError) a file whose part before the checkpoint
   * changed.
   */
  read(
    file: string,
    options: v.InferOutput<S> & SourceCommon,
    checkpoint: Checkpoint | undefined,
    signal?: AbortSignal,
  ): AsyncIterable<SourceBatch>
}

/** The neutral request every provider maps to its wire format. */
export interface Request {
  system?: string | undefined
  prompt: string
  max_tokens?: number | undefined
  temperature?: number | undefined
  /** Passed through to the provider's request body as they are. */
  params?: Record<string, unknown> | undefined
  /**
   * Structured output: the answer must be JSON valid against this JSON Schema. A provider maps it to its own
   * mechanism (OpenAI `response_format` json_schema, Anthropic a forced tool call) and returns the JSON as `text`.
   */
  schema?: { name: string; schema: Record<string, unknown> } | undefined
  /**
   * Prompt caching (README, "Paying less"): where the request's shared prefix ends. Set by spool when the job's
   * `[request] cache` is not "off". A provider with explicit breakpoints (Anthropic) marks the end of the prefix with
   * `cache_control`; one with automatic caching (OpenAI) sends `key` as its `prompt_cache_key`. Never part of the
   * response cache's key: it does not change the answer.
   */
  cache?: PromptCache | undefined
}

/** Where a request's cacheable prefix ends, and how long the provider should keep it (`Request.cache`). */
export interface PromptCache {
  /**
   * Characters of `prompt` that belong to the shared prefix: 0 when the prefix ends with the system prompt. The
   * prefix is always the whole system prompt followed by `prompt.slice(0, prefix)`.
   */
  prefix: number
  /** Anthropic's `cache_control.ttl`: "5m" (the default one, sent without `ttl`) or "1h". */
  ttl: "5m" | "1h"
  /** A short stable name of the run and prefix (letters, digits, `-`; at most 64 characters): OpenAI's `prompt_cache_key`. */
  key: string
  /** False: the prefix is too short to be cached (below the model's minimum), so no breakpoint is marked. */
  mark: boolean
}

export interface Usage {
  /** Every input token, cached ones included. */
  input_tokens: number
  output_tokens: number
  /** The input tokens served from the provider's prompt cache (billed at the cached-input price), when it says. */
  cached_input_tokens?: number | undefined
  /**
   * The input tokens written to the provider's prompt cache by this request (Anthropic `cache_creation_input_tokens`),
   * billed at the cache-write price; like cached ones, they are part of `input_tokens`. Undefined or 0 when none.
   */
  cache_write_tokens?: number | undefined
}

/** A successful answer. Failures are thrown as `ProviderError`. */
export interface Reply {
  text: string
  usage: Usage
  /**
   * Why the answer ended, when the provider says: "length" (cut at max_tokens: never taken as complete) or
   * "refusal" (the model declined; `text` holds its explanation). Undefined or "stop" for a whole answer.
   */
  finish?: "stop" | "length" | "refusal" | undefined
  /** The rate limits the response reported (its `x-ratelimit-*` headers, or the provider's own): spool learns from them. */
  rate?: RateInfo | undefined
  /** An embedding batch line's answer (`BatchClient.embedLine`): its input's vector; `text` is then empty. */
  vector?: Float32Array | undefined
}

/** What an embedding request asks beyond its inputs. */
export interface EmbedOptions {
  /** The vectors' length, for models that can shorten theirs (text-embedding-3-*). */
  dimensions?: number | undefined
}

/** The answer to an embedding request: one vector per input, in the inputs' order. */
export interface Embedded {
  vectors: Float32Array[]
  usage: Usage
  rate?: RateInfo | undefined
}

/** What a provider is given to make its client. */
export interface ProviderContext {
  model: string
  /** From the job's `base_url`, or the provider's base URL variable; undefined for the provider's default. */
  baseUrl: string | undefined
  /** Read from the environment; never stored. Undefined when the provider needs no key. */
  apiKey: string | undefined
  /** Per-request timeout. */
  timeoutMs: number
  /** Tells the person running spool something worth knowing, once: an info line on stderr and in the log. */
  info?: ((message: string) => void) | undefined
  /**
   * What the job sends (`[request] kind`): "chat" (`call`, `BatchClient.line`) or "embedding" (`embed`,
   * `BatchClient.embedLine`). A batch client is made for one of them: a provider batch holds one endpoint.
   */
  kind?: "chat" | "embedding" | undefined
  /**
   * The service tier of realtime calls: "flex" (`[provider] mode = "flex"`: OpenAI's Flex processing, at the batch
   * price, slower and sometimes unavailable); undefined for the standard tier.
   */
  tier?: "flex" | undefined
}

export interface ProviderClient {
  /** One request. Throws `ProviderError` (from `spool/plugin`) with `retryable` set; never retries itself. */
  call(request: Request, signal: AbortSignal): Promise<Reply>
  /**
   * Embedding jobs (docs/EMBEDDINGS.md): the vectors of many inputs in one request, in the inputs' order, and the
   * request's usage (`input_tokens`; `output_tokens` 0). Throws `ProviderError` as `call` does. A provider without it
   * runs no embedding job.
   */
  embed?(inputs: string[], options: EmbedOptions, signal: AbortSignal): Promise<Embedded>
  /** The provider's Batch API, when it has one (`mode = "batch"` needs it). */
  batch?: BatchClient | undefined
}

/** How much one provider batch may hold. */
export interface BatchLimits {
  /** Requests per batch (OpenAI 50,000; Anthropic 100,000). */
  maxRequests: number
  /** Bytes of the request file (OpenAI 200 MB) or of the create body (Anthropic 256 MB). */
  maxBytes: number
}

/**
 * What identifies a batch spool made: `tag` is unique to one local batch of one store (letters, digits and `-`,
 * at most 40 characters). Every custom_id of the batch is `${tag}_${n}`, so results map back without
 * ambiguity, and a provider without batch metadata (Anthropic) is matched by that prefix.
 */
export interface BatchTag {
  tag: string
  /** The run's name, for the provider's batch metadata (OpenAI), so a person can tell the batch in a console. */
  run: string
  /** How many requests the batch holds. */
  count: number
  /** When the intent was committed (ms): the batch, if it was created, was created after this. */
  since: number
}

/** The provider's batch, in neutral terms. */
export interface RemoteBatch {
  /** The provider's id (OpenAI `batch_…`, Anthropic `msgbatch_…`). */
  id: string
  /** The provider's own status word: OpenAI `status`, Anthropic `processing_status`. */
  status: string
  /** Where it is: shown in `spool status` as validating, in progress (n of m), finalizing, cancelling, ended. */
  phase: "validating" | "in_progress" | "finalizing" | "cancelling" | "ended"
  /** How it ended, once `phase` is "ended". */
  outcome?: "completed" | "expired" | "cancelled" | "failed" | undefined
  /** Requests done (with a result or an error) of the total, when the provider reports them. */
  counts?: { total: number; done: number; failed: number } | undefined
  /**
   * Why the whole batch failed, when it did (OpenAI `errors.data`). A queue limit (OpenAI `token_limit_exceeded`)
   * is errorClass "queue_limit", with `queueLimit` set when the message gives the number.
   */
  error?: ProviderError | undefined
  /** Created at (ms since the epoch). */
  createdAt: number
  /** What `download` needs: OpenAI output and error file ids, Anthropic the results URL; kept in the ledger as JSON. */
  files?: { output?: string | undefined; errors?: string | undefined } | undefined
  /**
   * How many result lines an ended batch's files hold, as the provider counted them: a download is verified against
   * this before any of its lines settles an item. `output` and `errors` bound the lines of each file (OpenAI's
   * `request_counts`); `kinds` gives the exact lines of each `BatchLine.kind` (Anthropic's counts per result type).
   */
  expect?: BatchExpect | undefined
}

/** The lines a batch's result files must hold (see `RemoteBatch.expect`). */
export interface BatchExpect {
  output?: { min: number; max: number } | undefined
  errors?: { min: number; max: number } | undefined
  kinds?: Record<string, number> | undefined
}

/** The result files `download` wrote, and the length each was served with (Content-Length), when it was given. */
export interface Downloaded {
  output?: string | undefined
  errors?: string | undefined
  announced?: { output?: number | undefined; errors?: number | undefined } | undefined
}

/** One line of a downloaded result file, read. */
export interface BatchLine {
  customId: string
  /** The line has an answer (status 200 / succeeded). */
  reply?: Reply | undefined
  /**
   * The line has an error, classified as a direct call's would be. With neither `reply` nor `error`, the line was
   * never run (expired, cancelled): its item goes back to pending, unpaid.
   */
  error?: ProviderError | undefined
  /** The provider's own word for the line's result (Anthropic `result.type`), matched against `expect.kinds`. */
  kind?: string | undefined
}

/** How `find` answered. */
export type Found =
  | { found: RemoteBatch }
  /** No batch of the provider's carries the tag: the create call never reached it. */
  | { none: true }
  /** Candidates exist that cannot be told apart yet (Anthropic: several unended batches of the same size). */
  | { wait: string }

/**
 * A provider's Batch API. Every method throws `ProviderError` on failure (network, 5xx, auth …), classified as
 * `call` classifies; spool retries with backoff and never guesses.
 */
export interface BatchClient {
  limits: BatchLimits
  /** One line of the request file (JSON, no newline): OpenAI `{custom_id, method, url, body}`, Anthropic `{custom_id, params}`. */
  line(customId: string, request: Request): string
  /**
   * One embedding line (OpenAI `{custom_id, method, url: "/v1/embeddings", body}`): one input, so that a custom_id
   * still names one item. Its result line is read by `parse` into a `Reply` with `vector` set. A client without it
   * runs no embedding job in batch mode; one made for `kind = "embedding"` creates batches of these lines only.
   */
  embedLine?(customId: string, input: string, options: EmbedOptions): string
  /** Creates the batch from a request file of `line`s. OpenAI uploads it (purpose batch) and tags the batch's metadata. */
  create(file: string, tag: BatchTag, signal: AbortSignal): Promise<RemoteBatch>
  retrieve(id: string, signal: AbortSignal): Promise<RemoteBatch>
  /** After a crash between create and its commit: the batch carrying `tag`, if the provider has one. */
  find(tag: BatchTag, signal: AbortSignal): Promise<Found>
  cancel(id: string, signal: AbortSignal): Promise<RemoteBatch>
  /**
   * Writes an ended batch's raw result files, as the provider serves them, to `output` (and `errors`, OpenAI's
   * error file); returns the paths written (a file the provider does not have is not written) and their announced
   * lengths. spool verifies the files before it applies a line of them, and downloads them again when they fail.
   */
  download(
    batch: RemoteBatch,
    to: { output: string; errors: string },
    signal: AbortSignal,
  ): Promise<Downloaded>
  /** Reads one line of a downloaded file. Throws (any error) only when the line is not a result line at all. */
  parse(line: string): BatchLine
}

/** Talks to one kind of model server. */
export interface Provider<S extends OptionsSchema = OptionsSchema> {
  /** The `provider.name` a job names it by; unique among all providers. */
  name: string
  /** Its options, from the job's `[provider.options]` table; unknown keys are refused. */
  options: S
  /** The environment variable that holds the key by default; undefined when none is needed. */
  keyEnv: string | undefined
  /** The environment variable that may hold a base URL. */
  baseUrlEnv?: string
  /** A job may leave `provider.model` out (the provider is given its own name); otherwise the model is required. */
  modelOptional?: boolean
  /**
   * What the provider cannot send of a job's output schema (a keyword its API refuses), each problem naming its path
   * (`output.schema.properties.x.pattern: …`); none when it can send it all. Checked with the job, before the store is
   * opened or any call is made (`spool run` and `spool estimate` refuse the job, exit 2).
   */
  checkSchema?(schema: Record<string, unknown>): string[]
  /**
   * How the provider caches prompt prefixes, when it does (README, "Paying less"). `explicit`: only where a request
   * marks a breakpoint (Anthropic `cache_control`), and a batch's requests read a prefix only once it was written, so
   * spool primes it first; otherwise automatic (OpenAI). `minimumTokens`: the shortest prefix the model caches.
   * `ttlMs`: how long an unread prefix lives, by `PromptCache.ttl`.
   */
  promptCache?: {
    explicit: boolean
    minimumTokens(model: string): number
    ttlMs(ttl: "5m" | "1h"): number
  }
  /** Whether the model is offered in the flex tier (`mode = "flex"`); a provider without it has no flex tier. */
  flex?(model: string): boolean
  /** Makes the client one run uses; called once, before any item is claimed. */
  create(options: v.InferOutput<S>, context: ProviderContext): ProviderClient
}

/**
 * A batch profile of `openai-compatible` (docs/PLUGINS.md, "A batch profile of your own"): an OpenAI-shaped Batch
 * API's differences, named so that jobs pick it with `[provider.options.batch] profile = "NAME"`. Its fields are those
 * of `[provider.options.batch]`: `profile` names the built-in profile it starts from (generic when left out), and each
 * other field set here wins over that profile's. A job's own fields still win over the plugin's.
 */
export interface BatchProfile {
  /** Lowercase letters, digits or dashes; no built-in profile's name. */
  name: string
  profile?: string
  [field: string]: unknown
}

/** Several sources, providers and batch profiles from one file. */
export interface Plugin {
  sources?: Source[]
  providers?: Provider[]
  profiles?: BatchProfile[]
}

/** Identity function that infers the options type from the valibot schema. */
export function defineSource<const S extends OptionsSchema>(source: Source<S>): Source<S> {
  return source
}

/** Identity function that infers the options type from the valibot schema. */
export function defineProvider<const S extends OptionsSchema>(provider: Provider<S>): Provider<S> {
  return provider
}

/** Groups sources and providers that ship in one file (each made with `defineSource`/`defineProvider`). */
export function definePlugin(plugin: Plugin): Plugin {
  return plugin
}

// What the built-in plugins use is public, from this one entry point (`spool/plugin`); each lives in its own file.

// The errors a plugin throws: the runner and the ledger tell them apart by class.
export {
  JobError,
  ProviderError,
  SourceChangedError,
  SourceError,
  SpoolError,
  StoreError,
  type ErrorClass,
  type ExitCode,
} from "./errors.ts"
// Reading an HTTP answer: the wait it asks for, an error by its status, the rate limits it reports.
export { byStatus, parseRetryAfter, rated, retryAfterMs, unanswered, type SdkErrors } from "./http.ts"
export { duration, fromHeaders, type RateInfo, type Window } from "./ratelimit.ts"
// A base URL shown without credentials; a wrong one told from a wrong key or model by a client's first answers.
export { firstAnswers, shown, type Documented, type FirstAnswers } from "./baseurl.ts"
// A batch client's download, streamed to disk durably under a stall watch.
export { announced, CLOCK_SLACK_MS, save, stallWatch, UPLOAD_TIMEOUT_MS } from "./batch.ts"
