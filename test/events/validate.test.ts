import t from 'tap'
import { validateEvent, describeInvalidEvent, isEventType, validateTimestamp } from '../../src/events/validate.ts'
import { EventType, PayloadSchemas, Limits } from '../../src/events/schemas.ts'
import { validPayloads } from '../helper.ts'

t.test('the catalogue has one schema per EventType value', async t => {
  t.same(Object.keys(PayloadSchemas).sort(), Object.values(EventType).sort())
  t.same(Object.keys(validPayloads).sort(), Object.values(EventType).sort())
})

t.test('every event type accepts a valid payload', async t => {
  for (const [type, payload] of Object.entries(validPayloads)) {
    t.same(validateEvent(type, payload), [], type)
  }
})

// One invalid payload per type, with the field that must be named.
const invalid: Array<[string, unknown, string]> = [
  ['batch:start', { batch_id: 'one', max_cycles: 2 }, '/payload/batch_id'],
  ['batch:start', { batch_id: 1, max_cycles: 0 }, '/payload/max_cycles'],
  ['batch:start', { batch_id: 1, max_cycles: 'some' }, '/payload/max_cycles'],
  ['batch:end', { batch_id: 1, cycles_completed: -1, status: 'completed' }, '/payload/cycles_completed'],
  ['batch:end', { batch_id: 1, cycles_completed: 1, status: 'done' }, '/payload/status'],
  ['batch:start', { batch_id: 1, max_cycles: null, batch_mode: 'some' }, '/payload/batch_mode'],
  ['batch:warning', { batch_id: 1, message: 'm' }, '/payload/warning_type'],
  ['cycle:start', { cycle_number: 0, story_keys: [] }, '/payload/cycle_number'],
  ['cycle:start', { cycle_number: 1, story_keys: [1] }, '/payload/story_keys/0'],
  ['cycle:end', { cycle_number: 1 }, '/payload/completed_stories'],
  ['command:start', { story_key: '', command: 'c', task_id: 't' }, '/payload/story_key'],
  ['command:progress', { story_key: 's', command: 'c', task_id: 't' }, '/payload/message'],
  ['command:progress', { story_key: 's', command: 'c', task_id: 't', message: 'x'.repeat(Limits.message + 1) }, '/payload/message'],
  ['command:end', { story_key: 's', command: 'c', task_id: 't', status: 'ok', metrics: { tokens: 'many' } }, '/payload/metrics/tokens'],
  ['command:end', { story_key: 's', command: 'c', task_id: 't' }, '/payload/status'],
  ['story:status', { story_key: 's', new_status: 'done' }, '/payload/old_status'],
  ['story:status', { story_key: 'k'.repeat(Limits.key + 1), old_status: null, new_status: 'done' }, '/payload/story_key'],
  ['error', { type: 'x' }, '/payload/message'],
  ['error', { type: 'x', message: 'm', context: 'not an object' }, '/payload/context'],
  ['context:create', { task_id: 1 }, '/payload/status'],
  ['context:refresh', { status: 's', task_id: 1.5 }, '/payload/task_id'],
  ['context:error', { status: 'error', error: 'e' }, '/payload/task_id'],
  ['context:copied', { source: 's', message: 'm' }, '/payload/destination'],
  ['injection:warning', { command: 'c', size_bytes: -1, threshold_bytes: 1, message: 'm' }, '/payload/size_bytes'],
  ['background:error', { task_type: 't', status: '', error: 'e' }, '/payload/status'],
  ['cleanup:complete', { files_moved: 1.5, story_keys: [], message: 'm' }, '/payload/files_moved'],
  ['cleanup:file_error', { error: 'e', message: 'm' }, '/payload/file'],
  ['orchestrator:start', { pid: 1, batch_size: 0 }, '/payload/batch_size'],
  ['orchestrator:exit', { pid: 1, code: 'x', signal: null, duration_ms: 1 }, '/payload/code']
]

// The shapes the sprint runner's orchestrator.py sends where they differ from the usual ones.
const orchestratorShapes: Array<[string, unknown]> = [
  ['batch:start', { batch_id: 1, max_cycles: null, batch_mode: 'all' }],
  ['batch:start', { batch_id: 1, max_cycles: 3, batch_mode: 'fixed' }],
  ['batch:end', { batch_id: 1, cycles_completed: 2, status: 'all_done' }],
  ['batch:end', { batch_id: 1, status: 'stopped' }],
  ['command:start', { story_key: 's', command: 'c', task_id: 't', message: '' }],
  ['command:end', { story_key: 's', command: 'c', task_id: 't', message: '', status: 'end' }],
  ['context:create', { status: 'starting' }],
  ['context:refresh', { task_id: 12, status: 'started' }],
  ['background:error', { task_type: 't', status: 'error', error: 'e' }]
]

