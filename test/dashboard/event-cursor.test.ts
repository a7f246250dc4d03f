import t from 'tap'
import { createEventCursor, parseFrame, type AppliedInit } from '../../dashboard/event-cursor.js'
import type { Envelope } from '../../src/events/schemas.ts'
import type { InitPayload, Notice } from '../../src/events/protocol.ts'

/**
 * The page's protocol logic without a browser: frames go in as the server writes them, and the
 * assertions are about what the page would be handed (and in which order) and the `since` it
 * would resume from.
 */

function event (id: number, message = `line ${id}`): Envelope {
  return { id, type: 'command:progress', payload: { story_key: '1-1-login', command: 'dev-story', task_id: 't', message }, timestamp: 1_700_000_000_000 + id }
}

function initFrame (payload: Partial<InitPayload> & { events: Envelope[] }): string {
  return JSON.stringify({ type: 'init', payload: { batch: null, resumed: false, reset: false, ...payload } })
}

/** Several messages in one frame, as a `?batch=1` connection receives them. */
const batched = (...messages: unknown[]): string => messages.map(message => typeof message === 'string' ? message : JSON.stringify(message)).join('\n')

type Delivery = { kind: 'init', init: AppliedInit } | { kind: 'events', ids: number[] } | { kind: 'notice', notice: Notice }

function harness () {
  const deliveries: Delivery[] = []
  const warnings: string[] = []
  const cursor = createEventCursor({
    onInit: init => deliveries.push({ kind: 'init', init }),
    onEvents: events => deliveries.push({ kind: 'events', ids: events.map(e => e.id) }),
    onNotice: notice => deliveries.push({ kind: 'notice', notice }),
    onWarning: message => warnings.push(message)
  })
  /** Every id handed on since the last call, init and live alike, in delivery order. */
  const applied = (): number[] => deliveries.splice(0).flatMap(d => d.kind === 'init' ? d.init.events.map(e => e.id) : d.kind === 'events' ? d.ids : [])
  return { cursor, deliveries, warnings, applied }
}

t.test('a fresh init hands on its events in id order; since starts after them', async t => {
  const { cursor, deliveries } = harness()
  t.equal(cursor.since, null, 'nothing to resume before the first init')
  cursor.connectionOpened()
  const result = cursor.receive(initFrame({ events: [event(2), event(1), event(3)] }))
  t.same(result, { init: true })
  t.equal(deliveries.length, 1)
  const first = deliveries[0]
  if (first?.kind !== 'init') return t.fail('expected an init')
  t.same(first.init.events.map(e => e.id), [1, 2, 3])
  t.equal(first.init.resumed, false)
  t.equal(first.init.reconnect, false)
  t.equal(cursor.since, 3)
  t.equal(cursor.lastAppliedId, 3)
})

t.test('an empty first init leaves since null, so the next connect is a fresh one too', async t => {
  const { cursor } = harness()
  cursor.connectionOpened()
  cursor.receive(initFrame({ events: [] }))
  t.equal(cursor.since, null)
})

t.test('live events: duplicates and ids at or below the cursor are dropped', async t => {
  const { cursor, applied } = harness()
  cursor.connectionOpened()
  cursor.receive(initFrame({ events: [event(1), event(2)] }))
  applied()
  cursor.receive(JSON.stringify(event(2)))
  t.same(applied(), [], 'an id already in the init is not applied again')
  cursor.receive(JSON.stringify(event(3)))
  cursor.receive(JSON.stringify(event(3)))
  t.same(applied(), [3], 'the same event twice is applied once')
  cursor.receive(batched(event(5), event(4), event(5)))
  t.same(applied(), [4, 5], 'within a frame: sorted, each id once')
  cursor.receive(JSON.stringify(event(4)))
  t.same(applied(), [], 'an id that arrives after a higher one has lost its place')
  t.equal(cursor.since, 5)
})

