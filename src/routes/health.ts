import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { CloneType, Type, type Static } from '@sinclair/typebox'
import { BrokerStateSchema } from '../events/protocol.ts'

export const StorageHealthSchema = Type.Object({
  code: Type.Optional(Type.String({ description: 'SQLite\'s code of the failure (SQLITE_FULL, SQLITE_IOERR_WRITE, ...), or STORAGE_LOST' })),
  message: Type.Optional(Type.String()),
  since: Type.Optional(Type.Integer({ description: 'When this state began, ms since the epoch' }))
})

export const HealthSchema = Type.Object({
  status: Type.Union([Type.Literal('ok'), Type.Literal('unavailable')], { description: '`unavailable` (and HTTP 503) while events cannot be stored' }),
  storage: Type.Union([Type.Literal('ok'), Type.Literal('error'), Type.Literal('lost')], {
    description: '`error`: the last write failed (disk full, I/O error, read-only or locked file), retried every second; ' +
      '`lost`: the database file or its log was deleted or replaced under the service, which must be restarted'
  }),
  storageError: Type.Optional(StorageHealthSchema),
  broker: Type.Optional(CloneType(BrokerStateSchema, {
    description: 'Scale-out only: Redis, the log of record. `down`: emits get 503 while this instance keeps serving (the status stays 200)'
  })),
  clients: Type.Integer({ description: 'Connected WebSocket clients' }),
  lastEventId: Type.Integer({ description: 'Id of the newest event, 0 when none' }),
  uptimeMs: Type.Integer()
})
export type Health = Static<typeof HealthSchema>

/**
 * `GET /api/health`: liveness, the state of the event store, and the two numbers an operator checks
 * first. 200 while events can be stored, 503 while they cannot (storage `error` or `lost`), so a
 * load balancer or process manager notices.
 */
const healthRoute: FastifyPluginAsyncTypebox = async function healthRoute (fastify) {
  const startedAt = performance.now()
  fastify.get('/api/health', {
    schema: { response: { 200: HealthSchema, 503: HealthSchema } }
  }, async (_request, reply) => {
    const storage = fastify.hasDecorator('sprintStorage') ? fastify.sprintStorage.health : { status: 'ok' as const }
    const { status: storageStatus, ...storageError } = storage
    reply.code(storageStatus === 'ok' ? 200 : 503)
    return {
      status: storageStatus === 'ok' ? 'ok' as const : 'unavailable' as const,
      storage: storageStatus,
      ...(storageStatus === 'ok' ? {} : { storageError }),
      ...(fastify.events.broker === null ? {} : { broker: fastify.events.broker.state }),
      clients: fastify.events.clientCount,
      lastEventId: fastify.events.lastEventId,
      uptimeMs: Math.round(performance.now() - startedAt)
    }
  })
}

export default healthRoute
