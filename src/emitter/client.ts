import { randomUUID } from 'node:crypto'
import type { Envelope, EventPayload, EventTypeName } from '../events/schemas.ts'
import { RequestLimits } from '../events/protocol.ts'

/**
 * A small typed client for `POST /api/events`, for orchestrators written in TypeScript.
 * Uses the global `fetch`; no dependencies, so an orchestrator can import this file alone.
 */

/** One event as an emitter sends it, with the payload type tied to the event type. */
export type TypedEventInput = { [T in EventTypeName]: { type: T, payload: EventPayload<T> } }[EventTypeName]

/** An event whose type is only known at run time (read from a file or the command line). */
export interface UncheckedEventInput {
  type: string
  payload: unknown
  /** The producer's unique name for the event; the client names each event itself when this is absent. */
  idempotencyKey?: string
}

/** A field the server rejected: JSON pointer into the request body and what is wrong there. */
export interface ClientErrorDetail {
  path: string
  message: string
}

/**
 * A request the service answered with an error (`statusCode`, `code`, `details` as the server sent them),
 * or a request that never got an answer (`statusCode` undefined, `code` the network error code).
 */
export class EventClientError extends Error {
  readonly statusCode: number | undefined
  readonly code: string | undefined
  readonly details: ClientErrorDetail[]

  constructor (message: string, fields: { statusCode?: number, code?: string, details?: ClientErrorDetail[], cause?: unknown } = {}) {
    super(message, fields.cause === undefined ? undefined : { cause: fields.cause })
    this.name = 'EventClientError'
    this.statusCode = fields.statusCode
    this.code = fields.code
    this.details = fields.details ?? []
  }

  /** The message with every rejected field on its own line, as a CLI prints it. */
  describe (): string {
    // A network failure's code is already part of its message.
    const head = this.code === undefined || this.statusCode === undefined ? this.message : `${this.code}: ${this.message}`
    return [head, ...this.details.map((detail) => `  ${detail.path}: ${detail.message}`)].join('\n')
  }
}

export interface EventClientOptions {
  /** Base URL of the service including any prefix, e.g. `http://127.0.0.1:8080` or `https://host/sprint`. */
  url: string
  /** Sent as `Authorization: Bearer <token>` when the service has an ingest token. */
  token?: string | undefined
  /** Retries after "connection refused" (the service is not up yet) or a 503 that stored nothing. Default 6. */
  retries?: number
  /** First backoff delay; it doubles on every retry. Default 100 ms. */
  retryDelayMs?: number
  /** Upper bound of one backoff delay. Default 2000 ms. */
  maxRetryDelayMs?: number
  /** Per-request timeout. Default 30 s. */
  timeoutMs?: number
  /** A `fetch` implementation; the global one by default. */
  fetch?: typeof fetch
}

/** Node's fetch reports a refused connection as `TypeError('fetch failed')` with the socket error as `cause`. */
function isConnectionRefused (error: unknown): boolean {
  const seen = new Set<unknown>()
  let current: unknown = error
  while (typeof current === 'object' && current !== null && !seen.has(current)) {
    seen.add(current)
    const { code, errors, cause } = current as { code?: unknown, errors?: unknown, cause?: unknown }
    if (code === 'ECONNREFUSED') return true
    // Happy-eyeballs connects (localhost → ::1 and 127.0.0.1) fail with an AggregateError of both attempts.
    if (Array.isArray(errors) && errors.length > 0 && errors.every((inner) => isConnectionRefused(inner))) return true
    current = cause
  }
  return false
}

/**
 * 503 answers that say nothing was stored (the broker or the store is down for a while): a retry cannot
 * store an event twice.
 */
const RETRIED_CODES = new Set(['SPRINT_BROKER_UNAVAILABLE', 'SPRINT_STORAGE_UNAVAILABLE'])

/** The connection broke after the request went out: the service may have stored the events, or not. */
const LOST_CONNECTION_CODES = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET'])

function networkErrorCode (error: unknown): string | undefined {
  let current: unknown = error
  for (let depth = 0; depth < 5 && typeof current === 'object' && current !== null; depth++) {
    const { code, cause } = current as { code?: unknown, cause?: unknown }
    if (typeof code === 'string') return code
    current = cause
  }
  return undefined
}

