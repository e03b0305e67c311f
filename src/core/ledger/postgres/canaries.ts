/** The PostgreSQL ledger's canaries: to be written (a stub while the driver is being built). */
import type { Pg } from "./connect.ts"

export class Canaries {
  constructor(readonly pg: Pg) {}
}
