/**
 * `spool review [run]` and `spool review approve|reject|edit|apply`: the items a run left for a person, listed and
 * decided on (README, "Review").
 */
import { defineCommand, type ArgsDef, type CommandDef } from "citty"
import { readFileSync } from "node:fs"
import * as v from "valibot"
import { UsageError } from "../core/base/errors.ts"
import type { Asked } from "../core/engine/review.ts"
import type { Ledger } from "../core/ledger/ledger.ts"
import { common, existingStore, lazyLedger, type Where } from "./common.ts"

const lazyReview = () => import("../core/engine/review.ts")

const stepFlag = {
  step: {
    type: "string",
    description: "A pipeline's step whose rows to review (default: the one with rows waiting)",
  },
} as const satisfies ArgsDef

const runFlag = {
  run: { type: "string", description: "Run name or id (default: the latest)" },
  ...stepFlag,
  ...common,
} as const satisfies ArgsDef

/** Opens the store for one command, and closes it after. */
async function withStore<T>(where: Where, access: "read" | "write", use: (db: Ledger) => Promise<T>) {
  const db = await (await lazyLedger()).open(await existingStore(where), { access })
  try {
    return await use(db)
  } finally {
    await db.close()
  }
}

/** The ids given as positionals (citty keeps them in `_`). */
function idsOf(args: { _: string[] }): string[] {
  const ids = args._.map(String).filter((id) => id !== "")
  if (ids.length === 0) throw new UsageError("no item named", "Give the ids `spool review` lists.")
  return ids
}

/** Takes the decisions and says what became of them. */
async function decideAll(
  args: Where & { run?: string | undefined; step?: string | undefined },
  asked: Asked[],
  by: string,
) {
  const review = await lazyReview()
  const { run, outcomes, left } = await withStore(args, "write", (db) =>
    review.decide(db, args.run, asked, by, args.step),
  )
  process.stderr.write(review.told(run.name, outcomes, left, run.parent !== null ? run.resume : undefined))
  return 0
}

const approve = defineCommand({
  meta: { name: "approve", description: "Accept the answers of items left for review, as they are" },
  args: { ...runFlag, reason: { type: "string", description: "A note kept with the decision" } },
  async run({ args }) {
    const asked = idsOf(args).map((id) => ({ id, decision: "approve" as const, reason: args.reason }))
    return decideAll(args, asked, "cli")
  },
})

const reject = defineCommand({
  meta: { name: "reject", description: "Reject the answers of items left for review (they end as rejected)" },
  args: { ...runFlag, reason: { type: "string", description: "Why: kept as the item's error" } },
  async run({ args }) {
    const asked = idsOf(args).map((id) => ({ id, decision: "reject" as const, reason: args.reason }))
    return decideAll(args, asked, "cli")
  },
})

const edit = defineCommand({
  meta: {
    name: "edit",
    description: "Correct an item's answer and accept it: --set field=value, or --output",
  },
  args: {
    ...runFlag,
    set: { type: "string", description: "field=value (a JSON value, else text); repeat it for more fields" },
    output: { type: "string", description: "The whole new answer (JSON for a structured job)" },
    reason: { type: "string", description: "A note kept with the decision" },
  },
  async run({ args, rawArgs }) {
    const review = await lazyReview()
    const ids = idsOf(args)
    if (ids.length > 1) throw new UsageError("edit one item at a time", "Give one id.")
    // citty keeps the last of a repeated flag: every --set is read from the raw arguments
    const sets = repeated(rawArgs, "--set")
    const set = sets.length > 0 ? Object.fromEntries(sets.map(review.assignment)) : undefined
    return decideAll(
      args,
      [{ id: ids[0]!, decision: "edit", set, output: args.output, reason: args.reason }],
      "cli",
    )
  },
})

/** Every value of a repeated flag (`--set a=1 --set b=2`, `--set=a=1`). */
function repeated(raw: string[], flag: string): string[] {
  const out: string[] = []
  for (let i = 0; i < raw.length; i++) {
    const arg = raw[i]!
    if (arg === flag && raw[i + 1] !== undefined) out.push(raw[++i]!)
    else if (arg.startsWith(`${flag}=`)) out.push(arg.slice(flag.length + 1))
  }
  return out
}

/** One line of a decisions file. */
const DecisionLine = v.strictObject({
  id: v.pipe(v.union([v.string(), v.number()]), v.transform(String)),
  decision: v.picklist(["approve", "edit", "reject"], 'must be "approve", "edit" or "reject"'),
  reason: v.optional(v.string()),
  set: v.optional(v.record(v.string(), v.unknown())),
  output: v.optional(v.unknown()),
})