function isDetailList (value: unknown): value is ClientErrorDetail[] {
  return Array.isArray(value) && value.every((detail) => typeof detail === 'object' && detail !== null &&
    typeof (detail as ClientErrorDetail).path === 'string' && typeof (detail as ClientErrorDetail).message === 'string')
}

/**
 * Creates a client for a running sprint-dashboard service.
 *
 * Every event gets an `idempotencyKey` (unless it has one), so sending it again cannot store it twice.
 * Retried with exponential backoff: "connection refused", a connection lost before the whole answer came
 * (`ECONNRESET`, `EPIPE`, `UND_ERR_SOCKET`), and a 503 `SPRINT_BROKER_UNAVAILABLE` or
 * `SPRINT_STORAGE_UNAVAILABLE`. Every other failure, a timeout included, is thrown as `EventClientError`.
 *
 * @example
 * const client = createEventClient({ url: 'http://127.0.0.1:8080', token: process.env.SPRINT_INGEST_TOKEN })
 * const envelope = await client.emit('command:start', { story_key: '2a-1', command: 'dev-story', task_id: 'implement' })
 * console.log(envelope.id)
 */
export function createEventClient (options: EventClientOptions) {
  const endpoint = new URL('api/events', options.url.endsWith('/') ? options.url : options.url + '/')
  const retries = options.retries ?? 6
  const retryDelayMs = options.retryDelayMs ?? 100
  const maxRetryDelayMs = options.maxRetryDelayMs ?? 2000
  const timeoutMs = options.timeoutMs ?? 30_000
  const doFetch = options.fetch ?? fetch
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (options.token !== undefined && options.token !== '') headers.authorization = `Bearer ${options.token}`

  // Every event is named (this client's random id and a counter) before its first attempt, so a retry after
  // a 503 whose outcome is unknown (the Redis connection dropped with the append in flight) is stored once.
  const producer = randomUUID()
  let named = 0
  const withKey = (event: object): object =>
    'idempotencyKey' in event && event.idempotencyKey !== undefined ? event : { ...event, idempotencyKey: `${producer}:${++named}` }

  async function post (body: object): Promise<Envelope[]> {
    const json = JSON.stringify(Array.isArray(body) ? body.map(withKey) : withKey(body))
    for (let attempt = 0; ; attempt++) {
      let response: Response
      let text: string
      try {
        response = await doFetch(endpoint, { method: 'POST', headers, body: json, signal: AbortSignal.timeout(timeoutMs) })
        // Read here: a connection that breaks while the answer arrives is as lost as one that broke before it.
        text = await response.text()
      } catch (error) {
        // Refused: nothing was sent. Lost: the answer was; the events' idempotency keys make sending them again safe.
        if (attempt < retries && (isConnectionRefused(error) || LOST_CONNECTION_CODES.has(networkErrorCode(error) ?? ''))) {
          await new Promise((resolve) => setTimeout(resolve, Math.min(maxRetryDelayMs, retryDelayMs * 2 ** attempt)))
          continue
        }
        const code = networkErrorCode(error)
        const reason = error instanceof Error && error.name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : code ?? String(error)
        throw new EventClientError(`Could not reach the sprint dashboard at ${endpoint.href}: ${reason}`, { ...(code === undefined ? {} : { code }), cause: error })
      }
      let answer: unknown
      try {
        answer = text === '' ? undefined : JSON.parse(text)
      } catch {
        answer = undefined
      }
      if (response.status === 201 && typeof answer === 'object' && answer !== null && Array.isArray((answer as { events?: unknown }).events)) {
        return (answer as { events: Envelope[] }).events
      }
      const fields = (typeof answer === 'object' && answer !== null ? answer : {}) as { message?: unknown, code?: unknown, details?: unknown }
      if (response.status === 503 && RETRIED_CODES.has(String(fields.code)) && attempt < retries) {
        await new Promise((resolve) => setTimeout(resolve, Math.min(maxRetryDelayMs, retryDelayMs * 2 ** attempt)))
        continue
      }
      const message = typeof fields.message === 'string' ? fields.message : `HTTP ${response.status} ${response.statusText || text.slice(0, 200)}`.trim()
      throw new EventClientError(message, {
        statusCode: response.status,
        ...(typeof fields.code === 'string' ? { code: fields.code } : {}),
        ...(isDetailList(fields.details) ? { details: fields.details } : {})
      })
    }
  }

  return {
    /** The `POST /api/events` URL this client sends to. */
    endpoint: endpoint.href,

    /**
     * Sends one event; resolves with its stored envelope (id and timestamp assigned by the service).
     * A payload that does not match the event type does not compile.
     */
    async emit<T extends EventTypeName> (type: T, payload: EventPayload<T>): Promise<Envelope<T>> {
      const [envelope] = await post({ type, payload })
      return envelope as Envelope<T>
    },

    /** Sends up to 1,000 events in one request; all are stored or none (`EventClientError` with `details`). */
    async emitMany (events: readonly TypedEventInput[]): Promise<Envelope[]> {
      return await post(events)
    },

    /** Like `emitMany` for events whose types are only known at run time; the service validates them. */
    async emitUnchecked (events: readonly UncheckedEventInput[]): Promise<Envelope[]> {
      return await post(events)
    }
  }
}

