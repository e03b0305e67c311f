/**
 * Profiles: what sets one OpenAI-shaped Batch API apart from another, so that `openai-compatible` with
 * `mode = "batch"` drives each through the openai provider's one batch client (../openai/batch.ts). A job picks one
 * with `[provider.options.batch] profile = "azure"` and may override any field beside it.
 *
 * Written from these pages (the stored documentation, read with the `search` tool):
 * - Azure: "Getting started with Azure OpenAI global batch deployments",
 *   https://learn.microsoft.com/en-us/azure/ai-services/openai/how-to/batch (and its ai-foundry copy,
 *   https://learn.microsoft.com/en-us/azure/ai-foundry/openai/how-to/batch): jobs are not expired ("we do not expire
 *   the jobs that take longer"), 24-hour target, a separate enqueued-token quota, cancel returns the completed work;
 *   lines name the global-batch deployment as `model`, REST calls carry `api-version` and the `api-key` header.
 * - Groq: "Groq Batch API", https://console.groq.com/docs/batch (lines as OpenAI's, `/v1/chat/completions`, a 24-hour
 *   processing window by default), and the groq SDK's batch docs (https://tessl.io/registry/tessl/pypi-groq/files/docs/batches.md,
 *   https://leeroopedia.com/index.php/Principle:Groq_Groq_python_Batch_Job_Creation: `completion_window` from "24h"
 *   to "7d"; https://leeroopedia.com/index.php/Principle:Groq_Groq_python_Batch_Input_Preparation: 100 MB a file).
 * - Together: "Batch inference overview", https://docs.together.ai/docs/inference/batch/overview (50,000 requests and
 *   100 MB per file, 30B tokens enqueued per model, the window fixed at 24h), the together-batch-inference skill
 *   (https://skills.sh/zainhas/togetherai-skills/together-batch-inference: files uploaded with purpose "batch-api",
 *   the create answered with the batch under `job`), and https://glama.ai/mcp/connectors/io.usefulapi/together-ai/tools/together_get_batch
 *   (statuses VALIDATING, IN_PROGRESS, COMPLETED, FAILED, EXPIRED, CANCELLED).
 * - generic: OpenAI's own Batch API (the openai provider's limits), for any other service that copies it.
 */
import * as v from "valibot"
import { JobError } from "../../api/errors.ts"

/** OpenAI's batch status words: a profile maps a service's own words onto them. */
export const STATUS_WORDS = [
  "validating",
  "in_progress",
  "finalizing",
  "completed",
  "expired",
  "cancelling",
  "cancelled",
  "failed",
] as const

/** One service's batch settings; every field may be overridden in `[provider.options.batch]`. */
export interface Profile {
  /** The purpose the request file is uploaded with. */
  purpose: string
  /** The service's status words that differ from OpenAI's, by OpenAI's word they mean. */
  statuses: Record<string, (typeof STATUS_WORDS)[number]>
  /** Requests per batch, at most. */
  max_requests: number
  /** Bytes of a request file, at most. */
  max_bytes: number
  /** Tokens the service lets be enqueued at once (0: it documents no number): learned when a refusal names none. */
  max_enqueued_tokens: number
  /** The completion windows the service accepts. */
  completion_windows: string[]
  /** The one spool asks for (one of `completion_windows`). */
  completion_window: string
  /** "line": `model` in each line is the model; "deployment": it is a deployment's name, and realtime calls go to `deployments/<model>/`. */
  model: "line" | "deployment"
  /** How the key is sent: `Authorization: Bearer <key>`, or an `api-key: <key>` header. */
  auth: "bearer" | "api-key"
  /** Query parameters on every call. */
  query: Record<string, string>
  /** Whether a batch that runs past its window expires (its unrun lines come back unrun), or runs on. */
  expires: boolean
  /** What comes before `/chat/completions` in each line's `url` and the create's `endpoint`. */
  url_prefix: string
}

const OPENAI_LIKE = {
  purpose: "batch",
  statuses: {},
  max_requests: 50_000,
  max_bytes: 200_000_000,
  max_enqueued_tokens: 0,
  completion_windows: ["24h"],
  completion_window: "24h",
  model: "line",
  auth: "bearer",
  query: {},
  expires: true,
  url_prefix: "/v1",
} as const satisfies Profile

