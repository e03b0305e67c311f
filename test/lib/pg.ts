/**
 * The PostgreSQL servers the tests of the PostgreSQL driver use. SPOOL_TEST_PG (a URL, as .ci/run sets it) names
 * one; without it, when PostgreSQL's server binaries are installed (initdb, pg_ctl on PATH or under
 * /usr/lib/postgresql/N/bin), this process starts a private one of its own: in a temp dir, on a free port of
 * 127.0.0.1 only, with its unix socket in that dir, once (on first use), stopped and removed when the process
 * exits. As root (initdb refuses root) the server runs as the `postgres` user. Each test takes a schema of its own
 * (`pgSchema()`) and drops it after; a test that stops and starts its server takes one of its own
 * (`privateServer()`).
 */
import { SQL } from "bun"
import { spawnSync } from "node:child_process"
import {
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
} from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { REQUIRE_ALL } from "./needs.ts"

/** The server's URL, when one is given. */
const GIVEN = process.env.SPOOL_TEST_PG ?? ""

/** The folder holding initdb, pg_ctl and postgres: PATH's first, else the newest /usr/lib/postgresql/N/bin. */
function findBin(): string {
  const candidates = [Bun.which("initdb")]
  for (const root of ["/usr/lib/postgresql", "/usr/local/pgsql"]) {
    const versions = existsSync(root) ? readdirSync(root) : []
    versions.sort((a, b) => Number(b) - Number(a))
    candidates.push(...versions.map((v) => join(root, v, "bin", "initdb")), join(root, "bin", "initdb"))
  }
  for (const initdb of candidates) {
    if (!initdb || !existsSync(initdb)) continue
    const dir = dirname(realpathSync(initdb))
    if (existsSync(join(dir, "pg_ctl")) && existsSync(join(dir, "postgres"))) return dir
  }
  return ""
}

/** The user the server runs as when this process is root (initdb refuses root): `postgres`, with its ids. */
function findOwner(): { uid: number; gid: number } | undefined {
  const id = (flag: string) => spawnSync("id", [flag, "postgres"], { encoding: "utf8" })
  const [uid, gid] = [id("-u"), id("-g")]
  if (uid.status !== 0 || gid.status !== 0) return undefined
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) }
}

const BIN = findBin()
const ROOT = process.getuid?.() === 0
const OWNER = ROOT && BIN ? findOwner() : undefined

/** What else a user may do: name a server, unless one is named (the restart tests need their own all the same). */
const OR_GIVE = GIVEN ? "" : ", or set SPOOL_TEST_PG=postgres://user@host:5432/db"

/** Why this process cannot start a server of its own; empty when it can. */
export const PRIVATE_PG_MISSING = !BIN
  ? `no PostgreSQL server binaries (initdb, pg_ctl) on PATH or under /usr/lib/postgresql/*/bin: install them (apt-get install postgresql)${OR_GIVE} (README.md, Testing)`
  : ROOT && !OWNER
    ? `running as root, which initdb refuses, and there is no postgres user to run it as: create one (useradd postgres) or run the tests as another user${OR_GIVE} (README.md, Testing)`
    : ""

/** Why the PostgreSQL tests cannot run here; empty when they can (SPOOL_TEST_PG, or a private server). */
export const PG_MISSING = GIVEN ? "" : PRIVATE_PG_MISSING

/** Whether the PostgreSQL tests skip: only when no server is found and not every test is required. */
export const SKIP_PG = PG_MISSING !== "" && !REQUIRE_ALL

/** Whether the tests that stop and start a server of their own skip (they need the binaries, whatever SPOOL_TEST_PG). */
export const SKIP_PG_PRIVATE = PRIVATE_PG_MISSING !== "" && !REQUIRE_ALL

/** A server this process started: stopped and removed at exit if the test did not dispose of it first. */
export interface PgServer extends AsyncDisposable {
  /** `postgres://postgres@127.0.0.1:PORT/postgres` (trust auth: any password is accepted, and ignored). */
  url: string
  port: number
  /** The temp dir: `data/`, the unix socket dir `sock/`, the server's `log`. */
  dir: string
  /** `pg_ctl stop -m mode` (default fast: clients are disconnected, as a restart does). */
  stop(mode?: "smart" | "fast" | "immediate"): Promise<void>
  /** `pg_ctl start` again, on the same port; resolves when it accepts connections. */
  start(): Promise<void>
}

/** The temp dirs this process made: servers to stop and dirs to remove at exit. */
const live = new Set<string>()

