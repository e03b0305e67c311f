/** The PostgreSQL ledger's runs: to be written (a stub while the driver is being built). */
import type { Pg } from "./connect.ts"

export class Runs {
  constructor(readonly pg: Pg) {}
}
