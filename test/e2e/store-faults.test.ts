import { describe, expect, test } from "bun:test"
import { Database } from "bun:sqlite"
import {
  chmodSync,
  chownSync,
  cpSync,
  existsSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs"
import { join } from "node:path"
import { CHECK_BYTES } from "../../src/core/ledger/sqlite/connect.ts"
import { DB_FILE } from "../../src/core/ledger/sqlite/faults.ts"
import { digest, garbage, halve, smash } from "../lib/damage.ts"
import { BIN, env, requireBinary, spool, start, until, type Ran } from "../lib/spool.ts"
import { tmpdir, type Tmp } from "../lib/tmp.ts"

const root = process.getuid?.() === 0
/** Who owns a store that is made read-only below: root may write whatever the mode says, so then it is nobody. */
const NOBODY = 65534

const RUN = ["run", "--input", "in.jsonl", "--prompt", "{{text}}", "--provider", "mock"]

/** A store made by `dist/spool run` with the mock provider: `n` items, all completed; returns its home. */
async function made(tmp: Tmp, n: number): Promise<string> {
  writeFileSync(
    tmp.join("in.jsonl"),
    Array.from({ length: n }, (_, i) => JSON.stringify({ text: `item ${i + 1}` })).join("\n") + "\n",
  )
  const home = tmp.join("home")
  expect((await spool([...RUN, "--home", home], { cwd: tmp.path })).code).toBe(0)
  atRest(join(home, DB_FILE))
  return home
}

/**
 * Every commit in the file itself, and no -wal or -shm beside it, as after a clean exit of the last process: the
 * pages on disk are the ones that are read. (A process may exit without closing its connection for good: it keeps
 * prepared statements to the end.)
 */
function atRest(path: string): void {
  if (!existsSync(`${path}-wal`)) return
  const db = new Database(path)
  db.run("PRAGMA wal_checkpoint(TRUNCATE)")
  db.close()
  expect(existsSync(`${path}-wal`)).toBe(false)
}

/** What a person reads: the message and the hint, and no stack trace. */
function told(ran: Ran, message: string, hint: string): void {
  expect(ran.stderr).toEndWith(`spool: ${message}\n  ${hint}\n`)
  expect(ran.stderr).not.toMatch(/^\s+at /m)
  expect(ran.stderr).not.toContain("internal error")
}

/** Gives the directory (and all in it) to the user `as` runs as: the store's owner, who cannot write it once locked. */
function own(dir: string): void {
  chmodSync(join(dir, ".."), 0o755)
  if (!root) return
  chownSync(dir, NOBODY, NOBODY)
  for (const f of readdirSync(dir, { recursive: true }) as string[]) chownSync(join(dir, f), NOBODY, NOBODY)
}

/** `dist/spool` run by the store's owner (nobody, when the tests run as root: see `own`). */
async function as(args: string[], cwd: string): Promise<Ran> {
  requireBinary()
  const argv = root
    ? ["setpriv", `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", BIN, ...args]
    : [BIN, ...args]
  const child = Bun.spawn(argv, { cwd, env: env(), stdout: "pipe", stderr: "pipe", stdin: "ignore" })
  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ])
  return { code, stdout, stderr }
}

const READERS = "`spool status`, `results` and `runs` can read the store as it is."

describe("dist/spool on a damaged store", () => {
  test("a store of random bytes: every command names the file and what to do, exit 1, the stack only with --verbose", async () => {
    await using tmp = await tmpdir()
    const home = await made(tmp, 10)
    const path = join(home, DB_FILE)
    garbage(path)
    const before = digest(path)
    for (const args of [["status"], ["results"], ["runs"], RUN, ["retry"], ["pause"]]) {
      const ran = await spool([...args, "--home", home], { cwd: tmp.path })
      expect(ran.code).toBe(1)
      told(
        ran,
        `the store ${path} is not a SQLite database: its first bytes are not SQLite's header`,
        `It was overwritten, or is not a spool store. Restore it from a backup (with no spool running), or move it aside (mv ${path} ${path}.bad) and start afresh; spool cannot read anything from it.`,
      )
      expect(ran.stdout).toBe("")
    }
    const verbose = await spool(["status", "--home", home, "--verbose"], { cwd: tmp.path })
    expect(verbose.code).toBe(1)
    expect(verbose.stderr).toContain(`StoreCorruptError: the store ${path} is not a SQLite database`)
    expect(verbose.stderr).toMatch(/^\s+at /m)
    expect(digest(path)).toBe(before)
    expect(readdirSync(home).sort()).toEqual(["logs", DB_FILE])
  })

  test("a store cut to half its size: refused for reads and writes, saying how much of it is missing", async () => {
    await using tmp = await tmpdir()
    const home = await made(tmp, 3000)
    const path = join(home, DB_FILE)
    const full = statSync(path).size
    const size = halve(path)
    for (const args of [["status"], ["results"], RUN]) {
      const ran = await spool([...args, "--home", home], { cwd: tmp.path })
      expect(ran.code).toBe(1)
      told(
        ran,
        `the store ${path} is cut short: it has ${size} bytes of the ${full} its header gives`,
        `A copy or a restore stopped part way. Restore the whole file from a backup (with no spool running), or move it aside (mv ${path} ${path}.bad) and start afresh.`,
      )
    }
    expect(statSync(path).size).toBe(size)
  })

  test("garbage in the items' pages: a resumed run is refused before it writes; results gives every readable item, then names the rest", async () => {
    await using tmp = await tmpdir()
    const home = await made(tmp, 3000)
    const path = join(home, DB_FILE)
    const whole = await spool(["results", "--home", home], { cwd: tmp.path })
    expect(whole.code).toBe(0)
    const lines = whole.stdout.split("\n").filter(Boolean)
    expect(lines).toHaveLength(3000)
    smash(path, "items", 10, 3)
    const before = digest(path)

    const resumed = await spool([...RUN, "--home", home], { cwd: tmp.path })
    expect(resumed.code).toBe(1)
    const hint = `Restore it from a backup (with no spool running), or move it aside (mv ${path} ${path}.bad) and start afresh. Before that, \`spool results --home ${home} > saved.jsonl\` keeps every item that can still be read.`
    expect(resumed.stderr).toStartWith(`spool: the store ${path} is damaged (SQLite's check: Tree `)
    told(resumed, resumed.stderr.split("\n")[0]!.slice("spool: ".length), hint)
    expect(resumed.stderr).toContain("); nothing was written to it\n")
    expect(digest(path)).toBe(before)

    const saved = await spool(["results", "--home", home], { cwd: tmp.path })
    expect(saved.code).toBe(1)
    const ranges = /is damaged: the items with ids (\d+-\d+(?:, \d+-\d+)*) could not be read/.exec(
      saved.stderr,
    )?.[1]
    expect(ranges).toBeDefined()
    told(
      saved,
      `the store ${path} is damaged: the items with ids ${ranges} could not be read (every other item of the run was)`,
      hint,
    )
    const lost = new Set(
      ranges!.split(", ").flatMap((r) => {
        const [a, b] = r.split("-").map(Number) as [number, number]
        return Array.from({ length: b - a + 1 }, (_, i) => String(a + i))
      }),
    )
    expect(lost.size).toBeGreaterThan(0)
    // every line it gave is the line the whole store gave, and only the lost ones are missing
    expect(saved.stdout.split("\n").filter(Boolean)).toEqual(
      lines.filter((l) => !lost.has((JSON.parse(l) as { id: string }).id)),
    )
  })

  test("a page found damaged in the middle of a run (a store too large for the check at start) stops it with exit 1 and the store's message", async () => {
    await using tmp = await tmpdir()
    const pad = "x".repeat(400)
    writeFileSync(
      tmp.join("in.jsonl"),
      Array.from({ length: 40_000 }, (_, i) => JSON.stringify({ text: `item ${i + 1} ${pad}` })).join("\n") +
        "\n",
    )
    // a spend cap stops the first run early, leaving most items pending
    writeFileSync(
      tmp.join("job.toml"),
      `name = "big"\n[source]\npath = "in.jsonl"\n[provider]\nname = "mock"\n[request]\nprompt = "{{text}}"\n` +
        `[limits]\nmax_cost_usd = 0.01\n[pricing]\ninput = 1\noutput = 1\n`,
    )
    const home = tmp.join("home")
    const first = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path })
    expect(first.code).toBe(1)
    expect(first.stderr).toContain("the spend cap of $0.01 is reached")
    const path = join(home, DB_FILE)
    atRest(path)
    expect(statSync(path).size).toBeGreaterThan(CHECK_BYTES)
    const done = await spool(["results", "--home", home, "--state", "completed"], { cwd: tmp.path })
    expect(done.code).toBe(0)
    smash(path, "items", 40, 3)

    const resumed = await spool(["run", "job.toml", "--home", home, "--max-cost-usd", "100"], {
      cwd: tmp.path,
    })
    expect(resumed.code).toBe(1)
    told(
      resumed,
      `the store ${path} is damaged: database disk image is malformed (SQLITE_CORRUPT)`,
      `Restore it from a backup (with no spool running), or move it aside (mv ${path} ${path}.bad) and start afresh. Before that, \`spool results --home ${home} > saved.jsonl\` keeps every item that can still be read.`,
    )
    // what was finished before is there as it was
    const after = await spool(["results", "--home", home, "--state", "completed"], { cwd: tmp.path })
    expect(after.code).toBe(0)
    expect(after.stdout.startsWith(done.stdout)).toBe(true)
  })
})

