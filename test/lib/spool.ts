/** Spawns the compiled binary, as a user would run it. */
import { existsSync } from "node:fs"
import { join } from "node:path"

export const BIN = join(import.meta.dir, "..", "..", "dist", "spool")

export function requireBinary(): void {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: build it first with \`bun run build\``)
}

export interface Ran {
  code: number
  stdout: string
  stderr: string
}

/** Env for a child: the test's own (keys removed by the preload) plus what the test adds. */
export function env(extra: Record<string, string> = {}): Record<string, string> {
  return { ...(process.env as Record<string, string>), SPOOL_QUIET: "", ...extra }
}

export function start(args: string[], options: { cwd: string; env?: Record<string, string> }) {
  requireBinary()
  return Bun.spawn([BIN, ...args], {
    cwd: options.cwd,
    // each test's store lives in its own directory unless the test names one
    env: env({ SPOOL_HOME: `${options.cwd}/.spool`, ...options.env }),
    stdout: "pipe",
    stderr: "pipe",
    stdin: "ignore",
  })
}

/**
 * The peak resident memory of a child started with `start`, its own: the VmHWM of its /proc status, read every 5 ms
 * until it exits. (Its `resourceUsage().maxRSS` is not: on Linux a process starts with the peak of its parent.)
 */
export async function peakRss(child: ReturnType<typeof start>): Promise<number> {
  let peak = 0
  const status = `/proc/${child.pid}/status`
  while (child.exitCode === null && child.signalCode === null) {
    const text = await Bun.file(status)
      .text()
      .catch(() => "")
    const kb = Number(/^VmHWM:\s+(\d+) kB/m.exec(text)?.[1] ?? 0)
    peak = Math.max(peak, kb * 1024)
    await Bun.sleep(5)
  }
  return peak
}

export async function spool(
  args: string[],
  options: { cwd: string; env?: Record<string, string> },
): Promise<Ran> {
  const child = start(args, options)
  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ])
  return { code, stdout, stderr }
}

/** A seeded PRNG (mulberry32), so a schedule of kills is the same on every run. */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export async function until(
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await Bun.sleep(10)
  }
}

/**
 * Reads a child's stderr until it prints the address it serves (`serving http://…`). `rest()` gives all it printed,
 * once it has exited; without a call to it, the rest is drained so the child never blocks on a full pipe.
 */
export async function served(
  stderr: ReadableStream<Uint8Array>,
): Promise<{ url: string; rest: () => Promise<string> }> {
  const reader = stderr.getReader()
  const decoder = new TextDecoder()
  let text = ""
  const deadline = Date.now() + 20_000
  while (!/serving (http:\/\/\S+)/.test(text)) {
    if (Date.now() > deadline) throw new Error(`no address on stderr: ${text}`)
    const { done, value } = await reader.read()
    if (done) throw new Error(`exited before serving: ${text}`)
    text += decoder.decode(value)
  }
  const url = /serving (http:\/\/\S+)/.exec(text)?.[1] as string
  const drained = (async () => {
    for (let r = await reader.read(); !r.done; r = await reader.read()) text += decoder.decode(r.value)
  })().catch(() => {})
  return {
    url,
    rest: async () => {
      await drained
      return text
    },
  }
}
