/**
 * The response cache's key (README, "Cache"): a SHA-256 of everything that changes an answer, in one canonical form,
 * made in this one place. It is the request, not the run: neither the run, its name, the item's id, the execution
 * mode (batch or realtime) nor the API key is in it, so a batch run's answers serve a later realtime run, and the
 * other way round.
 */
import type { Job } from "./job.ts"
import * as template from "./template.ts"

/** Who answers: what of the provider changes an answer. */
export interface Identity {
  /** The provider's kind: `openai`, `anthropic`, `openai-compatible`, `mock`, a plugin's name. */
  provider: string
  /** The base URL the job, or the provider's variable, gives; undefined for the provider's own default. */
  baseUrl: string | undefined
  model: string
  /** The provider's options as checked, defaults filled (`endpoint = "chat"` given or not is the same). */
  options: Record<string, unknown>
}

/**
 * What the key is made of; bump when the canonical form, or what a provider sends for a neutral request, changes,
 * so that answers to requests sent differently are not served.
 */
const FORM = 1

/** Stands for the rendered prompt in the canonical text, which is cut at it once per job. */
const MARK = "\u0000spool:prompt\u0000"

/**
 * JSON with every object's keys sorted, at every depth: a schema's property order, or the order of a TOML table's
 * keys, does not change it. Undefined values are left out, as JSON.stringify does.
 */
export function canonical(value: unknown): string {
  return JSON.stringify(sorted(value))
}

function sorted(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sorted)
  if (value === null || typeof value !== "object") return value
  const out: Record<string, unknown> = {}
  for (const key of Object.keys(value).sort()) out[key] = sorted((value as Record<string, unknown>)[key])
  return out
}

/** The host and path of a base URL (`http://127.0.0.1:8080/v1/` → `127.0.0.1:8080/v1`): scheme, query and a trailing slash apart. */
export function place(baseUrl: string | undefined): string {
  if (!baseUrl) return ""
  try {
    const url = new URL(baseUrl)
    return `${url.host.toLowerCase()}${url.pathname.replace(/\/+$/, "")}`
  } catch {
    return baseUrl
  }
}

/**
 * The key of each item's request, from its row's fields: "" when the row cannot fill the prompt (the item fails with a
 * template error, and nothing is cached for it). The job's request is made canonical once; per item, only the prompt
 * is rendered and hashed with it.
 */
export function keyer(job: Job, who: Identity, sample = 0): (row: Record<string, unknown>) => string {
  const { request } = job
  const text = canonical({
    form: FORM,
    provider: who.provider,
    base: place(who.baseUrl),
    model: who.model,
    options: who.options,
    request: {
      system: request.system,
      prompt: MARK,
      max_tokens: request.max_tokens,
      temperature: request.temperature,
      params: request.params,
      schema: job.output,
      // only for embeddings, so that chat keys made before kinds existed stay the same
      ...(request.kind === "embedding" && { kind: "embedding", dimensions: request.dimensions }),
    },
    sample,
  })
  const at = text.indexOf(JSON.stringify(MARK))
  const head = text.slice(0, at)
  const tail = text.slice(at + JSON.stringify(MARK).length)
  const prompt = template.parse(request.prompt)
  return (row) => {
    const rendered = template.render(prompt, row)
    if (typeof rendered !== "string") return ""
    return Bun.SHA256.hash(head + JSON.stringify(rendered) + tail, "hex") as unknown as string
  }
}
