import { statSync } from 'node:fs'
import { Worker } from 'node:worker_threads'
import { fileURLToPath } from 'node:url'
import type { FastifyBaseLogger } from 'fastify'
import type { Database } from 'better-sqlite3'
import type { CheckpointWorkerCommand, CheckpointWorkerData } from './checkpoint-worker.ts'

/** How often the worker checkpoints the WAL into the database file. */
export const CHECKPOINT_INTERVAL_MS = 1000
/** SQLite's own default, restored on the main connection if the worker goes away. */
const AUTOCHECKPOINT_PAGES = 1000
/**
 * The main connection's threshold while the worker runs: a backstop, not the policy. Only when the
 * worker falls behind (writes without a pause for many seconds) does a commit on the main connection
 * checkpoint, then a large one (10,000 pages: a stall several times longer than the ones this worker saves).
 * It bounds how far the WAL grows while it can be copied; a reader holding an old snapshot can still
 * keep any checkpoint from finishing, as with SQLite's default.
 */
const BACKSTOP_PAGES = 10_000
/** Catch-up passes per round: each copies only the frames committed during the one before. */
const PASSES_PER_ROUND = 5
/** How long `close` waits for the worker to close its connection before terminating it. */
const CLOSE_GRACE_MS = 2000

/**
 * The worker's file next to this one: `.js` in the compiled package, `.ts` when running from source
 * (tsx, tap). Node 20 does not apply ESM loader hooks such as tsx's to a worker thread (not inherited,
 * and `--import tsx` in its execArgv is not honoured), so from source the thread loads the file
 * through tsx's CommonJS require hook instead; the compiled package needs no loader.
 */
const fromSource = import.meta.url.endsWith('.ts')
const workerFile = new URL(`./checkpoint-worker.${fromSource ? 'ts' : 'js'}`, import.meta.url)

function startWorker (workerData: CheckpointWorkerData): Worker {
  if (!fromSource) return new Worker(workerFile, { workerData })
  const tsxRequireHook = fileURLToPath(import.meta.resolve('tsx/cjs'))
  return new Worker(`require(${JSON.stringify(tsxRequireHook)}); require(${JSON.stringify(fileURLToPath(workerFile))})`,
    { eval: true, workerData })
}

/**
 * Moves WAL checkpoints off the event loop. SQLite checkpoints in whichever
 * connection commits when the WAL passes 1,000 pages, so every few hundred
 * commits one stalled the broadcast while it copied pages and fsynced twice
 * (the bench's paced runs saw the longest commits vanish with this worker). A worker
 * thread with its own connection checkpoints every second instead (PASSIVE,
 * so it never blocks the writer), and the main connection's threshold is
 * raised to a backstop once the worker is up. If the worker dies, the default
 * comes back.
 */
export function startCheckpointer (db: Database, dbPath: string, log: FastifyBaseLogger, intervalMs = CHECKPOINT_INTERVAL_MS) {
  const worker = startWorker({ dbPath, intervalMs, passes: PASSES_PER_ROUND })
  // The worker only checkpoints; it must never be what keeps the process alive.
  worker.unref()
  let closing = false
  let fellBack = false
  // A crash emits 'error' and then 'exit': one warning, one pragma.
  const fallBack = (reason: string, err?: unknown): void => {
    if (closing || fellBack) return
    fellBack = true
    log.warn({ err }, `WAL checkpointer ${reason}; checkpointing on the main connection again`)
    if (db.open) db.pragma(`wal_autocheckpoint = ${AUTOCHECKPOINT_PAGES}`)
  }
  worker.once('message', () => {
    if (!closing && db.open) db.pragma(`wal_autocheckpoint = ${BACKSTOP_PAGES}`)
  })
  worker.on('error', err => fallBack('failed', err))
  worker.once('exit', code => fallBack(`exited with code ${code}`))
  const exited = new Promise<void>(resolve => worker.once('exit', () => resolve()))

  return {
    /** Closes the worker's connection and ends the thread; the main connection, closed after it, is then the last one. */
    async close (): Promise<void> {
      closing = true
      worker.postMessage('close' satisfies CheckpointWorkerCommand)
      let grace: NodeJS.Timeout | undefined
      await Promise.race([exited, new Promise<void>(resolve => { grace = setTimeout(resolve, CLOSE_GRACE_MS) })])
      clearTimeout(grace)
      await worker.terminate()
    }
  }
}

/**
 * `startCheckpointer`, once there is something to checkpoint. The worker is a second V8 isolate with
 * its own SQLite connection (and, from source, its own TypeScript loader): memory an idle service
 * does not need. Its WAL is emptied now; a one-`stat` timer (unref'd) then starts the worker the
 * first time the WAL holds anything. Until then nothing can outgrow SQLite's own autocheckpoint.
 * Never throws: without a worker, SQLite's own checkpointing on the main connection still works.
 */
export function startCheckpointerOnFirstWrite (db: Database, dbPath: string, log: FastifyBaseLogger, intervalMs = CHECKPOINT_INTERVAL_MS) {
  const walPath = `${dbPath}-wal`
  let started: ReturnType<typeof startCheckpointer> | null = null
  let closed = false
  try {
    db.pragma('wal_checkpoint(TRUNCATE)')
  } catch (err) {
    log.warn({ err }, 'WAL checkpoint at start-up failed; the checkpointer starts at once')
  }
  const start = (): void => {
    clearInterval(watch)
    if (closed || started !== null) return
    try {
      started = startCheckpointer(db, dbPath, log, intervalMs)
    } catch (err) {
      // No worker threads here (e.g. a permission model): SQLite's own checkpointing still works.
      log.warn({ err }, 'WAL checkpointer could not start; checkpointing on the main connection')
    }
  }
  /** Whether the WAL holds anything; a file that cannot be read (EACCES, EIO) counts as written to. */
  const walWritten = (): boolean => {
    try {
      return (statSync(walPath, { throwIfNoEntry: false })?.size ?? 0) > 0
    } catch {
      return true
    }
  }
  const watch = setInterval(() => { if (walWritten()) start() }, intervalMs)
  watch.unref()
  if (walWritten()) start()

  return {
    /** Whether the worker thread runs (false until the first write). */
    get started (): boolean {
      return started !== null
    },

    async close (): Promise<void> {
      closed = true
      clearInterval(watch)
      await started?.close()
    }
  }
}
