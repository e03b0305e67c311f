/**
 * The binary's entry. `--version` is answered before the command line is even loaded; everything else loads
 * src/cli.ts (a chunk of its own in the compiled binary), which loads the rest as commands need it.
 */
declare const SPOOL_VERSION: string | undefined

const first = process.argv[2]
if (first === "--version" || first === "-v") {
  console.log(typeof SPOOL_VERSION === "string" ? SPOOL_VERSION : "0.0.0-dev") // console.log: process.stdout costs ~15 ms to set up
} else {
  await (await import("./cli.ts")).start()
}

export {}
