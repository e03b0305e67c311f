/** `spool migrate`: a SQLite store's runs copied into a PostgreSQL store, to go on there with many workers. */
import { defineCommand } from "citty"
import { UsageError } from "../core/base/errors.ts"
import { common, home } from "./common.ts"

export const migrate = defineCommand({
  meta: {
    name: "migrate",
    description:
      "Copy a SQLite store's runs (items, attempts, batches, counts) and its response cache into a PostgreSQL store, to go on there",
  },
  args: {
    from: {
      type: "string",
      description: "The SQLite store's folder (default: --home, $SPOOL_HOME or ./.spool)",
      valueHint: "dir",
    },
    to: {
      type: "string",
      description:
        "The PostgreSQL store's URL, postgres://user@host:5432/db[?schema=NAME] (or set SPOOL_STORE)",
      valueHint: "url",
    },
    run: { type: "string", description: "Only this run (name or id; default: every run)", valueHint: "run" },
    // not ...common: its --store would be a second name for --to
    home: {
      type: "string",
      description: "The SQLite store's folder, as for the other commands (--from wins)",
    },
    verbose: common.verbose,
  },
  async run({ args }) {
    const to = args.to ?? (process.env.SPOOL_STORE || undefined)
    if (!to)
      throw new UsageError(
        "--to: where to migrate is missing",
        "Give the PostgreSQL store's URL: --to postgres://user@host:5432/db (or set SPOOL_STORE).",
      )
    const { copy } = await import("../core/ledger/postgres/copy.ts")
    const { isUrl } = await import("../core/ledger/url.ts")
    if (!isUrl(to))
      throw new UsageError(
        `--to: "${to}" is not a PostgreSQL URL`,
        "Give one as postgres://user@host:5432/db (add ?schema=NAME for a schema of its own).",
      )
    const from = home(args.from ?? args.home)
    const done = await copy({ from, to, run: args.run })
    const n = (x: number) => x.toLocaleString("en-US")
    const names = done.runs.map((r) => `"${r.name}" (${r.id}, ${r.state})`).join(", ")
    const lines = [
      `migrated ${n(done.runs.length)} run${done.runs.length === 1 ? "" : "s"} to ${done.shown}: ${names}`,
      `  ${n(done.rows.items)} items, ${n(done.rows.attempts)} attempts, ${n(done.rows.batches)} batches, ` +
        `${n(done.rows.problems)} problems, ${n(done.rows.cache)} cached answers`,
      "  Go on there: spool run job.toml --store URL, with this URL (every worker alike).",
      `  The runs stay in ${args.from ?? args.home ?? (process.env.SPOOL_HOME || "./.spool")} too: going on there as well would send their items twice.`,
    ]
    if (done.liveBatches > 0)
      lines.push(
        `  ${n(done.liveBatches)} live batch${done.liveBatches === 1 ? "" : "es"} went along: whichever worker drives` +
          " the run's batches adopts them; their request files stay on this machine, and are made again from the" +
          " ledger where needed.",
      )
    process.stderr.write(`${lines.join("\n")}\n`)
    return 0
  },
})
