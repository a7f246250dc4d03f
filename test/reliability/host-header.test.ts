import t from 'tap'
import { hostname } from 'node:os'
import { startServer } from '../e2e/server-process.ts'
import { listen, refusedUpgrade, tempDir, validPayloads, type TestContext } from '../helper.ts'
import { WebSocket } from 'ws'
import { rawHttp } from './wire.ts'
import { MAX_DELIVERY_GAP_MS, startSteadyStream } from './steady-stream.ts'

/**
 * Issue #17, finding 7 (DNS rebinding): `Host: attacker.test` with `Origin: http://attacker.test` got
 * 201 on POST /api/events and 101 on /ws from a loopback peer, so a page whose name was rebound to
 * 127.0.0.1 could read the stream and inject events.
 */

function postWith (port: number, host: string, origin: string): Promise<number> {
  const body = JSON.stringify({ type: 'command:progress', payload: validPayloads['command:progress'] })
  return rawHttp(port, `POST /api/events HTTP/1.1\r\nHost: ${host}\r\nOrigin: ${origin}\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`).then(response => response.status)
}

/** The status of a /ws upgrade sent with this Host and Origin: 101 when accepted. */
async function upgradeWith (t: TestContext, port: number, host: string, origin: string): Promise<number> {
  const options = { headers: { host }, origin }
  const url = `ws://127.0.0.1:${port}/ws`
  const status = await refusedUpgrade(url, options).catch(() => 101)
  if (status === 101) {
    // Accepted: make sure it really is open, then close it.
    const socket = new WebSocket(url, options)
    t.teardown(() => socket.terminate())
    await new Promise<void>((resolve, reject) => { socket.once('open', () => resolve()); socket.once('error', reject) })
  }
  return status
}

t.test('a rebound name is refused on /ws and POST /api/events, loopback names and IPs are not; a client keeps its stream meanwhile', async t => {
  const { app, port, wsUrl } = await listen(t, { allowedHosts: ['dashboard.example', '.team.example'] })
  const stream = await startSteadyStream(wsUrl, async sequence =>
    (await app.events.emit('command:progress', { ...validPayloads['command:progress'], message: `steady ${sequence}` })).id)
  const attacker = `attacker.test:${port}`
  for (let i = 0; i < 10; i++) {
    t.equal(await postWith(port, attacker, `http://${attacker}`), 403, 'POST from a rebound page: 403')
    t.equal(await upgradeWith(t, port, attacker, `http://${attacker}`), 403, '/ws from a rebound page: 403')
  }
  const body = await rawHttp(port, `POST /api/events HTTP/1.1\r\nHost: ${attacker}\r\nContent-Type: application/json\r\n` +
    'Content-Length: 2\r\nConnection: close\r\n\r\n{}')
  t.match(JSON.parse(body.body), { code: 'SPRINT_HOST_NOT_ALLOWED', message: /Host "attacker\.test:\d+".*allowedHosts/ }, 'the refusal names the host and the option')

  for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`, `app.localhost:${port}`, `dashboard.example:${port}`, `a.team.example:${port}`]) {
    t.equal(await postWith(port, host, `http://${host}`), 201, `POST with Host ${host}`)
    t.equal(await upgradeWith(t, port, host, `http://${host}`), 101, `/ws with Host ${host}`)
  }
  const result = await stream.stop()
  t.same(stream.reader.violations, [])
  t.ok(result.maxStallMs <= MAX_DELIVERY_GAP_MS, `no delivery gap over ${MAX_DELIVERY_GAP_MS} ms (longest ${result.maxStallMs} ms)`)
})

t.test('the standalone server bound to a name answers to that name, and still not to others', async t => {
  const name = hostname()
  const dir = await tempDir(t)
  const server = await startServer({ HOST: name, SPRINT_DB: `${dir}/sprint.db`, SPRINT_ARTIFACTS_DIR: dir, SPRINT_WATCH: '0', SPRINT_ALLOWED_HOSTS: 'extra.example' })
  t.teardown(() => { server.child.kill('SIGKILL') })
  const port = Number(new URL(server.url).port)
  t.equal(await upgradeWith(t, port, `${name}:${port}`, `http://${name}:${port}`), 101, `/ws opened by the bound name ${name}`)
  t.equal(await upgradeWith(t, port, `extra.example:${port}`, `http://extra.example:${port}`), 101, 'and by a name in SPRINT_ALLOWED_HOSTS')
  t.equal(await upgradeWith(t, port, `attacker.test:${port}`, `http://attacker.test:${port}`), 403, 'not by another name')
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 0)
})
