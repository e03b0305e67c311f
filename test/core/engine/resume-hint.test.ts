/** The command a stopped run's hint gives (src/core/engine/run.ts `withFlag`): one flag, its value replaced. */
import { describe, expect, test } from "bun:test"
import { withFlag } from "../../../src/core/engine/run.ts"

describe("withFlag", () => {
  test("replaces the value of the flag where it stands, in either form, and adds it only when it is missing", () => {
    const cap = (command: string) => withFlag(command, "--max-cost-usd", "N")
    expect(cap("spool run job.toml --max-cost-usd 5 --home h")).toBe(
      "spool run job.toml --max-cost-usd N --home h",
    )
    expect(cap("spool run job.toml --max-cost-usd=5")).toBe("spool run job.toml --max-cost-usd=N")
    expect(cap("spool run job.toml")).toBe("spool run job.toml --max-cost-usd N")
    // a quoted argument is one word, whatever it holds
    expect(cap("spool run --prompt 'it'\\''s --max-cost-usd 5' job.toml")).toBe(
      "spool run --prompt 'it'\\''s --max-cost-usd 5' job.toml --max-cost-usd N",
    )
    expect(cap("spool run --max-cost-usd-x 1")).toBe("spool run --max-cost-usd-x 1 --max-cost-usd N")
  })
})
