/** The PostgreSQL ledger's batches: to be written (a stub while the driver is being built). */
import type { Pg } from "./connect.ts"

export class Batches {
  constructor(readonly pg: Pg) {}
}
