import { Type, type Static, type TSchema } from '@sinclair/typebox'

/**
 * The event catalogue: one TypeBox schema per orchestrator event type.
 * Every payload type in the project is derived from these with `Static<>`.
 */

/** Upper bounds on what one emitter can make us store and fan out. */
export const Limits = {
  /** Identifiers (story keys, commands, statuses) and every property name in a payload. */
  key: 256,
  /** Any string in a payload. */
  message: 64 * 1024,
  /** Any array in a payload. */
  listItems: 1000,
  /** Objects and arrays nested in one another, the payload itself counted: recursion over stored JSON stays shallow. */
  depth: 32,
  /** Properties of any one object in a payload, the payload itself counted. */
  properties: 256,
  /** How far a producer's `timestamp` may be ahead of the server's clock: clocks drift, but not by minutes. */
  futureTimestampMs: 60_000,
  /** Batches one `GET /api/batches` page may list. */
  batchesPage: 200,
  /** Events one `GET /api/batches/:id/events` page may carry. */
  batchEventsPage: 1000
} as const

const Key = Type.String({ minLength: 1, maxLength: Limits.key })
/** Integers that JSON, JavaScript and SQLite all hold exactly: a larger one (1e20) reaches SQLite as a float and fails there. */
const SafeInteger = (minimum: number = Number.MIN_SAFE_INTEGER) => Type.Integer({ minimum, maximum: Number.MAX_SAFE_INTEGER })
const Status = Type.String({ minLength: 1, maxLength: Limits.key })
/** Free text; may be empty (the sprint runner's task log often has no message). */
const Message = Type.String({ maxLength: Limits.message })
/** File paths and file names as the orchestrator reports them; longer than a key can be. */
const FilePath = Type.String({ maxLength: Limits.message })
const KeyList = Type.Array(Type.String({ maxLength: Limits.key }), { maxItems: Limits.listItems })
/** The orchestrator's background task ids are integers (its database rows); other producers use names. */
const TaskId = Type.Union([SafeInteger(), Key])
/** Free-form objects (metrics, error context) are open but bounded by `Limits` (see validate.ts). */
const OpenObject = Type.Object({}, { additionalProperties: true, maxProperties: Limits.properties })

/**
 * Payloads are open: fields a schema does not declare are accepted and kept as sent, because producers
 * add fields over time and one added field must never make a whole batch of events fail. They are
 * bounded like everything else (key length, string and list size, depth, `maxProperties`): see
 * `findUnbounded` in validate.ts. Declared fields are still checked strictly.
 */
const open = { additionalProperties: true, maxProperties: Limits.properties } as const
/** The envelope around a payload stays closed: a client-chosen `id` is refused, not ignored. */
const closed = { additionalProperties: false } as const

export const EventType = {
  BATCH_START: 'batch:start',
  BATCH_WARNING: 'batch:warning',
  BATCH_END: 'batch:end',
  CYCLE_START: 'cycle:start',
  CYCLE_END: 'cycle:end',
  COMMAND_START: 'command:start',
  COMMAND_PROGRESS: 'command:progress',
  COMMAND_END: 'command:end',
  STORY_STATUS: 'story:status',
  ERROR: 'error',
  CONTEXT_CREATE: 'context:create',
  CONTEXT_REFRESH: 'context:refresh',
  CONTEXT_COMPLETE: 'context:complete',
  CONTEXT_ERROR: 'context:error',
  CONTEXT_FRESH: 'context:fresh',
  CONTEXT_COPIED: 'context:copied',
  CONTEXT_COPY_FAILED: 'context:copy_failed',
  INJECTION_EMPTY: 'injection:empty',
  INJECTION_WARNING: 'injection:warning',
  BACKGROUND_COMPLETE: 'background:complete',
  BACKGROUND_ERROR: 'background:error',
  CLEANUP_COMPLETE: 'cleanup:complete',
  CLEANUP_ERROR: 'cleanup:error',
  CLEANUP_FILE_MOVED: 'cleanup:file_moved',
  CLEANUP_FILE_ERROR: 'cleanup:file_error',
  ORCHESTRATOR_START: 'orchestrator:start',
  ORCHESTRATOR_STOPPING: 'orchestrator:stopping',
  ORCHESTRATOR_EXIT: 'orchestrator:exit'
} as const

export type EventTypeName = typeof EventType[keyof typeof EventType]

// ---------------------------------------------------------------- batches and cycles

