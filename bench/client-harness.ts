import { connect as netConnect, type Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import { WebSocket } from 'ws'
import { serveRequests } from './child-process.ts'
import { createLatencyHistogram, encodeHistogram, MAX_LATENCY_US } from './latency-histogram.ts'
import { readProgress } from './progress-reader.ts'

/**
 * One client process of the benchmark: holds many WebSocket connections to a
 * server under test, ignores `init`, and for every `command:progress` it
 * receives records latency = receipt time − emit time (the emitter puts its
 * `performance.timeOrigin + performance.now()` in `payload.message`; both
 * sides read the same system clock). It also checks that each connection
 * sees consecutive ids: a gap is a lost event, a repeat is a duplicate.
 */

export interface ConnectRequest {
  url: string
  count: number
  /** Handshakes in flight at once; a storm opens all of them together. */
  concurrency: number
}

export interface ConnectResult {
  opened: number
  failed: number
  errors: string[]
  /** From the first connect call to the last `init` received. */
  elapsedMs: number
  /** CPU this client process spent meanwhile: the handshakes cost the client side too, on the same 2 cores. */
  cpuUs: number
}

export interface ProgressResult {
  delivered: number
  open: number
}

export interface CollectResult {
  histogram: string
  delivered: number
  gaps: number
  duplicates: number
  minPerConnection: number
  maxPerConnection: number
  open: number
  closes: Record<string, number>
  framesReceived: number
  negativeLatencies: number
  cpuUs: number
}

interface Connection {
  socket: WebSocket
  lastId: number
  delivered: number
}

const connections = new Set<Connection>()
const histogram = createLatencyHistogram()
let delivered = 0
let gaps = 0
let duplicates = 0
let frames = 0
let negativeLatencies = 0
let closes: Record<string, number> = {}
let cpuAtReset = process.cpuUsage()

function onFrame (connection: Connection, data: Buffer): void {
  const receivedAt = performance.timeOrigin + performance.now()
  frames++
  // latin1 is a byte-for-byte decode, cheaper than UTF-8; the bench's envelopes are ASCII, and in any
  // other text the bytes of multi-byte characters only ever land inside JSON strings.
  const text = data.toString('latin1')
  // Split every frame on "\n": with ?batch=1 one frame carries several NDJSON envelopes.
  let start = 0
  while (start < text.length) {
    let end = text.indexOf('\n', start)
    if (end === -1) end = text.length
    if (end > start) onEnvelope(connection, text, start, end, receivedAt)
    start = end + 1
  }
}

function onEnvelope (connection: Connection, text: string, start: number, end: number, receivedAt: number): void {
  let id: number
  let emittedAt: number
  const progress = readProgress(text, start, end)
  if (progress !== undefined) {
    id = progress.id
    emittedAt = progress.emittedAt
  } else {
    const message = JSON.parse(text.slice(start, end))
    if (message.type !== 'command:progress' || typeof message.id !== 'number') return
    id = message.id
    emittedAt = Number(message.payload.message)
  }
  if (connection.lastId !== 0) {
    if (id <= connection.lastId) duplicates++
    else if (id !== connection.lastId + 1) gaps += id - connection.lastId - 1
  }
  connection.lastId = Math.max(connection.lastId, id)
  connection.delivered++
  delivered++
  const latencyUs = Math.round((receivedAt - emittedAt) * 1000)
  if (latencyUs < 0) negativeLatencies++
  histogram.recordValue(Math.min(MAX_LATENCY_US, Math.max(1, latencyUs)))
}

/** Opens one connection and resolves once its `init` has arrived. */
function openConnection (url: string): Promise<Connection> {
  return new Promise((resolve, reject) => {
    // The server is what we measure: skip UTF-8 validation and compression negotiation on the client side.
    const socket = new WebSocket(url, { perMessageDeflate: false, skipUTF8Validation: true, handshakeTimeout: 30_000 })
    const connection: Connection = { socket, lastId: 0, delivered: 0 }
    socket.once('message', (data: Buffer) => {
      const text = data.toString()
      if (!text.startsWith('{"type":"init"')) {
        socket.terminate()
        reject(new Error(`first frame was not init: ${text.slice(0, 80)}`))
        return
      }
      connections.add(connection)
      socket.on('message', (frame: Buffer) => onFrame(connection, frame))
      resolve(connection)
    })
    // Kept for the socket's whole life: an 'error' without a listener would crash the harness.
    socket.on('error', reject)
    socket.once('close', (code) => {
      const key = String(code)
      closes[key] = (closes[key] ?? 0) + 1
      connections.delete(connection)
      reject(new Error(`closed with ${code} before init`))
    })
  })
}

async function connect ({ url, count, concurrency }: ConnectRequest): Promise<ConnectResult> {
  const started = performance.now()
  const cpuBefore = process.cpuUsage()
  let remaining = count
  let opened = 0
  const errors: string[] = []
  const worker = async (): Promise<void> => {
    while (remaining > 0) {
      remaining--
      try {
        await openConnection(url)
        opened++
      } catch (error) {
        errors.push(error instanceof Error ? error.message : String(error))
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker))
  const cpu = process.cpuUsage(cpuBefore)
  return { opened, failed: errors.length, errors: [...new Set(errors)].slice(0, 5), elapsedMs: performance.now() - started, cpuUs: cpu.user + cpu.system }
}

export interface StormRequest {
  port: number
  /** Path and query of the WebSocket endpoint, e.g. `/ws?batch=1`. */
  path: string
  count: number
}

/**
 * The connection storm with the cheapest client that is still a real one: a
 * plain TCP socket writes a WebSocket upgrade request and waits for the 101
 * and the whole `init` frame. A `ws` client spends more CPU per handshake than
 * the server does, and on two shared cores that would be what the storm measures.
 * All sockets are opened at once and destroyed only after the last `init`.
 */
function storm ({ port, path, count }: StormRequest): Promise<ConnectResult> {
  const started = performance.now()
  const cpuBefore = process.cpuUsage()
  const request = Buffer.from(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n')
  const sockets: Socket[] = []
  const errors: string[] = []
  let opened = 0
  return new Promise((resolve) => {
    let settled = 0
    const settle = (error?: string): void => {
      if (error === undefined) opened++
      else errors.push(error)
      if (++settled < count) return
      const elapsedMs = performance.now() - started
      const cpu = process.cpuUsage(cpuBefore)
      for (const socket of sockets) socket.destroy()
      resolve({ opened, failed: errors.length, errors: [...new Set(errors)].slice(0, 5), elapsedMs, cpuUs: cpu.user + cpu.system })
    }
    for (let i = 0; i < count; i++) {
      const socket = netConnect({ host: '127.0.0.1', port, noDelay: true })
      sockets.push(socket)
      let received = Buffer.alloc(0)
      let done = false
      const finish = (error?: string): void => {
        if (done) return
        done = true
        socket.removeAllListeners('data')
        settle(error)
      }
      socket.on('connect', () => socket.write(request))
      socket.on('error', (error) => finish(error.message))
      socket.on('close', () => finish('closed before init'))
      socket.on('data', (chunk: Buffer) => {
        received = Buffer.concat([received, chunk])
        const headerEnd = received.indexOf('\r\n\r\n')
        if (headerEnd === -1) return
        if (!received.subarray(0, 12).toString().startsWith('HTTP/1.1 101')) return finish(received.subarray(0, received.indexOf('\r\n')).toString())
        const frame = received.subarray(headerEnd + 4)
        if (frame.length < 2) return
        // Unmasked server frame: 7-bit length, or 126 + 16-bit, or 127 + 64-bit.
        const short = (frame[1] as number) & 0x7f
        const headerLength = short === 126 ? 4 : short === 127 ? 10 : 2
        if (frame.length < headerLength) return
        const payloadLength = short === 126 ? frame.readUInt16BE(2) : short === 127 ? Number(frame.readBigUInt64BE(2)) : short
        if (frame.length < headerLength + payloadLength) return
        if (!frame.subarray(headerLength, headerLength + 14).toString().startsWith('{"type":"init"')) return finish('first frame was not init')
        finish()
      })
    }
  })
}

function reset (): void {
  histogram.reset()
  delivered = 0
  gaps = 0
  duplicates = 0
  frames = 0
  negativeLatencies = 0
  closes = {}
  cpuAtReset = process.cpuUsage()
  for (const connection of connections) connection.delivered = 0
}

function collect (): CollectResult {
  let min = Number.POSITIVE_INFINITY
  let max = 0
  for (const connection of connections) {
    min = Math.min(min, connection.delivered)
    max = Math.max(max, connection.delivered)
  }
  const cpu = process.cpuUsage(cpuAtReset)
  return {
    histogram: encodeHistogram(histogram),
    delivered,
    gaps,
    duplicates,
    minPerConnection: connections.size === 0 ? 0 : min,
    maxPerConnection: max,
    open: connections.size,
    closes,
    framesReceived: frames,
    negativeLatencies,
    cpuUs: cpu.user + cpu.system
  }
}

async function closeAll (): Promise<void> {
  const closed = [...connections].map(({ socket }) => new Promise<void>((resolve) => {
    if (socket.readyState === WebSocket.CLOSED) return resolve()
    socket.once('close', () => resolve())
    socket.terminate()
  }))
  await Promise.all(closed)
}

serveRequests({
  connect,
  storm,
  reset,
  progress: (): ProgressResult => ({ delivered, open: connections.size }),
  collect,
  closeAll
}, { role: 'clients' }, closeAll)
