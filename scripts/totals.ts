/**
 * Prints bun test's own counts from its JUnit report as "N passed, N failed"; exits 1 when any failed.
 * Skipped tests are listed and counted beside them, or as failed under SPOOL_REQUIRE_ALL=1 (CI): the only tests
 * allowed to skip are those that need what a user's machine may lack (the OpenAPI specs, Chromium), and CI has it.
 */
const file = process.argv[2] ?? "test/artifacts/junit.xml"
const xml = await Bun.file(file)
  .text()
  .catch(() => "")
const root = /<testsuites\b[^>]*>/.exec(xml)?.[0]
if (!root) {
  console.log("0 passed, 1 failed")
  process.exit(1)
}
const attr = (name: string) => Number(new RegExp(`\\b${name}="(\\d+)"`).exec(root)?.[1] ?? 0)
const strict = process.env.SPOOL_REQUIRE_ALL === "1"
const skipped = attr("skipped")
const failed = attr("failures") + attr("errors") + (strict ? skipped : 0)
const passed = attr("tests") - attr("failures") - attr("errors") - skipped
if (strict && skipped) {
  const ENTITIES: Record<string, string> = { lt: "<", gt: ">", quot: '"', apos: "'", amp: "&" }
  const text = (s = "") => s.replace(/&(\w+);/g, (all, e: string) => ENTITIES[e] ?? all)
  for (const [, name, describe, where] of xml.matchAll(
    /<testcase name="([^"]*)" classname="([^"]*)"[^>]*\bfile="([^"]*)"[^>]*>\s*<skipped/g,
  )) {
    const path = [where, describe, name].filter(Boolean).map(text).join(" > ")
    console.log(`(skipped: counted as failed, since SPOOL_REQUIRE_ALL=1) ${path}`)
  }
}
console.log(`${passed} passed, ${failed} failed${skipped && !strict ? `, ${skipped} skipped` : ""}`)
process.exit(failed > 0 || passed === 0 ? 1 : 0)
