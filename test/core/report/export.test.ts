/**
 * Results exports on a real SQLite store (src/core/report/export.ts, parquet.ts): embedding vectors, written straight
 * into the items table (no embedding run exists yet), as a float32 list in Parquet, arrays in JSONL and JSON text in
 * CSV; vectors of two lengths refused; row groups of 25,000 rows; DuckDB reading the file when it is installed.
 */
import { describe, expect, test } from "bun:test"
import { Database } from "bun:sqlite"
import { existsSync } from "node:fs"
import { join } from "node:path"
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects } from "hyparquet"
import Papa from "papaparse"
import type { Ledger } from "../../../src/core/ledger/ledger.ts"
import * as sqlite from "../../../src/core/ledger/sqlite/sqlite.ts"
import type { Run } from "../../../src/core/ledger/types.ts"
import { columnsOf, shapeOf } from "../../../src/core/report/columns.ts"
import { csvLines, jsonlLines, plan, type ExportOptions } from "../../../src/core/report/export.ts"
import { groupRows, writeParquet } from "../../../src/core/report/parquet.ts"
import { seed } from "../../lib/ledger.ts"
import { tmpdir } from "../../lib/tmp.ts"

const DUCKDB = join(import.meta.dir, "..", "..", "..", "node_modules", "@duckdb", "node-api")

/** Float32 bytes, little-endian, of `xs`. */
const bytes = (xs: number[]) => new Uint8Array(new Float32Array(xs).buffer)

/** A run of `n` rows, every item completed (answer `a<i>`) straight in the store, with `vectors[i]` on item i. */
async function embedded(
  home: string,
  n: number,
  vectors: (number[] | null)[],
): Promise<{ l: Ledger; run: Run }> {
  const l = sqlite.open(home)
  const { run } = await seed(l, n)
  const db = new Database(join(home, "spool.db"))
  db.run(
    "UPDATE items SET state = 'completed', attempts = 1, output = 'a' || substr(key, 2), input_tokens = 3 WHERE run_id = ?",
    [run.id],
  )
  const ids = db
    .query<{ id: number }, [number]>("SELECT id FROM items WHERE run_id = ? ORDER BY id")
    .all(run.id)
  vectors.forEach((v, i) => v && db.run("UPDATE items SET vector = ? WHERE id = ?", [bytes(v), ids[i]!.id]))
  db.close()
  return { l, run }
}

async function all(lines: AsyncIterable<string>): Promise<string> {
  let text = ""
  for await (const line of lines) text += line
  return text
}

const VECTORS = [[0.1, -2.5, 3], [1, 2, 3.25], null, [0, 0.5, -0.125]]