describe("dist/spool on a store it may not write", () => {
  /** The reads of a healthy store, to compare a read-only one's with. */
  async function reads(home: string, run: (args: string[]) => Promise<Ran>) {
    const [status, results, runs] = await Promise.all([
      run(["status", "--json", "--home", home]),
      run(["results", "--home", home]),
      run(["runs", "--json", "--home", home]),
    ])
    for (const r of [status, results, runs])
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" })
    const { counts, total, attempts, usage, state } = JSON.parse(status.stdout) as Record<string, unknown>
    return { status: { counts, total, attempts, usage, state }, results: results.stdout, runs: runs.stdout }
  }

  test("a read-only store file: status, results and runs read it and leave no file behind; writes are refused, naming it", async () => {
    await using tmp = await tmpdir()
    const home = await made(tmp, 500)
    const path = join(home, DB_FILE)
    const expected = await reads(home, (args) => spool(args, { cwd: tmp.path }))
    atRest(path)
    own(home)
    chmodSync(path, 0o400)
    expect(await reads(home, (args) => as(args, tmp.path))).toEqual(expected)
    expect(readdirSync(home).sort()).toEqual(["logs", DB_FILE])
    for (const args of [RUN, ["retry"], ["pause"]]) {
      const ran = await as([...args, "--home", home], tmp.path)
      expect(ran.code).toBe(1)
      told(
        ran,
        `the store ${path} is read-only`,
        `Make it writable (chmod u+w ${path}), or run spool as the user who owns it. ${READERS}`,
      )
    }
    // once writable again, it is written to: the reads above left nothing behind that would refuse a writer
    chmodSync(path, 0o600)
    const resumed = await as([...RUN, "--home", home], tmp.path)
    expect(resumed.code).toBe(0)
    expect(resumed.stderr).toContain('run "in": 500 completed, 0 failed of 500')
  })

  test("a read-only store directory: the reads work, the mode is left as it is, writes are refused naming the directory", async () => {
    await using tmp = await tmpdir()
    const home = await made(tmp, 500)
    const expected = await reads(home, (args) => spool(args, { cwd: tmp.path }))
    atRest(join(home, DB_FILE))
    own(home)
    chmodSync(home, 0o500)
    expect(await reads(home, (args) => as(args, tmp.path))).toEqual(expected)
    expect(statSync(home).mode & 0o777).toBe(0o500)
    expect(readdirSync(home).sort()).toEqual(["logs", DB_FILE])
    for (const args of [RUN, ["retry"]]) {
      const ran = await as([...args, "--home", home], tmp.path)
      expect(ran.code).toBe(1)
      told(
        ran,
        `the store directory ${home} is not writable`,
        `spool writes ${DB_FILE} there, and SQLite its ${DB_FILE}-wal and ${DB_FILE}-shm. Make it writable (chmod u+w ${home}), or run spool as the user who owns it. ${READERS}`,
      )
    }
    expect(statSync(home).mode & 0o777).toBe(0o500)
    chmodSync(home, 0o700)
  })

  test("a read-only directory holding a killed run's write-ahead log: the reads see its commits; without its -shm, they say why not", async () => {
    await using tmp = await tmpdir()
    writeFileSync(
      tmp.join("in.jsonl"),
      Array.from({ length: 20_000 }, (_, i) => JSON.stringify({ text: `item ${i + 1}` })).join("\n") + "\n",
    )
    writeFileSync(
      tmp.join("job.toml"),
      `name = "slow"\n[source]\npath = "in.jsonl"\n[provider]\nname = "mock"\n[provider.options]\nlatency_ms = 50\n` +
        `[request]\nprompt = "{{text}}"\n`,
    )
    const home = tmp.join("home")
    const path = join(home, DB_FILE)
    const child = start(["run", "job.toml", "--home", home], { cwd: tmp.path })
    // kill it once it has finished some items, asking as a user would
    const deadline = Date.now() + 20_000
    for (let done = 0; done < 100; await Bun.sleep(20)) {
      if (Date.now() > deadline) throw new Error("no hundred items completed in 20 s")
      const status = await spool(["status", "--json", "--home", home], { cwd: tmp.path })
      done =
        status.code === 0
          ? (JSON.parse(status.stdout) as { counts: { completed: number } }).counts.completed
          : 0
    }
    // a status that closes the store last folds the log in: kill the run once it has logged more since
    await until(() => statSync(`${path}-wal`).size > 100_000, 20_000, "commits in the log")
    child.kill("SIGKILL")
    await child.exited
    expect(statSync(`${path}-wal`).size).toBeGreaterThan(100_000)
    // what a writer that may recover the log reads (a copy: reading the original would fold the log in)
    cpSync(home, tmp.join("copy"), { recursive: true })
    const expected = await reads(tmp.join("copy"), (args) => spool(args, { cwd: tmp.path }))
    expect((expected.status.counts as Record<string, number>).completed).toBeGreaterThan(0)
    own(home)
    chmodSync(home, 0o500)
    expect(await reads(home, (args) => as(args, tmp.path))).toEqual(expected)
    const shm = `${path}-shm`
    chmodSync(home, 0o700)
    rmSync(shm)
    chmodSync(home, 0o500)
    const ran = await as(["status", "--home", home], tmp.path)
    expect(ran.code).toBe(1)
    told(
      ran,
      `cannot read the store ${path}: its write-ahead log ${path}-wal needs ${shm} beside it, and ${home} is not writable`,
      `Make ${home} writable for a moment (chmod u+w ${home}), or copy the directory and read the copy (--home COPY).`,
    )
    chmodSync(home, 0o700)
  })

  test("a home whose path runs through a file: refused for writes, naming the directory and why; no store to read", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("notes"), "a file\n")
    const home = tmp.join("notes", ".spool")
    writeFileSync(tmp.join("in.jsonl"), '{"text":"a"}\n')
    const ran = await spool([...RUN, "--home", home], { cwd: tmp.path })
    expect(ran.code).toBe(1)
    told(
      ran,
      `cannot create the store directory ${home}: a part of the path is a file, not a directory`,
      "Give --home (or SPOOL_HOME) a directory you can create and write to.",
    )
    // a command that only reads makes no store: there is none there to read
    const status = await spool(["status", "--home", home], { cwd: tmp.path })
    expect(status.code).toBe(2)
    told(
      status,
      `no spool store in ${home} — start a run with \`spool run job.toml\``,
      "Or point --home (or SPOOL_HOME) at the folder that holds one.",
    )
  })
})
