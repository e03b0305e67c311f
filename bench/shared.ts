/**
 * What the benchmark runners (bench/run.ts, bench/compare.ts) share: a contender in a child process, the fake
 * provider in another, medians, number formatting, and replacing one section of docs/BENCHMARKS.md.
 */
import { existsSync, mkdirSync } from "node:fs"
import { join } from "node:path"

/** This checkout. */
export const root = join(import.meta.dir, "..")

/** What a contender prints: one JSON line of figures. */
export type Figures = Record<string, number | string>

export interface ChildOptions {
  /** the checkout to run in (default: this one) */
  cwd?: string
  /** ms after which a hung child is killed */
  timeout?: number
  /** keep the child's stderr and put its last lines into the error, instead of passing it through as it comes */
  capture?: boolean
}

/**
 * Runs `bun ARGS` and parses the last line it prints as JSON. Each contender runs in a process of its own so none
 * shares a heap, a JIT or a peak RSS with another.
 */
export function child(args: string[], { cwd = root, timeout, capture = false }: ChildOptions = {}): Figures {
  const out = Bun.spawnSync(["bun", ...args], { cwd, stderr: capture ? "pipe" : "inherit", timeout })
  const line = out.stdout.toString().trim().split("\n").at(-1) ?? ""
  if (out.exitCode === 0) return JSON.parse(line) as Figures
  // the error, not its stack or Bun's version banner
  const said = (out.stderr?.toString() ?? "")
    .split("\n")
    .filter((l) => l.trim() && !/^\s*at |^Bun v|^\s*\d* \|/.test(l))
    .slice(-2)
  const why = [line, ...said].filter(Boolean).join(" / ")
  throw new Error(
    `bun ${args.join(" ")} failed in ${cwd} (${out.signalCode ?? `exit ${out.exitCode}`}): ${why}`,
  )
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

/** The run whose `key` is the median one: its other figures belong to the same run. */
export function medianRun(rs: Figures[], key: string): Figures {
  return [...rs].sort((a, b) => Number(a[key]) - Number(b[key]))[Math.floor(rs.length / 2)]!
}

export const fmt = (x: number, digits = 0): string =>
  x.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })

/** `doc` with the section whose heading starts with `heading` (up to the next `## `) replaced by `text`, or appended. */
export function splice(doc: string, heading: string, text: string): string {
  const start = doc.startsWith(heading) ? 0 : doc.indexOf(`\n${heading}`) + 1
  if (start <= 0 && !doc.startsWith(heading)) return `${doc.trimEnd()}\n\n${text.trim()}\n`
  const next = doc.indexOf("\n## ", start + heading.length)
  const rest = next < 0 ? "" : doc.slice(next + 1)
  return `${doc.slice(0, start)}${text.trim()}\n${rest ? `\n${rest}` : ""}`
}

/** The section of `doc` whose heading starts with `heading`, up to the next `## `; undefined when there is none. */
export function section(doc: string, heading: string): string | undefined {
  const start = doc.startsWith(heading) ? 0 : doc.indexOf(`\n${heading}`) + 1
  if (start <= 0 && !doc.startsWith(heading)) return undefined
  const next = doc.indexOf("\n## ", start + heading.length)
  return doc.slice(start, next < 0 ? undefined : next + 1)
}

/**
 * Starts `bun bench/fake.ts LATENCY` of the checkout `cwd` in a process of its own (so the contenders do not share
 * its CPU), calls `fn` with its URL and stops it when `fn` is done.
 */
export async function withFake<T>(
  latency: number,
  fn: (url: string) => T | Promise<T>,
  cwd = root,
): Promise<T> {
  const server = Bun.spawn(["bun", "bench/fake.ts", String(latency)], {
    cwd,
    stdout: "pipe",
    stderr: "inherit",
  })
  const reader = server.stdout.getReader()
  let url = ""
  while (!url.includes("\n")) {
    const { value, done } = await reader.read()
    if (done) throw new Error(`bench/fake.ts in ${cwd} exited before it printed its URL`)
    url += new TextDecoder().decode(value)
  }
  try {
    return await fn(url.trim())
  } finally {
    server.kill("SIGTERM")
    await server.exited
  }
}

/** Where the benchmarks keep their inputs and stores (bench/.data, made when missing). */
export function dataDir(): string {
  const dir = join(import.meta.dir, ".data")
  mkdirSync(dir, { recursive: true })
  return dir
}

/** A JSONL file of `rows` rows (bench/data.ts), made once and kept in bench/.data for the next run. */
export function rowsFile(rows: number): string {
  const input = join(dataDir(), `rows-${rows}.jsonl`)
  if (!existsSync(input)) child(["bench/data.ts", "jsonl", input, String(rows)])
  return input
}
