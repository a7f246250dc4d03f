import t from 'tap'
import { existsSync, statSync } from 'node:fs'
import path from 'node:path'
import Fastify from 'fastify'
import { createStore } from '../src/store.ts'
import { startCheckpointer } from '../src/checkpointer.ts'
import { listen, tempDir, waitFor } from './helper.ts'

const autocheckpoint = (db: { pragma: (source: string, options: { simple: true }) => unknown }): unknown =>
  db.pragma('wal_autocheckpoint', { simple: true })

t.test('with the service running, the WAL reaches the database file from the worker, not the event loop', async t => {
  const { app, dbPath } = await listen(t)
  const emit = (tag: string): void => {
    app.events.emitMany(Array.from({ length: 1000 }, (_, n) => ({ type: 'error', payload: { type: 'x', message: `event ${tag}-${n}` } })))
  }
  await waitFor(() => autocheckpoint(app.sprintStore.db) === 10_000)
  const before = statSync(dbPath).size
  for (let i = 0; i < 3; i++) emit(`a${i}`)
  const walAfterFirst = statSync(`${dbPath}-wal`).size
  t.ok(walAfterFirst > 100_000, 'the events are in the WAL')
  t.equal(statSync(dbPath).size, before, 'the main connection did not checkpoint')
  await waitFor(() => statSync(dbPath).size > before + 100_000, 5000)
  t.pass(`database file grew from ${before} to ${statSync(dbPath).size} bytes`)

  // Fully copied, the WAL starts over at the next write instead of growing: the same events again fit in it.
  await new Promise(resolve => setTimeout(resolve, 100))
  for (let i = 0; i < 3; i++) emit(`b${i}`)
  t.ok(statSync(`${dbPath}-wal`).size <= walAfterFirst * 1.1,
    `WAL ${statSync(`${dbPath}-wal`).size} bytes after writing the same again (was ${walAfterFirst})`)

  await app.close()
  t.notOk(existsSync(`${dbPath}-wal`), 'closed last, the main connection folded the WAL back in and removed it')
})

t.test('a database in memory gets no checkpointer', async t => {
  const { app } = await listen(t, { dbPath: ':memory:' })
  t.equal(app.sprintStore.db.memory, true)
  t.not(autocheckpoint(app.sprintStore.db), 0)
})

t.test('if the worker dies, the main connection checkpoints again and says so', async t => {
  const dir = await tempDir(t)
  const store = createStore(path.join(dir, 'a.db'))
  t.teardown(() => store.close())
  store.db.pragma('wal_autocheckpoint = 0')
  const warnings: string[] = []
  const log = Fastify().log
  log.warn = ((_obj: unknown, message: string) => { warnings.push(message) }) as typeof log.warn
  // A path the worker cannot open: it fails on start-up.
  const checkpointer = startCheckpointer(store.db, path.join(dir, 'missing.db'), log)
  t.teardown(() => checkpointer.close())
  await waitFor(() => autocheckpoint(store.db) === 1000)
  t.match(warnings[0], /WAL checkpointer (failed|exited)/)
})
