import t from 'tap'
import { createServer } from 'node:net'
import { chunkEvents, createEventClient, createEventSender, EventClientError, type UncheckedEventInput } from '../../src/emitter/client.ts'
import { connect, listen, validPayloads } from '../helper.ts'

/** A port nothing listens on (yet): bound once by the OS, then released. */
async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

t.test('emit and emitMany return the stored envelopes', async (t) => {
  const { url, wsUrl } = await listen(t)
  const { client: socket } = await connect(t, wsUrl)
  const client = createEventClient({ url })
  t.equal(client.endpoint, `${url}/api/events`)

  const envelope = await client.emit('command:start', { story_key: '1-1', command: 'dev-story', task_id: 'implement' })
  t.match(envelope, { id: Number, type: 'command:start', payload: { story_key: '1-1' }, timestamp: Number })
  t.same(await socket.next(), envelope)

  const envelopes = await client.emitMany([
    { type: 'batch:start', payload: { batch_id: 3, max_cycles: 'all' } },
    { type: 'cycle:start', payload: { cycle_number: 1, story_keys: ['1-1'] } }
  ])
  t.same(envelopes.map((item) => item.id), [envelope.id + 1, envelope.id + 2])
  t.same(await socket.take(2), envelopes)
})

t.test('a base URL with a prefix and a trailing slash', async (t) => {
  const { url } = await listen(t, { prefix: '/sprint' })
  const client = createEventClient({ url: `${url}/` })
  t.equal(client.endpoint, `${url}/api/events`)
  t.equal((await client.emit('batch:start', { batch_id: 1, max_cycles: 1 })).type, 'batch:start')
})

t.test('a rejected batch throws EventClientError with the server message and field paths', async (t) => {
  const { url } = await listen(t)
  const client = createEventClient({ url })
  const error = await client.emitUnchecked([
    { type: 'batch:start', payload: validPayloads['batch:start'] },
    { type: 'command:end', payload: { ...validPayloads['command:end'], status: 1 } }
  ]).catch((caught: unknown) => caught)
  t.type(error, EventClientError)
  const clientError = error as EventClientError
  t.equal(clientError.statusCode, 400)
  t.equal(clientError.code, 'SPRINT_INVALID_EVENT')
  t.same(clientError.details, [{ path: '/1/payload/status', message: 'Expected string' }])
  t.equal(clientError.describe(), `SPRINT_INVALID_EVENT: ${clientError.message}\n  /1/payload/status: Expected string`)
})

t.test('the token is sent as a bearer token', async (t) => {
  const { url } = await listen(t, { ingestToken: 'tok-123' })
  const rejected = await createEventClient({ url }).emit('batch:start', { batch_id: 1, max_cycles: 1 }).catch((caught: unknown) => caught)
  t.match(rejected, { statusCode: 401, code: 'SPRINT_INGEST_UNAUTHORIZED' })
  const envelope = await createEventClient({ url, token: 'tok-123' }).emit('batch:start', { batch_id: 1, max_cycles: 1 })
  t.equal(envelope.type, 'batch:start')
})

t.test('connection refused is retried with backoff until the service is up', async (t) => {
  const port = await freePort()
  let attempts = 0
  let started: Promise<unknown> | null = null
  const client = createEventClient({
    url: `http://127.0.0.1:${port}`,
    retryDelayMs: 20,
    // Counts attempts and brings the service up after the first refusal: the retry, not a sleep, has to find it.
    fetch: async (input, init) => {
      attempts++
      try {
        return await fetch(input, init)
      } catch (error) {
        if (started === null) started = listen(t, { port })
        await started
        throw error
      }
    }
  })
  const envelope = await client.emit('batch:start', { batch_id: 1, max_cycles: 2 })
  t.equal(envelope.type, 'batch:start')
  t.equal(attempts, 2, 'one refusal, one success')
})

