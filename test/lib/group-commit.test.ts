import t from 'tap'
import path from 'node:path'
import Database from 'better-sqlite3'
import { createStore } from '../../src/lib/sqlite-store.ts'
import { createEventWriter } from '../../src/lib/event-writer.ts'
import { createGroupCommit } from '../../src/lib/group-commit.ts'
import { createStats } from '../../src/lib/stats.ts'
import type { StoredEventRow } from '../../src/events/protocol.ts'
import type { Envelope } from '../../src/events/schemas.ts'
import { silentLog, tempDir, type TestContext } from '../helper.ts'

// The group commit on a real SQLite file: what is queued in a turn is stored in one transaction,
// published in id order before any caller hears of it, and a failed commit loses every event of the
// group together, with nothing published.

async function setup (t: TestContext) {
  const file = path.join(await tempDir(t), 'events.db')
  const store = createStore(file)
  t.teardown(() => store.close())
  const stats = createStats()
  const writer = createEventWriter(store, stats, silentLog)
  const published: Array<{ ids: number[], committedBefore: boolean }> = []
  const reader = new Database(file, { readonly: true })
  t.teardown(() => reader.close())
  const storedIds = (): number[] => (reader.prepare('SELECT id FROM events ORDER BY id').all() as Array<{ id: number }>).map(row => row.id)
  const commits = createGroupCommit(writer, (rows: readonly StoredEventRow[], payloads: readonly unknown[]) => {
    // A second connection sees only committed data: everything published must already be there.
    const stored = new Set(storedIds())
    published.push({ ids: rows.map(row => row.id), committedBefore: rows.every(row => stored.has(row.id)) })
    return rows.map((row, index) => ({ id: row.id, type: row.type, payload: payloads[index], timestamp: row.timestamp }) as Envelope)
  })
  t.teardown(() => commits.commit())
  const event = (n: number) => {
    const payload = { story_key: `1-${n}`, old_status: null, new_status: 'in-progress' }
    return { type: 'story:status' as const, payload, payloadJson: JSON.stringify(payload), timestamp: 1_767_603_600_000 + n }
  }
  return { store, stats, commits, published, storedIds, event }
}

t.test('the events queued in one turn share one transaction and are published, in id order, after it', async t => {
  const { stats, commits, published, event } = await setup(t)
  const promises = [1, 2, 3, 4, 5].map(n => commits.enqueue(event(n)))
  t.equal(published.length, 0, 'nothing is published while queued')
  const envelopes = await Promise.all(promises)
  t.same(envelopes.map(e => e.id), [1, 2, 3, 4, 5], 'ids in call order')
  t.same(envelopes[2]!.payload, event(3).payload, 'the payload as emitted')
  t.equal(envelopes[2]!.timestamp, event(3).timestamp, 'the producer timestamp is kept')
  t.same(published, [{ ids: [1, 2, 3, 4, 5], committedBefore: true }], 'one publish, after the commit')
  t.equal(stats.commitTime.count, 1, 'one commit')
})

t.test('an event whose idempotency key is stored is not published again; its caller gets the stored envelope', async t => {
  const { commits, published, storedIds, event } = await setup(t)
  const first = commits.enqueue({ ...event(1), idempotencyKey: 'p:1' })
  // A retry that lands in the same group, and one after the commit.
  const sameGroup = commits.enqueue({ ...event(1), idempotencyKey: 'p:1' })
  const other = commits.enqueue(event(2))
  t.same((await Promise.all([first, sameGroup, other])).map(e => e.id), [1, 1, 2])
  const later = await commits.enqueue({ ...event(1), idempotencyKey: 'p:1' })
  t.same(later, { id: 1, type: 'story:status', payload: event(1).payload, timestamp: event(1).timestamp }, 'the stored envelope')
  const now = commits.appendNow([{ ...event(1), idempotencyKey: 'p:1' }, event(3)])
  t.same(now.map(e => e.id), [1, 3])
  t.same(published.map(p => p.ids), [[1, 2], [3]], 'each event published once')
  t.same(storedIds(), [1, 2, 3])

  // The key on another event: that caller is refused, the rest of its group is stored.
  const results = await Promise.allSettled([commits.enqueue({ ...event(9), idempotencyKey: 'p:1' }), commits.enqueue(event(4))])
  t.match(results[0], { status: 'rejected', reason: { code: 'SPRINT_IDEMPOTENCY_CONFLICT', statusCode: 409 } })
  t.match(results[1], { status: 'fulfilled', value: { id: 4 } })
  t.throws(() => commits.appendNow([event(5), { ...event(9), idempotencyKey: 'p:1' }]), { code: 'SPRINT_IDEMPOTENCY_CONFLICT' }, 'an array is refused whole')
  t.same(storedIds(), [1, 2, 3, 4])
})

t.test('appendNow commits what is queued first, so ids stay in call order', async t => {
  const { commits, published, event } = await setup(t)
  const queued = commits.enqueue(event(1))
  const now = commits.appendNow([event(2), event(3)])
  t.same(now.map(e => e.id), [2, 3])
  t.equal((await queued).id, 1)
  t.same(published.map(p => p.ids), [[1], [2, 3]])
})

t.test('a failed commit rejects the whole group with SPRINT_STORAGE_UNAVAILABLE and publishes nothing', async t => {
  const { store, commits, published, storedIds, event } = await setup(t)
  await commits.enqueue(event(1))
  // A real SQLite error inside the transaction, after the first insert of the group succeeded.
  store.db.exec("CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.id = 3 BEGIN SELECT RAISE(ABORT, 'refused'); END")
  const results = await Promise.allSettled([2, 3, 4].map(n => commits.enqueue(event(n))))
  for (const result of results) {
    t.equal(result.status, 'rejected')
    t.equal((result as PromiseRejectedResult).reason.code, 'SPRINT_STORAGE_UNAVAILABLE')
  }
  t.same(storedIds(), [1], 'the group was rolled back as a whole')
  t.same(published.map(p => p.ids), [[1]], 'nothing of it was published')
  t.notOk(store.db.inTransaction, 'no transaction left open')
  store.db.exec('DROP TRIGGER refuse')
  t.same((await commits.enqueue(event(5))).id >= 2, true, 'the next group commits')
})
