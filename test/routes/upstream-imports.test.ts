import t from 'tap'
import { build } from '../helper.ts'

/** `GET /api/upstream-imports`: what import-upstream already brought from one sprint runner database. */

t.test('lists the imported rows of one source, the batches and the running one', async (t) => {
  const { app } = await build(t)
  const upstream = (row: number, db = 'abc') => ({ upstream: { db, table: 'events', row } })
  await app.events.emitMany([
    { type: 'batch:start', payload: { batch_id: 4, max_cycles: 2, upstream: { db: 'abc', table: 'batches', row: 4 } } },
    { type: 'command:start', payload: { story_key: '2a-1', command: 'dev-story', task_id: 'implement', message: '', ...upstream(9) } },
    // Another source, and an event no import made.
    { type: 'command:start', payload: { story_key: '2a-1', command: 'dev-story', task_id: 'implement', message: '', ...upstream(10, 'other') } },
    { type: 'command:progress', payload: { story_key: '2a-1', command: 'dev-story', task_id: 'implement', message: '"db":"abc"' } }
  ])
  const reply = await app.inject({ method: 'GET', url: '/api/upstream-imports?db=abc' })
  t.equal(reply.statusCode, 200)
  t.same(reply.json(), { imported: ['batches/4/batch:start', 'events/9/command:start'], batches: [4], running: 4 })
})

t.test('an empty store, a missing query and the ingest token', async (t) => {
  const { app } = await build(t, { ingestToken: 'tok' })
  t.equal((await app.inject({ method: 'GET', url: '/api/upstream-imports?db=abc' })).statusCode, 401, 'the ingest\'s authorization')
  const authorization = 'Bearer tok'
  const empty = await app.inject({ method: 'GET', url: '/api/upstream-imports?db=abc', headers: { authorization } })
  t.same(empty.json(), { imported: [], batches: [], running: null })
  const missing = await app.inject({ method: 'GET', url: '/api/upstream-imports', headers: { authorization } })
  t.equal(missing.statusCode, 400)
})
