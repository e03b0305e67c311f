/**
 * The PostgreSQL server the tests of the PostgreSQL driver use: SPOOL_TEST_PG (a URL), as .ci/run sets it. Each
 * test takes a schema of its own (`pgSchema()`) and drops it after.
 */
import { SQL } from "bun"
import { REQUIRE_ALL } from "./needs.ts"

/** The server's URL, when one is given. */
const GIVEN = process.env.SPOOL_TEST_PG ?? ""

/** Why the PostgreSQL tests cannot run here; empty when they can. */
export const PG_MISSING = GIVEN
  ? ""
  : "no PostgreSQL server: set SPOOL_TEST_PG=postgres://user@host:5432/db (README.md, Testing)"

/** Whether the PostgreSQL tests skip: only when no server is found and not every test is required. */
export const SKIP_PG = PG_MISSING !== "" && !REQUIRE_ALL

/** The server's URL (no schema). */
export async function pgServer(): Promise<string> {
  if (!GIVEN) throw new Error(PG_MISSING)
  return GIVEN
}

let n = 0

/** A fresh schema on the test server: its URL (`?schema=`), dropped with every object in it when disposed of. */
export async function pgSchema(): Promise<{ url: string; schema: string } & AsyncDisposable> {
  const server = await pgServer()
  const schema = `spool_test_${process.pid}_${Date.now().toString(36)}_${n++}`
  const u = new URL(server)
  u.searchParams.set("schema", schema)
  return {
    url: u.toString(),
    schema,
    async [Symbol.asyncDispose]() {
      const sql = new SQL(server)
      try {
        await sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
      } finally {
        await sql.close()
      }
    },
  }
}
