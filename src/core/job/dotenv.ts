import { existsSync, readFileSync } from "node:fs"
import { resolve } from "node:path"

/** Loads `.env` from `dir` into the environment without overriding what is already set. */
export function loadDotenv(dir = process.cwd()): void {
  const path = resolve(dir, ".env")
  if (!existsSync(path)) return
  for (const line of readFileSync(path, "utf8").split(/\r?\n/)) {
    const m = /^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$/.exec(line)
    if (!m) continue
    const key = m[1] as string
    let value = m[2] as string
    const quoted = /^(['"])(.*)\1$/.exec(value)
    if (quoted)
      value = quoted[1] === '"' ? (quoted[2] as string).replace(/\\n/g, "\n") : (quoted[2] as string)
    else value = value.replace(/\s+#.*$/, "")
    if (process.env[key] === undefined) process.env[key] = value
  }
}
