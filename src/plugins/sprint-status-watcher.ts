import type { FastifyBaseLogger, FastifyPluginAsync } from 'fastify'
import { watch, type FSWatcher } from 'node:fs'
import { stat } from 'node:fs/promises'
import type { EventPayload, StoryStatus } from '../events/schemas.ts'
import { FileLimits } from '../events/protocol.ts'
import { InvalidOptionError } from '../errors.ts'
import { SPRINT_STATUS_FILE, SprintStatusParseError, type LastGoodSprintStatus, type StoryStatuses } from '../lib/sprint-status.ts'
import { createSprintStatusFile } from '../lib/sprint-status-file.ts'
import type { EncodedStatuses } from '../lib/sprint-status-parser.ts'

export interface SprintStatusWatcherOptions {
  /** Directory holding `sprint-status.yaml`; watched as a directory so replace-by-rename is seen. */
  artifactsDir: string
  /** Quiet time after the last file-system event before the file is read. Default 100 ms (at most 200). */
  debounceMs?: number
  /** Period of the stat poll that backs up fs.watch (network file systems, editors it misses). Default 500 ms. */
  pollIntervalMs?: number
  /** Told every version that parses, so `GET /api/sprint-status` can serve it while a later one does not. */
  lastGood?: LastGoodSprintStatus
}

export interface SprintStatusWatcherHandlers {
  /**
   * Story status changes of one file change, in file order: at most `FileLimits.statusEventsPerChange`
   * of them, and `changed`, how many there were in all.
   */
  onChanges: (changes: StoryStatus[], changed: number) => void
  /** The file no longer parses; called once per distinct broken content. The last good state is kept. */
  onParseError: (error: SprintStatusParseError) => void
  /**
   * The file cannot be read safely (not a regular file, over a FileLimits bound, too slow); called
   * once per distinct problem. The last good state is kept, and the file is read again when it changes.
   */
  onReadError?: (error: Error & { code?: string }) => void
  log: FastifyBaseLogger
}

const MAX_DEBOUNCE_MS = 200

function isMissing (error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code
  return code === 'ENOENT' || code === 'ENOTDIR'
}

/**
 * Watches `sprint-status.yaml` and reports story status changes against the last good version.
 *
 * - The file as found by `start()` is the baseline: no changes are reported for it. When it is missing
 *   or broken, the stories of the first good version are reported as new (`old_status: null`).
 * - Deleted or empty (mid-write) files keep the last good state; a recreated file is compared to it.
 * - Reads never overlap: a change during a read triggers one more read afterwards.
 * - Reads are safe and bounded (src/lib/sprint-status-file.ts): a FIFO, a link to a device or an
 *   oversized file is reported and skipped, never waited on; `stop()` aborts a read in flight.
 */
