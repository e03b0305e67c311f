/** Runs before every test file: no test may reach a real provider or a user's files. */
import { setDefaultTimeout } from "bun:test"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

for (const key of Object.keys(process.env)) {
  if (/(_API_KEY|_BASE_URL)$/.test(key)) delete process.env[key]
}
process.env.SPOOL_HOME = mkdtempSync(join(tmpdir(), "spool-test-home-"))

// bunfig's [test] timeout is not applied by this Bun, and this reaches only some files of a full run: the test
// command passes --timeout 60000 as well (scripts/test.sh, package.json)
setDefaultTimeout(60_000)
