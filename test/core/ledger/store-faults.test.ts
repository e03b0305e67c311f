import { describe, expect, test } from "bun:test"
import { Database } from "bun:sqlite"
import { chmodSync, mkdirSync, statSync, writeFileSync } from "node:fs"
import { DB_FILE } from "../../../src/core/ledger/sqlite/faults.ts"
import { MIGRATIONS } from "../../../src/core/ledger/sqlite/schema.ts"
import * as store from "../../../src/core/ledger/sqlite/sqlite.ts"
import type { Item } from "../../../src/core/ledger/types.ts"
import { StoreError } from "../../../src/plugins/api/errors.ts"
import { StoreCorruptError } from "../../../src/core/base/errors.ts"
import { digest, garbage, halve, smash } from "../../lib/damage.ts"
import { seed } from "../../lib/ledger.ts"
import { tmpdir } from "../../lib/tmp.ts"

const root = process.getuid?.() === 0

/** What `open` threw, for a look at its class, message and hint. */
function thrown(open: () => unknown): StoreError | StoreCorruptError {
  try {
    open()
  } catch (err) {
    if (err instanceof StoreError || err instanceof StoreCorruptError) return err
    throw err
  }
  throw new Error("open did not throw")
}

/** A closed store of `n` items: every commit is in the file, none in the write-ahead log. */
async function made(home: string, n: number): Promise<string> {
  const db = store.open(home)
  await seed(db, n)
  db.db.run("PRAGMA wal_checkpoint(TRUNCATE)")
  await db.close()
  return db.path
}

