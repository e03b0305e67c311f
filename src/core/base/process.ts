/** Whether the process an owner id names is known to be gone: the check the engine's leases and report's liveness share. */
import { hostname } from "node:os"

/**
 * Whether `owner` (host:pid:nonce, as engine/owner.ts makes it) is a process of this host that no longer exists. A
 * process of another host is never known gone here (its lease or heartbeat has to lapse), nor is this process.
 */
export function gone(owner: string): boolean {
  const [host, pid] = owner.split(":")
  if (host !== hostname() || !pid || Number(pid) === process.pid) return false
  try {
    process.kill(Number(pid), 0)
    return false
  } catch (err) {
    // EPERM: it exists, as another user's process
    return (err as NodeJS.ErrnoException).code === "ESRCH"
  }
}
