/**
 * The errors a plugin throws, and the base of every error spool throws on purpose. They live in the plugin API (the
 * bottom floor) because sources and providers throw them and the runner and the ledger tell them apart by class; the
 * engine's own errors (src/core/base/errors.ts) extend `SpoolError` from here.
 */
import type { RateInfo } from "./ratelimit.ts"
import { scrub } from "./redact.ts"

/** A command's exit code (README): 0 done, 1 error, 2 bad usage or job, 3 items failed, 130 interrupted. */
export type ExitCode = 0 | 1 | 2 | 3 | 130

/** Base of every error spool throws on purpose. `name` is a literal because bundling renames classes. */
export abstract class SpoolError extends Error {
  abstract override readonly name: string
  /** Stable, for scripts: `E_PROVIDER`, `E_SOURCE`, … */
  abstract readonly code: string
  readonly exit: ExitCode = 1
  /** What a person should do about it, shown under the message. */
  readonly hint: string | undefined

  /** The message and hint have every known secret taken out (redact.ts): a provider may echo the key it was sent. */
  constructor(message: string, hint?: string, options?: { cause?: unknown }) {
    super(scrub(message), options)
    this.hint = hint === undefined ? undefined : scrub(hint)
  }
}

/**
 * The job file or the flags are wrong; nothing was written. A plugin throws it when the job's settings cannot work
 * with it (the openai-compatible provider's `create`, given no base URL).
 */
export class JobError extends SpoolError {
  override readonly name = "JobError"
  readonly code = "E_JOB"
  override readonly exit = 2
  /** One line per problem, each naming its key path. */
  readonly problems: string[]

  constructor(message: string, problems: string[] = [], hint?: string) {
    super(problems.length ? `${message}\n${problems.map((p) => `  × ${p}`).join("\n")}` : message, hint)
    this.problems = problems
  }
}

/** An input file changed under a run that has not finished ingesting it. */
export class SourceChangedError extends SpoolError {
  override readonly name = "SourceChangedError"
  readonly code = "E_SOURCE_CHANGED"
  override readonly exit = 2
}

/** A source cannot be read at all (missing file, permission, unsupported format). */
export class SourceError extends SpoolError {
  override readonly name = "SourceError"
  readonly code = "E_SOURCE"
  override readonly exit = 2
}

/**
 * The store is unusable: locked by an incompatible version, corrupt, or not writable. A provider throws it when the
 * disk fails under a batch download (`save` does): the run stops naming the file instead of retrying the provider.
 */
export class StoreError extends SpoolError {
  override readonly name = "StoreError"
  readonly code = "E_STORE"
}

/**
 * Why an item's attempt failed. Classes group errors in `spool status`:
 * rate_limit, server, timeout, network, bad_response, bad_request, auth, quota, not_found, template, output,
 * queue_limit, unavailable.
 */
export type ErrorClass =
  | "rate_limit"
  | "server"
  | "timeout"
  | "network"
  | "bad_response"
  | "bad_request"
  | "auth"
  | "quota"
  | "not_found"
  | "template"
  /** The answer came back but failed a gate: not JSON, a schema violation, refused, truncated at max_tokens. */
  | "output"
  /** A batch was refused because the provider's queue for this model is full (enqueued tokens or requests). */
  | "queue_limit"
  /**
   * The flex tier has no capacity for the request just now (OpenAI's 429 "Resource Unavailable" to a
   * `service_tier: "flex"` call): retried later, with a longer backoff than a rate limit, and not a sign of a rate limit.
   */
  | "unavailable"

/** A provider call failed. Providers map their SDK's or HTTP errors to this once; the runner reads only this. */
export class ProviderError extends SpoolError {
  override readonly name = "ProviderError"
  readonly code = "E_PROVIDER"
  readonly errorClass: ErrorClass
  readonly retryable: boolean
  /** Milliseconds the provider asked us to wait (Retry-After), if it said. */
  readonly retryAfterMs: number | undefined
  /** Going on would fail every item the same way: pause the whole run. */
  readonly pause: boolean
  readonly status: number | undefined
  /** The rate limits the failed response reported, if it did (set by the provider after classifying: `rated`). */
  rate: RateInfo | undefined
  /** For a queue_limit: the limit the provider gave, when its message says (enqueued tokens, or requests). */
  queueLimit: { tokens?: number | undefined; requests?: number | undefined } | undefined

  constructor(
    errorClass: ErrorClass,
    message: string,
    options: {
      retryable: boolean
      retryAfterMs?: number
      pause?: boolean
      status?: number
      cause?: unknown
      /** What a person should do, when the run stops for it. */
      hint?: string
    },
  ) {
    super(message, options.hint, { cause: options.cause })
    this.errorClass = errorClass
    this.retryable = options.retryable
    this.retryAfterMs = options.retryAfterMs
    this.pause = options.pause ?? false
    this.status = options.status
  }
}
