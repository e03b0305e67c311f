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
 *   list       = "[" [ expr { "," expr } [ "," ] ] "]"
 *   call       = name "(" [ expr { "," expr } [ "," ] ] ")"
 *   path       = name { "." name | "[" string "]" }
 *   name       = ( letter | "_" ) { letter | digit | "_" }
 *   string     = "'" { char | escape } "'" | '"' { char | escape } '"'       (escape = "\" char; \n and \t)
 *   number     = ( digits [ "." digits ] | "." digits ) [ ("e" | "E") [ "+" | "-" ] digits ]
 *
 * A path starts at `row` or at a step's name. Which functions exist (len, lower, contains, exists), and which names a
 * path may reach, is the checker's business, not the parser's: a `When` that parses can always be evaluated.
 */

/**
 * What a step may be called, so that `name.field` reaches it: a letter or `_`, then letters, digits or `_`, and not a
 * word the expressions already use (`row`, `and`, `or`, `not`, `in`, `true`, `false`, `null`).
 */
export const STEP_NAME = /^(?!(?:row|and|or|not|in|true|false|null)$)[A-Za-z_][A-Za-z0-9_]*$/

/** A parsed expression, and the text it was parsed from. */
export interface When {
  source: string
  /** The tree: only this module looks inside. */
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
  override readonly name = "WhenSyntaxError"
  constructor(
    message: string,
    readonly column: number,
  ) {
    super(`${message} at column ${column}`)
  }
}

/** `v` is the token as written (strings with their quotes); `value` is a literal's value. */
type Token = { k: "num" | "str" | "name" | "op" | "end"; v: string; at: number; value?: unknown }

const FUNCTIONS: Record<string, number> = { len: 1, lower: 1, contains: 2, exists: 1 }
const COMPARISONS = new Set(["==", "!=", "<", "<=", ">", ">=", "in", "not in"])
const WORDS = new Set(["and", "or", "not", "in", "true", "false", "null"])
const LITERALS = new Map<string, unknown>(Object.entries({ true: true, false: false, null: null }))
/** Two-character operators first, so that `<=` is not read as `<`. */
const OPS = ["==", "!=", "<=", ">=", "<", ">", "(", ")", "[", "]", ",", ".", "-"]
/** Spellings from other languages, and the word this one says instead (longer spellings first). */
const SAY: Record<string, string> = { "&&": "and", "||": "or", "&": "and", "|": "or", "!": "not", "=": "==" }
/** Deeper nesting (parentheses, lists, calls, `not`, `-`) is not written by hand, and would exhaust the stack. */
const MAX_DEPTH = 100

function tokenize(source: string): Token[] {
  const out: Token[] = []
  for (let i = 0; i < source.length;) {
    const rest = source.slice(i)
    const c = rest[0]!
    const at = i + 1
    const space = /^\s+/.exec(rest)?.[0]
    const str = /^(['"])((?:\\[\s\S]|(?!\1)[^\\])*)\1/.exec(rest)
    const num = /^[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?/.exec(rest)?.[0]
    const name = /^[A-Za-z_][A-Za-z0-9_]*/.exec(rest)?.[0]
    const op = OPS.find((o) => rest.startsWith(o))
    const wrong = Object.keys(SAY).find((o) => rest.startsWith(o))
    if (c === "'" || c === '"') {
      if (!str) throw new WhenSyntaxError(`unclosed string (it opens with ${c})`, at)
      const text = str[2]!.replace(/\\([\s\S])/g, (_, e: string) => (e === "n" ? "\n" : e === "t" ? "\t" : e))
      out.push({ k: "str", v: str[0], at, value: text })
    } else if (num) out.push({ k: "num", v: num, at, value: Number(num) })
    else if (name) out.push({ k: "name", v: name, at })
    else if (op) out.push({ k: "op", v: op, at })
    else if (wrong) throw new WhenSyntaxError(`"${wrong}" is written "${SAY[wrong]}" here`, at)
    else if (!space) throw new WhenSyntaxError(`unexpected character "${[...rest][0]}"`, at)
    i += (space ?? str?.[0] ?? num ?? name ?? op)!.length
  }
  out.push({ k: "end", v: "", at: source.length + 1 })
  return out
}

/**
 * Parses `source`; throws WhenSyntaxError naming what was expected and the column.
 * @example parseWhen("classify.label == 'bug' and row.lang in ['en', 'fr']")
 */
export function parseWhen(source: string): When {
  const tokens = tokenize(source)
  let p = 0
  let depth = 0
  const peek = () => tokens[p]!
  const is = (v: string) => (peek().k === "op" || peek().k === "name") && peek().v === v
  const shown = (t: Token) => (t.k === "end" ? "the end" : `"${t.v}"`)
  const expect = (v: string, after: string) => {
    if (!is(v)) throw new WhenSyntaxError(`expected "${v}" ${after}, found ${shown(peek())}`, peek().at)
    p++
  }
  const nested = (inner: () => Node): Node => {
    if (depth++ > MAX_DEPTH) throw new WhenSyntaxError(`nested more than ${MAX_DEPTH} levels deep`, peek().at)
    const node = inner()
    depth--
    return node
  }

  const or = (): Node =>
    nested(() => {
      let left = and()
      while (is("or")) {
        const at = tokens[p++]!.at
        left = { t: "bin", op: "or", left, right: and(), at }
      }
      return left
    })
  const and = (): Node => {
    let left = not()
    while (is("and")) {
      const at = tokens[p++]!.at
      left = { t: "bin", op: "and", left, right: not(), at }
    }
    return left
  }
  const not = (): Node => {
    if (!is("not")) return comparison()
    const at = tokens[p++]!.at
    return { t: "not", arg: nested(not), at }
  }
  const operator = (): string | undefined => {
    if (is("not") && tokens[p + 1]?.k === "name" && tokens[p + 1]?.v === "in") return "not in"
    return (peek().k === "op" || is("in")) && COMPARISONS.has(peek().v) ? peek().v : undefined
  }
  const comparison = (): Node => {
    const left = unary()
    const op = operator()
    if (!op) return left
    const at = peek().at
    p += op === "not in" ? 2 : 1
    const right = unary()
    if (operator()) throw new WhenSyntaxError(`comparisons do not chain: write "a < b and b < c"`, peek().at)
    return { t: "bin", op, left, right, at }
  }
  const unary = (): Node => {
    if (!is("-")) return primary()
    const at = tokens[p++]!.at
    return { t: "neg", arg: nested(unary), at }
  }
  const items = (close: string, what: string): Node[] => {
    const out: Node[] = []
    while (!is(close)) {
      out.push(or())
      if (!is(",")) break
      p++
    }
    expect(close, what)
    return out
  }
  const primary = (): Node => {
    const t = peek()
    if (t.k === "num" || t.k === "str" || (t.k === "name" && LITERALS.has(t.v))) {
      p++
      return { t: "lit", value: t.k === "name" ? LITERALS.get(t.v) : t.value, at: t.at }
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
    if (t.k === "name" && !WORDS.has(t.v)) {
      p++
      if (is("(")) {
        p++
        const args = items(")", `to close the call of ${t.v} at column ${t.at}`)
        return { t: "call", fn: t.v, args, at: t.at }
      }
      const parts = [t.v]
      while (is(".") || is("[")) {
        const dot = tokens[p++]!.v === "."
        const n = tokens[p++]!
        const want = dot ? `a field name after "."` : `a quoted field name after "["`
        if (n.k !== (dot ? "name" : "str")) throw new WhenSyntaxError(`expected ${want}`, n.at)
        parts.push(dot ? n.v : String(n.value))
        if (!dot) expect("]", "after the field name")
      }
      return { t: "path", parts, at: t.at }
    }
    const after = p > 0 ? ` after "${tokens[p - 1]!.v}"` : ""
    throw new WhenSyntaxError(`expected a value${after}, found ${shown(t)}`, t.at)
  }

  if (tokens[0]!.k === "end") throw new WhenSyntaxError("the expression is empty", 1)
  const root = or()
  if (peek().k !== "end")
    throw new WhenSyntaxError(`expected "and", "or" or the end, found ${shown(peek())}`, peek().at)
  return { source, root }
}

/** A step's output fields, as far as its JSON Schema tells: nested objects give nested trees. */
export type WhenFields = { [field: string]: WhenFields | "leaf" | "any" }

/** Which names a step's `when` may reach. */
export interface WhenScope {
  /** The steps it needs, directly or not: their fields, "text" (plain text output: the bare name only), or "any". */
  steps: Record<string, WhenFields | "text" | "any">
  /** The row's columns when known (a CSV header); undefined lets any `row.x` through. */
  row?: string[]
}

/**
 * The field tree of a step's output schema: an object schema's properties, nested. Below the top, a property whose
 * types are all scalars or arrays is a "leaf", and one the schema does not pin down (an object without properties,
 * `anyOf`, `$ref`, no type) is "any". A schema without properties is "any".
 */
export function fieldsOfSchema(schema: unknown): WhenFields | "any" {
  const tree = shape(schema)
  return typeof tree === "object" ? tree : "any"
}

function shape(schema: unknown): WhenFields | "leaf" | "any" {
  if (!isRecord(schema)) return "any"
  if (isRecord(schema.properties))
    return Object.fromEntries(Object.entries(schema.properties).map(([name, sub]) => [name, shape(sub)]))
  const types = Array.isArray(schema.type) ? schema.type : [schema.type]
  return types.length > 0 && types.every((t) => typeof t === "string" && t !== "object") ? "leaf" : "any"
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v)
}

/**
 * The problems of `when` in `scope`, each naming its column, the bad name and what exists; empty when it is fine.
 * @example checkWhen(parseWhen("clasify.label == 'bug'"), { steps: { classify: "any" } })
 *   // ['column 1: "clasify" is not a step this step needs (it needs: classify); a row column is reached as row.clasify']
 */
export function checkWhen(when: When, scope: WhenScope): string[] {
  return nodes(when.root).flatMap((n) => {
    if (n.t === "path") return pathProblems(n, scope)
    if (n.t !== "call") return []
    const arity = Object.hasOwn(FUNCTIONS, n.fn) ? FUNCTIONS[n.fn]! : undefined
    const where = `column ${n.at}`
    if (arity === undefined)
      return [`${where}: no function "${n.fn}" (there are: ${Object.keys(FUNCTIONS).join(", ")})`]
    if (n.args.length === arity) return []
    return [`${where}: ${n.fn} takes ${arity} argument${arity === 1 ? "" : "s"}, not ${n.args.length}`]
  })
}

function pathProblems(n: Extract<Node, { t: "path" }>, scope: WhenScope): string[] {
  const [head, ...rest] = n.parts as [string, ...string[]]
  const where = `column ${n.at}`
  if (head === "row") {
    if (rest.length === 0) return [`${where}: "row" alone is not a value; name a column, as row.field`]
    if (scope.row && !scope.row.includes(rest[0]!))
      return [`${where}: the rows have no column "${rest[0]}" (they have: ${listed(scope.row)})`]
    return []
  }
  const fields = Object.hasOwn(scope.steps, head) ? scope.steps[head] : undefined
  if (fields === undefined) {
    const steps = Object.keys(scope.steps)
    const needs = steps.length ? `it needs: ${steps.join(", ")}` : "it needs none"
    const row = `a row column is reached as row.${head}`
    return [`${where}: "${head}" is not a step this step needs (${needs}); ${row}`]
  }
  if (fields === "any" || rest.length === 0) return []
  if (fields === "text") return [`${where}: ${head} answers plain text, which has no field "${rest[0]}"`]
  let tree: WhenFields | "leaf" | "any" = fields
  for (const [i, part] of rest.entries()) {
    const path = [head, ...rest.slice(0, i)].join(".")
    if (tree === "any") return []
    if (tree === "leaf") return [`${where}: ${path} is not an object, so it has no field "${part}"`]
    const next: WhenFields | "leaf" | "any" | undefined = Object.hasOwn(tree, part) ? tree[part] : undefined
    if (next === undefined)
      return [`${where}: ${path} has no field "${part}" (its schema has: ${listed(Object.keys(tree))})`]
    tree = next
  }
  return []
}

const listed = (names: string[]) => (names.length ? names.join(", ") : "none")

/** The steps the expression reads (the first name of every path but `row`), each once, in order of appearance. */
export function stepsRead(when: When): string[] {
  const heads = nodes(when.root).flatMap((n) => (n.t === "path" && n.parts[0] !== "row" ? [n.parts[0]!] : []))
  return [...new Set(heads)]
}

/**
 * Every node of the tree, parents before children, left before right (so problems come in column order). A node's
 * children are its values that are objects: a literal's value is never one.
 */
function nodes(n: Node): Node[] {
  const kids = Object.values(n).flat().filter(isRecord) as Node[]
  return [n, ...kids.flatMap(nodes)]
}

type Data = { row: Record<string, unknown>; steps: Record<string, unknown> }

/**
 * Whether the step runs for one row: `row` is the input row, `steps[name]` the output of each step it needs (a parsed
 * JSON value, or a string for a text step). Never throws: a missing or mistyped value is null, or a false comparison.
 */
export function evalWhen(when: When, data: Data): boolean {
  return truthy(value(when.root, data))
}

function value(n: Node, data: Data): unknown {
  switch (n.t) {
    case "lit":
      return n.value
    case "list":
      return n.items.map((i) => value(i, data))
    case "path": {
      const [head, ...rest] = n.parts as [string, ...string[]]
      let at = head === "row" ? data.row : field(data.steps, head)
      for (const part of rest) at = field(at, part)
      return at ?? null
    }
    case "not":
      return !truthy(value(n.arg, data))
    case "neg": {
      const v = value(n.arg, data)
      return typeof v === "number" ? -v : null
    }
    case "call": {
      const [a = null, b = null] = n.args.map((x) => value(x, data))
      if (n.fn === "len") return typeof a === "string" || Array.isArray(a) ? a.length : 0
      if (n.fn === "lower") return typeof a === "string" ? a.toLowerCase() : a
      if (n.fn === "contains") return member(b, a)
      if (n.fn === "exists") return a !== null
      return null
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
      const comparable =
        (typeof l === "number" && typeof r === "number") || (typeof l === "string" && typeof r === "string")
      if (!comparable) return false
      return n.op === "<" ? l < r : n.op === "<=" ? l <= r : n.op === ">" ? l > r : l >= r
    }
  }
}

/** An object's own field (never one inherited, such as `constructor`); undefined for anything else. */
function field(v: unknown, key: string): unknown {
  return isRecord(v) && Object.hasOwn(v, key) ? v[key] : undefined
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
  if (ka.length !== Object.keys(b).length) return false
  return ka.every((k) => Object.hasOwn(b, k) && equal((a as never)[k], (b as never)[k]))
}
