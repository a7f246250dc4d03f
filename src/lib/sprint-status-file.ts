import path from 'node:path'
import { FileLimits } from '../events/protocol.ts'
import { fileIdentity, isSettled, readRegularFile, statRegularFile, type SafeReadOptions } from './safe-read.ts'
import { createSprintStatusParser, type EncodedStatuses, type ParsedSprintStatus, type StatusDiff } from './sprint-status-parser.ts'
import { SPRINT_STATUS_FILE } from './sprint-status.ts'

/** sprint-status.yaml as read now. */
export type SprintStatusSnapshot =
  | { state: 'absent' }
  | {
    state: 'present'
    /** Device, inode, size and times of the file read (see `fileIdentity`). */
    identity: string
    /** Only whitespace: a file caught mid-write, or truncated before a rewrite. */
    blank: boolean
  } & ParsedSprintStatus

interface CacheEntry {
  identity: string
  settled: boolean
  text: string
  /** The parse's outcome for this text: a snapshot, or the error it raised. */
  outcome: { snapshot: SprintStatusSnapshot } | { error: unknown }
  /** `performance.now()` after which the outcome is not reused (a timeout may have been the machine's load). */
  expiresAt: number
}

/** How long a parse that timed out is not tried again for the same text. */
const TIMEOUT_RETRY_MS = 30_000

/**
 * Reads and parses `sprint-status.yaml` from the artifacts directory, safely (src/lib/safe-read.ts:
 * regular files only, `FileLimits.sprintStatusBytes`, `FileLimits.readTimeoutMs`) and off the event
 * loop when large (src/lib/sprint-status-parser.ts). The last outcome is cached by the file's
 * identity (device, inode, size, times): a file that has not changed is neither read nor parsed
 * again, and one whose text is unchanged is not parsed again, so repeated requests for a large or a
 * broken file cost a `stat`. Shared by GET /api/sprint-status and the watcher (one instance each).
 *
 * @example
 * const sprintStatus = createSprintStatusFile(artifactsDir)
 * const snapshot = await sprintStatus.read() // { state: 'absent' } or { state: 'present', json, statuses, ... }
 * await sprintStatus.close()
 */
export function createSprintStatusFile (artifactsDir: string) {
  const file = path.join(artifactsDir, SPRINT_STATUS_FILE)
  const parser = createSprintStatusParser()
  let cache: CacheEntry | null = null

  function optionsFor (signal: AbortSignal | undefined): SafeReadOptions {
    return {
      label: `${SPRINT_STATUS_FILE} in ${artifactsDir}`,
      maxBytes: FileLimits.sprintStatusBytes,
      limitName: 'FileLimits.sprintStatusBytes',
      signal
    }
  }

  function replay (entry: CacheEntry): SprintStatusSnapshot {
    if ('error' in entry.outcome) throw entry.outcome.error
    return entry.outcome.snapshot
  }

  async function parse (text: string, identity: string): Promise<CacheEntry['outcome']> {
    try {
      const parsed = await parser.parse(text)
      return {
        snapshot: { state: 'present', identity, blank: text.trim() === '', ...parsed }
      }
    } catch (error) {
      return { error }
    }
  }

  return {
    file,

    /**
     * The file now: `absent`, or `present` with its JSON and (encoded) story statuses.
     * @throws SPRINT_FILE_NOT_REGULAR, SPRINT_FILE_TOO_LARGE, SPRINT_FILE_TIMEOUT, or a
     *   SprintStatusParseError for a file that does not parse
     */
    async read (signal?: AbortSignal): Promise<SprintStatusSnapshot> {
      const options = optionsFor(signal)
      const stats = await statRegularFile(file, options)
      if (stats === null) return { state: 'absent' }
      if (cache !== null && performance.now() > cache.expiresAt) cache = null
      if (cache !== null && cache.settled && cache.identity === fileIdentity(stats)) return replay(cache)
      const read = await readRegularFile(file, options)
      if (read === null) return { state: 'absent' }
      const identity = fileIdentity(read.stats)
      const text = read.data.toString('utf8')
      const settled = isSettled(read.stats)
      if (cache !== null && cache.text === text) {
        cache = { ...cache, identity, settled }
        if ('snapshot' in cache.outcome && cache.outcome.snapshot.state === 'present') {
          cache.outcome = { snapshot: { ...cache.outcome.snapshot, identity } }
        }
        return replay(cache)
      }
      const outcome = await parse(text, identity)
      const timedOut = 'error' in outcome && (outcome.error as { code?: string }).code === 'SPRINT_FILE_TIMEOUT'
      cache = { identity, settled, text, outcome, expiresAt: timedOut ? performance.now() + TIMEOUT_RETRY_MS : Infinity }
      return replay(cache)
    },

    /** The story status changes between two reads' `statuses`, off the event loop when large (see the parser's `diff`). */
    async diff (previous: EncodedStatuses, next: EncodedStatuses, limit: number): Promise<StatusDiff> {
      return await parser.diff(previous, next, limit)
    },

    /** Ends the parser's worker thread. */
    async close (): Promise<void> {
      cache = null
      await parser.close()
    }
  }
}

export type SprintStatusFile = ReturnType<typeof createSprintStatusFile>
