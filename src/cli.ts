/** The spool command line: each command parses, calls the core, prints. Errors become text in `main` only. */
import { defineCommand, runCommand, type ArgsDef, type CommandDef } from "citty"
import { SpoolError, type ExitCode } from "./plugins/api/errors.ts"
import { UsageError } from "./core/base/errors.ts"
import { scrub } from "./plugins/api/redact.ts"
import * as jobs from "./core/job/job.ts"
import { mustFind, type Ledger } from "./core/ledger/ledger.ts"
import { common, existingStore, home, lazyLedger, storeUrl, VERSION } from "./cli/common.ts"
import { cancel, exportCmd, pause, prune, resume, retry } from "./cli/control.ts"
import { canaryArgs, canaryOf, confirmer, withoutCanary } from "./cli/canary.ts"
import { cache } from "./cli/cache.ts"
import { review } from "./cli/review.ts"
import { jobFlags, mustHaveJob, runArgs } from "./cli/flags.ts"
import { usage } from "./cli/help.ts"
import { migrate } from "./cli/migrate.ts"
import { results } from "./cli/results.ts"

// The store, the engine, the sources and the providers load when a command needs them, so `--version` and `--help`
// start without evaluating them (~30 ms of startup here; docs/ARCHITECTURE.md, "Startup").
const engine = () => import("./core/engine/run.ts")
const lazyReport = () => import("./core/report/report.ts")
const lazyRegistry = () => import("./plugins/registry.ts")

const serveArgs = {
  port: { type: "string", description: "Port of the status page (default 4777; 0 picks a free one)" },
  host: {
    type: "string",
    description: "Address to listen on (default 127.0.0.1; any other needs --token)",
  },
  token: {
    type: "string",
    description: "Secret every request must carry (or set SPOOL_TOKEN); open the page once with ?token=",
  },
} as const satisfies ArgsDef

/**
 * Starts the status page for --serve, serve and watch, on `store` (a PostgreSQL URL or a SQLite home); prints its
 * address on stderr.
 */
async function startServer(
  store: string,
  args: { home?: string | undefined; port?: string; host?: string; token?: string },
) {
  const port = args.port === undefined ? 4777 : Number(args.port)
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new UsageError(`--port: "${args.port}" is not a port`, "Give a number from 0 to 65535.")
  const token = args.token ?? (process.env.SPOOL_TOKEN || undefined)
  const [{ start }, ledger] = await Promise.all([import("./serve.ts"), lazyLedger()])
  const db = await ledger.open(store)
  try {
    const server = start({
      ledger: db,
      home: home(args.home),
      host: args.host ?? "127.0.0.1",
      port,
      token,
      version: VERSION,
    })
    process.stderr.write(`serving ${server.url}${token ? " (open it once with ?token=<your token>)" : ""}\n`)
    return {
      url: server.url,
      stop() {
        server.stop()
        void db.close()
      },
    }
  } catch (err) {
    await db.close()
    throw err
  }
}

