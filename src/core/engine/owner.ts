/** This process's identity in the ledger's leases and worker registry, whether another's is dead, and its heartbeat. */
import * as log from "../base/log.ts"
import { gone, HOST, PLACE } from "../base/process.ts"
import { FRESH_MS, HEARTBEAT_MS, type Ledger } from "../ledger/ledger.ts"

const self = `${HOST}:${process.pid}:${PLACE}.${Math.random().toString(36).slice(2, 10)}`

/**
 * This process's identity in leases: host (SPOOL_HOST, else the host name), pid, and its process table's place with
 * a nonce, so that a reused pid is a different owner and a pid is never looked up in another container's table.
 */
export function ownerId(): string {
  return self
}

/**
 * How long a lease (of items, of a run's batches, of its ingest) lasts without renewal: 60 s, or SPOOL_LEASE_S
 * seconds (the tests of many workers, whose killed workers' leases must lapse in seconds). Renewed every quarter.
 */
export function leaseMs(): number {
  const seconds = Number(process.env.SPOOL_LEASE_S)
  return Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : 60_000
}

/** Whether an owner is a process on this host that no longer exists. Other hosts' owners wait for expiry. */
export function dead(owner: string): boolean {
  const [host, pid, nonce] = owner.split(":")
  // this process's pid with another nonce: an earlier process that had the same pid
  const place = nonce?.includes(".") ? nonce.split(".")[0] : PLACE
  if (host === HOST && Number(pid) === process.pid && place === PLACE) return owner !== self
  return gone(owner)
}

/** This process's place among a run's workers, kept fresh until it leaves. */
export interface Enlisted {
  /** Stops the heartbeat and takes this process off the run's workers: a clean exit. */
  leave(): Promise<void>
}

/**
 * Registers this process as a worker of `run` (forgetting workers of it that are gone) and renews its heartbeat
 * every HEARTBEAT_MS, so that the run is shown `running` while it works and `interrupted` once no worker is left.
 * A beat that fails is logged and the next one tries again: the heartbeat tells others, it never stops the work.
 */
export async function enlist(db: Ledger, run: number, owner = self): Promise<Enlisted> {
  const now = Date.now()
  await db.workers.prune(run, dead, now - FRESH_MS)
  await db.workers.beat(run, owner, now)
  let beating: Promise<void> = Promise.resolve()
  const timer = setInterval(() => {
    beating = db.workers.beat(run, owner).catch((err: unknown) => {
      log.debug("heartbeat failed; the next one tries again", { run, error: String(err) })
    })
  }, HEARTBEAT_MS)
  // the heartbeat alone never keeps the process alive
  timer.unref()
  let left = false
  return {
    async leave() {
      if (left) return
      left = true
      clearInterval(timer)
      // a beat under way must not land after the row is gone
      await beating
      await db.workers.leave(run, owner).catch((err: unknown) => {
        // the exit goes on: the row is judged by its process (gone) and its heartbeat (stale) from now on
        log.debug("could not leave the worker registry", { run, error: String(err) })
      })
    },
  }
}

/**
 * The right to read a run's inputs into it (`Ingest.lease`), as a check to call before each batch stored: taken or
 * renewed at most every quarter of a lease (a lease lasts `leaseMs`), so that a watch's passes spare an fsync each;
 * whether this process holds it.
 */
export function ingestLease(db: Ledger, run: number, owner: string): () => Promise<boolean> {
  const ms = leaseMs()
  let leasedAt = 0
  return async () => {
    if (Date.now() - leasedAt < ms / 4) return true
    const held = await db.ingest.lease(run, owner, ms, dead)
    if (held) leasedAt = Date.now()
    return held
  }
}