/**
 * `max_cycles`: a limit, or `null` / `"all"` for none. The sprint runner sends `null` with
 * `batch_mode: "all"` (`orchestrator.py all`) and the limit with `batch_mode: "fixed"`.
 */
export const BatchStartSchema = Type.Object({
  batch_id: SafeInteger(0),
  max_cycles: Type.Union([SafeInteger(1), Type.Literal('all'), Type.Null()]),
  batch_mode: Type.Optional(Type.Union([Type.Literal('fixed'), Type.Literal('all')]))
}, open)
export type BatchStart = Static<typeof BatchStartSchema>

export const BatchWarningSchema = Type.Object({
  batch_id: SafeInteger(0),
  message: Message,
  /** What kind of warning, e.g. `context_unavailable`. */
  warning_type: Key
}, open)
export type BatchWarning = Static<typeof BatchWarningSchema>

/** The ways a batch ends: its cycles done, no story left (`all_done`), stopped by the operator, failed. */
export const BatchEndStatusSchema = Type.Union([
  Type.Literal('completed'), Type.Literal('all_done'), Type.Literal('stopped'), Type.Literal('error')
])

/** Without `cycles_completed` (the sprint runner's stop), the count the batch reached is kept. */
export const BatchEndSchema = Type.Object({
  batch_id: SafeInteger(0),
  cycles_completed: Type.Optional(SafeInteger(0)),
  status: BatchEndStatusSchema
}, open)
export type BatchEnd = Static<typeof BatchEndSchema>

export const CycleStartSchema = Type.Object({
  cycle_number: SafeInteger(1),
  story_keys: KeyList
}, open)
export type CycleStart = Static<typeof CycleStartSchema>

export const CycleEndSchema = Type.Object({
  cycle_number: SafeInteger(1),
  completed_stories: KeyList
}, open)
export type CycleEnd = Static<typeof CycleEndSchema>

// ---------------------------------------------------------------- commands and stories

/** The three keys that name one command run; every command:* event carries them. */
const commandKeys = {
  story_key: Key,
  command: Key,
  task_id: Key
}

/** `message`: the task log's message column, often empty. */
export const CommandStartSchema = Type.Object({
  ...commandKeys,
  message: Type.Optional(Message)
}, open)
export type CommandStart = Static<typeof CommandStartSchema>

export const CommandProgressSchema = Type.Object({
  ...commandKeys,
  message: Message
}, open)
export type CommandProgress = Static<typeof CommandProgressSchema>

export const CommandMetricsSchema = Type.Object({
  duration_ms: Type.Optional(Type.Number({ minimum: 0 })),
  tokens: Type.Optional(Type.Number({ minimum: 0 }))
}, { additionalProperties: Type.Number(), maxProperties: 64 })
export type CommandMetrics = Static<typeof CommandMetricsSchema>

/** `status`: whatever the agent's task log wrote (`end`, `success`, `failed`, ...), never empty. */
export const CommandEndSchema = Type.Object({
  ...commandKeys,
  status: Status,
  message: Type.Optional(Message),
  metrics: Type.Optional(CommandMetricsSchema)
}, open)
export type CommandEnd = Static<typeof CommandEndSchema>

export const StoryStatusSchema = Type.Object({
  story_key: Key,
  old_status: Type.Union([Status, Type.Null()]),
  new_status: Status
}, open)
export type StoryStatus = Static<typeof StoryStatusSchema>

export const ErrorEventSchema = Type.Object({
  type: Key,
  message: Message,
  context: Type.Optional(OpenObject)
}, open)
export type ErrorEvent = Static<typeof ErrorEventSchema>

// ---------------------------------------------------------------- project context

/**
 * `context:create` (`starting` / `complete`), `context:refresh` (`started`, with the background
 * task's id) and `context:complete` (`completed`, same id) share one shape.
 */
export const ContextEventSchema = Type.Object({
  status: Status,
  task_id: Type.Optional(TaskId),
  message: Type.Optional(Message)
}, open)
export type ContextEvent = Static<typeof ContextEventSchema>

export const ContextErrorSchema = Type.Object({
  task_id: TaskId,
  status: Status,
  error: Message
}, open)
export type ContextError = Static<typeof ContextErrorSchema>

/** The project context is recent enough and is not regenerated. */
export const ContextFreshSchema = Type.Object({
  message: Message
}, open)
export type ContextFresh = Static<typeof ContextFreshSchema>

