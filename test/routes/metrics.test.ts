import t from 'tap'
import Fastify from 'fastify'
import path from 'node:path'
import sprintDashboard from '../../src/app.ts'
import { closed, connect, listen, parseMetrics, tempDir, validPayloads, waitFor } from '../helper.ts'

async function scrape (url: string, init?: RequestInit): Promise<{ status: number, headers: Headers, samples: Map<string, number>, text: string }> {
  const response = await fetch(`${url}/metrics`, init)
  const text = await response.text()
  return { status: response.status, headers: response.headers, samples: parseMetrics(text), text }
}

t.test('off by default in plugin use: GET /metrics is 404', async t => {
  const { url } = await listen(t)
  t.equal((await scrape(url)).status, 404)
})

t.test('counts move as real clients connect and events are emitted and delivered', async t => {
  const { app, url, wsUrl } = await listen(t, { metrics: true })
  const start = await scrape(url)
  t.equal(start.status, 200)
  t.match(start.headers.get('content-type'), /^text\/plain; version=0\.0\.4/)
  t.equal(start.samples.get('sprint_events_emitted_total'), 0)
  t.equal(start.samples.get('sprint_clients{kind="plain"}'), 0)

  const { client: plain } = await connect(t, wsUrl)
  const { client: batched } = await connect(t, `${wsUrl}?batch=1`)
  const connected = await scrape(url)
  t.equal(connected.samples.get('sprint_clients{kind="plain"}'), 1)
  t.equal(connected.samples.get('sprint_clients{kind="batched"}'), 1)

  // Three events in one turn: one commit, three frames to the plain client, one frame of three to the batched one.
  const emitted = [
    app.events.emit('batch:start', validPayloads['batch:start']),
    app.events.emit('cycle:start', { cycle_number: 1, story_keys: ['2a-1'] }),
    app.events.emit('error', validPayloads.error)
  ]
  await Promise.all(emitted)
  t.same((await plain.take(3)).map(event => event.id), [1, 2, 3])
  t.same((await batched.take(3)).map(event => event.id), [1, 2, 3])
  const after = await scrape(url)
  t.equal(after.samples.get('sprint_events_emitted_total'), 3)
  t.equal(after.samples.get('sprint_events_delivered_total'), 6, '3 events x 2 clients')
  t.equal(after.samples.get('sprint_frames_written_total'), 4, '3 plain frames + 1 batched frame')
  t.equal(after.samples.get('sprint_last_event_id'), 3)
  t.ok(after.samples.get('sprint_commit_duration_seconds_count')! >= 1, 'the commit was timed')
  t.equal(after.samples.get('sprint_commit_duration_seconds_bucket{le="+Inf"}'), after.samples.get('sprint_commit_duration_seconds_count'))

  // A notice is a frame to every client, not a delivered event.
  app.events.broadcast({ type: 'status', payload: { broker: 'down' } })
  await plain.next()
  await batched.next()
  const noticed = await scrape(url)
  t.equal(noticed.samples.get('sprint_frames_written_total'), 6)
  t.equal(noticed.samples.get('sprint_events_delivered_total'), 6)

  // Over HTTP too.
  const posted = await fetch(`${url}/api/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify([{ type: 'error', payload: validPayloads.error }, { type: 'error', payload: validPayloads.error }]) })
  t.equal(posted.status, 201)
  await plain.take(2)
  await batched.take(2)
  const final = await scrape(url)
  t.equal(final.samples.get('sprint_events_emitted_total'), 5)
  t.equal(final.samples.get('sprint_events_delivered_total'), 10)
  t.notOk([...final.samples.keys()].some(key => key.startsWith('sprint_ingest_rejections_total')), 'an accepted post is no rejection')

  await plain.close()
  await batched.close()
  await waitFor(() => app.events.clientCount === 0)
  const gone = await scrape(url)
  t.equal(gone.samples.get('sprint_clients{kind="plain"}'), 0)
  t.equal(gone.samples.get('sprint_clients{kind="batched"}'), 0)
})

t.test('resumes are counted as replayed or reset', async t => {
  const { app, url, wsUrl } = await listen(t, { metrics: true })
  await app.events.emit('error', validPayloads.error)
  await app.events.emit('error', validPayloads.error)
  const { init: replayed } = await connect(t, `${wsUrl}?since=1`)
  t.equal(replayed.payload.resumed, true)
  const { init: ahead } = await connect(t, `${wsUrl}?since=99`)
  t.equal(ahead.payload.reset, true)
  const { init: bad } = await connect(t, `${wsUrl}?since=abc`)
  t.equal(bad.payload.reset, true)
  await connect(t, wsUrl) // no since: neither
  const { samples } = await scrape(url)
  t.equal(samples.get('sprint_resumes_total{result="replayed"}'), 1)
  t.equal(samples.get('sprint_resumes_total{result="reset"}'), 2)
})

t.test('ingest rejections are counted by code, whichever step refused the request', async t => {
  const { url } = await listen(t, { metrics: true, ingestToken: 'secret' })
  const post = async (body: string, headers: Record<string, string> = {}): Promise<number> =>
    (await fetch(`${url}/api/events`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body })).status
  const auth = { authorization: 'Bearer secret' }
  t.equal(await post(JSON.stringify({ type: 'error', payload: validPayloads.error })), 401, 'no token')
  t.equal(await post(JSON.stringify({ type: 'error', payload: validPayloads.error }), { authorization: 'Bearer wrong' }), 401)
  t.equal(await post('{not json', auth), 400)
  t.equal(await post(JSON.stringify({ type: 'error', payload: {} }), auth), 400, 'invalid event')
  t.equal(await post(JSON.stringify({ type: 'nope', payload: {} }), auth), 400, 'unknown type')
  t.equal(await post(JSON.stringify({ type: 'error', payload: { type: 'x', message: 'y'.repeat(2 * 1024 * 1024) } }), auth), 413)
  t.equal(await post(JSON.stringify({ type: 'error', payload: validPayloads.error }), auth), 201)
  const { samples } = await scrape(url)
  t.equal(samples.get('sprint_ingest_rejections_total{code="SPRINT_INGEST_UNAUTHORIZED"}'), 2)
  t.equal(samples.get('sprint_ingest_rejections_total{code="SPRINT_INVALID_JSON"}'), 1)
  t.equal(samples.get('sprint_ingest_rejections_total{code="SPRINT_INVALID_EVENT"}'), 2)
  t.equal(samples.get('sprint_ingest_rejections_total{code="FST_ERR_CTP_BODY_TOO_LARGE"}'), 1)
  t.equal([...samples.keys()].filter(key => key.startsWith('sprint_ingest_rejections_total')).length, 4, 'nothing else')
})

t.test('a slow consumer closed with 1013 is counted', async t => {
  const { app, url, wsUrl } = await listen(t, { metrics: true, maxBufferedBytes: 64 * 1024 })
  const { client } = await connect(t, wsUrl)
  const rawSocket = (client.socket as unknown as { _socket: import('node:net').Socket })._socket
  rawSocket.pause()
  const closing = closed(client.socket)
  const message = 'x'.repeat(60_000)
  // Until the kernel's buffers are full and the server's own queue passes the limit.
  while (app.events.clientCount > 0) {
    await app.events.emitMany(Array.from({ length: 20 }, () => ({ type: 'command:progress', payload: { ...validPayloads['command:progress'], message } })))
    await new Promise(resolve => setImmediate(resolve))
  }
  rawSocket.resume()
  t.equal((await closing).code, 1013)
  const { samples } = await scrape(url)
  t.equal(samples.get('sprint_slow_consumer_closes_total'), 1)
})

t.test('the read routes\' guard applies: the prefix and the configured CORS origin', async t => {
  const { url, port } = await listen(t, { metrics: true, prefix: '/sprint', corsOrigin: 'https://ops.example' })
  t.equal((await fetch(`http://127.0.0.1:${port}/metrics`)).status, 404, 'not outside the prefix')
  const scraped = await scrape(url, { headers: { origin: 'https://ops.example' } })
  t.equal(scraped.status, 200)
  t.equal(scraped.headers.get('access-control-allow-origin'), 'https://ops.example')
  const health = await fetch(`${url}/api/health`, { headers: { origin: 'https://ops.example' } })
  t.equal(scraped.headers.get('access-control-allow-origin'), health.headers.get('access-control-allow-origin'), 'the same as /api/health')
  const preflight = await fetch(`${url}/metrics`, { method: 'OPTIONS', headers: { origin: 'https://ops.example', 'access-control-request-method': 'GET' } })
  t.equal(preflight.status, 204)
  t.equal(preflight.headers.get('access-control-allow-origin'), 'https://ops.example')
})

t.test('two apps in one process each serve their own counts and the shared process metrics', async t => {
  const first = await listen(t, { metrics: true })
  const second = await listen(t, { metrics: true })
  await first.app.events.emit('error', validPayloads.error)
  const [a, b] = [await scrape(first.url), await scrape(second.url)]
  t.equal(a.status, 200)
  t.equal(b.status, 200)
  t.equal(a.samples.get('sprint_events_emitted_total'), 1)
  t.equal(b.samples.get('sprint_events_emitted_total'), 0)
  t.ok(a.samples.has('process_resident_memory_bytes'))
  t.ok(b.samples.has('process_resident_memory_bytes'))

  // And after one closes, a new one still builds (nothing process-wide is registered twice).
  await first.app.close()
  const dir = await tempDir(t)
  const third = Fastify({ logger: false })
  t.teardown(() => third.close())
  await third.register(sprintDashboard, { metrics: true, dbPath: path.join(dir, 'third.db'), artifactsDir: dir })
  const scraped = await third.inject({ url: '/metrics' })
  t.equal(scraped.statusCode, 200)
  t.equal(parseMetrics(scraped.body).get('sprint_events_emitted_total'), 0)
})
