import t from 'tap'
import { once } from 'node:events'
import type { AddressInfo, Socket } from 'node:net'
import { WebSocketServer, type RawData, type WebSocket } from 'ws'
import Fastify from 'fastify'
import path from 'node:path'
import storePlugin from '../../src/plugins/store.ts'
import eventsPlugin from '../../src/plugins/events.ts'
import { resolveOptions } from '../../src/options.ts'
import { connect, listen, tempDir, closed, validPayloads, waitFor, TestClient, type TestContext } from '../helper.ts'
import type { Envelope } from '../../src/events/schemas.ts'

t.test('alone on a bare Fastify: decorates events, validates, stores, notifies', async t => {
  const dir = await tempDir(t)
  const app = Fastify()
  t.teardown(() => app.close())
  const options = resolveOptions({ dbPath: path.join(dir, 'a.db') })
  await app.register(storePlugin, options)
  await app.register(eventsPlugin, options)
  await app.ready()

  t.equal(app.events.clientCount, 0)
  t.equal(app.events.lastEventId, 0)
  const seen: Envelope[] = []
  const unsubscribe = app.events.onEvent(e => seen.push(e))
  const envelope = await app.events.emit('batch:start', { batch_id: 1, max_cycles: 2 })
  t.same(Object.keys(envelope).sort(), ['id', 'payload', 'timestamp', 'type'])
  t.equal(envelope.id, 1)
  t.ok(Math.abs(envelope.timestamp - Date.now()) < 5000, 'timestamp is ms since the epoch')
  t.same(seen, [envelope])
  unsubscribe()
  await app.events.emit('cycle:end', { cycle_number: 1, completed_stories: [] })
  t.equal(seen.length, 1, 'unsubscribed listener is not called')
  t.equal(app.sprintStore.getActiveBatch()?.cycles_completed, 1, 'the projection has the committed event')
})

t.test('emit rejects an invalid event with code, status and every field path', async t => {
  const { app } = await listen(t)
  const error = await app.events.emit('batch:start', { batch_id: 'x', max_cycles: 0, extra_field: 1 } as never).then(
    () => { throw new Error('emit did not reject') },
    (err: unknown) => err as Error & { code: string, statusCode: number, details: Array<{ path: string }> })
  t.equal(error.code, 'SPRINT_INVALID_EVENT')
  t.equal(error.statusCode, 400)
  t.match(error.message, /batch:start/)
  // An undeclared field is no error (payloads are open); the bad declared ones are all named.
  t.same(error.details.map(d => d.path).sort(), ['/payload/batch_id', '/payload/max_cycles'])
  await t.rejects(app.events.emit('nope' as never, {} as never), { code: 'SPRINT_INVALID_EVENT', message: /Unknown event type "nope"/ })
  t.equal(app.events.lastEventId, 0, 'nothing was stored')
})

t.test('emitMany is all or nothing and names the index', async t => {
  const { app, wsUrl } = await listen(t)
  const { client } = await connect(t, wsUrl)
  await t.rejects(app.events.emitMany([
    { type: 'error', payload: { type: 'a', message: 'b' } },
    { type: 'batch:end', payload: { batch_id: 1, cycles_completed: 0, status: 'bogus' } }
  ]), { code: 'SPRINT_INVALID_EVENT', message: /\/1\/payload\/status/ })
  t.equal(app.events.lastEventId, 0)
  const stored = await app.events.emitMany([
    { type: 'error', payload: { type: 'a', message: 'b' } },
    { type: 'error', payload: { type: 'c', message: 'd' } }
  ])
  t.same(stored.map(e => e.id), [1, 2])
  const received = await client.take(2)
  t.same(received.map(m => m.id), [1, 2], 'only the accepted batch was broadcast')
  await t.rejects(app.events.emitMany(Array.from({ length: 1001 }, () => ({ type: 'error', payload: {} }))), { code: 'SPRINT_TOO_MANY_EVENTS' })
})

