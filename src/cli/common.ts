/** What every command of the command line shares: the common flags, where the store is, and how it loads. */
import type { ArgsDef } from "citty"
import { resolve } from "node:path"
import { UsageError } from "../core/base/errors.ts"

/** The ledger loads when a command needs it, so `--version` and `--help` start without it (ARCHITECTURE, "Startup"). */
declare const SPOOL_VERSION: string | undefined
export const VERSION = typeof SPOOL_VERSION === "string" ? SPOOL_VERSION : "0.0.0-dev"

export const lazyLedger = () => import("../core/ledger/open.ts")

export const common = {
  home: {
    type: "string",
    description: "Where the store lives, and its logs and batch files (default: $SPOOL_HOME or ./.spool)",
  },
  store: {
    type: "string",
    description:
      "Keep the ledger in PostgreSQL: postgres://user@host:5432/db[?schema=spool] (default: $SPOOL_STORE, else SQLite under --home)",
    valueHint: "url",
  },
  verbose: { type: "boolean", description: "Show stack traces of errors" },
} as const satisfies ArgsDef

export function home(arg: string | undefined): string {
  return resolve(arg ?? (process.env.SPOOL_HOME || ".spool"))
}

/** Where a command's flags point: `--home` (the folder for logs and files, and SQLite's ledger) and `--store`. */
export interface Where {
  home?: string | undefined
  store?: string | undefined
}

/** The PostgreSQL URL a command's ledger is at, if any: --store, else SPOOL_STORE (a job's [store] url goes between). */
export function storeUrl(flag: string | undefined): string | undefined {
  const url = flag ?? (process.env.SPOOL_STORE || undefined)
  if (url === undefined || /^postgres(ql)?:\/\//i.test(url)) return url
  throw new UsageError(
    `${flag === undefined ? "SPOOL_STORE" : "--store"}: not a postgres:// URL`,
    "Give one such as postgres://user@host:5432/db?schema=spool; a SQLite store's folder is given with --home.",
  )
}

/**
 * The store of a command that reads or acts on runs: it must hold one already. Only `run` and `watch` make one; the
 * others, pointed at a folder (or a schema) without one, say so and leave it as it was.
 */
export async function existingStore(where: Where): Promise<string> {
  const url = storeUrl(where.store)
  const ledger = await lazyLedger()
  const store = url ?? home(where.home)
  if (await ledger.exists(store)) return store
  if (url)
    throw new UsageError(
      `no spool store at ${ledger.shown(url)} — start a run with \`spool run job.toml --store <url>\``,
      "Or check the URL's database and ?schema= (default spool): a run makes the schema, the other commands only read it.",
    )
  throw new UsageError(
    `no spool store in ${where.home ?? (process.env.SPOOL_HOME || "./.spool")} — start a run with \`spool run job.toml\``,
    "Or point --home (or SPOOL_HOME) at the folder that holds one.",
  )
}
