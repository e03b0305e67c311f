/** Validates values against schemas of the OpenAPI specs in ../shared/specs, with ajv. */
import Ajv2020, { type ValidateFunction } from "ajv/dist/2020"
import { readFileSync } from "node:fs"

const SPECS = {
  openai: new URL("../../../shared/specs/openai-openapi.yaml", import.meta.url),
  anthropic: new URL("../../../shared/specs/anthropic-openapi.json", import.meta.url),
} as const

/** Which spec a schema name is looked up in. */
export type Spec = keyof typeof SPECS

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
  const text = readFileSync(SPECS[spec], "utf8")
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
 * otherwise); empty when valid.
 */
export function validateSchema(name: string, value: unknown, spec: Spec = "openai"): string[] {
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
