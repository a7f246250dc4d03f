/**
 * The checkpointer's worker thread (started by `startCheckpointer` in checkpointer.ts): its own
 * connection to the database file, checkpointing the WAL on a timer until told to close.
 */
import { parentPort, workerData } from 'node:worker_threads'
import Database from 'better-sqlite3'

/** What `startCheckpointer` hands the worker. */
export interface CheckpointWorkerData {
  dbPath: string
  intervalMs: number
  /** Catch-up passes per round. */
  passes: number
}

/** What the worker posts back: `ready` once its connection is open. */
export type CheckpointWorkerMessage = 'ready'

/** The one message the worker takes: close the connection and end the thread. */
export type CheckpointWorkerCommand = 'close'

// Only ever loaded as a worker: parentPort is null on the main thread.
if (parentPort !== null) {
  const port = parentPort
  const { dbPath, intervalMs, passes } = workerData as CheckpointWorkerData
  const db = new Database(dbPath, { fileMustExist: true })
  // PASSIVE never waits for a lock, so the writer never waits for it either. SQLite starts the WAL over
  // (instead of growing it) at the first write after every frame was copied; but a pass ends with an
  // fsync, and commits landing meanwhile are left behind. So a round repeats until a pass finds nothing
  // new: that last pass copies nothing, costs microseconds, and leaves the WAL fully copied.
  const checkpoint = (): void => {
    let copied = -1
    for (let pass = 0; pass < passes; pass++) {
      const [result] = db.pragma('wal_checkpoint(PASSIVE)') as Array<{ log: number, checkpointed: number }>
      if (result === undefined || result.log === copied) return
      copied = result.checkpointed === result.log ? result.log : -1
    }
  }
  const timer = setInterval(checkpoint, intervalMs)
  port.on('message', (message: CheckpointWorkerCommand) => {
    if (message !== 'close') return
    clearInterval(timer)
    db.close()
    port.close()
  })
  port.postMessage('ready' satisfies CheckpointWorkerMessage)
}
