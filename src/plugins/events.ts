import fp from 'fastify-plugin'
import type { FastifyBaseLogger, FastifyPluginAsync } from 'fastify'
import { WebSocket } from 'ws'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import type { Envelope, EventInput, EventPayload, EventTypeName } from '../events/schemas.ts'
import { describeInvalidEvent, validateEventInput } from '../events/validate.ts'
import {
  CloseCode,
  envelopeJson,
  initMessageJson,
  NoticeSchema,
  noticeJson,
  parseSince,
  RequestLimits,
  type Notice,
  type StoredEventRow
} from '../events/protocol.ts'
import { InvalidEventError, InvalidNoticeError, TooManyEventsError, withDetails, type ErrorDetail } from '../errors.ts'
import type { SprintStore } from '../lib/sqlite-store.ts'
import type { StorageGuard } from '../lib/storage-guard.ts'
import type { ResolvedOptions } from '../options.ts'
import { createFanOut, type Client } from '../lib/fan-out.ts'
import { createStats } from '../lib/stats.ts'
import { startHeartbeat } from '../lib/heartbeat.ts'
import { sendFramed, textFrame } from '../lib/ws-frames.ts'
import { createEventWriter } from '../lib/event-writer.ts'
import { createGroupCommit } from '../lib/group-commit.ts'
import { createPruner } from '../lib/pruner.ts'
import type { BrokerStatus, ConnectRequest, createLogSync } from '../lib/log-sync.ts'

export type { BrokerStatus, ConnectRequest }
export type EventListener = (envelope: Envelope) => void

type EventsOptions = Pick<ResolvedOptions, 'recentEvents' | 'retainEvents' | 'maxReplay' | 'maxBufferedBytes' |
'heartbeatIntervalMs' | 'heartbeatTimeoutMs'> & Partial<Pick<ResolvedOptions, 'redis'>>

/**
 * A storage failure must not crash the process of a caller that does not await
 * `emit`: it is logged where it happens, and a caller that awaits still gets
 * the rejection. (An invalid event, a caller's bug, rejects unhandled as usual.)
 */
function handled<T> (promise: Promise<T>): Promise<T> {
  promise.catch(() => {})
  return promise
}

const noticeCheck = TypeCompiler.Compile(NoticeSchema)

/**
 * The broadcaster: validates, stores and fans out events to every connected
 * WebSocket client. Decorated as `fastify.events`.
 *
 * Ordering and durability: `emit` validates and queues (ids in call order);
 * queued events are stored and committed in one transaction (a group commit,
 * see src/lib/group-commit.ts), and only then are they written to the sockets,
 * given to `onEvent` listeners and resolved to their callers, in id order. So
 * no client, listener or caller ever holds an event a crash or a failed commit
 * could take back. `connect` commits and sends what is pending before it takes
 * its snapshot, so a new client sees exactly the events after its snapshot.
 * With the `redis` option the Redis stream orders events instead, and this
 * instance publishes what its reader applies (`scaleOut`, src/lib/log-sync.ts,
 * passed in so that a single instance never loads the Redis client).
 */