/** A decisions file (JSONL): every line read and checked; a bad one is named with its line, and none is applied. */
export function decisionsOf(path: string, text: string): Asked[] {
  const asked: Asked[] = []
  const problems: string[] = []
  for (const [i, line] of text.split("\n").entries()) {
    if (line.trim() === "") continue
    const where = `${path} line ${i + 1}`
    let value: unknown
    try {
      value = JSON.parse(line)
    } catch (e) {
      problems.push(`${where}: not JSON (${(e as Error).message})`)
      continue
    }
    const parsed = v.safeParse(DecisionLine, value)
    if (!parsed.success) {
      const issue = parsed.issues[0]
      const key = issue.path?.map((p) => String(p.key)).join(".")
      problems.push(`${where}: ${key ? `${key}: ` : ""}${issue.message}`)
      continue
    }
    asked.push({ ...parsed.output, where })
  }
  if (problems.length > 0)
    throw new UsageError(
      `${path}: ${problems.length} bad line(s), nothing was decided:\n  ${problems.join("\n  ")}`,
      'Each line is {"id": "…", "decision": "approve" | "edit" | "reject", "reason"?, "set"? {…}, "output"?}.',
    )
  if (asked.length === 0) throw new UsageError(`${path} holds no decision`, "Give one JSON object a line.")
  return asked
}

const apply = defineCommand({
  meta: {
    name: "apply",
    description: "Take the decisions of a JSONL file, one a line; all or none are applied",
  },
  args: {
    file: { type: "positional", required: true, description: "The decisions file (JSONL)" },
    ...runFlag,
  },
  async run({ args }) {
    let text: string
    try {
      text = readFileSync(args.file, "utf8")
    } catch (e) {
      throw new UsageError(
        `cannot read ${args.file}: ${(e as Error).message}`,
        "Give the path of a JSONL file.",
      )
    }
    return decideAll(args, decisionsOf(args.file, text), `file ${args.file}`)
  },
})

const SUBS = { approve, reject, edit, apply } as Record<string, CommandDef>

/** `spool review [run]`: the items waiting, with why; or, named next, a decision on them. */
export const review = defineCommand({
  meta: {
    name: "review",
    description:
      "List the items a run left for review; approve, edit or reject them (spool review approve|edit|reject|apply)",
  },
  args: {
    run: { type: "positional", required: false, description: "Run name or id (default: the latest)" },
    json: { type: "boolean", description: "Machine-readable output (one JSON object)" },
    limit: { type: "string", description: "List at most this many (default 50)" },
    ...stepFlag,
    ...common,
  },
  subCommands: SUBS,
  async run({ args }) {
    const limit = args.limit === undefined ? 50 : Number(args.limit)
    if (!Number.isInteger(limit) || limit < 1)
      throw new UsageError(`--limit: "${args.limit}" is not a count`, "Give 1 or more.")
    const { waiting, quoteRun } = await lazyReview()
    const { run, items, total } = await withStore(args, "read", (db) =>
      waiting(db, args.run, args.json ? Number.POSITIVE_INFINITY : limit, args.step),
    )
    if (args.json) {
      process.stdout.write(`${JSON.stringify({ run: run.name, waiting: total, items })}\n`)
      return 0
    }
    if (total === 0) {
      process.stdout.write(`run "${run.name}": no item waits for review\n`)
      return 0
    }
    const lines = [`run "${run.name}": ${total} item(s) wait for review`]
    for (const item of items) {
      lines.push(`  ${item.id}  ${item.reason ?? ""}`)
      lines.push(`    answer: ${excerpt(item.output)}`)
    }
    if (total > items.length) lines.push(`  … and ${total - items.length} more (--limit, or --json for all)`)
    const r = quoteRun(run.name)
    lines.push(
      `Decide with: spool review approve ID --run ${r} · spool review edit ID --set field=value --run ${r} · spool review reject ID --reason "…" --run ${r} · spool review apply decisions.jsonl --run ${r}`,
    )
    process.stdout.write(`${lines.join("\n")}\n`)
    return 0
  },
})

/** An answer on one line, cut at 160 characters. */
function excerpt(text: string | null): string {
  if (text === null) return "(none)"
  const flat = text.replace(/\s+/g, " ").trim()
  return flat.length > 160 ? `${flat.slice(0, 157)}…` : flat
}
