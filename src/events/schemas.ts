import { Type, type Static, type TSchema } from '@sinclair/typebox'

/**
 * The event catalogue: one TypeBox schema per orchestrator event type.
 * Every payload type in the project is derived from these with `Static<>`.
 */

/** Upper bounds on what one emitter can make us store and fan out. */
export const Limits = {
  key: 256,
  message: 64 * 1024,
  listItems: 1000,
  /** Objects and arrays nested in one another, the payload itself counted: recursion over stored JSON stays shallow. */
  depth: 32
} as const

const Key = Type.String({ minLength: 1, maxLength: Limits.key })
/** Integers that JSON, JavaScript and SQLite all hold exactly: a larger one (1e20) reaches SQLite as a float and fails there. */
const SafeInteger = (minimum: number = Number.MIN_SAFE_INTEGER) => Type.Integer({ minimum, maximum: Number.MAX_SAFE_INTEGER })
const Status = Type.String({ minLength: 1, maxLength: Limits.key })
const Message = Type.String({ maxLength: Limits.message })
const KeyList = Type.Array(Type.String({ maxLength: Limits.key }), { maxItems: Limits.listItems })
/** Free-form objects (metrics, error context) are open but bounded in size by the ingest body limit and `maxProperties`. */
const OpenObject = Type.Object({}, { additionalProperties: true, maxProperties: 256 })

const closed = { additionalProperties: false } as const

export const EventType = {
  BATCH_START: 'batch:start',
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
  ORCHESTRATOR_START: 'orchestrator:start',
  ORCHESTRATOR_STOPPING: 'orchestrator:stopping',
  ORCHESTRATOR_EXIT: 'orchestrator:exit'
} as const

export type EventTypeName = typeof EventType[keyof typeof EventType]

export const BatchStartSchema = Type.Object({
  batch_id: SafeInteger(0),
  max_cycles: Type.Union([SafeInteger(1), Type.Literal('all')])
}, closed)
export type BatchStart = Static<typeof BatchStartSchema>

export const BatchEndSchema = Type.Object({
  batch_id: SafeInteger(0),
  cycles_completed: SafeInteger(0),
  status: Type.Union([Type.Literal('completed'), Type.Literal('stopped'), Type.Literal('error')])
}, closed)
export type BatchEnd = Static<typeof BatchEndSchema>

export const CycleStartSchema = Type.Object({
  cycle_number: SafeInteger(1),
  story_keys: KeyList
}, closed)
export type CycleStart = Static<typeof CycleStartSchema>

export const CycleEndSchema = Type.Object({
  cycle_number: SafeInteger(1),
  completed_stories: KeyList
}, closed)
export type CycleEnd = Static<typeof CycleEndSchema>

/** The three keys that name one command run; every command:* event carries them. */
const commandKeys = {
  story_key: Key,
  command: Key,
  task_id: Key
}

export const CommandStartSchema = Type.Object(commandKeys, closed)
export type CommandStart = Static<typeof CommandStartSchema>

export const CommandProgressSchema = Type.Object({
  ...commandKeys,
  message: Message
}, closed)
export type CommandProgress = Static<typeof CommandProgressSchema>

export const CommandMetricsSchema = Type.Object({
  duration_ms: Type.Optional(Type.Number({ minimum: 0 })),
  tokens: Type.Optional(Type.Number({ minimum: 0 }))
}, { additionalProperties: Type.Number(), maxProperties: 64 })
export type CommandMetrics = Static<typeof CommandMetricsSchema>

export const CommandEndSchema = Type.Object({
  ...commandKeys,
  status: Status,
  metrics: Type.Optional(CommandMetricsSchema)
}, closed)
export type CommandEnd = Static<typeof CommandEndSchema>

export const StoryStatusSchema = Type.Object({
  story_key: Key,
  old_status: Type.Union([Status, Type.Null()]),
  new_status: Status
}, closed)
export type StoryStatus = Static<typeof StoryStatusSchema>

export const ErrorEventSchema = Type.Object({
  type: Key,
  message: Message,
  context: Type.Optional(OpenObject)
}, closed)
export type ErrorEvent = Static<typeof ErrorEventSchema>

export const ContextEventSchema = Type.Object({
  status: Status,
  task_id: Type.Optional(Type.Union([SafeInteger(), Key])),
  message: Type.Optional(Message)
}, closed)
export type ContextEvent = Static<typeof ContextEventSchema>

// The orchestrator the service supervises (src/plugins/orchestrator.ts): emitted by the service
// itself, never by the orchestrator, so a dashboard sees a start, a stop request and an exit even
// from an orchestrator that crashed before it reported anything.

/** Upper bounds of orchestrator supervision: the batch size a start may ask for, and the output kept. */
export const OrchestratorLimits = {
  batchSize: 1000,
  outputLines: 1000,
  outputLineBytes: 4 * 1024
} as const

/** `{batch_size}` of a start request: a number of cycles, or every story that is left. */
export const BatchSizeSchema = Type.Union([
  Type.Integer({ minimum: 1, maximum: OrchestratorLimits.batchSize }),
  Type.Literal('all')
])
export type BatchSize = Static<typeof BatchSizeSchema>

const Pid = SafeInteger(1)
const SignalName = Type.String({ minLength: 1, maxLength: 32 })

export const OrchestratorStartSchema = Type.Object({
  pid: Pid,
  batch_size: BatchSizeSchema
}, closed)
export type OrchestratorStart = Static<typeof OrchestratorStartSchema>

export const OrchestratorStoppingSchema = Type.Object({
  pid: Pid,
  signal: SignalName
}, closed)
export type OrchestratorStopping = Static<typeof OrchestratorStoppingSchema>

export const OrchestratorExitSchema = Type.Object({
  pid: Pid,
  code: Type.Union([SafeInteger(), Type.Null()]),
  signal: Type.Union([SignalName, Type.Null()]),
  duration_ms: Type.Number({ minimum: 0 })
}, closed)
export type OrchestratorExit = Static<typeof OrchestratorExitSchema>

/** Maps each event type to its payload schema; the single table the checkers, routes and types are built from. */
export const PayloadSchemas = {
  [EventType.BATCH_START]: BatchStartSchema,
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
  [EventType.ORCHESTRATOR_START]: OrchestratorStartSchema,
  [EventType.ORCHESTRATOR_STOPPING]: OrchestratorStoppingSchema,
  [EventType.ORCHESTRATOR_EXIT]: OrchestratorExitSchema
} as const satisfies Record<EventTypeName, TSchema>

/** Payload type of one event type, e.g. `EventPayload<'batch:start'>`. */
export type EventPayload<T extends EventTypeName> = Static<typeof PayloadSchemas[T]>

/** Payload map keyed by event type. */
export type EventPayloads = { [T in EventTypeName]: EventPayload<T> }

/** An event as an emitter sends it: `{ type, payload }`. */
export const EventInputSchema = Type.Object({
  type: Type.String({ maxLength: Limits.key }),
  payload: Type.Unknown()
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

/** The batch row as the store returns it and `init` sends it. */
export const BatchSchema = Type.Object({
  id: Type.Integer(),
  started_at: Type.Integer(),
  ended_at: Type.Union([Type.Integer(), Type.Null()]),
  max_cycles: Type.Union([Type.Integer(), Type.Literal('all')]),
  cycles_completed: Type.Integer(),
  status: Type.Union([Type.Literal('running'), Type.Literal('completed'), Type.Literal('stopped'), Type.Literal('error')])
})
export type Batch = Static<typeof BatchSchema>
