import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler'
import type { TSchema } from '@sinclair/typebox'
import { PayloadSchemas, type EventTypeName } from './schemas.ts'
import type { ErrorDetail } from '../errors.ts'

// Compiled once at module load: the checkers are plain functions, so the
// per-event cost on the emit path is one function call.
const checkers = new Map<string, TypeCheck<TSchema>>(
  Object.entries(PayloadSchemas).map(([type, schema]) => [type, TypeCompiler.Compile(schema)])
)

const knownTypes = [...checkers.keys()].join(', ')

/** True when `type` names an event in the catalogue. */
export function isEventType (type: unknown): type is EventTypeName {
  return typeof type === 'string' && checkers.has(type)
}

/**
 * Checks one `{ type, payload }` against the catalogue.
 * Returns the failing fields as JSON pointers into the event (`/payload/batch_id`), prefixed by `pathPrefix`
 * (the array index when a batch is checked); an empty list means the event is valid.
 *
 * @example
 * validateEvent('batch:start', { batch_id: 'x', max_cycles: 2 }) // [{ path: '/payload/batch_id', message: 'Expected integer' }]
 */
export function validateEvent (type: unknown, payload: unknown, pathPrefix = ''): ErrorDetail[] {
  if (typeof type !== 'string' || !checkers.has(type)) {
    return [{ path: `${pathPrefix}/type`, message: `Unknown event type ${JSON.stringify(type)}; expected one of ${knownTypes}` }]
  }
  const checker = checkers.get(type)!
  if (checker.Check(payload)) return []
  const details: ErrorDetail[] = []
  const seen = new Set<string>()
  for (const error of checker.Errors(payload)) {
    const path = `${pathPrefix}/payload${error.path}`
    // TypeBox reports a union failure once per branch; one line per field is what a reader needs.
    if (seen.has(path)) continue
    seen.add(path)
    details.push({ path, message: error.message })
  }
  return details
}

/** One readable sentence naming the event type and every failing field. */
export function describeInvalidEvent (type: unknown, details: ErrorDetail[]): string {
  const name = typeof type === 'string' ? type : JSON.stringify(type)
  return `Invalid event "${name}": ${details.map(d => `${d.path} ${d.message}`).join('; ')}`
}
