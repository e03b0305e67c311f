/**
 * `--help` texts, coloured only where colour is wanted. citty colours its usage whenever its own checks allow (even
 * into a pipe or a file), so its codes are taken out and, where colour is wanted, put back here.
 */
import { renderUsage, type CommandDef } from "citty"

const ESC = "\x1b["
const paint = (code: string, text: string) => `${ESC}${code}m${text}${ESC}0m`

/**
 * Whether to colour what goes to `stream`: `NO_COLOR` with any value but "" says no (no-color.org); else
 * `FORCE_COLOR` says yes (but 0 or false), even into a pipe; else only a terminal that is not "dumb" gets colour.
 */
export function wantsColour(stream: { isTTY?: boolean }, env: Record<string, string | undefined>): boolean {
  if (env.NO_COLOR) return false
  const force = env.FORCE_COLOR
  if (force !== undefined) return force !== "0" && force !== "false"
  return stream.isTTY === true && env.TERM !== "dumb"
}

/** Takes out every colour and style code, and the spaces citty pads each line's end with. */
export function plain(text: string): string {
  return text.replace(/\x1b\[[0-9;]*m/g, "").replace(/[ \t]+$/gm, "")
}

/** Colours a plain usage text: the summary dim, headings bold and underlined, commands and flags cyan. */
function coloured(text: string): string {
  return text
    .split("\n")
    .map((line, i) => {
      if (i === 0) return paint("90", line)
      const heading = /^(USAGE|ARGUMENTS|OPTIONS|COMMANDS)\b(.*)$/.exec(line)
      if (heading) return `${paint("1;4", heading[1] as string)}${heading[2] ? paint("36", heading[2]) : ""}`
      // a column's first cell (a flag, an argument or a command), before the spaces that end it
      const cell = /^(\s+)(\S.*?)(\s{2,}.*)$/.exec(line)
      return cell ? `${cell[1]}${paint("36", cell[2] as string)}${cell[3]}` : line
    })
    .join("\n")
}

/** The usage of `cmd` (under `parent`), for `out`: plain, or coloured when colour is wanted there. */
export async function usage(
  cmd: CommandDef,
  parent: CommandDef | undefined,
  out: { isTTY?: boolean },
  env: Record<string, string | undefined> = process.env,
): Promise<string> {
  const text = plain(await renderUsage(cmd, parent))
  return wantsColour(out, env) ? coloured(text) : text
}
