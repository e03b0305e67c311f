/** SQLite's errors as the store's own, naming the file, and JSON read back from the store checked before use. */
import { SQLiteError } from "bun:sqlite"
import { dirname } from "node:path"
import * as v from "valibot"
import { StoreError } from "../../../plugins/api/errors.ts"
import { StoreCorruptError } from "../../base/errors.ts"

export const DB_FILE = "spool.db"

export const READERS = "`spool status`, `results` and `runs` can read the store as it is."

/** The damaged store's hint: what can still be done. */
export function damaged(path: string): string {
  const home = dirname(path)
  return `Restore it from a backup (with no spool running), or move it aside (mv ${path} ${path}.bad) and start afresh. Before that, \`spool results --home ${home} > saved.jsonl\` keeps every item that can still be read.`
}

/**
 * SQLite's errors as the store's own, naming the file: a damaged page (at any read, at any time) is a
 * `StoreCorruptError`; a store that cannot be written, a full disk, an I/O error, a lock held too long, a
 * `StoreError`. Anything else — a constraint, a syntax error — is a bug and stays as it is.
 */
export function failure(err: unknown, path: string): unknown {
  if (!(err instanceof SQLiteError)) return err
  const code = err.code ?? ""
  const said = `${err.message} (${code})`
  if (/^SQLITE_(CORRUPT|NOTADB)/.test(code))
    return new StoreCorruptError(`the store ${path} is damaged: ${said}`, damaged(path), { cause: err })
  if (code.startsWith("SQLITE_READONLY"))
    return new StoreError(
      `cannot write to the store ${path}: ${said}`,
      `Make the file, its -wal and -shm, and ${dirname(path)} writable (chmod u+w), or run spool as the user who owns them. ${READERS}`,
      { cause: err },
    )
  if (code.startsWith("SQLITE_FULL"))
    return new StoreError(
      `the disk holding the store ${path} is full`,
      "Free some space, then resume: every commit before this one is kept.",
      { cause: err },
    )
  if (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED"))
    return new StoreError(
      `the store ${path} stayed locked by another process for 10 s`,
      "Another spool (or a tool) holds a long write on it; wait for it, or stop it.",
      { cause: err },
    )
  if (code.startsWith("SQLITE_IOERR") || code.startsWith("SQLITE_CANTOPEN"))
    return new StoreError(
      `cannot read or write the store ${path}: ${said}`,
      `Check the disk and the permissions of ${dirname(path)} and its files.`,
      { cause: err },
    )
  return err
}

/**
 * Makes every method of a part of the driver turn SQLite's errors into the store's own (`failure`): a page found
 * damaged in the middle of a run stops it with a message that says what to do, not an internal error. A
 * generator's errors come as it is read, so the generator is wrapped too.
 */
export function guard(part: abstract new (...args: never[]) => { readonly path: string }): void {
  const proto = part.prototype as object
  for (const name of Object.getOwnPropertyNames(proto)) {
    const method: unknown = Object.getOwnPropertyDescriptor(proto, name)?.value
    if (name === "constructor" || typeof method !== "function") continue
    Object.defineProperty(proto, name, {
      configurable: true,
      writable: true,
      value: function (this: { readonly path: string }, ...args: unknown[]): unknown {
        try {
          const out: unknown = Reflect.apply(method, this, args)
          return Object.prototype.toString.call(out) === "[object Generator]"
            ? guarded(out as Generator<unknown, unknown>, this.path)
            : out
        } catch (err) {
          throw failure(err, this.path)
        }
      },
    })
  }
}

function* guarded<T, R>(gen: Generator<T, R>, path: string): Generator<T, R> {
  try {
    return yield* gen
  } catch (err) {
    throw failure(err, path)
  }
}

export { decode } from "../rows.ts"
