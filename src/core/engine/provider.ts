/**
 * The job's provider, as a run and an estimate make it: checked (its options, its model, its output schema), named
 * for the response cache's key, and made into the client that sends the calls, its API key read from the
 * environment and registered with the redactor first.
 */
import { JobError } from "../../plugins/api/errors.ts"
import * as jobs from "../job/job.ts"
import * as log from "../base/log.ts"
import * as redact from "../../plugins/api/redact.ts"
import * as registry from "../../plugins/registry.ts"
import { assertUsable } from "../job/schema.ts"
import { batchRefusal } from "../job/kind.ts"
import type { Provider, ProviderClient } from "../../plugins/api/define.ts"
import type { Identity } from "../job/cache.ts"

/**
 * What `run` and `estimate` both check of a job's provider before anything is read: that it exists, its options,
 * its model, and that it can use the job's output schema. Plugins must be loaded first.
 */
export function checkProvider(job: jobs.Job): { provider: Provider; options: Record<string, unknown> } {
  const provider = registry.provider(job.provider.name)
  const options = registry.options(provider.options, job.provider.options, "provider.options") as Record<
    string,
    unknown
  >
  if (!provider.modelOptional && !job.provider.model) {
    throw new JobError(
      "the job is not valid",
      ["provider.model: missing (required)"],
      "Set model, or pass --model.",
    )
  }
  assertUsable(job)
  const model = job.provider.model ?? provider.name
  if (job.provider.mode === "flex" && !provider.flex?.(model))
    throw new JobError(
      "the job is not valid",
      [
        provider.flex
          ? `provider.mode: "flex" is not offered for the model "${model}"`
          : `provider.mode: "flex": provider "${provider.name}" has no flex tier`,
      ],
      'Use mode = "batch" for the same discount (hours, not minutes), or a model that has a flex tier (README, "Paying less").',
    )
  const refused = job.output && provider.checkSchema ? provider.checkSchema(job.output.schema) : []
  if (refused.length)
    throw new JobError(
      `the output schema cannot be sent to ${provider.name}`,
      refused,
      "Remove or rewrite the keywords listed (describe the constraint in the schema's `description` instead); nothing was run.",
    )
  return { provider, options }
}

/**
 * Who answers a job's requests, as the response cache's key knows them (job/cache.ts): the provider's kind, the base
 * URL it is given (the job's, else its variable's), the model and its checked options.
 */
export function identity(job: jobs.Job): Identity {
  const { provider, options } = checkProvider(job)
  const envUrl = provider.baseUrlEnv ? process.env[provider.baseUrlEnv] : undefined
  return {
    provider: provider.name,
    baseUrl: job.provider.base_url ?? (envUrl || undefined),
    model: job.provider.model ?? provider.name,
    options,
  }
}

/** A flex call's timeout unless the job sets `timeout_s`: OpenAI advises 15 minutes (docs, "Flex processing"). */
export const FLEX_TIMEOUT_S = 900
/** `[limits] timeout_s`'s default (job.ts). */
const DEFAULT_TIMEOUT_S = 120

export function client(job: jobs.Job): ProviderClient {
  const { provider, options } = checkProvider(job)
  const keyEnv = job.provider.api_key_env ?? provider.keyEnv
  const apiKey = keyEnv ? process.env[keyEnv] : undefined
  // a provider may echo the key in its errors: from here on, every error and log line has it taken out
  redact.register(apiKey)
  if (keyEnv && !apiKey) {
    throw new JobError(
      `${keyEnv} is not set: provider "${provider.name}" reads its API key from it`,
      [],
      `Export ${keyEnv}=… or put it in .env in this directory (api_key_env names another variable).`,
    )
  }
  const envUrl = provider.baseUrlEnv ? process.env[provider.baseUrlEnv] : undefined
  const flex = job.provider.mode === "flex"
  const made = provider.create(options, {
    model: job.provider.model ?? provider.name,
    baseUrl: job.provider.base_url ?? (envUrl || undefined),
    apiKey,
    // a flex call may queue for minutes before it is served: unless the job sets timeout_s, it waits FLEX_TIMEOUT_S
    timeoutMs:
      (flex && job.limits.timeout_s === DEFAULT_TIMEOUT_S ? FLEX_TIMEOUT_S : job.limits.timeout_s) * 1000,
    info: (message) => log.info(message),
    kind: job.request.kind ?? "chat",
    ...(flex && { tier: "flex" as const }),
  })
  const refused =
    job.provider.mode === "batch" ? batchRefusal(provider.name, job.request.kind, made) : undefined
  if (refused) throw new JobError("the job is not valid", [refused.problem], refused.hint)
  return made
}
