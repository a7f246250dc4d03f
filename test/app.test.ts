import t from 'tap'
import Fastify from 'fastify'
import websocket from '@fastify/websocket'
import path from 'node:path'
import sprintDashboard from '../src/app.ts'
import { connect, tempDir } from './helper.ts'

t.test('registered under a prefix inside a parent app', async t => {
  const dir = await tempDir(t)
  const app = Fastify()
  t.teardown(() => app.close())
  app.get('/', async () => ({ host: 'app' }))
  await app.register(sprintDashboard, { prefix: '/sprint', dbPath: path.join(dir, 'db'), artifactsDir: dir })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as { port: number }

  t.same((await app.inject({ url: '/' })).json(), { host: 'app' }, 'the host keeps its own routes')
  t.equal((await app.inject({ url: '/sprint/api/health' })).statusCode, 200)
  t.equal((await app.inject({ url: '/sprint/' })).statusCode, 200)
  t.equal((await app.inject({ url: '/api/health' })).statusCode, 404, 'nothing outside the prefix')

  const { client, init } = await connect(t, `ws://127.0.0.1:${port}/sprint/ws`)
  t.equal(init.type, 'init')
  const sent = await app.events.emit('cycle:start', { cycle_number: 1, story_keys: ['1-1'] })
  t.same(await client.next(), sent, 'app.events on the parent reaches /sprint/ws clients')
})

t.test('a host that already registered @fastify/websocket keeps it', async t => {
  const dir = await tempDir(t)
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(websocket)
  app.get('/host-ws', { websocket: true }, socket => { socket.send('host') })
  await app.register(sprintDashboard, { dbPath: path.join(dir, 'db'), artifactsDir: dir })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as { port: number }
  const { client, init } = await connect(t, `ws://127.0.0.1:${port}/ws`)
  t.equal(init.type, 'init')
  app.events.emit('error', { type: 'x', message: 'y' })
  t.equal((await client.next()).type, 'error')
})

t.test('invalid options fail at registration with the option named', async t => {
  const cases: Array<[object, RegExp]> = [
    [{ heartbeatIntervalMs: 0 }, /heartbeatIntervalMs/],
    [{ maxBufferedBytes: -1 }, /maxBufferedBytes/],
    [{ prefix: 'sprint' }, /prefix/],
    [{ prefix: '/sprint/' }, /prefix/],
    [{ allowedOrigins: 'everyone' }, /allowedOrigins/],
    [{ ingestToken: '' }, /ingestToken/],
    [{ metrics: 'false' }, /metrics/],
    [{ redis: { url: 'localhost:6379' } }, /redis\.url/],
    [{ redis: { url: 'redis://127.0.0.1:6379', key: '' } }, /redis\.key/]
  ]
  for (const [options, message] of cases) {
    const app = Fastify()
    t.teardown(() => app.close())
    await t.rejects(async () => await app.register(sprintDashboard, { dbPath: ':memory:', ...options }).ready(), { code: 'SPRINT_INVALID_OPTION', message })
  }
})

t.test(':memory: works and two instances keep separate stores', async t => {
  const a = Fastify()
  const b = Fastify()
  t.teardown(() => Promise.all([a.close(), b.close()]))
  await a.register(sprintDashboard, { dbPath: ':memory:' })
  await b.register(sprintDashboard, { dbPath: ':memory:' })
  await Promise.all([a.ready(), b.ready()])
  await a.events.emit('error', { type: 'x', message: 'only a' })
  t.equal(a.events.lastEventId, 1)
  t.equal(b.events.lastEventId, 0)
})

t.test('validation errors carry the Fastify error shape plus details', async t => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(sprintDashboard, { dbPath: ':memory:' })
  app.get('/emit-bad', async () => app.events.emit('batch:start', { batch_id: 1 } as never))
  const response = await app.inject({ url: '/emit-bad' })
  // The host's own route uses the host's error handler; the shape is Fastify's.
  t.equal(response.statusCode, 400)
  t.match(response.json(), { statusCode: 400, code: 'SPRINT_INVALID_EVENT', error: 'Bad Request', message: /\/payload\/max_cycles/ })
})
