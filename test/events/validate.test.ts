import t from 'tap'
import { validateEvent, describeInvalidEvent, isEventType } from '../../src/events/validate.ts'
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
  ['context:complete', { status: 's', extra_field: 1 }, '/payload/extra_field']
]

t.test('an invalid payload is rejected naming the failing field', async t => {
  for (const [type, payload, path] of invalid) {
    const details = validateEvent(type, payload)
    t.ok(details.some(d => d.path === path), `${type}: ${path} in ${JSON.stringify(details)}`)
  }
})

t.test('every event type rejects extra fields, by name', async t => {
  for (const [type, payload] of Object.entries(validPayloads)) {
    const details = validateEvent(type, { ...payload, extra_field: true })
    t.same(details.map(d => d.path), ['/payload/extra_field'], type)
  }
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
