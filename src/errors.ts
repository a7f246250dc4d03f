import createError from '@fastify/error'
import { Type, type Static } from '@sinclair/typebox'

/**
 * Every error this service raises, in one place, so codes stay unique and
 * greppable. Codes carry the `SPRINT_` prefix; messages say what was wrong
 * and where (event type, field path, option name, file).
 */

/** A detail of a validation failure: a JSON pointer into the input and what is wrong there. */
export interface ErrorDetail {
  path: string
  message: string
}

/** An event that failed its schema; `details` lists every failing field. */
export const InvalidEventError = createError<[string]>('SPRINT_INVALID_EVENT', '%s', 400)

export const TooManyEventsError = createError<[number, number]>(
  'SPRINT_TOO_MANY_EVENTS', 'A request may carry at most %d events; this one has %d', 400)

export const InvalidOptionError = createError<[string, string]>(
  'SPRINT_INVALID_OPTION', 'Invalid option "%s": %s', 500)

export const DataFileNotFoundError = createError<[string, string]>(
  'SPRINT_DATA_FILE_NOT_FOUND', 'Data file "%s" was not found in the artifacts directory (%s) or the dashboard directory', 404)

export const OriginNotAllowedError = createError<[string]>(
  'SPRINT_ORIGIN_NOT_ALLOWED', 'Origin "%s" may not connect to this service', 403)

export const TooManyConnectionsError = createError<[number]>(
  'SPRINT_TOO_MANY_CONNECTIONS', 'The service holds its maximum of %d WebSocket connections; try again later', 503)

/** A notice for `events.broadcast` that is not `{ type, payload }`. */
export const InvalidNoticeError = createError<[string]>('SPRINT_INVALID_NOTICE', 'Invalid notice: %s', 500)

/** The store could not take the events (disk full, I/O error, read-only or locked file): nothing was stored or sent. */
export const StorageUnavailableError = createError<[string]>(
  'SPRINT_STORAGE_UNAVAILABLE', 'The event store cannot take events right now (%s); nothing was stored, try again', 503)

/** Redis (the log of record in scale-out mode) is unreachable or failed the append: nothing was appended or sent. */
export const BrokerUnavailableError = createError<[string]>(
  'SPRINT_BROKER_UNAVAILABLE', 'The event broker (Redis) cannot take events right now (%s); nothing was stored, try again', 503)

/** An idempotency key that already names another event (another type or payload): nothing of the request was stored. */
export const IdempotencyConflictError = createError<[string, number]>(
  'SPRINT_IDEMPOTENCY_CONFLICT', 'The idempotency key "%s" already names another event (id %d): a key must name one event; nothing of this request was stored', 409)

/** The service's error reply, as the error handler in app.ts sends it. */
export const ErrorReplySchema = Type.Object({
  statusCode: Type.Integer(),
  code: Type.Optional(Type.String()),
  error: Type.String(),
  message: Type.String(),
  details: Type.Optional(Type.Array(Type.Object({ path: Type.String(), message: Type.String() })))
})
export type ErrorReply = Static<typeof ErrorReplySchema>

/** Attaches field details to an error built by one of the constructors above. */
export function withDetails<E extends Error> (error: E, details: ErrorDetail[]): E & { details: ErrorDetail[] } {
  return Object.assign(error, { details })
}

// Orchestrator integration (ingest route and sprint-status file).

/** Raised by the write guard (src/lib/write-guard.ts) for every write route; the argument names the route. */
export const IngestUnauthorizedError = createError<[string]>(
  'SPRINT_INGEST_UNAUTHORIZED', '%s needs the header "Authorization: Bearer <token>" with the configured ingest token', 401)

export const InvalidJsonError = createError<[string]>(
  'SPRINT_INVALID_JSON', 'Body is not valid JSON: %s', 400)

export const IngestNotLoopbackError = createError<[string]>(
  'SPRINT_INGEST_NOT_LOOPBACK', 'Without an ingest token, events and orchestrator commands are accepted only from this machine (loopback); %s is not a loopback address', 403)

export const SprintStatusNotFoundError = createError<[string]>(
  'SPRINT_STATUS_NOT_FOUND', 'sprint-status.yaml was not found in the artifacts directory (%s)', 404)

export const SprintStatusInvalidError = createError<[string]>(
  'SPRINT_STATUS_INVALID', '%s', 500)

// Orchestrator supervision (src/plugins/orchestrator.ts, src/routes/orchestrator.ts).

