import fp from 'fastify-plugin'
import type { FastifyBaseLogger, FastifyPluginAsync } from 'fastify'
import { WebSocket } from 'ws'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import type { Envelope, EventInput, EventPayload, EventTypeName } from '../events/schemas.ts'
import { describeInvalidEvent, validateEventInput } from '../events/validate.ts'
import {
  envelopeJson,
  initMessageJson,
  NoticeSchema,
  noticeJson,
  parseSince,
  RequestLimits,
  type Notice,
  type StoredEventRow
} from '../events/protocol.ts'
import { InvalidEventError, InvalidNoticeError, StorageUnavailableError, TooManyEventsError, withDetails, type ErrorDetail } from '../errors.ts'
import type { SprintStore } from '../lib/sqlite-store.ts'
import type { StorageGuard } from '../lib/storage-guard.ts'
import type { ResolvedOptions } from '../options.ts'
import { createFanOut, type Client } from '../lib/fan-out.ts'
import { createStats, recordCommit } from '../lib/stats.ts'
import { startHeartbeat } from '../lib/heartbeat.ts'
import { sendFramed, textFrame } from '../lib/ws-frames.ts'

export type EventListener = (envelope: Envelope) => void

/** What a connecting client asks for; see `connect`. */
export interface ConnectRequest {
  /** Raw `since` query value: the last event id the client applied. */
  since?: string | undefined
  batched?: boolean
}

type EventsOptions = Pick<ResolvedOptions, 'recentEvents' | 'retainEvents' | 'maxReplay' | 'maxBufferedBytes' |
'heartbeatIntervalMs' | 'heartbeatTimeoutMs'>

/** A validated event waiting for the next group commit, which stores and commits it with the others. */
interface Uncommitted {
  type: EventTypeName
  payload: unknown
  payloadJson: string
  timestamp: number
  resolve: (envelope: Envelope) => void
  reject: (error: Error) => void
}

/**
 * A storage failure must not crash the process of a caller that does not await
 * `emit`: it is logged where it happens, and a caller that awaits still gets
 * the rejection. (An invalid event, a caller's bug, rejects unhandled as usual.)
 */
function handled<T> (promise: Promise<T>): Promise<T> {
  promise.catch(() => {})
  return promise
}

/** Events pruned per step; each step is its own turn, so a large backlog never blocks the loop. */
const PRUNE_CHUNK = 5000

/**
 * Group commit. Emitted events wait in memory and are stored and committed together, then published.
 * After a commit, the next one waits until this long after it, so events arriving one per turn (HTTP
 * ingest, an orchestrator's callbacks) share a transaction instead of paying one each; an event that
 * comes after a quiet spell is committed at the end of its turn, so light load adds no latency. See
 * docs/durability.md for what this trades.
 */
export const GROUP_COMMIT_WINDOW_MS = 2
/** A group with this many events is committed at the end of the turn, window or not: bounded memory and commit time. */
export const GROUP_COMMIT_MAX_EVENTS = 1000

const noticeCheck = TypeCompiler.Compile(NoticeSchema)

/**
 * The broadcaster: validates, stores and fans out events to every connected
 * WebSocket client. Decorated as `fastify.events`.
 *
 * Ordering and durability: `emit` validates and queues (ids in call order);
 * queued events are stored and committed in one transaction (a group commit:
 * at the end of the turn, or up to `GROUP_COMMIT_WINDOW_MS` after the previous
 * commit), and only then are they written to the sockets, given to `onEvent`
 * listeners and resolved to their callers, in id order. So no client,
 * listener or caller ever holds an event a crash or a failed commit could take
 * back. `connect` commits and sends what is pending before it takes its
 * snapshot, so a new client sees exactly the events after its snapshot.
 */
