/**
 * The OpenAPI specs the conformance checks use (SPOOL_SPECS, or ../shared/specs beside the clone), and
 * `validateSchema`, which checks values against their schemas with ajv. Without the specs the checks are skipped:
 * `validateSchema` finds nothing, and the preload prints one line saying so, unless SPOOL_REQUIRE_ALL=1 (CI).
 */
import Ajv2020, { type ValidateFunction } from "ajv/dist/2020"
import { existsSync, readFileSync } from "node:fs"
import { join, resolve } from "node:path"
import { REQUIRE_ALL } from "./needs.ts"

const FILES = { openai: "openai-openapi.yaml", anthropic: "anthropic-openapi.json" } as const

/** Which spec a schema name is looked up in. */
export type Spec = keyof typeof FILES

/** Where the specs are looked for: SPOOL_SPECS (relative to the working directory), or ../shared/specs. */
export const SPECS_AT = process.env.SPOOL_SPECS
  ? resolve(process.env.SPOOL_SPECS)
  : join(import.meta.dir, "..", "..", "..", "shared", "specs")

const missing = Object.values(FILES).filter((file) => !existsSync(join(SPECS_AT, file)))

/** The directory holding both specs, or undefined when either is missing. */
export const SPECS_DIR: string | undefined = missing.length ? undefined : SPECS_AT

/** Whether the tests that need the specs skip: only when the specs are missing and not required. */
export const SKIP_SPEC_CHECKS = !SPECS_DIR && !REQUIRE_ALL

/** How to make the specs found. */
export const SPECS_HINT = "set SPOOL_SPECS=DIR or put the specs in ../shared/specs (README.md, Testing)"

/** What is missing where, and how to get it; empty when the specs are there. */
export const SPECS_MISSING = SPECS_DIR ? "" : `no ${missing.join(" or ")} in ${SPECS_AT}: ${SPECS_HINT}`

const instances = new Map<Spec, Ajv2020>()

/** OpenAPI 3.0's `nullable` (still used in places) becomes JSON Schema: a "null" type or a null alternative. */
function normalize(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(normalize)
  if (node === null || typeof node !== "object") return node
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(node)) out[k] = normalize(v)
  if (!("nullable" in out)) return out
  const nullable = out.nullable === true
  delete out.nullable
  if (!nullable) return out
  if (typeof out.type === "string") out.type = [out.type, "null"]
  else if (Array.isArray(out.type)) out.type = [...new Set([...out.type, "null"])]
  else return { anyOf: [out, { type: "null" }] }
  if (Array.isArray(out.enum)) out.enum = [...out.enum, null]
  return out
}
const compiled = new Map<string, ValidateFunction>()

function load(spec: Spec): Ajv2020 {
  const loaded = instances.get(spec)
  if (loaded) return loaded
  const text = readFileSync(join(SPECS_AT, FILES[spec]), "utf8")
  const raw = spec === "openai" ? Bun.YAML.parse(text) : JSON.parse(text)
  // the Anthropic spec is OpenAPI 3.1 but still says `nullable` in places, as the OpenAI one does
  const doc = normalize(raw) as Record<string, unknown>
  const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false })
  // OpenAPI's own keywords are annotations here (others, such as x-stainless-…, are ignored: strict is off)
  for (const k of [
    "discriminator",
    "example",
    "x-oaiMeta",
    "x-oaiTypeLabel",
    "x-oaiExpandable",
    "x-stainless-const",
  ]) {
    if (!ajv.getKeyword(k)) ajv.addKeyword(k)
  }
  ajv.addSchema({ ...doc, $id: spec })
  instances.set(spec, ajv)
  return ajv
}

/**
 * Violations of `value` against components/schemas/`name` of a spec (the OpenAI one unless `spec` says
 * otherwise); empty when valid, and when the specs are missing (unless they are required: then it throws).
 */
export function validateSchema(name: string, value: unknown, spec: Spec = "openai"): string[] {
  if (!SPECS_DIR) {
    if (REQUIRE_ALL) throw new Error(`[spec] SPOOL_REQUIRE_ALL=1, but ${SPECS_MISSING}`)
    return []
  }
  const key = `${spec}#${name}`
  let validate = compiled.get(key)
  if (!validate) {
    const found = load(spec).getSchema(`${spec}#/components/schemas/${name}`)
    if (!found) throw new Error(`no schema ${name} in the ${spec === "openai" ? "OpenAI" : "Anthropic"} spec`)
    validate = found
    compiled.set(key, validate)
  }
  if (validate(value)) return []
  return (validate.errors ?? []).map((e) => `${e.instancePath || "/"} ${e.message ?? "invalid"}`)
}
