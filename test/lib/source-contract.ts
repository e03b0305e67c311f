/** The contract every source must honour; run it with `testSource(source, fixture)`. */
import { describe, expect, test } from "bun:test"
import type { Checkpoint, Source, SourceBatch } from "../../src/plugins/define.ts"
import { tmpdir } from "./tmp.ts"

export interface Fixture {
  /** Writes the rows in the source's format into `dir`; returns the file's path. */
  write(dir: string, rows: Record<string, unknown>[]): Promise<string>
}

/** `options` should make the source yield several batches for a few thousand rows. */
export function testSource(source: Source, fixture: Fixture, options: Record<string, unknown> = {}): void {
  const all = async (source: Source, file: string, checkpoint?: Checkpoint): Promise<SourceBatch[]> => {
    const out: SourceBatch[] = []
    for await (const batch of source.read(file, { ...options, id: "id" }, checkpoint)) out.push(batch)
    return out
  }

  const rows = Array.from({ length: 4500 }, (_, i) => ({ id: `r${i}`, text: `row ${i}`, n: i }))

  describe(`source contract: ${source.name}`, () => {
    test("reads every row, in the same order on every read, with stable keys", async () => {
      await using tmp = await tmpdir()
      const file = await fixture.write(tmp.path, rows)
      const first = (await all(source, file)).flatMap((b) => b.rows)
      const second = (await all(source, file)).flatMap((b) => b.rows)
      expect(first.map((r) => r.key)).toEqual(rows.map((r) => r.id))
      expect(first.map((r) => r.data.text)).toEqual(rows.map((r) => r.text))
      expect(second).toEqual(first)
    })

    test("resuming from every checkpoint yields exactly the rows after it", async () => {
      await using tmp = await tmpdir()
      const file = await fixture.write(tmp.path, rows)
      const batches = await all(source, file)
      expect(batches.length).toBeGreaterThan(2)
      let seen = 0
      for (const batch of batches) {
        seen += batch.rows.length
        const rest = (await all(source, file, batch.checkpoint)).flatMap((b) => b.rows)
        expect(rest.map((r) => r.key)).toEqual(rows.slice(seen).map((r) => r.id))
      }
    })

    test("checkpoints survive a JSON round trip", async () => {
      await using tmp = await tmpdir()
      const file = await fixture.write(tmp.path, rows.slice(0, 10))
      for (const batch of await all(source, file)) {
        expect(JSON.parse(JSON.stringify(batch.checkpoint))).toEqual(batch.checkpoint)
      }
    })
  })
}