t.test('a producer timestamp becomes the envelope\'s, in emit and emitMany; ids stay the server\'s', async t => {
  const { app, wsUrl } = await listen(t)
  const { client } = await connect(t, wsUrl)
  const happened = Date.now() - 3_600_000
  const one = await app.events.emit('error', { type: 'a', message: 'b' }, { timestamp: happened })
  t.equal(one.timestamp, happened)
  const many = await app.events.emitMany([
    { type: 'error', payload: { type: 'c', message: 'd' }, timestamp: happened + 1 },
    { type: 'error', payload: { type: 'e', message: 'f' } }
  ])
  t.same(many.map(e => e.id), [2, 3])
  t.equal(many[0]!.timestamp, happened + 1)
  t.ok(Math.abs(many[1]!.timestamp - Date.now()) < 5000, 'without one, the server\'s time')
  t.same((await client.take(3)).map(m => m.timestamp), [happened, happened + 1, many[1]!.timestamp], 'broadcast as stored')
  t.same(app.sprintStore.getRecentEvents(3).map(e => e.timestamp), [happened, happened + 1, many[1]!.timestamp], 'stored')

  await t.rejects(app.events.emitMany([
    { type: 'error', payload: { type: 'a', message: 'b' } },
    { type: 'error', payload: { type: 'a', message: 'b' }, timestamp: Date.now() + 120_000 }
  ]), { code: 'SPRINT_INVALID_EVENT', details: [{ path: '/1/timestamp' }] })
  await t.rejects(app.events.emit('error', { type: 'a', message: 'b' }, { timestamp: -5 }), { code: 'SPRINT_INVALID_EVENT', details: [{ path: '/timestamp' }] })
  t.equal(app.events.lastEventId, 3, 'nothing stored for a refused timestamp')
})

t.test('broadcast with no clients is a no-op', async t => {
  const { app } = await listen(t)
  t.doesNotThrow(() => app.events.broadcast({ type: 'status', payload: { broker: 'down' } }))
  t.equal(app.events.clientCount, 0)
})

t.test('broadcast sends a notice without an id, after the turn\'s events, and can never move a resume point', async t => {
  const { app, wsUrl } = await listen(t)
  const plain = await connect(t, wsUrl)
  const batched = await connect(t, `${wsUrl}?batch=1`)
  const first = app.events.emit('error', { type: 'x', message: 'before' })
  app.events.broadcast({ type: 'status', payload: { broker: 'down' } })
  t.equal((await first).id, 1)
  for (const { client } of [plain, batched]) {
    const [event, notice] = await client.take(2)
    t.equal(event.id, 1, 'the stored event comes first')
    t.same(notice, { type: 'status', payload: { broker: 'down' } }, 'the notice has no id and is not an envelope')
  }
  // An envelope-shaped object is refused: a notice must not carry an id a page could adopt.
  t.throws(() => app.events.broadcast({ id: 99, type: 'error', payload: {}, timestamp: 1 } as never), { code: 'SPRINT_INVALID_NOTICE' })
  t.equal(app.events.lastEventId, 1, 'nothing was stored')
  const resumed = await connect(t, `${wsUrl}?since=1`)
  t.equal(resumed.init.payload.resumed, true)
  t.same(resumed.init.payload.events, [], 'a notice is never replayed')
})

t.test('one client receives emitted events as envelopes', async t => {
  const { app, wsUrl } = await listen(t)
  const { client, init } = await connect(t, wsUrl)
  t.same(init, { type: 'init', payload: { batch: null, events: [], resumed: false, reset: false } })
  t.equal(app.events.clientCount, 1)
  const sent = await app.events.emit('command:start', validPayloads['command:start'])
  t.same(await client.next(), sent)
})