/** The built-in profiles, by name. */
export const PROFILES: Readonly<Record<string, Readonly<Profile>>> = {
  generic: { ...OPENAI_LIKE, statuses: {}, completion_windows: ["24h"], query: {} },
  azure: {
    ...OPENAI_LIKE,
    statuses: {},
    max_requests: 100_000,
    completion_windows: ["24h"],
    model: "deployment",
    auth: "api-key",
    query: { "api-version": "2024-10-21" },
    expires: false,
    url_prefix: "",
  },
  groq: {
    ...OPENAI_LIKE,
    statuses: {},
    max_bytes: 100_000_000,
    completion_windows: ["24h", "48h", "72h", "7d"],
    query: {},
  },
  together: {
    ...OPENAI_LIKE,
    purpose: "batch-api",
    statuses: {
      VALIDATING: "validating",
      IN_PROGRESS: "in_progress",
      FINALIZING: "finalizing",
      COMPLETED: "completed",
      EXPIRED: "expired",
      CANCELLING: "cancelling",
      CANCELLED: "cancelled",
      FAILED: "failed",
    },
    max_bytes: 100_000_000,
    max_enqueued_tokens: 30_000_000_000,
    completion_windows: ["24h"],
    query: {},
  },
}

const count = v.pipe(v.number(), v.integer(), v.minValue(1))
const text = v.pipe(v.string(), v.minLength(1))

/** `[provider.options.batch]`: a profile's name, and any of its fields to override. */
export const BatchOptions = v.strictObject({
  profile: v.optional(v.string()),
  purpose: v.optional(text),
  statuses: v.optional(v.record(v.string(), v.picklist(STATUS_WORDS))),
  max_requests: v.optional(count),
  max_bytes: v.optional(count),
  max_enqueued_tokens: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
  completion_windows: v.optional(v.pipe(v.array(text), v.minLength(1))),
  completion_window: v.optional(text),
  model: v.optional(v.picklist(["line", "deployment"])),
  auth: v.optional(v.picklist(["bearer", "api-key"])),
  query: v.optional(v.record(v.string(), v.string())),
  expires: v.optional(v.boolean()),
  url_prefix: v.optional(v.pipe(v.string(), v.regex(/^(\/[^/?#]+)*$/, 'must be "" or a path such as "/v1"'))),
})

/** What a job may write in `[provider.options.batch]`. */
export type BatchSettings = v.InferOutput<typeof BatchOptions>

/**
 * The profile a job asks for: the named one (generic when none), with the job's fields over it. A name not known, or
 * a window the profile does not list, is the job's mistake, named by its key.
 */
export function resolve(settings: BatchSettings | undefined): Profile {
  const { profile: name = "generic", ...fields } = settings ?? {}
  const base = PROFILES[name] ?? added.get(name)
  if (!base) {
    throw new JobError(
      "the job is not valid",
      [`provider.options.batch.profile: "${name}" is not a profile (${Object.keys(profiles()).join(", ")})`],
      "Name a built-in profile (or a plugin's: its file in plugins = [...]), or leave profile out and give every field that differs from OpenAI's.",
    )
  }
  const out: Profile = { ...base, ...fields }
  // a job that lists its own windows and names none asks for the first
  if (fields.completion_windows && !fields.completion_window)
    out.completion_window = fields.completion_windows[0]!
  if (!out.completion_windows.includes(out.completion_window)) {
    throw new JobError(
      "the job is not valid",
      [
        `provider.options.batch.completion_window: "${out.completion_window}" is not one the ${name} profile allows (${out.completion_windows.join(", ")})`,
      ],
      "Pick one of completion_windows, or list the service's windows in completion_windows.",
    )
  }
  return out
}

/** The profiles plugins added (`definePlugin({ profiles })`), by name: each whole, its base's fields under its own. */
const added = new Map<string, Profile>()

/** Every profile a job may name: the built-in ones, then the plugins'. */
export function profiles(): Readonly<Record<string, Readonly<Profile>>> {
  return { ...PROFILES, ...Object.fromEntries(added) }
}

/**
 * What is wrong with a plugin's profile (its name, its fields as `[provider.options.batch]` takes them, its base),
 * each problem naming its key; none when it can be added.
 */
export function profileProblems(given: Record<string, unknown>): string[] {
  const { name, ...fields } = given
  const problems: string[] = []
  if (typeof name !== "string" || !/^[a-z][a-z0-9-]{0,39}$/.test(name))
    problems.push("name must be lowercase letters, digits or dashes")
  else if (name in profiles())
    problems.push(
      `name "${name}" is taken by ${name in PROFILES ? "a built-in profile" : "another plugin's profile"}`,
    )
  const parsed = v.safeParse(BatchOptions, fields)
  if (!parsed.success)
    for (const i of parsed.issues)
      problems.push(`${i.path?.map((p) => String(p.key)).join(".") ?? "(fields)"}: ${i.message}`)
  else {
    try {
      resolve(parsed.output)
    } catch (err) {
      if (!(err instanceof JobError)) throw err
      problems.push(...err.problems.map((p) => p.replace("provider.options.batch.", "")))
    }
  }
  return problems
}

/** Adds a plugin's profile (checked with `profileProblems` first): its base's fields with its own over them. */
export function addProfile(given: Record<string, unknown>): void {
  const { name, ...fields } = given
  added.set(name as string, resolve(v.parse(BatchOptions, fields)))
}