/** A command as run: as the postgres user when this process is root. */
function as(cmd: string[]): string[] {
  if (!ROOT) return cmd
  if (Bun.which("runuser")) return ["runuser", "-u", "postgres", "--", ...cmd]
  return [
    "su",
    "postgres",
    "-s",
    "/bin/sh",
    "-c",
    cmd.map((a) => `'${a.replaceAll("'", `'\\''`)}'`).join(" "),
  ]
}

/** Runs a command to its end; throws with its output (and the server's log) when it fails. */
async function run(cmd: string[], dir: string): Promise<void> {
  const proc = Bun.spawn(as(cmd), {
    cwd: dir,
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, LC_ALL: "C" },
  })
  const [out, err, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ])
  if (code === 0) return
  const log = existsSync(join(dir, "log")) ? readFileSync(join(dir, "log"), "utf8").slice(-2000) : ""
  throw new Error(
    `${cmd.join(" ")} exited ${code}:\n${out}${err}${log ? `\nserver log (tail):\n${log}` : ""}`,
  )
}

/** A port of 127.0.0.1 that nothing listens on just now. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

/** The temp dirs of servers whose process died without stopping them (a killed test run): stopped and removed. */
function sweep(): void {
  for (const name of readdirSync(tmpdir())) {
    const pid = Number(/^spool-pg-(\d+)-/.exec(name)?.[1])
    if (!pid || pid === process.pid) continue
    try {
      process.kill(pid, 0)
      continue
    } catch (err) {
      if ((err as { code?: string }).code !== "ESRCH") continue
    }
    try {
      halt(join(tmpdir(), name))
    } catch {
      // another user's, which this process may not remove: theirs to sweep
    }
  }
}

/** Stops the server of a dir at once (if it is up) and removes the dir, synchronously. */
function halt(dir: string): void {
  if (existsSync(join(dir, "data", "postmaster.pid"))) {
    const [cmd, ...args] = as([join(BIN, "pg_ctl"), "stop", "-D", join(dir, "data"), "-m", "immediate"])
    spawnSync(cmd!, args, { cwd: dir, stdio: "ignore" })
  }
  rmSync(dir, { recursive: true, force: true })
}

/**
 * Stops every server this process started and still has up, and removes its dir: the preload's afterAll calls it
 * (bun test emits no 'exit'), and a process 'exit' elsewhere. Synchronous, as an 'exit' handler must be.
 */
export function stopPgServers(): void {
  for (const dir of live) halt(dir)
  live.clear()
}

/** A new temp dir of this process's (its pid in the name, for sweep), owned by the server's user. */
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), `spool-pg-${process.pid}-`))
  if (OWNER) chownSync(dir, OWNER.uid, OWNER.gid)
  live.add(dir)
  return dir
}

let template: Promise<string> | undefined

/** A data dir made by initdb, once a process: each server starts from a copy (initdb takes seconds, a copy not). */
function initdb(): Promise<string> {
  template ??= (async () => {
    const dir = tempDir()
    const data = join(dir, "data")
    const args = ["-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]
    await run([join(BIN, "initdb"), ...args], dir)
    return data
  })()
  return template
}

let swept = false

/** Makes, starts and registers a new server. */
async function boot(): Promise<PgServer> {
  if (PRIVATE_PG_MISSING) throw new Error(PRIVATE_PG_MISSING)
  if (!swept) {
    swept = true
    sweep()
    process.once("exit", stopPgServers)
  }
  const dir = tempDir()
  const data = join(dir, "data")
  const sock = join(dir, "sock")
  mkdirSync(sock)
  if (OWNER) chownSync(sock, OWNER.uid, OWNER.gid)
  let port = 0
  const server: PgServer = {
    get url() {
      return `postgres://postgres@127.0.0.1:${port}/postgres`
    },
    get port() {
      return port
    },
    dir,
    async stop(mode = "fast") {
      await run([join(BIN, "pg_ctl"), "stop", "-D", data, "-m", mode, "-w", "-t", "60"], dir)
    },
    async start() {
      const options = [
        `-p ${port}`,
        `-k ${sock}`,
        "-c listen_addresses=127.0.0.1",
        "-c max_connections=200",
        // fast, and still safe from a killed server (stop -m immediate): only a crash of the machine loses data.
        // Not synchronous_commit=off: a killed server would lose its last commits, as no real one does
        "-c fsync=off",
        "-c full_page_writes=off",
      ].join(" ")
      await run(
        [join(BIN, "pg_ctl"), "start", "-D", data, "-l", join(dir, "log"), "-w", "-t", "60", "-o", options],
        dir,
      )
    },
    async [Symbol.asyncDispose]() {
      if (existsSync(join(data, "postmaster.pid"))) await server.stop("immediate")
      rmSync(dir, { recursive: true, force: true })
      live.delete(dir)
    },
  }
  await run(["cp", "-R", "-p", await initdb(), data], dir)
  // the port is free when chosen, not reserved: another process may take it before the server binds it
  for (let attempt = 1; ; attempt++) {
    port = await freePort()
    try {
      await server.start()
      return server
    } catch (err) {
      if (attempt >= 3) {
        await server[Symbol.asyncDispose]()
        throw err
      }
    }
  }
}

let shared: Promise<PgServer> | undefined

/** The server's URL (no schema): SPOOL_TEST_PG, or this process's private server, started on first use. */
export async function pgServer(): Promise<string> {
  if (GIVEN) return GIVEN
  shared ??= boot()
  return (await shared).url
}

/**
 * A new server of this test's own, which it may stop and start (a restart test); throws when the binaries are
 * missing (PRIVATE_PG_MISSING). Dispose of it (`await using`) to stop and remove it at once, else it goes at exit.
 */
export function privateServer(): Promise<PgServer> {
  return boot()
}

let n = 0

/** A fresh schema on the test server: its URL (`?schema=`), dropped with every object in it when disposed of. */
export async function pgSchema(): Promise<{ url: string; schema: string } & AsyncDisposable> {
  const server = await pgServer()
  const schema = `spool_test_${process.pid}_${Date.now().toString(36)}_${n++}`
  const u = new URL(server)
  u.searchParams.set("schema", schema)
  return {
    url: u.toString(),
    schema,
    async [Symbol.asyncDispose]() {
      const sql = new SQL(server)
      try {
        await sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
      } finally {
        await sql.close()
      }
    },
  }
}
