import { TypeBoxValidatorCompiler, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { BatchSchema, BatchSizeSchema } from '../events/schemas.ts'
import { ErrorReplySchema, InvalidBatchSizeError, withDetails, type ErrorDetail } from '../errors.ts'
import { createWriteGuard, type WriteGuardOptions } from '../lib/write-guard.ts'

/**
 * The orchestrator routes, on the paths of the sprint runner's own dashboard server so that its page
 * and scripts work against this service:
 *
 *   POST /api/orchestrator/start   { "batch_size": 1..1000 | "all" }  → 202 started
 *   POST /api/orchestrator/stop                                         → 202 stopping | killing, 200 cleaned
 *   GET  /api/orchestrator/status                                       → state, batch, last exit
 *   GET  /api/orchestrator/output?after=<n>                             → the child's last 1,000 output lines
 */

export const StartBodySchema = Type.Object({
  batch_size: BatchSizeSchema
}, { additionalProperties: false })
export type StartBody = Static<typeof StartBodySchema>

export const StartReplySchema = Type.Object({
  status: Type.Literal('started'),
  batch_size: BatchSizeSchema,
  pid: Type.Integer()
})

export const StopReplySchema = Type.Union([
  Type.Object({ status: Type.Union([Type.Literal('stopping'), Type.Literal('killing')]) }),
  Type.Object({ status: Type.Literal('cleaned'), batch_id: Type.Integer() })
])

const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()])

export const StatusReplySchema = Type.Object({
  configured: Type.Boolean(),
  status: Type.Union([Type.Literal('idle'), Type.Literal('running'), Type.Literal('stopping')]),
  pid: Nullable(Type.Integer()),
  batch_size: Nullable(BatchSizeSchema),
  started_at: Nullable(Type.Integer()),
  batch_id: Nullable(Type.Integer()),
  cycles_completed: Nullable(Type.Integer()),
  max_cycles: Nullable(BatchSchema.properties.max_cycles),
  current_stories: Type.Array(Type.String()),
  last_exit: Nullable(Type.Object({
    code: Nullable(Type.Integer()),
    signal: Nullable(Type.String()),
    at: Type.Integer(),
    duration_ms: Type.Number(),
    stop_requested: Type.Boolean({ description: 'The exit followed a stop request' })
  })),
  last_batch: Nullable(BatchSchema)
})

export const OutputQuerySchema = Type.Object({
  // A string checked by pattern: the TypeBox checker does not coerce query strings to numbers.
  after: Type.Optional(Type.String({ pattern: '^\\d{1,15}$', description: 'Line number; only later lines are returned' }))
})

export const OutputReplySchema = Type.Object({
  lines: Type.Array(Type.Object({
    n: Type.Integer(),
    stream: Type.Union([Type.Literal('stdout'), Type.Literal('stderr')]),
    text: Type.String(),
    at: Type.Integer()
  })),
  next: Type.Integer({ description: 'Pass as `after` to get only newer lines' })
})

const startBodyCheck = TypeCompiler.Compile(StartBodySchema)

/** Field paths for a start body that failed its schema, one line per field. */
function describeStartBody (body: unknown): ErrorDetail[] {
  const details: ErrorDetail[] = []
  const seen = new Set<string>()
  for (const error of startBodyCheck.Errors(body)) {
    if (seen.has(error.path)) continue
    seen.add(error.path)
    details.push({
      path: error.path,
      message: error.path === '/batch_size' ? 'Expected an integer from 1 to 1000, or "all"' : error.message
    })
  }
  return details
}

/**
 * This service's own base URL as the orchestrator should use it to post events back: the address
 * it listens on (a wildcard address becomes loopback), the prefix included.
 */
