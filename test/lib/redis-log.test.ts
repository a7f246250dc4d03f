import t from 'tap'
import { Redis } from 'ioredis'
import { createRedisLog, EPOCH_ID_GAP, IDEMPOTENCY_KEY_TTL_S, type LogEntry } from '../../src/lib/redis-log.ts'
import type { BrokerState } from '../../src/events/protocol.ts'
import { requireRedis, startRedisServer, type RedisServer } from '../fixtures/redis-server.ts'
import { silentLog as silent, waitFor, type TestContext } from '../helper.ts'

/** A log with a local "store": an array of applied entries, as the events plugin keeps in SQLite. */
function openLog (t: TestContext, redis: RedisServer, options: { retainEvents?: number, key?: string } = {}) {
  const applied: LogEntry[] = []
  const resets: string[] = []
  const states: BrokerState[] = []
  let last = 0
  const log = createRedisLog({
    url: redis.url,
    key: options.key ?? 'test',
    retainEvents: options.retainEvents ?? 1000,
    log: silent,
    lastApplied: () => last,
    onEntries: entries => {
      for (const entry of entries) applied.push(entry)
      last = entries.at(-1)!.id
    },
    onReset: reason => { resets.push(reason) },
    onState: state => { states.push(state) }
  })
  t.teardown(() => log.close())
  return { log, applied, resets, states, lastApplied: () => last }
}

function events (n: number, from = 0) {
  return Array.from({ length: n }, (_, i) => ({ type: 'command:progress', payloadJson: JSON.stringify({ n: from + i }), timestamp: 1000 + from + i }))
}

