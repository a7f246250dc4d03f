import t from 'tap'
import { WebSocketServer } from 'ws'
import type { AddressInfo } from 'node:net'
import { once } from 'node:events'
import { formatSoakResult, runSoak } from './soak.ts'
import { StreamReader } from '../reliability/stream-reader.ts'

t.test('the stream check is not vacuous: it catches a gap, a duplicate, a reordering and a refused resume', async t => {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 })
  t.teardown(() => server.close())
  await once(server, 'listening')
  const envelope = (id: number): string => `{"id":${id},"type":"error","payload":{"type":"x","message":"y"},"timestamp":${Date.now()}}`
  server.on('connection', (socket, request) => {
    if (request.url?.includes('since=') === true) {
      socket.send('{"type":"init","payload":{"batch":null,"events":[],"resumed":false,"reset":true}}')
      socket.close()
      return
    }
    socket.send(`{"type":"init","payload":{"batch":null,"events":[${envelope(1)},${envelope(2)}],"resumed":false,"reset":false}}`)
    socket.send(envelope(4)) // gap: 3 is missing
    socket.send([envelope(5), envelope(5)].join('\n')) // duplicate, in one batched frame
    socket.send(envelope(7))
    socket.send(envelope(6)) // out of order
    socket.close()
  })
  const url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}/ws`
  const reader = new StreamReader(url)
  await reader.closed
  t.same(reader.violations, ['gap: 4 after 2', 'duplicate or out of order: 5 after 5', 'gap: 7 after 5', 'duplicate or out of order: 6 after 7'])
  const resumer = new StreamReader(url, { since: 7 })
  await resumer.closed
  t.match(resumer.violations, [/resume from 7 was not resumed \(resumed=false, reset=true\)/])
})

t.test('soak miniature: 100 clients, 10% dropped and resumed every 3 s, 200 events/s for 20 s', async t => {
  const result = await runSoak({ seconds: 20, clients: 100, rate: 200, dropFraction: 0.1, dropEverySeconds: 3 })
  t.comment(formatSoakResult(result))
  t.same(result.violations, [], 'every stream gap-free, duplicate-free, ordered and complete')
  t.ok(result.ok)
  t.equal(result.events, 4000, 'emitted rate × seconds events')
  t.equal(result.lastEventId, 4000)
  t.ok(result.deliveries >= 100 * 4000, `${result.deliveries} deliveries checked (replays included)`)
  t.ok(result.reconnects.abrupt > 0 && result.reconnects.clean > 0, `resumed ${result.reconnects.abrupt} abrupt and ${result.reconnects.clean} clean drops`)
  t.ok(result.rssMiB.start > 0 && result.rssMiB.peak >= result.rssMiB.start, 'RSS measured')
  t.equal(result.serverExitCode, 0)
})
