import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import { createStore, type SprintStore } from '../store.ts'
import type { ResolvedOptions } from '../options.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** The SQLite store behind the dashboard: events, batches, stories, commands, background tasks. */
    sprintStore: SprintStore
  }
}

/** Opens the SQLite store (one connection per plugin instance), decorates it as `sprintStore`, closes it on close. */
const storePlugin: FastifyPluginAsync<Pick<ResolvedOptions, 'dbPath'>> = async function storePlugin (fastify, options) {
  const store = createStore(options.dbPath)
  fastify.decorate('sprintStore', store)
  fastify.addHook('onClose', async () => {
    store.close()
  })
}

export default fp(storePlugin, { name: 'sprint-store', fastify: '5.x' })
