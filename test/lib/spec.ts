/** Validates values against schemas of the official OpenAPI specs in ../shared/specs, with ajv. */
import Ajv2020, { type ValidateFunction } from "ajv/dist/2020"
import { readFileSync } from "node:fs"

const SPECS = {
  openai: new URL("../../../shared/specs/openai-openapi.yaml", import.meta.url),
} as const

let ajv: Ajv2020 | undefined

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

function load(): Ajv2020 {
  if (ajv) return ajv
  const doc = normalize(Bun.YAML.parse(readFileSync(SPECS.openai, "utf8"))) as Record<string, unknown>
  ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false })
  // OpenAPI's own keywords are annotations here
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
  ajv.addSchema({ ...doc, $id: "openai" })
  return ajv
}

/** Violations of `value` against components/schemas/`name` of the OpenAI spec; empty when valid. */
export function validateSchema(name: string, value: unknown): string[] {
  let validate = compiled.get(name)
  if (!validate) {
    const found = load().getSchema(`openai#/components/schemas/${name}`)
    if (!found) throw new Error(`no schema ${name} in the OpenAI spec`)
    validate = found
    compiled.set(name, validate)
  }
  if (validate(value)) return []
  return (validate.errors ?? []).map((e) => `${e.instancePath || "/"} ${e.message ?? "invalid"}`)
}