t.test('many clients all receive every event in the same order', async t => {
  const { app, wsUrl } = await listen(t)
  const clients = await Promise.all(Array.from({ length: 20 }, () => connect(t, wsUrl)))
  const ids: number[] = []
  for (let i = 0; i < 100; i++) {
    ids.push((await app.events.emit('command:progress', { ...validPayloads['command:progress'], message: `step ${i}` })).id)
  }
  for (const { client } of clients) {
    const got = await client.take(100)
    t.same(got.map(m => m.id), ids)
  }
})

t.test('a client that closed mid-broadcast is removed, others still receive', async t => {
  const { app, wsUrl } = await listen(t)
  const a = await connect(t, wsUrl)
  const b = await connect(t, wsUrl)
  t.equal(app.events.clientCount, 2)
  a.client.socket.terminate()
  // The server may not have seen the close yet: the broadcast must not throw either way.
  t.doesNotThrow(() => app.events.emit('error', { type: 'x', message: 'after close' }))
  t.match(await b.client.next(), { type: 'error', payload: { message: 'after close' } })
  await waitFor(() => app.events.clientCount === 1)
  t.equal(app.events.clientCount, 1)
})

t.test('init carries the active batch and the last 50 events, oldest first', async t => {
  const { app, wsUrl } = await listen(t)
  app.events.emit('batch:start', { batch_id: 4, max_cycles: 'all' })
  for (let i = 0; i < 60; i++) app.events.emit('command:progress', { ...validPayloads['command:progress'], message: String(i) })
  const { init } = await connect(t, wsUrl)
  t.match(init.payload.batch, { id: 4, max_cycles: 'all', status: 'running' })
  t.equal(init.payload.events.length, 50)
  t.equal(init.payload.events[0].id, 12)
  t.equal(init.payload.events[49].id, 61)
  t.same(Object.keys(init.payload.events[0]).sort(), ['id', 'payload', 'timestamp', 'type'])
})

for (const query of ['?since=0', '?since=0&batch=1']) {
  t.test(`no event is lost or duplicated between init and the live stream (${query})`, async t => {
    const { app, wsUrl } = await listen(t)
    let emitting = true
    let emitted = 0
    const pump = (): void => {
      if (!emitting) return
      for (let i = 0; i < 20; i++) { app.events.emit('error', { type: 'x', message: 'm' }); emitted++ }
      setImmediate(pump)
    }
    pump()
    const clients = await Promise.all(Array.from({ length: 10 }, () => connect(t, `${wsUrl}${query}`)))
    emitting = false
    const last = app.events.lastEventId
    for (const { client, init } of clients) {
      const ids: number[] = init.payload.events.map((e: Envelope) => e.id)
      const firstLive = ids.length === 0 ? 1 : ids[ids.length - 1]! + 1
      const live = await client.take(last - firstLive + 1)
      const all = [...ids, ...live.map(m => m.id)]
      t.same(all, Array.from({ length: last }, (_, i) => i + 1), 'every id exactly once, in order')
    }
    t.ok(emitted > 0)
  })
}

t.test('batched clients get several events per frame, in order, with no duplicates', async t => {
  const { app, wsUrl } = await listen(t)
  const batched = await connect(t, `${wsUrl}?batch=1`)
  const plain = await connect(t, wsUrl)
  let frames = 0
  batched.client.socket.on('message', () => frames++)
  for (let i = 0; i < 50; i++) app.events.emit('error', { type: 'x', message: String(i) })
  const got = await batched.client.take(50)
  t.same(got.map(m => m.id), Array.from({ length: 50 }, (_, i) => i + 1))
  t.ok(frames < 50, `50 events arrived in ${frames} frame(s)`)
  t.same((await plain.client.take(50)).map(m => m.id), got.map(m => m.id))
})

