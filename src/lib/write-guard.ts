import type { FastifyRequest } from 'fastify'
import { createHash, timingSafeEqual } from 'node:crypto'
import { HostNotAllowedError, IngestNotLoopbackError, IngestUnauthorizedError, OriginNotAllowedError } from '../errors.ts'
import { isHostAllowed } from './host.ts'
import { isLoopbackAddress, isOriginAllowed } from './origin.ts'
import type { ResolvedOptions } from '../options.ts'

export type WriteGuardOptions = Pick<ResolvedOptions, 'ingestToken' | 'allowedOrigins'> & Partial<Pick<ResolvedOptions, 'allowedHosts'>>

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
  const allowedHosts = options.allowedHosts ?? []
  return async function writeGuard (request: FastifyRequest): Promise<void> {
    if (tokenDigest !== null) {
      if (!tokenMatches(request.headers.authorization, tokenDigest)) {
        throw new IngestUnauthorizedError(`${request.method} ${request.routeOptions.url ?? request.url}`)
      }
      return
    }
    const peer = request.raw.socket.remoteAddress
    if (!isLoopbackAddress(peer)) throw new IngestNotLoopbackError(peer ?? 'unknown')
    // A loopback peer may be a browser on a page whose name was rebound to 127.0.0.1: its Host gives it away.
    if (!isHostAllowed(request.headers.host, allowedHosts)) throw new HostNotAllowedError(request.headers.host ?? '')
    if (!isOriginAllowed(request.headers.origin, request.headers.host, options.allowedOrigins, allowedHosts)) {
      throw new OriginNotAllowedError(request.headers.origin ?? '')
    }
  }
}
