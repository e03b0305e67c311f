/** Runs before every test file: no test may reach a real provider or a user's files. */
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

for (const key of Object.keys(process.env)) {
  if (/(_API_KEY|_BASE_URL)$/.test(key)) delete process.env[key]
}
process.env.SPOOL_HOME = mkdtempSync(join(tmpdir(), "spool-test-home-"))
