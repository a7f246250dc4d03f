import type { FastifyBaseLogger } from 'fastify'
import { WebSocket } from 'ws'
import type { Envelope, EventInput, EventPayload, EventTypeName } from '../events/schemas.ts'
import { CloseCode, initMessageJson, noticeJson, parseSince, type BrokerState, type BrokerStatusNotice, type StoredEventRow } from '../events/protocol.ts'
import { BrokerUnavailableError, IdempotencyConflictError } from '../errors.ts'
import type { ResolvedOptions } from '../options.ts'
import type { SprintStore } from './sqlite-store.ts'
import type { EventWriter } from './event-writer.ts'
import type { FanOut } from './fan-out.ts'
import type { Publish } from './group-commit.ts'
import type { SprintStats } from './stats.ts'
import { AppendConflict, createRedisLog, type Appended, type LogAppend, type LogEntry } from './redis-log.ts'

/**
 * How long a client resuming from an id this instance has not read yet (it came from another instance)
 * waits for this instance's reader to catch up before it gets `reset`.
 */
const CATCH_UP_MS = 2000

/** What `events.broker` reports in scale-out mode: the broker's state and how far this instance's reader is behind. */
export interface BrokerStatus {
  state: BrokerState
  /** Newest id known in the stream minus the last one this instance applied. */
  readerLag: number
}

/** What a connecting client asks for; see `SprintEvents.connect`. */
export interface ConnectRequest {
  /** Raw `since` query value: the last event id the client applied. */
  since?: string | undefined
  batched?: boolean
}

export interface LogSyncOptions extends Pick<ResolvedOptions, 'retainEvents' | 'maxReplay'> {
  redis: NonNullable<ResolvedOptions['redis']>
  store: SprintStore
  writer: EventWriter
  fanOut: FanOut
  stats: SprintStats
  log: FastifyBaseLogger
  /** Sends applied events on to the sockets and listeners (as the group commit does in single-process mode). */
  publish: Publish
  /** The local store was emptied by a reset: what was built from it (the shared init) is stale. */
  onReset: () => void
  /** The single-process connect: `init` from the local store, then the live stream. */
  connectLocally: (socket: WebSocket, request: ConnectRequest) => void
  /** Adds a socket that got its `init` to the live stream. */
  track: (socket: WebSocket, request: ConnectRequest) => void
}

/** An emit waiting for the turn's append to the Redis stream. */
interface PendingAppend {
  event: LogAppend
  payload: unknown
  resolve: (envelope: Envelope) => void
  reject: (error: Error) => void
}

/**
 * Scale-out (`redis` option): the order of events is decided in a Redis stream, the log of record.
 * `emit` appends there (Redis assigns the ids); every instance's reader applies what the stream holds
 * to its own SQLite store, in stream order, and only then sends it to its clients. SQLite stays the
 * projection, the history and the resume source; it never assigns an id in this mode.
 */
