/**
 * A store given as a URL (`postgres://…`), and the forms of it that may be shown or printed: nothing of the
 * PostgreSQL driver, so that telling a URL from a folder loads none of it.
 */

/** Whether a store names a PostgreSQL server (a URL) rather than a home directory. */
export function isUrl(store: string): boolean {
  return /^postgres(ql)?:\/\//i.test(store)
}

/** The URL with its password, if it has one, replaced by `by` ("" leaves it out). */
function password(url: string, by: string): string {
  try {
    const u = new URL(url)
    if (!u.password) return url
    u.password = by
    return u.toString()
  } catch {
    return url.replace(/\/\/([^:/@]*):[^@/]*@/, by ? `//$1:${by}@` : "//$1@")
  }
}

/** The URL with its password masked, for logs and messages: the only form of it that is ever shown. */
export function mask(url: string): string {
  return password(url, "***")
}

/**
 * A store URL without its password, for a command printed to be run again (and kept as the run's resume command):
 * the password then comes from PGPASSWORD or a .env file, never from a terminal's scrollback or the ledger.
 */
export function withoutPassword(url: string): string {
  return password(url, "")
}

/** A store as it may be shown in a log, a message or a page: a URL with its password masked, a folder as it is. */
export function shown(store: string): string {
  return isUrl(store) ? mask(store) : store
}
