import t from 'tap'
import Database from 'better-sqlite3'
import path from 'node:path'
import { createStore } from '../../src/lib/sqlite-store.ts'
import { tempDir, type TestContext } from '../helper.ts'
import type { EventTypeName } from '../../src/events/schemas.ts'

async function openStore (t: TestContext) {
  const dir = await tempDir(t)
  const file = path.join(dir, 'store.db')
  const store = createStore(file)
  t.teardown(() => store.close())
  const append = (type: EventTypeName, payload: object, timestamp = Date.now()) =>
    store.appendEvent(type, payload, JSON.stringify(payload), timestamp)
  return { store, append, file }
}

t.test('the database is a WAL file and the schema is created idempotently', async t => {
  const { store, file } = await openStore(t)
  t.equal(store.db.pragma('journal_mode', { simple: true }), 'wal')
  const again = createStore(file)
  t.teardown(() => again.close())
  const tables = again.db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").pluck().all()
  for (const table of ['background_tasks', 'batches', 'commands', 'events', 'stories']) t.ok(tables.includes(table), table)
})

t.test('events get increasing ids and read back oldest first', async t => {
  const { store, append } = await openStore(t)
  t.equal(store.getLastEventId(), 0)
  for (let i = 1; i <= 5; i++) append('command:progress', { story_key: 's', command: 'c', task_id: 't', message: `m${i}` })
  t.equal(store.getLastEventId(), 5)
  const recent = store.getRecentEvents(3)
  t.same(recent.map(e => e.id), [3, 4, 5])
  t.same(recent.map(e => (e.payload as { message: string }).message), ['m3', 'm4', 'm5'])
  t.same(store.getEventsAfter(3, 10).map(e => e.id), [4, 5])
})

t.test('batch projection: start, cycles, end, "all"', async t => {
  const { store, append } = await openStore(t)
  t.equal(store.getActiveBatch(), null)
  append('batch:start', { batch_id: 7, max_cycles: 'all' }, 1000)
  t.match(store.getActiveBatch(), { id: 7, max_cycles: 'all', status: 'running', cycles_completed: 0, started_at: 1000, ended_at: null })
  append('cycle:end', { cycle_number: 2, completed_stories: [] })
  append('cycle:end', { cycle_number: 1, completed_stories: [] })
  t.equal(store.getActiveBatch()?.cycles_completed, 2, 'cycles_completed is the max seen')
  append('batch:end', { batch_id: 7, cycles_completed: 3, status: 'stopped' }, 5000)
  t.equal(store.getActiveBatch(), null)
  t.match(store.getBatch(7), { status: 'stopped', ended_at: 5000, cycles_completed: 3, max_cycles: 'all' })
})

t.test('batch projection as the sprint runner means it', async t => {
  const { store, append } = await openStore(t)
  append('batch:start', { batch_id: 1, max_cycles: null, batch_mode: 'all' }, 1000)
  t.match(store.getActiveBatch(), { id: 1, max_cycles: 'all', batch_mode: 'all', status: 'running' }, 'null is no limit')
  append('batch:warning', { batch_id: 1, message: 'no context', warning_type: 'context_unavailable' })
  t.equal(store.getActiveBatch()?.status, 'running', 'a warning does not end the batch')
  append('cycle:end', { cycle_number: 1, completed_stories: ['a'] })
  append('cycle:end', { cycle_number: 2, completed_stories: ['b'] })
  append('batch:end', { batch_id: 1, cycles_completed: 2, status: 'all_done' }, 9000)
  t.equal(store.getActiveBatch(), null)
  t.match(store.getBatch(1), { status: 'all_done', cycles_completed: 2, ended_at: 9000 }, 'all_done is an outcome of its own')

  append('batch:start', { batch_id: 2, max_cycles: 5, batch_mode: 'fixed' })
  t.match(store.getActiveBatch(), { id: 2, max_cycles: 5, batch_mode: 'fixed' })
  append('cycle:end', { cycle_number: 3, completed_stories: [] })
  append('batch:end', { batch_id: 2, status: 'stopped' })
  t.match(store.getBatch(2), { status: 'stopped', cycles_completed: 3 }, 'stopped without cycles_completed keeps the count reached')

  append('batch:start', { batch_id: 3, max_cycles: 4 })
  t.match(store.getBatch(3), { max_cycles: 4, batch_mode: 'fixed' }, 'batch_mode derived when not sent')
  append('batch:start', { batch_id: 4, max_cycles: 4, batch_mode: 'all' })
  t.match(store.getBatch(4), { max_cycles: 'all', batch_mode: 'all' }, '"all" mode has no limit, whatever max_cycles says')
  append('batch:end', { batch_id: 99, status: 'stopped' })
  t.match(store.getBatch(99), { status: 'stopped', cycles_completed: 0 }, 'the end of a batch never started is recorded with no cycles')
})

