import fp from 'fastify-plugin'
import type { FastifyBaseLogger, FastifyPluginAsync } from 'fastify'
import { WebSocket } from 'ws'
import type { Envelope, EventInput, EventPayload, EventTypeName } from '../events/schemas.ts'
import { describeInvalidEvent, validateEventInput } from '../events/validate.ts'
import { InvalidEventError, TooManyEventsError, withDetails, type ErrorDetail } from '../errors.ts'
import { envelopeJson, type EventRow, type SprintStore } from '../lib/sqlite-store.ts'
import type { ResolvedOptions } from '../options.ts'
import { sendFramed, textFrame } from '../lib/ws-frames.ts'

/** Close codes the service sends, from RFC 6455 §7.4.1. */
export const CloseCode = {
  GOING_AWAY: 1001,
  UNEXPECTED_CONDITION: 1011,
  TRY_AGAIN_LATER: 1013
} as const

/** The most events one `emitMany` call (and so one ingest request) may carry. */
export const MAX_EVENTS_PER_CALL = 1000

/** How long a socket closed as a slow consumer gets to finish the closing handshake before it is destroyed. */
const SLOW_CLOSE_GRACE_MS = 5000
/** The heartbeat's timer period: each round's pings are spread over steps of this length. */
const HEARTBEAT_STEP_MS = 100
/** How long `app.close()` waits for clients to answer the 1001 close frame before destroying their sockets. */
const SHUTDOWN_GRACE_MS = 2000
/**
 * When a batched write carried more than one event (events arrive faster than
 * writes go out), the next batched write waits this share of the time that
 * write took, so each frame carries what piled up meanwhile: fewer, larger
 * writes, and the cost per event falls as load rises. A write of one event
 * sets no wait, so at moderate load batched clients get events as soon as
 * plain ones. Measured with `npm run bench -- --clients 1000 --rates 200` (or
 * `45,200`) `--servers service --no-search`, 2 rounds each, batched clients at
 * 200 ev/s: no wait 3.8 µs/msg and p99 51-52 ms; 0.25 2.9 µs and 46 ms; 0.5
 * 2.6 µs and 45 ms. Waiting after every write, even of one event (0.25, in a
 * full run), raised batched p99 at 45 ev/s from ~33 to ~49 ms.
 */
const BATCHED_WAIT_FACTOR = 0.5

export type EventListener = (envelope: Envelope) => void

interface Client {
  socket: WebSocket
  /** The client asked for several events per frame (`?batch=1`). */
  batched: boolean
  lastPongAt: number
}

/** What a connecting client asks for; see `connect`. */
export interface ConnectRequest {
  /** Raw `since` query value: the last event id the client applied. */
  since?: string | undefined
  batched?: boolean
}

/** The `init` message's payload. */
export interface InitPayload {
  batch: ReturnType<SprintStore['getActiveBatch']>
  events: Envelope[]
  resumed: boolean
  reset: boolean
  error?: string
}

type EventsOptions = Pick<ResolvedOptions, 'recentEvents' | 'retainEvents' | 'maxReplay' | 'maxBufferedBytes' |
'heartbeatIntervalMs' | 'heartbeatTimeoutMs'>

/** A `since` the server can replay from, or why it cannot. */
function parseSince (raw: string): { since: number } | { error: string } {
  if (!/^\d{1,15}$/.test(raw)) {
    return { error: `Query parameter "since" must be a non-negative integer event id, got ${JSON.stringify(raw.slice(0, 64))}` }
  }
  return { since: Number(raw) }
}

/**
 * The broadcaster: validates, stores and fans out events to every connected
 * WebSocket client, and keeps the client set healthy (heartbeat, slow
 * consumers, shutdown). Decorated as `fastify.events`.
 *
 * Ordering and durability: `emit` validates, appends (ids in call order) and
 * returns synchronously; the events of one event-loop turn are committed in one
 * transaction at the end of the turn and only then written to the sockets, in
 * id order: to plain clients at once, to batched clients with the next batched
 * write (see BATCHED_WAIT_FACTOR). `connect` commits and sends what is pending
 * before it takes its snapshot, so a new client sees exactly the events after
 * its snapshot.
 */
