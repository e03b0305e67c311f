/**
 * `spool results --format parquet` (docs/RESULTS.md): the export's columns as a Parquet schema, and the file written a
 * row group at a time with hyparquet-writer, so at most one row group of the run is ever in memory.
 */
import { closeSync, fsyncSync, openSync, writeSync } from "node:fs"
import { ByteWriter, ParquetWriter } from "hyparquet-writer"
import type { Ledger } from "../ledger/ledger.ts"
import type { Run } from "../ledger/types.ts"
import { fit, type Column, type Shape } from "./columns.ts"
import { changed, tableRows, type ExportOptions, type TableRow } from "./export.ts"

type SchemaElement = ConstructorParameters<typeof ParquetWriter>[0]["schema"][number]

/** Rows of a row group: about 25,000, fewer with long vectors (at most ~4M numbers of them held at once). */
export function groupRows(dimensions: number | null): number {
  if (!dimensions) return 25_000
  return Math.max(256, Math.min(25_000, Math.floor(4_000_000 / dimensions)))
}

/** The schema elements of one column (a group's children follow it, depth first); every column is optional. */
function elements(name: string, shape: Shape, required = false): SchemaElement[] {
  const repetition_type = required ? "REQUIRED" : "OPTIONAL"
  switch (shape.kind) {
    case "string":
      return [{ name, repetition_type, type: "BYTE_ARRAY", converted_type: "UTF8" }]
    case "json":
      return [{ name, repetition_type, type: "BYTE_ARRAY", converted_type: "JSON" }]
    case "integer":
      return [{ name, repetition_type, type: "INT64" }]
    case "number":
      return [{ name, repetition_type, type: "DOUBLE" }]
    case "boolean":
      return [{ name, repetition_type, type: "BOOLEAN" }]
    case "struct":
      return [
        { name, repetition_type, num_children: shape.fields.length },
        ...shape.fields.flatMap((f) => elements(f.name, f.shape)),
      ]
    case "list":
      return [
        { name, repetition_type, converted_type: "LIST", num_children: 1 },
        { name: "list", repetition_type: "REPEATED", num_children: 1 },
        ...elements("element", shape.item),
      ]
    case "vector":
      return [
        { name, repetition_type, converted_type: "LIST", num_children: 1 },
        { name: "list", repetition_type: "REPEATED", num_children: 1 },
        { name: "element", repetition_type: "REQUIRED", type: "FLOAT" },
      ]
  }
}

/** The file's schema: a root, then each column's elements. */
export function schemaOf(columns: Column[]): SchemaElement[] {
  return [
    { name: "root", num_children: columns.length },
    ...columns.flatMap((c) => elements(c.name, c.shape)),
  ]
}

/** A hyparquet writer into a file descriptor: its buffer goes to the file past 1 MB, and after each row group. */
function fdWriter(fd: number): ByteWriter {
  const writer = new ByteWriter()
  const flush = () => {
    if (writer.index === 0) return
    const chunk = new Uint8Array(writer.buffer, 0, writer.index)
    let done = 0
    while (done < chunk.byteLength) done += writeSync(fd, chunk, done)
    writer.index = 0
  }
  const grow = writer.ensure.bind(writer)
  writer.ensure = (size: number) => {
    if (writer.index > 1_000_000) flush()
    grow(size)
  }
  Object.assign(writer, { flush, finish: flush })
  return writer
}

/**
 * Writes a one-step run's export to `path` (a new file, owner-only, synced before it returns) a row group at a time;
 * says how many rows it wrote. The caller writes it beside its target and renames it.
 */
export function writeParquet(
  db: Ledger,
  run: Run,
  o: ExportOptions,
  columns: Column[],
  path: string,
): Promise<number> {
  return writeTable(path, run.name, columns, tableRows(db, run, o, columns))
}

/**
 * Writes `rows` as a Parquet file of `columns` at `path` (a new file, owner-only, synced before it returns), a row
 * group at a time, the run's name in its metadata; says how many rows it wrote.
 */
export async function writeTable(
  path: string,
  name: string,
  columns: Column[],
  rows: AsyncIterable<TableRow>,
): Promise<number> {
  const fd = openSync(path, "wx", 0o600)
  try {
    const writer = fdWriter(fd)
    const parquet = new ParquetWriter({
      writer,
      schema: schemaOf(columns),
      codec: "SNAPPY",
      createdBy: "spool",
      kvMetadata: [{ key: "spool.run", value: name }],
    })
    const vector = columns.find((c) => c.shape.kind === "vector")?.shape
    const size = groupRows(vector?.kind === "vector" ? vector.dimensions : null)
    let data: unknown[][] = columns.map(() => [])
    let held = 0
    let count = 0
    const write = async () => {
      if (!held) return
      await parquet.write({
        columnData: columns.map((c, i) => ({ name: c.name, data: data[i]! as never })),
        rowGroupSize: held,
      })
      data = columns.map(() => [])
      held = 0
      // the group's rows, values and pages are garbage now: collected at once, the peak RSS stays one group's
      Bun.gc(true)
    }
    for await (const row of rows) {
      for (let i = 0; i < columns.length; i++) {
        const c = columns[i]!
        const raw = row.cells[i]
        const value = fit(c.shape, raw)
        // an input field whose kind is not the one learned: the run changed since (the answers' may not fit)
        if (value === null && raw !== null && raw !== undefined && c.from.part === "input")
          throw changed(`input field "${c.from.field}" of item ${row.key} is not of its column's kind`)
        data[i]!.push(value)
      }
      held++
      count++
      if (held >= size) await write()
    }
    await write()
    await parquet.finish()
    fsyncSync(fd)
    return count
  } finally {
    closeSync(fd)
  }
}
