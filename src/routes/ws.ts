import type { FastifyPluginAsync } from 'fastify'
import websocket from '@fastify/websocket'
import type { WebSocket, RawData } from 'ws'
import { isOriginAllowed } from '../lib/origin.ts'
import { isHostAllowed } from '../lib/host.ts'
import { HostNotAllowedError, OriginNotAllowedError, TooManyConnectionsError } from '../errors.ts'
import { badRequestJson, CloseCode, PONG_MESSAGE, RequestLimits, WsQuerySchema, type WsQuery } from '../events/protocol.ts'
import type { ResolvedOptions } from '../options.ts'

/** Refused upgrades are logged at most this often. */
const REFUSAL_LOG_INTERVAL_MS = 60_000

/** Counts messages per one-second window to keep a chatty client from costing everyone else. */
function createRateLimiter () {
  let windowStart = 0
  let count = 0
  return (now: number): 'ok' | 'drop' | 'flood' => {
    if (now - windowStart >= 1000) {
      windowStart = now
      count = 0
    }
    count++
    if (count > RequestLimits.clientFloodPerSecond) return 'flood'
    return count > RequestLimits.clientMessagesPerSecond ? 'drop' : 'ok'
  }
}

function badRequest (socket: WebSocket, message: string): void {
  socket.send(badRequestJson(message))
}

/**
 * The `/ws` route: checks Origin and the connection limit before the upgrade,
 * hands the socket to `fastify.events.connect` (init + live stream) and answers
 * the client's own messages (`ping`).
 */
const wsRoutes: FastifyPluginAsync<Pick<ResolvedOptions, 'allowedOrigins' | 'maxConnections'> & Partial<Pick<ResolvedOptions, 'allowedHosts'>>> = async function wsRoutes (fastify, options) {
  const allowedHosts = options.allowedHosts ?? []
  // A host app that already registered @fastify/websocket keeps its settings
  // (our maxPayload and manual pong are then its to choose).
  if (!fastify.hasDecorator('websocketServer')) {
    await fastify.register(websocket, {
      options: {
        maxPayload: RequestLimits.clientFrameBytes,
        // We answer protocol pings ourselves, so that a ping flood is rate limited like any other message.
        autoPong: false,
        // Clients are tracked by the broadcaster; ws's own set would be a second copy.
        clientTracking: false
      },
      // The broadcaster's preClose closes every client with 1001; nothing is left for the default one.
      preClose: (done) => { done() },
      // A client that breaks the protocol (bad UTF-8, oversized frame, reset) is its own problem, not the
      // server's: ws has already closed it with the right code, so log it quietly instead of at error level.
      errorHandler: (error, socket, request) => {
        request.log.info({ err: error }, 'WebSocket client error')
        socket.terminate()
      }
    })
  }

  let lastRefusalLog = 0
  let refusedSinceLog = 0
  function logRefusal (reason: string): void {
    refusedSinceLog++
    const now = Date.now()
    if (now - lastRefusalLog < REFUSAL_LOG_INTERVAL_MS) return
    fastify.log.warn({ refused: refusedSinceLog, limit: options.maxConnections }, reason)
    lastRefusalLog = now
    refusedSinceLog = 0
  }

  fastify.get<{ Querystring: WsQuery }>('/ws', {
    websocket: true,
    schema: { querystring: WsQuerySchema },
    onRequest: async (request) => {
      // DNS rebinding: a page on a name pointed at this machine sends its own name as Host (and as Origin).
      if (!isHostAllowed(request.headers.host, allowedHosts)) throw new HostNotAllowedError(request.headers.host ?? '')
      if (!isOriginAllowed(request.headers.origin, request.headers.host, options.allowedOrigins, allowedHosts)) {
        throw new OriginNotAllowedError(request.headers.origin ?? '')
      }
      if (fastify.events.clientCount >= options.maxConnections) {
        logRefusal('WebSocket connection limit reached; refusing upgrades')
        throw new TooManyConnectionsError(options.maxConnections)
      }
    }
  }, (socket, request) => {
    try {
      fastify.events.connect(socket, { since: request.query.since, batched: request.query.batch === '1' })
    } catch (err) {
      // Left to @fastify/websocket, the socket would be dropped without a close frame (1006): the
      // client could not tell a server fault from a network one.
      request.log.error({ err }, 'WebSocket connect failed')
      socket.close(CloseCode.UNEXPECTED_CONDITION, 'internal error')
      return
    }

    const limit = createRateLimiter()
    const admit = (): boolean => {
      const verdict = limit(Date.now())
      if (verdict === 'flood') {
        request.log.warn('WebSocket client flooding; disconnecting')
        socket.close(CloseCode.POLICY_VIOLATION, 'rate limit exceeded')
      }
      return verdict === 'ok'
    }

    socket.on('ping', (data: Buffer) => {
      if (admit()) socket.pong(data)
    })

    socket.on('message', (data: RawData, isBinary: boolean) => {
      try {
        if (!admit()) return
        if (isBinary) return badRequest(socket, 'Binary frames are not accepted; send JSON text such as {"type":"ping"}')
        let message: unknown
        try {
          message = JSON.parse(data.toString())
        } catch {
          return badRequest(socket, 'Message is not valid JSON')
        }
        if (typeof message === 'object' && message !== null && (message as { type?: unknown }).type === 'ping') {
          socket.send(PONG_MESSAGE)
          return
        }
        badRequest(socket, 'Unknown message; the only client message is {"type":"ping"}')
      } catch (err) {
        request.log.error({ err }, 'WebSocket message handler failed')
        socket.close(CloseCode.UNEXPECTED_CONDITION, 'internal error')
      }
    })
  })
}

export default wsRoutes
