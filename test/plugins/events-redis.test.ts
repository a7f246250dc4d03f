import t from 'tap'
import { CloseCode } from '../../src/events/protocol.ts'
import { EPOCH_ID_GAP } from '../../src/lib/redis-log.ts'
import { requireRedis, startRedisServer } from '../fixtures/redis-server.ts'
import { closed, connect, listen, waitFor, type TestClient, type TestContext } from '../helper.ts'

const progress = (n: number) => ({ story_key: '2a-1', command: 'dev-story', task_id: 'implement', message: `step ${n}` })

/** Takes messages until `count` events (messages with an id) arrived; returns the events and the notices seen. */
async function takeEvents (client: TestClient, count: number) {
  const events: Array<{ id: number, payload: { message: string } }> = []
  const notices: unknown[] = []
  while (events.length < count) {
    const message = await client.next(10_000)
    if (typeof message.id === 'number') events.push(message)
    else notices.push(message)
  }
  return { events, notices }
}

async function post (url: string, body: unknown) {
  const response = await fetch(`${url}/api/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  return { status: response.status, body: await response.json() as any }
}

t.test('events on a Redis stream (scale-out)', async t => {
  if (!requireRedis(t)) return
  const redis = await startRedisServer()
  t.teardown(() => redis.destroy())
  let keyNumber = 0
  /** Two instances on one stream, each with its own SQLite file. */
  async function pair (t: TestContext, options: { retainEvents?: number } = {}) {
    const key = `pair-${++keyNumber}`
    const a = await listen(t, { redis: { url: redis.url, key } })
    const b = await listen(t, { redis: { url: redis.url, key }, ...options })
    return { a, b }
  }

  t.test('an event emitted on one instance reaches the clients of both with the same id, in the same order', async t => {
    const { a, b } = await pair(t)
    const { client: onA } = await connect(t, a.wsUrl)
    const { client: onB } = await connect(t, b.wsUrl + '?batch=1')
    const first = await a.app.events.emit('command:progress', progress(1))
    t.equal(first.id, 1, 'the id comes from the stream')
    const answer = await post(b.url, [{ type: 'command:progress', payload: progress(2) }, { type: 'command:progress', payload: progress(3) }])
    t.equal(answer.status, 201)
    t.same(answer.body.events.map((e: { id: number }) => e.id), [2, 3], 'an array gets consecutive ids in one append')
    const seenA = await takeEvents(onA, 3)
    const seenB = await takeEvents(onB, 3)
    t.same(seenA.events.map(e => e.id), [1, 2, 3])
    t.same(seenB.events, seenA.events, 'identical sequence on both instances')
    await waitFor(() => a.app.events.lastEventId === 3 && b.app.events.lastEventId === 3)
    t.same(a.app.events.broker, { state: 'up', readerLag: 0 })
    const health = await fetch(`${b.url}/api/health`).then(async response => ({ status: response.status, body: await response.json() as any }))
    t.equal(health.status, 200)
    t.equal(health.body.broker, 'up')
  })

  t.test('a retry with the idempotency key on the other instance is answered with the first id and sent once', async t => {
    const { a, b } = await pair(t)
    const { client: onA } = await connect(t, a.wsUrl)
    const first = await a.app.events.emit('command:progress', progress(1), { idempotencyKey: 'p:1' })
    const retry = await post(b.url, { type: 'command:progress', payload: progress(1), idempotencyKey: 'p:1', timestamp: first.timestamp + 5 })
    t.equal(retry.status, 201)
    t.same(retry.body.events[0], first, 'the stored envelope: its id and time')
    const conflict = await post(b.url, [{ type: 'command:progress', payload: progress(2) }, { type: 'command:progress', payload: progress(9), idempotencyKey: 'p:1' }])
    t.equal(conflict.status, 409, 'the key on another event refuses the array')
    await t.rejects(b.app.events.emit('command:progress', progress(9), { idempotencyKey: 'p:1' }), { code: 'SPRINT_IDEMPOTENCY_CONFLICT' })
    const again = await b.app.events.emit('command:progress', progress(1), { idempotencyKey: 'p:1' })
    t.equal(again.id, first.id, 'emit in the same turn as others too')
    const next = await a.app.events.emit('command:progress', progress(2))
    t.equal(next.id, first.id + 1, 'no id was spent on the retries')
    const seen = await takeEvents(onA, 2)
    t.same(seen.events.map(e => e.payload.message), ['step 1', 'step 2'], 'each event sent once')
    await waitFor(() => b.app.events.lastEventId === next.id)
    t.equal(b.app.sprintStore.countEvents(), 2, 'and stored once on the other instance')
  })

  t.test('a client of one instance resumes on another with since; from the stream when the local store does not hold the range', async t => {
    const { a, b } = await pair(t, { retainEvents: 10 })
    const { client } = await connect(t, a.wsUrl)
    for (let i = 1; i <= 5; i++) await a.app.events.emit('command:progress', progress(i))
    const seen = await takeEvents(client, 5)
    client.socket.terminate()
    for (let i = 6; i <= 40; i++) await a.app.events.emit('command:progress', progress(i))
    await waitFor(() => b.app.events.lastEventId === 40)
    await waitFor(() => (b.app.sprintStore.getOldestEventId() ?? 0) > 6, 5000)
    const { init } = await connect(t, `${b.wsUrl}?since=${seen.events.at(-1)!.id}`)
    t.equal(init.payload.resumed, true, 'resumed, though B pruned what the client lacks: XRANGE from the stream')
    t.same(init.payload.events.map((e: { id: number }) => e.id), Array.from({ length: 35 }, (_, i) => i + 6))
    // A since this instance has not read yet: it waits for its reader rather than answering reset.
    const ahead = a.app.events.emit('command:progress', progress(41))
    const { init: aheadInit } = await connect(t, `${b.wsUrl}?since=${(await ahead).id}`)
    t.equal(aheadInit.payload.resumed, true)
    t.same(aheadInit.payload.events, [])
  })

  t.test('Redis down: 503, a status notice and broker down in health; back with its data: no gap', async t => {
    const { a, b } = await pair(t)
    const { client: onA } = await connect(t, a.wsUrl)
    const { client: onB } = await connect(t, b.wsUrl)
    await a.app.events.emit('command:progress', progress(1))
    await takeEvents(onA, 1)
    await takeEvents(onB, 1)
    await redis.stop()
    t.same(await onA.next(5000), { type: 'status', payload: { broker: 'down' } }, 'connected pages get a notice and stay connected')
    const refused = await post(b.url, { type: 'command:progress', payload: progress(2) })
    t.equal(refused.status, 503)
    t.equal(refused.body.code, 'SPRINT_BROKER_UNAVAILABLE')
    await t.rejects(a.app.events.emit('command:progress', progress(2)), { code: 'SPRINT_BROKER_UNAVAILABLE', statusCode: 503 })
    await t.rejects(a.app.events.emitMany([{ type: 'command:progress', payload: progress(2) }]), { code: 'SPRINT_BROKER_UNAVAILABLE' })
    const health = await fetch(`${a.url}/api/health`).then(async response => ({ status: response.status, body: await response.json() as any }))
    t.equal(health.status, 200, 'the instance still serves')
    t.equal(health.body.broker, 'down')
    const { client: late } = await connect(t, b.wsUrl)
    t.same(await late.next(), { type: 'status', payload: { broker: 'down' } }, 'a page connecting during the outage is told too')

    await redis.start()
    await waitFor(() => a.app.events.broker?.state === 'up' && b.app.events.broker?.state === 'up', 10_000)
    await a.app.events.emit('command:progress', progress(3))
    const after = await takeEvents(onB, 1)
    t.same(after.notices, [{ type: 'status', payload: { broker: 'down' } }, { type: 'status', payload: { broker: 'up' } }])
    t.equal(after.events[0]!.id, 2, 'ids continue with no gap: nothing refused took an id')
    t.equal(onB.socket.readyState, onB.socket.OPEN)
  })

  t.test('Redis restarted empty: clients are reset (1012, then reset on reconnect); ids go on above a gap', async t => {
    const { a, b } = await pair(t)
    const { client: onB } = await connect(t, b.wsUrl)
    await a.app.events.emit('command:progress', progress(1))
    await a.app.events.emit('command:progress', progress(2))
    await takeEvents(onB, 2)
    await redis.stop()
    await redis.start({ empty: true })
    const close = await closed(onB.socket)
    t.equal(close.code, CloseCode.LOG_RESET)
    await waitFor(() => b.app.events.broker?.state === 'up', 10_000)
    const { client: again, init } = await connect(t, `${b.wsUrl}?since=2`)
    t.equal(init.payload.reset, true, 'the old since cannot be continued')
    const next = await a.app.events.emit('command:progress', progress(3))
    t.ok(next.id > 2 + EPOCH_ID_GAP - 1, `the new log starts above the gap (${next.id})`)
    const seen = await takeEvents(again, 1)
    t.equal(seen.events[0]!.id, next.id)
  })
})