export function createSprintStatusWatcher (options: SprintStatusWatcherOptions, handlers: SprintStatusWatcherHandlers) {
  const sprintStatus = createSprintStatusFile(options.artifactsDir)
  const file = sprintStatus.file
  const debounceMs = Math.min(options.debounceMs ?? 100, MAX_DEBOUNCE_MS)
  const pollIntervalMs = options.pollIntervalMs ?? 500
  const { log } = handlers

  /**
   * Statuses of the last good version, encoded (decoded only in the parser's worker when large). Empty
   * until a good version was read: stories of a first good version after a broken or missing baseline are new.
   */
  let lastGood: EncodedStatuses = '[]'
  /** JSON of the last good version read, to skip a rewrite that changed nothing. */
  let lastJson: string | null = null
  /** The last problem reported (parse or read error), so that each is reported once. */
  let lastProblem: unknown = null
  let lastSignature = ''
  let watcher: FSWatcher | null = null
  let debounceTimer: NodeJS.Timeout | null = null
  let pollTimer: NodeJS.Timeout | null = null
  let reading: Promise<void> | null = null
  let readAgain = false
  let stopped = true
  const aborter = new AbortController()

  function reportProblem (error: unknown): void {
    const key = error instanceof SprintStatusParseError ? error : `${(error as { code?: string }).code}: ${(error as Error).message}`
    if (key === lastProblem) return
    lastProblem = key
    if (error instanceof SprintStatusParseError) handlers.onParseError(error)
    else if ((error as { code?: string }).code?.startsWith('SPRINT_') === true) handlers.onReadError?.(error as Error)
    else log.warn({ err: error, file }, 'could not read the sprint status file')
  }

  /** Reads the file and applies it; `baseline` records it without reporting changes. */
  async function readAndApply (baseline: boolean): Promise<void> {
    let snapshot
    try {
      snapshot = await sprintStatus.read(aborter.signal)
    } catch (error) {
      if (stopped) return
      reportProblem(error)
      return
    }
    if (stopped) return
    // An absent or blank file is a state in between (deleted before a rewrite, truncated mid-write): keep what we know.
    if (snapshot.state === 'absent' || snapshot.blank) return
    options.lastGood?.remember(snapshot.json)
    lastProblem = null
    if (snapshot.json === lastJson) return
    lastJson = snapshot.json
    const previous = lastGood
    lastGood = snapshot.statuses
    if (baseline) return
    let diff
    try {
      diff = await sprintStatus.diff(previous, snapshot.statuses, FileLimits.statusEventsPerChange)
    } catch (error) {
      if (!stopped) reportProblem(error)
      return
    }
    if (!stopped && diff.changed > 0) handlers.onChanges(diff.changes, diff.changed)
  }

  /** Reads and applies the file now; a call while a read is running makes that read run once more. */
  function check (): Promise<void> {
    if (reading !== null) {
      readAgain = true
      return reading
    }
    reading = (async () => {
      for (;;) {
        readAgain = false
        await readAndApply(false)
        if (!readAgain || stopped) break
      }
    })().finally(() => { reading = null })
    return reading
  }

  /** Last resort for a bug in `apply` (a handler that throws): logged, and the next change is read as usual. */
  function reportFailure (error: unknown): void {
    log.error({ err: error, file }, 'sprint status check failed')
  }

  function schedule (): void {
    if (stopped) return
    if (debounceTimer !== null) clearTimeout(debounceTimer)
    debounceTimer = setTimeout(() => {
      debounceTimer = null
      check().catch(reportFailure)
    }, debounceMs)
  }

  function startWatching (): void {
    try {
      // Watch the directory, not the file: a file watch dies with the inode when the file is replaced by rename.
      // Persistent and ref'ed like the poll timer: `stop()` (onClose) releases both, and a forgotten close shows as a hang in tests.
      watcher = watch(options.artifactsDir, (_event, name) => {
        if (name === null || name === SPRINT_STATUS_FILE) schedule()
      })
      watcher.on('error', (error) => {
        // Typically the directory itself was removed; the poll re-creates the watcher once it is back.
        log.debug({ err: error }, 'sprint status directory watch failed; polling until it can be re-established')
        watcher?.close()
        watcher = null
      })
    } catch (error) {
      if (!isMissing(error)) log.warn({ err: error, dir: options.artifactsDir }, 'cannot watch the artifacts directory; polling only')
      watcher = null
    }
  }

  async function signature (): Promise<string> {
    try {
      // stat never blocks, whatever the file is.
      const info = await stat(file)
      return `${info.dev}:${info.ino}:${info.size}:${info.mtimeMs}:${info.ctimeMs}`
    } catch (error) {
      return isMissing(error) ? 'absent' : 'unknown'
    }
  }

  async function poll (): Promise<void> {
    if (watcher === null) startWatching()
    const current = await signature()
    if (stopped || current === lastSignature) return
    lastSignature = current
    await check()
  }

  return {
    file,

    /** Reads the baseline, then starts the directory watch and the poll. */
    async start (): Promise<void> {
      stopped = false
      lastSignature = await signature()
      await readAndApply(true)
      if (stopped) return
      startWatching()
      pollTimer = setInterval(() => { poll().catch(reportFailure) }, pollIntervalMs)
    },

    /**
     * Releases the watcher and timers, aborts a read in flight and ends the parser's thread, so nothing
     * is emitted afterwards and nothing a file does can hold up shutdown.
     */
    async stop (): Promise<void> {
      stopped = true
      if (debounceTimer !== null) clearTimeout(debounceTimer)
      if (pollTimer !== null) clearInterval(pollTimer)
      debounceTimer = null
      pollTimer = null
      watcher?.close()
      watcher = null
      aborter.abort(new Error('the sprint status watcher stopped'))
      await sprintStatus.close()
      if (reading !== null) await reading
    },

    check,

    /** The story statuses of the last good version (decoded on each call). */
    get statuses (): StoryStatuses {
      return new Map(JSON.parse(lastGood) as Array<[string, string]>)
    }
  }
}

