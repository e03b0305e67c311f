/** The `when` expressions of pipeline steps: parsing, the problems found before a run, and evaluation over rows. */
import { describe, expect, test } from "bun:test"
import {
  STEP_NAME,
  WhenSyntaxError,
  checkWhen,
  evalWhen,
  fieldsOfSchema,
  parseWhen,
  stepsRead,
} from "../../../src/core/job/when.ts"

const DATA = {
  row: { lang: "en", priority: 3, tags: ["billing", "eu"], "first name": "Ada", empty: "" },
  steps: {
    classify: { label: "bug", confidence: 0.62, meta: { source: "model" }, flags: [] },
    summary: "The invoice shows the wrong VAT rate.",
  },
}
const run = (source: string) => evalWhen(parseWhen(source), DATA)

describe("when: evaluation", () => {
  const cases: [string, boolean][] = [
    ["classify.label == 'bug'", true],
    ['classify.label == "bug"', true],
    ["classify.label != 'bug'", false],
    ["classify.confidence < 0.7", true],
    ["classify.confidence >= 0.62", true],
    ["classify.confidence > 0.62", false],
    ["row.priority <= 3 and row.lang == 'en'", true],
    ["row.priority == 3.0", true],
    ["row.priority == '3'", false],
    ["row.priority < '4'", false],
    ["'a' < 'b'", true],
    ["classify.label in ['bug', 'crash']", true],
    ["classify.label not in ['bug', 'crash']", false],
    ["'VAT' in summary", true],
    ["'vat' in summary", false],
    ["'vat' in lower(summary)", true],
    ["'eu' in row.tags", true],
    ["'x' in row.missing", false],
    ["not classify.label == 'bug' or row.priority == 3", true],
    ["not (classify.label == 'bug' or row.priority == 3)", false],
    ["false and true or true", true],
    ["false and (true or true)", false],
    ["classify.missing == null", true],
    ["classify.meta.source == 'model'", true],
    ["classify.meta.source.deeper == null", true],
    ["classify.label.deeper == null", true],
    ["row['first name'] == 'Ada'", true],
    ["len(row.tags) == 2 and len(summary) > 10 and len(row.missing) == 0", true],
    ["contains(row.tags, 'eu') and contains(summary, 'invoice')", true],
    ["exists(classify.meta) and not exists(classify.nope)", true],
    ["classify.flags", false],
    ["classify.meta", true],
    ["row.empty", false],
    ["row.priority", true],
    ["-row.priority == -3", true],
    ["-'a' == null", true],
    ["[1, [2]] == [1, [2]]", true],
    ["[1, 2] == [2, 1]", false],
    ["unknown_step.x == null", true],
  ]
  for (const [source, want] of cases) test(`${source} → ${want}`, () => expect(run(source)).toBe(want))

  test("stepsRead names the steps an expression reads, not the row", () => {
    expect(stepsRead(parseWhen("classify.label == 'bug' and len(summary) > 0 or row.x"))).toEqual([
      "classify",
      "summary",
    ])
  })

  test("step names: a letter or _ first, then letters, digits and _", () => {
    expect(["classify", "_x", "step2"].every((n) => STEP_NAME.test(n))).toBe(true)
    expect(["2step", "my-step", "a.b", ""].some((n) => STEP_NAME.test(n))).toBe(false)
  })
})

