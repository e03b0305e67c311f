/**
 * A wrong base URL is mistaken, from its first answers, for something else: a 404 for a path the server does not
 * serve reads as a missing model, and a 401 from a gateway or another API as a bad key (an Anthropic base_url ending
 * in /v1 sent `POST /v1/v1/messages/batches` and got "HTTP 401: You didn't provide an API key"). `firstAnswers`
 * tells them apart while nothing has answered well yet. Public: `spool/plugin` exports it for outside providers.
 */
import { ProviderError } from "./errors.ts"

/**
 * A URL as it may be shown: without a user, a password, a query or a fragment (credentials hide in any of them),
 * and without a trailing slash.
 *
 * @example
 * shown("https://user:pw@gateway.example/v1/?key=k") // "https://gateway.example/v1"
 */
export function shown(url: string): string {
  try {
    const u = new URL(url)
    return `${u.protocol}//${u.host}${u.pathname}`.replace(/\/+$/, "")
  } catch {
    return url.replace(/\/\/[^/@]*@/, "//").replace(/[?#].*$/, "")
  }
}

/**
 * Whether an error body is the provider's own documented answer to `status` (401 or 404): `body` is the parsed
 * JSON, or the text when it is not JSON.
 */
export type Documented = (status: 401 | 404, body: unknown) => boolean

/** What a client knows of its first answers. */
export interface FirstAnswers {
  /** An answer worked (2xx): the URL is right, and errors from now on are the requests' own. */
  ok(): void
  /**
   * `err`, or, when nothing has answered well yet and `err` is a 404 or 401 that names a path or is not what the
   * provider documents (`body` is the answer's, parsed or not), the same error saying "check base_url (it is …)",
   * pausing the run (every item would fail the same way), with a hint of what the base URL should be.
   */
  check(err: ProviderError, body: unknown): ProviderError
}

/** A path in an error message: `POST /v1/v1/messages`, "Invalid URL (/chat/completions)", not "org/model". */
const PATH = /(?:^|[\s"'`(])\/[\w.~%-]/
/** A 404 that says nothing of what was not found (after `HTTP 404: `). */
const BARE = /^(?:not found\.?|no body|status code \(no body\))$/i

function parsed(body: unknown): unknown {
  if (typeof body !== "string") return body
  try {
    return JSON.parse(body) as unknown
  } catch {
    return body
  }
}

/**
 * The first-answer check of one client (its realtime calls and batch calls share it). `baseUrl` is the base URL in
 * use; `how` says, for the hint, what it should look like for this provider.
 *
 * @example
 * const first = firstAnswers(base, documented, "An OpenAI base_url ends in /v1.")
 * if (!response.ok) throw first.check(classify(response.status, text, response.headers), text)
 * first.ok()
 */
export function firstAnswers(baseUrl: string, documented: Documented, how: string): FirstAnswers {
  let answered = false
  const made = new WeakSet<ProviderError>()
  return {
    ok() {
      answered = true
    },
    check(err, body) {
      const status = err.status
      if (answered || made.has(err) || (status !== 401 && status !== 404)) return err
      const said = err.message.replace(/^HTTP \d+: /, "")
      const path = PATH.test(said)
      const own = documented(status, parsed(body)) && !(status === 404 && BARE.test(said))
      if (!path && own) return err
      const why = path ? "names a path" : "is not the API's own answer"
      const key = status === 401 ? " If base_url is right, check the API key." : ""
      const message = `${err.message.replace(/[.\s]+$/, "")}; check base_url (it is ${shown(baseUrl)})`
      const out = new ProviderError(err.errorClass, message, {
        retryable: false,
        pause: true,
        status,
        cause: err,
        hint: `Nothing has answered well yet, and this ${status} ${why}: base_url is most likely wrong. ${how}${key}`,
      })
      made.add(out)
      return out
    },
  }
}
