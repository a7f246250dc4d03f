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
  type BrokerStatusNotice,
  type Notice,
  type StoredEventRow
} from '../events/protocol.ts'
import { BrokerUnavailableError, InvalidEventError, InvalidNoticeError, StorageUnavailableError, TooManyEventsError, withDetails, type ErrorDetail } from '../errors.ts'
import type { SprintStore } from '../lib/sqlite-store.ts'
import type { StorageGuard } from '../lib/storage-guard.ts'
import type { ResolvedOptions } from '../options.ts'
import { createFanOut, type Client } from '../lib/fan-out.ts'
import { createStats, recordCommit } from '../lib/stats.ts'
import { startHeartbeat } from '../lib/heartbeat.ts'
import { sendFramed, textFrame } from '../lib/ws-frames.ts'
import { createRedisLog, type BrokerState, type LogAppend, type LogEntry, type RedisLog } from '../lib/redis-log.ts'

export type EventListener = (envelope: Envelope) => void

/** What a connecting client asks for; see `connect`. */
export interface ConnectRequest {
  /** Raw `since` query value: the last event id the client applied. */
  since?: string | undefined
  batched?: boolean
}

type EventsOptions = Pick<ResolvedOptions, 'recentEvents' | 'retainEvents' | 'maxReplay' | 'maxBufferedBytes' |
'heartbeatIntervalMs' | 'heartbeatTimeoutMs'> & Partial<Pick<ResolvedOptions, 'redis'>>

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
 * How long a client resuming from an id this instance has not read yet (it came from another instance)
 * waits for this instance's reader to catch up before it gets `reset`.
 */
const CATCH_UP_MS = 2000

/** An emit waiting for the turn's append to the Redis stream. */
interface PendingAppend {
  event: LogAppend
  payload: unknown
  resolve: (envelope: Envelope) => void
  reject: (error: Error) => void
}

