import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { createMetricsRegistry } from '../lib/metrics.ts'

/**
 * `GET /metrics`: the service's counters and the Node process metrics in Prometheus text format
 * (every metric in docs/metrics.md). Registered with the other read-only routes, so it has their
 * guard; on only with the `metrics` option (the standalone server turns it on).
 *
 * @example
 * curl http://127.0.0.1:8080/metrics
 */
const metricsRoute: FastifyPluginAsyncTypebox = async function metricsRoute (fastify) {
  // Built once: the collectors read the broadcaster's live totals at each scrape.
  const registry = createMetricsRegistry(fastify.events)
  fastify.get('/metrics', {
    schema: { response: { 200: Type.String({ description: 'Prometheus text exposition format' }) } }
  }, async (_request, reply) => {
    reply.type(registry.contentType)
    return await registry.metrics()
  })
}

export default metricsRoute