t.test('a database made before all_done and batch_mode is migrated in place', async t => {
  const dir = await tempDir(t)
  const file = path.join(dir, 'old.db')
  // The batches table exactly as the previous release created it.
  const old = new Database(file)
  old.exec(`CREATE TABLE batches (
    id INTEGER PRIMARY KEY,
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    max_cycles INTEGER, -- NULL means "all"
    cycles_completed INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL CHECK (status IN ('running', 'completed', 'stopped', 'error'))
  );
  CREATE INDEX batches_status ON batches(status);
  INSERT INTO batches VALUES (1, 100, 200, 2, 2, 'completed'), (2, 300, NULL, NULL, 1, 'running');`)
  old.close()

  const store = createStore(file)
  t.teardown(() => store.close())
  t.match(store.getBatch(1), { started_at: 100, ended_at: 200, max_cycles: 2, batch_mode: 'fixed', cycles_completed: 2, status: 'completed' })
  t.match(store.getActiveBatch(), { id: 2, max_cycles: 'all', batch_mode: 'all', cycles_completed: 1, status: 'running' })
  store.appendEvent('batch:end', { batch_id: 2, cycles_completed: 4, status: 'all_done' }, '{}', 400)
  t.equal(store.getBatch(2)?.status, 'all_done', 'the new outcome fits the migrated table')
  const names = store.db.prepare("SELECT name FROM sqlite_master WHERE tbl_name LIKE 'batches%' ORDER BY name").pluck().all()
  t.same(names, ['batches', 'batches_started', 'batches_status'], 'the old table is gone and the index is back (and the history\'s is added)')
  store.close()
  const again = createStore(file)
  t.teardown(() => again.close())
  t.equal(again.getBatch(2)?.status, 'all_done', 'opening a migrated database again changes nothing')
})

t.test('a new batch:start stops the running one; restarting an id reopens it', async t => {
  const { store, append } = await openStore(t)
  append('batch:start', { batch_id: 1, max_cycles: 2 })
  append('batch:start', { batch_id: 2, max_cycles: 3 })
  t.equal(store.getBatch(1)?.status, 'stopped')
  t.not(store.getBatch(1)?.ended_at, null)
  t.equal(store.getActiveBatch()?.id, 2)
  append('batch:end', { batch_id: 2, cycles_completed: 1, status: 'error' })
  append('batch:start', { batch_id: 2, max_cycles: 4 })
  t.match(store.getActiveBatch(), { id: 2, status: 'running', ended_at: null, max_cycles: 4 })
})

t.test('events are filed under the active batch', async t => {
  const { store, append } = await openStore(t)
  append('error', { type: 'x', message: 'before' })
  append('batch:start', { batch_id: 3, max_cycles: 1 })
  append('error', { type: 'x', message: 'during' })
  const rows = store.db.prepare('SELECT batch_id FROM events ORDER BY id').pluck().all()
  t.same(rows, [null, 3, 3])
})

t.test('a running batch survives a restart of the store', async t => {
  const { store, append, file } = await openStore(t)
  append('batch:start', { batch_id: 9, max_cycles: 2 })
  store.close()
  const reopened = createStore(file)
  t.teardown(() => reopened.close())
  t.equal(reopened.getActiveBatch()?.id, 9)
})

t.test('story and command projections', async t => {
  const { store, append } = await openStore(t)
  append('story:status', { story_key: '2a-1', old_status: null, new_status: 'in-progress' })
  t.equal(store.getStory('2a-1')?.status, 'in-progress')
  append('command:start', { story_key: '2a-1', command: 'dev-story', task_id: 'implement' })
  append('command:end', { story_key: '2a-1', command: 'dev-story', task_id: 'implement', status: 'success', metrics: { duration_ms: 5 } })
  t.match(store.listCommands('2a-1'), [{ command: 'dev-story', status: 'success', metrics: { duration_ms: 5 } }])
  store.upsertStory('2a-2', 'backlog', '2a')
  t.same(store.listStories().map(s => s.key), ['2a-1', '2a-2'])
  const task = store.createBackgroundTask('context-refresh')
  store.updateBackgroundTask(task, 'done', 'ok')
  t.match(store.listBackgroundTasks(), [{ id: task, status: 'done', details: 'ok' }])
})

