import type { FastifyBaseLogger } from 'fastify'
import type { StoredEventRow } from '../events/protocol.ts'
import { IdempotencyConflictError, StorageUnavailableError } from '../errors.ts'
import type { EventRow, EventToAppend, LoggedEventToAppend, SprintStore } from './sqlite-store.ts'
import type { StorageGuard } from './storage-guard.ts'
import { recordCommit, type SprintStats } from './stats.ts'

/**
 * The one way events are written to the store, whichever way they came (the group commit of
 * group-commit.ts, or the Redis reader of log-sync.ts): the files are checked just before each
 * commit (a commit into a deleted or replaced database "succeeds" into a file nobody will see
 * again, see storage-guard.ts), the commit is timed for `GET /metrics`, and a failure becomes a
 * `SPRINT_STORAGE_UNAVAILABLE` (503) whose cause stays in the log.
 */
export function createEventWriter (store: SprintStore, stats: SprintStats, log: FastifyBaseLogger, guard?: StorageGuard) {
  /** The error a caller gets when its events could not be stored. */
  function failure (err: unknown, lost: number): Error {
    guard?.recordFailure(err)
    log.error({ err, lost }, 'storing events failed; nothing was acknowledged or sent')
    return new StorageUnavailableError((err as { code?: string }).code ?? (err as Error).message)
  }

  /** The error while the store's files are lost: nothing is appended or committed any more. */
  function lostError (): Error {
    const health = guard?.health
    return new StorageUnavailableError(`${health?.code ?? 'STORAGE_LOST'}: ${health?.message ?? 'the database file is gone'}; restart the service`)
  }

  /** Runs one transaction of `count` events: all are stored or none, and the caller gets the reason. */
  function write<Row extends StoredEventRow> (count: number, append: () => Row[]): Row[] {
    if (guard !== undefined && !guard.check()) throw lostError()
    let rows: Row[]
    try {
      const started = performance.now()
      rows = append()
      recordCommit(stats, (performance.now() - started) / 1000)
    } catch (err) {
      // The store's transaction has rolled back. A conflict is the producer's mistake, not the store's.
      if (err instanceof IdempotencyConflictError) throw err
      throw failure(err, count)
    }
    guard?.recordSuccess()
    return rows
  }

  return {
    /** False once the files are lost (see storage-guard.ts): emits are refused before they queue. */
    get writable (): boolean {
      return guard?.writable ?? true
    },

    failure,
    lostError,

    /** Stores and commits validated events in one transaction; ids are given by the store (see `appendEvents` for keys). */
    append (events: readonly EventToAppend[], now: number, options: { markConflicts?: boolean } = {}): EventRow[] {
      return write(events.length, () => store.appendEvents(events, now, options))
    },

    /** Scale-out: stores events read from the Redis stream under the ids it gave them. */
    appendLogged (events: readonly LoggedEventToAppend[]): StoredEventRow[] {
      return write(events.length, () => store.appendLoggedEvents(events))
    }
  }
}

export type EventWriter = ReturnType<typeof createEventWriter>
