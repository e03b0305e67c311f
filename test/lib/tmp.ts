/** Temporary directories that clean up after themselves: `await using tmp = await tmpdir()`. */
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir as osTmp } from "node:os"
import { join } from "node:path"

export interface Tmp extends AsyncDisposable {
  path: string
  /** A path inside the directory. */
  join(...parts: string[]): string
}

export async function tmpdir(): Promise<Tmp> {
  const path = await mkdtemp(join(osTmp(), "spool-"))
  return {
    path,
    join: (...parts) => join(path, ...parts),
    async [Symbol.asyncDispose]() {
      await rm(path, { recursive: true, force: true })
    },
  }
}
