/** Opens the ledger under a home directory: the one place that picks a driver (SQLite, today). */
import { existsSync } from "node:fs"
import { join } from "node:path"
import type { Ledger, OpenOptions } from "./ledger.ts"
import * as sqlite from "./sqlite/sqlite.ts"
import { DB_FILE } from "./sqlite/faults.ts"

/** Whether a store has been made under `home`: the commands that read or act on runs must not make one. */
export function exists(home: string): boolean {
  return existsSync(join(home, DB_FILE))
}

export async function open(home: string, options: OpenOptions = {}): Promise<Ledger> {
  return sqlite.open(home, options)
}
