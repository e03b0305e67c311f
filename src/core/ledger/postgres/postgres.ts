/**
 * The PostgreSQL driver of the ledger (`--store postgres://…`): the same `Ledger` as SQLite's, kept in one schema
 * of a server that many workers on many machines share. Every state change is one transaction (`sql.begin`),
 * retried whole while the connection is lost (connect.ts `retrying`); claims take rows `FOR UPDATE SKIP LOCKED`, so
 * two workers never hold one item; a change others should hear of (new items, a retry due, pause, resume, cancel)
 * sends a NOTIFY on the channel `spool` from inside its transaction (see `notify`).
 */
import type * as api from "../ledger.ts"
import { channel, connect, failure, ready, retrying, type ConnectOptions, type Pg } from "./connect.ts"
import { Batches } from "./batches.ts"
import { Cache } from "./cache.ts"
import { Canaries } from "./canaries.ts"
import { Claims } from "./claims.ts"
import { Ingest } from "./ingest.ts"
import { Primes } from "./primes.ts"
import { Reads } from "./reads.ts"
import { Reviews } from "./reviews.ts"
import { Runs } from "./runs.ts"
import { Steps } from "./steps.ts"
import { Workers } from "./workers.ts"

/**
 * Opens (creating and migrating if needed) the store at `url`. `found`: a client already connected there and the
 * schema version it read (found.ts), used as it is: a read command connects once.
 */
export async function open(
  url: string,
  options: ConnectOptions = {},
  found?: { pg: Pg; version: number },
): Promise<PgLedger> {
  if (!found) return new PgLedger(await connect(url, options))
  const { pg, version } = found
  try {
    await retrying(pg, () => ready(pg, version))
  } catch (err) {
    await pg.sql.close().catch(() => {})
    throw failure(err, pg)
  }
  return new PgLedger(pg)
}

export class PgLedger implements api.Ledger {
  readonly runs: api.Runs
  readonly ingest: api.Ingest
  readonly claims: api.Claims
  readonly batches: api.Batches
  readonly reads: api.Reads
  readonly canaries: api.Canaries
  readonly workers: api.Workers
  readonly cache: api.Cache
  readonly reviews: api.Reviews
  readonly steps: api.Steps
  readonly primes: api.Primes

  constructor(readonly pg: Pg) {
    const runs = new Runs(pg)
    this.runs = runs
    this.ingest = new Ingest(pg, runs)
    const claims = new Claims(pg)
    this.claims = claims
    this.batches = new Batches(pg, runs)
    this.reads = new Reads(pg)
    this.canaries = new Canaries(pg, claims)
    this.workers = new Workers(pg)
    this.cache = new Cache(pg)
    this.reviews = new Reviews(pg)
    this.steps = new Steps(pg)
    this.primes = new Primes(pg)
  }

  /** LISTEN on the store's channel: every worker hears what the others' transactions `notify`. */
  async listen(onNotice: (notice: api.Notice) => void): Promise<() => Promise<void>> {
    const sub = await this.pg.sql.listen(channel(this.pg), (payload) => {
      try {
        onNotice(JSON.parse(payload) as api.Notice)
      } catch {
        // not one of ours: ignored
      }
    })
    return () => sub.unlisten()
  }

  async close(): Promise<void> {
    await this.pg.sql.close()
  }
}
