/** A loop's sleep that another part of the process can cut short: new items came in, a call ended, a stop. */
export class Waker {
  private wake: (() => void) | undefined

  /** Resolves after `ms` (never by itself when undefined), or at the next `notify()`, whichever comes first. */
  sleep(ms: number | undefined): Promise<void> {
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

  /** Ends the sleep in progress, if any. */
  notify(): void {
    const wake = this.wake
    this.wake = undefined
    wake?.()
  }
}
