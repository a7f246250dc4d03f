import type { Envelope, EventTypeName } from '../events/schemas.ts'
import type { StoredEventRow } from '../events/protocol.ts'
import type { EventRow, EventToAppend } from './sqlite-store.ts'
import type { EventWriter } from './event-writer.ts'
import { IdempotencyConflictError } from '../errors.ts'

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

/**
 * Hands committed rows (with the payloads as emitted) to the sockets and listeners, in id order, and
 * returns their envelopes; called before any caller's Promise resolves.
 */
export type Publish = (rows: readonly StoredEventRow[], payloads: readonly unknown[]) => Envelope[]

/** A validated event waiting for the next group commit. */
interface Queued extends EventToAppend {
  resolve: (envelope: Envelope) => void
  reject: (error: Error) => void
}

/**
 * The single-process way to the store: `enqueue` queues a validated event (ids in call order) and
 * resolves to its envelope once it is committed and published; `appendNow` stores a batch at once,
 * after what is queued. Nothing is published or resolved before its commit, and no transaction stays
 * open between turns.
 *
 * @example
 * const commits = createGroupCommit(writer, publish)
 * const envelope = await commits.enqueue({ type: 'story:status', payload, payloadJson: JSON.stringify(payload) })
 */
export function createGroupCommit (writer: EventWriter, publish: Publish) {
  let queued: Queued[] = []

  /**
   * Publishes the rows stored now; an event whose idempotency key was stored before (a producer's retry)
   * is not sent again, and its caller gets the stored envelope (a `conflict` row is the caller's to refuse).
   */
  function settle (rows: readonly EventRow[], payloads: readonly unknown[]): Envelope[] {
    if (!rows.some(row => row.duplicate === true)) return publish(rows, payloads)
    const fresh = rows.flatMap((row, index) => row.duplicate === true ? [] : [index])
    const published = fresh.length === 0 ? [] : publish(fresh.map(index => rows[index]!), fresh.map(index => payloads[index]))
    let next = 0
    return rows.map(row => row.duplicate === true
      ? { id: row.id, type: row.type, payload: JSON.parse(row.payload) as unknown, timestamp: row.timestamp } as Envelope
      : published[next++]!)
  }

  /** The pending commit: an immediate (end of turn) or a timer (end of the window). */
  let scheduled: { endOfTurn: boolean, cancel: () => void } | null = null
  let lastCommitAt = Number.NEGATIVE_INFINITY

  function schedule (): void {
    const wait = lastCommitAt + GROUP_COMMIT_WINDOW_MS - performance.now()
    const endOfTurn = wait <= 0 || queued.length >= GROUP_COMMIT_MAX_EVENTS
    if (scheduled !== null) {
      if (!endOfTurn || scheduled.endOfTurn) return
      scheduled.cancel()
    }
    if (endOfTurn) {
      const immediate = setImmediate(commit)
      scheduled = { endOfTurn, cancel: () => clearImmediate(immediate) }
    } else {
      const timer = setTimeout(commit, wait)
      scheduled = { endOfTurn, cancel: () => clearTimeout(timer) }
    }
  }

  /**
   * Stores and commits the queued events in one transaction, then publishes them. Sockets never see an
   * event before it is durable, so a client's last id always survives a crash.
   */
  function commit (): void {
    if (scheduled !== null) {
      scheduled.cancel()
      scheduled = null
    }
    const group = queued
    if (group.length === 0) return
    queued = []
    lastCommitAt = performance.now()
    let rows: EventRow[]
    try {
      // The group's events are independent: one with a conflicting key is refused alone.
      rows = writer.append(group, Date.now(), { markConflicts: true })
    } catch (err) {
      for (const pending of group) pending.reject(err as Error)
      return
    }
    const envelopes = settle(rows, group.map(pending => pending.payload))
    for (let index = 0; index < group.length; index++) {
      const pending = group[index]!
      if (rows[index]!.conflict === true) pending.reject(new IdempotencyConflictError(pending.idempotencyKey!, rows[index]!.id))
      else pending.resolve(envelopes[index]!)
    }
  }

  return {
    /** Queues one validated event for the next group commit. */
    enqueue<T extends EventTypeName> (event: EventToAppend & { type: T }): Promise<Envelope<T>> {
      const promise = new Promise<Envelope<T>>((resolve, reject) => {
        queued.push({ ...event, resolve: resolve as (envelope: Envelope) => void, reject })
      })
      schedule()
      return promise
    },

    /** Stores validated events in one transaction now, after the queued ones (ids stay in call order). */
    appendNow (events: readonly EventToAppend[]): Envelope[] {
      commit()
      return settle(writer.append(events, Date.now()), events.map(event => event.payload))
    },

    /** Commits and publishes what is queued now rather than with the next group commit. */
    commit
  }
}

export type GroupCommit = ReturnType<typeof createGroupCommit>
