import { Type, type Static } from '@sinclair/typebox'
import { BatchSchema, EnvelopeSchema } from './schemas.ts'

/**
 * The wire protocol in one place: what the server sends on `/ws` and what it
 * accepts there, the close codes, and the request limits every producer must
 * respect. The server, the typed client (`src/emitter/client.ts`) and the
 * dashboard (`dashboard/types.js`) all take their shapes and numbers from here.
 *
 * Server → client, one JSON text frame each (or, for `?batch=1` clients,
 * several envelopes in one frame separated by `\n`):
 * - `init` once, first: the active batch and the events to show or replay;
 * - an envelope (`{ id, type, payload, timestamp }`) per stored event, ids increasing;
 * - a notice (`{ type, payload }`, never an `id`): transient state such as a
 *   broker outage, shown by pages but never taken as a resume point;
 * - `pong` and `error` answers to the client's own messages.
 * Client → server: only `{"type":"ping"}`.
 */

/** Close codes the service sends (RFC 6455 §7.4.1), and the one the page uses on a dead link. */
export const CloseCode = {
  /** Server shutting down: reconnect elsewhere or later with `since`. */
  GOING_AWAY: 1001,
  /** A client that floods the server with messages. */
  POLICY_VIOLATION: 1008,
  /** A client frame above `RequestLimits.clientFrameBytes` (sent by ws itself). */
  MESSAGE_TOO_BIG: 1009,
  /** The server failed to set up the connection. */
  UNEXPECTED_CONDITION: 1011,
  /**
   * Scale-out: the Redis stream went back (restarted empty or replaced). Reconnect with `since`: the
   * answer is a `reset`, as for a replaced database.
   */
  LOG_RESET: 1012,
  /** Slow consumer: the client fell too far behind; it resumes with `since`. */
  TRY_AGAIN_LATER: 1013,
  /** Closed by the page itself when the server's heartbeat went silent. */
  CLIENT_HEARTBEAT_TIMEOUT: 4000
} as const

/** What one request or message may carry. */
export const RequestLimits = {
  /** Events in one `POST /api/events` body or one `emitMany` call. */
  eventsPerRequest: 1000,
  /** Bytes of one `POST /api/events` body; beyond it the answer is 413. */
  ingestBodyBytes: 1024 * 1024,
  /** Bytes of one client WebSocket frame; one more closes the connection with 1009. */
  clientFrameBytes: 65_536,
  /** Client messages (and pings) per second answered; the rest are ignored. */
  clientMessagesPerSecond: 20,
  /** Client messages per second beyond which the client is disconnected (1008). */
  clientFloodPerSecond: 500,
  /** Digits of a `since` query value (an event id). */
  sinceDigits: 15
} as const

/**
 * Bounds on the files the service reads from the artifacts and dashboard directories, which agents
 * and people write: every read is bounded in size and time, and nothing but a regular file is opened
 * (see src/lib/safe-read.ts and docs/durability.md, "Limits"). Errors name the limit, e.g.
 * `FileLimits.sprintStatusBytes`.
 */
export const FileLimits = {
  /** Bytes of `sprint-status.yaml` (about 28,000 stories); beyond it GET /api/sprint-status answers 413 and the watcher keeps its last good state. */
  sprintStatusBytes: 1024 * 1024,
  /** Bytes of JSON `sprint-status.yaml` may expand to through YAML aliases; beyond it, 413. */
  sprintStatusExpandedBytes: 8 * 1024 * 1024,
  /** Time to parse `sprint-status.yaml` (in a worker thread when large); beyond it, 503 and the parse is stopped. */
  sprintStatusParseMs: 5000,
  /** `sprint-status.yaml` up to this size, without aliases, is parsed on the event loop (a few ms); larger ones in a worker thread. */
  sprintStatusInlineParseBytes: 64 * 1024,
  /** Bytes read from the start of each story file for its description; the rest of the file is not read. */
  storyFileHeadBytes: 64 * 1024,
  /** Story files described by one `GET /story-descriptions.json` (the first ones by name); the answer says when more were left out. */
  storyFiles: 2000,
  /** Bytes of one whitelisted data file (`/sprint-status.yaml`, `/orchestrator.md`, ...); beyond it, 413. */
  dataFileBytes: 16 * 1024 * 1024,
  /** Bytes of one dashboard page or asset; a larger file is not served (404). */
  dashboardFileBytes: 16 * 1024 * 1024,
  /** Time to open and read one file; beyond it, 503 (a stalled network file system). */
  readTimeoutMs: 5000,
  /** `story:status` events emitted for one change of `sprint-status.yaml`; the rest are summed up in one `error` event (`sprint_status_bulk_change`). */
  statusEventsPerChange: 200
} as const

