/** What the byte-region sources (jsonl, csv) share: opening a file, and checking the part already read. */
import { SourceChangedError, SourceError } from "../core/errors.ts"

export async function open(file: string): Promise<Bun.BunFile> {
  const handle = Bun.file(file)
  if (!(await handle.exists()))
    throw new SourceError(
      `cannot read ${file}: no such file`,
      "Check source.path (relative to the job file).",
    )
  return handle
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
