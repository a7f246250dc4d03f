import Database from 'better-sqlite3'
import { readFileSync, realpathSync, rmSync } from 'node:fs'
import path from 'node:path'
import { DatabaseLockedError } from '../errors.ts'

/**
 * One database file, one service: two services on one file each missed the other's events and
 * disagreed on the active batch. Before the store opens `<db>`, the service takes an exclusive lock
 * on `<db>.lock`, held until it closes, and a second service is refused with the holder's pid.
 *
 * The lock is SQLite's own: `<db>.lock` is a tiny SQLite database opened in `locking_mode=EXCLUSIVE`
 * and written once, so its connection keeps an exclusive POSIX (fcntl) lock on the file for as long as
 * it is open. The kernel releases such a lock when its process ends, however it ends (SIGKILL
 * included): no stale lock to clean up after a crash, no pid-reuse guesswork, no race between two
 * starting services (a pid file has all three). The holder's pid is written into the file's header
 * (`user_version`, bytes 60-63), which a refused process reads with a plain read: SQLite cannot read
 * it past the lock, and the bytes it locks are beyond the file's end.
 *
 * POSIX locks belong to a process, and closing any descriptor of the file drops them all, so this
 * process never reads a lock file it holds itself: locks held here are tracked in `heldHere`.
 * Network file systems may not honour the lock; keep the database on a local disk.
 */

/** `application_id` of a lock file: "SDLK". */
const LOCK_APPLICATION_ID = 0x53444c4b

/** Lock files held by this process (real path → nothing): a second app here is refused without touching the file. */
const heldHere = new Set<string>()

function lockKey (lockPath: string): string {
  try {
    return realpathSync(lockPath)
  } catch {
    return path.resolve(lockPath)
  }
}

/** The pid recorded in a lock file's header, and the holder's command line when /proc shows it. */
function describeHolder (lockPath: string): string {
  let pid: number
  try {
    const header = readFileSync(lockPath).subarray(0, 100)
    if (header.length < 72 || header.readUInt32BE(68) !== LOCK_APPLICATION_ID) return 'another process'
    pid = header.readUInt32BE(60)
  } catch {
    return 'another process'
  }
  let command = ''
  try {
    command = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ').slice(0, 200)
  } catch { /* not Linux, or not ours to read */ }
  return `process ${pid}${command === '' ? '' : ` (${command})`}`
}

function isBusy (error: unknown): boolean {
  const code = (error as { code?: string }).code ?? ''
  return code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')
}

function isDamaged (error: unknown): boolean {
  const code = (error as { code?: string }).code ?? ''
  return code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CORRUPT')
}

/**
 * Takes the exclusive lock for `dbPath` (`<dbPath>.lock`), or throws SPRINT_DATABASE_LOCKED naming
 * the process that holds it. Nothing to lock for `:memory:`.
 *
 * @example
 * const lock = acquireDatabaseLock('sprint-runner.db')
 * // ... open and use the database ...
 * lock.release()
 */
export function acquireDatabaseLock (dbPath: string): { lockPath: string | null, release: () => void } {
  if (dbPath === ':memory:' || dbPath === '') return { lockPath: null, release: () => {} }
  const lockPath = `${dbPath}.lock`
  const key = lockKey(lockPath)
  if (heldHere.has(key)) throw new DatabaseLockedError(dbPath, `this process (${process.pid})`, lockPath)
  for (let attempt = 0; ; attempt++) {
    // No busy wait: a lock that is held is refused at once.
    const lock = new Database(lockPath, { timeout: 0 })
    try {
      lock.pragma('locking_mode = EXCLUSIVE')
      lock.pragma('journal_mode = OFF')
      lock.exec('BEGIN EXCLUSIVE')
      lock.pragma(`application_id = ${LOCK_APPLICATION_ID}`)
      lock.pragma(`user_version = ${process.pid}`)
      lock.exec('COMMIT')
    } catch (error) {
      lock.close()
      if (isBusy(error)) throw new DatabaseLockedError(dbPath, describeHolder(lockPath), lockPath)
      // Locked by us and unreadable (a crash while it was first written): nobody holds it; start it afresh.
      if (isDamaged(error) && attempt === 0) {
        rmSync(lockPath, { force: true })
        continue
      }
      throw error
    }
    const heldKey = lockKey(lockPath)
    heldHere.add(heldKey)
    let released = false
    return {
      lockPath,
      release () {
        if (released) return
        released = true
        heldHere.delete(heldKey)
        // The file stays: removing it could race a service that has just opened it. Closing drops the lock.
        lock.close()
      }
    }
  }
}
