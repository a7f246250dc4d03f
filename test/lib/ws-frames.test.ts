import t from 'tap'
import { once } from 'node:events'
import { connect as netConnect, type AddressInfo } from 'node:net'
import { WebSocket, WebSocketServer, type RawData, type ServerOptions } from 'ws'
import { rawSocket, sendFramed, textFrame } from '../../src/lib/ws-frames.ts'
import type { TestContext } from '../helper.ts'

/** A real `ws` server on 127.0.0.1 that hands over the server side of its next connection. */
async function wsServer (t: TestContext, options: ServerOptions = {}): Promise<{ port: number, accepted: () => Promise<WebSocket> }> {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0, ...options })
  await once(server, 'listening')
  t.teardown(() => new Promise<void>(resolve => {
    for (const client of server.clients) client.terminate()
    server.close(() => resolve())
  }))
  return {
    port: (server.address() as AddressInfo).port,
    accepted: async () => (await once(server, 'connection'))[0] as WebSocket
  }
}

/** A `ws` client connected to a fresh `wsServer`, with the server side of its connection; both open. */
async function wsPair (t: TestContext, compress = false): Promise<{ client: WebSocket, server: WebSocket }> {
  const { port, accepted } = await wsServer(t, compress ? { perMessageDeflate: { threshold: 0 } } : {})
  const client = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: compress })
  t.teardown(() => client.terminate())
  const server = await accepted()
  await once(client, 'open')
  return { client, server }
}

/** Every message a `ws` client receives, as text, until it has `count`. */
function collect (client: WebSocket, count: number): Promise<string[]> {
  const messages: string[] = []
  return new Promise((resolve, reject) => {
    client.on('message', (data: RawData, isBinary) => {
      if (isBinary) reject(new Error('binary frame'))
      messages.push(data.toString())
      if (messages.length === count) resolve(messages)
    })
    client.on('error', reject)
  })
}

// Across every payload-length encoding of RFC 6455: 7-bit, 16-bit (126..65535) and 64-bit (65536+).
const sizes = [0, 1, 125, 126, 127, 65_535, 65_536, 70_000]
const payloadOf = (size: number, tag: string): Buffer => Buffer.from(tag.repeat(Math.ceil(size / tag.length)).slice(0, size))

t.test('pre-framed writes reach a ws client as the same text messages, one per frame, at every length', async t => {
  const { client, server } = await wsPair(t)
  const payloads = sizes.map(size => payloadOf(size, 'é{"a":1}'))
  const got = collect(client, sizes.length * 2)
  // One write of every frame together, then each on its own.
  sendFramed(server, Buffer.concat(payloads.map(textFrame)), payloads)
  for (const payload of payloads) sendFramed(server, textFrame(payload), [payload])
  const texts = payloads.map(p => p.toString())
  t.same(await got, [...texts, ...texts])
})

t.test('the bytes on the wire are exactly those ws.send writes', async t => {
  const { port, accepted } = await wsServer(t)
  // A raw TCP client, so that what the server wrote is seen byte for byte.
  const raw = netConnect({ host: '127.0.0.1', port })
  t.teardown(() => raw.destroy())
  await once(raw, 'connect')
  raw.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n')
  const server = await accepted()
  let received = Buffer.alloc(0)
  raw.on('data', (chunk: Buffer) => { received = Buffer.concat([received, chunk]) })
  const body = (): Buffer => received.subarray(received.indexOf('\r\n\r\n') + 4)

  const payloads = sizes.map(size => payloadOf(size, 'x'))
  const framed = Buffer.concat(payloads.map(textFrame))
  for (const payload of payloads) server.send(payload, { binary: false })
  // Headers included: stopping at the payload bytes alone could leave ws's tail to mix into the next capture.
  while (body().length < framed.length) await once(raw, 'data')
  const viaSend = Buffer.from(body())
  received = received.subarray(0, received.indexOf('\r\n\r\n') + 4)
  sendFramed(server, framed, payloads)
  while (body().length < viaSend.length) await once(raw, 'data')
  t.ok(body().equals(viaSend), `${viaSend.length} bytes, identical`)
})

t.test('an open, uncompressed socket takes the pre-framed bytes in one write to its TCP socket', async t => {
  const { client, server } = await wsPair(t)
  const tcp = rawSocket(server)
  t.ok(tcp, 'the fast path is available')
  const writes: unknown[] = []
  const write = tcp!.write
  tcp!.write = ((chunk: unknown, ...rest: unknown[]) => {
    writes.push(chunk)
    return (write as (...args: unknown[]) => boolean).call(tcp, chunk, ...rest)
  }) as typeof write
  const payloads = [Buffer.from('{"id":1}'), Buffer.from('{"id":2}')]
  const framed = Buffer.concat(payloads.map(textFrame))
  const got = collect(client, 2)
  sendFramed(server, framed, payloads)
  t.equal(writes.length, 1, 'one write')
  t.equal(writes[0], framed, 'of the very buffer framed once')
  t.same(await got, ['{"id":1}', '{"id":2}'])

  server.close()
  t.equal(rawSocket(server), undefined, 'closing: nothing may follow the close frame')
})

t.test('a compressed connection never takes the fast path', async t => {
  const { server } = await wsPair(t, true)
  t.equal(rawSocket(server), undefined)
})

t.test('while ws is compressing a message, later events wait behind it instead of overtaking it', async t => {
  // permessage-deflate makes ws queue sends while zlib works asynchronously; bytes written straight
  // to the TCP socket then would arrive before the message ws is still compressing.
  const { client, server } = await wsPair(t, true)
  t.ok(client.extensions.includes('permessage-deflate'), 'compression negotiated')
  const got = collect(client, 3)
  const big = payloadOf(200_000, 'compress me ')
  server.send(big, { binary: false })
  const small = [Buffer.from('{"id":1}'), Buffer.from('{"id":2}')]
  sendFramed(server, Buffer.concat(small.map(textFrame)), small)
  t.same(await got, [big.toString(), '{"id":1}', '{"id":2}'])
})
