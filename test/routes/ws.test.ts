import t from 'tap'
import { connect, listen, closed, refusedUpgrade, waitFor, TestClient } from '../helper.ts'

t.test('ping is answered with pong', async t => {
  const { wsUrl } = await listen(t)
  const { client } = await connect(t, wsUrl)
  client.socket.send(JSON.stringify({ type: 'ping' }))
  t.same(await client.next(), { type: 'pong' })
})

t.test('bad client frames get a bad_request reply and the connection stays up', async t => {
  const { app, wsUrl } = await listen(t)
  const { client } = await connect(t, wsUrl)
  const frames: Array<[string | Buffer, boolean, RegExp]> = [
    ['not json', false, /not valid JSON/],
    ['{"type":"subscribe"}', false, /Unknown message/],
    ['[]', false, /Unknown message/],
    ['null', false, /Unknown message/],
    ['"ping"', false, /Unknown message/],
    [Buffer.from('{"type":"ping"}'), true, /Binary frames/]
  ]
  for (const [data, binary, message] of frames) {
    client.socket.send(data, { binary })
    const reply = await client.next()
    t.equal(reply.type, 'error')
    t.equal(reply.payload.type, 'bad_request')
    t.match(reply.payload.message, message)
  }
  const sent = await app.events.emit('error', { type: 'still', message: 'up' })
  t.equal((await client.next()).id, sent.id, 'still receiving events')
})

t.test('a frame of exactly 65,536 bytes is accepted; one byte more closes with 1009', async t => {
  const { wsUrl } = await listen(t)
  const { client } = await connect(t, wsUrl)
  client.socket.send('x'.repeat(65_536))
  t.match(await client.next(), { payload: { type: 'bad_request' } }, 'processed (and refused as not JSON)')
  client.socket.send('x'.repeat(65_537))
  t.equal((await closed(client.socket)).code, 1009)
})

t.test('invalid UTF-8 in a text frame closes with 1007', async t => {
  const { wsUrl } = await listen(t)
  const { client } = await connect(t, wsUrl)
  // ws refuses to send invalid UTF-8, so write the frame by hand: FIN + text opcode,
  // masked, length 2, an all-zero mask key, then the bytes C3 28 (an invalid sequence).
  const raw = (client.socket as unknown as { _socket: import('node:net').Socket })._socket
  raw.write(Buffer.from([0x81, 0x82, 0, 0, 0, 0, 0xc3, 0x28]))
  t.equal((await closed(client.socket)).code, 1007)
})

t.test('a flood of pings is rate limited, then the client is cut off', async t => {
  const { app, wsUrl } = await listen(t)
  const { client } = await connect(t, wsUrl)
  let pongs = 0
  client.socket.on('pong', () => pongs++)
  const done = closed(client.socket)
  for (let i = 0; i < 1000; i++) client.socket.ping()
  const { code } = await done
  t.equal(code, 1008, 'closed as a policy violation')
  t.ok(pongs <= 20, `answered ${pongs} of 1000 pings`)
  await waitFor(() => app.events.clientCount === 0)
  t.equal(app.events.clientCount, 0)
})

t.test('protocol pings from a well-behaved client get pongs', async t => {
  const { wsUrl } = await listen(t)
  const { client } = await connect(t, wsUrl)
  const pong = new Promise<Buffer>(resolve => client.socket.once('pong', resolve))
  client.socket.ping('hello')
  t.equal((await pong).toString(), 'hello')
})

t.test('disconnect removes the client at once', async t => {
  const { app, wsUrl } = await listen(t)
  const { client } = await connect(t, wsUrl)
  t.equal(app.events.clientCount, 1)
  await client.close()
  await waitFor(() => app.events.clientCount === 0)
  t.equal(app.events.clientCount, 0)
  t.doesNotThrow(() => app.events.emit('error', { type: 'x', message: 'nobody listens' }))
})