describe("results export of vectors", () => {
  test("parquet: a LIST of FLOAT, every row the vector's float32 values, null where an item has none", async () => {
    await using tmp = await tmpdir()
    const { l, run } = await embedded(tmp.path, 4, VECTORS)
    try {
      const o: ExportOptions = { format: "parquet", join: true }
      const columns = await plan(l, run, o)
      expect(columns.map((c) => c.name)).toEqual([
        "text",
        "id",
        "state",
        "attempts",
        "cost_usd",
        "prompt_cache_saved_usd",
        "cache_write_tokens",
        "cached",
        "error",
        "vector",
        "output",
      ])
      const path = tmp.join("v.parquet")
      expect(await writeParquet(l, run, o, columns, path)).toBe(4)
      const file = await asyncBufferFromFile(path)
      const meta = await parquetMetadataAsync(file)
      const at = meta.schema.findIndex((s) => s.name === "vector")
      expect(
        meta.schema.slice(at, at + 3).map((s) => [s.name, s.type, s.converted_type, s.repetition_type]),
      ).toEqual([
        ["vector", undefined, "LIST", "OPTIONAL"],
        ["list", undefined, undefined, "REPEATED"],
        ["element", "FLOAT", undefined, "REQUIRED"],
      ])
      const rows = (await parquetReadObjects({ file, columns: ["id", "vector", "text", "output"] })) as {
        id: string
        vector: number[] | undefined
      }[]
      expect(rows.map((r) => r.id)).toEqual(["k1", "k2", "k3", "k4"])
      expect(rows.map((r) => r.vector)).toEqual([
        VECTORS[0]!.map(Math.fround),
        VECTORS[1]!,
        undefined,
        VECTORS[3]!,
      ])
      expect(rows[0]).toMatchObject({ text: "t1", output: "a1" })
    } finally {
      await l.close()
    }
  })

  test("jsonl: `vector` an array of the float32 values; csv: JSON text; none for an item without one", async () => {
    await using tmp = await tmpdir()
    const { l, run } = await embedded(tmp.path, 4, VECTORS)
    try {
      const json = (await all(jsonlLines(l, run, { format: "jsonl", join: false })))
        .trim()
        .split("\n")
        .map((x) => JSON.parse(x) as { id: string; vector?: number[] })
      expect(json.map((j) => j.vector)).toEqual([
        VECTORS[0]!.map(Math.fround),
        VECTORS[1]!,
        undefined,
        VECTORS[3]!,
      ])
      const o: ExportOptions = { format: "csv", join: false }
      const text = await all(csvLines(l, run, o, await plan(l, run, o)))
      const rows = Papa.parse<string[]>(text.trimEnd()).data
      expect(rows[0]).toEqual([
        "id",
        "state",
        "attempts",
        "cost_usd",
        "prompt_cache_saved_usd",
        "cache_write_tokens",
        "cached",
        "error",
        "vector",
        "output",
      ])
      expect(rows.slice(1).map((r) => r[8])).toEqual([
        JSON.stringify(VECTORS[0]!.map(Math.fround)),
        "[1,2,3.25]",
        "",
        "[0,0.5,-0.125]",
      ])
      // gpt-4o-mini: 3 input tokens at $0.15 per million, at full precision
      expect(rows[1]![3]).toBe(String((3 * 0.15) / 1e6))
    } finally {
      await l.close()
    }
  })

  test("vectors of two lengths are refused, naming both lengths and an item", async () => {
    await using tmp = await tmpdir()
    const { l, run } = await embedded(tmp.path, 3, [[1, 2, 3], [1, 2], null])
    try {
      await expect(plan(l, run, { format: "parquet", join: false })).rejects.toThrow(
        "the run's vectors have different lengths: 3 and 2 (item k2); an export writes one length",
      )
    } finally {
      await l.close()
    }
  })

  test("row groups of 25,000 rows (fewer with long vectors): 60,000 items make three", async () => {
    expect([groupRows(null), groupRows(3), groupRows(1536), groupRows(100_000)]).toEqual([
      25_000, 25_000, 2604, 256,
    ])
    await using tmp = await tmpdir()
    const { l, run } = await embedded(tmp.path, 60_000, [])
    try {
      const o: ExportOptions = { format: "parquet", join: true, states: ["completed"] }
      const path = tmp.join("big.parquet")
      expect(await writeParquet(l, run, o, await plan(l, run, o), path)).toBe(60_000)
      const file = await asyncBufferFromFile(path)
      const meta = await parquetMetadataAsync(file)
      expect(meta.row_groups.map((g) => Number(g.num_rows))).toEqual([25_000, 25_000, 10_000])
      const last = (await parquetReadObjects({
        file,
        columns: ["id", "text"],
        rowStart: 59_999,
        rowEnd: 60_000,
      })) as Record<string, unknown>[]
      expect(last).toEqual([{ id: "k60000", text: "t60000" }])
    } finally {
      await l.close()
    }
  })
})