t.test('the orchestrator\'s own shapes are valid', async t => {
  for (const [type, payload] of orchestratorShapes) t.same(validateEvent(type, payload), [], `${type} ${JSON.stringify(payload)}`)
})

t.test('an invalid payload is rejected naming the failing field', async t => {
  for (const [type, payload, path] of invalid) {
    const details = validateEvent(type, payload)
    t.ok(details.some(d => d.path === path), `${type}: ${path} in ${JSON.stringify(details)}`)
  }
})

t.test('every event type accepts fields it does not declare', async t => {
  for (const [type, payload] of Object.entries(validPayloads)) {
    t.same(validateEvent(type, { ...payload, extra_field: true, added_later: { nested: ['a', 1, null] } }), [], type)
  }
})

t.test('undeclared fields are bounded like declared ones', async t => {
  const base = validPayloads['batch:warning']
  const cases: Array<[string, Record<string, unknown>, string, RegExp]> = [
    ['a long key', { [`k${'x'.repeat(Limits.key)}`]: 1 }, `/payload/k${'x'.repeat(63)}…`, /at most 256 characters/],
    ['a long string', { note: 'n'.repeat(Limits.message + 1) }, '/payload/note', /at most 65536 characters/],
    ['a long list', { list: Array.from({ length: Limits.listItems + 1 }, () => 0) }, '/payload/list', /at most 1000 items/],
    ['a wide nested object', { wide: Object.fromEntries(Array.from({ length: Limits.properties + 1 }, (_, i) => [`p${i}`, i])) }, '/payload/wide', /at most 256 properties/],
    ['deep nesting', { deep: JSON.parse('{"a":'.repeat(Limits.depth) + '1' + '}'.repeat(Limits.depth)) }, '/payload/deep', /nested at most 32/],
    ['a prototype key', JSON.parse('{"__proto__":{"x":1}}'), '/payload/__proto__', /pollute/],
    ['a non-finite number', { ratio: Infinity }, '/payload/ratio', /finite/]
  ]
  for (const [name, extra, path, message] of cases) {
    const details = validateEvent('batch:warning', { ...base, ...extra })
    t.ok(details.some(d => d.path.startsWith(path) && message.test(d.message)), `${name}: ${JSON.stringify(details).slice(0, 300)}`)
  }
  const wide = Object.fromEntries(Array.from({ length: Limits.properties - 3 + 1 }, (_, i) => [`p${i}`, i]))
  t.ok(validateEvent('batch:warning', { ...base, ...wide }).some(d => d.path === '/payload'), 'the payload itself has at most 256 properties')
})

t.test('validateTimestamp', async t => {
  const now = 1_700_000_000_000
  t.same(validateTimestamp(undefined, '/timestamp', now), [], 'absent: the server\'s time is used')
  t.same(validateTimestamp(0, '/timestamp', now), [], 'the distant past is fine')
  t.same(validateTimestamp(now + Limits.futureTimestampMs, '/timestamp', now), [], 'exactly 60 s ahead is fine')
  for (const bad of [now + Limits.futureTimestampMs + 1, -1, 1.5, '1700000000000', null, Number.MAX_SAFE_INTEGER + 2, Number.NaN]) {
    const details = validateTimestamp(bad, '/3/timestamp', now)
    t.equal(details.length, 1, String(bad))
    t.equal(details[0]?.path, '/3/timestamp')
  }
  t.match(validateTimestamp(now + 3_600_000, '/timestamp', now)[0]?.message, /at most 60 s ahead.*3600 s ahead/)
})

t.test('unknown types and non-object payloads are rejected', async t => {
  t.equal(validateEvent('batch:pause', {})[0]?.path, '/type')
  t.match(validateEvent('batch:pause', {})[0]?.message, /Unknown event type "batch:pause"/)
  t.equal(validateEvent(42, {})[0]?.path, '/type')
  t.ok(validateEvent('batch:start', null).length > 0)
  t.notOk(isEventType('__proto__'))
  t.ok(isEventType('command:end'))
})

t.test('a path prefix is put before every path', async t => {
  t.equal(validateEvent('batch:end', {}, '/3')[0]?.path.startsWith('/3/payload/'), true)
})

t.test('non-finite numbers are rejected', async t => {
  t.ok(validateEvent('command:end', { ...validPayloads['command:end'], metrics: { duration_ms: Number.NaN } }).length > 0)
  t.ok(validateEvent('command:end', { ...validPayloads['command:end'], metrics: { tokens: Infinity } }).length > 0)
})

t.test('the description names the type and every field', async t => {
  const message = describeInvalidEvent('batch:start', validateEvent('batch:start', { batch_id: 'x', max_cycles: 0 }))
  t.match(message, /^Invalid event "batch:start": /)
  t.match(message, /\/payload\/batch_id/)
  t.match(message, /\/payload\/max_cycles/)
})