export function serviceUrl (fastify: FastifyInstance, request: FastifyRequest, prefix: string): string {
  const scheme = fastify.initialConfig.https ? 'https' : 'http'
  const address = fastify.server.address()
  if (typeof address === 'object' && address !== null) {
    const host = address.address === '0.0.0.0' ? '127.0.0.1' : address.address === '::' ? '::1' : address.address
    return `${scheme}://${address.family === 'IPv6' ? `[${host}]` : host}:${address.port}${prefix}`
  }
  // Not listening on TCP (a test using inject, a Unix socket): the address the request came to.
  return `${scheme}://${request.headers.host ?? '127.0.0.1'}${prefix}`
}

export type OrchestratorRouteOptions = WriteGuardOptions & { routePrefix: string }

/**
 * Start, stop and output. The write routes share the guard of `POST /api/events` and, like it, live
 * outside the permissive CORS scope and answer preflights without CORS headers; the output (whatever
 * the orchestrator and its agents print) is kept out of that scope too, so no other site can read it.
 */
export const orchestratorControlRoutes: FastifyPluginAsyncTypebox<OrchestratorRouteOptions> = async function orchestratorControlRoutes (fastify, options) {
  const guard = createWriteGuard(options)
  // TypeBox rather than Fastify's Ajv, which coerces in place ({"batch_size": "10"} became 10) and strips unknown keys.
  fastify.setValidatorCompiler(TypeBoxValidatorCompiler)
  const requester = (request: FastifyRequest) => ({ remoteAddress: request.raw.socket.remoteAddress })

  fastify.post('/api/orchestrator/start', {
    onRequest: guard,
    bodyLimit: 4096,
    // The handler turns a failure into field paths.
    attachValidation: true,
    schema: {
      body: StartBodySchema,
      response: {
        202: StartReplySchema,
        400: ErrorReplySchema,
        401: ErrorReplySchema,
        403: ErrorReplySchema,
        409: ErrorReplySchema,
        500: ErrorReplySchema,
        501: ErrorReplySchema
      }
    }
  }, async (request, reply) => {
    const body: unknown = request.body
    if (!startBodyCheck.Check(body)) {
      const details = describeStartBody(body)
      throw withDetails(new InvalidBatchSizeError(`Invalid start request: ${details.map(d => `${d.path || '/'} ${d.message}`).join('; ')}`), details)
    }
    const started = await fastify.orchestrator.start(body.batch_size, serviceUrl(fastify, request, options.routePrefix), requester(request))
    reply.code(202)
    return started
  })

  fastify.post('/api/orchestrator/stop', {
    onRequest: guard,
    schema: {
      response: {
        200: StopReplySchema,
        202: StopReplySchema,
        401: ErrorReplySchema,
        403: ErrorReplySchema,
        409: ErrorReplySchema
      }
    }
  }, async (request, reply) => {
    const result = await fastify.orchestrator.stop(requester(request))
    reply.code(result.status === 'cleaned' ? 200 : 202)
    return result
  })

  fastify.get('/api/orchestrator/output', {
    schema: { querystring: OutputQuerySchema, response: { 200: OutputReplySchema, 400: ErrorReplySchema } }
  }, async (request) => {
    return fastify.orchestrator.output(Number(request.query.after ?? 0))
  })

  // See POST /api/events: without these, preflights would reach the CORS scope's catch-all OPTIONS
  // route and be allowed; answered here with no CORS headers, browsers refuse cross-site requests.
  for (const url of ['/api/orchestrator/start', '/api/orchestrator/stop', '/api/orchestrator/output']) {
    fastify.options(url, async (_request, reply) => {
      await reply.code(204).header('allow', url.endsWith('output') ? 'GET, OPTIONS' : 'POST, OPTIONS').send()
    })
  }
}

/** `GET /api/orchestrator/status`: read-only and harmless, so it sits with the other read-only routes (CORS included). */
export const orchestratorStatusRoute: FastifyPluginAsyncTypebox = async function orchestratorStatusRoute (fastify) {
  fastify.get('/api/orchestrator/status', {
    schema: { response: { 200: StatusReplySchema } }
  }, async () => fastify.orchestrator.status())
}