export function createEvents (store: SprintStore, options: EventsOptions, log: FastifyBaseLogger, guard?: StorageGuard) {
  const stats = createStats()
  const fanOut = createFanOut({ maxBufferedBytes: options.maxBufferedBytes, log, stats })
  const listeners = new Set<EventListener>()
  let uncommitted: Uncommitted[] = []
  /** The pending group commit: an immediate (end of turn) or a timer (end of the window). */
  let commitScheduled: { endOfTurn: boolean, cancel: () => void } | null = null
  let lastCommitAt = Number.NEGATIVE_INFINITY
  /**
   * The `init` of a client that is not resuming, encoded and framed once and
   * shared by every such connect until the stored events change: a connection
   * storm then costs one SQLite read, not one per client.
   */
  let freshInit: { payload: Buffer, framed: Buffer } | null = null

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

  /** Hands committed events to the sockets, the listeners and the callers, in id order. */
  function publish (jsons: readonly string[], envelopes: readonly Envelope[]): void {
    if (jsons.length === 0) return
    freshInit = null
    stats.eventsEmitted += jsons.length
    fanOut.send(jsons)
    for (const envelope of envelopes) notify(envelope)
  }

  /** The error a caller gets when its events could not be stored; the cause stays in the log. */
  function storageError (err: unknown, lost: number): Error {
    guard?.recordFailure(err)
    log.error({ err, lost }, 'storing events failed; nothing was acknowledged or sent')
    return new StorageUnavailableError((err as { code?: string }).code ?? (err as Error).message)
  }

  /** The error while the store's files are lost (see storage-guard.ts): nothing is appended or committed any more. */
  function lostError (): Error {
    const health = guard?.health
    return new StorageUnavailableError(`${health?.code ?? 'STORAGE_LOST'}: ${health?.message ?? 'the database file is gone'}; restart the service`)
  }

  /** Schedules the group commit for the events just queued: see GROUP_COMMIT_WINDOW_MS. */
  function scheduleCommit (): void {
    const wait = lastCommitAt + GROUP_COMMIT_WINDOW_MS - performance.now()
    const endOfTurn = wait <= 0 || uncommitted.length >= GROUP_COMMIT_MAX_EVENTS
    if (commitScheduled !== null) {
      if (!endOfTurn || commitScheduled.endOfTurn) return
      commitScheduled.cancel()
    }
    if (endOfTurn) {
      const immediate = setImmediate(commitTurn)
      commitScheduled = { endOfTurn, cancel: () => clearImmediate(immediate) }
    } else {
      const timer = setTimeout(commitTurn, wait)
      commitScheduled = { endOfTurn, cancel: () => clearTimeout(timer) }
    }
  }

  /**
   * Stores and commits the queued events in one transaction, then publishes them. Sockets never see an
   * event before it is durable, so a client's last id always survives a crash.
   */
  function commitTurn (): void {
    if (commitScheduled !== null) {
      commitScheduled.cancel()
      commitScheduled = null
    }
    const group = uncommitted
    if (group.length === 0) return
    uncommitted = []
    lastCommitAt = performance.now()
    // The files are checked just before each commit: a commit into a deleted or replaced database
    // "succeeds" into a file nobody will see again.
    if (guard !== undefined && !guard.check()) {
      const error = lostError()
      for (const pending of group) pending.reject(error)
      return
    }
    let rows: StoredEventRow[]
    try {
      const started = performance.now()
      rows = store.appendEvents(group, Date.now())
      recordCommit(stats, (performance.now() - started) / 1000)
    } catch (err) {
      if (store.db.inTransaction) store.db.exec('ROLLBACK')
      const error = storageError(err, group.length)
      for (const pending of group) pending.reject(error)
      return
    }
    guard?.recordSuccess()
    const envelopes = rows.map((row, index) =>
      ({ id: row.id, type: row.type, payload: group[index]!.payload, timestamp: row.timestamp }) as Envelope)
    publish(rows.map(envelopeJson), envelopes)
    schedulePrune(rows.at(-1)?.id ?? 0)
    for (let index = 0; index < group.length; index++) group[index]!.resolve(envelopes[index]!)
  }

  function invalid (type: unknown, details: ErrorDetail[]): Error {
    return withDetails(new InvalidEventError(describeInvalidEvent(type, details)), details)
  }

  let pruneScheduled = false
  let pruneTimer: NodeJS.Immediate | null = null
  const pruneEvery = Math.max(1, Math.min(1000, Math.floor(options.retainEvents / 10)))
  let pruneCheckedAt = 0
  /** Deletes events beyond `retainEvents` in small steps off the emit path. */
  function schedulePrune (lastId: number): void {
    if (pruneScheduled || lastId - pruneCheckedAt < pruneEvery) return
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

  return {
    /**
     * Validates and queues one event; resolves to its envelope once it is stored and committed (with the
     * other events of its group commit, see GROUP_COMMIT_WINDOW_MS) and on its way to every client.
     * Rejects with `SPRINT_INVALID_EVENT` (statusCode 400, `details` with field paths) for a bad
     * type or payload, and with `SPRINT_STORAGE_UNAVAILABLE` (503) when the commit fails.
     *
     * `options.timestamp`: when the event happened (ms), if not now; see `validateTimestamp`.
     *
     * @example
     * const envelope = await app.events.emit('command:start', { story_key: '2a-1', command: 'dev-story', task_id: 'implement' })
     */
    emit<T extends EventTypeName> (type: T, payload: EventPayload<T>, options: { timestamp?: number } = {}): Promise<Envelope<T>> {
      const details = validateEventInput({ type, payload, timestamp: options.timestamp })
      if (details.length > 0) return Promise.reject(invalid(type, details))
      if (guard !== undefined && !guard.writable) return handled(Promise.reject(lostError()))
      let payloadJson: string
      try {
        payloadJson = JSON.stringify(payload)
      } catch (err) {
        return handled(Promise.reject(storageError(err, 1)))
      }
      const timestamp = options.timestamp ?? Date.now()
      const promise = handled(new Promise<Envelope<T>>((resolve, reject) => {
        uncommitted.push({ type, payload, payloadJson, timestamp, resolve: resolve as (envelope: Envelope) => void, reject })
      }))
      scheduleCommit()
      return promise
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
      const prepared = inputs.map(input => ({
        type: input.type as EventTypeName,
        payload: input.payload,
        payloadJson: JSON.stringify(input.payload),
        timestamp: input.timestamp
      }))
      // Queued single emits go first, so ids stay in call order.
      commitTurn()
      if (guard !== undefined && !guard.check()) throw lostError()
      let rows: StoredEventRow[]
      try {
        const started = performance.now()
        rows = store.appendEvents(prepared, Date.now())
        recordCommit(stats, (performance.now() - started) / 1000)
      } catch (err) {
        throw storageError(err, prepared.length)
      }
      guard?.recordSuccess()
      const envelopes = rows.map((row, index) =>
        ({ id: row.id, type: row.type, payload: prepared[index]!.payload, timestamp: row.timestamp }) as Envelope)
      publish(rows.map(envelopeJson), envelopes)
      schedulePrune(rows.at(-1)?.id ?? 0)
      return envelopes
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
      commitTurn()
      fanOut.sendToAll(noticeJson(notice))
    },

    /**
     * Commits the queued events and sends them now rather than with the next group commit (to
     * batched clients with their next write). It does not cut a batched hold short.
     */
    flush (): void {
      commitTurn()
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
      // Queued events are committed and sent to the others first, and so are the events held for
      // batched clients: the snapshot then has them all, and a new batched client gets none twice.
      commitTurn()
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
      const client: Client = { socket, batched: request.batched === true, lastPongAt: Date.now() }
      fanOut.add(client)
      socket.on('pong', () => { client.lastPongAt = Date.now() })
    },

    /** Closes every client with 1001 and waits (briefly) for them to go; used on shutdown. */
    async closeAll (): Promise<void> {
      // Everything committed goes out before the close frame.
      commitTurn()
      await fanOut.closeAll()
    },

    /** Stops the timers; the store is closed by its own plugin. */
    stop (): void {
      commitTurn()
      fanOut.stop()
      heartbeat.stop()
      if (pruneTimer !== null) clearImmediate(pruneTimer)
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
  const events = createEvents(fastify.sprintStore, options, fastify.log, fastify.hasDecorator('sprintStorage') ? fastify.sprintStorage : undefined)
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
