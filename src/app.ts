import fp from 'fastify-plugin'
import cors from '@fastify/cors'
import type { FastifyError, FastifyPluginAsync } from 'fastify'
import { STATUS_CODES } from 'node:http'
import storePlugin from './plugins/store.ts'
import eventsPlugin from './plugins/events.ts'
import wsRoutes from './routes/ws.ts'
import dashboardFiles from './routes/dashboard-files.ts'
import storyDescriptionsRoute from './routes/story-descriptions.ts'
import healthRoute from './routes/health.ts'
import sprintStatusRoute from './routes/sprint-status.ts'
import ingestRoute from './routes/ingest.ts'
import upstreamImportsRoute from './routes/upstream-imports.ts'
import batchesRoutes from './routes/batches.ts'
import sprintStatusWatcher from './plugins/sprint-status-watcher.ts'
import orchestratorPlugin from './plugins/orchestrator.ts'
import { orchestratorControlRoutes, orchestratorStatusRoute } from './routes/orchestrator.ts'
import { resolveOptions, type SprintDashboardOptions } from './options.ts'
import { createLastGoodSprintStatus } from './lib/sprint-status.ts'
import type { ErrorDetail } from './errors.ts'

export type { SprintDashboardOptions } from './options.ts'

/**
 * The whole service as one plugin. Decorates the parent with `events` (the
 * broadcaster), `sprintStore` and `orchestrator` (the supervisor of the
 * orchestrator process); puts every route under `options.prefix`.
 *
 * @example
 * import Fastify from 'fastify'
 * import sprintDashboard from 'sprint-dashboard'
 * const app = Fastify({ logger: true })
 * await app.register(sprintDashboard, { prefix: '/sprint', dbPath: 'sprint.db' })
 * app.events.emit('batch:start', { batch_id: 1, max_cycles: 2 })
 */
const sprintDashboardPlugin: FastifyPluginAsync<SprintDashboardOptions> = async function sprintDashboard (fastify, rawOptions) {
  // `prefix` is kept out of the options handed to child plugins: Fastify would apply it to each of them again.
  const { prefix, ...options } = resolveOptions(rawOptions)
  await fastify.register(storePlugin, options)
  await fastify.register(eventsPlugin, options)
  // After the events and store plugins, so that its onClose (which stops the orchestrator and records
  // the exit) runs before theirs: onClose hooks run in reverse order of registration.
  await fastify.register(orchestratorPlugin, { orchestrator: options.orchestrator, ingestToken: options.ingestToken })
  // What the route and the watcher both read: the last version of sprint-status.yaml that parsed.
  const lastGoodSprintStatus = createLastGoodSprintStatus()

  // Set before the server stops listening: a response that ends after that closes its connection, or
  // a keep-alive client would hold the server open until its keep-alive timeout (a POST still being
  // received at SIGTERM made the process wait out its whole grace period and exit 1).
  let closing = false
  fastify.addHook('preClose', async () => { closing = true })

  // fastify-plugin drops Fastify's own prefix handling, so the routes get an
  // encapsulated scope of their own with the prefix applied here.
  await fastify.register(async function sprintRoutes (routes) {
    routes.setErrorHandler(function sprintErrorHandler (error: FastifyError & { details?: ErrorDetail[] }, request, reply) {
      const statusCode = error.statusCode ?? 500
      if (statusCode >= 500) request.log.error({ err: error }, 'request failed')
      reply.status(statusCode).send({
        statusCode,
        code: error.code,
        error: STATUS_CODES[statusCode] ?? 'Error',
        // Our own errors (SPRINT_ codes) are written to be read by the caller, whatever their status;
        // unexpected failures keep their details in the log, not on the wire.
        message: statusCode >= 500 && !String(error.code).startsWith('SPRINT_') ? 'Internal Server Error' : error.message,
        ...(error.details === undefined ? {} : { details: error.details })
      })
    })

    routes.addHook('onSend', async (_request, reply, payload) => {
      if (closing) reply.header('connection', 'close')
      return payload
    })

    await routes.register(wsRoutes, options)

    // Read-only routes share the permissive CORS of the original dashboard
    // server; write routes live outside this scope so CORS never covers them.
    await routes.register(async function readOnlyRoutes (readOnly) {
      await readOnly.register(cors, { origin: options.corsOrigin })
      await readOnly.register(healthRoute)
      await readOnly.register(storyDescriptionsRoute, options)
      await readOnly.register(dashboardFiles, options)
      await readOnly.register(orchestratorStatusRoute)
      await readOnly.register(sprintStatusRoute, { artifactsDir: options.artifactsDir, lastGood: lastGoodSprintStatus })
      await readOnly.register(batchesRoutes)
      // prom-client is loaded only when the route is on: off by default in a host app, which then does not carry it.
      if (options.metrics) await readOnly.register(import('./routes/metrics.ts'))
    })

    // integration: write routes (POST /api/events) and the sprint-status watcher go here
    // (they get only the options they read: a `prefix` key in register options would prefix them twice)
    await routes.register(ingestRoute, { ingestToken: options.ingestToken, allowedOrigins: options.allowedOrigins, allowedHosts: options.allowedHosts })
    await routes.register(upstreamImportsRoute, { ingestToken: options.ingestToken, allowedOrigins: options.allowedOrigins, allowedHosts: options.allowedHosts })
    await routes.register(orchestratorControlRoutes, { ingestToken: options.ingestToken, allowedOrigins: options.allowedOrigins, allowedHosts: options.allowedHosts, routePrefix: prefix })
    if (options.watchSprintStatus) await routes.register(sprintStatusWatcher, { artifactsDir: options.artifactsDir, lastGood: lastGoodSprintStatus })
  }, { prefix })
}

export const sprintDashboard = fp(sprintDashboardPlugin, {
  name: 'sprint-dashboard',
  fastify: '5.x'
})

export default sprintDashboard