t.test('when batched writes are slow against the time between events, batched events are held and share a frame; plain clients never wait', async t => {
  const { app } = await listen(t)
  const open = await directSockets(t)
  const frames = (client: TestClient): number[][] => {
    const seen: number[][] = []
    client.socket.on('message', (data: RawData) => {
      const messages = data.toString().split('\n').map(line => JSON.parse(line))
      if (messages[0].type !== 'init') seen.push(messages.map(m => m.id))
    })
    return seen
  }
  const slow = await open()
  const plain = await open()
  const late = await open()
  const slowFrames = frames(slow.client)
  const plainFrames = frames(plain.client)
  const lateFrames = frames(late.client)
  app.events.connect(slow.socket, { batched: true })
  app.events.connect(plain.socket)
  await slow.client.next()
  await plain.client.next()
  // Every write of text frames to this socket takes 100 ms: a stand-in for a fan-out to thousands of
  // sockets. (Heartbeat pings, opcode 0x9, are neither counted nor slowed.)
  const raw = (slow.socket as unknown as { _socket: Socket })._socket
  const write = raw.write.bind(raw)
  let writes = 0
  raw.write = ((...args: Parameters<typeof write>) => {
    const [chunk] = args
    if (Buffer.isBuffer(chunk) && chunk[0] === 0x81) {
      writes++
      const until = performance.now() + 100
      while (performance.now() < until);
    }
    return write(...args)
  }) as typeof raw.write
  const emit = (message: string): Promise<Envelope> => app.events.emit('error', { type: 'x', message })

  // One event at a time, each published before the next is emitted: at first each is written at once;
  // once writing one event per frame would take most of the loop, an event is held.
  let id = 0
  let held = false
  while (!held && id < 40) {
    const before = writes
    id = (await emit(String(id))).id
    held = writes === before
  }
  t.ok(held, `event ${id} was held: published without a write to the batched socket`)
  const heldWrites = writes
  const next = (await emit('next')).id
  t.equal(writes, heldWrites, 'the next event joins the hold')
  await waitFor(() => slowFrames.at(-1)?.at(-1) === next)
  t.same(slowFrames.at(-1), [id, next], 'the held events came in one frame')

  // A batched client connecting while events are held gets them in its init; the others get them first.
  let waiting = 0
  while (waiting === 0 && slowFrames.flat().length < 80) {
    const before = writes
    const emitted = (await emit('more')).id
    if (writes === before) waiting = emitted
  }
  t.ok(waiting > 0, `event ${waiting} is held`)
  const beforeConnect = writes
  app.events.connect(late.socket, { batched: true })
  t.equal(writes, beforeConnect + 1, 'connect wrote what was held before its snapshot')
  t.equal((await late.client.next()).payload.events.at(-1).id, waiting)
  const last = (await emit('last')).id
  await waitFor(() => slowFrames.at(-1)?.at(-1) === last && lateFrames.at(-1)?.at(-1) === last && plainFrames.length === last)
  t.same(slowFrames.flat(), Array.from({ length: last }, (_, i) => i + 1), 'the batched client got every event once, in order')
  t.same(lateFrames.flat(), [last], 'the late client gets nothing twice')
  t.same(plainFrames, Array.from({ length: last }, (_, i) => [i + 1]), 'the plain client got one frame per event, without waiting')
})

t.test('heartbeat terminates a client that never answers pings', async t => {
  const { app, wsUrl } = await listen(t, { heartbeatIntervalMs: 50, heartbeatTimeoutMs: 50 })
  const healthy = await connect(t, wsUrl)
  // autoPong off: this client never answers protocol pings.
  const silent = new TestClient(wsUrl, { autoPong: false })
  t.teardown(() => silent.socket.terminate())
  await silent.next()
  t.equal(app.events.clientCount, 2)
  const { code } = await closed(silent.socket)
  t.equal(code, 1006, 'terminated without a closing handshake')
  t.equal(app.events.clientCount, 1)
  t.equal(healthy.client.socket.readyState, healthy.client.socket.OPEN, 'the answering client stays')
})