export const OrchestratorRunningError = createError<[string]>(
  'SPRINT_ORCHESTRATOR_RUNNING', '%s', 409)

export const OrchestratorNotConfiguredError = createError(
  'SPRINT_ORCHESTRATOR_NOT_CONFIGURED',
  'No orchestrator is configured: set the plugin option "orchestrator" (standalone: SPRINT_ORCHESTRATOR_CMD, a JSON array of argv strings)', 501)

export const OrchestratorSpawnFailedError = createError<[string, string]>(
  'SPRINT_ORCHESTRATOR_SPAWN_FAILED', 'Could not start the orchestrator %s: %s', 500)

export const OrchestratorNotRunningError = createError(
  'SPRINT_ORCHESTRATOR_NOT_RUNNING', 'Nothing to stop: no orchestrator is running and no batch is left running', 409)

/** A start request whose batch size is not an integer 1..1000 or "all"; `details` has the field path. */
export const InvalidBatchSizeError = createError<[string]>(
  'SPRINT_INVALID_BATCH_SIZE', '%s', 400)

// import-upstream (src/emitter/import-upstream.ts).

export const UpstreamDatabaseInvalidError = createError<[string, string]>(
  'SPRINT_UPSTREAM_DB_INVALID', '%s is not a sprint runner database: %s', 400)

export const StoreInUseError = createError<[string]>(
  'SPRINT_STORE_IN_USE', '%s is open in a running service; import through it with --url (or stop it and run again with --db)', 409)

export const UpstreamImportsUnsupportedError = createError<[string]>(
  'SPRINT_UPSTREAM_IMPORTS_UNSUPPORTED', 'The service at %s has no GET /api/upstream-imports (an older version); update it, or stop it and import with --db', 404)

export const LiveBatchRunningError = createError<[number]>(
  'SPRINT_LIVE_BATCH_RUNNING', 'Batch %d is running in the service: imported batches start before it and would end it; import when no batch is running', 409)

// Storage and history routes.

export const DatabaseTooNewError = createError<[string, number, number]>(
  'SPRINT_DATABASE_TOO_NEW', 'The database %s has schema version %d, newer than the %d this release knows; upgrade the service or use another file', 500)

export const BatchNotFoundError = createError<[number]>(
  'SPRINT_BATCH_NOT_FOUND', 'There is no batch %d', 404)

/** A query string or path parameter that failed its schema; `details` lists every failing field. */
export const InvalidRequestError = createError<[string]>(
  'SPRINT_INVALID_REQUEST', '%s', 400)

// The standalone server (src/server.ts) and its environment.

export const InvalidEnvironmentError = createError<[string, string, string]>(
  'SPRINT_INVALID_ENVIRONMENT', 'Environment variable %s must be %s, got %s', 500)

// Files read from the artifacts and dashboard directories (src/lib/safe-read.ts); limits in FileLimits (src/events/protocol.ts).

/** A FIFO, device, socket or directory where a file was expected: it is never opened. */
export const FileNotRegularError = createError<[string, string]>(
  'SPRINT_FILE_NOT_REGULAR', '%s is a %s, not a regular file; only regular files are read', 500)

/** A file, or what it expands to, above its documented limit; the message names the limit. */
export const FileTooLargeError = createError<[string, string]>(
  'SPRINT_FILE_TOO_LARGE', '%s is too large: %s', 413)

/** Reading or parsing a file took longer than its documented limit; the message names the limit. */
export const FileTimeoutError = createError<[string, string]>(
  'SPRINT_FILE_TIMEOUT', '%s: %s', 503)

/** Another service holds the database (its lock file); one database belongs to one process. */
export const DatabaseLockedError = createError<[string, string, string]>(
  'SPRINT_DATABASE_LOCKED',
  'The database %s is in use by %s, which holds its lock file %s: a database belongs to one service. ' +
  'Stop that service, or give this one another database file (SPRINT_DB / the dbPath option)', 500)

/** A Host header this service does not answer to on its same-host routes (DNS rebinding guard, src/lib/host.ts). */
export const HostNotAllowedError = createError<[string]>(
  'SPRINT_HOST_NOT_ALLOWED',
  'Host "%s" is not a name this service answers to (DNS rebinding guard): open it by localhost or an IP address, ' +
  'or add the name to the allowedHosts option (SPRINT_ALLOWED_HOSTS for the standalone server)', 403)
