/**
 * Opens the ledger: the one place that picks a driver. A store is a `postgres://` URL (the PostgreSQL driver, loaded
 * only then) or the home directory of a SQLite store.
 */
import { existsSync } from "node:fs"
import { join } from "node:path"
import type { Ledger, OpenOptions } from "./ledger.ts"
import * as sqlite from "./sqlite/sqlite.ts"
import { DB_FILE } from "./sqlite/faults.ts"
import { isUrl } from "./url.ts"

export { isUrl, shown, withoutPassword } from "./url.ts"

/**
 * Whether a store has been made there: the commands that read or act on runs must not make one. For a URL: its
 * schema exists and holds a ledger (an unreachable server is an error that names it, password masked).
 */
export async function exists(store: string): Promise<boolean> {
  if (!isUrl(store)) return existsSync(join(store, DB_FILE))
  return (await import("./postgres/found.ts")).found(store)
}

/**
 * Opens (making it if need be) the ledger at a store: a PostgreSQL URL, or a home directory for SQLite. A read
 * (`access: "read"`) of a URL that `exists` just found takes the connection it made, small and already checked;
 * a writer's open has a pool of its own.
 */
export async function open(store: string, options: OpenOptions = {}): Promise<Ledger> {
  if (!isUrl(store)) return sqlite.open(store, options)
  const [pg, found] = await Promise.all([import("./postgres/postgres.ts"), import("./postgres/found.ts")])
  if (options.access === "read") {
    const kept = found.take(store)
    if (kept) return pg.open(store, {}, kept)
    return pg.open(store, { max: found.READ_MAX })
  }
  await found.release()
  return pg.open(store)
}