/**
 * Turns edits of `sprint-status.yaml` into `story:status` events (at most `FileLimits.statusEventsPerChange`
 * per change, then one `error` event `sprint_status_bulk_change`), a file that stops parsing into one
 * `error` event (`type: "sprint_status_parse"`) and one that cannot be read safely (a FIFO, over a limit)
 * into one `sprint_status_unreadable`. Needs `fastify.events` from the host; decorates nothing,
 * so it is a plain encapsulated plugin. The watch starts when the app is ready and stops on close.
 */
const sprintStatusWatcher: FastifyPluginAsync<SprintStatusWatcherOptions> = async function sprintStatusWatcher (fastify, options) {
  if (typeof options.artifactsDir !== 'string' || options.artifactsDir === '') {
    throw new InvalidOptionError('artifactsDir', 'the sprint status watcher needs the artifacts directory')
  }
  for (const name of ['debounceMs', 'pollIntervalMs'] as const) {
    const value = options[name]
    if (value !== undefined && (!Number.isSafeInteger(value) || value <= 0)) {
      throw new InvalidOptionError(name, `expected a positive integer, got ${String(value)}`)
    }
  }
  /** Emits without letting a failure (invalid payload, storage down) escape into the watcher. */
  function emit<T extends 'story:status' | 'error'> (type: T, payload: EventPayload<T>): void {
    try {
      // Promise.resolve: a host's stand-in `events` may return the envelope itself.
      Promise.resolve(fastify.events.emit(type, payload)).catch((error: unknown) => {
        fastify.log.error({ err: error, type }, 'could not emit a sprint status event')
      })
    } catch (error) {
      fastify.log.error({ err: error, type }, 'could not emit a sprint status event')
    }
  }
  const watcher = createSprintStatusWatcher(options, {
    log: fastify.log,
    onChanges: (changes, changed) => {
      // At most FileLimits.statusEventsPerChange events per change, then one summary: a rewrite of a large
      // file used to emit one event per story in one turn (seconds of stall, every dashboard closed as a
      // slow consumer, the retention window filled with status events).
      for (const change of changes) emit('story:status', change)
      const omitted = changed - changes.length
      if (omitted > 0) {
        fastify.log.warn({ changed, sent: changes.length, omitted }, 'sprint-status.yaml changed many stories at once; sending the first ones as story:status and a summary')
        // Pages reload the board from GET /api/sprint-status when they see this event.
        emit('error', {
          type: 'sprint_status_bulk_change',
          message: `${changed} stories changed status in one edit of ${SPRINT_STATUS_FILE}: the first ${changes.length} were sent as story:status ` +
            `events, the other ${omitted} are in GET /api/sprint-status (FileLimits.statusEventsPerChange)`,
          context: { file: SPRINT_STATUS_FILE, changed, sent: changes.length, omitted }
        })
      }
    },
    onReadError: (error) => {
      fastify.log.warn({ file: watcher.file, err: error }, 'sprint status file cannot be read; keeping the last good state')
      emit('error', {
        type: 'sprint_status_unreadable',
        message: error.message,
        context: { file: SPRINT_STATUS_FILE, ...(error.code === undefined ? {} : { code: error.code }) }
      })
    },
    onParseError: (error) => {
      fastify.log.warn({ file: watcher.file, reason: error.message }, 'sprint status file does not parse; keeping the last good state')
      emit('error', {
        type: 'sprint_status_parse',
        message: error.message,
        context: {
          file: SPRINT_STATUS_FILE,
          ...(error.line === undefined ? {} : { line: error.line }),
          ...(error.column === undefined ? {} : { column: error.column })
        }
      })
    }
  })
  fastify.addHook('onReady', async () => { await watcher.start() })
  fastify.addHook('onClose', async () => { await watcher.stop() })
}

export default sprintStatusWatcher