t.test('redis-log', async t => {
  if (!requireRedis(t)) return
  const redis = await startRedisServer()
  t.teardown(() => redis.destroy())

  t.test('ids are assigned in Redis, consecutive across calls and instances, and every reader sees the same order', async t => {
    const a = openLog(t, redis, { key: 'order' })
    const b = openLog(t, redis, { key: 'order' })
    await Promise.all([a.log.start(), b.log.start()])
    t.equal(a.log.state, 'up')
    const answers = await Promise.all([a.log.append(events(3, 0)), b.log.append(events(2, 3)), a.log.append(events(1, 5))])
    t.ok(answers.every(answer => answer.every(appended => !appended.duplicate)))
    const firsts = answers.map(answer => answer[0]!.id)
    const sizes = [3, 2, 1]
    const given = firsts.flatMap((first, call) => Array.from({ length: sizes[call]! }, (_, i) => first + i)).sort((x, y) => x - y)
    t.same(given, [1, 2, 3, 4, 5, 6], 'each call got its own run of consecutive ids, none shared')
    await waitFor(() => a.applied.length === 6 && b.applied.length === 6)
    t.same(a.applied.map(entry => entry.id), [1, 2, 3, 4, 5, 6])
    t.same(a.applied, b.applied, 'both readers applied the identical sequence')
    // One call's events stay together, in the order given.
    const first = firsts[0]!
    t.same(a.applied.slice(first - 1, first + 2).map(entry => JSON.parse(entry.payload).n), [0, 1, 2])
    t.equal(a.applied[0]!.type, 'command:progress')
    t.equal(a.log.newestId, 6)
    t.same(a.resets, [])
  })

  t.test('an idempotency key is appended once, across calls and instances; ids stay consecutive', async t => {
    const a = openLog(t, redis, { key: 'keys' })
    const b = openLog(t, redis, { key: 'keys' })
    await Promise.all([a.log.start(), b.log.start()])
    const keyed = (n: number, key: string) => ({ ...events(1, n)[0]!, idempotencyKey: key })
    t.same(await a.log.append([keyed(0, 'p:1'), keyed(1, 'p:2')]), [{ id: 1, duplicate: false }, { id: 2, duplicate: false }])
    // A retry of the same events through the other instance (with later timestamps), and one new event after them.
    const later = (n: number, key: string) => ({ ...keyed(n, key), timestamp: 9999 })
    t.same(await b.log.append([later(0, 'p:1'), later(1, 'p:2'), keyed(2, 'p:3')]),
      [{ id: 1, duplicate: true, timestamp: 1000 }, { id: 2, duplicate: true, timestamp: 1001 }, { id: 3, duplicate: false }], 'the stored ids and times')
    // The same key twice in one call, between unkeyed events.
    t.same(await a.log.append([...events(1, 3), keyed(4, 'p:4'), keyed(4, 'p:4'), ...events(1, 5)]),
      [{ id: 4, duplicate: false }, { id: 5, duplicate: false }, { id: 5, duplicate: true, timestamp: 1004 }, { id: 6, duplicate: false }])
    // A key on another event (another payload): marked and not appended; with atomic, the whole call is refused.
    const other = { ...keyed(99, 'p:1') }
    t.same(await a.log.append([other, keyed(6, 'p:7')]), [{ id: 1, duplicate: true, conflict: true }, { id: 7, duplicate: false }])
    t.match(await a.log.append([keyed(7, 'p:8'), other], { atomic: true }).catch((err: unknown) => err), { index: 1, id: 1, message: /reuses/ })
    t.match(await a.log.append([keyed(7, 'p:9'), keyed(8, 'p:9')], { atomic: true }).catch((err: unknown) => err), { index: 1, id: 0 }, 'within one call too')
    t.same(await a.log.append(events(1, 7)), [{ id: 8, duplicate: false }], 'the refused calls took no id')
    await waitFor(() => a.applied.length === 8 && b.applied.length === 8)
    t.same(a.applied.map(entry => entry.id), [1, 2, 3, 4, 5, 6, 7, 8], 'no gap, each event once')
    t.same(a.applied.map(entry => JSON.parse(entry.payload).n), [0, 1, 2, 3, 4, 5, 6, 7])
    const client = new Redis(redis.url)
    t.teardown(() => client.disconnect())
    const [ikKey] = await client.keys('keys:ik:*:p:1')
    t.match(ikKey, /^keys:ik:[0-9a-f-]{36}:p:1$/, 'keys are kept per epoch')
    const ttl = await client.ttl(ikKey!)
    t.ok(ttl > 0 && ttl <= IDEMPOTENCY_KEY_TTL_S, `the key expires (ttl ${ttl} s)`)
  })

  t.test('XRANGE returns the entries between two ids; the stream is trimmed to about retainEvents', async t => {
    const a = openLog(t, redis, { key: 'trim', retainEvents: 100 })
    await a.log.start()
    for (let i = 0; i < 10; i++) await a.log.append(events(100, i * 100))
    const range = await a.log.range(995, 1000, 10)
    t.same(range.map(entry => entry.id), [995, 996, 997, 998, 999, 1000])
    const client = new Redis(redis.url)
    t.teardown(() => client.disconnect())
    const length = await client.xlen('trim:stream')
    t.ok(length >= 100 && length < 1000, `trimmed to about 100 (MAXLEN ~), holds ${length}`)
    t.equal(await client.get('trim:seq'), '1000', 'the counter is the last id given')
  })

  t.test('Redis down: appends fail at once, the state goes down; back up, the reader resumes with no gap', async t => {
    const a = openLog(t, redis, { key: 'outage' })
    await a.log.start()
    await a.log.append(events(5))
    await waitFor(() => a.applied.length === 5)
    await redis.stop()
    await waitFor(() => a.log.state === 'down')
    await t.rejects(a.log.append(events(1)), 'append while Redis is down rejects')
    await redis.start()
    await waitFor(() => a.log.state === 'up', 10_000)
    await a.log.append(events(5, 5))
    await waitFor(() => a.applied.length === 10)
    t.same(a.applied.map(entry => entry.id), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'restarted with its data (appendonly): no gap, no reset')
    t.same(a.states, ['up', 'down', 'up'])
    t.same(a.resets, [])
  })

  t.test('Redis down when the instance starts: start() resolves, appends fail; Redis up: the log starts by itself', async t => {
    await redis.stop()
    const a = openLog(t, redis, { key: 'late' })
    await a.log.start()
    t.equal(a.log.state, 'down')
    await t.rejects(a.log.append(events(1)))
    await redis.start()
    await waitFor(() => a.log.state === 'up', 10_000)
    t.equal((await a.log.append(events(2)))[0]!.id, 1, 'the first id of a new stream is 1')
    await waitFor(() => a.applied.length === 2)
    t.same(a.resets, [])
  })

  t.test('Redis restarted empty: the reset is reported and ids continue above a gap, never reused', async t => {
    const a = openLog(t, redis, { key: 'empty' })
    await a.log.start()
    await a.log.append(events(3))
    await waitFor(() => a.applied.length === 3)
    await redis.stop()
    await redis.start({ empty: true })
    await waitFor(() => a.resets.length === 1, 10_000)
    t.match(a.resets[0], /epoch/)
    const first = (await a.log.append(events(1)))[0]!.id
    t.equal(first, 3 + EPOCH_ID_GAP + 1, 'the new epoch starts above the gap')
    await waitFor(() => a.applied.length === 4)
    t.equal(a.applied[3]!.id, first)
  })
})