t.test('appendEvents is all or nothing', async t => {
  const { store } = await openStore(t)
  const good = { type: 'error' as const, payload: { type: 'a', message: 'b' }, payloadJson: '{"type":"a","message":"b"}' }
  t.throws(() => store.appendEvents([good, { ...good, payloadJson: null as unknown as string }], Date.now()))
  t.equal(store.countEvents(), 0)
  t.same(store.appendEvents([good, good], 1).map(r => r.id), [3, 4], 'the rolled-back ids 1 and 2 are not given again')
})

t.test('appendEvents stores an idempotency key once: a retry gets the stored row, marked duplicate', async t => {
  const { store, file } = await openStore(t)
  const event = (n: number, idempotencyKey?: string) => {
    const payload = { story_key: 's', command: 'c', task_id: 't', message: `m${n}` }
    return { type: 'command:progress' as const, payload, payloadJson: JSON.stringify(payload), timestamp: 1000 + n, idempotencyKey }
  }
  t.same(store.appendEvents([event(1, 'p:1'), event(2), event(3, 'p:3')], 5000).map(row => row.id), [1, 2, 3])
  // The retry carries the two keyed events again and a new one; the same key twice in one call is stored once too.
  const retry = store.appendEvents([event(1, 'p:1'), event(3, 'p:3'), event(4, 'p:4'), event(4, 'p:4'), event(5)], 6000)
  t.same(retry.map(row => [row.id, row.duplicate === true]), [[1, true], [3, true], [4, false], [4, true], [5, false]])
  t.same(retry[0], { id: 1, type: 'command:progress', payload: event(1).payloadJson, timestamp: 1001, duplicate: true }, 'the stored row')
  // A key on another event is a producer's mistake: refused with everything sent with it, or marked in a group.
  t.throws(() => store.appendEvents([event(6, 'p:6'), event(9, 'p:1')], 6500), { code: 'SPRINT_IDEMPOTENCY_CONFLICT', statusCode: 409 })
  t.equal(store.countEvents(), 5, 'nothing of the refused call was stored')
  t.same(store.appendEvents([event(6, 'p:6'), event(9, 'p:1'), event(6, 'p:6b')], 6600, { markConflicts: true }).map(row => [row.id, row.conflict === true]),
    [[7, false], [1, true], [8, false]], 'the others of a group are stored (id 6 went with the refused call: ids skip, never repeat)')
  t.same(store.appendEvents([event(8, 'p:8'), event(9, 'p:8')], 6700, { markConflicts: true }).map(row => [row.id, row.conflict === true]),
    [[9, false], [9, true]], 'within one call too')
  t.equal(store.countEvents(), 8, 'each event stored once')
  t.same(store.getEventsAfter(0, 10).map(e => (e.payload as { message: string }).message), ['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm6', 'm8'])
  store.close()
  const reopened = createStore(file)
  t.teardown(() => reopened.close())
  t.equal(reopened.appendEvents([event(1, 'p:1')], 7000)[0]!.duplicate, true, 'keys survive a restart')
  reopened.deleteEventsUpTo(1)
  t.same(reopened.appendEvents([event(1, 'p:1')], 8000).map(row => [row.id, row.duplicate === true]), [[10, false]], 'and go with their pruned event')
})

t.test('a database made before idempotency keys (schema 3) gets the column in place', async t => {
  const { store, file } = await openStore(t)
  store.appendEvents([{ type: 'context:fresh', payload: { message: 'kept' }, payloadJson: '{"message":"kept"}' }], 1000)
  // Back to schema 3 as that release wrote it: no column, no index.
  store.db.exec('DROP INDEX events_idempotency_key; ALTER TABLE events DROP COLUMN idempotency_key; PRAGMA user_version = 3')
  store.close()
  const upgraded = createStore(file)
  t.teardown(() => upgraded.close())
  t.same(upgraded.migration, { from: 3, to: 4, applied: ['events.idempotency_key'] })
  t.equal(upgraded.countEvents(), 1, 'the events are kept')
  const keyed = { type: 'context:fresh' as const, payload: { message: 'new' }, payloadJson: '{"message":"new"}', idempotencyKey: 'k' }
  t.same(upgraded.appendEvents([keyed, keyed], 2000).map(row => [row.id, row.duplicate === true]), [[2, false], [2, true]])
})

t.test('ids are never reused after deleting', async t => {
  const { store, append } = await openStore(t)
  for (let i = 0; i < 3; i++) append('error', { type: 'x', message: String(i) })
  store.deleteEventsUpTo(3)
  t.equal(store.getOldestEventId(), null)
  t.equal(store.getLastEventId(), 3)
  t.equal(append('error', { type: 'x', message: 'next' }).id, 4)
})
