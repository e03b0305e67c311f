/**
 * The binary's entry. `--version` is answered before the command line is even loaded; everything else loads
 * src/cli.ts (a chunk of its own in the compiled binary), which loads the rest as commands need it.
 */
declare const SPOOL_VERSION: string | undefined

const first = process.argv[2]
if (first === "--version" || first === "-v") {
  // console.log: process.stdout costs ~15 ms to set up; the line is cli.ts's too (for `spool --version` from src/cli.ts)
  console.log(`spool ${typeof SPOOL_VERSION === "string" ? SPOOL_VERSION : "0.0.0-dev"} (MIT licence)`)
} else {
  await (await import("./cli.ts")).start()
}

export {}