/** Quotes an argument for a POSIX shell when it needs it. */
function quote(arg: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`
}

/** `run` and `watch`: prepare, execute with progress on stderr, stop cleanly on the first signal. */
async function runJob(
  args: Record<string, unknown>,
  rawArgs: string[],
  o: { command: "run" | "watch"; serve: boolean; follow: boolean },
): Promise<ExitCode> {
  const ledger = await lazyLedger()
  // a store URL's password is never printed nor stored: the command to resume finds it where this one did
  // what resumes the run: without what starts afresh (a --rerun-from given again would run its steps a third time)
  const again = withoutCanary(rawArgs)
    .filter(
      (a, i, all) => a !== "--rerun-from" && all[i - 1] !== "--rerun-from" && !a.startsWith("--rerun-from="),
    )
    .filter((a) => a !== "--new-run" && a !== "--reingest")
    .map((a) =>
      ledger.isUrl(a)
        ? ledger.withoutPassword(a)
        : a.startsWith("--store=")
          ? `--store=${ledger.withoutPassword(a.slice(8))}`
          : a,
    )
  const resume = ["spool", o.command, ...again].map(quote).join(" ")
  const file = args.job as string | undefined
  const flags = jobFlags(args, rawArgs)
  // --store, the job's [store] url, SPOOL_STORE, or the SQLite store under --home, in that order
  const url = storeUrl(jobs.load(file, flags).store)
  // the page first: a busy port is refused before the run is touched
  const server = o.serve
    ? await startServer(
        url ?? home(args.home as string | undefined),
        args as Parameters<typeof startServer>[1],
      )
    : undefined
  let session: Awaited<ReturnType<Awaited<ReturnType<typeof engine>>["prepare"]>>
  try {
    session = await (
      await engine()
    ).prepare({
      file,
      flags,
      home: home(args.home as string | undefined),
      store: url,
      newRun: (args["new-run"] as boolean | undefined) ?? false,
      reingest: (args.reingest as boolean | undefined) ?? false,
      resume,
      follow: o.follow,
      canary: canaryOf(args.canary as string | undefined),
      rerunFrom: args["rerun-from"] as string | undefined,
    })
  } catch (err) {
    server?.stop()
    throw err
  }
  let signals = 0
  const onSignal = (signal: NodeJS.Signals) => {
    signals++
    if (signals > 1) {
      process.stderr.write(`\nsecond ${signal}: exiting now; in-flight items are re-queued on resume.\n`)
      process.exit(130)
    }
    process.stderr.write(
      `\n${signal}: finishing in-flight calls (up to ${session.job.limits.grace_s} s; again to exit now)\n`,
    )
    session.stop(session.job.limits.grace_s * 1000)
  }
  process.on("SIGINT", onSignal)
  process.on("SIGTERM", onSignal)
  const report = await lazyReport()
  const progress = report.progress(process.stderr)
  let canaryStop: { items: number; rest: number } | undefined
  const confirm = confirmer((args.yes as boolean | undefined) ?? false, () => progress.end())
  try {
    const code = await session.execute(progress.tick, async (report) => {
      const go = await confirm(report)
      if (!go) canaryStop = report
      return go
    })
    progress.end()
    if (code === 130) {
      process.stderr.write(`Interrupted; nothing finished is lost. Resume with:\n  ${resume}\n`)
    } else if (canaryStop) {
      process.stderr.write(
        `Stopped after the canary; nothing more was sent. \`${resume}\` goes on with the other ${canaryStop.rest}` +
          ` item(s); the ${canaryStop.items} done are kept and not sent again.\n`,
      )
    } else if (session.summary) {
      for (const line of session.summary()) process.stderr.write(`${line}\n`)
    } else {
      const t = session.ticker
      const where = session.store ? ` --store ${quote(session.store)}` : ""
      const review = t.review ? `, ${t.review} need review` : ""
      // the run's hits, as its summary counts them (the engine reads it once the run has ended); nothing is said of
      // savings that count only answers of unknown price
      const saved = t.cache?.savedUsd ? `, saved ${report.usd(t.cache.savedUsd)}` : ""
      const served = t.cache?.hits ? ` (${t.cache.hits} from the cache${saved})` : ""
      process.stderr.write(
        `run "${session.run.name}": ${t.done - t.failed - t.review} completed${served}, ${t.failed} failed${review} of ${t.total}` +
          ` — \`spool results ${quote(session.run.name)}${where}\` for the outputs\n`,
      )
      if (t.review > 0)
        process.stderr.write(
          `${t.review} item(s) wait for review: spool review ${quote(session.run.name)}${where} (approve, edit or reject them)\n`,
        )
    }
    return code
  } finally {
    server?.stop()
  }
}

const run = defineCommand({
  meta: { name: "run", description: "Start a run, or resume the run of the same name" },
  args: {
    ...runArgs,
    serve: { type: "boolean", description: "Serve the status page while the run goes (see `spool serve`)" },
    ...serveArgs,
    ...canaryArgs,
  },
  async run({ args, rawArgs }) {
    mustHaveJob("run", args)
    const serving = args.serve ?? false
    if (!serving && (args.port !== undefined || args.host !== undefined || args.token !== undefined))
      throw new UsageError("--port, --host and --token go with --serve", "Add --serve, or drop them.")
    return runJob(args, rawArgs, { command: "run", serve: serving, follow: false })
  },
})

const watch = defineCommand({
  meta: {
    name: "watch",
    description:
      "Keep a run open: rows appended to its inputs and new files matching its glob are processed as they arrive; serves the status page",
  },
  args: { ...runArgs, ...serveArgs },
  async run({ args, rawArgs }) {
    mustHaveJob("watch", args)
    return runJob(args, rawArgs, { command: "watch", serve: true, follow: true })
  },
})

const serve = defineCommand({
  meta: {
    name: "serve",
    description: "Serve the status page and the JSON API of every run in the store (until Ctrl+C)",
  },
  args: { ...serveArgs, ...common },
  async run({ args }) {
    const server = await startServer(await existingStore(args), args)
    await new Promise<void>((done) => {
      const stop = () => done()
      process.once("SIGINT", stop)
      process.once("SIGTERM", stop)
    })
    server.stop()
    return 0
  },
})

