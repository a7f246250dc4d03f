import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type, type Static } from '@sinclair/typebox'

export const HealthSchema = Type.Object({
  status: Type.Literal('ok'),
  clients: Type.Integer({ description: 'Connected WebSocket clients' }),
  lastEventId: Type.Integer({ description: 'Id of the newest event, 0 when none' }),
  uptimeMs: Type.Integer()
})
export type Health = Static<typeof HealthSchema>

/** `GET /api/health`: liveness plus the two numbers an operator checks first. */
const healthRoute: FastifyPluginAsyncTypebox = async function healthRoute (fastify) {
  const startedAt = performance.now()
  fastify.get('/api/health', {
    schema: { response: { 200: HealthSchema } }
  }, async () => ({
    status: 'ok' as const,
    clients: fastify.events.clientCount,
    lastEventId: fastify.events.lastEventId,
    uptimeMs: Math.round(performance.now() - startedAt)
  }))
}

export default healthRoute
