import type { FastifyBaseLogger, FastifyPluginAsync } from 'fastify'
import { watch, type FSWatcher } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import path from 'node:path'
import type { StoryStatus } from '../events/schemas.ts'
import { InvalidOptionError } from '../errors.ts'
import {
  diffStoryStatuses,
  extractStoryStatuses,
  parseSprintStatus,
  SPRINT_STATUS_FILE,
  SprintStatusParseError,
  type LastGoodSprintStatus,
  type StoryStatuses
} from '../lib/sprint-status.ts'

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
  /** Story status changes of one file change, in file order. */
  onChanges: (changes: StoryStatus[]) => void
  /** The file no longer parses; called once per distinct broken content. The last good state is kept. */
  onParseError: (error: SprintStatusParseError) => void
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
 */
export function createSprintStatusWatcher (options: SprintStatusWatcherOptions, handlers: SprintStatusWatcherHandlers) {
  const file = path.join(options.artifactsDir, SPRINT_STATUS_FILE)
  const debounceMs = Math.min(options.debounceMs ?? 100, MAX_DEBOUNCE_MS)
  const pollIntervalMs = options.pollIntervalMs ?? 500
  const { log } = handlers

  /** Empty until a good version was read: stories of a first good version after a broken or missing baseline are new. */
  let lastGood: StoryStatuses = new Map()
  /** Text of the last read, good or broken; null when the file was absent. */
  let lastText: string | null = null
  let lastSignature = ''
  let watcher: FSWatcher | null = null
  let debounceTimer: NodeJS.Timeout | null = null
  let pollTimer: NodeJS.Timeout | null = null
  let reading: Promise<void> | null = null
  let readAgain = false
  let stopped = true

  async function readText (): Promise<string | null> {
    try {
      return await readFile(file, 'utf8')
    } catch (error) {
      if (isMissing(error)) return null
      throw error
    }
  }

  function apply (text: string | null, baseline: boolean): void {
    // An absent or empty file is a state in between (deleted before a rewrite, truncated mid-write): keep what we know.
    if (text === null || text.trim() === '') {
      lastText = text
      return
    }
    if (text === lastText) return
    lastText = text
    let statuses: Map<string, string>
    try {
      const document = parseSprintStatus(text)
      options.lastGood?.remember(document)
      statuses = extractStoryStatuses(document)
    } catch (error) {
      if (!(error instanceof SprintStatusParseError)) throw error
      handlers.onParseError(error)
      return
    }
    const previous = lastGood
    lastGood = statuses
    if (baseline) return
    const changes = diffStoryStatuses(previous, statuses)
    if (changes.length > 0) handlers.onChanges(changes)
  }

  async function readOnce (): Promise<void> {
    let text: string | null
    try {
      text = await readText()
    } catch (error) {
      log.warn({ err: error, file }, 'could not read the sprint status file')
      return
    }
    if (stopped) return
    apply(text, false)
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
        await readOnce()
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

  async function poll (): Promise<void> {
    if (watcher === null) startWatching()
    let signature: string
    try {
      const info = await stat(file)
      signature = `${info.ino}:${info.size}:${info.mtimeMs}`
    } catch (error) {
      if (!isMissing(error)) return
      signature = 'absent'
    }
    if (stopped || signature === lastSignature) return
    lastSignature = signature
    await check()
  }

  return {
    file,

    /** Reads the baseline, then starts the directory watch and the poll. */
    async start (): Promise<void> {
      stopped = false
      try {
        const info = await stat(file)
        lastSignature = `${info.ino}:${info.size}:${info.mtimeMs}`
      } catch {
        lastSignature = 'absent'
      }
      let text: string | null = null
      try {
        text = await readText()
      } catch (error) {
        log.warn({ err: error, file }, 'could not read the sprint status file; treating it as absent')
      }
      apply(text, true)
      if (stopped) return
      startWatching()
      pollTimer = setInterval(() => { poll().catch(reportFailure) }, pollIntervalMs)
    },

    /** Releases the watcher and timers and waits for a read in flight, so nothing is emitted afterwards. */
    async stop (): Promise<void> {
      stopped = true
      if (debounceTimer !== null) clearTimeout(debounceTimer)
      if (pollTimer !== null) clearInterval(pollTimer)
      debounceTimer = null
      pollTimer = null
      watcher?.close()
      watcher = null
      if (reading !== null) await reading
    },

    check,

    /** The story statuses of the last good version. */
    get statuses (): StoryStatuses {
      return lastGood
    }
  }
}

/**
 * Turns edits of `sprint-status.yaml` into `story:status` events, and a file that stops parsing into one
 * `error` event (`type: "sprint_status_parse"`). Needs `fastify.events` from the host; decorates nothing,
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
  const watcher = createSprintStatusWatcher(options, {
    log: fastify.log,
    onChanges: (changes) => {
      for (const change of changes) {
        try {
          fastify.events.emit('story:status', change)
        } catch (error) {
          fastify.log.error({ err: error, change }, 'could not emit story:status')
        }
      }
    },
    onParseError: (error) => {
      fastify.log.warn({ file: watcher.file, reason: error.message }, 'sprint status file does not parse; keeping the last good state')
      try {
        fastify.events.emit('error', {
          type: 'sprint_status_parse',
          message: error.message,
          context: {
            file: SPRINT_STATUS_FILE,
            ...(error.line === undefined ? {} : { line: error.line }),
            ...(error.column === undefined ? {} : { column: error.column })
          }
        })
      } catch (emitError) {
        fastify.log.error({ err: emitError }, 'could not emit the sprint status parse error')
      }
    }
  })
  fastify.addHook('onReady', async () => { await watcher.start() })
  fastify.addHook('onClose', async () => { await watcher.stop() })
}

export default sprintStatusWatcher
