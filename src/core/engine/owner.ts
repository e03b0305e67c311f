/** This process's identity in the ledger's leases, and whether another owner's process is gone. */
import { hostname } from "node:os"

const self = `${hostname()}:${process.pid}:${Math.random().toString(36).slice(2, 10)}`

/** This process's identity in leases: host, pid, and a nonce so that a reused pid is a different owner. */
export function ownerId(): string {
  return self
}

/** Whether an owner is a process on this host that no longer exists. Other hosts' owners wait for expiry. */
export function dead(owner: string): boolean {
  const [host, pid] = owner.split(":")
  if (host !== hostname() || !pid) return false
  if (Number(pid) === process.pid) return owner !== self
  try {
    process.kill(Number(pid), 0)
    return false
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ESRCH"
  }
}
