/**
 * Whether a PostgreSQL store has been made at a URL, found without making it: the commands that only read or act on
 * runs (status, runs, results, pause, …) must not create a schema, as they make no SQLite file.
 */
import { SQL } from "bun"
import { mask, RETRY_MS, retrying, schemaOf, type Pg } from "./connect.ts"

/** Whether the URL's schema holds a ledger (its `runs` table); an unreachable server is a StoreError naming it. */
export async function found(url: string): Promise<boolean> {
  const schema = schemaOf(url)
  const u = new URL(url)
  u.searchParams.delete("schema")
  const envRetry = Number(process.env.SPOOL_PG_RETRY_S)
  const retryMs = Number.isFinite(envRetry) && envRetry >= 0 ? envRetry * 1000 : RETRY_MS
  const sql = new SQL({
    url: u.toString(),
    max: 1,
    connectionTimeout: 10,
    connection: { application_name: "spool" },
  })
  const pg: Pg = { sql, schema, shown: mask(url), retryMs }
  try {
    const [row] = await retrying(
      pg,
      () => sql`SELECT to_regclass(${`"${schema}".runs`}) IS NOT NULL AS found`,
    )
    return row?.found === true
  } finally {
    await sql.close().catch(() => {})
  }
}
