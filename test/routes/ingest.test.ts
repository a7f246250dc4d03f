import t from 'tap'
import { build, connect, listen, validPayloads } from '../helper.ts'
import { isLoopbackAddress } from '../../src/lib/origin.ts'

const batchStart = { type: 'batch:start', payload: validPayloads['batch:start'] }
const commandStart = { type: 'command:start', payload: validPayloads['command:start'] }

async function post (url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number, body: any, headers: Headers }> {
  const response = await fetch(`${url}/api/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body)
  })
  const text = await response.text()
  return { status: response.status, body: text === '' ? undefined : JSON.parse(text), headers: response.headers }
}

t.test('one event: 201 with its envelope, broadcast to WebSocket clients', async (t) => {
  const { url, wsUrl } = await listen(t)
  const { client } = await connect(t, wsUrl)
  const before = Date.now()
  const reply = await post(url, batchStart)
  t.equal(reply.status, 201)
  t.equal(reply.body.events.length, 1)
  const [envelope] = reply.body.events
  t.match(envelope, { id: Number, type: 'batch:start', payload: batchStart.payload, timestamp: Number })
  t.ok(envelope.timestamp >= before)
  t.same(await client.next(), envelope, 'the client gets exactly the stored envelope')
})

t.test('an array: 201 with the envelopes in order', async (t) => {
  const { url, wsUrl } = await listen(t)
  const { client } = await connect(t, wsUrl)
  const events = [batchStart, commandStart, { type: 'command:progress', payload: validPayloads['command:progress'] }]
  const reply = await post(url, events)
  t.equal(reply.status, 201)
  t.same(reply.body.events.map((envelope: { type: string }) => envelope.type), events.map((event) => event.type))
  const ids = reply.body.events.map((envelope: { id: number }) => envelope.id)
  t.same(ids, [ids[0], ids[0] + 1, ids[0] + 2])
  t.same(await client.take(3), reply.body.events)

  const empty = await post(url, [])
  t.equal(empty.status, 201)
  t.same(empty.body, { events: [] })
})

t.test('a bad event in an array: 400 with indexed paths, and nothing stored or broadcast', async (t) => {
  const { app, url, wsUrl } = await listen(t)
  const { client } = await connect(t, wsUrl)
  const lastId = app.events.lastEventId
  const events = [batchStart, commandStart, commandStart, { type: 'command:end', payload: { ...validPayloads['command:end'], status: 7 } }]
  const reply = await post(url, events)
  t.equal(reply.status, 400)
  t.equal(reply.body.code, 'SPRINT_INVALID_EVENT')
  t.same(reply.body.details, [{ path: '/3/payload/status', message: 'Expected string' }])
  t.match(reply.body.message, '/3/payload/status')
  t.equal(app.events.lastEventId, lastId, 'nothing was stored')

  const ok = await post(url, batchStart)
  t.equal(ok.status, 201)
  t.same(await client.next(), ok.body.events[0], 'the next thing the client sees is the later valid event')
})

t.test('a bad single event: 400 with paths without an index', async (t) => {
  const { url } = await listen(t)
  const reply = await post(url, { type: 'batch:start', payload: { batch_id: 'one', max_cycles: 2 } })
  t.equal(reply.status, 400)
  t.equal(reply.body.code, 'SPRINT_INVALID_EVENT')
  t.same(reply.body.details.map((detail: { path: string }) => detail.path), ['/payload/batch_id'])

  const unknown = await post(url, { type: 'story:finished', payload: {} })
  t.equal(unknown.status, 400)
  t.same(unknown.body.details.map((detail: { path: string }) => detail.path), ['/type'])
})

t.test('a producer timestamp is kept; one too far ahead or not an integer is refused with its path', async (t) => {
  const { app, url, wsUrl } = await listen(t)
  const { client } = await connect(t, wsUrl)
  const happened = Date.now() - 86_400_000
  const single = await post(url, { ...batchStart, timestamp: happened })
  t.equal(single.status, 201)
  t.equal(single.body.events[0].timestamp, happened)
  const array = await post(url, [{ ...commandStart, timestamp: happened + 5 }, commandStart])
  t.equal(array.status, 201)
  t.equal(array.body.events[0].timestamp, happened + 5)
  t.ok(Math.abs(array.body.events[1].timestamp - Date.now()) < 5000, 'without one, the server\'s time')
  t.same((await client.take(3)).map((m: { timestamp: number }) => m.timestamp), [happened, happened + 5, array.body.events[1].timestamp])
  t.equal(app.sprintStore.getBatch(1)?.started_at, happened, 'projections use it too')

  const lastId = app.events.lastEventId
  const ahead = await post(url, [commandStart, { ...commandStart, timestamp: Date.now() + 120_000 }])
  t.equal(ahead.status, 400)
  t.equal(ahead.body.code, 'SPRINT_INVALID_EVENT')
  t.same(ahead.body.details.map((detail: { path: string }) => detail.path), ['/1/timestamp'])
  t.match(ahead.body.details[0].message, /at most 60 s ahead/)
  const slightlyAhead = await post(url, { ...commandStart, timestamp: Date.now() + 30_000 })
  t.equal(slightlyAhead.status, 201, 'a clock 30 s ahead is fine')
  for (const timestamp of ['1700000000000', 1.5, -1, Number.MAX_SAFE_INTEGER + 2, null, true]) {
    const reply = await post(url, { ...commandStart, timestamp })
    t.equal(reply.status, 400, JSON.stringify(timestamp))
    t.same(reply.body.details?.map((detail: { path: string }) => detail.path), ['/timestamp'], JSON.stringify(timestamp))
  }
  t.equal(app.events.lastEventId, lastId + 1, 'only the plausible one was stored')
})

t.test('an idempotency key: a retried event is answered with the stored envelope and stored and sent once', async (t) => {
  const { app, url, wsUrl } = await listen(t)
  const { client } = await connect(t, wsUrl)
  const keyed = (event: { type: string, payload: unknown }, idempotencyKey: string) => ({ ...event, idempotencyKey })
  const first = await post(url, keyed(batchStart, 'orchestrator-1:1'))
  t.equal(first.status, 201)
  const retry = await post(url, keyed(batchStart, 'orchestrator-1:1'))
  t.equal(retry.status, 201, 'a retry is not an error')
  t.same(retry.body, first.body, 'it gets the envelope stored the first time')
  // An array retried with one more event: only the new one is stored.
  const array = await post(url, [keyed(commandStart, 'orchestrator-1:2')])
  const arrayRetry = await post(url, [keyed(commandStart, 'orchestrator-1:2'), keyed(commandStart, 'orchestrator-1:3')])
  t.equal(arrayRetry.status, 201)
  t.same(arrayRetry.body.events.map((e: { id: number }) => e.id), [array.body.events[0].id, array.body.events[0].id + 1])
  t.equal(app.sprintStore.countEvents(), 3, 'three events stored')
  const sent = await client.take(3)
  t.same(sent.map((e: { id: number }) => e.id), [1, 2, 3], 'and each sent once')
  await post(url, batchStart)
  t.equal((await client.next()).id, 4, 'nothing else was sent in between')

  // The key on another event is refused with the whole request.
  const conflict = await post(url, [keyed(commandStart, 'orchestrator-1:9'), keyed(commandStart, 'orchestrator-1:1')])
  t.equal(conflict.status, 409)
  t.equal(conflict.body.code, 'SPRINT_IDEMPOTENCY_CONFLICT')
  t.match(conflict.body.message, 'orchestrator-1:1')
  const single = await post(url, keyed(commandStart, 'orchestrator-1:1'))
  t.equal(single.status, 409, 'a single event too')
  t.equal(app.sprintStore.countEvents(), 4, 'nothing of them stored')

  for (const bad of ['', 7, 'k'.repeat(257)]) {
    const reply = await post(url, { ...batchStart, idempotencyKey: bad })
    t.equal(reply.status, 400, `idempotencyKey ${JSON.stringify(bad).slice(0, 20)} is refused`)
    t.equal(reply.body.details[0].path, '/idempotencyKey')
  }
})

t.test('bodies that are not events', async (t) => {
  const { url } = await listen(t)
  const notObjects = await post(url, [1, { type: 'batch:start' }, { payload: {} }])
  t.equal(notObjects.status, 400)
  t.same(notObjects.body.details.map((detail: { path: string }) => detail.path), ['/0', '/1/payload', '/2/type'])
  const number = await post(url, '42')
  t.equal(number.status, 400)
  t.equal(number.body.code, 'SPRINT_INVALID_EVENT')
  const notJson = await post(url, '{"type":')
  t.equal(notJson.status, 400)
})

t.test('more than 1,000 events: 400 SPRINT_TOO_MANY_EVENTS, nothing stored', async (t) => {
  const { app, url } = await listen(t)
  const reply = await post(url, Array.from({ length: 1001 }, () => batchStart))
  t.equal(reply.status, 400)
  t.equal(reply.body.code, 'SPRINT_TOO_MANY_EVENTS')
  t.equal(app.events.lastEventId, 0)
  const full = await post(url, Array.from({ length: 1000 }, () => batchStart))
  t.equal(full.status, 201, 'exactly 1,000 is fine')
  t.equal(full.body.events.length, 1000)
})

t.test('body limit is 1 MiB: 413 beyond it', async (t) => {
  const { app, url } = await listen(t)
  const progress = (size: number) => ({ type: 'command:progress', payload: { ...validPayloads['command:progress'], message: 'x'.repeat(size) } })
  // 16 events of 64,000 characters: a little under 1,048,576 bytes.
  const underLimit = JSON.stringify(Array.from({ length: 16 }, () => progress(64_000)))
  t.ok(Buffer.byteLength(underLimit) < 1024 * 1024)
  t.equal((await post(url, underLimit)).status, 201)
  const overLimit = JSON.stringify(Array.from({ length: 17 }, () => progress(64_000)))
  t.ok(Buffer.byteLength(overLimit) > 1024 * 1024)
  const lastId = app.events.lastEventId
  const reply = await post(url, overLimit)
  t.equal(reply.status, 413)
  t.equal(app.events.lastEventId, lastId)
})

t.test('without a token: loopback peers only, and browser origins as for the WebSocket', async (t) => {
  const { url, port } = await listen(t, { allowedOrigins: ['https://ops.example.com'] })
  t.equal((await post(url, batchStart)).status, 201, 'no Origin (a script or the CLI)')
  t.equal((await post(url, batchStart, { origin: 'http://localhost:5173' })).status, 201, 'a local dev page')
  t.equal((await post(url, batchStart, { origin: `http://127.0.0.1:${port}` })).status, 201, 'the dashboard itself')
  t.equal((await post(url, batchStart, { origin: 'https://ops.example.com' })).status, 201, 'a listed origin')
  for (const origin of ['https://evil.example', 'null', 'http://localhost.evil.example', 'file://']) {
    const reply = await post(url, batchStart, { origin })
    t.equal(reply.status, 403, `Origin: ${origin}`)
    t.equal(reply.body.code, 'SPRINT_ORIGIN_NOT_ALLOWED')
  }
})

