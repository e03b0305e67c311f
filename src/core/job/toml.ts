/** Reading a job file's TOML, with the line and column of a syntax error (Bun's parser gives neither). */
import { readFileSync } from "node:fs"
import { JobError } from "../../plugins/api/errors.ts"

type Table = Record<string, unknown>

const messageOf = (err: unknown) => (err as Error).message.replace(/^TOML Parse error: /, "")

/** The parser's message, or undefined when `text` parses. */
function problem(text: string): string | undefined {
  try {
    Bun.TOML.parse(text)
    return undefined
  } catch (err) {
    return messageOf(err)
  }
}

/**
 * Where the error that `message` names is, 1-based. Its line: after the longest run of leading lines that parses (a
 * shorter cut may end inside an array or string that spans lines, and fail for that alone), the first whose cut
 * fails with the same message (an array left open fails further down). Its column: the end of the shortest start of
 * that line at which the parser already says the same.
 */
export function locate(text: string, message: string): { line: number; column: number } {
  const lines = text.split("\n")
  const upTo = (n: number) => (n ? `${lines.slice(0, n).join("\n")}\n` : "")
  let ok = lines.length - 1
  while (ok > 0 && problem(upTo(ok)) !== undefined) ok--
  let at = ok
  while (at < lines.length - 1 && problem(upTo(at + 1)) !== message) at++
  if (problem(upTo(at + 1)) !== message) at = ok
  const line = lines[at] ?? ""
  for (let c = 1; c <= line.length; c++) {
    const cut = upTo(at) + line.slice(0, c)
    if (problem(cut) === message || problem(`${cut}\n`) === message) return { line: at + 1, column: c }
  }
  return { line: at + 1, column: 1 }
}

/** The job file's tables; a syntax error names the file, line and column: `job.toml:3:8: not valid TOML: …`. */
export function readToml(path: string): Table {
  let text: string
  try {
    text = readFileSync(path, "utf8")
  } catch {
    throw new JobError(`cannot read the job file ${path}`, [], "Check the path; `spool run job.toml`.")
  }
  try {
    return Bun.TOML.parse(text) as Table
  } catch (err) {
    const message = messageOf(err)
    const { line, column } = locate(text, message)
    throw new JobError(
      `${path}:${line}:${column}: not valid TOML: ${message}`,
      [],
      "Fix the TOML syntax there.",
    )
  }
}