t.test('a throwing onEvent listener stops neither the emitter nor the broadcast', async t => {
  const { app, wsUrl } = await listen(t)
  const { client } = await connect(t, wsUrl)
  app.events.onEvent(() => { throw new Error('listener bug') })
  const later: number[] = []
  app.events.onEvent(e => later.push(e.id))
  const sent = await app.events.emit('error', { type: 'x', message: 'y' })
  t.same(later, [sent.id])
  t.equal((await client.next()).id, sent.id)
})

t.test('app.close() closes every client with 1001 and releases everything', async t => {
  const { app, wsUrl } = await listen(t)
  const clients = await Promise.all(Array.from({ length: 5 }, () => connect(t, wsUrl)))
  const codes = Promise.all(clients.map(({ client }) => closed(client.socket)))
  await app.close()
  for (const { code, reason } of await codes) {
    t.equal(code, 1001)
    t.equal(reason, 'server shutting down')
  }
  t.equal(app.sprintStore.db.open, false, 'database closed')
})

t.test('events are committed together, before clients see them, and survive close', async t => {
  const { app, wsUrl, dbPath } = await listen(t)
  const { client } = await connect(t, wsUrl)
  const first = await app.events.emit('error', { type: 'x', message: 'one' })
  app.events.emit('error', { type: 'x', message: 'two' })
  t.equal(app.sprintStore.getLastEventId(), first.id, 'queued, not stored yet')
  t.equal(app.sprintStore.db.inTransaction, false, 'no transaction is held open while events wait')
  t.equal(client.pending, 0)
  const received = await client.take(2)
  t.same(received.map(m => m.id), [first.id, first.id + 1])
  t.equal(app.sprintStore.getLastEventId(), first.id + 1, 'stored by the time clients receive')

  app.events.emit('error', { type: 'x', message: 'emitted just before close' })
  await app.close()
  const { createStore } = await import('../../src/lib/sqlite-store.ts')
  const reopened = createStore(dbPath)
  t.teardown(() => reopened.close())
  t.equal(reopened.getLastEventId(), first.id + 2, 'close committed the last turn')
})

t.test('flush commits the queued events at once', async t => {
  const { app } = await listen(t)
  app.events.emit('error', { type: 'x', message: 'y' })
  app.events.flush()
  t.equal(app.sprintStore.db.inTransaction, false)
  t.equal(app.sprintStore.getLastEventId(), 1)
})

t.test('group commit: events emitted on successive turns share one commit, and none is delivered before it', async t => {
  const { app, wsUrl, dbPath } = await listen(t)
  const { client } = await connect(t, wsUrl)
  // A second connection to the file sees only what is committed.
  const Database = (await import('better-sqlite3')).default
  const reader = new Database(dbPath, { readonly: true })
  t.teardown(() => reader.close())
  const committedId = (): number => (reader.prepare('SELECT max(id) AS id FROM events').get() as { id: number | null }).id ?? 0
  const uncommittedSeen: number[] = []
  app.events.onEvent(envelope => { if (committedId() < envelope.id) uncommittedSeen.push(envelope.id) })
  const groups: number[] = []
  const appendEvents = app.sprintStore.appendEvents.bind(app.sprintStore)
  app.sprintStore.appendEvents = (events, timestamp) => {
    groups.push(events.length)
    return appendEvents(events, timestamp)
  }
  const turn = (): Promise<void> => new Promise(resolve => setImmediate(resolve))
  // Right after a commit, events emitted one per turn wait for the window and share the next commit.
  // (Tried a few times: a machine that stalls longer than the window between two turns commits them apart.)
  let shared = false
  let emitted = 0
  for (let attempt = 0; attempt < 10 && !shared; attempt++) {
    await app.events.emit('error', { type: 'x', message: 'opens the window' })
    emitted++
    const before = groups.length
    const pending: Array<Promise<unknown>> = []
    for (let i = 0; i < 3; i++) {
      pending.push(app.events.emit('error', { type: 'x', message: `turn ${i}` }))
      emitted++
      await turn()
    }
    await Promise.all(pending)
    shared = groups.slice(before).some(size => size > 1)
  }
  t.ok(shared, `events of successive turns were committed together (groups: ${groups.join(', ')})`)
  t.ok(groups.length < emitted, `${emitted} events in ${groups.length} commits`)
  const received = await client.take(emitted)
  t.same(received.map(m => m.id), Array.from({ length: emitted }, (_, i) => i + 1), 'every event, in order')
  t.same(uncommittedSeen, [], 'no listener saw an event before its commit')
})