describe("a store that is damaged", () => {
  test("a file of random bytes is refused as not a SQLite database, for reads and writes, and left as it was", async () => {
    await using tmp = await tmpdir()
    const path = tmp.join(DB_FILE)
    garbage(path)
    const before = digest(path)
    for (const access of ["write", "read"] as const) {
      const err = thrown(() => store.open(tmp.path, { access }))
      expect(err).toBeInstanceOf(StoreCorruptError)
      expect(err.code).toBe("E_STORE_CORRUPT")
      expect(err.exit).toBe(1)
      expect(err.message).toBe(
        `the store ${path} is not a SQLite database: its first bytes are not SQLite's header`,
      )
      expect(err.hint).toBe(
        `It was overwritten, or is not a spool store. Restore it from a backup (with no spool running), or move it aside (mv ${path} ${path}.bad) and start afresh; spool cannot read anything from it.`,
      )
    }
    expect(digest(path)).toBe(before)
  })

  test("a store cut to half its size is refused, saying how much is missing", async () => {
    await using tmp = await tmpdir()
    const full = statSync(await made(tmp.path, 3000)).size
    const path = tmp.join(DB_FILE)
    const size = halve(path)
    for (const access of ["write", "read"] as const) {
      const err = thrown(() => store.open(tmp.path, { access }))
      expect(err).toBeInstanceOf(StoreCorruptError)
      expect(err.message).toBe(
        `the store ${path} is cut short: it has ${size} bytes of the ${full} its header gives`,
      )
      expect(err.hint).toStartWith(
        "A copy or a restore stopped part way. Restore the whole file from a backup",
      )
    }
    expect(statSync(path).size).toBe(size)
  })

  test("a store with damaged pages in its items table is refused for writing, and not one of its bytes changes", async () => {
    await using tmp = await tmpdir()
    const path = await made(tmp.path, 3000)
    const pages = smash(path, "items", 5, 2)
    const before = digest(path)
    const err = thrown(() => store.open(tmp.path))
    expect(err).toBeInstanceOf(StoreCorruptError)
    expect(err.message).toStartWith(`the store ${path} is damaged (SQLite's check: Tree `)
    expect(err.message).toMatch(new RegExp(` page (${pages.join("|")}): `))
    expect(err.message).toEndWith("); nothing was written to it")
    expect(err.hint).toBe(
      `Restore it from a backup (with no spool running), or move it aside (mv ${path} ${path}.bad) and start afresh. Before that, \`spool results --home ${tmp.path} > saved.jsonl\` keeps every item that can still be read.`,
    )
    expect(digest(path)).toBe(before)
  })

  test("reading a damaged store gives every item it can, intact, then names exactly the ids it could not read", async () => {
    await using tmp = await tmpdir()
    const path = await made(tmp.path, 3000)
    smash(path, "items", 5, 2)
    smash(path, "items", 20, 1)
    const db = store.open(tmp.path, { access: "read" })
    const read: Item[] = []
    let err: unknown
    try {
      for await (const item of db.reads.items(1)) read.push(item)
    } catch (e) {
      err = e
    }
    await db.close()
    expect(err).toBeInstanceOf(StoreCorruptError)
    const message = (err as StoreCorruptError).message
    const ranges = /the items with ids (.+) could not be read \(every other item of the run was\)$/.exec(
      message,
    )?.[1]
    expect(message).toStartWith(`the store ${path} is damaged: `)
    expect(ranges).toMatch(/^\d+-\d+, \d+-\d+$/)
    const lost = new Set(
      ranges!.split(", ").flatMap((r) => {
        const [a, b] = r.split("-").map(Number) as [number, number]
        return Array.from({ length: b - a + 1 }, (_, i) => a + i)
      }),
    )
    // three leaves of small rows: dozens of items lost, thousands kept, none twice, none out of order
    expect(lost.size).toBeGreaterThan(20)
    expect(read.length).toBe(3000 - lost.size)
    expect(read.map((i) => i.id)).toEqual(
      Array.from({ length: 3000 }, (_, i) => i + 1).filter((id) => !lost.has(id)),
    )
    for (const item of read) {
      expect(item.key).toBe(`k${item.id}`)
      expect(JSON.parse(item.data)).toEqual({ text: `t${item.id}` })
      expect(item.state).toBe("pending")
    }
  })

  test("a page found damaged after the store was opened stops the next write with the store's error, and the write is undone", async () => {
    await using tmp = await tmpdir()
    const path = await made(tmp.path, 3000)
    const db = store.open(tmp.path)
    smash(path, "items", 0, 3)
    // another connection's commit makes this one read its pages afresh, from the file
    const other = new Database(path)
    other.run("UPDATE runs SET reason = 'touched'")
    const err = await db.claims.step(1, "worker", [], 100, 60_000).catch((e: unknown) => e)
    await db.close()
    expect(err).toBeInstanceOf(StoreCorruptError)
    expect((err as StoreCorruptError).message).toBe(
      `the store ${path} is damaged: database disk image is malformed (SQLITE_CORRUPT)`,
    )
    expect((err as StoreCorruptError).hint).toStartWith("Restore it from a backup (with no spool running)")
    const running = other.query<{ n: number }, []>("SELECT count(*) AS n FROM items WHERE state = 'running'")
    expect(running.get()?.n).toBe(0)
    const attempts = other.query<{ n: number }, []>("SELECT count(*) AS n FROM attempts")
    expect(attempts.get()?.n).toBe(0)
    other.close()
  })

  test("a store whose schema lost a table is refused as damaged, naming the table", async () => {
    await using tmp = await tmpdir()
    const path = await made(tmp.path, 10)
    const raw = new Database(path)
    raw.run("DROP TABLE problems")
    raw.close()
    const err = thrown(() => store.open(tmp.path))
    expect(err).toBeInstanceOf(StoreCorruptError)
    expect(err.message).toBe(
      `the store ${path} is damaged: its schema (version ${MIGRATIONS.length}) lacks the table problems`,
    )
  })

  test("a SQLite database that is not a store is refused, and not migrated into one", async () => {
    await using tmp = await tmpdir()
    const path = tmp.join(DB_FILE)
    const raw = new Database(path)
    raw.run("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    raw.close()
    const err = thrown(() => store.open(tmp.path))
    expect(err).toBeInstanceOf(StoreError)
    expect(err.code).toBe("E_STORE")
    expect(err.message).toBe(`${path} is a SQLite database, but not a spool store (it has the tables photos)`)
    const after = new Database(path)
    expect(after.query("SELECT name FROM sqlite_master WHERE type = 'table'").all()).toEqual([
      { name: "photos" },
    ])
    after.close()
  })
})

describe("a store that cannot be made", () => {
  test("a home whose path runs through a file is refused, naming the directory and why", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("notes"), "a file\n")
    const home = tmp.join("notes", ".spool")
    const err = thrown(() => store.open(home))
    expect(err).toBeInstanceOf(StoreError)
    expect(err.message).toBe(
      `cannot create the store directory ${home}: a part of the path is a file, not a directory`,
    )
    expect(err.hint).toBe("Give --home (or SPOOL_HOME) a directory you can create and write to.")
    const onFile = thrown(() => store.open(tmp.join("notes")))
    expect(onFile.message).toBe(
      `cannot create the store directory ${tmp.join("notes")}: a file of that name is in the way`,
    )
  })

  test("an existing directory loses others' access but never gains write access the owner took away", async () => {
    await using tmp = await tmpdir()
    const open = tmp.join("open")
    mkdirSync(open, { mode: 0o755 })
    chmodSync(open, 0o755)
    await store.open(open).close()
    expect(statSync(open).mode & 0o777).toBe(0o700)
    const locked = tmp.join("locked")
    mkdirSync(locked)
    chmodSync(locked, 0o555)
    // root may write whatever the mode says; anyone else is told why not
    if (root) await store.open(locked).close()
    else expect(() => store.open(locked)).toThrow(`the store directory ${locked} is not writable`)
    expect(statSync(locked).mode & 0o777).toBe(0o500)
    chmodSync(locked, 0o700)
  })
})
