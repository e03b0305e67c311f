/** Whether an owner's process is known gone: only where its pid means the same process (host and process table). */
import { describe, expect, test } from "bun:test"
import { gone, HOST, PLACE } from "../../../src/core/base/process.ts"
import { dead, ownerId } from "../../../src/core/engine/owner.ts"

/** A pid that exited: a child that ran and ended. */
async function exitedPid(): Promise<number> {
  const child = Bun.spawn(["true"])
  await child.exited
  return child.pid
}

describe("gone", () => {
  test("an exited process of this host and process table is gone; of another place or host it is not known gone", async () => {
    const pid = await exitedPid()
    expect(gone(`${HOST}:${pid}:${PLACE}.abc`)).toBe(true)
    // another container with the same host name: its pid means another process there
    expect(gone(`${HOST}:${pid}:0000beef.abc`)).toBe(false)
    expect(gone(`another-host:${pid}:${PLACE}.abc`)).toBe(false)
    // an owner id of an older spool, without a place: judged by its host
    expect(gone(`${HOST}:${pid}:abc`)).toBe(true)
    // a live process is not gone
    expect(gone(`${HOST}:${process.pid === 1 ? 2 : 1}:${PLACE}.abc`)).toBe(false)
  })

  test("this process's owner id carries its host, pid and place; an earlier owner with its pid is dead, itself is not", () => {
    const me = ownerId()
    expect(me.split(":").slice(0, 2)).toEqual([HOST, String(process.pid)])
    expect(me.split(":")[2]!.split(".")[0]).toBe(PLACE)
    expect(dead(me)).toBe(false)
    expect(dead(`${HOST}:${process.pid}:${PLACE}.earlier`)).toBe(true)
    expect(dead(`${HOST}:${process.pid}:0000beef.earlier`)).toBe(false)
  })
})