/** What `events.broker` reports in scale-out mode: the broker's state and how far this instance's reader is behind. */
export interface BrokerStatus {
  state: BrokerState
  /** Newest id known in the stream minus the last one this instance applied. */
  readerLag: number
}

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

  /** `connect` on the local store alone: see `connect`. */
  function connectLocally (socket: WebSocket, request: ConnectRequest): void {
    // The turn's uncommitted events are visible to this connection's reads, so
    // they would be in the snapshot: commit and send them to the others first,
    // batched clients included, or a new batched client would get them twice.
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
    track(socket, request)
  }

  /** Adds a socket that got its `init` to the live stream. */
  function track (socket: WebSocket, request: ConnectRequest): void {
    const client: Client = { socket, batched: request.batched === true, lastPongAt: Date.now() }
    fanOut.add(client)
    socket.on('pong', () => { client.lastPongAt = Date.now() })
  }

  // Scale-out (`options.redis`): the order of events is decided in a Redis stream, the log of record.
  // `emit` appends there (Redis assigns the ids); every instance's reader applies what the stream holds
  // to its own SQLite store, in stream order, and only then sends it to its clients. SQLite stays the
  // projection, the history and the resume source; it never assigns an id in this mode.
  let pendingAppends: PendingAppend[] = []
  let appendScheduled: NodeJS.Immediate | null = null
  /** After a reset the next id read may be anything above the last: it starts the new log. */
  let acceptJump = false
  const catchUpWaiters = new Set<() => void>()
  const redisLog: RedisLog | null = options.redis == null
    ? null
    : createRedisLog({
      url: options.redis.url,
      key: options.redis.key,
      retainEvents: options.retainEvents,
      log,
      lastApplied: () => store.getLastEventId(),
      onEntries: applyFromLog,
      onReset: resetFromLog,
      onState: brokerStateChanged
    })

  function brokerError (err: unknown, lost: number): Error {
    const down = redisLog?.state === 'down'
    // An outage is logged once, when it begins (brokerStateChanged), not once per refused request.
    if (down) log.debug({ lost }, 'Redis is unreachable; events refused')
    else log.warn({ err, lost }, 'appending to the Redis stream failed; nothing was acknowledged')
    const reason = down ? 'Redis is unreachable' : (err as Error).message
    return new BrokerUnavailableError(reason)
  }

  /** Applies entries read from the stream to the local store, then sends them on, in stream order. */
  function applyFromLog (entries: LogEntry[]): void {
    const last = store.getLastEventId()
    const fresh = entries.filter(entry => entry.id > last)
    if (fresh.length === 0) return
    // Ids in one log are consecutive: a jump means entries this instance never read are gone (trimmed while
    // it was away) or the stream is another one. What it holds cannot be continued.
    if (fresh[0]!.id !== last + 1 && !acceptJump) resetFromLog(`the stream continues at ${fresh[0]!.id}, not after ${last}`, false)
    if (guard !== undefined && !guard.check()) throw lostError()
    const payloads = fresh.map(entry => JSON.parse(entry.payload) as unknown)
    let rows: StoredEventRow[]
    try {
      rows = store.appendLoggedEvents(fresh.map((entry, index) => ({
        id: entry.id, type: entry.type as EventTypeName, payload: payloads[index], payloadJson: entry.payload, timestamp: entry.timestamp
      })))
    } catch (err) {
      throw storageError(err, fresh.length)
    }
    guard?.recordSuccess()
    acceptJump = false
    publish(rows.map(envelopeJson), rows.map((row, index) =>
      ({ id: row.id, type: row.type, payload: payloads[index], timestamp: row.timestamp }) as Envelope))
    schedulePrune(rows.at(-1)!.id)
    for (const wake of catchUpWaiters) wake()
  }

  /**
   * The stream went back or jumped: what this instance holds belongs to another log. As for a replaced
   * database, nothing is mixed: the local events are dropped (ids keep counting above them), and every
   * client is closed with LOG_RESET, so that it reconnects and gets `reset`.
   */
  function resetFromLog (reason: string, newEpoch = true): void {
    log.warn({ reason, clients: fanOut.size }, 'the event log went back; clients are reset')
    store.deleteEventsUpTo(store.getLastEventId())
    // A new epoch starts above the ids known so far: counting up to its start now means no `since` from the
    // old log is resumable, even before the new log's first event arrives.
    if (newEpoch && redisLog !== null) store.skipIdsTo(redisLog.newestId)
    freshInit = null
    acceptJump = true
    for (const client of fanOut.snapshot()) {
      fanOut.remove(client)
      client.socket.close(CloseCode.LOG_RESET, 'event log reset')
    }
  }

  function brokerNotice (state: BrokerState): string {
    return noticeJson({ type: 'status', payload: { broker: state } } satisfies BrokerStatusNotice)
  }

  function brokerStateChanged (state: BrokerState): void {
    if (state === 'down') log.error('Redis is unreachable: emits are refused (503) until it is back')
    else log.info('Redis is reachable; reading the stream from the last applied id')
    fanOut.sendToAll(brokerNotice(state))
  }

  /** Sends the turn's emits to the stream in one script call, and resolves them with the ids it gave. */
  function appendTurn (): void {
    if (appendScheduled !== null) {
      clearImmediate(appendScheduled)
      appendScheduled = null
    }
    const turn = pendingAppends
    pendingAppends = []
    if (turn.length === 0 || redisLog === null) return
    redisLog.append(turn.map(pending => pending.event)).then(first => {
      turn.forEach((pending, index) => pending.resolve({ id: first + index, type: pending.event.type, payload: pending.payload, timestamp: pending.event.timestamp } as Envelope))
    }, (err: unknown) => {
      const error = brokerError(err, turn.length)
      for (const pending of turn) pending.reject(error)
    })
  }

  function emitToLog<T extends EventTypeName> (redis: RedisLog, type: T, payload: EventPayload<T>, timestamp: number | undefined): Promise<Envelope<T>> {
    if (redis.state === 'down') return handled(Promise.reject(brokerError(new Error('Redis is unreachable'), 1)))
    return handled(new Promise<Envelope<T>>((resolve, reject) => {
      pendingAppends.push({
        event: { type, payloadJson: JSON.stringify(payload), timestamp: timestamp ?? Date.now() },
        payload,
        resolve: resolve as (envelope: Envelope) => void,
        reject
      })
      appendScheduled ??= setImmediate(appendTurn)
    }))
  }

  async function emitManyToLog (redis: RedisLog, inputs: readonly EventInput[]): Promise<Envelope[]> {
    // The turn's single emits go first, so ids stay in call order (one connection keeps the order).
    appendTurn()
    if (redis.state === 'down') throw brokerError(new Error('Redis is unreachable'), inputs.length)
    const now = Date.now()
    const events = inputs.map(input => ({ type: input.type, payloadJson: JSON.stringify(input.payload), timestamp: input.timestamp ?? now }))
    let first: number
    try {
      first = await redis.append(events)
    } catch (err) {
      throw brokerError(err, events.length)
    }
    return events.map((event, index) => ({ id: first + index, type: event.type, payload: inputs[index]!.payload, timestamp: event.timestamp }) as Envelope)
  }

  /** Resolves once this instance applied `id`, or after `ms`. */
  async function waitForApplied (id: number, ms: number): Promise<void> {
    if (store.getLastEventId() >= id) return
    await new Promise<void>(resolve => {
      const done = (): void => {
        if (store.getLastEventId() < id && timer !== null) return
        if (timer !== null) clearTimeout(timer)
        catchUpWaiters.delete(done)
        resolve()
      }
      let timer: NodeJS.Timeout | null = setTimeout(() => { timer = null; done() }, ms)
      catchUpWaiters.add(done)
    })
  }

  /**
   * `connect` in scale-out mode. A client may come from another instance: when its `since` is ahead of
   * this one, it waits (briefly) for the reader; when this instance's store does not hold the range, the
   * stream may (XRANGE); else the ordinary `connect` answers (resume or `reset`).
   */
  async function connectFromLog (redis: RedisLog, socket: WebSocket, request: ConnectRequest): Promise<void> {
    const parsed = request.since === undefined ? null : parseSince(request.since)
    if (parsed !== null && 'since' in parsed) {
      const since = parsed.since
      if (since > store.getLastEventId()) await waitForApplied(since, CATCH_UP_MS)
      const lastId = store.getLastEventId()
      const oldest = store.getOldestEventId() ?? lastId + 1
      if (since < oldest - 1 && since <= lastId && lastId - since <= options.maxReplay && redis.state === 'up') {
        const entries = await redis.range(since + 1, lastId, options.maxReplay).catch(() => [])
        const contiguous = entries.length > 0 && entries[0]!.id === since + 1 && entries.every((entry, index) => entry.id === since + 1 + index)
        if (contiguous && socket.readyState === WebSocket.OPEN) {
          fanOut.flushBatched()
          // What the reader applied during the XRANGE comes from the local store, so nothing falls between.
          const rows = [...entries, ...store.getEventRowsAfter(entries.at(-1)!.id, options.maxReplay)]
          socket.send(initMessageJson(store.getActiveBatch(), rows, { resumed: true, reset: false }))
          stats.resumeReplays++
          track(socket, request)
          return
        }
      }
    }
    if (socket.readyState !== WebSocket.OPEN) return
    connectLocally(socket, request)
    if (redis.state === 'down') socket.send(brokerNotice('down'))
  }

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
     *
     * @example
     * const envelope = await app.events.emit('command:start', { story_key: '2a-1', command: 'dev-story', task_id: 'implement' })
     */
    emit<T extends EventTypeName> (type: T, payload: EventPayload<T>, options: { timestamp?: number } = {}): Promise<Envelope<T>> {
      const details = validateEventInput({ type, payload, timestamp: options.timestamp })
      if (details.length > 0) return Promise.reject(invalid(type, details))
      if (redisLog !== null) return emitToLog(redisLog, type, payload, options.timestamp)
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
      if (redisLog !== null) return emitManyToLog(redisLog, inputs)
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
      appendTurn()
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
      if (redisLog === null) return null
      return { state: redisLog.state, readerLag: Math.max(0, redisLog.newestId - store.getLastEventId()) }
    },

    /** Scale-out only: connects to Redis and starts reading the stream (resolves even while Redis is down). */
    async startLog (): Promise<void> {
      await redisLog?.start()
    },

    /** Scale-out only: stops reading and closes the Redis connections. */
    async closeLog (): Promise<void> {
      appendTurn()
      await redisLog?.close()
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
      if (redisLog !== null) {
        connectFromLog(redisLog, socket, request).catch((err: unknown) => {
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
