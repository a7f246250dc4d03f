import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import { createStore, type SprintStore } from '../lib/sqlite-store.ts'
import { startCheckpointerOnFirstWrite } from '../lib/checkpointer.ts'
import { acquireDatabaseLock } from '../lib/database-lock.ts'
import { createStorageGuard, type StorageGuard } from '../lib/storage-guard.ts'
import type { ResolvedOptions } from '../options.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** The SQLite store behind the dashboard: events, batches, stories, commands, background tasks. */
    sprintStore: SprintStore
    /** Watches the store's files and writes: `health` for GET /api/health, `check()` before each commit. */
    sprintStorage: StorageGuard
  }
}

/**
 * Takes the database's lock (one service per database file), opens the SQLite store (one connection
 * per plugin instance), the WAL checkpointer beside it and the storage guard; decorates the store as
 * `sprintStore` and the guard as `sprintStorage`; releases all of them on close.
 */
const storePlugin: FastifyPluginAsync<Pick<ResolvedOptions, 'dbPath'>> = async function storePlugin (fastify, options) {
  const lock = acquireDatabaseLock(options.dbPath)
  let store: SprintStore
  try {
    store = createStore(options.dbPath)
  } catch (err) {
    lock.release()
    throw err
  }
  const guard = createStorageGuard(store.db, options.dbPath, fastify.log)
  if (store.migration.applied.length > 0) {
    fastify.log.info({ from: store.migration.from, to: store.migration.to, applied: store.migration.applied }, 'database schema upgraded')
  }
  // Not before the first write: an idle service holds no worker thread.
  const checkpointer = store.db.memory ? null : startCheckpointerOnFirstWrite(store.db, options.dbPath, fastify.log)
  fastify.decorate('sprintStore', store)
  fastify.decorate('sprintStorage', guard)
  fastify.addHook('onClose', async () => {
    guard.stop()
    // The worker's connection goes first, so that the main one is the last and folds the WAL back in.
    try {
      await checkpointer?.close()
    } finally {
      // Closing the last connection deletes the log by its path: not when that path now holds another file's log.
      if (guard.closable) store.close()
      else fastify.log.error({ dbPath: options.dbPath }, 'leaving the lost database connection open: its log path now holds another file')
      lock.release()
    }
  })
}

export default fp(storePlugin, { name: 'sprint-store', fastify: '5.x' })
