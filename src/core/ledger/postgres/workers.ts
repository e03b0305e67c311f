/** The PostgreSQL ledger's workers: to be written (a stub while the driver is being built). */
import type { Pg } from "./connect.ts"

export class Workers {
  constructor(readonly pg: Pg) {}
}
