/** The small valibot pieces every table of the job is made of, each with the message a person reads. */
import * as v from "valibot"

/** A table whose unknown keys are refused by name. */
export const strict = <const E extends v.ObjectEntries>(entries: E, what: string) =>
  v.strictObject(entries, (issue) =>
    issue.expected === "never" ? "unknown key (check its spelling)" : `expected a table (${what})`,
  )

export const text = (what: string) =>
  v.pipe(v.string(`expected a string (${what})`), v.minLength(1, "must not be empty"))

export const int = (min: number, max: number) =>
  v.pipe(
    v.number("expected a number"),
    v.integer("expected a whole number"),
    v.minValue(min, `must be at least ${min}`),
    v.maxValue(max, `must be at most ${max}`),
  )

export const seconds = (min: number) => v.pipe(v.number("expected a number of seconds"), v.minValue(min))

export const usd = (what: string) =>
  v.pipe(v.number(`expected a number (${what})`), v.minValue(0, "must not be negative"))
