/**
 * Runs before every test file: no test may reach a real provider or a user's files. It also says, once, when the
 * spec conformance checks are skipped for want of the OpenAPI specs, and stops the run when they are required.
 */
import { afterAll, setDefaultTimeout } from "bun:test"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { REQUIRE_SPECS, SPECS_DIR, SPECS_MISSING } from "./lib/spec.ts"

for (const key of Object.keys(process.env)) {
  if (/(_API_KEY|_BASE_URL)$/.test(key)) delete process.env[key]
}
process.env.SPOOL_HOME = mkdtempSync(join(tmpdir(), "spool-test-home-"))

// bunfig's [test] timeout is not applied by this Bun, and this reaches only some files of a full run: the test
// command passes --timeout 60000 as well (scripts/test.sh, package.json)
setDefaultTimeout(60_000)

if (!SPECS_DIR && REQUIRE_SPECS) {
  // before any test: without the specs the fakes could not check a request, and the e2e tests would wait out
  // their timeouts one by one
  console.error(`SPOOL_REQUIRE_SPECS=1, but ${SPECS_MISSING}`)
  process.exit(1)
}
// a preload's afterAll runs once, after the last file: the line lands beside the totals, where it is read
if (!SPECS_DIR) {
  afterAll(() => {
    console.error(
      `SKIPPED the spec conformance checks (Steady on every provider request shape; the schema checks of the fake servers' requests and answers): ${SPECS_MISSING}`,
    )
  })
}
