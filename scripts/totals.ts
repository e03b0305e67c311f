/** Prints bun test's own counts from its JUnit report as "N passed, N failed"; exits 1 when any failed. */
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
const failed = attr("failures") + attr("errors")
const skipped = attr("skipped")
const passed = attr("tests") - failed - skipped
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`)
process.exit(failed > 0 || passed === 0 ? 1 : 0)