t.test('Origin check at the handshake', async t => {
  const { wsUrl, port } = await listen(t)
  const allowed = [undefined, 'http://localhost', 'http://localhost:5173', 'https://127.0.0.1:9', 'http://[::1]:3000', `http://127.0.0.1:${port}`]
  for (const origin of allowed) {
    const { client, init } = await connect(t, wsUrl, origin === undefined ? {} : { origin })
    t.equal(init.type, 'init', `allowed: ${origin ?? '(none)'}`)
    client.socket.terminate()
  }
  const refused = ['null', 'http://evil.example', 'http://localhost.evil.example', 'http://127.0.0.1.nip.io', 'file://', 'chrome-extension://abc']
  for (const origin of refused) {
    t.equal(await refusedUpgrade(wsUrl, { origin }), 403, `refused: ${origin}`)
  }
})

t.test('allowedOrigins lists extra sites, "*" opens to all', async t => {
  const listed = await listen(t, { allowedOrigins: ['https://ops.example.com'] })
  const { init } = await connect(t, listed.wsUrl, { origin: 'https://ops.example.com' })
  t.equal(init.type, 'init')
  t.equal(await refusedUpgrade(listed.wsUrl, { origin: 'https://other.example.com' }), 403)
  const open = await listen(t, { allowedOrigins: '*' })
  t.equal((await connect(t, open.wsUrl, { origin: 'https://anything.example' })).init.type, 'init')
})

t.test('over maxConnections the upgrade gets 503', async t => {
  const { app, wsUrl } = await listen(t, { maxConnections: 2 })
  await connect(t, wsUrl)
  await connect(t, wsUrl)
  t.equal(await refusedUpgrade(wsUrl), 503)
  t.equal(app.events.clientCount, 2)
})

t.test('resume: since=<id> replays exactly what came after, then live', async t => {
  const { app, wsUrl } = await listen(t)
  for (let i = 0; i < 10; i++) app.events.emit('error', { type: 'x', message: String(i) })
  const { client, init } = await connect(t, `${wsUrl}?since=7`)
  t.equal(init.payload.resumed, true)
  t.equal(init.payload.reset, false)
  t.same(init.payload.events.map((e: { id: number }) => e.id), [8, 9, 10])
  app.events.emit('error', { type: 'x', message: 'live' })
  t.equal((await client.next()).id, 11)
  const current = await connect(t, `${wsUrl}?since=11`)
  t.same(current.init.payload, { batch: null, events: [], resumed: true, reset: false })
})

t.test('resume: reset when ahead, pruned, past maxReplay, or invalid', async t => {
  const { app, wsUrl } = await listen(t, { maxReplay: 5, recentEvents: 3 })
  for (let i = 0; i < 10; i++) app.events.emit('error', { type: 'x', message: String(i) })
  const cases: Array<[string, boolean]> = [
    ['99', false], // ahead of the server: the database was replaced
    ['2', false], // 8 behind, cap is 5
    ['-1', true],
    ['abc', true],
    ['1e309', true],
    ['99999999999999999999', true],
    ['', true]
  ]
  for (const [since, isError] of cases) {
    const { init } = await connect(t, `${wsUrl}?since=${encodeURIComponent(since)}`)
    t.equal(init.payload.reset, true, `since=${since} resets`)
    t.equal(init.payload.resumed, false)
    t.same(init.payload.events.map((e: { id: number }) => e.id), [8, 9, 10], 'recent snapshot')
    if (isError) t.match(init.payload.error, /"since"/, `since=${since} explains`)
    else t.notOk('error' in init.payload)
  }
})

t.test('a plain HTTP GET of /ws is not an upgrade', async t => {
  const { app } = await listen(t)
  const response = await app.inject({ url: '/ws' })
  t.equal(response.statusCode, 404)
})

t.test('a client with autoPong off and no reads is still sent init first', async t => {
  const { wsUrl } = await listen(t)
  const client = new TestClient(wsUrl, { autoPong: false })
  t.teardown(() => client.socket.terminate())
  t.equal((await client.next()).type, 'init')
})
