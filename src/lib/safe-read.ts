import { constants, type Stats } from 'node:fs'
import { open, stat, type FileHandle } from 'node:fs/promises'
import { Readable } from 'node:stream'
import { FileNotRegularError, FileTimeoutError, FileTooLargeError } from '../errors.ts'
import { FileLimits } from '../events/protocol.ts'

/**
 * Reading files that others write (agents fill the artifacts directory) without letting one of them
 * hang or swamp the service. Every read here:
 *
 * - opens only regular files: `stat` first (it never blocks, whatever the file), then an open with
 *   O_NONBLOCK, then `fstat` to check that what was opened is that same regular file. Opening a FIFO
 *   for reading blocks until a writer comes, holding one of libuv's four threadpool threads for good;
 *   a link to /dev/zero reads forever. Links are followed, to regular files only;
 * - is bounded in size (the caller's limit, named in the error) and in time (`FileLimits.readTimeoutMs`).
 *   A read still running at its deadline is abandoned: the caller gets an error and the descriptor
 *   is closed whenever the system call returns.
 */

export interface SafeReadOptions {
  /** How the file is named in errors, e.g. `sprint-status.yaml in /srv/artifacts`. */
  label: string
  /** Bytes the file may hold. */
  maxBytes: number
  /** The limit's name for the error message, e.g. `FileLimits.sprintStatusBytes`. */
  limitName: string
  /** Read the first `maxBytes` and stop, rather than refuse a larger file. */
  head?: boolean
  /** Default `FileLimits.readTimeoutMs`. */
  timeoutMs?: number
  /** Aborts the read (shutdown): the promise rejects with the signal's reason at once. */
  signal?: AbortSignal | undefined
}

/** What a file is, in words, for error messages. */
export function describeFileType (stats: Stats): string {
  if (stats.isFIFO()) return 'FIFO (named pipe)'
  if (stats.isCharacterDevice()) return 'character device'
  if (stats.isBlockDevice()) return 'block device'
  if (stats.isSocket()) return 'socket'
  if (stats.isDirectory()) return 'directory'
  return 'special file'
}

/**
 * A file's identity and version: device, inode, size, modification and change times. Equal
 * identities mean "the same content" except within the file system's timestamp granularity, so
 * caches also check `isSettled`.
 */
export function fileIdentity (stats: Stats): string {
  return `${stats.dev}:${stats.ino}:${stats.size}:${stats.mtimeMs}:${stats.ctimeMs}`
}

/**
 * Whether a file's identity can be trusted to change with its content: false while its last change is
 * so recent that another write could still land in the same timestamp tick with the same size (the
 * "racily clean" case git knows). A cache re-reads such a file rather than trust its identity.
 */
export function isSettled (stats: Stats, now = Date.now()): boolean {
  return now - Math.max(stats.mtimeMs, stats.ctimeMs) > 2000
}

function isMissing (error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code
  return code === 'ENOENT' || code === 'ENOTDIR'
}

function tooLarge (options: SafeReadOptions, what: string): Error {
  return new FileTooLargeError(options.label, `${what}, above the limit of ${options.maxBytes} bytes (${options.limitName})`)
}

/**
 * Waits for a file operation until the read's deadline or the abort signal. An operation that
 * settles after that is not waited for; `onAbandoned` gets its result (to close a descriptor).
 */
async function within<T> (operation: Promise<T>, deadline: number, options: SafeReadOptions, onAbandoned?: (value: T) => void): Promise<T> {
  const timeoutMs = options.timeoutMs ?? FileLimits.readTimeoutMs
  return await new Promise<T>((resolve, reject) => {
    let settled = false
    const finish = (): boolean => {
      if (settled) return false
      settled = true
      clearTimeout(timer)
      options.signal?.removeEventListener('abort', onAbort)
      return true
    }
    const timer = setTimeout(() => {
      if (finish()) reject(new FileTimeoutError(options.label, `not read within ${timeoutMs} ms (FileLimits.readTimeoutMs)`))
    }, Math.max(0, deadline - performance.now()))
    const onAbort = (): void => {
      if (finish()) reject(options.signal?.reason ?? new Error('aborted'))
    }
    if (options.signal?.aborted === true) onAbort()
    else options.signal?.addEventListener('abort', onAbort, { once: true })
    operation.then(
      value => { if (finish()) resolve(value); else onAbandoned?.(value) },
      error => { if (finish()) reject(error) }
    )
  })
}

function closeQuietly (handle: FileHandle): void {
  // Not awaited: close() waits for the handle's pending operations, and an abandoned read may never return.
  handle.close().catch(() => {})
}

function deadlineOf (options: SafeReadOptions): number {
  return performance.now() + (options.timeoutMs ?? FileLimits.readTimeoutMs)
}

function checkStats (stats: Stats, options: SafeReadOptions): void {
  if (!stats.isFile()) throw new FileNotRegularError(options.label, describeFileType(stats))
  if (options.head !== true && stats.size > options.maxBytes) throw tooLarge(options, `${stats.size} bytes`)
}

