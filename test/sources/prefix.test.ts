import { describe, expect, test } from "bun:test"
import { mkdirSync } from "node:fs"
import jsonl from "../../src/sources/jsonl.ts"
import { csv } from "../../src/sources/csv.ts"
import parquet from "../../src/sources/parquet.ts"
import type { Source } from "../../src/plugins/api/define.ts"
import { tmpdir } from "../lib/tmp.ts"

async function read(source: Source, file: string): Promise<void> {
  for await (const _ of source.read(file, {}, undefined));
}

describe("opening an input file", () => {
  for (const [source, ext] of [
    [jsonl, "jsonl"],
    [csv, "csv"],
    [parquet, "parquet"],
  ] as const)
    test(`${source.name}: a directory, a device and a FIFO are refused for what they are, not as missing`, async () => {
      await using tmp = await tmpdir()
      const dir = tmp.join(`d.${ext}`)
      mkdirSync(dir)
      await expect(read(source, dir)).rejects.toThrow(`cannot read ${dir}: it is a directory`)
      await expect(read(source, "/dev/null")).rejects.toThrow(
        "cannot read /dev/null: it is not a regular file (character device)",
      )
      // refused, not read: a FIFO with no writer would block the read forever
      const fifo = tmp.join(`f.${ext}`)
      Bun.spawnSync(["mkfifo", fifo])
      await expect(read(source, fifo)).rejects.toThrow(`cannot read ${fifo}: it is not a regular file (FIFO)`)
      await expect(read(source, tmp.join(`none.${ext}`))).rejects.toThrow(
        `cannot read ${tmp.join(`none.${ext}`)}: no such file`,
      )
    })
})
