/** The one list of built-in sources and providers, and the only place a plugin is resolved by name. */
import { extname } from "node:path"
import * as v from "valibot"
import { JobError } from "../core/errors.ts"
import type { Provider, Source } from "./define.ts"
import jsonl from "../sources/jsonl.ts"
import openai from "./providers/openai.ts"
import mock from "./providers/mock.ts"

export const sources: Source[] = [jsonl]
export const providers: Provider[] = [openai, mock]

export function provider(name: string): Provider {
  const found = providers.find((p) => p.name === name)
  if (found) return found
  throw new JobError(
    `provider.name: unknown provider "${name}"`,
    [],
    `Known providers: ${providers.map((p) => p.name).join(", ")}.`,
  )
}

/** The source for a file: named by `format`, or chosen by the file's extension. */
export function source(path: string, format: string | undefined): Source {
  const found = format
    ? sources.find((s) => s.name === format)
    : sources.find((s) => s.extensions.includes(extname(path).toLowerCase()))
  if (found) return found
  const known = sources.flatMap((s) => s.extensions).join(", ")
  throw new JobError(
    format ? `source.format: unknown format "${format}"` : `source.path: cannot tell the format of ${path}`,
    [],
    `Use a file ending in ${known}, or set format = "${sources[0]?.name}".`,
  )
}

/** Validates a plugin's options, naming each problem by its key path under `prefix`. */
export function options<S extends v.GenericSchema>(
  schema: S,
  value: unknown,
  prefix: string,
): v.InferOutput<S> {
  const parsed = v.safeParse(schema, value ?? {})
  if (parsed.success) return parsed.output
  throw new JobError(
    "the job is not valid",
    parsed.issues.map((i) => {
      const path = [prefix, ...(i.path?.map((p) => String(p.key)) ?? [])].join(".")
      return `${path}: ${i.expected === "never" ? "unknown key (check its spelling)" : i.message}`
    }),
  )
}