/**
 * The file's stats (links followed), or null when there is no file. Refuses anything that is not a
 * regular file (`SPRINT_FILE_NOT_REGULAR`) and, unless `head`, a file over `maxBytes`
 * (`SPRINT_FILE_TOO_LARGE`). Never opens the file.
 */
export async function statRegularFile (file: string, options: SafeReadOptions): Promise<Stats | null> {
  let stats: Stats
  try {
    stats = await within(stat(file), deadlineOf(options), options)
  } catch (error) {
    if (isMissing(error)) return null
    throw error
  }
  checkStats(stats, options)
  return stats
}

async function openChecked (file: string, options: SafeReadOptions, deadline: number): Promise<{ handle: FileHandle, stats: Stats } | null> {
  let before: Stats
  try {
    before = await within(stat(file), deadline, options)
  } catch (error) {
    if (isMissing(error)) return null
    throw error
  }
  checkStats(before, options)
  let handle: FileHandle
  try {
    // O_NONBLOCK: should the name be swapped for a FIFO between the stat and the open, the open still returns at once.
    handle = await within(open(file, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY), deadline, options, closeQuietly)
  } catch (error) {
    if (isMissing(error)) return null
    throw error
  }
  try {
    const stats = await within(handle.stat(), deadline, options)
    checkStats(stats, options)
    if (stats.dev !== before.dev || stats.ino !== before.ino) throw new FileNotRegularError(options.label, 'file replaced while it was opened')
    return { handle, stats }
  } catch (error) {
    closeQuietly(handle)
    throw error
  }
}

/**
 * Opens a regular file for reading without ever blocking on it, and checks its size; null when
 * there is no file. The caller closes the handle (or hands it to `exactLengthStream`).
 *
 * @example
 * const opened = await openRegularFile(file, { label: 'orchestrator.md', maxBytes: FileLimits.dataFileBytes, limitName: 'FileLimits.dataFileBytes' })
 */
export async function openRegularFile (file: string, options: SafeReadOptions): Promise<{ handle: FileHandle, stats: Stats } | null> {
  return await openChecked(file, options, deadlineOf(options))
}

const CHUNK_BYTES = 64 * 1024

/**
 * Reads a regular file, bounded in size and time; null when there is no file. A file that grows past
 * `maxBytes` while it is read is refused like one that was already too large (unless `head`).
 *
 * @example
 * const read = await readRegularFile(file, { label: 'sprint-status.yaml', maxBytes: FileLimits.sprintStatusBytes, limitName: 'FileLimits.sprintStatusBytes' })
 * if (read !== null) parse(read.data.toString('utf8'))
 */
export async function readRegularFile (file: string, options: SafeReadOptions): Promise<{ data: Buffer, stats: Stats } | null> {
  const deadline = deadlineOf(options)
  const opened = await openChecked(file, options, deadline)
  if (opened === null) return null
  const { handle, stats } = opened
  // One byte more than allowed tells a file that grew past the limit from one that is exactly at it.
  const limit = options.head === true ? options.maxBytes : options.maxBytes + 1
  const chunks: Buffer[] = []
  let total = 0
  try {
    while (total < limit) {
      const buffer = Buffer.allocUnsafe(Math.min(CHUNK_BYTES, limit - total))
      const { bytesRead } = await within(handle.read(buffer, 0, buffer.length, total), deadline, options)
      if (bytesRead === 0) break
      chunks.push(bytesRead === buffer.length ? buffer : buffer.subarray(0, bytesRead))
      total += bytesRead
    }
  } finally {
    closeQuietly(handle)
  }
  if (options.head !== true && total > options.maxBytes) throw tooLarge(options, `more than ${options.maxBytes} bytes (it grew while read)`)
  return { data: Buffer.concat(chunks, total), stats }
}

/**
 * A stream of exactly `size` bytes of an opened file, for a response whose Content-Length says
 * `size`: a file that grows meanwhile is cut at `size`, and one that shrinks makes the stream fail,
 * so the connection is aborted (a client then knows the body is incomplete) rather than ended short
 * of its Content-Length. Closes the handle when it ends.
 */
export function exactLengthStream (handle: FileHandle, size: number, label: string): Readable {
  let position = 0
  const options: SafeReadOptions = { label, maxBytes: size, limitName: 'Content-Length' }
  return new Readable({
    highWaterMark: CHUNK_BYTES,
    read (wanted) {
      if (position >= size) {
        this.push(null)
        return
      }
      const buffer = Buffer.allocUnsafe(Math.min(Math.max(wanted, 1), CHUNK_BYTES, size - position))
      within(handle.read(buffer, 0, buffer.length, position), deadlineOf(options), options).then(({ bytesRead }) => {
        if (bytesRead === 0) {
          this.destroy(new Error(`${label} shrank while it was sent: ${position} of its ${size} bytes`))
          return
        }
        position += bytesRead
        this.push(bytesRead === buffer.length ? buffer : buffer.subarray(0, bytesRead))
      }, (error: Error) => this.destroy(error))
    },
    destroy (error, callback) {
      closeQuietly(handle)
      callback(error)
    }
  })
}
