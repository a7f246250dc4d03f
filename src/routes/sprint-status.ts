import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply } from 'fastify'
import { Type, type Static } from '@sinclair/typebox'
import { ErrorReplySchema, SprintStatusInvalidError, SprintStatusNotFoundError } from '../errors.ts'
import type { ResolvedOptions } from '../options.ts'
import { createLastGoodSprintStatus, SPRINT_STATUS_FILE, SprintStatusParseError, type LastGoodSprintStatus } from '../lib/sprint-status.ts'
import { createSprintStatusFile } from '../lib/sprint-status-file.ts'

export const SprintStatusReplySchema = Type.Object({
  development_status: Type.Optional(Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]))
}, { additionalProperties: true, description: 'sprint-status.yaml as JSON, every top-level key kept' })
export type SprintStatusReply = Static<typeof SprintStatusReplySchema>

/** Set on a 200 that serves the last good version because the current file does not parse; holds why. */
export const SPRINT_STATUS_ERROR_HEADER = 'x-sprint-status-error'

export interface SprintStatusRouteOptions extends Pick<ResolvedOptions, 'artifactsDir'> {
  /** Shared with the watcher, which sees versions no request asked for. Default: the route's own. */
  lastGood?: LastGoodSprintStatus
}

/** A parse message as a header value: printable ASCII on one line (Node refuses anything else), bounded. */
function headerValue (message: string): string {
  return message.replace(/[^\x20-\x7e]+/g, ' ').trim().slice(0, 1000)
}

/**
/**
 * `GET /api/sprint-status`: the sprint file parsed to JSON, checked on each request so it is current
 * whether or not the watcher runs (an unchanged file is neither read nor parsed again). 404 when the
 * file is absent; 413 above `FileLimits.sprintStatusBytes` (or `sprintStatusExpandedBytes` through
 * aliases); 500 when it is not a regular file; 503 when reading or parsing takes too long. While it
 * does not parse (an editor or the sprint runner is half-way through writing it), the last version
 * that did is served with 200 and the parse error in `x-sprint-status-error`; 500
 * `SPRINT_STATUS_INVALID` only when no version ever parsed. (The `error` event for a broken file is
 * the watcher's, once per broken content.)
 */
const sprintStatusRoute: FastifyPluginAsyncTypebox<SprintStatusRouteOptions> = async function sprintStatusRoute (fastify, options) {
  const sprintStatus = createSprintStatusFile(options.artifactsDir)
  const lastGood = options.lastGood ?? createLastGoodSprintStatus()
  fastify.addHook('onClose', async () => { await sprintStatus.close() })

  // The version present at start-up counts as an earlier good one, even if no request read it.
  fastify.addHook('onReady', async () => {
    try {
      const snapshot = await sprintStatus.read()
      if (snapshot.state === 'present' && !snapshot.blank && lastGood.json === null) lastGood.remember(snapshot.json)
    } catch {
      // Absent, unreadable or broken: the first request reports it.
    }
  })

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
    // The JSON text made by the parser is sent as is (Fastify does not serialise a string sent as JSON):
    // a large document is not serialised again on the event loop. The schema still documents its shape.
    const sendJson = (json: string): FastifyReply => reply.type('application/json; charset=utf-8').send(json as unknown as SprintStatusReply)
    let snapshot
    try {
      snapshot = await sprintStatus.read()
    } catch (error) {
      if (!(error instanceof SprintStatusParseError)) throw error
      const previous = lastGood.json
      if (previous === null) throw new SprintStatusInvalidError(error.message)
      reply.header(SPRINT_STATUS_ERROR_HEADER, headerValue(error.message))
      return sendJson(previous)
    }
    if (snapshot.state === 'absent') throw new SprintStatusNotFoundError(options.artifactsDir)
    // Blank is a file being rewritten (truncated, not yet written), as the watcher takes it: not a new good version.
    if (snapshot.blank && lastGood.json !== null) {
      reply.header(SPRINT_STATUS_ERROR_HEADER, `${SPRINT_STATUS_FILE} is empty`)
      return sendJson(lastGood.json)
    }
    if (!snapshot.blank) lastGood.remember(snapshot.json)
    return sendJson(snapshot.json)
  })
}

export default sprintStatusRoute
