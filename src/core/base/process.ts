/**
 * Whether the process an owner id names is known to be gone: the check the engine's leases and report's liveness
 * share. An owner id is `host:pid:place.nonce` (engine/owner.ts): `place` tells apart two processes that share a
 * host name but not a process table (containers on one machine), so a pid is looked up only where it means the
 * same process.
 */
import { createHash } from "node:crypto"
import { readFileSync, readlinkSync } from "node:fs"
import { hostname } from "node:os"

/** This worker's host name in leases and the worker list: SPOOL_HOST, or the machine's host name. */
export const HOST = (process.env.SPOOL_HOST || hostname()).replaceAll(":", "_")

/** This process table: the machine (its id, else its boot) and the pid namespace, hashed short. */
export const PLACE = (() => {
  const read = (f: () => string) => {
    try {
      return f().trim()
    } catch {
      return ""
    }
  }
  const machine =
    read(() => readFileSync("/etc/machine-id", "utf8")) ||
    read(() => readFileSync("/proc/sys/kernel/random/boot_id", "utf8"))
  const ns = read(() => readlinkSync("/proc/self/ns/pid"))
  return createHash("sha256").update(`${machine}|${ns}`).digest("hex").slice(0, 8)
})()

/**
 * Whether `owner` (host:pid:place.nonce, as engine/owner.ts makes it) is a process of this host and process table
 * that no longer exists. A process of another host or place is never known gone here (its lease or heartbeat has to
 * lapse), nor is this process. An owner id of an older spool (no place) is judged by its host alone.
 */
export function gone(owner: string): boolean {
  const [host, pid, nonce] = owner.split(":")
  if (host !== HOST || !pid || Number(pid) === process.pid) return false
  const place = nonce?.includes(".") ? nonce.split(".")[0] : undefined
  if (place !== undefined && place !== PLACE) return false
  try {
    process.kill(Number(pid), 0)
    return false
  } catch (err) {
    // EPERM: it exists, as another user's process
    return (err as NodeJS.ErrnoException).code === "ESRCH"
  }
}