export type EventClient = ReturnType<typeof createEventClient>

/** What the client's `idempotencyKey` adds to an event's JSON: `,"idempotencyKey":"<uuid>:<counter>"`, counter up to 16 digits. */
const KEY_BYTES = 80

/**
 * Splits events into requests the service accepts: at most `maxEvents` each and, with some headroom
 * under the body limit, at most `maxBytes` of JSON. An event too big on its own gets a request of its
 * own (the service will answer 413, which is the right message for it).
 */
export function chunkEvents<E> (events: readonly E[], maxEvents: number = RequestLimits.eventsPerRequest, maxBytes: number = RequestLimits.ingestBodyBytes - 64 * 1024 - maxEvents * KEY_BYTES): E[][] {
  const chunks: E[][] = []
  let current: E[] = []
  let bytes = 2
  for (const event of events) {
    const size = Buffer.byteLength(JSON.stringify(event)) + 1
    if (current.length > 0 && (current.length >= maxEvents || bytes + size > maxBytes)) {
      chunks.push(current)
      current = []
      bytes = 2
    }
    current.push(event)
    bytes += size
  }
  if (current.length > 0) chunks.push(current)
  return chunks
}

export interface EventSenderOptions {
  /** Called for a request that failed for good; the sender goes on with the next events. */
  onError?: (error: EventClientError, events: UncheckedEventInput[]) => void
}

/**
 * An in-order send queue for a stream of events (agent output, a tailed log): `enqueue` never blocks,
 * one request is in flight at a time, and whatever queued up meanwhile goes in the next request,
 * so a burst costs a few requests rather than one per event and order is kept.
 *
 * @example
 * const sender = createEventSender(client, { onError: (error) => console.error(error.describe()) })
 * sender.enqueue({ type: 'command:progress', payload })
 * await sender.drain()
 */
export function createEventSender (client: EventClient, options: EventSenderOptions = {}) {
  let queue: UncheckedEventInput[] = []
  let running: Promise<void> | null = null
  let sent = 0
  let failed = 0

  async function run (): Promise<void> {
    while (queue.length > 0) {
      // Take everything queued so far; events enqueued while these are in flight form the next round.
      const round = queue
      queue = []
      for (const chunk of chunkEvents(round)) {
        try {
          const envelopes = await client.emitUnchecked(chunk)
          sent += envelopes.length
        } catch (error) {
          failed += chunk.length
          const clientError = error instanceof EventClientError ? error : new EventClientError(String(error), { cause: error })
          options.onError?.(clientError, chunk)
        }
      }
    }
  }

  function start (): void {
    running = run().finally(() => {
      running = null
      // An enqueue between the loop's last check and this callback found `running` still set.
      if (queue.length > 0) start()
    })
  }

  return {
    enqueue (...events: UncheckedEventInput[]): void {
      queue.push(...events)
      if (running === null) start()
    },

    /** Resolves once everything enqueued so far was sent (or reported to `onError`). */
    async drain (): Promise<void> {
      for (let current = running; current !== null; current = running) await current
    },

    get sent (): number { return sent },
    get failed (): number { return failed }
  }
}

export type EventSender = ReturnType<typeof createEventSender>