export function createEvents (store: SprintStore, options: EventsOptions, log: FastifyBaseLogger) {
  const plainClients = new Set<Client>()
  const batchedClients = new Set<Client>()
  const setOf = (client: Client): Set<Client> => client.batched ? batchedClients : plainClients
  /** Events already sent to plain clients and waiting for the next batched write, oldest first. */
  let batchedPending: string[] = []
  let batchedTimer: NodeJS.Timeout | null = null
  /** `performance.now()` before which the next batched write does not start. */
  let batchedNotBefore = 0
  const listeners = new Set<EventListener>()
  /** Envelopes (as JSON) stored in this turn's open transaction; sent to sockets once it commits. */
  let uncommitted: string[] = []
  let commitScheduled: NodeJS.Immediate | null = null
  const slowCloseTimers = new Set<NodeJS.Timeout>()
  /**
   * The `init` of a client that is not resuming, encoded and framed once and
   * shared by every such connect until the stored events change: a connection
   * storm then costs one SQLite read, not one per client.
   */
  let freshInit: { payload: Buffer, framed: Buffer } | null = null

  function remove (client: Client): void {
    setOf(client).delete(client)
  }

  function closeSlowConsumer (client: Client): void {
    remove(client)
    log.warn({ bufferedAmount: client.socket.bufferedAmount }, 'closing slow WebSocket consumer')
    // The close frame queues behind what is already buffered, so a client that
    // resumes reading gets everything it was sent, then 1013, then resumes with `since`.
    client.socket.close(CloseCode.TRY_AGAIN_LATER, 'slow consumer')
    const timer = setTimeout(() => {
      slowCloseTimers.delete(timer)
      client.socket.terminate()
    }, SLOW_CLOSE_GRACE_MS)
    slowCloseTimers.add(timer)
    client.socket.once('close', () => {
      clearTimeout(timer)
      slowCloseTimers.delete(timer)
    })
  }

  /**
   * Writes events to every client of one kind that is open and keeping up:
   * plain clients one frame per event, batched clients all of them in one
   * frame. Framed once, when the first client that needs it comes up; every
   * socket then gets the same bytes in one write.
   */
  function fanOut (clients: Set<Client>, jsons: readonly string[], oneFrame: boolean): void {
    if (clients.size === 0 || jsons.length === 0) return
    let framing: { framed: Buffer, payloads: Buffer[] } | undefined
    const frames = (): { framed: Buffer, payloads: Buffer[] } => {
      if (framing !== undefined) return framing
      if (oneFrame && jsons.length > 1) {
        const ndjson = Buffer.from(jsons.join('\n'))
        return (framing = { framed: textFrame(ndjson), payloads: [ndjson] })
      }
      const payloads = jsons.map(json => Buffer.from(json))
      return (framing = { framed: Buffer.concat(payloads.map(textFrame)), payloads })
    }
    for (const client of clients) {
      const socket = client.socket
      if (socket.readyState !== WebSocket.OPEN) {
        remove(client)
        continue
      }
      if (socket.bufferedAmount > options.maxBufferedBytes) {
        closeSlowConsumer(client)
        continue
      }
      try {
        // Not awaited: a write completes when the kernel takes the bytes, and a
        // slow socket must never hold up the others.
        const { framed, payloads } = frames()
        sendFramed(socket, framed, payloads)
      } catch (err) {
        // Whatever broke the write, this client has now missed events: drop the connection
        // so that it reconnects and resumes with `since`, rather than stay open and silent.
        log.warn({ err }, 'WebSocket send failed; terminating the client so that it resumes')
        remove(client)
        socket.terminate()
      }
    }
  }

  /** Sends events to plain clients now and to batched clients with the next batched write, in order. */
  function send (jsons: readonly string[]): void {
    if (jsons.length === 0) return
    fanOut(plainClients, jsons, false)
    // With no batched client nothing waits: one that connects later starts from its init.
    if (batchedClients.size === 0) return
    for (const json of jsons) batchedPending.push(json)
    if (batchedTimer !== null) return
    const wait = batchedNotBefore - performance.now()
    if (wait > 0) batchedTimer = setTimeout(writeBatched, wait)
    else writeBatched()
  }

  /** Writes everything pending to the batched clients, one frame each, and sets when the next write may start. */
  function writeBatched (): void {
    if (batchedTimer !== null) {
      clearTimeout(batchedTimer)
      batchedTimer = null
    }
    if (batchedPending.length === 0) return
    const jsons = batchedPending
    batchedPending = []
    const started = performance.now()
    fanOut(batchedClients, jsons, true)
    const ended = performance.now()
    batchedNotBefore = jsons.length > 1 ? ended + BATCHED_WAIT_FACTOR * (ended - started) : 0
  }

  /** Sends committed events: the cached init no longer shows the newest ones. */
  function publish (jsons: readonly string[]): void {
    if (jsons.length > 0) freshInit = null
    send(jsons)
  }

  /**
   * Commits the turn's transaction, then sends its events. Sockets never see an
   * event before it is durable, so a client's last id always survives a crash.
   */
  function commitAndPublish (): void {
    if (commitScheduled !== null) {
      clearImmediate(commitScheduled)
      commitScheduled = null
    }
    const jsons = uncommitted
    uncommitted = []
    try {
      store.commit()
    } catch (err) {
      // Rolled back: these events are gone, and no client or caller was told they exist beyond the
      // envelope emit() returned in this same turn.
      log.error({ err, lost: jsons.length }, 'committing events failed')
      if (store.db.inTransaction) store.db.exec('ROLLBACK')
      return
    }
    publish(jsons)
  }

  function notify (envelope: Envelope): void {
    for (const listener of listeners) {
      try {
        listener(envelope)
      } catch (err) {
        // A listener is someone else's code: its failure must not stop the stream.
        log.error({ err, eventId: envelope.id }, 'event listener threw')
      }
    }
  }

  function invalid (type: unknown, details: ErrorDetail[]): Error {
    return withDetails(new InvalidEventError(describeInvalidEvent(type, details)), details)
  }

  // Pruning runs in small chunks off the emit path so that a large backlog never blocks the loop.
  let pruneScheduled = false
  let pruneTimer: NodeJS.Immediate | null = null
  const PRUNE_EVERY = Math.max(1, Math.min(1000, Math.floor(options.retainEvents / 10)))
  const PRUNE_CHUNK = 5000
  let pruneCheckedAt = 0
  function schedulePrune (lastId: number): void {
    if (pruneScheduled || lastId - pruneCheckedAt < PRUNE_EVERY) return
    pruneCheckedAt = lastId
    pruneScheduled = true
    const step = (): void => {
      const oldest = store.getOldestEventId()
      const cutoff = store.getLastEventId() - options.retainEvents
      if (oldest === null || oldest > cutoff) {
        pruneScheduled = false
        return
      }
      store.deleteEventsUpTo(Math.min(cutoff, oldest + PRUNE_CHUNK - 1))
      // With retainEvents below recentEvents, pruning reaches into what init shows.
      freshInit = null
      pruneTimer = setImmediate(step)
    }
    pruneTimer = setImmediate(step)
  }

  /** The init message for a new connection, built from stored JSON without re-serialising events. */
  function buildInit (request: ConnectRequest): string {
    const lastId = store.getLastEventId()
    let rows: EventRow[] | null = null
    let error: string | undefined
    let resumed = false
    let reset = false
    if (request.since !== undefined) {
      const parsed = parseSince(request.since)
      if ('error' in parsed) {
        error = parsed.error
        reset = true
      } else {
        const since = parsed.since
        const oldest = store.getOldestEventId() ?? lastId + 1
        // Resumable when nothing the client lacks was pruned, the id is not from
        // another (replaced) database, and the gap is within the replay cap.
        if (since <= lastId && since >= oldest - 1 && lastId - since <= options.maxReplay) {
          rows = store.getEventRowsAfter(since, options.maxReplay)
          resumed = true
        } else {
          reset = true
        }
      }
    }
    rows ??= store.getRecentEventRows(options.recentEvents)
    const errorPart = error === undefined ? '' : `,"error":${JSON.stringify(error)}`
    return `{"type":"init","payload":{"batch":${JSON.stringify(store.getActiveBatch())},"events":[${rows.map(envelopeJson).join(',')}],"resumed":${resumed},"reset":${reset}${errorPart}}}`
  }

  // One timer for every socket. Each round's pings are spread over the round in
  // slices of at most HEARTBEAT_STEP_MS, so 10,000 sockets cost ten ~30 ms
  // pauses instead of one ~300 ms stall of the broadcast (measured by the bench).
  // Pings wait in `awaiting` in the order sent; a step terminates the sockets
  // whose ping is older than the timeout and still unanswered.
  const stepMs = Math.min(HEARTBEAT_STEP_MS, options.heartbeatIntervalMs)
  const stepsPerRound = Math.max(1, Math.round(options.heartbeatIntervalMs / stepMs))
  let step = 0
  let round: Client[] = []
  let roundCursor = 0
  let sliceSize = 0
  let awaiting: Array<{ client: Client, sentAt: number }> = []
  let awaitingHead = 0
  const heartbeatTimer = setInterval(() => {
    const now = Date.now()
    if (step++ % stepsPerRound === 0) {
      round = [...plainClients, ...batchedClients]
      roundCursor = 0
      sliceSize = Math.ceil(round.length / stepsPerRound)
    }
    for (const end = Math.min(round.length, roundCursor + sliceSize); roundCursor < end; roundCursor++) {
      const client = round[roundCursor]!
      if (!setOf(client).has(client) || client.socket.readyState !== WebSocket.OPEN) continue
      client.socket.ping()
      awaiting.push({ client, sentAt: now })
    }
    while (awaitingHead < awaiting.length && awaiting[awaitingHead]!.sentAt + options.heartbeatTimeoutMs <= now) {
      const { client, sentAt } = awaiting[awaitingHead++]!
      if (setOf(client).has(client) && client.lastPongAt < sentAt) {
        log.info('terminating WebSocket client that missed its heartbeat')
        remove(client)
        client.socket.terminate()
      }
    }
    if (awaitingHead > 0 && awaitingHead * 2 >= awaiting.length) {
      awaiting = awaiting.slice(awaitingHead)
      awaitingHead = 0
    }
  }, stepMs)

  return {
    /**
     * Validates, stores and broadcasts one event; returns its envelope.
     * Throws `SPRINT_INVALID_EVENT` (statusCode 400, `details` with field paths) for a bad type or payload.
     *
     * `options.timestamp`: when the event happened (ms), if not now; see `validateTimestamp`.
     *
     * @example
     * app.events.emit('command:start', { story_key: '2a-1', command: 'dev-story', task_id: 'implement' })
     */
    emit<T extends EventTypeName> (type: T, payload: EventPayload<T>, options: { timestamp?: number } = {}): Envelope<T> {
      const details = validateEventInput({ type, payload, timestamp: options.timestamp })
      if (details.length > 0) throw invalid(type, details)
      store.begin()
      commitScheduled ??= setImmediate(commitAndPublish)
      const row = store.appendEvent(type, payload, JSON.stringify(payload), options.timestamp ?? Date.now())
      uncommitted.push(envelopeJson(row))
      const envelope = { id: row.id, type, payload, timestamp: row.timestamp } as Envelope<T>
      notify(envelope as Envelope)
      schedulePrune(row.id)
      return envelope
    },

    /**
     * Validates every event first, then stores them in one transaction and broadcasts them in order:
     * a batch with one bad event stores and sends nothing. Error paths carry the index (`/3/payload/status`).
     */
    emitMany (inputs: readonly EventInput[]): Envelope[] {
      if (inputs.length > MAX_EVENTS_PER_CALL) throw new TooManyEventsError(MAX_EVENTS_PER_CALL, inputs.length)
      const details = inputs.flatMap((input, index) => validateEventInput(input, `/${index}`))
      if (details.length > 0) {
        throw invalid(inputs.length === 1 ? inputs[0]!.type : `batch of ${inputs.length}`, details)
      }
      const prepared = inputs.map(input => ({
        type: input.type as EventTypeName,
        payload: input.payload,
        payloadJson: JSON.stringify(input.payload),
        timestamp: input.timestamp
      }))
      // Committed before returning, so an HTTP caller is answered only for durable events.
      commitAndPublish()
      const rows = store.appendEvents(prepared, Date.now())
      publish(rows.map(envelopeJson))
      const envelopes = rows.map((row, index) =>
        ({ id: row.id, type: row.type, payload: prepared[index]!.payload, timestamp: row.timestamp }) as Envelope)
      envelopes.forEach(notify)
      schedulePrune(rows.at(-1)?.id ?? 0)
      return envelopes
    },

    /** Sends an already-built envelope to every connected client (serialised once). Does not store it. */
    broadcast (envelope: Envelope): void {
      send([JSON.stringify(envelope)])
    },

    /**
     * Commits the events emitted in this turn and sends them now rather than at the end of the turn (to
     * batched clients with their next write). Call it before telling anyone outside the process that an
     * `emit` succeeded. It does not cut a batched wait short: the ingest route flushes every request, and
     * under a stream of single-event POSTs that would undo the coalescing.
     */
    flush (): void {
      commitAndPublish()
    },

    /** Subscribes in-process code to every emitted event; returns the unsubscribe function. */
    onEvent (listener: EventListener): () => void {
      listeners.add(listener)
      return () => { listeners.delete(listener) }
    },

    /** Number of tracked WebSocket clients. */
    get clientCount (): number {
      return plainClients.size + batchedClients.size
    },

    /** The id of the newest event, 0 when there is none. */
    get lastEventId (): number {
      return store.getLastEventId()
    },

    /**
     * Sends `init` to a freshly upgraded socket and adds it to the broadcast set, in one synchronous step, so
     * no event falls between the snapshot and the live stream and none is sent twice.
     */
    connect (socket: WebSocket, request: ConnectRequest = {}): void {
      // Closed or closing before it got here: nothing may be sent after a close frame.
      if (socket.readyState !== WebSocket.OPEN) return
      // The turn's uncommitted events are visible to this connection's reads, so
      // they would be in the snapshot: commit and send them to the others first,
      // batched clients included, or a new batched client would get them twice.
      commitAndPublish()
      writeBatched()
      if (request.since === undefined) {
        if (freshInit === null) {
          const payload = Buffer.from(buildInit(request))
          freshInit = { payload, framed: textFrame(payload) }
        }
        sendFramed(socket, freshInit.framed, [freshInit.payload])
      } else {
        socket.send(buildInit(request))
      }
      const now = Date.now()
      const client: Client = { socket, batched: request.batched === true, lastPongAt: now }
      setOf(client).add(client)
      socket.on('pong', () => { client.lastPongAt = Date.now() })
      socket.once('close', () => remove(client))
    },

    /** Closes every client with 1001 and waits (briefly) for them to go; used on shutdown. */
    async closeAll (): Promise<void> {
      // Everything committed goes out before the close frame.
      commitAndPublish()
      writeBatched()
      const sockets = [...plainClients, ...batchedClients].map(c => c.socket)
      plainClients.clear()
      batchedClients.clear()
      const closed = sockets.map(socket => new Promise<void>(resolve => {
        if (socket.readyState === WebSocket.CLOSED) return resolve()
        socket.once('close', () => resolve())
        socket.close(CloseCode.GOING_AWAY, 'server shutting down')
      }))
      let grace: NodeJS.Timeout | undefined
      await Promise.race([
        Promise.all(closed),
        new Promise<void>(resolve => { grace = setTimeout(resolve, SHUTDOWN_GRACE_MS) })
      ])
      clearTimeout(grace)
      for (const socket of sockets) socket.terminate()
    },

    /** Stops the timers; the store is closed by its own plugin. */
    stop (): void {
      commitAndPublish()
      writeBatched()
      clearInterval(heartbeatTimer)
      round = []
      awaiting = []
      if (pruneTimer !== null) clearImmediate(pruneTimer)
      for (const timer of slowCloseTimers) clearTimeout(timer)
      slowCloseTimers.clear()
      listeners.clear()
    }
  }
}

/** The broadcaster's API, as decorated on Fastify as `events`. */
export type SprintEvents = ReturnType<typeof createEvents>

declare module 'fastify' {
  interface FastifyInstance {
    /** The sprint event broadcaster: `emit`, `emitMany`, `broadcast`, `onEvent`, `clientCount`. */
    events: SprintEvents
  }
}

/** Decorates the parent with `events`; closes every client with 1001 before the server stops. */
const eventsPlugin: FastifyPluginAsync<EventsOptions> = async function eventsPlugin (fastify, options) {
  const events = createEvents(fastify.sprintStore, options, fastify.log)
  fastify.decorate('events', events)
  fastify.addHook('preClose', async () => {
    await events.closeAll()
  })
  fastify.addHook('onClose', async () => {
    events.stop()
  })
}

export default fp(eventsPlugin, {
  name: 'sprint-events',
  fastify: '5.x',
  dependencies: ['sprint-store']
})
