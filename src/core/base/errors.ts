/**
 * The engine's own errors. They extend `SpoolError`, the base the plugin API holds (src/plugins/api/errors.ts) with
 * the errors a plugin throws; the CLI and the server turn them all into text for people.
 */
import { SpoolError } from "../../plugins/api/errors.ts"

/** A command was called with the wrong arguments, or names something that does not exist. */
export class UsageError extends SpoolError {
  override readonly name = "UsageError"
  readonly code = "E_USAGE"
  override readonly exit = 2
}

/** The store's file is damaged, cut short or not a SQLite database: what it holds cannot be trusted to go on. */
export class StoreCorruptError extends SpoolError {
  override readonly name = "StoreCorruptError"
  readonly code = "E_STORE_CORRUPT"
}

/** An item was asked to move along an edge the state machine does not have. Always a bug. */
export class TransitionError extends SpoolError {
  override readonly name = "TransitionError"
  readonly code = "E_TRANSITION"
}

/** The run was paused because going on would fail every item (bad key, no quota). */
export class RunPausedError extends SpoolError {
  override readonly name = "RunPausedError"
  readonly code = "E_PAUSED"
}

/** The run was cancelled (`spool cancel`) while this process was running it. */
export class RunCancelledError extends SpoolError {
  override readonly name = "RunCancelledError"
  readonly code = "E_CANCELLED"
}
