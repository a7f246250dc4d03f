import { TypeBoxValidatorCompiler, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type, type Static } from '@sinclair/typebox'
import { EnvelopeSchema, EventInputSchema, type EventInput, type EventTypeName } from '../events/schemas.ts'
import { describeInvalidEvent, validateEventInput } from '../events/validate.ts'
import {
  InvalidEventError,
  InvalidJsonError,
  TooManyEventsError,
  withDetails,
  ErrorReplySchema,
  type ErrorDetail
} from '../errors.ts'
import { createWriteGuard, type WriteGuardOptions } from '../lib/write-guard.ts'
import { RequestLimits } from '../events/protocol.ts'
import { recordIngestRejection } from '../lib/stats.ts'

export const IngestBodySchema = Type.Union([EventInputSchema, Type.Array(EventInputSchema)], {
  description: 'One event {type, payload, timestamp?, idempotencyKey?} or an array of up to 1,000'
})
export type IngestBody = Static<typeof IngestBodySchema>

export const IngestReplySchema = Type.Object({
  events: Type.Array(EnvelopeSchema, { description: 'The stored envelopes, in the order sent' })
})
export type IngestReply = Static<typeof IngestReplySchema>

export type IngestOptions = WriteGuardOptions

/**
 * Field paths for a body Fastify's schema check rejected, in the same form `emitMany` reports
 * (`/3/payload/status`), so every 400 from this route reads the same.
 */
function describeBody (body: unknown): ErrorDetail[] {
  const shapeOf = (item: unknown, prefix: string): ErrorDetail[] => {
    if (typeof item !== 'object' || item === null || Array.isArray(item)) {
      return [{ path: prefix, message: 'Expected an event object {"type": ..., "payload": {...}}' }]
    }
    const details: ErrorDetail[] = []
    for (const key of Object.keys(item)) {
      if (key !== 'type' && key !== 'payload' && key !== 'timestamp' && key !== 'idempotencyKey') {
        details.push({ path: `${prefix}/${key}`, message: 'Unexpected property; an event has only "type", "payload" and an optional "timestamp" and "idempotencyKey"' })
      }
    }
    return [...details, ...validateEventInput(item as { type?: unknown, payload?: unknown, timestamp?: unknown, idempotencyKey?: unknown }, prefix)]
  }
  if (Array.isArray(body)) return body.flatMap((item, index) => shapeOf(item, `/${index}`))
  return shapeOf(body, '')
}

/**
 * `POST /api/events`: events from orchestrators in other processes. One event or an array of up to
 * 1,000; stored all-or-nothing and answered with their envelopes. An event may carry `timestamp` (ms,
 * when it happened; at most 60 s ahead of the server's clock): it becomes the envelope's timestamp.
 * Ids are always the server's.
 *
 * Who may post: see `createWriteGuard` (the token, else loopback peers and same-site pages). The route
 * lives outside the permissive CORS scope and answers preflights itself, without `Access-Control-Allow-Origin`.
 *
 * @example
 * curl -X POST http://127.0.0.1:8080/api/events -H 'content-type: application/json' \
 *   -d '{"type":"batch:start","payload":{"batch_id":1,"max_cycles":2}}'
 */
const ingestRoute: FastifyPluginAsyncTypebox<IngestOptions> = async function ingestRoute (fastify, options) {
  const authorize = createWriteGuard(options)

  // Fastify's own parser answers every failure with the same "Body is not valid JSON" (even for valid
  // JSON holding "__proto__"); this one says why. Prototype keys are then refused with their path: by
  // the closed envelope schema at the top, by validateEvent inside payloads.
  fastify.addContentTypeParser('application/json', { parseAs: 'string' }, function parseIngestJson (_request, body, done) {
    const text = body as string
    try {
      done(null, JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text))
    } catch (err) {
      done(new InvalidJsonError((err as Error).message), undefined)
    }
  })
  // TypeBox rather than Fastify's Ajv, which coerces and strips: it took {"type": ["error"]} as
  // "error" and silently dropped unknown fields (a client-chosen "id") instead of refusing them.
  fastify.setValidatorCompiler(TypeBoxValidatorCompiler)

  fastify.post('/api/events', {
    bodyLimit: RequestLimits.ingestBodyBytes,
    // Authorization runs before the body is read, so a refused request costs no parsing.
    onRequest: authorize,
    // Every refusal, whichever step raised it (guard, body parser, size limit, validation, storage), for GET /metrics.
    onError: async (_request, _reply, error) => {
      recordIngestRejection(fastify.events.stats, error.code)
    },
    // The schema documents and checks the envelope; the handler turns a failure into field paths.
    attachValidation: true,
    schema: {
      body: IngestBodySchema,
      response: {
        201: IngestReplySchema,
        400: ErrorReplySchema,
        401: ErrorReplySchema,
        403: ErrorReplySchema,
        409: ErrorReplySchema,
        413: ErrorReplySchema,
        503: ErrorReplySchema
      }
    }
  }, async (request, reply) => {
    const body: unknown = request.body
    const inputs = Array.isArray(body) ? body as unknown[] : [body]
    if (Array.isArray(body) && body.length > RequestLimits.eventsPerRequest) throw new TooManyEventsError(RequestLimits.eventsPerRequest, body.length)
    if (request.validationError !== undefined) {
      const details = describeBody(body)
      if (details.length === 0) details.push({ path: '', message: request.validationError.message })
      const subject = Array.isArray(body)
        ? `batch of ${inputs.length}`
        : typeof body === 'object' && body !== null ? (body as { type?: unknown }).type ?? 'without a type' : 'request body'
      throw withDetails(new InvalidEventError(describeInvalidEvent(subject, details)), details)
    }
    if (Array.isArray(body)) {
      reply.code(201)
      return { events: await fastify.events.emitMany(body as EventInput[]) }
    }
    // A single event reports its paths without an index (`/payload/status`). emit() resolves once
    // the event is committed, with the other requests' events of the same turn: one commit for all.
    const { type, payload, timestamp, idempotencyKey } = body as EventInput
    const envelope = await fastify.events.emit(type as EventTypeName, payload as never, { timestamp, idempotencyKey })
    reply.code(201)
    return { events: [envelope] }
  })

  // Without this route a preflight would reach @fastify/cors' catch-all OPTIONS route in the read-only
  // scope and be answered with `Access-Control-Allow-Origin: *`. Answering it here, with no CORS
  // headers, makes every browser refuse to send a cross-site POST.
  fastify.options('/api/events', async (_request, reply) => {
    await reply.code(204).header('allow', 'POST, OPTIONS').send()
  })
}

export default ingestRoute
