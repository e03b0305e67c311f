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
  row: {
    lang: "en",
    priority: 3,
    tags: ["billing", "eu"],
    "first name": "Ada",
    empty: "",
    zero: 0,
    none: null,
  },
  steps: {
    classify: { label: "bug", confidence: 0.62, meta: { source: "model" }, flags: [], extra: {} },
    summary: "The invoice shows the wrong VAT rate.",
  },
}
const run = (source: string) => evalWhen(parseWhen(source), DATA)

/** The error parseWhen throws for `source`, or undefined when it parses. */
function syntaxError(source: string): unknown {
  try {
    parseWhen(source)
  } catch (err) {
    return err
  }
  return undefined
}

describe("when: evaluation", () => {
  const cases: [string, boolean][] = [
    // comparisons
    ["classify.label == 'bug'", true],
    ['classify.label == "bug"', true],
    ["classify.label != 'bug'", false],
    ["classify.confidence < 0.7", true],
    ["classify.confidence >= 0.62", true],
    ["classify.confidence > 0.62", false],
    ["classify.confidence <= 0.5", false],
    ["row.priority == 3.0", true],
    ["1e3 == 1000 and .5 == 0.5", true],
    ["-row.priority == -3", true],
    ["- -1 == 1", true],
    ["'a' < 'b'", true],
    ["'B' < 'a'", true],
    ["'10' < '9'", true],
    ["null == null", true],
    ["[1, [2, 'x']] == [1, [2, 'x']]", true],
    ["[1, 2] == [2, 1]", false],
    ["[1, 2,] == [1, 2]", true],
    ["classify.meta == classify.meta and classify.meta != classify.extra", true],
    // no coercion between types, and ordering of anything but two numbers or two strings is false
    ["row.priority == '3'", false],
    ["row.priority != '3'", true],
    ["0 == false", false],
    ["'' == null", false],
    ["row.priority < '4'", false],
    ["row.priority >= '4'", false],
    ["null < 1", false],
    ["null >= null", false],
    ["[1] < [2]", false],
    ["true > false", false],
    ["-'a' == null", true],
    // in, not in
    ["classify.label in ['bug', 'crash']", true],
    ["classify.label not in ['bug', 'crash']", false],
    ["'crash' not in ['bug']", true],
    ["3 in [1, 3.0]", true],
    ["'3' in [1, 3]", false],
    ["null in ['a', null]", true],
    ["'VAT' in summary", true],
    ["'vat' in summary", false],
    ["'vat' in lower(summary)", true],
    ["'eu' in row.tags", true],
    ["'x' in row.missing", false],
    ["'x' not in row.missing", true],
    ["1 in '123'", false],
    ["'a' in classify.meta", false],
    // and, or, not, parentheses
    ["not classify.label == 'bug' or row.priority == 3", true],
    ["not (classify.label == 'bug' or row.priority == 3)", false],
    ["false and true or true", true],
    ["false and (true or true)", false],
    ["true or false and false", true],
    ["(true or false) and false", false],
    ["not false and false", false],
    ["not 1 == 2", true],
    ["not not 'x'", true],
    // paths: missing is null, and nothing is inherited
    ["classify.missing == null", true],
    ["row.none == null and not exists(row.none)", true],
    ["classify.meta.source == 'model'", true],
    ["classify.meta.source.deeper == null", true],
    ["classify.label.deeper == null", true],
    ["row.tags.length == null", true],
    ["summary.length == null", true],
    ["row['first name'] == 'Ada'", true],
    ['classify["meta"]["source"] == \'model\'', true],
    ["unknown_step.x == null", true],
    ["constructor", false],
    ["toString == null and row.constructor == null and classify.__proto__ == null", true],
    // strings and their escapes
    ["'it\\'s' == \"it's\"", true],
    ['"say \\"hi\\"" == \'say "hi"\'', true],
    ["len('a\\\\b') == 3 and len('a\\nb') == 3", true],
    ["'a\\nb' != 'anb'", true],
    // functions
    ["len(row.tags) == 2 and len(summary) > 10 and len(row.missing) == 0", true],
    ["len(row.priority) == 0 and len(classify.meta) == 0 and len([]) == 0", true],
    ["lower('ÀB') == 'àb' and lower(row.priority) == 3 and lower(null) == null", true],
    ["contains(row.tags, 'eu') and contains(summary, 'invoice')", true],
    ["contains(null, 'a') or contains(row.tags, 'EU')", false],
    ["exists(classify.meta) and not exists(classify.nope)", true],
    ["exists(row.empty) and exists(row.zero)", true],
    ["size(row.tags) == null", true],
    // truthiness: null, false, 0, "", [] and {} are false
    ["classify.flags", false],
    ["classify.extra", false],
    ["classify.meta", true],
    ["row.empty", false],
    ["row.zero", false],
    ["row.none", false],
    ["row.missing", false],
    ["row.priority", true],
    ["row.tags", true],
    ["summary", true],
    ["'0'", true],
    ["[0]", true],
    ["0.0 or ''", false],
  ]
  for (const [source, want] of cases) test(`${source} → ${want}`, () => expect(run(source)).toBe(want))

  test("the examples of docs/PIPELINES.md pass the check and decide as they say", () => {
    const examples = [
      "classify.label == 'bug'",
      "classify.label in ['bug', 'crash'] and row.lang == 'en'",
      "classify.confidence < 0.7 or not exists(classify.confidence)",
      `'refund' in lower(row["customer message"])`,
      "len(extract.items) > 0 and extract.total >= 100",
      "not (row.priority == 'low' or contains(row.tags, 'spam'))",
    ].map(parseWhen)
    const scope = { steps: { classify: "any" as const, extract: "any" as const } }
    expect(examples.flatMap((when) => checkWhen(when, scope))).toEqual([])
    const rows = [
      {
        row: { lang: "en", "customer message": "A Refund, please", priority: "high", tags: ["eu"] },
        steps: { classify: { label: "crash" }, extract: { items: ["x"], total: 100 } },
      },
      {
        row: { lang: "fr", "customer message": "merci", priority: "low", tags: [] },
        steps: { classify: { label: "bug", confidence: 0.9 }, extract: { items: [], total: 500 } },
      },
    ]
    expect(rows.map((data) => examples.map((when) => evalWhen(when, data)))).toEqual([
      [false, true, true, true, true, true],
      [true, false, false, false, false, false],
    ])
  })

  test("a step's output that is not an object, and rows of any shape, are read without throwing", () => {
    const when = parseWhen("classify.label == 'bug' or len(classify) == 4 or row.a.b")
    expect(evalWhen(when, { row: {}, steps: {} })).toBe(false)
    expect(evalWhen(when, { row: {}, steps: { classify: "text" } })).toBe(true)
    expect(evalWhen(when, { row: { a: { b: 1 } }, steps: { classify: [1, 2] } })).toBe(true)
    expect(evalWhen(when, { row: { a: [1] }, steps: { classify: null } })).toBe(false)
  })

  test("stepsRead names each step an expression reads once, in order, and not the row", () => {
    expect(
      stepsRead(parseWhen("classify.label == 'bug' and len(summary) > 0 or row.x or classify.meta.source")),
    ).toEqual(["classify", "summary"])
    expect(stepsRead(parseWhen("row.a in ['x', 'y'] and not exists(row['b c'])"))).toEqual([])
    expect(stepsRead(parseWhen("contains(extract.items, -score.value)"))).toEqual(["extract", "score"])
  })

  test("step names: a letter or _ first, then letters, digits and _, and not a word of the language", () => {
    expect(
      ["classify", "_x", "step2", "rows", "nullable", "len", "Row"].every((n) => STEP_NAME.test(n)),
    ).toBe(true)
    const bad = [
      "2step",
      "my-step",
      "a.b",
      "",
      "row",
      "and",
      "or",
      "not",
      "in",
      "true",
      "false",
      "null",
      "a b",
    ]
    expect(bad.filter((n) => STEP_NAME.test(n))).toEqual([])
  })
})