const status = defineCommand({
  meta: { name: "status", description: "Per-state counts, attempts, errors, rate and ETA of a run" },
  args: {
    run: { type: "positional", required: false, description: "Run name or id (default: the latest)" },
    json: { type: "boolean", description: "Machine-readable output" },
    ...common,
  },
  async run({ args }) {
    const [ledger, report] = await Promise.all([lazyLedger(), lazyReport()])
    const db = await ledger.open(await existingStore(args), { access: "read" })
    try {
      const run = await mustFind(db, args.run)
      const pipelines = await import("./core/report/pipeline.ts")
      const pipeline = await pipelines.pipelineOf(db, run)
      if (pipeline) {
        process.stdout.write(
          args.json ? `${JSON.stringify(pipeline, null, 2)}\n` : pipelines.pipelineText(pipeline),
        )
        return 0
      }
      const view = await report.status(db, run)
      process.stdout.write(args.json ? `${JSON.stringify(view, null, 2)}\n` : report.statusText(view))
    } finally {
      await db.close()
    }
    return 0
  },
})

const runs = defineCommand({
  meta: { name: "runs", description: "Every run in the store" },
  args: { json: { type: "boolean", description: "Machine-readable output" }, ...common },
  async run({ args }) {
    const [ledger, report] = await Promise.all([lazyLedger(), lazyReport()])
    const db = await ledger.open(await existingStore(args), { access: "read" })
    try {
      const list = []
      for (const r of await db.runs.list()) list.push(await report.runLine(db, r))
      process.stdout.write(args.json ? `${JSON.stringify(list, null, 2)}\n` : report.runsText(list))
    } finally {
      await db.close()
    }
    return 0
  },
})

const plugins = defineCommand({
  meta: {
    name: "plugins",
    description:
      "List the sources and providers, built-in and loaded from a job's plugins, with their options",
  },
  args: {
    job: { type: "positional", required: false, description: "A job file whose plugins = [...] to load" },
    json: { type: "boolean", description: "Machine-readable output" },
    verbose: common.verbose,
  },
  async run({ args }) {
    const [registry, report] = await Promise.all([lazyRegistry(), lazyReport()])
    if (args.job) {
      const { job } = jobs.load(args.job, {})
      await registry.load(job.plugins ?? [])
    }
    const list = registry.list()
    process.stdout.write(args.json ? `${JSON.stringify(list, null, 2)}\n` : report.pluginsText(list))
    return 0
  },
})

const { "new-run": _newRun, reingest: _reingest, "rerun-from": _rerun, home: _home, ...jobArgs } = runArgs

const estimate = defineCommand({
  meta: {
    name: "estimate",
    description: "Items, estimated tokens and cost of a job, without calling anything or writing anything",
  },
  args: { ...jobArgs, json: { type: "boolean", description: "Machine-readable output" } },
  async run({ args, rawArgs }) {
    mustHaveJob("estimate", args)
    const { job, steps } = jobs.load(args.job as string | undefined, jobFlags(args, rawArgs))
    const est = await import("./core/engine/estimate.ts")
    const e = await est.estimate(job)
    process.stdout.write(args.json ? `${JSON.stringify(e, null, 2)}\n` : est.estimateText(e))
    // the steps after the first make requests of its answers, which no estimate can know before the run
    if (steps && steps.length > 1)
      process.stderr.write(
        `a pipeline: this is its first step (${steps[0]!.name}) alone; the ${steps.length - 1} after it depend on its answers\n`,
      )
    return 0
  },
})

/** Every command, by name (test/cli.test.ts reads their flags). */
export const COMMANDS = {
  run,
  watch,
  serve,
  estimate,
  status,
  runs,
  results,
  pause,
  resume,
  cancel,
  retry,
  export: exportCmd,
  prune,
  cache,
  review,
  migrate,
  plugins,
} as Record<string, CommandDef>

const main = defineCommand({
  meta: { name: "spool", version: VERSION, description: "Durable LLM batch jobs, from one executable" },
  subCommands: COMMANDS,
})

/** Refuses flags a command does not define: a typo must not be silently ignored. */
function checkFlags(cmd: CommandDef, rawArgs: string[]): void {
  const defined = new Set(Object.keys((cmd.args ?? {}) as ArgsDef))
  for (const arg of rawArgs) {
    if (arg === "--") break
    if (!arg.startsWith("--")) continue
    const name = arg.slice(2).split("=")[0] as string
    if (defined.has(name) || (name.startsWith("no-") && defined.has(name.slice(3)))) continue
    const guess = jobs.meant(name, defined)
    throw new UsageError(
      `unknown flag --${name}${guess ? `; did you mean --${guess}?` : ""}`,
      `See \`spool ${cmd === main ? "" : "<command> "}--help\`.`,
    )
  }
}

