import t from 'tap'
import { once } from 'node:events'
import type { AddressInfo, Socket } from 'node:net'
import { WebSocket, WebSocketServer, type RawData } from 'ws'
import { createFanOut, type Client } from '../../src/lib/fan-out.ts'
import { MAX_HELD_EVENTS } from '../../src/lib/batch-pacer.ts'
import { createStats } from '../../src/lib/stats.ts'
import { silentLog, waitFor, type TestContext } from '../helper.ts'

// The fan-out's load-following batching, over real sockets. Time as the pacer sees it is an
// injected clock that moves only when the test says: writes to the batched client's socket
// "take" a fixed while on it, so the test decides the load and nothing depends on the speed
// of the machine. (The holds themselves are real timers, bounded by MAX_HOLD_MS.)

interface Peer {
  /** Server side, as the fan-out holds it. */
  server: WebSocket
  /** Every non-empty frame the client received, as lists of event ids. */
  frames: number[][]
  /** Bytes the server has handed to the TCP socket so far. */
  written: () => number
}

async function setup (t: TestContext) {
  let clock = 0
  const fanOut = createFanOut({ maxBufferedBytes: 1 << 24, log: silentLog, now: () => clock, stats: createStats() })
  t.teardown(() => fanOut.stop())
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
  await once(wss, 'listening')
  t.teardown(() => new Promise<void>(resolve => {
    for (const socket of wss.clients) socket.terminate()
    wss.close(() => resolve())
  }))
  const port = (wss.address() as AddressInfo).port

  async function peer (batched: boolean, writeCostMs = 0): Promise<Peer> {
    const accepted = once(wss, 'connection')
    const client = new WebSocket(`ws://127.0.0.1:${port}`)
    t.teardown(() => client.terminate())
    const frames: number[][] = []
    client.on('message', (data: RawData) => {
      frames.push(data.toString().split('\n').map(line => (JSON.parse(line) as { id: number }).id))
    })
    await once(client, 'open')
    const [server] = await accepted as [WebSocket]
    const raw = (server as unknown as { _socket: Socket })._socket
    if (writeCostMs > 0) {
      // A stand-in for a fan-out round over thousands of sockets: each write moves the pacer's clock.
      const write = raw.write.bind(raw)
      raw.write = ((...args: Parameters<typeof write>) => {
        clock += writeCostMs
        return write(...args)
      }) as typeof raw.write
    }
    const entry: Client = { socket: server, batched, lastPongAt: 0 }
    fanOut.add(entry)
    return { server, frames, written: () => raw.bytesWritten }
  }

  let nextId = 1
  const event = (): string => JSON.stringify({ id: nextId++, type: 'error', payload: { type: 'x', message: 'y' }, timestamp: 0 })
  const advance = (ms: number): void => { clock += ms }
  return { fanOut, peer, event, advance, lastId: () => nextId - 1 }
}

const turn = (): Promise<void> => new Promise(resolve => setImmediate(resolve))

t.test('at light load a batched client gets every event at once, in a frame of its own, like a plain one', async t => {
  const { fanOut, peer, event, advance, lastId } = await setup(t)
  // Writes cost something, but events are far apart: writing each on its own is cheap.
  const batched = await peer(true, 5)
  const plain = await peer(false)
  for (let i = 0; i < 20; i++) {
    advance(200)
    const before = batched.written()
    fanOut.send([event()])
    t.ok(batched.written() > before, `event ${lastId()} was written to the batched socket inside send`)
    await turn()
  }
  await waitFor(() => batched.frames.length === 20 && plain.frames.length === 20)
  t.same(batched.frames, Array.from({ length: 20 }, (_, i) => [i + 1]))
  t.same(plain.frames, batched.frames)
})

t.test('with one event per turn and writes that take most of the loop, batched frames carry several events; plain ones never wait', async t => {
  const { fanOut, peer, event, advance } = await setup(t)
  const batched = await peer(true, 40)
  const plain = await peer(false)
  const total = 300
  let heldAtSend = 0
  let plainHeld = 0
  for (let i = 0; i < total; i++) {
    // One event per turn, each 10 ms (pacer time) after the last: a write round takes 40.
    advance(10)
    const before = batched.written()
    const plainBefore = plain.written()
    fanOut.send([event()])
    if (batched.written() === before) heldAtSend++
    if (plain.written() === plainBefore) plainHeld++
    await turn()
  }
  await waitFor(() => batched.frames.flat().length === total && plain.frames.length === total)
  t.same(batched.frames.flat(), Array.from({ length: total }, (_, i) => i + 1), 'every event once, in order')
  t.equal(plainHeld, 0, 'the plain client was written to inside every send')
  t.ok(heldAtSend > 0, `events were held under load (${heldAtSend} of ${total})`)
  const multi = batched.frames.filter(frame => frame.length > 1).length
  t.ok(multi > 0, `${multi} of ${batched.frames.length} batched frames carried several events`)
  t.ok(batched.frames.length < total, 'fewer batched frames than events')
  t.ok(plain.frames.every(frame => frame.length === 1), 'plain clients get one event per frame')

  // The load goes away: events far apart again. Within a few events they are written at once again.
  let immediate = false
  for (let i = 0; i < 20 && !immediate; i++) {
    advance(1000)
    fanOut.flushBatched()
    const before = batched.written()
    fanOut.send([event()])
    immediate = batched.written() > before
    await turn()
  }
  t.ok(immediate, 'when events are far apart again, a batched event is written inside send')
})

t.test('held events are bounded: a hold with MAX_HELD_EVENTS pending is written at once, and stop writes what is held', async t => {
  const { fanOut, peer, event, advance } = await setup(t)
  const batched = await peer(true, 40)
  // Bring the pacer to load, then find a send that is held.
  let held = false
  for (let i = 0; i < 200 && !held; i++) {
    advance(10)
    const before = batched.written()
    fanOut.send([event()])
    held = batched.written() === before
    if (!held) await turn()
  }
  t.ok(held, 'under load an event is held')
  const before = batched.written()
  fanOut.send(Array.from({ length: MAX_HELD_EVENTS }, event))
  t.ok(batched.written() > before, `${MAX_HELD_EVENTS} pending events are not held`)

  advance(10)
  fanOut.send([event()])
  const atStop = batched.written()
  fanOut.stop()
  t.ok(batched.written() > atStop, 'stop writes the held events')
})