t.test('it gives up after the configured retries', async (t) => {
  const port = await freePort()
  let attempts = 0
  const client = createEventClient({
    url: `http://127.0.0.1:${port}`,
    retries: 2,
    retryDelayMs: 1,
    fetch: async (input, init) => {
      attempts++
      return await fetch(input, init)
    }
  })
  const error = await client.emit('batch:start', { batch_id: 1, max_cycles: 2 }).catch((caught: unknown) => caught) as EventClientError
  t.type(error, EventClientError)
  t.equal(error.code, 'ECONNREFUSED')
  t.equal(error.statusCode, undefined)
  t.match(error.message, `Could not reach the sprint dashboard at http://127.0.0.1:${port}/api/events`)
  t.equal(attempts, 3, 'the first try and two retries')
})

t.test('a connection lost before the answer is retried with the same idempotency keys; other failures are not retried', async (t) => {
  const bodies: unknown[] = []
  const client = createEventClient({
    url: 'http://127.0.0.1:1',
    retryDelayMs: 1,
    fetch: async (_input, init) => {
      bodies.push(JSON.parse(String(init?.body)))
      if (bodies.length === 1) throw new TypeError('fetch failed', { cause: Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }) })
      return new Response(JSON.stringify({ events: [] }), { status: 201 })
    }
  })
  await client.emitUnchecked([{ type: 'batch:start', payload: { batch_id: 1, max_cycles: 2 } }, { type: 'batch:end', payload: { batch_id: 1, status: 'stopped' }, idempotencyKey: 'mine' }])
  t.equal(bodies.length, 2, 'sent again after the reset')
  t.same(bodies[1], bodies[0], 'the same events under the same keys')
  const [named, own] = bodies[0] as Array<{ idempotencyKey: string }>
  t.match(named!.idempotencyKey, /^[0-9a-f-]{36}:1$/, 'the client names an event without a key')
  t.equal(own!.idempotencyKey, 'mine', 'and keeps a key the caller gave')
  await client.emit('batch:start', { batch_id: 2, max_cycles: 2 })
  t.match((bodies[2] as { idempotencyKey: string }).idempotencyKey, /:2$/, 'each event gets its own key')

  // The connection breaks while the answer is read: as lost as before it, and retried the same way.
  const sent: string[] = []
  const readBreaks = createEventClient({
    url: 'http://127.0.0.1:1',
    retryDelayMs: 1,
    fetch: async (_input, init) => {
      sent.push(String(init?.body))
      if (sent.length === 1) {
        const broken = new ReadableStream({ start (controller) { controller.error(new TypeError('terminated', { cause: Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' }) })) } })
        return new Response(broken, { status: 201 })
      }
      return new Response(JSON.stringify({ events: [{ id: 3, type: 'batch:start', payload: { batch_id: 3, max_cycles: 2 }, timestamp: 1 }] }), { status: 201 })
    }
  })
  t.equal((await readBreaks.emit('batch:start', { batch_id: 3, max_cycles: 2 })).id, 3)
  t.equal(sent.length, 2, 'sent again')
  t.equal(sent[1], sent[0], 'with the same key')

  let attempts = 0
  const timingOut = createEventClient({
    url: 'http://127.0.0.1:1',
    fetch: async () => {
      attempts++
      throw Object.assign(new Error('The operation was aborted due to timeout'), { name: 'TimeoutError' })
    }
  })
  const error = await timingOut.emit('batch:start', { batch_id: 1, max_cycles: 2 }).catch((caught: unknown) => caught)
  t.match(error, { message: /no answer within/ })
  t.equal(attempts, 1, 'a timeout is reported, not waited out again')
})

t.test('a 503 that stored nothing (broker or store down) is retried; other 5xx answers are not', async (t) => {
  const answers = [
    { status: 503, body: { statusCode: 503, code: 'SPRINT_BROKER_UNAVAILABLE', error: 'Service Unavailable', message: 'Redis is unreachable' } },
    { status: 503, body: { statusCode: 503, code: 'SPRINT_STORAGE_UNAVAILABLE', error: 'Service Unavailable', message: 'disk full' } },
    { status: 201, body: { events: [{ id: 7, type: 'batch:start', payload: { batch_id: 1, max_cycles: 2 }, timestamp: 1 }] } }
  ]
  let attempts = 0
  const client = createEventClient({
    url: 'http://127.0.0.1:1',
    retryDelayMs: 1,
    fetch: async () => {
      const answer = answers[attempts++]!
      return new Response(JSON.stringify(answer.body), { status: answer.status, headers: { 'content-type': 'application/json' } })
    }
  })
  const envelope = await client.emit('batch:start', { batch_id: 1, max_cycles: 2 })
  t.equal(envelope.id, 7)
  t.equal(attempts, 3)

  let otherAttempts = 0
  const other = createEventClient({
    url: 'http://127.0.0.1:1',
    retryDelayMs: 1,
    fetch: async () => {
      otherAttempts++
      return new Response(JSON.stringify({ statusCode: 503, code: 'SPRINT_TOO_MANY_CONNECTIONS', error: 'Service Unavailable', message: 'full' }), { status: 503 })
    }
  })
  await t.rejects(other.emit('batch:start', { batch_id: 1, max_cycles: 2 }), { code: 'SPRINT_TOO_MANY_CONNECTIONS', statusCode: 503 })
  t.equal(otherAttempts, 1, 'a 503 that does not say nothing was stored is not retried')
})

t.test('a non-JSON error answer still gives a useful error', async (t) => {
  const client = createEventClient({
    url: 'http://127.0.0.1:1',
    fetch: async () => new Response('<html>Bad Gateway</html>', { status: 502, statusText: 'Bad Gateway' })
  })
  const error = await client.emit('batch:start', { batch_id: 1, max_cycles: 2 }).catch((caught: unknown) => caught)
  t.match(error, { statusCode: 502, message: 'HTTP 502 Bad Gateway' })
})

t.test('chunkEvents respects the count and byte limits', async (t) => {
  const events = Array.from({ length: 2500 }, (_, index) => ({ type: 'x', payload: index }))
  t.same(chunkEvents(events).map((chunk) => chunk.length), [1000, 1000, 500])
  const big = Array.from({ length: 5 }, () => ({ type: 'x', payload: 'y'.repeat(400) }))
  const chunks = chunkEvents(big, 1000, 1000)
  t.same(chunks.map((chunk) => chunk.length), [2, 2, 1])
  t.same(chunks.flat(), big, 'order kept')
  t.same(chunkEvents([{ payload: 'z'.repeat(5000) }], 1000, 1000).map((chunk) => chunk.length), [1], 'an oversized event goes alone')
  t.same(chunkEvents([]), [])
})

t.test('createEventSender keeps order, batches what queues up, and reports failures', async (t) => {
  const { url, wsUrl } = await listen(t)
  const { client: socket } = await connect(t, wsUrl)
  const requests: number[] = []
  const client = createEventClient({
    url,
    fetch: async (input, init) => {
      requests.push(JSON.parse(String(init?.body)).length)
      return await fetch(input, init)
    }
  })
  const failures: Array<{ code: string | undefined, count: number }> = []
  const sender = createEventSender(client, { onError: (error, events) => failures.push({ code: error.code, count: events.length }) })
  const progress = (index: number): UncheckedEventInput => ({ type: 'command:progress', payload: { ...validPayloads['command:progress'], message: `step ${index}` } })
  for (let index = 0; index < 50; index++) sender.enqueue(progress(index))
  sender.enqueue({ type: 'command:end', payload: { bad: true } })
  sender.enqueue(progress(50))
  await sender.drain()
  t.equal(sender.sent + sender.failed, 52)
  t.ok(requests.length < 52, `52 events took ${requests.length} requests`)
  t.same(failures, [{ code: 'SPRINT_INVALID_EVENT', count: failures[0]?.count }], 'the rejected request was reported')
  const received = await socket.take(sender.sent)
  const messages = received.map((envelope) => envelope.payload.message)
  t.same(messages, [...messages].sort((a, b) => Number(a.split(' ')[1]) - Number(b.split(' ')[1])), 'in order')
  t.equal(messages[0], 'step 0')
  await sender.drain()
})
