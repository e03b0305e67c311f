/**
 * A pipeline step's `when` (docs/PIPELINES.md): a small expression over the row and the outputs of the steps it needs,
 * deciding per row whether the step runs. Tokenized and parsed by hand into a tree, checked against what the step
 * can reach before any call, and evaluated by walking the tree: no `eval`, and evaluation never throws on data.
 *
 *   expr       = or
 *   or         = and { "or" and }
 *   and        = not { "and" not }
 *   not        = "not" not | comparison
 *   comparison = unary [ ("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in") unary ]
 *   unary      = "-" unary | primary
 *   primary    = literal | list | call | path | "(" expr ")"
 *   literal    = string | number | "true" | "false" | "null"
 *   list       = "[" [ expr { "," expr } ] "]"
 *   call       = name "(" [ expr { "," expr } ] ")"          (len, lower, contains, exists)
 *   path       = name { "." name | "[" string "]" }
 */

/** What a step may be called: a name the expressions and templates can reach as `name.field`. */
export const STEP_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/

/** A parsed expression, and the text it was parsed from. */
export interface When {
  source: string
  root: Node
}

type Node =
  | { t: "lit"; value: unknown; at: number }
  | { t: "list"; items: Node[]; at: number }
  | { t: "path"; parts: string[]; at: number }
  | { t: "call"; fn: string; args: Node[]; at: number }
  | { t: "not"; arg: Node; at: number }
  | { t: "neg"; arg: Node; at: number }
  | { t: "bin"; op: string; left: Node; right: Node; at: number }

/** A `when` that does not parse: what was expected, and the column (1-based) where. */
export class WhenSyntaxError extends Error {
  constructor(
    message: string,
    readonly column: number,
  ) {
    super(`${message} at column ${column}`)
  }
}

type Token = { k: "num" | "str" | "name" | "op" | "end"; v: string; at: number; value?: unknown }

const FUNCTIONS: Record<string, number> = { len: 1, lower: 1, contains: 2, exists: 1 }
const COMPARISONS = new Set(["==", "!=", "<", "<=", ">", ">=", "in", "not in"])
const WORDS = new Set(["and", "or", "not", "in", "true", "false", "null"])
/** Spellings from other languages, and the word this one uses. */
const INSTEAD: Record<string, string> = { "&&": "and", "||": "or", "!": "not", "=": "==" }

