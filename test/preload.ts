/**
 * Runs before every test file: no test may reach a real provider or a user's files. It also says, once, when the
 * tests that need the OpenAPI specs or Chromium skip for want of them, and stops the run when they are required.
 */
import { afterAll, setDefaultTimeout } from "bun:test"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { CHROMIUM_MISSING, REQUIRE_ALL } from "./lib/needs.ts"
import { SPECS_DIR, SPECS_MISSING } from "./lib/spec.ts"
import { PG_MISSING, PRIVATE_PG_MISSING, stopPgServers } from "./lib/pg.ts"

for (const key of Object.keys(process.env)) {
  if (/(_API_KEY|_BASE_URL)$/.test(key)) delete process.env[key]
}
process.env.SPOOL_HOME = mkdtempSync(join(tmpdir(), "spool-test-home-"))

// bunfig's [test] timeout is not applied by this Bun, and this reaches only some files of a full run: the test
// command passes --timeout 60000 as well (scripts/test.sh, package.json)
setDefaultTimeout(60_000)

// what some tests need and this machine lacks: those tests skip, or, when everything is required, nothing runs
const missing = [
  {
    what: "the spec conformance checks (Steady on every provider request shape; the schema checks of the fake servers' requests and answers)",
    why: SPECS_MISSING,
  },
  { what: "the status page's browser test (test/e2e/page.test.ts)", why: CHROMIUM_MISSING },
  {
    what: "the PostgreSQL driver's tests (the ledger contract, the many-worker and restart tests on PostgreSQL)",
    why: PG_MISSING,
  },
  {
    // SPOOL_TEST_PG is given, but these need a server of their own to stop and start
    what: "the PostgreSQL restart tests (test/core/ledger/postgres-restart.test.ts)",
    why: PG_MISSING ? "" : PRIVATE_PG_MISSING,
  },
].filter((m) => m.why !== "")
if (missing.length && REQUIRE_ALL) {
  // before any test: without the specs the fakes could not check a request, and the e2e tests would wait out
  // their timeouts one by one
  for (const m of missing) console.error(`SPOOL_REQUIRE_ALL=1, but ${m.why}`)
  process.exit(1)
}
// the PostgreSQL servers the tests started (test/lib/pg.ts) stop and go after the last file
afterAll(stopPgServers)
// a preload's afterAll runs once, after the last file: the lines land beside the totals, where they are read
if (missing.length) afterAll(() => missing.forEach((m) => console.error(`SKIPPED ${m.what}: ${m.why}`)))
