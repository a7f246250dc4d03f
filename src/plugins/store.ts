import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import { createStore, type SprintStore } from '../lib/sqlite-store.ts'
import { startCheckpointer } from '../lib/checkpointer.ts'
import type { ResolvedOptions } from '../options.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** The SQLite store behind the dashboard: events, batches, stories, commands, background tasks. */
    sprintStore: SprintStore
  }
}

/**
 * Opens the SQLite store (one connection per plugin instance) and, for a database file, the WAL
 * checkpointer beside it; decorates the store as `sprintStore`; closes both on close.
 */
const storePlugin: FastifyPluginAsync<Pick<ResolvedOptions, 'dbPath'>> = async function storePlugin (fastify, options) {
  const store = createStore(options.dbPath)
  if (store.migration.applied.length > 0) {
    fastify.log.info({ from: store.migration.from, to: store.migration.to, applied: store.migration.applied }, 'database schema upgraded')
  }
  let checkpointer: ReturnType<typeof startCheckpointer> | null = null
  if (!store.db.memory) {
    try {
      checkpointer = startCheckpointer(store.db, options.dbPath, fastify.log)
    } catch (err) {
      // No worker threads here (e.g. a permission model): SQLite's own checkpointing still works.
      fastify.log.warn({ err }, 'WAL checkpointer could not start; checkpointing on the main connection')
    }
  }
  fastify.decorate('sprintStore', store)
  fastify.addHook('onClose', async () => {
    // The worker's connection goes first, so that the main one is the last and folds the WAL back in.
    try {
      await checkpointer?.close()
    } finally {
      store.close()
    }
  })
}

export default fp(storePlugin, { name: 'sprint-store', fastify: '5.x' })