/** The `init` message's payload: what a page draws first, and where its cursor starts. */
export const InitPayloadSchema = Type.Object({
  batch: Type.Union([BatchSchema, Type.Null()], { description: 'The running batch, or the last one' }),
  events: Type.Array(EnvelopeSchema, { description: 'Recent events, or the events after `since` when resuming' }),
  resumed: Type.Boolean({ description: '`events` continue exactly after the `since` the client sent' }),
  reset: Type.Boolean({ description: 'The client\'s `since` cannot be continued: drop local state, start from `events`' }),
  error: Type.Optional(Type.String({ description: 'Why a `since` was refused' }))
})
export type InitPayload = Static<typeof InitPayloadSchema>

export const InitMessageSchema = Type.Object({
  type: Type.Literal('init'),
  payload: InitPayloadSchema
})
export type InitMessage = Static<typeof InitMessageSchema>

/**
 * A transient message to every page: it has no `id`, is not stored, and never
 * moves a page's resume point (`events.broadcast` sends these).
 */
export const NoticeSchema = Type.Object({
  type: Type.String({ minLength: 1, maxLength: 64 }),
  payload: Type.Object({}, { additionalProperties: true })
}, { additionalProperties: false })
export type Notice = Static<typeof NoticeSchema>

/**
 * Scale-out only: the state of the event broker (Redis). `down`: new events cannot be taken (emits get
 * 503) but the page stays connected; `up` once it is back, with nothing missed.
 */
export const BrokerStateSchema = Type.Union([Type.Literal('up'), Type.Literal('down')])
export type BrokerState = Static<typeof BrokerStateSchema>

/** Scale-out only: the notice every page gets when the broker's state changes (see `BrokerStateSchema`). */
export const BrokerStatusNoticeSchema = Type.Object({
  type: Type.Literal('status'),
  payload: Type.Object({ broker: BrokerStateSchema })
})
export type BrokerStatusNotice = Static<typeof BrokerStatusNoticeSchema>

/** The answer to a client message the server does not understand. */
export const BadRequestMessageSchema = Type.Object({
  type: Type.Literal('error'),
  payload: Type.Object({ type: Type.Literal('bad_request'), message: Type.String() })
})
export type BadRequestMessage = Static<typeof BadRequestMessageSchema>

/** The only message a client sends, answered with `{"type":"pong"}`. */
export const PingMessageSchema = Type.Object({ type: Type.Literal('ping') })
export const PongMessageSchema = Type.Object({ type: Type.Literal('pong') })

export const PONG_MESSAGE = '{"type":"pong"}'

/** `/ws` query string. */
export const WsQuerySchema = Type.Object({
  since: Type.Optional(Type.String({ description: 'Last event id the client applied; the init replays what came after' })),
  batch: Type.Optional(Type.String({ description: '"1" to accept several newline-separated events per frame' }))
})
export type WsQuery = Static<typeof WsQuerySchema>

/** A stored event as the store hands it over: the payload is still JSON text. */
export interface StoredEventRow {
  id: number
  type: string
  payload: string
  timestamp: number
}

/** The JSON text of an envelope built from a stored row, without parsing the payload. */
export function envelopeJson (row: StoredEventRow): string {
  return `{"id":${row.id},"type":${JSON.stringify(row.type)},"payload":${row.payload},"timestamp":${row.timestamp}}`
}

/** The JSON text of an `init` message, built from stored rows without re-serialising their payloads. */
export function initMessageJson (batch: InitPayload['batch'], rows: readonly StoredEventRow[], resume: { resumed: boolean, reset: boolean, error?: string | undefined }): string {
  const errorPart = resume.error === undefined ? '' : `,"error":${JSON.stringify(resume.error)}`
  return `{"type":"init","payload":{"batch":${JSON.stringify(batch)},"events":[${rows.map(envelopeJson).join(',')}],"resumed":${resume.resumed},"reset":${resume.reset}${errorPart}}}`
}

export function noticeJson (notice: Notice): string {
  return JSON.stringify({ type: notice.type, payload: notice.payload })
}

export function badRequestJson (message: string): string {
  return JSON.stringify({ type: 'error', payload: { type: 'bad_request', message } } satisfies BadRequestMessage)
}

const sincePattern = new RegExp(`^\\d{1,${RequestLimits.sinceDigits}}$`)

/** A `since` the server can replay from, or why it cannot. */
export function parseSince (raw: string): { since: number } | { error: string } {
  if (!sincePattern.test(raw)) {
    return { error: `Query parameter "since" must be a non-negative integer event id, got ${JSON.stringify(raw.slice(0, 64))}` }
  }
  return { since: Number(raw) }
}