t.test('heartbeat pings are spread over the round and only the silent client goes', async t => {
  // 300 ms rounds in 100 ms steps: the 12 sockets are pinged in three slices.
  const { app, wsUrl } = await listen(t, { heartbeatIntervalMs: 300, heartbeatTimeoutMs: 150 })
  const healthy = await Promise.all(Array.from({ length: 11 }, () => connect(t, wsUrl)))
  const silent = new TestClient(wsUrl, { autoPong: false })
  t.teardown(() => silent.socket.terminate())
  await silent.next()
  const pingTimes: number[][] = healthy.map(() => [])
  const twoPingsEach = Promise.all(healthy.map(({ client }, index) => new Promise<void>(resolve => {
    client.socket.on('ping', () => {
      pingTimes[index]!.push(Date.now())
      if (pingTimes[index]!.length === 2) resolve()
    })
  })))
  t.equal((await closed(silent.socket)).code, 1006, 'the silent client is terminated')
  await twoPingsEach
  const firstPings = pingTimes.map(times => times[0]!).sort((a, b) => a - b)
  t.ok(firstPings.at(-1)! - firstPings[0]! >= 50, 'first pings of one round went out in more than one step')
  await waitFor(() => app.events.clientCount === 11)
  t.ok(healthy.every(({ client }) => client.socket.readyState === client.socket.OPEN), 'every answering client stays')
})

t.test('events beyond retainEvents are pruned in the background; resuming from a pruned id resets', async t => {
  const { app, wsUrl } = await listen(t, { retainEvents: 10, recentEvents: 5 })
  for (let i = 0; i < 50; i++) app.events.emit('error', { type: 'x', message: String(i) })
  await waitFor(() => app.sprintStore.countEvents() === 10)
  t.equal(app.sprintStore.getOldestEventId(), 41)
  t.equal(app.events.lastEventId, 50, 'pruning never lowers the last id')
  const pruned = await connect(t, `${wsUrl}?since=20`)
  t.equal(pruned.init.payload.reset, true, 'the client lacks pruned events: rebuild')
  t.same(pruned.init.payload.events.map((e: Envelope) => e.id), [46, 47, 48, 49, 50])
  const retained = await connect(t, `${wsUrl}?since=45`)
  t.equal(retained.init.payload.resumed, true)
  t.same(retained.init.payload.events.map((e: Envelope) => e.id), [46, 47, 48, 49, 50])
  t.equal((await app.events.emit('error', { type: 'x', message: 'next' })).id, 51)
})

t.test('every fresh init shows the stored events as they are now, after emit and emitMany', async t => {
  const { app, wsUrl } = await listen(t)
  const ids = async (): Promise<number[]> => (await connect(t, wsUrl)).init.payload.events.map((e: Envelope) => e.id)
  t.same(await ids(), [])
  t.same(await ids(), [], 'unchanged: the same init again')
  app.events.emit('batch:start', { batch_id: 7, max_cycles: 1 })
  const { init } = await connect(t, wsUrl)
  t.match(init.payload.batch, { id: 7, status: 'running' }, 'the batch started since the last connect')
  t.same(init.payload.events.map((e: Envelope) => e.id), [1])
  app.events.emitMany([{ type: 'error', payload: { type: 'x', message: 'a' } }, { type: 'error', payload: { type: 'x', message: 'b' } }])
  t.same(await ids(), [1, 2, 3])
})

