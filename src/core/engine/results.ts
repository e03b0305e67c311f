/**
 * A batch's downloaded result files, checked before any line of them settles an item. Every finished line in such a
 * file is money already spent: a file cut short by a proxy, an HTML error page served with a 200, an empty body, a
 * line missing or repeated must not send finished items back to be paid for again. So a download is trusted only when
 * each file ends with a newline, is as long as the server announced, every line is a result line of this batch (no
 * custom_id twice), and the lines agree with the provider's own counts.
 */
import { statSync } from "node:fs"
import type { BatchExpect, BatchLine, Downloaded } from "../../plugins/api/define.ts"

export type FileKind = "output" | "errors"

/** A line that is not a result line at all (not JSON, or no custom_id), with the custom_id it seems to carry. */
export interface Broken {
  file: FileKind
  /** 1-based. */
  line: number
  text: string
  customId: string | undefined
}

export interface Checked {
  /** Why the files cannot be trusted as they are; empty when they can, `broken` lines aside. */
  problems: string[]
  broken: Broken[]
  /** The files that a problem or a broken line was found in. */
  suspect: Set<FileKind>
  /** Result lines per file. */
  lines: Record<FileKind, number>
}

/** What a line must be to count: read by the provider, and one of this batch's custom_ids. */
export interface Reader {
  parse(text: string): BatchLine
  /** `${tag}_`: every custom_id of the batch starts with it. */
  prefix: string
  /** The batch's items (the number after the prefix). */
  items: Set<number>
}

/** Streams a file's non-blank lines, with their 1-based numbers, without holding the file in memory. */
export async function* linesOf(path: string): AsyncGenerator<{ text: string; n: number }> {
  const decoder = new TextDecoder()
  let rest = ""
  let n = 0
  for await (const chunk of Bun.file(path).stream()) {
    const text = rest + decoder.decode(chunk, { stream: true })
    const lines = text.split("\n")
    rest = lines.pop() ?? ""
    for (const line of lines) {
      n++
      if (line.trim() !== "") yield { text: line, n }
    }
  }
  rest += decoder.decode()
  if (rest.trim() !== "") yield { text: rest, n: n + 1 }
}

/** The custom_id a line that cannot be read seems to carry. */
export function claimedId(text: string): string | undefined {
  return /"custom_id"\s*:\s*"([^"\\]{1,200})"/.exec(text)?.[1]
}

/** The item a custom_id names, when it is one of the batch's. */
export function itemOf(
  customId: string | undefined,
  reader: Pick<Reader, "prefix" | "items">,
): number | undefined {
  if (!customId?.startsWith(reader.prefix)) return undefined
  const rest = customId.slice(reader.prefix.length)
  const item = Number(rest)
  // the one spelling spool writes: `01` is not item 1
  if (!/^\d+$/.test(rest) || String(item) !== rest) return undefined
  return reader.items.has(item) ? item : undefined
}

const range = (r: { min: number; max: number }) => (r.min === r.max ? `${r.min}` : `${r.min} to ${r.max}`)

/** Whether the last byte of a file is a newline. */
async function endsWithNewline(path: string, size: number): Promise<boolean> {
  const last = await Bun.file(path)
    .slice(size - 1, size)
    .bytes()
  return last[0] === 0x0a
}

/** Checks the files `download` wrote against the provider's counts (`expect`) and the batch's custom_ids. */
export async function check(
  files: Downloaded,
  expect: BatchExpect | undefined,
  reader: Reader,
): Promise<Checked> {
  const problems: string[] = []
  const broken: Broken[] = []
  const suspect = new Set<FileKind>()
  const where = new Map<string, FileKind>()
  const blame = (kind: FileKind, problem: string) => {
    problems.push(problem)
    suspect.add(kind)
  }
  const lines: Record<FileKind, number> = { output: 0, errors: 0 }
  const kinds = new Map<string, number>()
  let strangers = 0
  let twice = 0
  for (const kind of ["output", "errors"] as const) {
    const path = files[kind]
    if (!path) continue
    const size = statSync(path).size
    const said = files.announced?.[kind]
    if (said !== undefined && said !== size)
      blame(kind, `${kind} file: ${size} bytes, where the server announced ${said} (cut short?)`)
    if (size > 0 && !(await endsWithNewline(path, size)))
      blame(kind, `${kind} file: its last line has no newline (cut short?)`)
    for await (const { text, n } of linesOf(path)) {
      // the lines read are garbage at once: a hint to collect keeps the peak flat, as while applying
      if (++lines[kind] % 5000 === 0) Bun.gc(false)
      let line: BatchLine
      try {
        line = reader.parse(text)
      } catch {
        broken.push({ file: kind, line: n, text, customId: claimedId(text) })
        suspect.add(kind)
        continue
      }
      if (line.kind !== undefined) kinds.set(line.kind, (kinds.get(line.kind) ?? 0) + 1)
      if (itemOf(line.customId, reader) === undefined) {
        strangers++
        suspect.add(kind)
      } else if (where.has(line.customId)) {
        twice++
        suspect.add(kind).add(where.get(line.customId)!)
      } else where.set(line.customId, kind)
    }
  }
  // an unreadable line can be taken as the provider's own only when it still names one of the batch's items
  const nameless = broken.filter((b) => itemOf(b.customId, reader) === undefined)
  if (nameless.length) {
    problems.push(`${nameless.length} unreadable line(s) naming none of this batch's custom_ids`)
    for (const b of nameless) suspect.add(b.file)
  }
  for (const b of broken) {
    if (b.customId === undefined) continue
    const other = where.get(b.customId)
    if (other !== undefined) {
      twice++
      suspect.add(other)
    }
    where.set(b.customId, b.file)
  }
  if (strangers) problems.push(`${strangers} line(s) with a custom_id that is not one of this batch's`)
  if (twice) problems.push(`${twice} custom_id(s) given more than once`)
  for (const kind of ["output", "errors"] as const) {
    const want = expect?.[kind]
    if (want && (lines[kind] < want.min || lines[kind] > want.max))
      blame(kind, `${kind} file: ${lines[kind]} lines, where the provider reported ${range(want)}`)
  }
  if (expect?.kinds) {
    // a line that cannot be read may be of any kind: the known ones must fall short by exactly that many
    let short = 0
    for (const [kind, n] of kinds) {
      const want = expect.kinds[kind] ?? 0
      if (n > want) blame("output", `${n} "${kind}" lines, where the provider reported ${want}`)
    }
    for (const [kind, want] of Object.entries(expect.kinds))
      short += Math.max(0, want - (kinds.get(kind) ?? 0))
    if (short !== broken.length) {
      const counted = Object.entries(expect.kinds)
        .map(([k, want]) => `${k} ${kinds.get(k) ?? 0} of ${want}`)
        .join(", ")
      blame(
        "output",
        `the lines disagree with the provider's counts (${counted}; ${broken.length} unreadable)`,
      )
    }
  }
  return { problems, broken, suspect, lines }
}
