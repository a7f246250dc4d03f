import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type, type Static } from '@sinclair/typebox'
import { ErrorReplySchema, SprintStatusInvalidError, SprintStatusNotFoundError } from '../errors.ts'
import type { ResolvedOptions } from '../options.ts'
import { SprintStatusParseError } from '../lib/sprint-status.ts'
import { createSprintStatusFile } from '../lib/sprint-status-file.ts'

export const SprintStatusReplySchema = Type.Object({
  development_status: Type.Optional(Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]))
}, { additionalProperties: true, description: 'sprint-status.yaml as JSON, every top-level key kept' })
export type SprintStatusReply = Static<typeof SprintStatusReplySchema>

/**
 * `GET /api/sprint-status`: the sprint file parsed to JSON, checked on each request so it is current
 * whether or not the watcher runs (an unchanged file is neither read nor parsed again). 404 when the
 * file is absent, 500 when it does not parse or is not a regular file, 413 above
 * `FileLimits.sprintStatusBytes` (or `sprintStatusExpandedBytes` through aliases), 503 when reading
 * or parsing takes too long.
 */
const sprintStatusRoute: FastifyPluginAsyncTypebox<Pick<ResolvedOptions, 'artifactsDir'>> = async function sprintStatusRoute (fastify, options) {
  const sprintStatus = createSprintStatusFile(options.artifactsDir)
  fastify.addHook('onClose', async () => { await sprintStatus.close() })

  fastify.get('/api/sprint-status', {
    schema: {
      response: {
        200: SprintStatusReplySchema,
        404: ErrorReplySchema,
        413: ErrorReplySchema,
        500: ErrorReplySchema,
        503: ErrorReplySchema
      }
    }
  }, async (_request, reply) => {
    let snapshot
    try {
      snapshot = await sprintStatus.read()
    } catch (error) {
      if (error instanceof SprintStatusParseError) throw new SprintStatusInvalidError(error.message)
      throw error
    }
    if (snapshot.state === 'absent') throw new SprintStatusNotFoundError(options.artifactsDir)
    // The JSON text made by the parser, sent as is (Fastify does not serialise a string sent as JSON):
    // a large document is not serialised again on the event loop. The schema still documents its shape.
    return reply.type('application/json; charset=utf-8').send(snapshot.json as unknown as SprintStatusReply)
  })
}

export default sprintStatusRoute
