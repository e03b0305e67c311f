/** What every command of the command line shares: the common flags, where the store is, and how it loads. */
import type { ArgsDef } from "citty"
import { resolve } from "node:path"
import { UsageError } from "../core/base/errors.ts"

/** The ledger loads when a command needs it, so `--version` and `--help` start without it (ARCHITECTURE, "Startup"). */
declare const SPOOL_VERSION: string | undefined
export const VERSION = typeof SPOOL_VERSION === "string" ? SPOOL_VERSION : "0.0.0-dev"

export const lazyLedger = () => import("../core/ledger/open.ts")

export const common = {
  home: { type: "string", description: "Where the store lives (default: $SPOOL_HOME or ./.spool)" },
  verbose: { type: "boolean", description: "Show stack traces of errors" },
} as const satisfies ArgsDef

export function home(arg: string | undefined): string {
  return resolve(arg ?? (process.env.SPOOL_HOME || ".spool"))
}

/**
 * The store's folder for a command that reads or acts on runs: it must hold a store already. Only `run` and `watch`
 * make one; the others, pointed at a folder without one, say so and leave it as it was.
 */
export async function existingHome(arg: string | undefined): Promise<string> {
  const dir = home(arg)
  if ((await lazyLedger()).exists(dir)) return dir
  throw new UsageError(
    `no spool store in ${arg ?? (process.env.SPOOL_HOME || "./.spool")} — start a run with \`spool run job.toml\``,
    "Or point --home (or SPOOL_HOME) at the folder that holds one.",
  )
}
