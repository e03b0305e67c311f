/** Durations as a person writes them in a job or a flag: "30d", "12h", "90m", "45s", "2w". */

const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }

/** A duration such as "30d", "12h", "90m", "45s" or "2w". */
export const DURATION = /^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$/

/** What a duration looks like, for messages. */
export const DURATION_TEXT = 'expected a duration such as "30d", "12h", "90m", "45s" or "2w"'

/** The milliseconds of a duration ("30d"), or undefined when it is not one. */
export function durationMs(text: string): number | undefined {
  const m = DURATION.exec(text)
  return m ? Math.round(Number(m[1]) * (UNITS[m[2] as string] as number)) : undefined
}
