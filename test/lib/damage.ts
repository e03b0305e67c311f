/** A store file damaged on purpose, as a disk, an interrupted copy or a stray write would: for the fault tests. */
import { Database, constants } from "bun:sqlite"
import { randomBytes } from "node:crypto"
import { closeSync, openSync, readFileSync, statSync, truncateSync, writeFileSync, writeSync } from "node:fs"

/** Replaces the file with random bytes. */
export function garbage(path: string, bytes = 64 * 1024): void {
  writeFileSync(path, randomBytes(bytes))
}

/** Cuts the file to half its size, as a copy that stopped part way. */
export function halve(path: string): number {
  const size = Math.floor(statSync(path).size / 2)
  truncateSync(path, size)
  return size
}

/**
 * Overwrites `count` leaf pages of a table's b-tree, from its `from`-th leaf in key order, with a byte pattern
 * (what a stray write or a bad sector leaves). The file must hold every commit (closed by its last connection, so
 * its write-ahead log is empty). Returns the page numbers hit.
 */
export function smash(path: string, table: string, from: number, count: number): number[] {
  // immutable: reading the page map makes no -wal or -shm beside the file
  const db = new Database(
    `file:${path}?immutable=1`,
    constants.SQLITE_OPEN_READONLY | constants.SQLITE_OPEN_URI,
  )
  const size = db.query<{ page_size: number }, []>("PRAGMA page_size").get()?.page_size ?? 4096
  const pages = db
    .query<{ pageno: number }, [string]>(
      "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY path",
    )
    .all(table)
    .slice(from, from + count)
    .map((p) => p.pageno)
  db.close()
  if (pages.length < count) throw new Error(`${table} has fewer than ${from + count} leaf pages`)
  const fd = openSync(path, "r+")
  try {
    for (const page of pages) writeSync(fd, Buffer.alloc(size, 0xa5), 0, size, (page - 1) * size)
  } finally {
    closeSync(fd)
  }
  return pages
}

/** A digest of the file's bytes, to show they were left as they were. */
export function digest(path: string): string {
  return new Bun.CryptoHasher("sha256").update(readFileSync(path)).digest("hex")
}
