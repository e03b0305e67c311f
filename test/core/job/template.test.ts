import { describe, expect, test } from "bun:test"
import * as template from "../../../src/core/job/template.ts"

describe("prompt templates", () => {
  test("fills {{field}} and {{ nested.field }} from the row, stringifying non-strings", () => {
    const t = template.parse("Ticket {{id}}: {{ subject }} ({{meta.lang}}) {{tags}}")
    expect(t.fields).toEqual(["id", "subject", "meta.lang", "tags"])
    expect(template.render(t, { id: 7, subject: "Hi", meta: { lang: "en" }, tags: ["a", "b"] })).toBe(
      'Ticket 7: Hi (en) ["a","b"]',
    )
  })

  test("reports every missing field instead of rendering", () => {
    const t = template.parse("{{a}} {{b}} {{c}}")
    expect(template.render(t, { b: "" })).toEqual({ missing: ["a", "c"] })
    expect(template.missing(t, { a: 1 })).toEqual(["b", "c"])
  })

  test("a template without placeholders renders as it is", () => {
    const t = template.parse("Say hi")
    expect(t.fields).toEqual([])
    expect(template.render(t, {})).toBe("Say hi")
  })
})
