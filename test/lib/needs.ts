/**
 * What some tests need that a user's machine may lack: the OpenAPI specs (test/lib/spec.ts) and Debian's Chromium
 * (the status page's browser test). Without them those tests skip and the preload says so, one line each; under
 * SPOOL_REQUIRE_ALL=1 (as .ci/run sets it) nothing may skip: a missing one stops the run, and a skipped test counts
 * as failed (scripts/totals.ts).
 */
import { existsSync } from "node:fs"

/** SPOOL_REQUIRE_ALL=1: every test runs; what a test needs and cannot find fails the run. */
export const REQUIRE_ALL = process.env.SPOOL_REQUIRE_ALL === "1"

/** The browser the status page's test drives. */
export const CHROMIUM = "/usr/bin/chromium"

/** Why the browser test cannot run here; empty when it can. */
export const CHROMIUM_MISSING = existsSync(CHROMIUM)
  ? ""
  : `no ${CHROMIUM}: install Debian's Chromium (apt-get install chromium), as .ci/run does`

/** Whether the browser test skips: only when Chromium is missing and not required. */
export const SKIP_BROWSER = CHROMIUM_MISSING !== "" && !REQUIRE_ALL
