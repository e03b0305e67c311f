/** What the byte-region sources (jsonl, csv) share: opening a file, and checking the part already read. */
import { statSync, type Stats } from "node:fs"
import { SourceChangedError, SourceError } from "../plugins/api/errors.ts"

const LF = 0x0a

/** What a path is when it is not a regular file, in words; undefined for a regular file. */
function kind(stats: Stats): string | undefined {
  if (stats.isFile()) return undefined
  if (stats.isDirectory()) return "is a directory"
  const what = stats.isFIFO()
    ? "FIFO"
    : stats.isCharacterDevice()
      ? "character device"
      : stats.isBlockDevice()
        ? "block device"
        : stats.isSocket()
          ? "socket"
          : "special file"
  return `is not a regular file (${what})`
}

/**
 * Checks that `file` is a regular file. A pipe or a device is refused rather than read: resuming re-reads the part
 * already ingested to check it, which a stream cannot give twice (and a FIFO with no writer would block forever).
 */
export function check(file: string): void {
  let stats: Stats
  try {
    stats = statSync(file)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new SourceError(
      `cannot read ${file}: ${code === "ENOENT" ? "no such file" : (err as Error).message}`,
      "Check source.path (relative to the job file).",
    )
  }
  const what = kind(stats)
  if (what)
    throw new SourceError(
      `cannot read ${file}: it ${what}`,
      stats.isDirectory()
        ? "Give a file in it as source.path, or a glob such as dir/*.jsonl."
        : "spool reads inputs by offset and re-reads them to resume, which a pipe or a device cannot give: save the stream to a file first (cat > in.jsonl).",
    )
}

export async function open(file: string): Promise<Bun.BunFile> {
  check(file)
  return Bun.file(file)
}

/**
 * Streams bytes [from, to) of `handle`, `step` at a time, into `hasher` (when given); returns how many line ends
 * they hold. For what is too long to hold: a skipped line, or the part before a quote.
 */
export async function pass(
  handle: Bun.BunFile,
  from: number,
  to: number,
  hasher?: Bun.CryptoHasher,
  step = 1 << 20,
): Promise<number> {
  let lines = 0
  for (let at = from; at < to; at += step) {
    const bytes = new Uint8Array(await handle.slice(at, Math.min(to, at + step)).arrayBuffer())
    hasher?.update(bytes)
    for (let i = bytes.indexOf(LF); i >= 0; i = bytes.indexOf(LF, i + 1)) lines++
  }
  return lines
}

/**
 * The next region of a file from `offset`: `bytes` read, doubled up to `max` while `cut` finds no end in them
 * (`cut` answers undefined; at the end of the file it must answer). `long` when `max` bytes hold no end.
 */
export async function region<T>(
  handle: Bun.BunFile,
  offset: number,
  bytes: number,
  max: number,
  cut: (read: Uint8Array, eof: boolean) => T | undefined,
): Promise<T | { long: true } | undefined> {
  const size = handle.size
  let want = Math.min(bytes, max)
  for (;;) {
    if (offset >= size) return undefined
    const read = new Uint8Array(await handle.slice(offset, Math.min(size, offset + want)).arrayBuffer())
    const eof = offset + read.length >= size
    const found = cut(read, eof)
    if (found !== undefined || eof) return found
    if (read.length >= max) return { long: true }
    want = Math.min(want * 2, max) // a line longer than the region: read more
  }
}

/** The first `n` bytes at `offset`, as text for a problem's excerpt (invalid UTF-8 shown as U+FFFD). */
export async function excerpt(handle: Bun.BunFile, offset: number, n = 200): Promise<string> {
  const bytes = new Uint8Array(await handle.slice(offset, offset + n).arrayBuffer())
  const text = new TextDecoder().decode(bytes)
  const end = text.indexOf("\n")
  return (end < 0 ? text : text.slice(0, end)).replace(/\r$/, "").slice(0, n)
}

/**
 * Re-reads the first `at.offset` bytes into `hasher` and checks they are byte for byte what was ingested (their
 * SHA-256 is `at.sha256`). Bytes after the offset are new rows, not a change.
 */
export async function verify(
  file: string,
  at: { offset: number; line: number; sha256: string },
  hasher: Bun.CryptoHasher,
): Promise<void> {
  const handle = await open(file)
  const changed = () =>
    new SourceChangedError(
      `${file} changed since it was ingested: its first ${at.offset} bytes (${at.line} lines) are not the same`,
      "Restore the file, or run again with --reingest to read it from the start (finished items are kept).",
    )
  if (handle.size < at.offset) throw changed()
  for await (const chunk of handle.slice(0, at.offset).stream()) hasher.update(chunk)
  if (hasher.copy().digest("hex") !== at.sha256) throw changed()
}

/** The warning for a last line that has no line end yet (its writer may still be on it): it is not read. */
export function unfinished(file: string, line: number): string {
  return (
    `${file}:${line}: the last line has no newline yet; it will be read when it is complete ` +
    "(if the file is complete, end it with a newline)"
  )
}
