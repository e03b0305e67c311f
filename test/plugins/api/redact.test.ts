import { describe, expect, test } from "bun:test"
import { ProviderError } from "../../../src/plugins/api/errors.ts"
import { RunPausedError } from "../../../src/core/base/errors.ts"
import * as redact from "../../../src/plugins/api/redact.ts"

const KEY = "sk-unit-redact-0123456789abcdef"
redact.register(KEY)

describe("redact.scrub", () => {
  test("takes every copy of a registered key out, and a copy cut short after its first 12 characters", () => {
    expect(redact.scrub(`bad key ${KEY}, again ${KEY}.`)).toBe("bad key [redacted], again [redacted].")
    expect(redact.scrub(`body: {"message":"key ${KEY.slice(0, 20)}`)).toBe('body: {"message":"key [redacted]')
    expect(redact.scrub(`prefix ${KEY.slice(0, 11)} only`)).toBe(`prefix ${KEY.slice(0, 11)} only`)
  })

  test("takes out any bearer token and API-key header value, known or not, also in JSON text", () => {
    expect(redact.scrub("got Authorization: Bearer abc.def-123, then")).toBe(
      "got Authorization: Bearer [redacted], then",
    )
    expect(redact.scrub("x-api-key: other-secret; api_key=zzz")).toBe(
      "x-api-key: [redacted]; api_key=[redacted]",
    )
    expect(redact.scrub('{"headers":{"x-api-key":"other-secret","n":1}}')).toBe(
      '{"headers":{"x-api-key":"[redacted]","n":1}}',
    )
    expect(redact.scrub(String.raw`{\"X-Api-Key\":\"other-secret\"}`)).toBe(
      String.raw`{\"X-Api-Key\":\"[redacted]\"}`,
    )
  })

  test("leaves text without secrets as it was, and ignores keys too short to be real", () => {
    redact.register("abc")
    redact.register(undefined)
    expect(redact.scrub("HTTP 500: abc went wrong; the api key is fine")).toBe(
      "HTTP 500: abc went wrong; the api key is fine",
    )
  })

  test("no error spool makes holds the key, in its message or its hint", () => {
    const err = new ProviderError("auth", `HTTP 401: invalid key ${KEY}`, { retryable: false, pause: true })
    expect(err.message).toBe("HTTP 401: invalid key [redacted]")
    const paused = new RunPausedError(`run "r" paused: ${err.message} (${KEY})`, `Check ${KEY}.`)
    expect(paused.message).toBe('run "r" paused: HTTP 401: invalid key [redacted] ([redacted])')
    expect(paused.hint).toBe("Check [redacted].")
  })
})