describe("output columns of a schema", () => {
  test("each top-level property a column of its type; nullable unions, enums, nested objects and arrays", () => {
    expect(shapeOf({ type: ["integer", "null"] })).toEqual({ kind: "integer" })
    expect(shapeOf({ enum: ["a", "b"] })).toEqual({ kind: "string" })
    expect(shapeOf({ anyOf: [{ type: "string" }] })).toEqual({ kind: "json" })
    expect(
      shapeOf({ type: "array", items: { type: "object", properties: { x: { type: "number" } } } }),
    ).toEqual({
      kind: "list",
      item: { kind: "struct", fields: [{ name: "x", shape: { kind: "number" } }] },
    })
    const schema = { type: "object", properties: { label: { type: "string" }, n: { type: "integer" } } }
    const names = (prefix: string | undefined) =>
      columnsOf({ input: [], cached: false, dimensions: null, schema, prefix }).map((c) => c.name)
    expect(names(undefined)).toEqual([
      "id",
      "state",
      "attempts",
      "cost_usd",
      "prompt_cache_saved_usd",
      "cache_write_tokens",
      "error",
      "output.label",
      "output.n",
    ])
    expect(names("")).toEqual([
      "id",
      "state",
      "attempts",
      "cost_usd",
      "prompt_cache_saved_usd",
      "cache_write_tokens",
      "error",
      "label",
      "n",
    ])
    // a property named like one of spool's columns, with bare names: refused, naming it
    expect(() =>
      columnsOf({
        input: [],
        cached: false,
        dimensions: null,
        schema: { ...schema, properties: { state: {} } },
        prefix: "",
      }),
    ).toThrow(`two columns would be named "state": spool's state and the output's property state`)
  })
})

// DuckDB reads the Parquet file too when its npm package is installed (another part of issue 17 may add it)
if (!existsSync(DUCKDB))
  console.warn(
    "\n!!! SKIPPED: DuckDB reading spool's Parquet (node_modules/@duckdb/node-api is not installed) !!!\n",
  )

describe("DuckDB reads the Parquet file", () => {
  test.skipIf(!existsSync(DUCKDB))(
    "its types and values: strings, int64, double, boolean, the vector list",
    async () => {
      await using tmp = await tmpdir()
      const { l, run } = await embedded(tmp.path, 4, VECTORS)
      const path = tmp.join("d.parquet")
      try {
        const o: ExportOptions = { format: "parquet", join: true }
        await writeParquet(l, run, o, await plan(l, run, o), path)
      } finally {
        await l.close()
      }
      const duck = (await import(DUCKDB)) as {
        DuckDBInstance: {
          create(): Promise<{
            connect(): Promise<{
              runAndReadAll(sql: string): Promise<{ getRowObjectsJson(): Record<string, unknown>[] }>
              closeSync?(): void
            }>
          }>
        }
      }
      const db = await duck.DuckDBInstance.create()
      const c = await db.connect()
      const types = (
        await c.runAndReadAll(`DESCRIBE SELECT * FROM read_parquet('${path}')`)
      ).getRowObjectsJson()
      expect(Object.fromEntries(types.map((t) => [t.column_name, t.column_type]))).toEqual({
        text: "VARCHAR",
        id: "VARCHAR",
        state: "VARCHAR",
        attempts: "BIGINT",
        cost_usd: "DOUBLE",
        prompt_cache_saved_usd: "DOUBLE",
        cache_write_tokens: "BIGINT",
        cached: "BOOLEAN",
        error: "VARCHAR",
        vector: "FLOAT[]",
        output: "VARCHAR",
      })
      const rows = (
        await c.runAndReadAll(
          `SELECT id, len(vector) AS n, vector[2] AS second FROM read_parquet('${path}') ORDER BY id`,
        )
      ).getRowObjectsJson()
      expect(rows).toEqual([
        { id: "k1", n: "3", second: -2.5 },
        { id: "k2", n: "3", second: 2 },
        { id: "k3", n: null, second: null },
        { id: "k4", n: "3", second: 0.5 },
      ])
    },
  )
})
