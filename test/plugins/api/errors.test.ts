import { describe, expect, test } from "bun:test"
import {
  JobError,
  ProviderError,
  SourceChangedError,
  SourceError,
  SpoolError,
  StoreError,
} from "../../../src/plugins/api/errors.ts"
import * as redact from "../../../src/plugins/api/redact.ts"

describe("the errors a plugin throws", () => {
  test("each keeps its literal name, stable code and exit code, and is a SpoolError", () => {
    const made = [
      new JobError("bad job", ["provider.base_url: missing"], "set it"),
      new SourceChangedError("changed"),
      new SourceError("unreadable"),
      new StoreError("disk full"),
      new ProviderError("server", "HTTP 500", { retryable: true }),
    ]
    expect(made.map((e) => [e.name, e.code, e.exit, e instanceof SpoolError])).toEqual([
      ["JobError", "E_JOB", 2, true],
      ["SourceChangedError", "E_SOURCE_CHANGED", 2, true],
      ["SourceError", "E_SOURCE", 2, true],
      ["StoreError", "E_STORE", 1, true],
      ["ProviderError", "E_PROVIDER", 1, true],
    ])
    expect(made[0]!.message).toBe("bad job\n  × provider.base_url: missing")
    expect(made[0]!.hint).toBe("set it")
  })

  test("a message and hint have a registered key and any bearer token taken out", () => {
    redact.register("sk-errors-test-0123456789")
    const e = new ProviderError(
      "auth",
      "HTTP 401: bad key sk-errors-test-0123456789 Bearer abc.def, try again",
      {
        retryable: false,
        hint: "check sk-errors-test-0123456789",
      },
    )
    expect(e.message).toBe("HTTP 401: bad key [redacted] Bearer [redacted], try again")
    expect(e.hint).toBe("check [redacted]")
  })
})