function tokenize(source: string): Token[] {
  const out: Token[] = []
  let i = 0
  while (i < source.length) {
    const c = source[i]!
    const at = i + 1
    if (/\s/.test(c)) i++
    else if (c === "'" || c === '"') {
      let text = ""
      i++
      for (;;) {
        if (i >= source.length) throw new WhenSyntaxError(`unclosed string (it opens with ${c})`, at)
        const d = source[i]!
        if (d === c) break
        if (d === "\\") {
          const e = source[i + 1]
          if (e === undefined) throw new WhenSyntaxError(`unclosed string (it opens with ${c})`, at)
          text += e === "n" ? "\n" : e === "t" ? "\t" : e
          i += 2
        } else {
          text += d
          i++
        }
      }
      i++
      out.push({ k: "str", v: text, at, value: text })
    } else if (/[0-9]/.test(c) || (c === "." && /[0-9]/.test(source[i + 1] ?? ""))) {
      const m = /^[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?/.exec(source.slice(i))!
      out.push({ k: "num", v: m[0], at, value: Number(m[0]) })
      i += m[0].length
    } else if (/[A-Za-z_]/.test(c)) {
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(source.slice(i))!
      out.push({ k: "name", v: m[0], at })
      i += m[0].length
    } else {
      const two = source.slice(i, i + 2)
      const op = ["==", "!=", "<=", ">=", "&&", "||"].includes(two) ? two : c
      if (INSTEAD[op]) throw new WhenSyntaxError(`"${op}" is written "${INSTEAD[op]}" here`, at)
      if (!["<", ">", "(", ")", "[", "]", ",", ".", "-"].includes(op) && op.length === 1)
        throw new WhenSyntaxError(`unexpected character "${op}"`, at)
      out.push({ k: "op", v: op, at })
      i += op.length
    }
  }
  out.push({ k: "end", v: "", at: source.length + 1 })
  return out
}

/** Parses `source`; throws WhenSyntaxError naming what was expected and where. */
export function parseWhen(source: string): When {
  const tokens = tokenize(source)
  let p = 0
  const peek = () => tokens[p]!
  const is = (v: string) => (peek().k === "op" || peek().k === "name") && peek().v === v
  const shown = (t: Token) => (t.k === "end" ? "the end" : `"${t.v}"`)
  const expect = (v: string, after: string) => {
    if (!is(v)) throw new WhenSyntaxError(`expected "${v}" ${after}, found ${shown(peek())}`, peek().at)
    p++
  }

  const or = (): Node => {
    let left = and()
    while (is("or")) {
      const at = tokens[p++]!.at
      left = { t: "bin", op: "or", left, right: and(), at }
    }
    return left
  }
  const and = (): Node => {
    let left = not()
    while (is("and")) {
      const at = tokens[p++]!.at
      left = { t: "bin", op: "and", left, right: not(), at }
    }
    return left
  }
  const not = (): Node => {
    if (is("not")) {
      const at = tokens[p++]!.at
      return { t: "not", arg: not(), at }
    }
    return comparison()
  }
  const operator = (): string | undefined => {
    const t = peek()
    if (t.k === "op" && COMPARISONS.has(t.v)) return t.v
    if (t.k === "name" && t.v === "in") return "in"
    if (t.k === "name" && t.v === "not" && tokens[p + 1]?.k === "name" && tokens[p + 1]?.v === "in")
      return "not in"
    return undefined
  }
  const comparison = (): Node => {
    const left = unary()
    const op = operator()
    if (!op) return left
    const at = peek().at
    p += op === "not in" ? 2 : 1
    const right = unary()
    if (operator())
      throw new WhenSyntaxError(
        `comparisons do not chain: write "a < b and b < c", or use parentheses`,
        peek().at,
      )
    return { t: "bin", op, left, right, at }
  }
  const unary = (): Node => {
    if (is("-")) {
      const at = tokens[p++]!.at
      return { t: "neg", arg: unary(), at }
    }
    return primary()
  }
  const items = (close: string, what: string): Node[] => {
    const out: Node[] = []
    if (is(close)) {
      p++
      return out
    }
    for (;;) {
      out.push(or())
      if (is(",")) p++
      else {
        expect(close, what)
        return out
      }
    }
  }
  const primary = (): Node => {
    const t = peek()
    if (t.k === "num" || t.k === "str") {
      p++
      return { t: "lit", value: t.value, at: t.at }
    }
    if (is("(")) {
      p++
      const inner = or()
      expect(")", `to close the "(" at column ${t.at}`)
      return inner
    }
    if (is("[")) {
      p++
      return { t: "list", items: items("]", `to close the list at column ${t.at}`), at: t.at }
    }
    if (t.k === "name") {
      if (t.v === "true" || t.v === "false" || t.v === "null") {
        p++
        return { t: "lit", value: t.v === "null" ? null : t.v === "true", at: t.at }
      }
      if (WORDS.has(t.v)) throw new WhenSyntaxError(`expected a value, found "${t.v}"`, t.at)
      p++
      if (is("(")) {
        if (!(t.v in FUNCTIONS))
          throw new WhenSyntaxError(
            `no function "${t.v}" (there are: ${Object.keys(FUNCTIONS).join(", ")})`,
            t.at,
          )
        p++
        const args = items(")", `to close the call of ${t.v} at column ${t.at}`)
        if (args.length !== FUNCTIONS[t.v])
          throw new WhenSyntaxError(
            `${t.v} takes ${FUNCTIONS[t.v]} argument${FUNCTIONS[t.v] === 1 ? "" : "s"}, not ${args.length}`,
            t.at,
          )
        return { t: "call", fn: t.v, args, at: t.at }
      }
      const parts = [t.v]
      for (;;) {
        if (is(".")) {
          p++
          const n = peek()
          if (n.k !== "name") throw new WhenSyntaxError(`expected a field name after "."`, n.at)
          parts.push(n.v)
          p++
        } else if (is("[")) {
          p++
          const n = peek()
          if (n.k !== "str") throw new WhenSyntaxError(`expected a quoted field name after "["`, n.at)
          parts.push(n.v)
          p++
          expect("]", "after the field name")
        } else break
      }
      return { t: "path", parts, at: t.at }
    }
    const before = tokens[p - 1]
    throw new WhenSyntaxError(
      before
        ? `expected a value after "${before.v}", found ${shown(t)}`
        : `expected a value, found ${shown(t)}`,
      t.at,
    )
  }

  if (tokens[0]!.k === "end") throw new WhenSyntaxError("the expression is empty", 1)
  const root = or()
  if (peek().k !== "end")
    throw new WhenSyntaxError(`expected "and", "or" or the end, found ${shown(peek())}`, peek().at)
  return { source, root }
}

/** A step's output fields, as far as its JSON Schema tells: nested objects give nested trees. */
export type WhenFields = { [field: string]: WhenFields | "leaf" }

/** Which names a step's `when` may reach. */
export interface WhenScope {
  /** The steps it needs, directly or not: their fields, "text" (plain text output: the bare name only), or "any". */
  steps: Record<string, WhenFields | "text" | "any">
  /** The row's columns when known (a CSV header); undefined lets any `row.x` through. */
  row?: string[]
}

/** The field tree of a JSON Schema: an object schema's properties, nested; "any" when it does not say. */
export function fieldsOfSchema(schema: unknown): WhenFields | "any" {
  const s = schema as { type?: unknown; properties?: Record<string, unknown> } | null
  if (!s || typeof s !== "object" || !s.properties || typeof s.properties !== "object") return "any"
  const out: WhenFields = {}
  for (const [name, sub] of Object.entries(s.properties)) {
    const inner = fieldsOfSchema(sub)
    out[name] = inner === "any" ? "leaf" : inner
  }
  return out
}

/** The problems of `when` in `scope`, each naming its column; empty when it is fine. */
export function checkWhen(when: When, scope: WhenScope): string[] {
  const problems: string[] = []
  const steps = Object.keys(scope.steps)
  const visit = (n: Node): void => {
    if (n.t === "list") n.items.forEach(visit)
    else if (n.t === "call") n.args.forEach(visit)
    else if (n.t === "not" || n.t === "neg") visit(n.arg)
    else if (n.t === "bin") {
      visit(n.left)
      visit(n.right)
    } else if (n.t === "path") problems.push(...pathProblems(n, scope, steps))
  }
  visit(when.root)
  return problems
}

function pathProblems(n: Extract<Node, { t: "path" }>, scope: WhenScope, steps: string[]): string[] {
  const [head, ...rest] = n.parts as [string, ...string[]]
  const where = `column ${n.at}`
  if (head === "row") {
    if (rest.length === 0) return [`${where}: "row" alone is not a value; name a column, as row.${"field"}`]
    if (scope.row && !scope.row.includes(rest[0]!))
      return [`${where}: the rows have no column "${rest[0]}" (they have: ${scope.row.join(", ")})`]
    return []
  }
  const fields = scope.steps[head]
  if (fields === undefined) {
    const needs = steps.length ? `it needs: ${steps.join(", ")}` : "it needs none"
    return [
      `${where}: "${head}" is not a step this step needs (${needs}); a row column is reached as row.${head}`,
    ]
  }
  if (fields === "any" || rest.length === 0) return []
  if (fields === "text") return [`${where}: ${head} answers plain text, which has no field "${rest[0]}"`]
  let tree: WhenFields | "leaf" = fields
  for (const [i, part] of rest.entries()) {
    const path = [head, ...rest.slice(0, i)].join(".")
    if (tree === "leaf") return [`${where}: ${path} is not an object, so it has no field "${part}"`]
    const next: WhenFields | "leaf" | undefined = tree[part]
    if (next === undefined)
      return [`${where}: ${path} has no field "${part}" (its schema has: ${Object.keys(tree).join(", ")})`]
    tree = next
  }
  return []
}

/** The steps the expression reads. */
export function stepsRead(when: When): string[] {
  const out = new Set<string>()
  const visit = (n: Node): void => {
    if (n.t === "path" && n.parts[0] !== "row") out.add(n.parts[0]!)
    else if (n.t === "list") n.items.forEach(visit)
    else if (n.t === "call") n.args.forEach(visit)
    else if (n.t === "not" || n.t === "neg") visit(n.arg)
    else if (n.t === "bin") {
      visit(n.left)
      visit(n.right)
    }
  }
  visit(when.root)
  return [...out]
}

/** Whether the step runs for one row: `row` its fields, `steps[name]` the output of each step it needs. */
export function evalWhen(
  when: When,
  data: { row: Record<string, unknown>; steps: Record<string, unknown> },
): boolean {
  return truthy(value(when.root, data))
}

function value(n: Node, data: { row: Record<string, unknown>; steps: Record<string, unknown> }): unknown {
  switch (n.t) {
    case "lit":
      return n.value
    case "list":
      return n.items.map((i) => value(i, data))
    case "path": {
      let at: unknown = n.parts[0] === "row" ? data.row : data.steps[n.parts[0]!]
      for (const part of n.parts.slice(1)) {
        if (at === null || typeof at !== "object" || Array.isArray(at)) return null
        at = Object.hasOwn(at, part) ? (at as Record<string, unknown>)[part] : undefined
      }
      return at === undefined ? null : at
    }
    case "not":
      return !truthy(value(n.arg, data))
    case "neg": {
      const v = value(n.arg, data)
      return typeof v === "number" ? -v : null
    }
    case "call": {
      const args = n.args.map((a) => value(a, data))
      const a = args[0]
      if (n.fn === "len") return typeof a === "string" || Array.isArray(a) ? a.length : 0
      if (n.fn === "lower") return typeof a === "string" ? a.toLowerCase() : a
      if (n.fn === "exists") return a !== null
      return member(args[1], a)
    }
    case "bin": {
      if (n.op === "and") return truthy(value(n.left, data)) && truthy(value(n.right, data))
      if (n.op === "or") return truthy(value(n.left, data)) || truthy(value(n.right, data))
      const l = value(n.left, data)
      const r = value(n.right, data)
      if (n.op === "==") return equal(l, r)
      if (n.op === "!=") return !equal(l, r)
      if (n.op === "in") return member(l, r)
      if (n.op === "not in") return !member(l, r)
      if (!(
        (typeof l === "number" && typeof r === "number") ||
        (typeof l === "string" && typeof r === "string")
      ))
        return false
      return n.op === "<" ? l < r : n.op === "<=" ? l <= r : n.op === ">" ? l > r : l >= r
    }
  }
}

/** null, false, 0, "", [] and {} are false; everything else is true. */
function truthy(v: unknown): boolean {
  if (Array.isArray(v)) return v.length > 0
  if (v !== null && typeof v === "object") return Object.keys(v).length > 0
  return Boolean(v)
}

/** `needle in haystack`: an element of a list, or a part of a string. */
function member(needle: unknown, haystack: unknown): boolean {
  if (Array.isArray(haystack)) return haystack.some((h) => equal(h, needle))
  if (typeof haystack === "string" && typeof needle === "string") return haystack.includes(needle)
  return false
}

/** Deep equality of JSON values, with no coercion between types. */
function equal(a: unknown, b: unknown): boolean {
  if (a === b) return true
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false
  if (Array.isArray(a) !== Array.isArray(b)) return false
  const ka = Object.keys(a)
  const kb = Object.keys(b)
  if (ka.length !== kb.length) return false
  return ka.every((k) => Object.hasOwn(b, k) && equal((a as never)[k], (b as never)[k]))
}
