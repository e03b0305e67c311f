/**
 * The PostgreSQL driver of the ledger (`--store postgres://…`): the same `Ledger` as SQLite's, kept in one schema
 * of a server that many workers on many machines share. Every state change is one transaction (`sql.begin`),
 * retried whole while the connection is lost (connect.ts `retrying`); claims take rows `FOR UPDATE SKIP LOCKED`, so
 * two workers never hold one item; a change others should hear of (new items, a retry due, pause, resume, cancel)
 * sends a NOTIFY on the channel `spool` from inside its transaction (see `notify`).
 */
import type * as api from "../ledger.ts"
import { connect, type ConnectOptions, type Pg } from "./connect.ts"
import { Batches } from "./batches.ts"
import { Canaries } from "./canaries.ts"
import { Claims } from "./claims.ts"
import { Ingest } from "./ingest.ts"
import { Reads } from "./reads.ts"
import { Runs } from "./runs.ts"
import { Workers } from "./workers.ts"

/** Opens (creating and migrating if needed) the store at `url`. */
export async function open(url: string, options: ConnectOptions = {}): Promise<PgLedger> {
  return new PgLedger(await connect(url, options))
}

export class PgLedger implements api.Ledger {
  readonly runs: api.Runs
  readonly ingest: api.Ingest
  readonly claims: api.Claims
  readonly batches: api.Batches
  readonly reads: api.Reads
  readonly canaries: api.Canaries
  readonly workers: api.Workers

  constructor(readonly pg: Pg) {
    const runs = new Runs(pg)
    this.runs = runs
    this.ingest = new Ingest(pg, runs)
    const claims = new Claims(pg)
    this.claims = claims as unknown as api.Claims
    this.batches = new Batches(pg, runs)
    this.reads = new Reads(pg)
    this.canaries = new Canaries(pg) as unknown as api.Canaries
    this.workers = new Workers(pg)
  }

  async close(): Promise<void> {
    await this.pg.sql.close()
  }
}
