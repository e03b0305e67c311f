/**
 * Redaction lives with the plugin API's errors (src/plugins/api/redact.ts), which scrub every message they make;
 * this re-export keeps the engine's imports compiling until they name that file.
 */
export { REDACTED, register, scrub } from "../../plugins/api/redact.ts"
