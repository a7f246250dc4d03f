import { statSync } from 'node:fs'
import type { FastifyBaseLogger } from 'fastify'
import type { Database } from 'better-sqlite3'

/** How the event store is doing, as GET /api/health reports it. */
export interface StorageHealth {
  /**
   * `ok`; `error`: the last write failed (disk full, I/O error, read-only or locked file) and the
   * service retries by itself; `lost`: the database file or its write-ahead log was deleted or
   * replaced under the running service, which then refuses every event until it is restarted.
   */
  status: 'ok' | 'error' | 'lost'
  /** SQLite's code for an `error` (`SQLITE_FULL`, `SQLITE_IOERR_WRITE`, ...), `STORAGE_LOST` when lost. */
  code?: string
  message?: string
  /** When this state began (ms since the epoch). */
  since?: number
}

/** How often the files are checked and, after a failed write, a write is tried again. */
export const STORAGE_CHECK_INTERVAL_MS = 1000

interface FileIdentity {
  dev: number
  ino: number
}

function identityOf (file: string): FileIdentity | null | 'unknown' {
  try {
    const stats = statSync(file)
    return { dev: stats.dev, ino: stats.ino }
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    return code === 'ENOENT' || code === 'ENOTDIR' ? null : 'unknown'
  }
}

const sameFile = (a: FileIdentity, b: FileIdentity): boolean => a.dev === b.dev && a.ino === b.ino

/**
 * Watches over the event store's files and writes.
 *
 * - **Lost files.** SQLite keeps writing to the files it opened: with the database deleted, or
 *   replaced by an older copy, every write still "succeeded" into a file nobody would see again,
 *   and with its write-ahead log deleted, commits lived only in an unlinked file until a crash took
 *   them. `check()` compares the device and inode at the paths with those opened, before every
 *   commit (two `stat` calls, a few µs) and once a second; on a difference the state becomes `lost`
 *   for good: it is logged at error level, no commit is made again, and the log SQLite opened is
 *   checkpointed into the database file SQLite opened and emptied. So a deleted log loses nothing
 *   acknowledged, and a replacement file is never mixed with this process's log (which is what
 *   corrupted the older copy's index).
 * - **Failed writes.** `recordFailure` turns the state to `error` with SQLite's code; the next
 *   successful commit, or a one-page write tried once a second, turns it back to `ok`.
 *
 * @example
 * const guard = createStorageGuard(store.db, dbPath, log)
 * if (guard.check()) store.appendEvents(events, Date.now())
 */
export function createStorageGuard (db: Database, dbPath: string, log: FastifyBaseLogger, intervalMs = STORAGE_CHECK_INTERVAL_MS) {
  const walPath = `${dbPath}-wal`
  const watched = !db.memory
  const opened = watched ? identityOf(dbPath) : null
  let walOpened = watched ? identityOf(walPath) : null
  let health: StorageHealth = { status: 'ok' }

  /** Why the files at the paths are no longer those SQLite opened; null while they are. */
  function whatChanged (): string | null {
    if (!watched || opened === null || opened === 'unknown') return null
    const current = identityOf(dbPath)
    if (current === null) return `the database file ${dbPath} was deleted`
    if (current !== 'unknown' && !sameFile(current, opened)) return `the database file ${dbPath} was replaced by another file`
    const wal = identityOf(walPath)
    if (walOpened === null || walOpened === 'unknown') {
      // Not there (or not readable) at start: the log SQLite creates is the one to keep an eye on.
      walOpened = wal
      return null
    }
    if (wal === null) return `its write-ahead log ${walPath} was deleted`
    if (wal !== 'unknown' && !sameFile(wal, walOpened)) return `its write-ahead log ${walPath} was replaced by another file`
    return null
  }

  function markLost (reason: string): void {
    health = { status: 'lost', code: 'STORAGE_LOST', message: reason, since: Date.now() }
    if (db.inTransaction) db.exec('ROLLBACK')
    log.error({ dbPath, reason }, `event store lost: ${reason} while the service was running. No event is acknowledged or stored ` +
      'from now on (503 SPRINT_STORAGE_UNAVAILABLE, health storage "lost"); restart the service once the right database file is in place')
    try {
      // Through the descriptors SQLite opened: into this process's own database file and log, never into a file that replaced them.
      const [result] = db.pragma('wal_checkpoint(TRUNCATE)') as Array<{ busy: number, log: number, checkpointed: number }>
      if (result !== undefined && result.busy === 0) {
        log.error({ dbPath, frames: result.checkpointed }, 'the write-ahead log was copied into the database file this process opened, and emptied')
      } else {
        log.error({ dbPath, result }, 'the write-ahead log could not be checkpointed (busy)')
      }
    } catch (err) {
      log.error({ err, dbPath }, 'the write-ahead log could not be checkpointed')
    }
  }

  /** Tries a one-page write (the header's user_version, rewritten as it is) to see whether storage works again. */
  function probe (): void {
    if (db.inTransaction || !db.open) return
    try {
      const version = db.pragma('user_version', { simple: true }) as number
      db.pragma(`user_version = ${version}`)
      recordSuccess()
    } catch (err) {
      const code = (err as { code?: string }).code
      if (health.status === 'error' && code !== undefined) health = { ...health, code, message: (err as Error).message }
    }
  }

  function recordSuccess (): void {
    if (health.status !== 'error') return
    log.info({ dbPath, after: health.code }, 'event store writable again')
    health = { status: 'ok' }
  }

  const timer = setInterval(() => {
    if (health.status === 'lost') return
    const reason = whatChanged()
    if (reason !== null) markLost(reason)
    else if (health.status === 'error') probe()
  }, intervalMs)
  // The store plugin's onClose stops it; it must never be what keeps a process alive.
  timer.unref()

  return {
    /** The state GET /api/health reports. */
    get health (): StorageHealth {
      return health
    },

    /** False once the store is lost: nothing may be appended or committed. */
    get writable (): boolean {
      return health.status !== 'lost'
    },

    /**
     * Checks, just before a commit, that the files are still the ones opened; false (and the state
     * `lost`, with any open transaction rolled back) when they are not.
     */
    check (): boolean {
      if (health.status === 'lost') return false
      const reason = whatChanged()
      if (reason === null) return true
      markLost(reason)
      return false
    },

    /** A write failed: the state becomes `error` with SQLite's code (or `lost`, when that is why). */
    recordFailure (err: unknown): void {
      if (health.status === 'lost') return
      const reason = whatChanged()
      if (reason !== null) {
        markLost(reason)
        return
      }
      const code = (err as { code?: string }).code ?? 'UNKNOWN'
      if (health.status !== 'error' || health.code !== code) {
        health = { status: 'error', code, message: (err as Error).message, since: health.status === 'error' ? health.since! : Date.now() }
      }
    },

    recordSuccess,

    /**
     * Whether closing the connection is safe: SQLite deletes the log by its path when the last
     * connection closes, which must not hit a log that replaced this process's own.
     */
    get closable (): boolean {
      if (health.status !== 'lost' || walOpened === null || walOpened === 'unknown') return true
      const wal = identityOf(walPath)
      return wal === null || wal === 'unknown' || sameFile(wal, walOpened)
    },

    stop (): void {
      clearInterval(timer)
    }
  }
}

export type StorageGuard = ReturnType<typeof createStorageGuard>