/**
 * Server-side sockets from a separate `ws` server, to hand to `events.connect` directly and so call it
 * at a chosen moment or on a socket in a chosen state.
 */
async function directSockets (t: TestContext): Promise<() => Promise<{ client: TestClient, socket: WebSocket }>> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
  await once(wss, 'listening')
  const clients: TestClient[] = []
  t.teardown(() => new Promise<void>(resolve => {
    for (const client of clients) client.socket.terminate()
    wss.close(() => resolve())
  }))
  return async () => {
    const client = new TestClient(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`)
    clients.push(client)
    const [[socket]] = await Promise.all([once(wss, 'connection'), once(client.socket, 'open')])
    return { client, socket }
  }
}

t.test('a fresh init taken before a pruning step is not reused after it', async t => {
  const { app } = await listen(t, { retainEvents: 2, recentEvents: 5 })
  // An init built exactly between the commit and the prune step that follows it.
  const open = await directSockets(t)
  const before = await open()
  const after = await open()
  for (let i = 0; i < 3; i++) app.events.emit('error', { type: 'x', message: String(i) })
  app.events.flush()
  // Committed; the prune step that keeps only the newest two is queued for a later turn.
  app.events.connect(before.socket)
  await waitFor(() => app.sprintStore.countEvents() === 2)
  app.events.connect(after.socket)
  const ids = async (client: TestClient): Promise<number[]> => (await client.next()).payload.events.map((e: Envelope) => e.id)
  t.same(await ids(before.client), [1, 2, 3])
  t.same(await ids(after.client), [2, 3])
})

t.test('a socket already closing when it reaches connect gets no init and is not tracked', async t => {
  const { app } = await listen(t)
  const open = await directSockets(t)
  const { client, socket } = await open()
  socket.close(1000, 'bye')
  app.events.connect(socket)
  t.equal(app.events.clientCount, 0, 'not in the broadcast set')
  app.events.emit('error', { type: 'x', message: 'after close' })
  app.events.flush()
  const [code] = await once(client.socket, 'close')
  t.equal(code, 1000)
  t.equal(client.pending, 0, 'nothing was sent after the close frame')
})

t.test('a commit the disk refuses is no acknowledgement: the caller gets 503 SPRINT_STORAGE_UNAVAILABLE and no client sees the event', async t => {
  const { app, wsUrl, url } = await listen(t)
  const { client } = await connect(t, wsUrl)
  const seen: number[] = []
  app.events.onEvent(envelope => seen.push(envelope.id))
  const kept = await app.events.emit('error', { type: 'x', message: 'kept' })
  // SQLite's own limit on the file's size: the next pages cannot be written, as on a full disk (SQLITE_FULL).
  const pages = app.sprintStore.db.pragma('page_count', { simple: true }) as number
  app.sprintStore.db.pragma(`max_page_count = ${pages}`)
  const big = 'x'.repeat(60_000)
  await t.rejects(app.events.emit('error', { type: 'x', message: big }), { code: 'SPRINT_STORAGE_UNAVAILABLE', statusCode: 503 })
  await t.rejects(app.events.emitMany([{ type: 'error', payload: { type: 'x', message: big } }]), { code: 'SPRINT_STORAGE_UNAVAILABLE' })
  const response = await fetch(`${url}/api/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ type: 'error', payload: { type: 'x', message: big } })
  })
  t.equal(response.status, 503, 'HTTP callers get 503, never 201')
  t.match(await response.json(), { code: 'SPRINT_STORAGE_UNAVAILABLE' })
  t.same(seen, [kept.id], 'listeners only saw the stored event')
  // Room again: the service carries on, and the client's next event is the next stored one.
  app.sprintStore.db.pragma('max_page_count = 1073741823')
  const next = await app.events.emit('error', { type: 'x', message: 'after' })
  const received = [await client.next(), await client.next()]
  t.same(received.map(e => e.payload.message), ['kept', 'after'], 'no refused event ever reached the client')
  t.ok(next.id > kept.id)
})
