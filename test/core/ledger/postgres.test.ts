/** The PostgreSQL driver: the ledger contract, on a schema of its own per test (test/lib/pg.ts). */
import type { Ledger } from "../../../src/core/ledger/ledger.ts"
import * as postgres from "../../../src/core/ledger/postgres/postgres.ts"
import { testLedger } from "../../lib/ledger-contract.ts"
import { pgSchema, SKIP_PG } from "../../lib/pg.ts"

if (!SKIP_PG)
  testLedger("postgres", async () => {
    const schema = await pgSchema()
    const opened: Ledger[] = []
    return {
      async open() {
        const ledger = await postgres.open(schema.url)
        opened.push(ledger)
        return ledger
      },
      async [Symbol.asyncDispose]() {
        for (const ledger of opened) await ledger.close()
        await schema[Symbol.asyncDispose]()
      },
    }
  })
