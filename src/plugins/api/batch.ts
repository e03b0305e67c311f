/**
 * What every batch client shares: how far back `find` looks, how long an upload may take, and a download streamed to
 * disk durably under a stall watch. Public: `spool/plugin` exports them for outside batch clients.
 */
import { closeSync, fsyncSync, openSync, writeSync } from "node:fs"
import { open, rename, rm } from "node:fs/promises"
import { dirname } from "node:path"
import { StoreError } from "./errors.ts"

/** How far before a batch's committed intent `find` still looks: clocks of this machine and the provider's differ. */
export const CLOCK_SLACK_MS = 10 * 60_000

/**
 * Uploading a request file (up to 200 MB) and sending a create body (up to 256 MB) take longer than one realtime
 * call: an SDK's timer runs until the response's headers, so these get at least this long.
 */
export const UPLOAD_TIMEOUT_MS = 15 * 60_000

/**
 * A signal that fires (a TimeoutError) when `ms` pass without `touch()`: a download may take long, but must not
 * stall. `stop()` ends the watch.
 *
 * @example
 * const watch = stallWatch(context.timeoutMs)
 * try {
 *   const response = await fetch(url, { signal: AbortSignal.any([signal, watch.signal]) })
 *   await save(response.body, to.output, watch.touch)
 * } finally {
 *   watch.stop()
 * }
 */
export function stallWatch(ms: number): { signal: AbortSignal; touch(): void; stop(): void } {
  const controller = new AbortController()
  let timer: ReturnType<typeof setTimeout> | undefined
  const fire = () => controller.abort(new DOMException(`no data for ${ms / 1000} s`, "TimeoutError"))
  const touch = () => {
    clearTimeout(timer)
    timer = setTimeout(fire, ms)
  }
  touch()
  return { signal: controller.signal, touch, stop: () => clearTimeout(timer) }
}

/**
 * The length a response announced for its body (Content-Length), when that is the length of the bytes it gives: not
 * for a compressed body, which fetch inflates. `BatchClient.download` returns it so spool can check the file.
 */
export function announced(response: Response): number | undefined {
  const encoding = response.headers.get("content-encoding")
  if (encoding && encoding !== "identity") return undefined
  const length = response.headers.get("content-length")
  return length !== null && /^\d+$/.test(length) ? Number(length) : undefined
}

/**
 * Streams a response body to `path`, durably: into `path.part` (mode 0600), fsynced, then renamed over `path`; a
 * failure leaves no `.part` behind. `touch` is called for every chunk (a stall watch). Never holds the body in memory.
 * A failure of the disk is a StoreError (never retried as a provider's); one of the stream is thrown as it is.
 */
export async function save(
  stream: ReadableStream<Uint8Array> | null,
  path: string,
  touch: () => void = () => {},
): Promise<void> {
  const part = `${path}.part`
  const disk = async <T>(run: () => Promise<T>): Promise<T> => {
    try {
      return await run()
    } catch (cause) {
      throw new StoreError(`cannot write ${part}: ${(cause as Error)?.message ?? String(cause)}`, undefined, {
        cause,
      })
    }
  }
  // a .part left by a crash may have other permissions: start from nothing, so the mode below applies
  await disk(() => rm(part, { force: true }))
  const fd = await disk(async () => openSync(part, "w", 0o600))
  try {
    if (stream) {
      for await (const chunk of stream) {
        touch()
        // a chunk at a time, synchronously: an awaited write per chunk cost more than the writing itself
        let offset = 0
        while (offset < chunk.length) offset += await disk(async () => writeSync(fd, chunk, offset))
      }
    }
    await disk(async () => fsyncSync(fd))
  } catch (error) {
    try {
      closeSync(fd)
    } catch {}
    await rm(part, { force: true }).catch(() => {})
    throw error
  }
  await disk(async () => closeSync(fd))
  await disk(() => rename(part, path))
  // the rename itself is durable once the directory is synced (not every platform lets a directory be opened)
  const dir = await open(dirname(path), "r").catch(() => undefined)
  if (dir)
    await dir
      .sync()
      .catch(() => {})
      .finally(() => dir.close())
}