t.test('a batched frame is split into its messages, blank lines and all', async t => {
  const { cursor, deliveries, warnings } = harness()
  cursor.connectionOpened()
  cursor.receive(initFrame({ events: [] }))
  deliveries.length = 0
  cursor.receive(batched(event(1), event(2), '', event(3)) + '\n')
  t.same(deliveries, [{ kind: 'events', ids: [1, 2, 3] }], 'one delivery for the frame, so a burst renders once')
  t.same(warnings, [])
  t.same(parseFrame(batched(event(1), { type: 'pong' }, 'not json', { type: 'status', payload: { broker: 'down' } })).map(m => m.kind),
    ['event', 'pong', 'invalid', 'notice'])
})

t.test('a line that is not JSON is reported and the rest of the frame still applies', async t => {
  const { cursor, applied, warnings } = harness()
  cursor.connectionOpened()
  cursor.receive(initFrame({ events: [] }))
  cursor.receive(batched(event(1), '{"id": 2, "type": "command:pro', event(3)))
  t.same(applied(), [1, 3])
  t.equal(warnings.length, 1)
  t.match(warnings[0], /not JSON/)
})

t.test('notices go to their own handler and never move the cursor', async t => {
  const { cursor, deliveries } = harness()
  cursor.connectionOpened()
  cursor.receive(initFrame({ events: [event(10)] }))
  deliveries.length = 0
  cursor.receive('{"type":"status","payload":{"broker":"down"}}')
  t.same(deliveries, [{ kind: 'notice', notice: { type: 'status', payload: { broker: 'down' } } }])
  t.equal(cursor.since, 10, 'a notice is not a resume point')
  // The footgun the protocol removed: an unstored message carrying a high id must not skip 11..98.
  cursor.receive('{"type":"status","payload":{"id":99}}')
  cursor.receive(JSON.stringify(event(11)))
  t.equal(cursor.since, 11)
})

t.test('a message with an id that is not a stored event is dropped, neither applied nor shown', async t => {
  const { cursor, deliveries, warnings } = harness()
  cursor.connectionOpened()
  cursor.receive(initFrame({ events: [event(10)] }))
  deliveries.length = 0
  for (const bad of [{ id: '99', type: 'x', payload: {}, timestamp: 1 }, { id: 99.5, type: 'x', payload: {}, timestamp: 1 },
    { id: -1, type: 'x', payload: {}, timestamp: 1 }, { id: 99, type: 'x' }, { id: null, type: 'status', payload: {} }]) {
    cursor.receive(JSON.stringify(bad))
  }
  t.same(deliveries, [])
  t.equal(warnings.length, 5)
  t.equal(cursor.since, 10)
})

t.test('events and notices of one frame reach the page in the order sent', async t => {
  const { cursor, deliveries } = harness()
  cursor.connectionOpened()
  cursor.receive(initFrame({ events: [] }))
  deliveries.length = 0
  cursor.receive(batched(event(1), { type: 'status', payload: { broker: 'down' } }, event(2)))
  t.same(deliveries.map(d => d.kind === 'events' ? d.ids : d.kind), [[1], 'notice', [2]])
})

t.test('server error answers are reported, not applied', async t => {
  const { cursor, deliveries, warnings } = harness()
  cursor.connectionOpened()
  cursor.receive(initFrame({ events: [] }))
  deliveries.length = 0
  cursor.receive('{"type":"error","payload":{"type":"bad_request","message":"unknown message type"}}\n{"type":"pong"}')
  t.same(deliveries, [])
  t.same(warnings, ['the service rejected a message'])
})

