import t from 'tap'
import { build, connect, listen } from '../helper.ts'

t.test('GET /api/health reports clients, last event id and uptime', async t => {
  const { app } = await build(t)
  const before = (await app.inject({ url: '/api/health' })).json()
  t.match(before, { status: 'ok', storage: 'ok', clients: 0, lastEventId: 0 })
  t.notOk('storageError' in before, 'no error while storage works')
  t.type(before.uptimeMs, 'number')
  await app.events.emit('error', { type: 'x', message: 'y' })
  t.equal((await app.inject({ url: '/api/health' })).json().lastEventId, 1)
})

t.test('clients counts open WebSockets', async t => {
  const { app, wsUrl } = await listen(t)
  await connect(t, wsUrl)
  t.equal((await app.inject({ url: '/api/health' })).json().clients, 1)
})
