import type { FastifyRequest } from 'fastify'
import { createHash, timingSafeEqual } from 'node:crypto'
import { IngestNotLoopbackError, IngestUnauthorizedError, OriginNotAllowedError } from '../errors.ts'
import { isOriginAllowed } from './origin.ts'
import type { ResolvedOptions } from '../options.ts'

export type WriteGuardOptions = Pick<ResolvedOptions, 'ingestToken' | 'allowedOrigins'>

/** 127.0.0.0/8 and ::1, also in their IPv4-mapped IPv6 form. */
export function isLoopbackAddress (address: string | undefined): boolean {
  if (address === undefined) return false
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address
  return v4 === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4)
}

/** Compares digests, so neither the token's content nor its length leaks through timing. */
function tokenMatches (header: string | undefined, digest: Buffer): boolean {
  const match = header === undefined ? null : /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header)
  if (match === null) return false
  return timingSafeEqual(createHash('sha256').update(match[1]!).digest(), digest)
}

/**
 * The one guard of every route that changes something (`POST /api/events`, starting and stopping the
 * orchestrator), as an `onRequest` hook, so it runs before a body is read.
 *
 * With `ingestToken`, anyone presenting it (remote emitters, scripts). Without one, only this machine
 * (loopback peers) and, when a browser sends the request, only pages the WebSocket would also accept:
 * a web page open in the operator's browser can neither inject events nor start a sprint. Routes
 * using it must live outside the permissive CORS scope and answer their preflights without CORS headers.
 *
 * A reverse proxy on the same machine makes every peer loopback: set `ingestToken` behind one.
 *
 * @example
 * fastify.post('/api/orchestrator/start', { onRequest: createWriteGuard(options) }, handler)
 */
export function createWriteGuard (options: WriteGuardOptions): (request: FastifyRequest) => Promise<void> {
  const tokenDigest = options.ingestToken === undefined ? null : createHash('sha256').update(options.ingestToken).digest()
  return async function writeGuard (request: FastifyRequest): Promise<void> {
    if (tokenDigest !== null) {
      if (!tokenMatches(request.headers.authorization, tokenDigest)) {
        throw new IngestUnauthorizedError(`${request.method} ${request.routeOptions.url ?? request.url}`)
      }
      return
    }
    const peer = request.raw.socket.remoteAddress
    if (!isLoopbackAddress(peer)) throw new IngestNotLoopbackError(peer ?? 'unknown')
    if (!isOriginAllowed(request.headers.origin, request.headers.host, options.allowedOrigins)) {
      throw new OriginNotAllowedError(request.headers.origin ?? '')
    }
  }
}
