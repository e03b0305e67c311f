/** The contract every source must honour; run it with `testSource(source, fixture)`. */
import { describe, expect, test } from "bun:test"
import * as v from "valibot"
import type { Checkpoint, Source, SourceBatch } from "../../src/plugins/api/define.ts"
import { SourceChangedError } from "../../src/plugins/api/errors.ts"
import { tmpdir } from "./tmp.ts"

export interface Fixture {
  /** Writes the rows in the source's format into `dir`; returns the path the source reads. */
  write(dir: string, rows: Record<string, unknown>[]): Promise<string>
  /**
   * Writes rows `a`, one malformed row, rows `b`; returns the path and the position (line or row) the
   * source must report the malformed row at. Sources that cannot hold a malformed row (typed columnar
   * files) leave this out and test their unreadable-file error instead.
   */
  malformed?(
    dir: string,
    a: Record<string, unknown>[],
    b: Record<string, unknown>[],
  ): Promise<{ path: string; at: number }>
  /**
   * Writes the rows with the last one cut short, as a writer still on it leaves it, and returns the path and how
   * to finish it. Sources of line-ended records leave this in; others (Parquet) leave it out.
   */
  unfinished?(dir: string, rows: Record<string, unknown>[]): Promise<{ path: string; finish(): void }>
  /** Options the source's schema must refuse. */
  invalid: Record<string, unknown>
}

/** `options` should make the source yield several batches for a few thousand rows. */
export function testSource(source: Source, fixture: Fixture, options: Record<string, unknown> = {}): void {
  const all = async (file: string, checkpoint?: Checkpoint, signal?: AbortSignal): Promise<SourceBatch[]> => {
    const out: SourceBatch[] = []
    for await (const batch of source.read(file, { ...options, id: "id" }, checkpoint, signal)) out.push(batch)
    return out
  }

  const rows = Array.from({ length: 4500 }, (_, i) => ({ id: `r${i}`, text: `row ${i}`, n: i }))

  describe(`source contract: ${source.name}`, () => {
    test("reads every row, in the same order on every read, with stable keys", async () => {
      await using tmp = await tmpdir()
      const file = await fixture.write(tmp.path, rows)
      const first = (await all(file)).flatMap((b) => b.rows)
      const second = (await all(file)).flatMap((b) => b.rows)
      expect(first.map((r) => r.key)).toEqual(rows.map((r) => r.id))
      expect(first.map((r) => r.id)).toEqual(rows.map((r) => r.id))
      expect(first.map((r) => r.data.text)).toEqual(rows.map((r) => r.text))
      expect(new Set(first.map((r) => r.line)).size).toBe(rows.length)
      expect(second).toEqual(first)
    })

    test("resuming from every checkpoint yields exactly the rows after it", async () => {
      await using tmp = await tmpdir()
      const file = await fixture.write(tmp.path, rows)
      const batches = await all(file)
      expect(batches.length).toBeGreaterThan(2)
      let seen = 0
      for (const batch of batches) {
        seen += batch.rows.length
        const rest = (await all(file, batch.checkpoint)).flatMap((b) => b.rows)
        expect(rest.map((r) => r.key)).toEqual(rows.slice(seen).map((r) => r.id))
      }
      expect(seen).toBe(rows.length)
    })

    test("checkpoints survive a JSON round trip", async () => {
      await using tmp = await tmpdir()
      const file = await fixture.write(tmp.path, rows.slice(0, 10))
      for (const batch of await all(file)) {
        expect(JSON.parse(JSON.stringify(batch.checkpoint))).toEqual(batch.checkpoint)
      }
    })

    test("refuses to resume when the part already read has changed", async () => {
      await using tmp = await tmpdir()
      const file = await fixture.write(tmp.path, rows)
      const [first] = await all(file)
      const edited = rows.map((r, i) => (i === 0 ? { ...r, text: "edited" } : r))
      await fixture.write(tmp.path, edited)
      await expect(all(file, first?.checkpoint)).rejects.toBeInstanceOf(SourceChangedError)
    })

    test("stops when its signal is aborted", async () => {
      await using tmp = await tmpdir()
      const file = await fixture.write(tmp.path, rows)
      const abort = new AbortController()
      let batches = 0
      for await (const _ of source.read(file, { ...options, id: "id" }, undefined, abort.signal)) {
        batches++
        abort.abort()
      }
      expect(batches).toBe(1)
    })

    if (fixture.malformed) {
      const malformed = fixture.malformed
      test("reports a malformed row with its position and reads on past it", async () => {
        await using tmp = await tmpdir()
        const { path, at } = await malformed(tmp.path, rows.slice(0, 3), rows.slice(3, 6))
        const batches = await all(path)
        expect(batches.flatMap((b) => b.rows).map((r) => r.key)).toEqual(rows.slice(0, 6).map((r) => r.id))
        const problems = batches.flatMap((b) => b.problems)
        expect(problems.map((p) => p.line)).toEqual([at])
        expect(problems[0]?.reason.length).toBeGreaterThan(5)
      })
    }

    if (fixture.unfinished) {
      const unfinished = fixture.unfinished
      test("a last row its writer is still on is not read, nor malformed, until it is complete", async () => {
        await using tmp = await tmpdir()
        const { path, finish } = await unfinished(tmp.path, rows.slice(0, 5))
        const first = await all(path)
        expect(first.flatMap((b) => b.rows).map((r) => r.key)).toEqual(rows.slice(0, 4).map((r) => r.id))
        expect(first.flatMap((b) => b.problems)).toEqual([])
        finish()
        const rest = await all(path, first.at(-1)!.checkpoint)
        expect(rest.flatMap((b) => b.rows).map((r) => r.key)).toEqual([rows[4]!.id])
        expect(rest.flatMap((b) => b.problems)).toEqual([])
      })
    }

    test("its options schema refuses bad options", () => {
      expect(v.safeParse(source.options, fixture.invalid).success).toBe(false)
      expect(v.safeParse(source.options, {}).success).toBe(true)
    })
  })
}