/**
 * The command to run of `spool NAME rest…`: NAME's own, or, for a command of commands (`spool cache stats`), the one
 * named next, with the arguments after it (citty would drop its exit code, and check no flag of it). Its help is
 * asked of NAME's when no known one is named.
 */
function subCommand(
  name: string,
  named: CommandDef,
  rest: string[],
  help: boolean,
): { cmd: CommandDef; parent: CommandDef; args: string[] } {
  const subs = named.subCommands as Record<string, CommandDef> | undefined
  if (!subs) return { cmd: named, parent: main, args: rest }
  const [sub, ...args] = rest
  const given = sub !== undefined && !sub.startsWith("-") ? sub : undefined
  const chosen = given === undefined ? undefined : subs[given]
  if (chosen) return { cmd: chosen, parent: { meta: { name: `spool ${name}`, version: VERSION } }, args }
  if (help) return { cmd: named, parent: main, args: rest }
  const names = Object.keys(subs)
  const guess = given === undefined ? undefined : jobs.meant(given, names)
  // a command of commands that does something itself (`spool review [run]`) takes what is not one of them, unless it
  // is a misspelt one; citty, given the command with its subcommands, would take the word for an unknown one of them
  if (named.run && guess === undefined)
    return { cmd: { ...named, subCommands: undefined }, parent: main, args: rest }
  throw new UsageError(
    given === undefined
      ? `spool ${name}: say which: ${names.join(", ")}`
      : `unknown command "${name} ${given}"${guess ? `; did you mean "${name} ${guess}"?` : ""}`,
    `See \`spool ${name} --help\`.`,
  )
}

export async function cli(argv: string[]): Promise<ExitCode> {
  const verbose = argv.includes("--verbose")
  try {
    const [name, ...rest] = argv
    if (!name || name === "--help" || name === "-h") {
      process.stdout.write(`${await usage(main, undefined, process.stdout)}\n`)
      return 0
    }
    if (name === "--version" || name === "-v") {
      process.stdout.write(`spool ${VERSION} (MIT licence)\n`)
      return 0
    }
    const named = COMMANDS[name]
    if (!named) {
      const guess = jobs.meant(name, Object.keys(COMMANDS))
      throw new UsageError(
        `unknown command "${name}"${guess ? `; did you mean "${guess}"?` : ""}`,
        `Commands: ${Object.keys(COMMANDS).join(", ")}.`,
      )
    }
    const help = rest.includes("--help") || rest.includes("-h")
    const { cmd, parent, args } = subCommand(name, named, rest, help)
    if (help) {
      process.stdout.write(`${await usage(cmd, parent, process.stdout)}\n`)
      return 0
    }
    checkFlags(cmd, args)
    const { result } = await runCommand(cmd, { rawArgs: args })
    return (typeof result === "number" ? result : 0) as ExitCode
  } catch (err) {
    return fail(err, verbose)
  }
}

function fail(err: unknown, verbose: boolean): ExitCode {
  // our errors are scrubbed when made; anything else (and any stack) may still carry a key a provider echoed
  const say = (text: string) => process.stderr.write(scrub(text))
  if (err instanceof SpoolError) {
    say(`spool: ${err.message}\n`)
    if (err.hint) say(`  ${err.hint}\n`)
    if (verbose && err.stack) say(`${err.stack}\n`)
    return err.exit
  }
  const e = err as Error
  const cittyUsage = (e as { code?: string })?.code === "EARG"
  say(`spool: ${cittyUsage ? "" : "internal error: "}${e?.message ?? String(err)}\n`)
  if (verbose || !cittyUsage) say(`${e?.stack ?? ""}\n`)
  return cittyUsage ? 2 : 1
}

/** Runs the command line of this process and exits with its code. The binary enters here through src/main.ts. */
export async function start(): Promise<never> {
  process.umask(0o077)
  jobs.loadDotenv()
  const code = await cli(process.argv.slice(2))
  // exit only once stdout is handed to the OS; a pipe's queued tail would be cut off otherwise (a reader that
  // has gone away makes this write fail: that is fine, there is no one left to read the tail)
  process.stdout.on("error", () => {})
  await new Promise((done) => process.stdout.write("", done))
  process.exit(code)
}

if (import.meta.main) await start()
