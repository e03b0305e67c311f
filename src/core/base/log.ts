/** Logs: people read consola on stderr; tools read JSON lines in .spool/logs/spool.log, rotated. */
import { createConsola, type ConsolaInstance } from "consola"
import { appendFileSync, chmodSync, existsSync, mkdirSync, renameSync, rmSync, statSync } from "node:fs"
import { dirname, join } from "node:path"
import { scrub } from "../../plugins/api/redact.ts"

export const ROTATE_BYTES = 10 * 1024 * 1024
export const KEEP = 5

let file: string | undefined
let written = 0
let consola: ConsolaInstance | undefined

function human(): ConsolaInstance {
  consola ??= createConsola({
    stdout: process.stderr,
    stderr: process.stderr,
    level: process.env.SPOOL_QUIET ? 1 : 3,
  })
  return consola
}

/** Starts writing JSON lines under `home/logs`. */
export function init(home: string, rotateBytes = ROTATE_BYTES): void {
  const dir = join(home, "logs")
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  file = join(dir, "spool.log")
  written = existsSync(file) ? statSync(file).size : 0
  limit = rotateBytes
}

let limit = ROTATE_BYTES

/** spool.log → spool.log.1 → … → spool.log.5, the oldest dropped. */
function rotate(path: string): void {
  rmSync(`${path}.${KEEP}`, { force: true })
  for (let i = KEEP - 1; i >= 1; i--) {
    if (existsSync(`${path}.${i}`)) renameSync(`${path}.${i}`, `${path}.${i + 1}`)
  }
  renameSync(path, `${path}.1`)
  written = 0
}

function write(level: string, msg: string, fields: Record<string, unknown>): void {
  if (!file) return
  const line = `${scrub(JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }))}\n`
  if (written + line.length > limit && written > 0) rotate(file)
  const fresh = written === 0 && !existsSync(file)
  try {
    appendFileSync(file, line, { mode: 0o600 })
  } catch {
    // the log directory was removed under us: make it again once; a log that cannot be written must not stop a run
    try {
      mkdirSync(dirname(file), { recursive: true, mode: 0o700 })
      appendFileSync(file, line, { mode: 0o600 })
    } catch {
      return
    }
  }
  if (fresh) chmodSync(file, 0o600)
  written += line.length
}

const fmt = (fields: Record<string, unknown>) => {
  const parts = Object.entries(fields).map(
    ([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`,
  )
  return parts.length ? ` ${parts.join(" ")}` : ""
}

/** Written to the log file only. */
export function debug(msg: string, fields: Record<string, unknown> = {}): void {
  write("debug", msg, fields)
}

export function info(msg: string, fields: Record<string, unknown> = {}): void {
  write("info", msg, fields)
  human().info(scrub(msg + fmt(fields)))
}

export function warn(msg: string, fields: Record<string, unknown> = {}): void {
  write("warn", msg, fields)
  human().warn(scrub(msg + fmt(fields)))
}

export function error(msg: string, fields: Record<string, unknown> = {}): void {
  write("error", msg, fields)
  human().error(scrub(msg + fmt(fields)))
}