t.test('without a token: a peer that is not loopback gets 403', async (t) => {
  const { app } = await build(t)
  const reply = await app.inject({ method: 'POST', url: '/api/events', payload: batchStart, remoteAddress: '192.0.2.10' })
  t.equal(reply.statusCode, 403)
  t.equal(reply.json().code, 'SPRINT_INGEST_NOT_LOOPBACK')
  const local = await app.inject({ method: 'POST', url: '/api/events', payload: batchStart, remoteAddress: '::ffff:127.0.0.1' })
  t.equal(local.statusCode, 201)
})

t.test('isLoopbackAddress', async (t) => {
  for (const address of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1']) t.ok(isLoopbackAddress(address), address)
  for (const address of [undefined, '10.0.0.1', '::ffff:10.0.0.1', '::', '1127.0.0.1', 'fe80::1']) t.notOk(isLoopbackAddress(address), String(address))
})

t.test('with a token: 401 without it, accepted from anywhere with it', async (t) => {
  const { app, url } = await listen(t, { ingestToken: 's3cret-token' })
  const missing = await post(url, batchStart)
  t.equal(missing.status, 401)
  t.equal(missing.body.code, 'SPRINT_INGEST_UNAUTHORIZED')
  t.equal((await post(url, batchStart, { authorization: 'Bearer wrong' })).status, 401)
  t.equal((await post(url, batchStart, { authorization: 's3cret-token' })).status, 401, 'the scheme is required')
  t.equal((await post(url, batchStart, { authorization: 'Bearer s3cret-token' })).status, 201)
  t.equal((await post(url, batchStart, { authorization: 'bearer s3cret-token', origin: 'https://ci.example' })).status, 201,
    'a valid token is accepted whatever the Origin')
  const remote = await app.inject({
    method: 'POST',
    url: '/api/events',
    payload: batchStart,
    remoteAddress: '192.0.2.10',
    headers: { authorization: 'Bearer s3cret-token' }
  })
  t.equal(remote.statusCode, 201, 'and whatever the peer address')
})

t.test('the permissive CORS of the read-only routes does not cover ingest', async (t) => {
  const { url } = await listen(t)
  const preflight = (path: string, method: string) => fetch(`${url}${path}`, {
    method: 'OPTIONS',
    headers: { origin: 'https://evil.example', 'access-control-request-method': method, 'access-control-request-headers': 'content-type' }
  })
  const ingest = await preflight('/api/events', 'POST')
  t.equal(ingest.headers.get('access-control-allow-origin'), null, 'no Access-Control-Allow-Origin for a cross-site preflight')
  t.equal(ingest.headers.get('access-control-allow-methods'), null)
  const health = await preflight('/api/health', 'GET')
  t.equal(health.headers.get('access-control-allow-origin'), '*', 'the read-only routes keep theirs')
  const reply = await post(url, batchStart, { origin: 'https://evil.example' })
  t.equal(reply.headers.get('access-control-allow-origin'), null, 'nor on the refused POST itself')
})

t.test('under a prefix', async (t) => {
  const { url } = await listen(t, { prefix: '/sprint' })
  t.match(url, /\/sprint$/)
  t.equal((await post(url, batchStart)).status, 201)
})