export function createLogSync (options: LogSyncOptions) {
  const { store, writer, fanOut, stats, log } = options
  let pendingAppends: PendingAppend[] = []
  let appendScheduled: NodeJS.Immediate | null = null
  /** After a reset the next id read may be anything above the last: it starts the new log. */
  let acceptJump = false
  const catchUpWaiters = new Set<() => void>()
  const redisLog = createRedisLog({
    url: options.redis.url,
    key: options.redis.key,
    retainEvents: options.retainEvents,
    log,
    lastApplied: () => store.getLastEventId(),
    onEntries: apply,
    onReset: reset,
    onState: stateChanged
  })

  function brokerError (err: unknown, lost: number): Error {
    const down = redisLog.state === 'down'
    // An outage is logged once, when it begins (stateChanged), not once per refused request.
    if (down) log.debug({ lost }, 'Redis is unreachable; events refused')
    else log.warn({ err, lost }, 'appending to the Redis stream failed; nothing was acknowledged')
    return new BrokerUnavailableError(down ? 'Redis is unreachable' : (err as Error).message)
  }

  /** Applies entries read from the stream to the local store, then sends them on, in stream order. */
  function apply (entries: LogEntry[]): void {
    const last = store.getLastEventId()
    const fresh = entries.filter(entry => entry.id > last)
    if (fresh.length === 0) return
    // Ids in one log are consecutive: a jump means entries this instance never read are gone (trimmed while
    // it was away) or the stream is another one. What it holds cannot be continued.
    if (fresh[0]!.id !== last + 1 && !acceptJump) reset(`the stream continues at ${fresh[0]!.id}, not after ${last}`, false)
    const payloads = fresh.map(entry => JSON.parse(entry.payload) as unknown)
    const rows = writer.appendLogged(fresh.map((entry, index) => ({
      id: entry.id, type: entry.type as EventTypeName, payload: payloads[index], payloadJson: entry.payload, timestamp: entry.timestamp
    })))
    acceptJump = false
    options.publish(rows, payloads)
    for (const wake of catchUpWaiters) wake()
  }

  /**
   * The stream went back or jumped: what this instance holds belongs to another log. As for a replaced
   * database, nothing is mixed: the local events are dropped (ids keep counting above them), and every
   * client is closed with LOG_RESET, so that it reconnects and gets `reset`.
   */
  function reset (reason: string, newEpoch = true): void {
    log.warn({ reason, clients: fanOut.size }, 'the event log went back; clients are reset')
    store.deleteEventsUpTo(store.getLastEventId())
    // A new epoch starts above the ids known so far: counting up to its start now means no `since` from the
    // old log is resumable, even before the new log's first event arrives.
    if (newEpoch) store.skipIdsTo(redisLog.newestId)
    options.onReset()
    acceptJump = true
    for (const client of fanOut.snapshot()) {
      fanOut.remove(client)
      client.socket.close(CloseCode.LOG_RESET, 'event log reset')
    }
  }

  function brokerNotice (state: BrokerState): string {
    return noticeJson({ type: 'status', payload: { broker: state } } satisfies BrokerStatusNotice)
  }

  function stateChanged (state: BrokerState): void {
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
    if (turn.length === 0) return
    redisLog.append(turn.map(pending => pending.event)).then(appended => {
      turn.forEach((pending, index) => {
        const result = appended[index]!
        if (result.conflict === true) pending.reject(new IdempotencyConflictError(pending.event.idempotencyKey!, result.id))
        else pending.resolve(envelopeOf(pending.event, pending.payload, result))
      })
    }, (err: unknown) => {
      const error = brokerError(err, turn.length)
      for (const pending of turn) pending.reject(error)
    })
  }

  /** The envelope for an appended event: a retry's is the stored event's (same type and payload, its id and time). */
  function envelopeOf (event: LogAppend, payload: unknown, appended: Appended): Envelope {
    return { id: appended.id, type: event.type, payload, timestamp: appended.timestamp ?? event.timestamp } as Envelope
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
      // A connect still waiting when the app closes must not hold the process open; its socket is closed by then.
      timer.unref()
      catchUpWaiters.add(done)
    })
  }

  return {
    /**
     * Queues one validated event for the turn's append; resolves once the stream holds it (or held it: the
     * same event under an idempotency key appended before resolves to that event's envelope; another event
     * under it rejects with `SPRINT_IDEMPOTENCY_CONFLICT`).
     */
    emit<T extends EventTypeName> (type: T, payload: EventPayload<T>, timestamp: number | undefined, idempotencyKey?: string): Promise<Envelope<T>> {
      if (redisLog.state === 'down') return Promise.reject(brokerError(new Error('Redis is unreachable'), 1))
      return new Promise<Envelope<T>>((resolve, reject) => {
        pendingAppends.push({
          event: { type, payloadJson: JSON.stringify(payload), timestamp: timestamp ?? Date.now(), idempotencyKey },
          payload,
          resolve: resolve as (envelope: Envelope) => void,
          reject
        })
        appendScheduled ??= setImmediate(appendTurn)
      })
    },

    /** Appends validated events in one script call (all or nothing), after the turn's single emits. */
    async emitMany (inputs: readonly EventInput[]): Promise<Envelope[]> {
      // The turn's single emits go first, so ids stay in call order (one connection keeps the order).
      appendTurn()
      if (redisLog.state === 'down') throw brokerError(new Error('Redis is unreachable'), inputs.length)
      const now = Date.now()
      const events = inputs.map(input => ({ type: input.type, payloadJson: JSON.stringify(input.payload), timestamp: input.timestamp ?? now, idempotencyKey: input.idempotencyKey }))
      let appended: Appended[]
      try {
        appended = await redisLog.append(events, { atomic: true })
      } catch (err) {
        if (err instanceof AppendConflict) throw new IdempotencyConflictError(events[err.index]!.idempotencyKey!, err.id)
        throw brokerError(err, events.length)
      }
      return events.map((event, index) => envelopeOf(event, inputs[index]!.payload, appended[index]!))
    },

    /** Sends the turn's emits to the stream now. */
    flush: appendTurn,

    /**
     * `connect` in scale-out mode. A client may come from another instance: when its `since` is ahead of
     * this one, it waits (briefly) for the reader; when this instance's store does not hold the range, the
     * stream may (XRANGE); else the single-process connect answers (resume or `reset`).
     */
    async connect (socket: WebSocket, request: ConnectRequest): Promise<void> {
      const parsed = request.since === undefined ? null : parseSince(request.since)
      if (parsed !== null && 'since' in parsed) {
        const since = parsed.since
        if (since > store.getLastEventId()) await waitForApplied(since, CATCH_UP_MS)
        const lastId = store.getLastEventId()
        const oldest = store.getOldestEventId() ?? lastId + 1
        if (since < oldest - 1 && since <= lastId && lastId - since <= options.maxReplay && redisLog.state === 'up') {
          const entries = await redisLog.range(since + 1, lastId, options.maxReplay).catch(() => [])
          const contiguous = entries.length > 0 && entries.every((entry, index) => entry.id === since + 1 + index)
          if (contiguous && socket.readyState === WebSocket.OPEN) {
            fanOut.flushBatched()
            // What the reader applied during the XRANGE comes from the local store, so nothing falls between.
            const rows: StoredEventRow[] = [...entries, ...store.getEventRowsAfter(entries.at(-1)!.id, options.maxReplay)]
            socket.send(initMessageJson(store.getActiveBatch(), rows, { resumed: true, reset: false }))
            stats.resumeReplays++
            options.track(socket, request)
            return
          }
        }
      }
      if (socket.readyState !== WebSocket.OPEN) return
      options.connectLocally(socket, request)
      if (redisLog.state === 'down') socket.send(brokerNotice('down'))
    },

    /** The broker's state and the reader's lag. */
    get status (): BrokerStatus {
      return { state: redisLog.state, readerLag: Math.max(0, redisLog.newestId - store.getLastEventId()) }
    },

    /** Connects to Redis and starts reading the stream (resolves even while Redis is down). */
    async start (): Promise<void> {
      await redisLog.start()
    },

    /** Sends what is pending, stops reading and closes the Redis connections. */
    async close (): Promise<void> {
      appendTurn()
      await redisLog.close()
    }
  }
}

export type LogSync = ReturnType<typeof createLogSync>