t.test('a resume continues without gap or duplicate, across several reconnects', async t => {
  const { cursor, applied, deliveries } = harness()
  cursor.connectionOpened()
  cursor.receive(initFrame({ events: [event(1), event(2), event(3)] }))
  cursor.receive(batched(event(4), event(5)))
  const seen = applied()

  // Link drops; events 6..7 happen meanwhile; the new connection asks for since=5.
  cursor.connectionOpened()
  t.equal(cursor.since, 5)
  cursor.receive(initFrame({ resumed: true, events: [event(6), event(7)] }))
  const init = deliveries.find(d => d.kind === 'init')
  if (init?.kind !== 'init') return t.fail('expected an init')
  t.equal(init.init.resumed, true, 'the view is kept')
  t.equal(init.init.reconnect, true)
  seen.push(...applied())
  cursor.receive(JSON.stringify(event(8)))
  seen.push(...applied())

  // A resume that overlaps what was already applied (a live frame raced the drop).
  cursor.connectionOpened()
  cursor.receive(initFrame({ resumed: true, events: [event(7), event(8), event(9)] }))
  cursor.receive(batched(event(9), event(10)))
  seen.push(...applied())

  t.same(seen, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'every id exactly once, in order')
  t.equal(cursor.since, 10)
})

t.test('events a new connection sends before its init are not applied (the init carries them)', async t => {
  const { cursor, applied } = harness()
  cursor.connectionOpened()
  cursor.receive(JSON.stringify(event(1)))
  t.same(applied(), [], 'nothing before the first init')
  cursor.receive(batched({ type: 'init', payload: { batch: null, events: [event(1)], resumed: false, reset: false } }, event(2)))
  t.same(applied(), [1, 2], 'the init, then the events after it in the same frame')

  cursor.connectionOpened()
  cursor.receive(JSON.stringify(event(3)))
  t.same(applied(), [], 'a reconnecting socket has no place for events until its init')
  t.equal(cursor.since, 2)
  cursor.receive(initFrame({ resumed: true, events: [event(3)] }))
  t.same(applied(), [3])
})

t.test('a reset drops all state: lower ids apply again and since follows the new stream', async t => {
  const { cursor, deliveries, applied } = harness()
  cursor.connectionOpened()
  cursor.receive(initFrame({ events: [event(40), event(41), event(42)] }))
  applied()
  // Same server address, replaced database: our since=42 is ahead of everything it has.
  cursor.connectionOpened()
  t.equal(cursor.since, 42)
  cursor.receive(initFrame({ reset: true, error: 'since 42 is ahead of the newest event 2', events: [event(1), event(2)] }))
  const init = deliveries.find(d => d.kind === 'init')
  if (init?.kind !== 'init') return t.fail('expected an init')
  t.equal(init.init.resumed, false, 'the page must forget its view')
  t.equal(init.init.error, 'since 42 is ahead of the newest event 2')
  t.same(applied(), [1, 2], 'ids below the old cursor are new events now')
  t.equal(cursor.since, 2)
  cursor.receive(JSON.stringify(event(3)))
  t.same(applied(), [3], 'live events apply after the reset')
})

t.test('a reconnect answered with a fresh snapshot (resumed false) also starts over', async t => {
  const { cursor, applied } = harness()
  cursor.connectionOpened()
  cursor.receive(initFrame({ events: [event(5), event(6)] }))
  applied()
  cursor.connectionOpened()
  cursor.receive(initFrame({ resumed: false, events: [event(5), event(6), event(7)] }))
  t.same(applied(), [5, 6, 7], 'the snapshot is the whole truth: all of it is handed on')
})

t.test('resumed:true on the very first connect is treated as a snapshot', async t => {
  const { cursor, deliveries } = harness()
  cursor.connectionOpened()
  cursor.receive(initFrame({ resumed: true, events: [event(1)] }))
  const init = deliveries[0]
  if (init?.kind !== 'init') return t.fail('expected an init')
  t.equal(init.init.resumed, false)
  t.equal(init.init.reconnect, false)
})

t.test('the init batch is passed on as sent', async t => {
  const { cursor, deliveries } = harness()
  const batch = { id: 3, status: 'running' as const, max_cycles: 2, batch_mode: 'fixed' as const, cycles_completed: 0, started_at: 1, ended_at: null }
  cursor.connectionOpened()
  cursor.receive(initFrame({ batch, events: [] }))
  const init = deliveries[0]
  if (init?.kind !== 'init') return t.fail('expected an init')
  t.same(init.init.batch, batch)
})
