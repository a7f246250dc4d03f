import { createServer } from 'node:http'
import { once } from 'node:events'
import { WebSocketServer, WebSocket } from 'ws'
import { controlServer, LISTEN_BACKLOG, type ProgressPayload } from './server-control.ts'

/**
 * The floor the service is measured against: a bare `ws` server speaking the
 * same protocol at /ws (an init snapshot of the last 50 events, one envelope
 * per frame, ping/pong, and `POST /api/events` for the HTTP emitter) that
 * serialises each event once and sends that one string to every open client.
 * No validation, storage, Fastify or heartbeat.
 */

const RECENT_EVENTS = 50

const server = createServer((request, response) => {
  // The HTTP-ingest emitter (`--emitter http`): one event per request, sent on as it arrives, as the service's route does.
  if (request.method === 'POST' && request.url === '/api/events') {
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      try {
        const { payload } = JSON.parse(Buffer.concat(chunks).toString()) as { payload: ProgressPayload }
        const id = emitProgress(payload)
        response.writeHead(201, { 'content-type': 'application/json' }).end(`{"id":${id}}`)
      } catch {
        response.writeHead(400).end()
      }
    })
    return
  }
  response.writeHead(404).end()
})
// perMessageDeflate is off by default in `ws`, as it is in @fastify/websocket.
const wss = new WebSocketServer({ server, path: '/ws' })

let lastId = 0
const recent: string[] = []

wss.on('connection', (socket) => {
  socket.send(`{"type":"init","payload":{"batch":null,"events":[${recent.join(',')}],"resumed":false,"reset":false}}`)
  socket.on('message', (data, isBinary) => {
    if (!isBinary && data.toString() === '{"type":"ping"}') socket.send('{"type":"pong"}')
  })
})

function emitProgress (payload: ProgressPayload): number {
  const frame = JSON.stringify({ id: ++lastId, type: 'command:progress', payload, timestamp: Date.now() })
  recent.push(frame)
  if (recent.length > RECENT_EVENTS) recent.shift()
  for (const client of wss.clients) {
    if (client.readyState === WebSocket.OPEN) client.send(frame)
  }
  return lastId
}

server.listen({ host: '127.0.0.1', port: 0, backlog: LISTEN_BACKLOG })
await once(server, 'listening')
const address = server.address()
if (address === null || typeof address === 'string') throw new Error('baseline server has no TCP address')

controlServer({
  port: address.port,
  emitProgress,
  clientCount: () => wss.clients.size,
  async close () {
    for (const client of wss.clients) client.terminate()
    wss.close()
    server.close()
    await once(server, 'close')
  }
}, { server: 'baseline' })
