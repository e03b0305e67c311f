/** A loop's sleep that another part of the process can cut short: new items came in, a call ended, a stop. */
export class Waker {
  private wake: (() => void) | undefined
  private missed = false

  /**
   * `sticky`: a notify that comes while the loop is awake (awaiting the ledger, say) ends its next sleep at once,
   * for a loop that would otherwise sleep through news it did not look for. The runner's is not: it looks at what
   * came in before each sleep, and a stale notify would cut short the wait that gathers results into one commit.
   */
  constructor(private readonly sticky = false) {}

  /** Resolves after `ms` (never by itself when undefined), or at the next `notify()`, whichever comes first. */
  sleep(ms: number | undefined): Promise<void> {
    if (this.missed) {
      this.missed = false
      return Promise.resolve()
    }
    return new Promise((resolve) => {
      const timer = ms === undefined ? undefined : setTimeout(done, Math.max(0, ms))
      const self = this
      function done() {
        clearTimeout(timer)
        if (self.wake === done) self.wake = undefined
        resolve()
      }
      this.wake = done
    })
  }

  /** Ends the sleep in progress; with `sticky`, else the next one. */
  notify(): void {
    const wake = this.wake
    this.wake = undefined
    if (wake) wake()
    else if (this.sticky) this.missed = true
  }
}
