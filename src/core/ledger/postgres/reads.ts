/** The PostgreSQL ledger's reads: to be written (a stub while the driver is being built). */
import type { Pg } from "./connect.ts"

export class Reads {
  constructor(readonly pg: Pg) {}
}
