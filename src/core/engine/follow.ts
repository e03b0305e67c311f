/** Follow mode's wait (`spool watch`): until a watched input changes, a poll interval passes, or the run stops. */
import { watch, type FSWatcher } from "node:fs"

/** How often inputs are looked at when no file-system event came: `SPOOL_WATCH_POLL_MS`, or a second. */
export function pollMs(): number {
  const given = Number(process.env.SPOOL_WATCH_POLL_MS)
  return Number.isFinite(given) && given > 0 ? given : 1000
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve()
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer)
      signal.removeEventListener("abort", done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal.addEventListener("abort", done, { once: true })
  })
}

/**
 * Watches input files and the directories globs scan. Events are only a hint to look sooner: every wait also
 * ends after the poll interval, so a file system that reports nothing (a network mount, a watch that could not be
 * set, an inotify limit reached) is still followed, a poll interval late at worst.
 */
export class Follower {
  private readonly watchers = new Map<string, FSWatcher>()
  /** An event came since the last pass began: the next wait ends as soon as the pass rate allows. */
  private changed = false
  private wake: (() => void) | undefined
  private passAt = 0
  private closed = false
  /** At least this long between the starts of two passes, so a file written line by line is read in groups. */
  private readonly settleMs: number

  constructor(private readonly pollMs: number) {
    this.settleMs = Math.min(pollMs, 100)
  }

  /**
   * Watches a file (`file`: its writes) or a directory (`dir`, or `tree` with its subdirectories: files created,
   * renamed and written in it). A path that cannot be watched now (not there yet) is tried again at the next call.
   */
  watch(path: string, kind: "file" | "dir" | "tree"): void {
    if (this.closed || this.watchers.has(path)) return
    let watcher: FSWatcher
    try {
      watcher = watch(path, { persistent: false, recursive: kind === "tree" }, (event) => {
        // a file renamed or deleted: this watch follows the old file, so it is set again on the path next time
        if (kind === "file" && event === "rename") this.drop(path)
        this.notify()
      })
    } catch {
      return
    }
    watcher.on("error", () => this.drop(path))
    this.watchers.set(path, watcher)
  }

  private drop(path: string): void {
    this.watchers.get(path)?.close()
    this.watchers.delete(path)
  }

  private notify(): void {
    this.changed = true
    this.wake?.()
  }

  /** Resolves at the next change (or at once if one came during the last pass), after `pollMs`, or on abort. */
  wait(signal: AbortSignal): Promise<void> {
    if (signal.aborted || this.closed) return Promise.resolve()
    return new Promise((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined
      const arm = (ms: number) => {
        clearTimeout(timer)
        timer = setTimeout(done, Math.max(0, ms))
      }
      const done = () => {
        clearTimeout(timer)
        signal.removeEventListener("abort", done)
        this.wake = undefined
        this.changed = false
        this.passAt = Date.now()
        resolve()
      }
      this.wake = () => (this.closed ? done() : arm(this.passAt + this.settleMs - Date.now()))
      signal.addEventListener("abort", done, { once: true })
      arm(this.pollMs)
      if (this.changed) this.wake()
    })
  }

  /** Closes every watcher and ends a wait in progress. */
  close(): void {
    this.closed = true
    for (const watcher of this.watchers.values()) watcher.close()
    this.watchers.clear()
    this.wake?.()
  }
}