/** The project context was copied for this batch, so every agent of the batch reads the same one. */
export const ContextCopiedSchema = Type.Object({
  source: FilePath,
  destination: FilePath,
  message: Message
}, open)
export type ContextCopied = Static<typeof ContextCopiedSchema>

export const ContextCopyFailedSchema = Type.Object({
  source: FilePath,
  reason: Message,
  message: Message
}, open)
export type ContextCopyFailed = Static<typeof ContextCopyFailedSchema>

// ---------------------------------------------------------------- prompt injection

/** No file matched the stories for a command's injected context. */
export const InjectionEmptySchema = Type.Object({
  command: Key,
  story_keys: KeyList,
  message: Message
}, open)
export type InjectionEmpty = Static<typeof InjectionEmptySchema>

/** A command's injected context is larger than the warning threshold. */
export const InjectionWarningSchema = Type.Object({
  command: Key,
  size_bytes: SafeInteger(0),
  threshold_bytes: SafeInteger(0),
  message: Message
}, open)
export type InjectionWarning = Static<typeof InjectionWarningSchema>

// ---------------------------------------------------------------- background tasks

export const BackgroundCompleteSchema = Type.Object({
  task_id: TaskId,
  task_type: Key,
  status: Status
}, open)
export type BackgroundComplete = Static<typeof BackgroundCompleteSchema>

/** The sprint runner sends no `task_id` when the task failed before it had one. */
export const BackgroundErrorSchema = Type.Object({
  task_id: Type.Optional(TaskId),
  task_type: Key,
  status: Status,
  error: Message
}, open)
export type BackgroundError = Static<typeof BackgroundErrorSchema>

// ---------------------------------------------------------------- artifact clean-up

export const CleanupCompleteSchema = Type.Object({
  files_moved: SafeInteger(0),
  story_keys: KeyList,
  message: Message
}, open)
export type CleanupComplete = Static<typeof CleanupCompleteSchema>

export const CleanupErrorSchema = Type.Object({
  error: Message,
  message: Message
}, open)
export type CleanupError = Static<typeof CleanupErrorSchema>

export const CleanupFileMovedSchema = Type.Object({
  source: FilePath,
  destination: FilePath,
  file_name: FilePath
}, open)
export type CleanupFileMoved = Static<typeof CleanupFileMovedSchema>

export const CleanupFileErrorSchema = Type.Object({
  file: FilePath,
  error: Message,
  message: Message
}, open)
export type CleanupFileError = Static<typeof CleanupFileErrorSchema>

// ---------------------------------------------------------------- the orchestrator process

/** Upper bounds of orchestrator supervision: the batch size a start may ask for, and the output kept. */
export const OrchestratorLimits = {
  batchSize: 1000,
  outputLines: 1000,
  outputLineBytes: 4 * 1024
} as const

/** `batch_size` of `POST /api/orchestrator/start`: a number of cycles, or every story that is left. */
export const BatchSizeSchema = Type.Union([
  Type.Integer({ minimum: 1, maximum: OrchestratorLimits.batchSize }),
  Type.Literal('all')
])
export type BatchSize = Static<typeof BatchSizeSchema>

/** An orchestrator process started, for `batch_size` cycles or `all`. */
export const OrchestratorStartSchema = Type.Object({
  pid: SafeInteger(1),
  batch_size: Type.Union([SafeInteger(1), Type.Literal('all')])
}, open)
export type OrchestratorStart = Static<typeof OrchestratorStartSchema>

/** The orchestrator process was asked to stop, by this signal. */
export const OrchestratorStoppingSchema = Type.Object({
  pid: SafeInteger(1),
  signal: Key
}, open)
export type OrchestratorStopping = Static<typeof OrchestratorStoppingSchema>

/** The orchestrator process ended: its exit code, or the signal that ended it. */
export const OrchestratorExitSchema = Type.Object({
  pid: SafeInteger(1),
  code: Type.Union([SafeInteger(), Type.Null()]),
  signal: Type.Union([Key, Type.Null()]),
  duration_ms: Type.Number({ minimum: 0 })
}, open)
export type OrchestratorExit = Static<typeof OrchestratorExitSchema>

