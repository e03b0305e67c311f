import { describe, expect, test } from "bun:test"
import { basicProblems, gate, strictProblems, validator } from "../../../src/core/job/schema.ts"

const LABEL = {
  type: "object",
  properties: {
    label: { type: "string", enum: ["billing", "bug", "question"] },
    note: { type: ["string", "null"] },
  },
  required: ["label", "note"],
  additionalProperties: false,
}

describe("output schemas", () => {
  test("strict mode problems are listed by path, nested ones too", () => {
    expect(strictProblems(LABEL)).toEqual([])
    expect(
      strictProblems({
        type: "object",
        properties: {
          a: { type: "string" },
          b: { type: "object", properties: { c: { type: "integer" } }, required: ["c"] },
          d: {
            type: "array",
            items: { type: "object", properties: { e: { type: "string" } }, additionalProperties: false },
          },
        },
        required: ["b", "d"],
      }),
    ).toEqual([
      'output.schema: set "additionalProperties": false (strict structured outputs allow no other keys)',
      'output.schema.properties.a: must be listed in "required" (for an optional field, make its type nullable)',
      'output.schema.properties.b: set "additionalProperties": false (strict structured outputs allow no other keys)',
      'output.schema.properties.d.items.properties.e: must be listed in "required" (for an optional field, make its type nullable)',
    ])
    expect(strictProblems({ type: "array", items: { type: "string" } })).toEqual([
      'output.schema: the root must be "type": "object"',
    ])
  })

  test("any provider needs an object at the root and a schema that compiles", () => {
    expect(basicProblems(LABEL)).toEqual([])
    expect(basicProblems({ type: "object", properties: { a: { type: "strng" } } })[0]).toStartWith(
      "output.schema: not a usable JSON Schema:",
    )
  })

  test("gates: truncated, refused, not JSON, a schema violation by path, or the parsed value", () => {
    const check = validator(LABEL)
    const usage = { input_tokens: 1, output_tokens: 1 }
    expect(gate({ text: '{"label":"bug","note":null}', usage }, check)).toEqual({
      ok: true,
      value: { label: "bug", note: null },
    })
    expect(gate({ text: '{"label":"bug","note":null}', usage, finish: "length" }, check)).toEqual({
      ok: false,
      gate: "truncated at max_tokens",
    })
    expect(gate({ text: "I cannot help with that.", usage, finish: "refusal" }, check)).toEqual({
      ok: false,
      gate: "refused: I cannot help with that.",
    })
    expect(gate({ text: "label: bug", usage }, check)).toEqual({ ok: false, gate: "not JSON: label: bug" })
    expect(gate({ text: '{"label":"spam","note":null}', usage }, check)).toEqual({
      ok: false,
      gate: 'schema violation at /label: must be equal to one of the allowed values: "billing", "bug", "question"',
    })
    expect(gate({ text: '{"label":"bug","note":null,"x":1}', usage }, check)).toEqual({
      ok: false,
      gate: 'schema violation at /: must NOT have additional properties ("x")',
    })
    // without a schema only truncation and refusal are gates
    expect(gate({ text: "plain text", usage }, undefined)).toEqual({ ok: true, value: "plain text" })
    expect(gate({ text: "plain", usage, finish: "length" }, undefined)).toEqual({
      ok: false,
      gate: "truncated at max_tokens",
    })
  })
})
