/** The commands that act on a run from outside the process that runs it: pause, resume, cancel, retry, export, prune. */
import { defineCommand, type ArgsDef } from "citty"
import { resolve } from "node:path"
import { UsageError } from "../core/base/errors.ts"
import type { Ledger } from "../core/ledger/ledger.ts"
import { common, existingStore, home, lazyLedger, VERSION, type Where } from "./common.ts"

const refArgs = {
  run: { type: "positional", required: false, description: "Run name or id (default: the latest)" },
  ...common,
} as const satisfies ArgsDef

/** Opens the store (--store, SPOOL_STORE or --home) for a command that acts on one run, and closes it after. */
async function withStore<T>(where: Where, use: (db: Ledger) => Promise<T>) {
  const db = await (await lazyLedger()).open(await existingStore(where))
  try {
    return await use(db)
  } finally {
    await db.close()
  }
}

const lazyControl = () => import("../core/engine/control.ts")

/**
 * Runs `work` with a signal the first SIGINT or SIGTERM aborts, so it can stop cleanly; a second one exits at once.
 * The process's signals are listened to here, at the front door, and nowhere in the core.
 */
async function interruptible<T>(work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const stop = new AbortController()
  const onSignal = (signal: NodeJS.Signals) => {
    if (stop.signal.aborted) process.exit(130)
    process.stderr.write(`\n${signal}: stopping (again to exit now)\n`)
    stop.abort()
  }
  process.on("SIGINT", onSignal)
  process.on("SIGTERM", onSignal)
  try {
    return await work(stop.signal)
  } finally {
    process.off("SIGINT", onSignal)
    process.off("SIGTERM", onSignal)
  }
}

export const pause = defineCommand({
  meta: {
    name: "pause",
    description: "Stop sending new work (new batches, new calls); batches at the provider are still followed",
  },
  args: refArgs,
  async run({ args }) {
    const control = await lazyControl()
    process.stderr.write(await withStore(args, (db) => control.pause(db, args.run)))
    return 0
  },
})

export const resume = defineCommand({
  meta: { name: "resume", description: "Go on with a paused run" },
  args: refArgs,
  async run({ args }) {
    const control = await lazyControl()
    process.stderr.write(await withStore(args, (db) => control.resume(db, args.run)))
    return 0
  },
})

export const cancel = defineCommand({
  meta: {
    name: "cancel",
    description:
      "Cancel a run: its live batches are cancelled at the provider, and what they finished is kept",
  },
  args: refArgs,
  async run({ args }) {
    const control = await lazyControl()
    return withStore(args, (db) =>
      interruptible((signal) =>
        control.cancel(db, args.run, home(args.home), (line) => process.stderr.write(line), signal),
      ),
    )
  },
})

export const retry = defineCommand({
  meta: {
    name: "retry",
    description:
      "Move a run's failed (or needs_review, or rejected) items back to pending, their attempts kept",
  },
  args: {
    ...refArgs,
    state: { type: "string", description: "Which items: failed (default), needs_review or rejected" },
  },
  async run({ args }) {
    const from = args.state ?? "failed"
    if (from !== "failed" && from !== "needs_review" && from !== "rejected")
      throw new UsageError(`--state: "${from}" cannot be retried`, "Use failed, needs_review or rejected.")
    const control = await lazyControl()
    process.stderr.write(await withStore(args, (db) => control.retry(db, args.run, from)))
    return 0
  },
})

export const exportCmd = defineCommand({
  meta: {
    name: "export",
    description: "Write a run's bundle: manifest, batch request files, raw outputs, results",
  },
  args: {
    ...refArgs,
    dir: { type: "string", required: true, description: "A new or empty directory to write into" },
  },
  async run({ args }) {
    const control = await lazyControl()
    const dir = resolve(args.dir)
    process.stderr.write(await withStore(args, (db) => control.exportRun(db, args.run, dir, VERSION)))
    return 0
  },
})

export const prune = defineCommand({
  meta: {
    name: "prune",
    description: "Delete a finished run's batch request files, and its raw outputs once exported",
  },
  args: {
    ...refArgs,
    force: { type: "boolean", description: "Delete raw outputs even if the run was never exported" },
  },
  async run({ args }) {
    const control = await lazyControl()
    process.stderr.write(await withStore(args, (db) => control.prune(db, args.run, args.force ?? false)))
    return 0
  },
})
