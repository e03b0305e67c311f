/** What every command of the command line shares: the common flags, where the store is, and how it loads. */
import type { ArgsDef } from "citty"
import { resolve } from "node:path"

/** The ledger loads when a command needs it, so `--version` and `--help` start without it (ARCHITECTURE, "Startup"). */
declare const SPOOL_VERSION: string | undefined
export const VERSION = typeof SPOOL_VERSION === "string" ? SPOOL_VERSION : "0.0.0-dev"

export const lazyLedger = () => import("../core/ledger/open.ts")

export const common = {
  home: { type: "string", description: "Where the store lives (default: $SPOOL_HOME or ./.spool)" },
  verbose: { type: "boolean", description: "Show stack traces of errors" },
} as const satisfies ArgsDef

export function home(arg: string | undefined): string {
  return resolve(arg ?? process.env.SPOOL_HOME ?? ".spool")
}
