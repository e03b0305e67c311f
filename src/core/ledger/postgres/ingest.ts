/** The PostgreSQL ledger's ingest: to be written (a stub while the driver is being built). */
import type { Pg } from "./connect.ts"

export class Ingest {
  constructor(readonly pg: Pg) {}
}
