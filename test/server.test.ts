import t from 'tap'
import path from 'node:path'
import { loggerOptions, startServer } from '../src/server.ts'
import { tempDir } from './helper.ts'

t.test('startServer listens on the environment it is given and leaves no signal handler behind once closed', async t => {
  const dir = await tempDir(t)
  const before = process.listenerCount('SIGTERM')
  const app = await startServer({ HOST: '127.0.0.1', PORT: '0', SPRINT_DB: path.join(dir, 'sprint.db'), SPRINT_ARTIFACTS_DIR: dir, SPRINT_WATCH: '0', LOG_LEVEL: 'silent' })
  t.teardown(() => app.close())
  t.equal(process.listenerCount('SIGTERM'), before + 1, 'SIGTERM closes it gracefully')
  const address = app.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  t.ok(port > 0, 'bound to a real port for PORT=0')
  const health = await (await fetch(`http://127.0.0.1:${port}/api/health`)).json()
  t.match(health, { status: 'ok' })
  const metrics = await fetch(`http://127.0.0.1:${port}/metrics`)
  t.equal(metrics.status, 200, 'the standalone server serves /metrics')
  t.match(await metrics.text(), /^sprint_events_emitted_total 0$/m)
  await app.close()
  t.equal(process.listenerCount('SIGTERM'), before, 'closing the app removes its signal handlers')
})

t.test('SPRINT_METRICS=0 turns /metrics off', async t => {
  const dir = await tempDir(t)
  const app = await startServer({ HOST: '127.0.0.1', PORT: '0', SPRINT_DB: path.join(dir, 'sprint.db'), SPRINT_ARTIFACTS_DIR: dir, SPRINT_WATCH: '0', SPRINT_METRICS: '0', LOG_LEVEL: 'silent' })
  t.teardown(() => app.close())
  const address = app.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  t.equal((await fetch(`http://127.0.0.1:${port}/metrics`)).status, 404)
  t.equal((await fetch(`http://127.0.0.1:${port}/api/health`)).status, 200)
})

t.test('a bad variable is refused with its name and code, before anything is opened', async t => {
  const before = process.listenerCount('SIGTERM')
  await t.rejects(startServer({ PORT: '-1' }), { code: 'SPRINT_INVALID_ENVIRONMENT', message: /PORT must be a non-negative integer, got "-1"/ })
  await t.rejects(startServer({ SPRINT_HEARTBEAT_TIMEOUT_MS: '1.5' }), { code: 'SPRINT_INVALID_ENVIRONMENT', message: /SPRINT_HEARTBEAT_TIMEOUT_MS/ })
  t.equal(process.listenerCount('SIGTERM'), before)
})

t.test('a port in use fails the start and closes what was opened', async t => {
  const dir = await tempDir(t)
  const env = { HOST: '127.0.0.1', PORT: '0', SPRINT_ARTIFACTS_DIR: dir, SPRINT_WATCH: '0', LOG_LEVEL: 'silent' }
  const first = await startServer({ ...env, SPRINT_DB: path.join(dir, 'a.db') })
  t.teardown(() => first.close())
  const address = first.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  const before = process.listenerCount('SIGTERM')
  await t.rejects(startServer({ ...env, PORT: String(port), SPRINT_DB: path.join(dir, 'b.db') }), { code: 'EADDRINUSE' })
  t.equal(process.listenerCount('SIGTERM'), before, 'no handler left by the failed start')
})

t.test('logs are JSON lines unless a terminal is watching', async t => {
  t.same(loggerOptions('info', false), { level: 'info' })
  const pretty = loggerOptions('debug', true) as { level: string, transport: { target: string } }
  t.equal(pretty.level, 'debug')
  t.match(pretty.transport.target, /pino-pretty/, 'pino-pretty, resolved from this package')
})