describe("when: syntax errors name what was expected and the column", () => {
  const bad: [string, string][] = [
    ["", "the expression is empty at column 1"],
    ["   ", "the expression is empty at column 1"],
    ["classify.label == 'bug", "unclosed string (it opens with ') at column 19"],
    ['a == "x\\', 'unclosed string (it opens with ") at column 6'],
    ["a && b", '"&&" is written "and" here at column 3'],
    ["a || b", '"||" is written "or" here at column 3'],
    ["a & b", '"&" is written "and" here at column 3'],
    ["!a", '"!" is written "not" here at column 1'],
    ["a = 'b'", '"=" is written "==" here at column 3'],
    ["classify.label ==", 'expected a value after "==", found the end at column 18'],
    ["a == 1 and", 'expected a value after "and", found the end at column 11'],
    ["not", 'expected a value after "not", found the end at column 4'],
    ["== 1", 'expected a value, found "==" at column 1'],
    ["(a == 1", 'expected ")" to close the "(" at column 1, found the end at column 8'],
    ["a == 1)", 'expected "and", "or" or the end, found ")" at column 7'],
    ["a == 'x' 'y'", 'expected "and", "or" or the end, found "\'y\'" at column 10'],
    ["len(a", 'expected ")" to close the call of len at column 1, found the end at column 6'],
    ["a < b < c", 'comparisons do not chain: write "a < b and b < c" at column 7'],
    ["a == b != c", 'comparisons do not chain: write "a < b and b < c" at column 8'],
    ["a == @", 'unexpected character "@" at column 6'],
    ["a == {}", 'unexpected character "{" at column 6'],
    ["a == 'x' é", 'unexpected character "é" at column 10'],
    ["a. == 1", 'expected a field name after "." at column 4'],
    ["row[1] == 'x'", 'expected a quoted field name after "[" at column 5'],
    ["row['a' == 'x'", 'expected "]" after the field name, found "==" at column 9'],
    ["a == and", 'expected a value after "==", found "and" at column 6'],
    ["[1, 2", 'expected "]" to close the list at column 1, found the end at column 6'],
    ["[,]", 'expected a value after "[", found "," at column 2'],
    [`${"(".repeat(101)}1${")".repeat(101)}`, "nested more than 100 levels deep at column 102"],
    [`${"not ".repeat(101)}x`, "nested more than 100 levels deep at column 405"],
  ]
  for (const [source, message] of bad)
    test(JSON.stringify(source.length > 40 ? `${source.slice(0, 40)}…` : source), () => {
      const err = syntaxError(source)
      expect(err).toBeInstanceOf(WhenSyntaxError)
      expect((err as Error).message).toBe(message)
      expect((err as WhenSyntaxError).column).toBe(Number(/column (\d+)$/.exec(message)![1]))
    })

  test("nesting up to the limit parses, and function names are not the parser's business", () => {
    expect(run(`${"(".repeat(100)}1${")".repeat(100)}`)).toBe(true)
    expect(run(`${"not ".repeat(100)}x`)).toBe(false)
    expect(syntaxError("size(a, b, c) > 1")).toBeUndefined()
  })

  test("garbage never makes parseWhen throw anything but WhenSyntaxError, nor evalWhen throw at all", () => {
    const pieces = [
      ..."ab.'\"()[],=!<>-1 \\é&|{}_0\n",
      "and",
      "or",
      "not",
      "in",
      "true",
      "null",
      "len",
      "lower",
      "exists",
      "contains",
      "row",
      "classify",
      "summary",
      "constructor",
      "__proto__",
      "==",
      "!=",
      "<=",
      "1.5",
      "1e",
      "'x'",
    ]
    const shapes = [
      DATA,
      { row: {}, steps: {} },
      { row: { a: [[]], b: { "": null } }, steps: { classify: "x", summary: 7, a: [{}], b: null } },
    ]
    let seed = 12345
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31)
    let parsed = 0
    for (let i = 0; i < 5_000; i++) {
      const length = 1 + (next() % 16)
      const glue = next() % 2 ? " " : ""
      const source = Array.from({ length }, () => pieces[next() % pieces.length]).join(glue)
      let when
      try {
        when = parseWhen(source)
      } catch (err) {
        expect(err).toBeInstanceOf(WhenSyntaxError)
        const column = (err as WhenSyntaxError).column
        expect(column >= 1 && column <= source.length + 1).toBe(true)
        continue
      }
      parsed++
      for (const data of shapes) expect(typeof evalWhen(when, data)).toBe("boolean")
      expect(Array.isArray(checkWhen(when, { steps: { classify: {} }, row: ["a"] }))).toBe(true)
    }
    expect(parsed).toBeGreaterThan(200)
  })
})

