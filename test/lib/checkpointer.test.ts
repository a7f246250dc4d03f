import t from 'tap'
import { existsSync, statSync } from 'node:fs'
import path from 'node:path'
import Fastify from 'fastify'
import { createStore } from '../../src/lib/sqlite-store.ts'
import { startCheckpointer, startCheckpointerOnFirstWrite } from '../../src/lib/checkpointer.ts'
import { listen, tempDir, waitFor } from '../helper.ts'

const autocheckpoint = (db: { pragma: (source: string, options: { simple: true }) => unknown }): unknown =>
  db.pragma('wal_autocheckpoint', { simple: true })

/** Writes ~`pages` 4 KiB pages in transactions of 100 pages each: well past SQLite's default autocheckpoint of 1,000. */
function fill (db: { exec: (sql: string) => unknown }, pages: number): void {
  db.exec('CREATE TABLE IF NOT EXISTS filler (blob BLOB)')
  for (let written = 0; written < pages; written += 100) {
    db.exec('WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) INSERT INTO filler SELECT randomblob(4000) FROM n')
  }
}

t.test('once the worker is up, commits on the main connection never checkpoint, even past 1,000 pages', async t => {
  const dir = await tempDir(t)
  const dbPath = path.join(dir, 'a.db')
  const store = createStore(dbPath)
  t.teardown(() => store.close())
  // A worker that would checkpoint only in an hour: anything copied meanwhile was copied by a commit.
  const checkpointer = startCheckpointer(store.db, dbPath, Fastify().log, 3_600_000)
  t.teardown(() => checkpointer.close())
  await waitFor(() => autocheckpoint(store.db) === 10_000)
  const before = statSync(dbPath).size
  fill(store.db, 2000)
  t.ok(statSync(`${dbPath}-wal`).size > 1500 * 4096, 'the pages are in the WAL')
  t.equal(statSync(dbPath).size, before, 'and not yet in the database file')
})

t.test('with the service running, the worker copies the WAL into the database file and it starts over', async t => {
  const { app, dbPath } = await listen(t)
  const emit = (tag: string): void => {
    app.events.emitMany(Array.from({ length: 1000 }, (_, n) => ({ type: 'error', payload: { type: 'x', message: `event ${tag}-${n}` } })))
  }
  // The worker starts with the first write.
  await app.events.emit('error', { type: 'x', message: 'first write' })
  await waitFor(() => autocheckpoint(app.sprintStore.db) === 10_000)
  const before = statSync(dbPath).size
  for (let i = 0; i < 3; i++) emit(`a${i}`)
  const walAfterFirst = statSync(`${dbPath}-wal`).size
  t.ok(walAfterFirst > 100_000, 'the events are in the WAL')
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
  // Started after it, a file database's worker (started by its first write) raising its backstop shows that one
  // would have had time to.
  const { app: withFile } = await listen(t)
  await app.events.emit('error', { type: 'x', message: 'a write' })
  await withFile.events.emit('error', { type: 'x', message: 'a write' })
  await waitFor(() => autocheckpoint(withFile.sprintStore.db) === 10_000)
  t.equal(autocheckpoint(app.sprintStore.db), 1000)
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

t.test('an idle service runs no checkpoint worker: it starts with the first write', async t => {
  const dir = await tempDir(t)
  const dbPath = path.join(dir, 'a.db')
  const store = createStore(dbPath)
  t.teardown(() => store.close())
  const checkpointer = startCheckpointerOnFirstWrite(store.db, dbPath, Fastify().log, 20)
  t.teardown(() => checkpointer.close())
  t.equal(statSync(`${dbPath}-wal`).size, 0, 'the WAL is emptied at start')
  // Ten rounds of the watch with nothing written.
  await new Promise(resolve => setTimeout(resolve, 200))
  t.equal(checkpointer.started, false, 'no worker while nothing is written')
  t.equal(autocheckpoint(store.db), 1000, 'SQLite checkpoints by itself meanwhile')
  fill(store.db, 1)
  await waitFor(() => checkpointer.started && autocheckpoint(store.db) === 10_000)
  t.pass('the first write started the worker')
})
