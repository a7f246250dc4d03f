import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type, type Static } from '@sinclair/typebox'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { ErrorReplySchema, SprintStatusInvalidError, SprintStatusNotFoundError } from '../errors.ts'
import type { ResolvedOptions } from '../options.ts'
import { parseSprintStatus, SPRINT_STATUS_FILE, SprintStatusParseError } from '../lib/sprint-status.ts'

export const SprintStatusReplySchema = Type.Object({
  development_status: Type.Optional(Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]))
}, { additionalProperties: true, description: 'sprint-status.yaml as JSON, every top-level key kept' })
export type SprintStatusReply = Static<typeof SprintStatusReplySchema>

/**
 * `GET /api/sprint-status`: the sprint file parsed to JSON, read on each request so it is current
 * whether or not the watcher runs. 404 when the file is absent, 500 when it does not parse.
 */
const sprintStatusRoute: FastifyPluginAsyncTypebox<Pick<ResolvedOptions, 'artifactsDir'>> = async function sprintStatusRoute (fastify, options) {
  const file = path.join(options.artifactsDir, SPRINT_STATUS_FILE)

  fastify.get('/api/sprint-status', {
    schema: {
      response: {
        200: SprintStatusReplySchema,
        404: ErrorReplySchema,
        500: ErrorReplySchema
      }
    }
  }, async () => {
    let text: string
    try {
      text = await readFile(file, 'utf8')
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code
      if (code === 'ENOENT' || code === 'ENOTDIR') throw new SprintStatusNotFoundError(options.artifactsDir)
      throw error
    }
    try {
      return parseSprintStatus(text)
    } catch (error) {
      if (error instanceof SprintStatusParseError) throw new SprintStatusInvalidError(error.message)
      throw error
    }
  })
}

export default sprintStatusRoute