describe("when: the problems found before a run", () => {
  const schema = {
    type: "object",
    properties: {
      label: { type: "string", enum: ["bug", "question"] },
      meta: { type: "object", properties: { source: { type: "string" } } },
      scores: { type: "array", items: { type: "number" } },
      raw: { type: "object" },
    },
  }
  const scope = {
    steps: { classify: fieldsOfSchema(schema), summary: "text" as const },
    row: ["lang", "priority"],
  }

  test("fieldsOfSchema: properties become a tree; scalars and arrays are leaves, what the schema leaves open is any", () => {
    expect(fieldsOfSchema(schema)).toEqual({
      label: "leaf",
      meta: { source: "leaf" },
      scores: "leaf",
      raw: "any",
    })
    expect(
      fieldsOfSchema({
        properties: {
          maybe: { type: ["string", "null"] },
          either: { type: ["string", "object"] },
          one: { anyOf: [{ type: "string" }, { type: "object", properties: { a: {} } }] },
          ref: { $ref: "#/$defs/x" },
          free: {},
          list: { type: "array", items: { type: "object", properties: { q: { type: "string" } } } },
        },
      }),
    ).toEqual({ maybe: "leaf", either: "any", one: "any", ref: "any", free: "any", list: "leaf" })
    expect(fieldsOfSchema({ type: "object" })).toBe("any")
    expect(fieldsOfSchema({ type: "array", items: { type: "object", properties: { a: {} } } })).toBe("any")
    expect(fieldsOfSchema(undefined)).toBe("any")
    expect(fieldsOfSchema({ type: "object", properties: {} })).toEqual({})
  })

  test("names that exist pass", () => {
    const source =
      "classify.label == 'bug' and classify.meta.source != 'x' and row.lang == 'en' and 'a' in summary" +
      " and classify.raw.anything.deeper and classify['meta'] and contains(classify.scores, 1) and exists(row.priority)"
    expect(checkWhen(parseWhen(source), scope)).toEqual([])
  })

  test("each unknown name, function or field is a problem naming its column and what exists", () => {
    const source =
      "clasify.label == 'bug' or classify.lable == 'x' or row.langu == 'en' or summary.text or classify.label.x" +
      " or classify.meta.sorce or row or size(row.lang) or len(row.lang, 2) or classify.raw"
    expect(checkWhen(parseWhen(source), scope)).toEqual([
      'column 1: "clasify" is not a step this step needs (it needs: classify, summary); a row column is reached as row.clasify',
      'column 27: classify has no field "lable" (its schema has: label, meta, scores, raw)',
      'column 52: the rows have no column "langu" (they have: lang, priority)',
      'column 73: summary answers plain text, which has no field "text"',
      'column 89: classify.label is not an object, so it has no field "x"',
      'column 109: classify.meta has no field "sorce" (its schema has: source)',
      'column 132: "row" alone is not a value; name a column, as row.field',
      'column 139: no function "size" (there are: len, lower, contains, exists)',
      "column 157: len takes 1 argument, not 2",
    ])
  })

  test("a name is never found among inherited properties, and a step needing none says so", () => {
    expect(checkWhen(parseWhen("constructor.x or contains(x)"), { steps: {} })).toEqual([
      'column 1: "constructor" is not a step this step needs (it needs none); a row column is reached as row.constructor',
      "column 18: contains takes 2 arguments, not 1",
      'column 27: "x" is not a step this step needs (it needs none); a row column is reached as row.x',
    ])
    expect(checkWhen(parseWhen("toString()"), { steps: {} })).toEqual([
      'column 1: no function "toString" (there are: len, lower, contains, exists)',
    ])
    expect(checkWhen(parseWhen("c.toString or c.a.constructor"), { steps: { c: { a: {} } } })).toEqual([
      'column 1: c has no field "toString" (its schema has: a)',
      'column 15: c.a has no field "constructor" (its schema has: none)',
    ])
  })

  test("a step of unknown shape, and rows of unknown columns, let any field through", () => {
    expect(
      checkWhen(parseWhen("classify.anything.deep and row.whatever"), { steps: { classify: "any" } }),
    ).toEqual([])
  })
})