describe("when: syntax errors name what was expected and the column", () => {
  const bad: [string, string][] = [
    ["", "the expression is empty at column 1"],
    ["classify.label == 'bug", "unclosed string (it opens with ') at column 19"],
    ["a && b", '"&&" is written "and" here at column 3'],
    ["a || b", '"||" is written "or" here at column 3'],
    ["!a", '"!" is written "not" here at column 1'],
    ["a = 'b'", '"=" is written "==" here at column 3'],
    ["classify.label ==", 'expected a value after "==", found the end at column 18'],
    ["(a == 1", 'expected ")" to close the "(" at column 1, found the end at column 8'],
    ["a == 1)", 'expected "and", "or" or the end, found ")" at column 7'],
    ["a < b < c", 'comparisons do not chain: write "a < b and b < c", or use parentheses at column 7'],
    ["a == @", 'unexpected character "@" at column 6'],
    ["a == {}", 'unexpected character "{" at column 6'],
    ["size(a) > 1", 'no function "size" (there are: len, lower, contains, exists) at column 1'],
    ["len(a, b)", "len takes 1 argument, not 2 at column 1"],
    ["a. == 1", 'expected a field name after "." at column 4'],
    ["a == and", 'expected a value, found "and" at column 6'],
    ["[1, 2", 'expected "]" to close the list at column 1, found the end at column 6'],
  ]
  for (const [source, message] of bad)
    test(JSON.stringify(source), () => {
      let caught: unknown
      try {
        parseWhen(source)
      } catch (err) {
        caught = err
      }
      expect(caught).toBeInstanceOf(WhenSyntaxError)
      expect((caught as Error).message).toBe(message)
      expect((caught as WhenSyntaxError).column).toBe(Number(/column (\d+)$/.exec(message)![1]))
    })

  test("garbage never makes parseWhen throw anything but WhenSyntaxError, nor evalWhen throw at all", () => {
    const alphabet = [
      "a",
      ".",
      "b",
      "'",
      '"',
      "(",
      ")",
      "[",
      "]",
      ",",
      "=",
      "!",
      "<",
      ">",
      "-",
      "1",
      " ",
      "and",
      "or",
      "not",
      "in",
      "len",
      "\\",
    ]
    let seed = 12345
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31)
    let parsed = 0
    for (let i = 0; i < 3_000; i++) {
      const source = Array.from({ length: 1 + (next() % 12) }, () => alphabet[next() % alphabet.length]).join(
        " ",
      )
      try {
        const when = parseWhen(source)
        parsed++
        expect(typeof evalWhen(when, DATA)).toBe("boolean")
      } catch (err) {
        expect(err).toBeInstanceOf(WhenSyntaxError)
      }
    }
    expect(parsed).toBeGreaterThan(50)
  })
})

describe("when: the problems found before a run", () => {
  const schema = {
    type: "object",
    properties: {
      label: { type: "string", enum: ["bug", "question"] },
      meta: { type: "object", properties: { source: { type: "string" } } },
      scores: { type: "array", items: { type: "number" } },
    },
  }
  const scope = {
    steps: { classify: fieldsOfSchema(schema), summary: "text" as const },
    row: ["lang", "priority"],
  }

  test("fieldsOfSchema: nested properties become a tree; anything else is a leaf, or any at the top", () => {
    expect(fieldsOfSchema(schema)).toEqual({ label: "leaf", meta: { source: "leaf" }, scores: "leaf" })
    expect(fieldsOfSchema({ type: "object" })).toBe("any")
    expect(fieldsOfSchema(undefined)).toBe("any")
  })

  test("names that exist pass", () => {
    expect(
      checkWhen(
        parseWhen(
          "classify.label == 'bug' and classify.meta.source != 'x' and row.lang == 'en' and 'a' in summary",
        ),
        scope,
      ),
    ).toEqual([])
  })

  test("each unknown name is a problem naming its column and what exists", () => {
    expect(
      checkWhen(
        parseWhen(
          "clasify.label == 'bug' or classify.lable == 'x' or row.langu == 'en' or summary.text or classify.label.x or classify.meta.sorce or row",
        ),
        scope,
      ),
    ).toEqual([
      'column 1: "clasify" is not a step this step needs (it needs: classify, summary); a row column is reached as row.clasify',
      'column 27: classify has no field "lable" (its schema has: label, meta, scores)',
      'column 52: the rows have no column "langu" (they have: lang, priority)',
      'column 73: summary answers plain text, which has no field "text"',
      'column 89: classify.label is not an object, so it has no field "x"',
      'column 109: classify.meta has no field "sorce" (its schema has: source)',
      'column 132: "row" alone is not a value; name a column, as row.field',
    ])
  })

  test("a step of unknown shape, and rows of unknown columns, let any field through", () => {
    expect(
      checkWhen(parseWhen("classify.anything.deep and row.whatever"), { steps: { classify: "any" } }),
    ).toEqual([])
  })
})