/** Maps each event type to its payload schema; the single table the checkers, routes and types are built from. */
export const PayloadSchemas = {
  [EventType.BATCH_START]: BatchStartSchema,
  [EventType.BATCH_WARNING]: BatchWarningSchema,
  [EventType.BATCH_END]: BatchEndSchema,
  [EventType.CYCLE_START]: CycleStartSchema,
  [EventType.CYCLE_END]: CycleEndSchema,
  [EventType.COMMAND_START]: CommandStartSchema,
  [EventType.COMMAND_PROGRESS]: CommandProgressSchema,
  [EventType.COMMAND_END]: CommandEndSchema,
  [EventType.STORY_STATUS]: StoryStatusSchema,
  [EventType.ERROR]: ErrorEventSchema,
  [EventType.CONTEXT_CREATE]: ContextEventSchema,
  [EventType.CONTEXT_REFRESH]: ContextEventSchema,
  [EventType.CONTEXT_COMPLETE]: ContextEventSchema,
  [EventType.CONTEXT_ERROR]: ContextErrorSchema,
  [EventType.CONTEXT_FRESH]: ContextFreshSchema,
  [EventType.CONTEXT_COPIED]: ContextCopiedSchema,
  [EventType.CONTEXT_COPY_FAILED]: ContextCopyFailedSchema,
  [EventType.INJECTION_EMPTY]: InjectionEmptySchema,
  [EventType.INJECTION_WARNING]: InjectionWarningSchema,
  [EventType.BACKGROUND_COMPLETE]: BackgroundCompleteSchema,
  [EventType.BACKGROUND_ERROR]: BackgroundErrorSchema,
  [EventType.CLEANUP_COMPLETE]: CleanupCompleteSchema,
  [EventType.CLEANUP_ERROR]: CleanupErrorSchema,
  [EventType.CLEANUP_FILE_MOVED]: CleanupFileMovedSchema,
  [EventType.CLEANUP_FILE_ERROR]: CleanupFileErrorSchema,
  [EventType.ORCHESTRATOR_START]: OrchestratorStartSchema,
  [EventType.ORCHESTRATOR_STOPPING]: OrchestratorStoppingSchema,
  [EventType.ORCHESTRATOR_EXIT]: OrchestratorExitSchema
} as const satisfies Record<EventTypeName, TSchema>

/** Payload type of one event type, e.g. `EventPayload<'batch:start'>`. */
export type EventPayload<T extends EventTypeName> = Static<typeof PayloadSchemas[T]>

/** Payload map keyed by event type. */
export type EventPayloads = { [T in EventTypeName]: EventPayload<T> }

/**
 * An event as an emitter sends it: `{ type, payload }` and, optionally, when it happened.
 * A `timestamp` more than `Limits.futureTimestampMs` ahead of the server's clock is refused
 * (see `validateTimestamp`); without one the server's time is used.
 */
export const EventInputSchema = Type.Object({
  type: Type.String({ maxLength: Limits.key }),
  payload: Type.Unknown(),
  timestamp: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'ms since the epoch, when the event happened' })),
  idempotencyKey: Type.Optional(Type.String({
    minLength: 1,
    maxLength: Limits.key,
    description: "The producer's name for this event, unique per event: sent again (a retry), an event whose key is stored is not stored twice"
  }))
}, closed)
export type EventInput = Static<typeof EventInputSchema>

/** The stored, broadcast form of an event. */
export const EnvelopeSchema = Type.Object({
  id: Type.Integer({ minimum: 1 }),
  type: Type.String(),
  payload: Type.Object({}, { additionalProperties: true }),
  timestamp: Type.Integer({ description: 'ms since the epoch' })
}, closed)

/** A typed envelope: `Envelope<'command:end'>` has a `CommandEnd` payload; plain `Envelope` is the union of all. */
export type Envelope<T extends EventTypeName = EventTypeName> = {
  [K in T]: Omit<Static<typeof EnvelopeSchema>, 'type' | 'payload'> & { type: K, payload: EventPayload<K> }
}[T]

/**
 * The batch row as the store returns it and `init` sends it. `max_cycles: "all"` is a batch without a
 * cycle limit (sent as `null` or `"all"`); `batch_mode` is as the producer sent it, else derived from
 * `max_cycles`. `all_done`: the batch ended because no story was left.
 */
export const BatchSchema = Type.Object({
  id: Type.Integer(),
  started_at: Type.Integer(),
  ended_at: Type.Union([Type.Integer(), Type.Null()]),
  max_cycles: Type.Union([Type.Integer(), Type.Literal('all')]),
  batch_mode: Type.Union([Type.Literal('fixed'), Type.Literal('all')]),
  cycles_completed: Type.Integer(),
  status: Type.Union([Type.Literal('running'), BatchEndStatusSchema])
})
export type Batch = Static<typeof BatchSchema>
