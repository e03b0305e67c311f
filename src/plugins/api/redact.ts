/**
 * Secrets out of error text. A provider or a gateway may repeat the credentials it was sent in its error messages;
 * every error spool makes (`SpoolError`), and every log line, passes through `scrub` first, so a key never reaches
 * the store, the log, `status`, the status page or the terminal.
 */

/** What a secret becomes. */
export const REDACTED = "[redacted]"

/** Shorter "keys" (a test's "x") would take ordinary words out of every message; no real key is this short. */
const MIN_KEY = 8
/** A key is also found cut short (a message truncated mid-key) from this many of its first characters on. */
const HEAD = 12

const keys = new Set<string>()

/**
 * Remembers a key this process sends (a run's API key, read from the environment), so that every error text made
 * from now on has it taken out.
 *
 * @example
 * redact.register(process.env.OPENAI_API_KEY)
 */
export function register(key: string | undefined): void {
  if (key && key.length >= MIN_KEY) keys.add(key)
}

// a token's value runs to the next space, quote, backslash (a JSON-escaped quote), comma or semicolon
const VALUE = String.raw`[^\s"'\\,;]+`
/** `Bearer <token>`, in a header echoed or in prose. */
const BEARER = new RegExp(String.raw`\b(bearer\s+)${VALUE}`, "gi")
/** `x-api-key: <key>`, `api-key=<key>`, `"x-api-key":"<key>"` (also JSON-escaped), and the like. */
const HEADER = new RegExp(String.raw`\b((?:x-)?api[-_]?key\\?["']?\s*[:=]\s*\\?["']?)${VALUE}`, "gi")

/** Every copy of `key` in `text`, and any cut-short copy of at least its first HEAD characters, replaced. */
function without(text: string, key: string): string {
  const head = key.slice(0, HEAD)
  let at = text.indexOf(head)
  if (at < 0) return text
  let out = ""
  let from = 0
  while (at >= 0) {
    let end = at + head.length
    while (end < text.length && end - at < key.length && text[end] === key[end - at]) end++
    out += text.slice(from, at) + REDACTED
    from = end
    at = text.indexOf(head, from)
  }
  return out + text.slice(from)
}

/**
 * `text` with every registered key, and any bearer token or API-key header value, replaced by `[redacted]`.
 *
 * @example
 * scrub("invalid token: Bearer sk-abc123") // "invalid token: Bearer [redacted]"
 */
export function scrub(text: string): string {
  let out = text
  for (const key of keys) out = without(out, key)
  return out.replace(BEARER, `$1${REDACTED}`).replace(HEADER, `$1${REDACTED}`)
}