export function createEvents (store: SprintStore, options: EventsOptions, log: FastifyBaseLogger, guard?: StorageGuard, scaleOut?: typeof createLogSync) {
  const stats = createStats()
  const fanOut = createFanOut({ maxBufferedBytes: options.maxBufferedBytes, log, stats })
  const listeners = new Set<EventListener>()
  const writer = createEventWriter(store, stats, log, guard)
  /**
   * The `init` of a client that is not resuming, encoded and framed once and
   * shared by every such connect until the stored events change: a connection
   * storm then costs one SQLite read, not one per client.
   */
  let freshInit: { payload: Buffer, framed: Buffer } | null = null
  // With retainEvents below recentEvents, pruning reaches into what init shows.
  const pruner = createPruner(store, options.retainEvents, () => { freshInit = null })

  const heartbeat = startHeartbeat({
    intervalMs: options.heartbeatIntervalMs,
    timeoutMs: options.heartbeatTimeoutMs,
    clients: () => fanOut.snapshot(),
    isTracked: client => fanOut.has(client),
    onDead: client => {
      log.info('terminating WebSocket client that missed its heartbeat')
      fanOut.remove(client)
      client.socket.terminate()
    }
  })

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

  /** Hands committed events to the sockets and the listeners, in id order; returns their envelopes. */
  function publish (rows: readonly StoredEventRow[], payloads: readonly unknown[]): Envelope[] {
    const envelopes = rows.map((row, index) =>
      ({ id: row.id, type: row.type, payload: payloads[index], timestamp: row.timestamp }) as Envelope)
    if (rows.length === 0) return envelopes
    freshInit = null
    stats.eventsEmitted += rows.length
    fanOut.send(rows.map(envelopeJson))
    for (const envelope of envelopes) notify(envelope)
    pruner.schedule(rows.at(-1)!.id)
    return envelopes
  }

  const commits = createGroupCommit(writer, publish)

  function invalid (type: unknown, details: ErrorDetail[]): Error {
    return withDetails(new InvalidEventError(describeInvalidEvent(type, details)), details)
  }

  /** The init message for a new connection, built from stored JSON without re-serialising events. */
  function buildInit (request: ConnectRequest): string {
    const lastId = store.getLastEventId()
    let rows: StoredEventRow[] | null = null
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
    if (resumed) stats.resumeReplays++
    if (reset) stats.resumeResets++
    rows ??= store.getRecentEventRows(options.recentEvents)
    return initMessageJson(store.getActiveBatch(), rows, { resumed, reset, error })
  }

  /** `connect` on the local store alone: see `connect`. */
  function connectLocally (socket: WebSocket, request: ConnectRequest): void {
    // The turn's uncommitted events are visible to this connection's reads, so
    // they would be in the snapshot: commit and send them to the others first,
    // batched clients included, or a new batched client would get them twice.
    commits.commit()
    fanOut.flushBatched()
    if (request.since === undefined) {
      if (freshInit === null) {
        const payload = Buffer.from(buildInit(request))
        freshInit = { payload, framed: textFrame(payload) }
      }
      sendFramed(socket, freshInit.framed, [freshInit.payload])
    } else {
      socket.send(buildInit(request))
    }
    track(socket, request)
  }

  /** Adds a socket that got its `init` to the live stream. */
  function track (socket: WebSocket, request: ConnectRequest): void {
    const client: Client = { socket, batched: request.batched === true, lastPongAt: Date.now() }
    fanOut.add(client)
    socket.on('pong', () => { client.lastPongAt = Date.now() })
  }

  if (options.redis != null && scaleOut === undefined) throw new TypeError('createEvents: the redis option needs createLogSync')
  const logSync = options.redis == null || scaleOut === undefined
    ? null
    : scaleOut({
      redis: options.redis,
      retainEvents: options.retainEvents,
      maxReplay: options.maxReplay,
      store,
      writer,
      fanOut,
      stats,
      log,
      publish,
      onReset: () => { freshInit = null },
      connectLocally,
      track
    })

  return {
    /**
     * Validates and queues one event; resolves to its envelope once it is stored and committed (with the
     * other events of its group commit, see GROUP_COMMIT_WINDOW_MS) and on its way to every client.
     * Rejects with `SPRINT_INVALID_EVENT` (statusCode 400, `details` with field paths) for a bad
     * type or payload, and with `SPRINT_STORAGE_UNAVAILABLE` (503) when the commit fails.
     *
     * With the `redis` option (scale-out) the id is given by the Redis stream: the Promise resolves once the
     * stream holds the event, and rejects with `SPRINT_BROKER_UNAVAILABLE` (503) when Redis is unreachable.
     * This instance's clients and listeners get the event when its reader applies it, a moment later.
     *
     * `options.timestamp`: when the event happened (ms), if not now; see `validateTimestamp`.
     * `options.idempotencyKey`: the producer's unique name for this event; when an event with this key is
     * stored already (a retry), nothing is stored or sent again and the Promise resolves to the stored envelope.
     *
     * @example
     * const envelope = await app.events.emit('command:start', { story_key: '2a-1', command: 'dev-story', task_id: 'implement' })
     */
    emit<T extends EventTypeName> (type: T, payload: EventPayload<T>, options: { timestamp?: number | undefined, idempotencyKey?: string | undefined } = {}): Promise<Envelope<T>> {
      const details = validateEventInput({ type, payload, timestamp: options.timestamp, idempotencyKey: options.idempotencyKey })
      if (details.length > 0) return Promise.reject(invalid(type, details))
      if (logSync !== null) return handled(logSync.emit(type, payload, options.timestamp, options.idempotencyKey))
      if (!writer.writable) return handled(Promise.reject(writer.lostError()))
      let payloadJson: string
      try {
        payloadJson = JSON.stringify(payload)
      } catch (err) {
        return handled(Promise.reject(writer.failure(err, 1)))
      }
      return handled(commits.enqueue({ type, payload, payloadJson, timestamp: options.timestamp ?? Date.now(), idempotencyKey: options.idempotencyKey }))
    },

    /**
     * Validates every event first, then stores them in one transaction and resolves to their envelopes
     * in order once committed: a batch with one bad event stores and sends nothing. Error paths carry
     * the index (`/3/payload/status`).
     */
    async emitMany (inputs: readonly EventInput[]): Promise<Envelope[]> {
      if (inputs.length > RequestLimits.eventsPerRequest) throw new TooManyEventsError(RequestLimits.eventsPerRequest, inputs.length)
      const details = inputs.flatMap((input, index) => validateEventInput(input, `/${index}`))
      if (details.length > 0) {
        throw invalid(inputs.length === 1 ? inputs[0]!.type : `batch of ${inputs.length}`, details)
      }
      if (logSync !== null) return await logSync.emitMany(inputs)
      return commits.appendNow(inputs.map(input => ({
        type: input.type as EventTypeName,
        payload: input.payload,
        payloadJson: JSON.stringify(input.payload),
        timestamp: input.timestamp,
        idempotencyKey: input.idempotencyKey
      })))
    },

    /**
     * Sends a transient notice (`{ type, payload }`, no id) to every connected page, batched ones
     * included. It is not stored and pages never take it as a resume point; events use `emit`.
     *
     * @example
     * app.events.broadcast({ type: 'status', payload: { broker: 'down' } })
     */
    broadcast (notice: Notice): void {
      if (!noticeCheck.Check(notice)) {
        const details = [...noticeCheck.Errors(notice)].map(e => ({ path: e.path, message: e.message }))
        throw withDetails(new InvalidNoticeError(details.map(d => `${d.path}: ${d.message}`).join('; ')), details)
      }
      // Queued events are committed and go out first, so a notice never overtakes them.
      commits.commit()
      fanOut.sendToAll(noticeJson(notice))
    },

    /**
     * Commits the queued events and sends them now rather than with the next group commit (to
     * batched clients with their next write). It does not cut a batched hold short.
     */
    flush (): void {
      commits.commit()
      logSync?.flush()
    },

    /** Subscribes in-process code to every stored event (after its commit); returns the unsubscribe function. */
    onEvent (listener: EventListener): () => void {
      listeners.add(listener)
      return () => { listeners.delete(listener) }
    },

    /** Number of tracked WebSocket clients. */
    get clientCount (): number {
      return fanOut.size
    },

    /** Tracked WebSocket clients by kind: `plain` (one event per frame) and `batched` (`?batch=1`). */
    get clientsByKind (): { plain: number, batched: number } {
      return fanOut.sizeByKind()
    },

    /** Running totals (events emitted and delivered, frames, slow consumers, resumes, ingest rejections, commit time); read by `GET /metrics`. */
    stats,

    /** Scale-out only (`redis` option): the broker's state and the reader's lag; null without Redis. */
    get broker (): BrokerStatus | null {
      return logSync?.status ?? null
    },

    /** Scale-out only: connects to Redis and starts reading the stream (resolves even while Redis is down). */
    async startLog (): Promise<void> {
      await logSync?.start()
    },

    /** Scale-out only: stops reading and closes the Redis connections. */
    async closeLog (): Promise<void> {
      await logSync?.close()
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
      if (logSync !== null) {
        logSync.connect(socket, request).catch((err: unknown) => {
          log.error({ err }, 'WebSocket connect failed')
          socket.close(CloseCode.UNEXPECTED_CONDITION, 'internal error')
        })
        return
      }
      connectLocally(socket, request)
    },

    /** Closes every client with 1001 and waits (briefly) for them to go; used on shutdown. */
    async closeAll (): Promise<void> {
      // Everything committed goes out before the close frame.
      commits.commit()
      await fanOut.closeAll()
    },

    /** Stops the timers; the store is closed by its own plugin. */
    stop (): void {
      commits.commit()
      fanOut.stop()
      heartbeat.stop()
      pruner.stop()
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
  // The Redis client is loaded only when it is used: a single instance does not carry it in memory.
  const scaleOut = options.redis == null ? undefined : (await import('../lib/log-sync.ts')).createLogSync
  const events = createEvents(fastify.sprintStore, options, fastify.log, fastify.hasDecorator('sprintStorage') ? fastify.sprintStorage : undefined, scaleOut)
  fastify.decorate('events', events)
  await events.startLog()
  fastify.addHook('preClose', async () => {
    await events.closeAll()
  })
  fastify.addHook('onClose', async () => {
    await events.closeLog()
    events.stop()
  })
}

export default fp(eventsPlugin, {
  name: 'sprint-events',
  fastify: '5.x',
  dependencies: ['sprint-store']
})
