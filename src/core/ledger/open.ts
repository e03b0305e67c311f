/** Opens the ledger under a home directory: the one place that picks a driver (SQLite, today). */
import type { Ledger, OpenOptions } from "./ledger.ts"
import * as sqlite from "./sqlite/sqlite.ts"

export async function open(home: string, options: OpenOptions = {}): Promise<Ledger> {
  return sqlite.open(home, options)
}
