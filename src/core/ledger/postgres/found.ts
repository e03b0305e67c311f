/**
 * Whether a PostgreSQL store has been made at a URL, found without making it: the commands that only read or act on
 * runs (status, runs, results, pause, …) must not create a schema, as they make no SQLite file. The connection that
 * found it is kept for the read-only open that follows (open.ts), so `spool status` connects once.
 */
import { client, failure, retrying, version, type Pg } from "./connect.ts"

/** Connections of a read command's pool: its few reads go out together, pipelined on them. */
export const READ_MAX = 1

/** The client `found` connected, with the version it read, until an open of the same URL takes it. */
let kept: { url: string; pg: Pg; version: number } | undefined

/**
 * Whether the URL's schema holds a ledger (its `meta` has a version: the first migration made `runs` with it); an
 * unreachable server is a StoreError naming it. One read of `meta.version`, on a connection kept for `take`.
 */
export async function found(url: string): Promise<boolean> {
  const pg = client(url, { max: READ_MAX })
  let v: number | null
  try {
    v = await retrying(pg, () => version(pg))
  } catch (err) {
    await pg.sql.close().catch(() => {})
    throw failure(err, pg)
  }
  if (!v) {
    await pg.sql.close().catch(() => {})
    return false
  }
  await release()
  kept = { url, pg, version: v }
  return true
}

/** The client `found` left connected to `url`, and the version it read there; it is the caller's to close. */
export function take(url: string): { pg: Pg; version: number } | undefined {
  if (kept?.url !== url) return undefined
  const taken = kept
  kept = undefined
  return taken
}

/** Closes the client `found` kept, if no open took it. */
export async function release(): Promise<void> {
  const left = kept
  kept = undefined
  await left?.pg.sql.close().catch(() => {})
}
