/** Compiles dist/spool for this machine, with the version injected, then smoke-tests the binary. */
import pkg from "./package.json"

const outfile = "dist/spool"
const version = process.env.SPOOL_VERSION ?? pkg.version

const result = await Bun.build({
  // the response cache's look-ups worker (engine/asker.ts) is an entrypoint of its own: a compiled program finds a
  // `new Worker(…)` only among the entrypoints it was built from
  entrypoints: ["src/main.ts", "src/core/engine/ask-worker.ts"],
  compile: {
    outfile,
    autoloadBunfig: false,
    autoloadDotenv: false,
    autoloadTsconfig: false,
    autoloadPackageJson: false,
  },
  bytecode: true,
  // every entrypoint at the root of the program's files, where `new URL("./ask-worker.ts", import.meta.url)` finds it
  naming: { entry: "[name].[ext]" },
  format: "esm",
  splitting: true,
  minify: true,
  sourcemap: "none",
  define: { SPOOL_VERSION: JSON.stringify(version) },
})
if (!result.success) {
  for (const message of result.logs) console.error(message)
  process.exit(1)
}

const smoke = Bun.spawnSync([outfile, "--version"])
const said = smoke.stdout.toString().trim()
const expected = `spool ${version} (MIT licence)`
if (smoke.exitCode !== 0 || said !== expected) {
  console.error(
    `smoke test failed: \`${outfile} --version\` said "${said}" (exit ${smoke.exitCode}), expected "${expected}"`,
  )
  console.error(smoke.stderr.toString())
  process.exit(1)
}
console.error(`built ${outfile} ${version}`)
