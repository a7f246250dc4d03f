import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifySchemaCompiler } from 'fastify'
import { Type, type Static, type TObject, type TSchema } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { Limits } from '../events/schemas.ts'
import { BatchNotFoundError, ErrorReplySchema, InvalidRequestError, withDetails, type ErrorDetail } from '../errors.ts'
import { csvRecord } from '../lib/csv.ts'
import { BatchDetailSchema, BatchEventsSchema, BatchListSchema, type BatchEvents } from '../lib/history-schemas.ts'
import { envelopeJson } from '../events/protocol.ts'

const Id = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })

export const BatchListQuerySchema = Type.Object({
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: Limits.batchesPage, default: 20, description: 'batches per page' })),
  offset: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, default: 0, description: 'batches to skip, newest first' }))
})
export type BatchListQuery = Static<typeof BatchListQuerySchema>

export const BatchParamsSchema = Type.Object({ id: Id })
export type BatchParams = Static<typeof BatchParamsSchema>

export const BatchEventsQuerySchema = Type.Object({
  after: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, default: 0, description: 'an event id: the page starts after it' })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: Limits.batchEventsPage, default: 500 }))
})
export type BatchEventsQuery = Static<typeof BatchEventsQuerySchema>

/** The columns of `commands.csv`, in order. */
export const COMMANDS_CSV_COLUMNS = ['batch', 'story', 'epic', 'command', 'task_id', 'status', 'started_at', 'ended_at',
  'duration_s', 'tokens_in', 'tokens_out', 'cost_usd'] as const

/**
 * Checks a path or query object against its TypeBox schema, turning the strings of integer fields
 * into numbers only when they are written as integers. TypeBox's own conversion (and Ajv's coercion)
 * would read `1.5` as 1 and answer for batch 1; here it is refused with the field's path.
 */
const strictQueryCompiler: FastifySchemaCompiler<TSchema> = ({ schema }) => {
  const check = TypeCompiler.Compile(schema)
  const integers = Object.entries((schema as TObject).properties ?? {})
    .filter(([, property]) => property.type === 'integer')
    .map(([key]) => key)
  return (value: unknown) => {
    const input = { ...(value as Record<string, unknown>) }
    for (const key of integers) {
      const raw = input[key]
      if (typeof raw === 'string' && /^-?\d{1,16}$/.test(raw)) input[key] = Number(raw)
    }
    if (check.Check(input)) return { value: input }
    return { error: [...check.Errors(input)].map(error => ({ message: error.message, instancePath: error.path })) as never }
  }
}

const notFound = { 404: ErrorReplySchema, 400: ErrorReplySchema }
const iso = (ms: number | null): string | null => ms === null ? null : new Date(ms).toISOString()

/**
 * Batch history, read-only: `GET /api/batches` (newest first, paged), `/api/batches/:id` (stories,
 * command runs, stats), `/api/batches/:id/events` (its events, paged by id) and
 * `/api/batches/:id/commands.csv` (one row per command run, for spreadsheets).
 * An unknown id is 404 `SPRINT_BATCH_NOT_FOUND`; a bad id or query is 400 `SPRINT_INVALID_REQUEST` with `details`.
 *
 * @example
 * curl 'http://127.0.0.1:8080/api/batches?limit=5'
 * curl -OJ http://127.0.0.1:8080/api/batches/12/commands.csv
 */
const batchesRoutes: FastifyPluginAsyncTypebox = async function batchesRoutes (fastify) {
  const history = fastify.sprintStore.history

  // TypeBox, as the ingest route, so errors carry the JSON pointer that `details` reports.
  fastify.setValidatorCompiler(strictQueryCompiler)
  fastify.setSchemaErrorFormatter(function describeInvalidRequest (errors, dataVar) {
    const details: ErrorDetail[] = errors.map(error => ({ path: error.instancePath || '', message: error.message ?? 'invalid' }))
    const first = details[0]
    return withDetails(new InvalidRequestError(`Invalid ${dataVar}: ${first === undefined ? 'rejected' : `${first.path || '(root)'} ${first.message}`}`), details)
  })

  function requireBatch (id: number): void {
    if (!history.hasBatch(id)) throw new BatchNotFoundError(id)
  }

  fastify.get('/api/batches', {
    schema: { querystring: BatchListQuerySchema, response: { 200: BatchListSchema, 400: ErrorReplySchema } }
  }, async (request) => history.listBatches(request.query.limit ?? 20, request.query.offset ?? 0))

  fastify.get('/api/batches/:id', {
    schema: { params: BatchParamsSchema, response: { 200: BatchDetailSchema, ...notFound } }
  }, async (request, reply) => {
    const detail = history.getBatchDetail(request.params.id, fastify.sprintStore.getLastEventId())
    if (detail === null) throw new BatchNotFoundError(request.params.id)
    // JSON.stringify rather than the schema's compiled serialiser: for 2,000 command runs with their
    // open `metrics` objects it took half the time (bench/history-queries.ts). The object is built by
    // getBatchDetail field by field, so there is nothing for the schema to filter out.
    return reply.type('application/json; charset=utf-8').serializer(JSON.stringify).send(detail)
  })

  fastify.get('/api/batches/:id/events', {
    schema: { params: BatchParamsSchema, querystring: BatchEventsQuerySchema, response: { 200: BatchEventsSchema, ...notFound } }
  }, async (request, reply) => {
    requireBatch(request.params.id)
    const page = history.getBatchEvents(request.params.id, request.query.after ?? 0, request.query.limit ?? 500)
    // The stored payload JSON goes out as it is, as on the WebSocket: no parse and re-serialise per
    // event. Fastify sends a string with a JSON content type unchanged; the schema still documents it.
    const json = `{"events":[${page.rows.map(envelopeJson).join(',')}],"next":${page.next === null ? 'null' : page.next}}`
    return reply.type('application/json; charset=utf-8').send(json as unknown as BatchEvents)
  })

  fastify.get('/api/batches/:id/commands.csv', {
    schema: { params: BatchParamsSchema, response: { 200: Type.String({ description: 'text/csv, RFC 4180, header row first' }), ...notFound } }
  }, async (request, reply) => {
    const id = request.params.id
    requireBatch(id)
    let csv = csvRecord(COMMANDS_CSV_COLUMNS)
    for (const run of history.listCommandRuns(id)) {
      csv += csvRecord([id, run.story_key, run.epic, run.command, run.task_id, run.status, iso(run.started_at), iso(run.ended_at),
        run.duration_ms === null ? null : run.duration_ms / 1000, run.tokens_in, run.tokens_out, run.cost_usd])
    }
    return reply
      .type('text/csv; charset=utf-8')
      .header('Content-Disposition', `attachment; filename="batch-${id}-commands.csv"`)
      .header('X-Content-Type-Options', 'nosniff')
      .send(csv)
  })
}

export default batchesRoutes
