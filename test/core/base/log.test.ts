import { describe, expect, test } from "bun:test"
import { existsSync, readFileSync, rmSync, statSync } from "node:fs"
import { join } from "node:path"
import * as log from "../../../src/core/base/log.ts"
import { tmpdir } from "../../lib/tmp.ts"

describe("the log file", () => {
  test("writes owner-only JSON lines and rotates at the limit, keeping five", async () => {
    await using tmp = await tmpdir()
    log.init(tmp.path, 2000)
    for (let i = 0; i < 200; i++) log.debug("tick", { i, pad: "x".repeat(50) })
    const file = tmp.join("logs", "spool.log")
    expect(statSync(file).mode & 0o777).toBe(0o600)
    const first = JSON.parse(readFileSync(file, "utf8").split("\n")[0]!)
    expect(first).toMatchObject({ level: "debug", msg: "tick", pad: "x".repeat(50) })
    for (let k = 1; k <= 5; k++) expect(existsSync(`${file}.${k}`)).toBe(true)
    expect(existsSync(`${file}.6`)).toBe(false)
    for (const f of [file, `${file}.1`, `${file}.5`]) expect(statSync(f).size).toBeLessThanOrEqual(2000)
    // the newest lines are in spool.log, the next older ones in spool.log.1
    const last = readFileSync(file, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l).i as number)
    const older = readFileSync(`${file}.1`, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l).i as number)
    expect(last.at(-1)).toBe(199)
    expect(older.at(-1)! + 1).toBe(last[0]!)
  })
})

describe("a log whose directory goes away", () => {
  test("is made again at the next line; the line is written and nothing throws", async () => {
    await using tmp = await tmpdir()
    log.init(tmp.path)
    log.info("first", {})
    rmSync(join(tmp.path, "logs"), { recursive: true })
    expect(() => log.info("second", { n: 2 })).not.toThrow()
    const lines = readFileSync(join(tmp.path, "logs", "spool.log"), "utf8")
      .trim()
      .split("\n")
    expect(lines.map((l) => (JSON.parse(l) as { msg: string }).msg)).toEqual(["second"])
  })
})
