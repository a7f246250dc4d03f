import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type, type Static } from '@sinclair/typebox'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { ErrorReplySchema, SprintStatusInvalidError, SprintStatusNotFoundError } from '../errors.ts'
import type { ResolvedOptions } from '../options.ts'
import {
  createLastGoodSprintStatus,
  parseSprintStatus,
  SPRINT_STATUS_FILE,
  SprintStatusParseError,
  type LastGoodSprintStatus,
  type SprintStatusDocument
} from '../lib/sprint-status.ts'

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
 * `GET /api/sprint-status`: the sprint file parsed to JSON, read on each request so it is current
 * whether or not the watcher runs. 404 when the file is absent. While it does not parse (an editor or
 * the sprint runner is half-way through writing it), the last version that did is served with 200 and
 * the parse error in `x-sprint-status-error`; 500 `SPRINT_STATUS_INVALID` only when no version ever
 * parsed. (The `error` event for a broken file is the watcher's, once per broken content.)
 */
const sprintStatusRoute: FastifyPluginAsyncTypebox<SprintStatusRouteOptions> = async function sprintStatusRoute (fastify, options) {
  const file = path.join(options.artifactsDir, SPRINT_STATUS_FILE)
  const lastGood = options.lastGood ?? createLastGoodSprintStatus()

  /** The file's text, or null when it is absent. */
  async function readText (): Promise<string | null> {
    try {
      return await readFile(file, 'utf8')
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code
      if (code === 'ENOENT' || code === 'ENOTDIR') return null
      throw error
    }
  }

  // The version present at start-up counts as an earlier good one, even if no request read it.
  fastify.addHook('onReady', async () => {
    try {
      const text = await readText()
      if (text !== null && text.trim() !== '' && lastGood.document === null) lastGood.remember(parseSprintStatus(text))
    } catch {
      // Absent, unreadable or broken: the first request reports it.
    }
  })

  fastify.get('/api/sprint-status', {
    schema: {
      response: {
        200: SprintStatusReplySchema,
        404: ErrorReplySchema,
        500: ErrorReplySchema
      }
    }
  }, async (_request, reply): Promise<SprintStatusDocument> => {
    const text = await readText()
    if (text === null) throw new SprintStatusNotFoundError(options.artifactsDir)
    // Empty is a file being rewritten (truncated, not yet written), as the watcher takes it: not a new good version.
    if (text.trim() === '' && lastGood.document !== null) {
      reply.header(SPRINT_STATUS_ERROR_HEADER, `${SPRINT_STATUS_FILE} is empty`)
      return lastGood.document
    }
    try {
      const document = parseSprintStatus(text)
      lastGood.remember(document)
      return document
    } catch (error) {
      if (!(error instanceof SprintStatusParseError)) throw error
      const previous = lastGood.document
      if (previous === null) throw new SprintStatusInvalidError(error.message)
      reply.header(SPRINT_STATUS_ERROR_HEADER, headerValue(error.message))
      return previous
    }
  })
}

export default sprintStatusRoute
