import { TypeBoxValidatorCompiler, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type, type Static } from '@sinclair/typebox'
import { Limits } from '../events/schemas.ts'
import { ErrorReplySchema } from '../errors.ts'
import { readUpstreamImportState } from '../lib/upstream-imports.ts'
import { createWriteGuard, type WriteGuardOptions } from '../lib/write-guard.ts'

export const UpstreamImportsQuerySchema = Type.Object({
  db: Type.String({ minLength: 1, maxLength: Limits.key, description: 'Identity of the sprint runner database, as import-upstream computes it' })
}, { additionalProperties: false })

export const UpstreamImportsReplySchema = Type.Object({
  imported: Type.Array(Type.String(), { description: 'table/row/type of every event already imported from that database' }),
  batches: Type.Array(Type.Integer(), { description: 'Every batch id the service has, imported or sent live' }),
  running: Type.Union([Type.Integer(), Type.Null()], { description: 'The batch the service shows as running' })
})
export type UpstreamImportsReply = Static<typeof UpstreamImportsReplySchema>

/**
 * `GET /api/upstream-imports`: what `import-upstream --url` already brought from one sprint runner
 * database. Only an ingest client needs it, so it has the ingest route's guard and no CORS.
 */
const upstreamImportsRoute: FastifyPluginAsyncTypebox<WriteGuardOptions> = async function upstreamImportsRoute (fastify, options) {
  const authorize = createWriteGuard(options)
  // TypeBox refuses an unknown query key where Fastify's Ajv would strip it silently.
  fastify.setValidatorCompiler(TypeBoxValidatorCompiler)
  fastify.get('/api/upstream-imports', {
    onRequest: authorize,
    schema: {
      querystring: UpstreamImportsQuerySchema,
      response: {
        200: UpstreamImportsReplySchema,
        400: ErrorReplySchema,
        401: ErrorReplySchema,
        403: ErrorReplySchema
      }
    }
  }, async (request) => readUpstreamImportState(fastify.sprintStore.db, request.query.db))
}

export default upstreamImportsRoute
