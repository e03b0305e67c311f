/** A wrong base URL told from a wrong key or model by a client's first answers (src/plugins/api/baseurl.ts). */
import { describe, expect, test } from "bun:test"
import { firstAnswers, shown, type Documented } from "../../../src/plugins/api/baseurl.ts"
import { ProviderError } from "../../../src/plugins/api/errors.ts"
import { byStatus } from "../../../src/plugins/api/http.ts"

const BASE = "http://127.0.0.1:8000/api"
const HOW = "The paths go under base_url."

/** The provider of these tests documents `{own: message}` bodies. */
const documented: Documented = (_status, body) =>
  typeof body === "object" && body !== null && typeof (body as { own?: unknown }).own === "string"

const error = (status: number, said: string) => byStatus(status, `HTTP ${status}: ${said}`, undefined)

const fieldsOf = (e: ProviderError) => ({
  class: e.errorClass,
  status: e.status,
  retryable: e.retryable,
  pause: e.pause,
  message: e.message,
  hint: e.hint,
})

describe("a base URL shown", () => {
  test("without credentials, query, fragment or trailing slash", () => {
    expect(shown("https://user:secret-pass@gateway.example/v1/?api-key=k#x")).toBe(
      "https://gateway.example/v1",
    )
    expect(shown("http://127.0.0.1:8000/")).toBe("http://127.0.0.1:8000")
    expect(shown("http://127.0.0.1:8000/v1")).toBe("http://127.0.0.1:8000/v1")
    // not a URL: the credentials and the query are cut all the same
    expect(shown("//user:pw@host/v1?key=k")).toBe("//host/v1")
  })
})

describe("the first answers", () => {
  test("a 404 that names a path says to check base_url, pauses the run, and keeps its class and status", () => {
    const first = firstAnswers(BASE, documented, HOW)
    const err = first.check(
      error(404, "Not Found: POST /api/v1/messages"),
      '{"own":"Not Found: POST /api/v1/messages"}',
    )
    expect(fieldsOf(err)).toEqual({
      class: "not_found",
      status: 404,
      retryable: false,
      pause: true,
      message: `HTTP 404: Not Found: POST /api/v1/messages; check base_url (it is ${BASE})`,
      hint: `Nothing has answered well yet, and this 404 names a path: base_url is most likely wrong. ${HOW}`,
    })
    // quoted or in parentheses, as OpenAI writes it
    expect(first.check(error(404, "Invalid URL (POST /v1/v1/chat/completions)"), { own: "x" }).pause).toBe(
      true,
    )
  })

  test("a 404 or 401 that is not the provider's own says so; a 401's hint names the key too", () => {
    const first = firstAnswers(`${BASE}?key=secret`, documented, HOW)
    const html = first.check(error(404, "<html>nginx</html>"), "<html>nginx</html>")
    expect(html.message).toBe(`HTTP 404: <html>nginx</html>; check base_url (it is ${BASE})`)
    expect(html.hint).toBe(
      `Nothing has answered well yet, and this 404 is not the API's own answer: base_url is most likely wrong. ${HOW}`,
    )
    const auth = first.check(error(401, "You didn't provide an API key."), {
      error: { message: "You didn't provide an API key.", type: "invalid_request_error" },
    })
    expect(fieldsOf(auth)).toEqual({
      class: "auth",
      status: 401,
      retryable: false,
      pause: true,
      message: `HTTP 401: You didn't provide an API key; check base_url (it is ${BASE})`,
      hint:
        `Nothing has answered well yet, and this 401 is not the API's own answer: base_url is most likely wrong. ` +
        `${HOW} If base_url is right, check the API key.`,
    })
    // a text body that is JSON is read as JSON
    const own = error(401, "invalid key")
    expect(first.check(own, '{"own":"invalid key"}')).toBe(own)
  })

  test("the provider's own 404 and 401 are left as they are, but a 404 that says only 'Not Found' is not", () => {
    const first = firstAnswers(BASE, documented, HOW)
    for (const [status, said] of [
      [404, "model: claude-nope"],
      [401, "invalid x-api-key"],
    ] as const) {
      const err = error(status, said)
      expect(first.check(err, { own: said })).toBe(err)
    }
    for (const said of ["Not Found", "not found.", "status code (no body)"])
      expect(first.check(error(404, said), { own: said }).message).toBe(
        `HTTP 404: ${said.replace(/\.$/, "")}; check base_url (it is ${BASE})`,
      )
    // "org/model" is no path
    const model = error(404, "The model `meta-llama/Llama-3` does not exist.")
    expect(first.check(model, { own: "x" })).toBe(model)
  })

  test("other statuses, errors after an answer that worked, and an error already checked are left as they are", () => {
    const first = firstAnswers(BASE, documented, HOW)
    for (const status of [400, 403, 429, 500]) {
      const err = error(status, "Cannot POST /v1/v1/x")
      expect(first.check(err, "Cannot POST /v1/v1/x")).toBe(err)
    }
    const checked = first.check(error(404, "Cannot POST /v1/v1/x"), "")
    expect(first.check(checked, "")).toBe(checked)
    first.ok()
    const later = error(404, "Cannot POST /v1/v1/x")
    expect(first.check(later, "Cannot POST /v1/v1/x")).toBe(later)
  })
})
