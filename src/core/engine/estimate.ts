/**
 * `spool estimate`: what a job would send and roughly cost, before anything is called or written. Renders every
 * request, streaming the inputs a batch at a time; opens no store, starts no log file, creates no provider client
 * (so it needs no API key). Tokens are counted by the heuristic of src/core/job/estimate.ts (HEURISTIC); output
 * tokens are max_tokens per request, an upper bound, and without max_tokens they are unknown and the cost covers
 * the input only.
 *
 * Duplicate ids are not detected (that needs every key in memory); a run skips them, so they are counted here.
 */
import { basename } from "node:path"
import * as log from "../base/log.ts"
import * as registry from "../../plugins/registry.ts"
import { checkProvider } from "./run.ts"
import * as template from "../job/template.ts"
import { plan } from "./ingest.ts"
import { cost, jobPrice, warnUnpriced, type Priced } from "../job/pricing.ts"
import { HEURISTIC, framing, tokens } from "../job/estimate.ts"
import { usd } from "../report/report.ts"
import type { Job } from "../job/job.ts"

/** How many malformed rows and unfillable items are shown by example. */
export const SAMPLE = 5

export interface Estimate {
  job: string
  provider: string
  model: string | null
  /** Rows read from the inputs (malformed rows excluded). */
  items: number
  malformed: { count: number; sample: { file: string; line: number; reason: string }[] }
  /** Items whose prompt template cannot be filled: a run fails them without a call. */
  unfilled: { count: number; sample: { file: string; line: number; id: string; missing: string[] }[] }
  /** Items that would be sent: items − unfilled. */
  requests: number
  tokens: {
    /** Estimated (see HEURISTIC): system + rendered prompt + framing, summed over the requests. */
    input: number
    /** max_tokens × requests, an upper bound; null without max_tokens. */
    output: number | null
    output_upper_bound: boolean
    heuristic: string
  }
  /** USD; null when the model has no price (never 0 for unknown). */
  cost: {
    realtime_usd: number | null
    batch_usd: number | null
    /** Direct calls in the flex tier (`mode = "flex"`), when the model has one; null otherwise. */
    flex_usd: number | null
    /** Whether the costs include output tokens; false without max_tokens: input only, a lower bound. */
    output_included: boolean
    prices: Priced | null
  }
}

const round = (x: number) => Math.round(x * 1e6) / 1e6

/** Checks what `run` checks except the API key, then streams every input and renders every request. */
export async function estimate(job: Job): Promise<Estimate> {
  await registry.load(job.plugins ?? [])
  checkProvider(job)
  warnUnpriced(job.provider, job.pricing)
  const prompt = template.parse(job.request.prompt)
  const inputs = plan(job)
  // every request's system message and framing; its prompt's tokens are added per row
  const fixed = framing(job.request.system)

  const e: Estimate = {
    job: job.name,
    provider: job.provider.name,
    model: job.provider.model ?? null,
    items: 0,
    malformed: { count: 0, sample: [] },
    unfilled: { count: 0, sample: [] },
    requests: 0,
    tokens: { input: 0, output: null, output_upper_bound: true, heuristic: HEURISTIC },
    cost: { realtime_usd: null, batch_usd: null, flex_usd: null, output_included: false, prices: null },
  }
  for (const input of inputs) {
    const file = basename(input.path)
    for await (const batch of input.source.read(input.path, input.options, undefined)) {
      for (const warning of batch.warnings ?? []) log.warn(warning, { input: input.path })
      e.malformed.count += batch.problems.length
      for (const p of batch.problems) {
        if (e.malformed.sample.length >= SAMPLE) break
        e.malformed.sample.push({ file, line: p.line, reason: p.reason })
      }
      for (const row of batch.rows) {
        e.items++
        const text = template.render(prompt, row.data)
        if (typeof text !== "string") {
          e.unfilled.count++
          if (e.unfilled.sample.length < SAMPLE)
            e.unfilled.sample.push({ file, line: row.line, id: row.key, missing: text.missing })
          continue
        }
        e.requests++
        e.tokens.input += fixed + tokens(text)
      }
    }
  }
  const max = job.request.max_tokens
  e.tokens.output = max === undefined ? null : max * e.requests
  e.cost.output_included = e.tokens.output !== null
  // every mode at the standard tier's prices (a flex job's own are the flex tier's), flex from them
  const prices = jobPrice({ ...job, provider: { ...job.provider, mode: "realtime" } })
  if (prices) {
    const used = { input_tokens: e.tokens.input, output_tokens: e.tokens.output ?? 0 }
    const realtime = cost(prices, used)
    e.cost.realtime_usd = round(realtime)
    e.cost.batch_usd = round(cost(prices, used, true))
    if (prices.flex_discount !== undefined) e.cost.flex_usd = round(realtime * (1 - prices.flex_discount))
    e.cost.prices = prices
  }
  return e
}

const n = (x: number) => x.toLocaleString("en-US")

export function estimateText(e: Estimate): string {
  const lines = [
    `estimate ${e.job} · ${e.provider}${e.model ? ` ${e.model}` : ""} · nothing was called or written`,
    `items     ${n(e.items)} read · ${n(e.requests)} request(s) · ${n(e.malformed.count)} malformed row(s) skipped · ` +
      `${n(e.unfilled.count)} with a template that cannot be filled`,
    `tokens    in ~${n(e.tokens.input)} (estimated: ${e.tokens.heuristic}) · out ${
      e.tokens.output === null
        ? "unknown (no max_tokens)"
        : `≤ ${n(e.tokens.output)} (max_tokens per request: an upper bound)`
    }`,
  ]
  const c = e.cost
  if (c.realtime_usd === null || c.batch_usd === null || !c.prices)
    lines.push(
      `cost      unknown (no price for ${e.model ?? "this model"}: set input and output in [pricing], USD per million tokens)`,
    )
  else
    lines.push(
      `cost      ~${usd(c.realtime_usd)} realtime${c.flex_usd === null ? "" : ` · ~${usd(c.flex_usd)} flex`} · ~${usd(c.batch_usd)} batch` +
        ` (${c.output_included ? "output at max_tokens: an upper bound" : "input only: output unknown"}; ${c.prices.source})`,
    )
  if (e.unfilled.count) {
    lines.push(`unfilled  ${n(e.unfilled.count)} item(s) would fail: the template cannot be filled`)
    for (const u of e.unfilled.sample)
      lines.push(`  ${u.file}:${u.line} ${u.id}  missing ${u.missing.map((f) => `{{${f}}}`).join(", ")}`)
  }
  if (e.malformed.count) {
    lines.push(`malformed ${n(e.malformed.count)} row(s) skipped`)
    for (const p of e.malformed.sample) lines.push(`  ${p.file}:${p.line}  ${p.reason}`)
  }
  return `${lines.join("\n")}\n`
}
