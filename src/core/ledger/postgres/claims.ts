/** The PostgreSQL ledger's claims: to be written (a stub while the driver is being built). */
import type { Pg } from "./connect.ts"

export class Claims {
  constructor(readonly pg: Pg) {}
}
