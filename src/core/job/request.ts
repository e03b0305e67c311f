/** The job's `[request]` (what each row's request says) and `[pricing]` (what its tokens cost) tables. */
import * as v from "valibot"
import { KIND_ENTRIES } from "./kind.ts"
import { int, strict, text, usd } from "./valid.ts"

const share = v.pipe(
  v.number("expected a number"),
  v.minValue(0),
  v.maxValue(1, "must be at most 1 (a share: 0.5 is half)"),
)

export const RequestSchema = strict(
  {
    ...KIND_ENTRIES,
    system: v.optional(v.string("expected a string")),
    prompt: v.optional(text("the prompt template, with {{field}} placeholders")),
    max_tokens: v.optional(int(1, 1_000_000)),
    temperature: v.optional(v.pipe(v.number("expected a number"), v.minValue(0), v.maxValue(2))),
    params: v.optional(v.record(v.string(), v.unknown(), "expected a table of request parameters")),
    /**
     * Prompt caching (README, "Paying less"): "auto" marks the shared prefix (system prompt, then the prompt's text
     * before its first varying field) when it is long enough for the model, at the provider's default lifetime;
     * "5m" and "1h" always mark it, with that lifetime; "off" sends no cache hints. Never part of the fingerprint.
     */
    cache: v.optional(v.picklist(["auto", "off", "5m", "1h"], 'must be "auto", "off", "5m" or "1h"'), "auto"),
    /** Batch mode, explicit caching (Anthropic): send one small priming request before a batch (false: never). */
    prime: v.optional(v.boolean("expected true or false"), true),
  },
  "[request]",
)

/** Prices for this job's model, in USD per million tokens; they override the built-in table (src/core/pricing.ts). */
export const PricingSchema = strict(
  {
    input: usd("USD per million input tokens"),
    output: usd("USD per million output tokens"),
    cached_input: v.optional(usd("USD per million cached input tokens")),
    cache_write: v.optional(usd("USD per million tokens written to the prompt cache")),
    cache_write_1h: v.optional(usd("USD per million tokens written to the 1-hour prompt cache")),
    batch_discount: v.optional(share),
    flex_discount: v.optional(share),
  },
  "[pricing]",
)
