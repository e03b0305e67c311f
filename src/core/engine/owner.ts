/** This process's identity in the ledger's leases and worker registry, whether another's is dead, and its heartbeat. */
import { hostname } from "node:os"
import * as log from "../base/log.ts"
import { gone } from "../base/process.ts"
import { FRESH_MS, HEARTBEAT_MS, type Ledger } from "../ledger/ledger.ts"

const self = `${hostname()}:${process.pid}:${Math.random().toString(36).slice(2, 10)}`

/** This process's identity in leases: host, pid, and a nonce so that a reused pid is a different owner. */
export function ownerId(): string {
  return self
}

/** Whether an owner is a process on this host that no longer exists. Other hosts' owners wait for expiry. */
export function dead(owner: string): boolean {
  const [host, pid] = owner.split(":")
  // this process's pid with another nonce: an earlier process that had the same pid
  if (host === hostname() && Number(pid) === process.pid) return owner !== self
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
