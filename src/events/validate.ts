import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler'
import type { TSchema } from '@sinclair/typebox'
import { Limits, PayloadSchemas, type EventTypeName } from './schemas.ts'
import type { ErrorDetail } from '../errors.ts'

// Compiled once at module load: the checkers are plain functions, so the
// per-event cost on the emit path is one function call.
const checkers = new Map<string, TypeCheck<TSchema>>(
  Object.entries(PayloadSchemas).map(([type, schema]) => [type, TypeCompiler.Compile(schema)])
)

const knownTypes = [...checkers.keys()].join(', ')

/** Findings reported for one payload at most, so that a hostile payload cannot make a huge error message. */
const MAX_FINDINGS = 10

/** True when `type` names an event in the catalogue. */
export function isEventType (type: unknown): type is EventTypeName {
  return typeof type === 'string' && checkers.has(type)
}

/**
 * What the schemas cannot say about the open parts of a payload (undeclared fields, error `context`),
 * checked over the whole payload once its schema passed:
 * - nesting deeper than `Limits.depth` (10,000 levels made JSON.stringify overflow the stack);
 * - more than `Limits.properties` properties in one object, property names longer than `Limits.key`,
 *   strings longer than `Limits.message`, arrays longer than `Limits.listItems`: an undeclared field
 *   is kept and fanned out to every client, so it is bounded like a declared one;
 * - numbers JSON cannot carry (`1e309` parses to Infinity and would be stored as null) and values that
 *   are not JSON at all;
 * - keys that pollute prototypes when a client merges the object.
 * Recursion stops at `Limits.depth`, so a cyclic object is reported as too deep rather than looping.
 */
function findUnbounded (value: unknown, path: string, depth: number, details: ErrorDetail[]): void {
  if (typeof value === 'string') {
    if (value.length > Limits.message) details.push({ path, message: `Expected a string of at most ${Limits.message} characters` })
    return
  }
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) details.push({ path, message: 'Expected a finite number (JSON has no NaN or Infinity, and 1e309 parses to Infinity)' })
    return
  }
  if (typeof value === 'bigint' || typeof value === 'function' || typeof value === 'symbol') {
    details.push({ path, message: `Expected a JSON value, got a ${typeof value}` })
    return
  }
  if (typeof value !== 'object' || value === null) return
  if (depth > Limits.depth) {
    details.push({ path, message: `Objects and arrays may be nested at most ${Limits.depth} levels deep` })
    return
  }
  if (Array.isArray(value)) {
    if (value.length > Limits.listItems) {
      details.push({ path, message: `Expected an array of at most ${Limits.listItems} items` })
      return
    }
    for (let index = 0; index < value.length && details.length < MAX_FINDINGS; index++) findUnbounded(value[index], `${path}/${index}`, depth + 1, details)
    return
  }
  const entries = Object.entries(value)
  if (entries.length > Limits.properties) {
    details.push({ path, message: `Expected an object of at most ${Limits.properties} properties` })
    return
  }
  for (const [key, item] of entries) {
    if (details.length >= MAX_FINDINGS) return
    const itemPath = `${path}/${pointerToken(key.length > Limits.key ? `${key.slice(0, 64)}…` : key)}`
    if (key.length > Limits.key) {
      details.push({ path: itemPath, message: `Property names may be at most ${Limits.key} characters long` })
      continue
    }
    if (key === '__proto__' || (key === 'constructor' && typeof item === 'object' && item !== null && Object.hasOwn(item, 'prototype'))) {
      details.push({ path: itemPath, message: `The key "${key}" is not accepted: it can pollute object prototypes` })
      continue
    }
    findUnbounded(item, itemPath, depth + 1, details)
  }
}

/** A property name as one JSON pointer token (RFC 6901). */
function pointerToken (key: string): string {
  return key.replaceAll('~', '~0').replaceAll('/', '~1')
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
  const details: ErrorDetail[] = []
  if (checker.Check(payload)) {
    findUnbounded(payload, `${pathPrefix}/payload`, 1, details)
    return details
  }
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

/**
 * Checks a producer's `timestamp` (ms since the epoch, when the event happened): absent is fine (the
 * server's time is used); otherwise a safe non-negative integer at most `Limits.futureTimestampMs`
 * ahead of `now`. Past times are accepted: events are often sent late (a queue, an import).
 *
 * @example
 * validateTimestamp(Date.now() + 3_600_000, '/0/timestamp') // [{ path: '/0/timestamp', message: 'Expected ... at most 60 s ahead ...' }]
 */
export function validateTimestamp (timestamp: unknown, path: string, now: number = Date.now()): ErrorDetail[] {
  if (timestamp === undefined) return []
  if (typeof timestamp !== 'number' || !Number.isSafeInteger(timestamp) || timestamp < 0) {
    return [{ path, message: `Expected a timestamp in ms since the epoch (a safe non-negative integer), got ${JSON.stringify(timestamp)?.slice(0, 64) ?? typeof timestamp}` }]
  }
  if (timestamp > now + Limits.futureTimestampMs) {
    return [{ path, message: `Expected a timestamp at most ${Limits.futureTimestampMs / 1000} s ahead of the server's clock; ${timestamp} is ${Math.round((timestamp - now) / 1000)} s ahead` }]
  }
  return []
}

/**
 * Checks one event as an emitter sends it: its type and payload (`validateEvent`), its optional
 * `timestamp` (`validateTimestamp`) and its optional `idempotencyKey` (a string of 1 to `Limits.key`
 * characters), with paths prefixed by `pathPrefix`.
 */
export function validateEventInput (input: { type?: unknown, payload?: unknown, timestamp?: unknown, idempotencyKey?: unknown }, pathPrefix = '', now: number = Date.now()): ErrorDetail[] {
  const details = validateEvent(input.type, input.payload, pathPrefix)
  if (input.timestamp !== undefined) details.push(...validateTimestamp(input.timestamp, `${pathPrefix}/timestamp`, now))
  const key = input.idempotencyKey
  if (key !== undefined && (typeof key !== 'string' || key.length === 0 || key.length > Limits.key)) {
    details.push({ path: `${pathPrefix}/idempotencyKey`, message: `Expected a string of 1 to ${Limits.key} characters, got ${JSON.stringify(key)?.slice(0, 64) ?? typeof key}` })
  }
  return details
}
