/**
 * Test hook: `SPOOL_CRASH_AT=<point>` makes the process kill itself with SIGKILL at that point, so the crash tests
 * can stop a real `dist/spool` exactly between two steps. Points: pack (request file half written), intent (intent
 * committed, create not called), created (create answered, not committed), poll (a poll answered, not committed),
 * download (files written, not committed), apply (the first lines committed, not the rest); hits (the first source
 * batch with cache hits committed, the rest of the input not read), sweep (the first hits of a look-up committed).
 */
export function crashPoint(at: string): void {
  if (process.env.SPOOL_CRASH_AT === at) process.kill(process.pid, "SIGKILL")
}
