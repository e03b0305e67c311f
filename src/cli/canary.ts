/** `spool run --canary N [--yes]`: its flags, and what is shown and asked once the canary has ended (README, "Canary"). */
import type { ArgsDef } from "citty"
import { UsageError } from "../core/base/errors.ts"
import type { CanaryReport } from "../core/report/canary.ts"

export const canaryArgs = {
  canary: {
    type: "string",
    description:
      "Send the first N items first, as direct calls; report on them and stop before the rest (limits.canary)",
  },
  yes: { type: "boolean", description: "After a canary, go on with the rest without asking" },
} as const satisfies ArgsDef

/** The number of items `--canary` asks for; undefined without it. */
export function canaryOf(value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  if (!/^\s*[0-9]+\s*$/.test(value) || Number(value) < 1)
    throw new UsageError(
      `--canary: "${value}" is not a number of items`,
      "Give how many of the first items go first, such as --canary 20.",
    )
  return Number(value)
}

/**
 * The command line without `--canary N`: the ledger keeps a run's canary, so the command that resumes it needs none
 * (and one past its canary would be refused with it).
 */
export function withoutCanary(rawArgs: string[]): string[] {
  const out: string[] = []
  for (let i = 0; i < rawArgs.length; i++) {
    const arg = rawArgs[i] as string
    if (arg === "--") return [...out, ...rawArgs.slice(i)]
    if (arg === "--canary") i++
    else if (!arg.startsWith("--canary=")) out.push(arg)
  }
  return out
}

/**
 * After a canary: its report on stderr, then whether to go on with the rest now. `--yes` goes on; on a terminal the
 * question is asked on stderr and one line read from stdin; off a terminal the run stops there. `before` ends the
 * progress line first.
 */
export function confirmer(yes: boolean, before: () => void): (report: CanaryReport) => Promise<boolean> {
  return async (report) => {
    before()
    const { canaryText } = await import("../core/report/canary.ts")
    process.stderr.write(canaryText(report))
    if (report.rest === 0) return true
    const others = `the other ${report.rest.toLocaleString("en-US")} item${report.rest === 1 ? "" : "s"}`
    if (yes) {
      process.stderr.write(`--yes: going on with ${others}\n`)
      return true
    }
    if (!process.stdin.isTTY || !process.stderr.isTTY) return false
    process.stderr.write(`Go on with ${others}? [y/N] `)
    return /^\s*y(es)?\s*$/i.test(await line(process.stdin))
  }
}

/** One line read from `input` (without its end); what there is when it ends first. */
function line(input: NodeJS.ReadStream): Promise<string> {
  return new Promise((done) => {
    let text = ""
    const read = (chunk: Buffer | string) => {
      text += String(chunk)
      if (text.includes("\n")) end()
    }
    const end = () => {
      input.off("data", read)
      input.off("end", end)
      input.pause()
      done(text.split("\n")[0] ?? "")
    }
    input.on("data", read)
    input.once("end", end)
  })
}
