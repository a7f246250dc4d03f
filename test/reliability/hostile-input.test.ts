import t from 'tap'
import { symlink, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { WebSocket } from 'ws'
import { closed, connect, dashboardFixture, listen, validPayloads, waitFor, type TestClient } from '../helper.ts'
import { Limits } from '../../src/events/schemas.ts'
import { frame, Opcode, rawGet, rawHttp } from './wire.ts'

/**
 * Hostile and broken input, one table. Every case must get a clear refusal
 * (a status or close code plus a message saying what is wrong), and after
 * every case the service must still answer /api/health, the stored events
 * must be exactly those before (count and the newest rows), and the next
 * valid event must get the next id and be the next thing a watching client sees.
 */

interface Outcome {
  /** HTTP status, or WebSocket close code, or 0 for a `bad_request` reply on an open socket. */
  status: number
  message: string
}

interface Case {
  name: string
  run: () => Promise<Outcome>
  status: number | number[]
  message: RegExp
}

const { root, dashboardDir, artifactsDir } = await dashboardFixture(t)
await writeFile(path.join(artifactsDir, 'orchestrator.md'), '# fine to read')
await symlink('/etc', path.join(dashboardDir, 'etc'))
await symlink(path.join(root, 'secret.txt'), path.join(dashboardDir, 'lib', 'nested-link.js'))

const { app, url, wsUrl, port } = await listen(t, { dashboardDir, artifactsDir })
const leak = /TOP SECRET|SECRET=1|root:x?:0:0/

// ---------------------------------------------------------------- HTTP ingest

async function post (body: string | Buffer, headers: Record<string, string> = { 'content-type': 'application/json' }): Promise<Outcome> {
  const response = await fetch(`${url}/api/events`, { method: 'POST', headers, body: typeof body === 'string' ? body : new Uint8Array(body) })
  const text = await response.text()
  let message = text
  try {
    const parsed = JSON.parse(text) as { message?: string, code?: string }
    message = `${parsed.code ?? ''} ${parsed.message ?? ''}`
  } catch { /* not JSON: keep the raw text */ }
  return { status: response.status, message }
}

const json = (value: unknown): string => JSON.stringify(value)
const event = (type: string, payload: unknown): string => json({ type, payload })
const errorWithContext = (contextJson: string): string =>
  `{"type":"error","payload":{"type":"agent_crash","message":"boom","context":${contextJson}}}`
const commandEnd = validPayloads['command:end']
/** `levels` objects nested in one another, innermost holding 1. */
const nestedObjects = (levels: number): string => '{"a":'.repeat(levels) + '1' + '}'.repeat(levels)

const invalidJson = /SPRINT_INVALID_JSON Body is not valid JSON: \S/
const invalidEvent = (path: string): RegExp => new RegExp(`SPRINT_INVALID_EVENT .*${path.replace(/[/[\]]/g, '\\$&')}`)
const prototypeKey = /SPRINT_INVALID_EVENT .*\/(__proto__|constructor) .*(pollute|Unexpected property)/

const ingestCases: Case[] = [
  // Malformed JSON.
  { name: 'truncated JSON', run: () => post('{"type":'), status: 400, message: invalidJson },
  { name: 'single-quoted JSON', run: () => post("{'type':'error'}"), status: 400, message: invalidJson },
  { name: 'trailing comma', run: () => post('{"type":"error","payload":{},}'), status: 400, message: invalidJson },
  { name: 'missing comma', run: () => post('{"type":"error" "payload":{}}'), status: 400, message: invalidJson },
  { name: 'unterminated string', run: () => post('{"type":"error","payload":{"message":"x}}'), status: 400, message: invalidJson },
  { name: 'JavaScript comment', run: () => post('{"type":"error" /* hi */, "payload":{}}'), status: 400, message: invalidJson },
  { name: 'two documents', run: () => post('{"type":"error","payload":{"type":"a","message":"b"}} {}'), status: 400, message: invalidJson },
  { name: 'hex number', run: () => post('{"type":"batch:start","payload":{"batch_id":0x10,"max_cycles":1}}'), status: 400, message: invalidJson },
  { name: 'NaN literal', run: () => post('{"type":"error","payload":{"type":"a","message":"b","context":{"n":NaN}}}'), status: 400, message: invalidJson },
  { name: 'Infinity literal', run: () => post('{"type":"batch:start","payload":{"batch_id":Infinity,"max_cycles":1}}'), status: 400, message: invalidJson },
  { name: '-Infinity literal', run: () => post('{"type":"command:end","payload":{"metrics":{"tokens":-Infinity}}}'), status: 400, message: invalidJson },
  { name: 'binary garbage', run: () => post(Buffer.from([0xff, 0xfe, 0x00, 0x7b, 0x81, 0xc3, 0x28, 0x00])), status: 400, message: invalidJson },
  { name: 'whitespace only', run: () => post('  \n\t '), status: 400, message: invalidJson },
  { name: 'empty body', run: () => post(''), status: 400, message: /(SPRINT_INVALID_JSON|FST_ERR_CTP_EMPTY_JSON_BODY) .*(empty|end of JSON)/ },
  { name: 'form-encoded body', run: () => post('type=error', { 'content-type': 'application/x-www-form-urlencoded' }), status: 415, message: /Unsupported Media Type/ },
  { name: 'no content type', run: () => post(Buffer.from('{}'), {}), status: 415, message: /Unsupported Media Type/ },

  // Wrong types.
  { name: 'body is a number', run: () => post('42'), status: 400, message: /SPRINT_INVALID_EVENT .*Expected an event object/ },
  { name: 'body is a string', run: () => post('"batch:start"'), status: 400, message: /SPRINT_INVALID_EVENT .*Expected an event object/ },
  { name: 'body is null', run: () => post('null'), status: 400, message: /SPRINT_INVALID_EVENT .*Expected an event object/ },
  { name: 'body is an array of numbers', run: () => post('[1,2]'), status: 400, message: /SPRINT_INVALID_EVENT .*\/0 Expected an event object.*\/1 Expected an event object/ },
  { name: 'text/plain body', run: () => post(event('error', validPayloads.error), { 'content-type': 'text/plain' }), status: 400, message: /SPRINT_INVALID_EVENT .*Expected an event object/ },
  { name: 'type is a number', run: () => post(json({ type: 5, payload: {} })), status: 400, message: invalidEvent('/type') },
  { name: 'type is null', run: () => post(json({ type: null, payload: {} })), status: 400, message: invalidEvent('/type') },
  { name: 'type is an array holding a valid type', run: () => post(json({ type: ['error'], payload: validPayloads.error })), status: 400, message: invalidEvent('/type') },
  { name: 'unknown type', run: () => post(event('story:finished', {})), status: 400, message: /Unknown event type "story:finished"/ },
  { name: 'payload is null', run: () => post(event('batch:start', null)), status: 400, message: invalidEvent('/payload') },
  { name: 'payload is an array', run: () => post(event('error', ['boom'])), status: 400, message: invalidEvent('/payload') },
  { name: 'batch_id is a string', run: () => post(event('batch:start', { batch_id: '1', max_cycles: 1 })), status: 400, message: invalidEvent('/payload/batch_id') },
  { name: 'batch_id is a fraction', run: () => post(event('batch:start', { batch_id: 1.5, max_cycles: 1 })), status: 400, message: invalidEvent('/payload/batch_id') },
  { name: 'batch_id is negative', run: () => post(event('batch:start', { batch_id: -1, max_cycles: 1 })), status: 400, message: invalidEvent('/payload/batch_id') },
  { name: 'max_cycles is 0', run: () => post(event('batch:start', { batch_id: 1, max_cycles: 0 })), status: 400, message: invalidEvent('/payload/max_cycles') },
  { name: 'batch:end status outside its enum', run: () => post(event('batch:end', { batch_id: 1, cycles_completed: 1, status: 'exploded' })), status: 400, message: invalidEvent('/payload/status') },
  { name: 'story_keys is a string', run: () => post(event('cycle:start', { cycle_number: 1, story_keys: '2a-1' })), status: 400, message: invalidEvent('/payload/story_keys') },
  { name: 'story_keys holds numbers', run: () => post(event('cycle:start', { cycle_number: 1, story_keys: [1] })), status: 400, message: invalidEvent('/payload/story_keys/0') },
  { name: 'metrics value is a string', run: () => post(event('command:end', { ...commandEnd, metrics: { tokens: 'many' } })), status: 400, message: invalidEvent('/payload/metrics/tokens') },
  { name: 'context is an array', run: () => post(errorWithContext('[1,2]')), status: 400, message: invalidEvent('/payload/context') },
  { name: 'context:create task_id is a fraction', run: () => post(event('context:create', { status: 'started', task_id: 1.5 })), status: 400, message: invalidEvent('/payload/task_id') },

  // Missing and extra fields.
  { name: 'empty object', run: () => post('{}'), status: 400, message: invalidEvent('/type') },
  { name: 'no payload', run: () => post(json({ type: 'error' })), status: 400, message: invalidEvent('/payload') },
  { name: 'no type', run: () => post(json({ payload: validPayloads.error })), status: 400, message: invalidEvent('/type') },
  { name: 'error event without message', run: () => post(event('error', { type: 'agent_crash' })), status: 400, message: invalidEvent('/payload/message') },
  { name: 'command:start without task_id', run: () => post(event('command:start', { story_key: 'a', command: 'b' })), status: 400, message: invalidEvent('/payload/task_id') },
  { name: 'story:status without new_status', run: () => post(event('story:status', { story_key: 'a', old_status: null })), status: 400, message: invalidEvent('/payload/new_status') },
  { name: 'empty story_key', run: () => post(event('command:start', { ...validPayloads['command:start'], story_key: '' })), status: 400, message: invalidEvent('/payload/story_key') },
  { name: 'client-chosen id', run: () => post(json({ id: 1, type: 'error', payload: validPayloads.error })), status: 400, message: /\/id Unexpected property/ },
  // A producer's timestamp is accepted (when the event happened), but only a plausible one.
  { name: 'timestamp an hour ahead', run: () => post(json({ type: 'error', payload: validPayloads.error, timestamp: Date.now() + 3_600_000 })), status: 400, message: /\/timestamp .*at most 60 s ahead/ },
  { name: 'timestamp is a string', run: () => post(json({ type: 'error', payload: validPayloads.error, timestamp: '2025-01-01' })), status: 400, message: invalidEvent('/timestamp') },
  { name: 'timestamp is negative', run: () => post(json([{ type: 'error', payload: validPayloads.error, timestamp: -1 }])), status: 400, message: invalidEvent('/0/timestamp') },
  { name: 'timestamp in seconds with a fraction', run: () => post(json({ type: 'error', payload: validPayloads.error, timestamp: 1700000000.5 })), status: 400, message: invalidEvent('/timestamp') },
  // Undeclared payload fields are accepted and kept (producers add fields), but bounded like declared ones.
  { name: `extra payload field with a name longer than ${Limits.key}`, run: () => post(event('batch:start', { batch_id: 1, max_cycles: 1, ['a'.repeat(Limits.key + 1)]: true })), status: 400, message: /SPRINT_INVALID_EVENT .*\/payload\/a+… Property names may be at most 256/ },
  { name: 'extra payload field longer than 64 KiB', run: () => post(event('batch:start', { batch_id: 1, max_cycles: 1, note: 'n'.repeat(Limits.message + 1) })), status: 400, message: invalidEvent('/payload/note') },
  { name: `payload with ${Limits.properties + 1} properties`, run: () => post(event('cycle:end', { cycle_number: 1, completed_stories: [], ...Object.fromEntries(Array.from({ length: Limits.properties - 1 }, (_, i) => [`x${i}`, i])) })), status: 400, message: invalidEvent('/payload') },
  {
    name: 'one bad event in an array stores none',
    run: () => post(json([{ type: 'error', payload: validPayloads.error }, { type: 'error', payload: validPayloads.error }, { type: 'batch:start', payload: {} }])),
    status: 400,
    message: invalidEvent('/2/payload')
  },

  // Over the limits.
  { name: `type longer than ${Limits.key}`, run: () => post(event('e'.repeat(Limits.key + 1), {})), status: 400, message: invalidEvent('/type') },
  { name: `story_key longer than ${Limits.key}`, run: () => post(event('command:start', { ...validPayloads['command:start'], story_key: 'k'.repeat(Limits.key + 1) })), status: 400, message: invalidEvent('/payload/story_key') },
  { name: 'message longer than 64 KiB', run: () => post(event('command:progress', { ...validPayloads['command:progress'], message: 'm'.repeat(Limits.message + 1) })), status: 400, message: invalidEvent('/payload/message') },
  { name: `more than ${Limits.listItems} story keys`, run: () => post(event('cycle:start', { cycle_number: 1, story_keys: Array.from({ length: Limits.listItems + 1 }, (_, i) => `s-${i}`) })), status: 400, message: invalidEvent('/payload/story_keys') },
  { name: 'context with 257 properties', run: () => post(event('error', { type: 'x', message: 'y', context: Object.fromEntries(Array.from({ length: 257 }, (_, i) => [`k${i}`, i])) })), status: 400, message: invalidEvent('/payload/context') },
  { name: 'metrics with 65 properties', run: () => post(event('command:end', { ...commandEnd, metrics: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`m${i}`, i])) })), status: 400, message: invalidEvent('/payload/metrics') },
  { name: '1,001 events in one request', run: () => post(json(Array.from({ length: 1001 }, () => ({ type: 'error', payload: validPayloads.error })))), status: 400, message: /SPRINT_TOO_MANY_EVENTS .*at most 1000/ },
  { name: 'body over 1 MiB', run: () => post(event('error', { type: 'x', message: 'y', context: { blob: 'b'.repeat(1024 * 1024) } })), status: 413, message: /FST_ERR_CTP_BODY_TOO_LARGE .*too large/ },

  // Deep nesting: JSON.parse copes, but anything recursive after it (validation, JSON.stringify) must not be reached.
  { name: 'context nested 10,000 objects deep', run: () => post(errorWithContext(nestedObjects(10_000))), status: 400, message: /\/payload\/context.*nested at most/ },
  { name: 'context nested 100,000 arrays deep', run: () => post(errorWithContext('{"a":' + '['.repeat(100_000) + ']'.repeat(100_000) + '}')), status: 400, message: /\/payload\/context.*nested at most/ },
  { name: `context one level over the limit of ${Limits.depth}`, run: () => post(errorWithContext(nestedObjects(Limits.depth))), status: 400, message: /\/payload\/context(\/a)+ .*nested at most 32 levels/ },

  // Prototype pollution attempts: refused outright, and Object.prototype checked after the table.
  { name: '__proto__ in context', run: () => post(errorWithContext('{"__proto__":{"polluted":"yes"}}')), status: 400, message: prototypeKey },
  { name: '__proto__ at the top level', run: () => post('{"__proto__":{"polluted":"yes"},"type":"error","payload":{"type":"a","message":"b"}}'), status: 400, message: prototypeKey },
  { name: '__proto__ as the payload key', run: () => post('{"type":"error","__proto__":{"polluted":"yes"}}'), status: 400, message: prototypeKey },
  { name: 'constructor.prototype in context', run: () => post(errorWithContext('{"constructor":{"prototype":{"polluted":"yes"}}}')), status: 400, message: prototypeKey },
  { name: '__proto__ inside an array of events', run: () => post('[{"type":"error","payload":{"type":"a","message":"b","context":{"x":[{"__proto__":{"polluted":"yes"}}]}}}]'), status: 400, message: prototypeKey },

  // Numbers JSON can spell but JavaScript and SQLite cannot hold.
  { name: 'batch_id 1e309 (parses to Infinity)', run: () => post('{"type":"batch:start","payload":{"batch_id":1e309,"max_cycles":1}}'), status: 400, message: invalidEvent('/payload/batch_id') },
  { name: 'metrics duration -1e309', run: () => post(`{"type":"command:end","payload":${json(commandEnd).replace('1200', '-1e309')}}`), status: 400, message: invalidEvent('/payload/metrics/duration_ms') },
  { name: 'context number 1e309', run: () => post(errorWithContext('{"n":1e309}')), status: 400, message: /\/payload\/context\/n .*finite/ },
  { name: 'context number -1e309 inside an array', run: () => post(errorWithContext('{"a":[1,-1e309]}')), status: 400, message: /\/payload\/context\/a\/1 .*finite/ },
  { name: 'batch_id 99999999999999999999', run: () => post('{"type":"batch:start","payload":{"batch_id":99999999999999999999,"max_cycles":1}}'), status: 400, message: invalidEvent('/payload/batch_id') },
  { name: 'batch:end batch_id 1e300', run: () => post('{"type":"batch:end","payload":{"batch_id":1e300,"cycles_completed":1,"status":"completed"}}'), status: 400, message: invalidEvent('/payload/batch_id') },
  { name: 'cycle_number 2^53 + 1', run: () => post('{"type":"cycle:end","payload":{"cycle_number":9007199254740993,"completed_stories":[]}}'), status: 400, message: invalidEvent('/payload/cycle_number') }
]

// ---------------------------------------------------------------- WebSocket frames

/** Opens a client that has read its init, for writing raw frames under it. */
async function openClient (): Promise<TestClient> {
  const { client } = await connect(t, wsUrl)
  return client
}

function rawSocket (client: TestClient): import('node:net').Socket {
  return (client.socket as unknown as { _socket: import('node:net').Socket })._socket
}

/** Writes raw frames and reports how the server answered: a close code, or a bad_request reply. */
async function sendFrames (frames: Buffer[]): Promise<Outcome> {
  const client = await openClient()
  const closing = closed(client.socket)
  for (const bytes of frames) rawSocket(client).write(bytes)
  const reply = await client.next(5000).catch(() => null)
  if (reply === null && client.socket.readyState === WebSocket.CLOSED) {
    const { code, reason } = await closing
    return { status: code, message: `close ${code} ${reason}` }
  }
  client.socket.terminate()
  if (reply === null) return { status: -1, message: 'no answer' }
  return { status: 0, message: `${String(reply.type)} ${String(reply.payload?.type)} ${String(reply.payload?.message)}` }
}

/** Close codes carry the meaning (RFC 6455 §7.4.1); ws sends no reason text with these. */
const closeMessage = (code: number): RegExp => new RegExp(`^close ${code}`)

/** Sends `count` pings as fast as the socket takes them; counts what comes back. */
async function flood (kind: 'protocol' | 'json', count: number): Promise<Outcome> {
  const client = await openClient()
  let answers = 0
  client.socket.on('pong', () => answers++)
  client.socket.on('message', data => { if (data.toString() === '{"type":"pong"}') answers++ })
  const closing = closed(client.socket)
  for (let i = 0; i < count && client.socket.readyState === WebSocket.OPEN; i++) {
    if (kind === 'protocol') client.socket.ping()
    else client.socket.send('{"type":"ping"}')
  }
  const { code, reason } = await closing
  return { status: code, message: `close ${code} ${reason}; answered ${answers} of ${count}` }
}

const answeredAtMost20 = /^close 1008 rate limit exceeded; answered ([0-9]|1[0-9]|20) of/

const wsCases: Case[] = [
  { name: 'binary frame', run: () => sendFrames([frame(Opcode.BINARY, '{"type":"ping"}')]), status: 0, message: /bad_request Binary frames are not accepted/ },
  { name: 'text that is not JSON', run: () => sendFrames([frame(Opcode.TEXT, 'hello')]), status: 0, message: /bad_request Message is not valid JSON/ },
  { name: 'unknown client message', run: () => sendFrames([frame(Opcode.TEXT, '{"type":"subscribe","payload":{}}')]), status: 0, message: /bad_request Unknown message/ },
  { name: 'client message with __proto__', run: () => sendFrames([frame(Opcode.TEXT, '{"__proto__":{"polluted":"yes"},"type":"x"}')]), status: 0, message: /bad_request Unknown message/ },
  { name: 'client message nested 30,000 deep', run: () => sendFrames([frame(Opcode.TEXT, '['.repeat(30_000) + ']'.repeat(30_000))]), status: 0, message: /bad_request (Unknown message|Message is not valid JSON)/ },
  { name: 'invalid UTF-8 (C3 28)', run: () => sendFrames([frame(Opcode.TEXT, Buffer.from([0xc3, 0x28]))]), status: 1007, message: closeMessage(1007) },
  { name: 'overlong UTF-8 slash (C0 AF)', run: () => sendFrames([frame(Opcode.TEXT, Buffer.from([0x22, 0xc0, 0xaf, 0x22]))]), status: 1007, message: closeMessage(1007) },
  { name: 'UTF-8 encoded surrogate (ED A0 80)', run: () => sendFrames([frame(Opcode.TEXT, Buffer.from([0xed, 0xa0, 0x80]))]), status: 1007, message: closeMessage(1007) },
  {
    name: 'invalid UTF-8 split across fragments',
    run: () => sendFrames([frame(Opcode.TEXT, Buffer.from([0x7b, 0xe2, 0x82]), { fin: false }), frame(Opcode.CONTINUATION, Buffer.from([0x28, 0x7d]))]),
    status: 1007,
    message: closeMessage(1007)
  },
  { name: 'frame of 65,537 bytes', run: () => sendFrames([frame(Opcode.TEXT, 'x'.repeat(65_537))]), status: 1009, message: closeMessage(1009) },
  { name: 'header claiming 2^53 - 1 bytes', run: () => sendFrames([frame(Opcode.TEXT, '', { declaredLength: 2n ** 53n - 1n })]), status: 1009, message: closeMessage(1009) },
  { name: 'header claiming 2^63 bytes', run: () => sendFrames([frame(Opcode.TEXT, '', { declaredLength: 2n ** 63n })]), status: 1009, message: closeMessage(1009) },
  {
    name: 'two 40 KiB fragments (80 KiB message)',
    run: () => sendFrames([frame(Opcode.TEXT, 'a'.repeat(40_960), { fin: false }), frame(Opcode.CONTINUATION, 'b'.repeat(40_960))]),
    status: 1009,
    message: closeMessage(1009)
  },
  { name: 'unmasked client frame', run: () => sendFrames([frame(Opcode.TEXT, '{"type":"ping"}', { mask: false })]), status: 1002, message: closeMessage(1002) },
  { name: 'reserved opcode 0x3', run: () => sendFrames([frame(Opcode.RESERVED, 'x')]), status: 1002, message: closeMessage(1002) },
  { name: 'RSV1 without an extension', run: () => sendFrames([frame(Opcode.TEXT, '{"type":"ping"}', { rsv1: true })]), status: 1002, message: closeMessage(1002) },
  { name: 'ping with a 126-byte payload', run: () => sendFrames([frame(Opcode.PING, 'p'.repeat(126))]), status: 1002, message: closeMessage(1002) },
  { name: 'fragmented ping', run: () => sendFrames([frame(Opcode.PING, 'p', { fin: false })]), status: 1002, message: closeMessage(1002) },
  { name: 'continuation with nothing to continue', run: () => sendFrames([frame(Opcode.CONTINUATION, 'x')]), status: 1002, message: closeMessage(1002) },
  { name: 'close frame with code 999', run: () => sendFrames([frame(Opcode.CLOSE, Buffer.from([0x03, 0xe7]))]), status: 1002, message: closeMessage(1002) },
  { name: '10,000 protocol pings', run: () => flood('protocol', 10_000), status: 1008, message: answeredAtMost20 },
  { name: '10,000 {"type":"ping"} messages', run: () => flood('json', 10_000), status: 1008, message: answeredAtMost20 }
]

// ---------------------------------------------------------------- since

async function initFor (query: string): Promise<Outcome> {
  const { client, init } = await connect(t, `${wsUrl}?${query}`)
  client.socket.terminate()
  const p = init.payload
  if (p.reset !== true || p.resumed !== false) return { status: -1, message: `not a reset: ${JSON.stringify(p)}` }
  return { status: 0, message: `reset; ${String(p.error)}` }
}

/** An upgrade the server answers with an HTTP error: its status and the message in its body. */
async function refused (query: string): Promise<Outcome> {
  const { status, body } = await rawHttp(port, `GET /ws?${query} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n` +
    'Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  let message = body
  try { message = String((JSON.parse(body) as { message?: unknown }).message) } catch { /* raw */ }
  return { status, message: `upgrade refused with ${status}: ${message}` }
}

const sinceError = /^reset; Query parameter "since" must be a non-negative integer event id/
const sinceCases: Case[] = [
  ...['-1', 'abc', '1e309', '99999999999999999999', '', '1.5', '0x10', '+1', '%201', '1%20', 'NaN', 'Infinity', '%00', '1%002'].map(since => ({
    name: `since=${since}`,
    run: () => initFor(`since=${since}`),
    status: 0,
    message: sinceError
  })),
  { name: 'since given twice', run: () => refused('since=1&since=2'), status: 400, message: /querystring\/since/ },
  { name: 'since of 20,000 digits (over the header size limit)', run: () => refused(`since=${'9'.repeat(20_000)}`), status: 431, message: /refused with 431: .*(header|large)/i }
]

// ---------------------------------------------------------------- path traversal

async function traverse (target: string): Promise<Outcome> {
  const { status, body } = await rawGet(port, target)
  if (leak.test(body)) return { status, message: `LEAKED: ${body.slice(0, 80)}` }
  let message = body
  try { message = String((JSON.parse(body) as { message?: unknown }).message) } catch { /* raw */ }
  return { status, message }
}

const absoluteSecret = path.join(root, 'secret.txt')
const traversalTargets = [
  '/../secret.txt', '/../../../../../../etc/passwd', '/..%2fsecret.txt', '/%2e%2e/secret.txt', '/%2e%2e%2fsecret.txt',
  '/%2E%2E%2Fsecret.txt', '/..%5csecret.txt', '/..\\secret.txt', '/%2e%2e%5c%2e%2e%5csecret.txt', '/%252e%252e%252fsecret.txt',
  '/..%252fsecret.txt', '/%25252e%25252e%25252fsecret.txt', '/%c0%ae%c0%ae/secret.txt', '/..%c0%afsecret.txt', '/..%e0%80%afsecret.txt',
  '/..%ef%bc%8fsecret.txt', '/..%e2%88%96secret.txt', '/%u002e%u002e/secret.txt', '/lib/../../secret.txt', '/lib/%2e%2e/%2e%2e/secret.txt',
  '/./../secret.txt', '/%2e/%2e%2e/secret.txt', '/.%2e/secret.txt', '/%2e./secret.txt', '/....//secret.txt', '/..;/secret.txt',
  '/index.html%00.txt', '/%00', '/lib/app.js%00', '/..%00/secret.txt', '/link.txt%00', '/index.html/..%2f..%2fsecret.txt',
  '/sprint-status.yaml/../../secret.txt', '/orchestrator.md%2f..%2f..%2fsecret.txt', '/lib/app.js/..%2f..%2f..%2fsecret.txt',
  `/${encodeURIComponent(absoluteSecret)}`, `/${absoluteSecret}`, `//${absoluteSecret.slice(1)}`, `/%2f${absoluteSecret.slice(1).split('/').join('%2f')}`,
  '/etc/passwd', '//etc/passwd', '/%2fetc%2fpasswd', '/file:///etc/passwd', '/C:%5cWindows%5cwin.ini', '/C:\\Windows\\win.ini',
  'http://127.0.0.1/../secret.txt', 'http://127.0.0.1/%2e%2e/secret.txt',
  '/link.txt', '/LINK.TXT', '/up/secret.txt', '/up/dashboard/index.html', '/up/dashboard/.env', '/etc/hosts', '/etc/hostname',
  '/lib/nested-link.js', '/.env', '/%2eenv', '/lib/..%2f.env', '/.%65nv', '/lib/../.env'
]
const traversalCases: Case[] = traversalTargets.map(target => ({
  name: `GET ${target.length > 70 ? `${target.slice(0, 67)}...` : target}`,
  run: () => traverse(target),
  status: [400, 403, 404],
  message: /not found|Bad Request|Forbidden|Client Error|not a valid url/i
}))

// ---------------------------------------------------------------- the table

const cases = [...ingestCases, ...wsCases, ...sinceCases, ...traversalCases]

// A watcher sees every event; after each case the next thing it sees must be the probe event.
const watcher = (await connect(t, wsUrl)).client
let probeNumber = 0

/** The rows a case must not touch: how many there are and the newest three, whole. */
function storedState (): { count: number, lastId: number, newest: string[] } {
  return {
    count: app.sprintStore.countEvents(),
    lastId: app.events.lastEventId,
    newest: app.sprintStore.getRecentEventRows(3).map(row => `${row.id} ${row.type} ${row.payload}`)
  }
}

/** Ids the watcher received up to and including `id` (a failed case must not cascade into the next). */
async function messagesUntil (id: number): Promise<number[]> {
  const ids: number[] = []
  while (ids.at(-1) !== id) {
    const message = await watcher.next().catch(() => null)
    if (message === null) break
    ids.push(message.id)
  }
  return ids
}

async function probe (): Promise<{ status: number, id: number }> {
  probeNumber++
  const response = await fetch(`${url}/api/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: event('command:progress', { ...validPayloads['command:progress'], message: `probe ${probeNumber}` })
  })
  const body = await response.json() as { events: Array<{ id: number }> }
  return { status: response.status, id: body.events?.[0]?.id ?? -1 }
}

t.test('baseline events', async t => {
  const first = await probe()
  t.equal(first.status, 201)
  t.equal((await watcher.next()).id, first.id)
  app.events.emitMany(Object.entries(validPayloads).map(([type, payload]) => ({ type, payload })))
  await watcher.take(Object.keys(validPayloads).length)
})

t.test(`${cases.length} hostile inputs are refused clearly and change nothing`, async t => {
  t.ok(ingestCases.length + wsCases.length + sinceCases.length + traversalCases.length >= 50, 'at least 50 cases')
  t.ok(traversalCases.length >= 30, 'at least 30 traversal variants')
  for (const testCase of cases) {
    await t.test(testCase.name, async t => {
      const before = storedState()
      const outcome = await testCase.run()
      const statuses = Array.isArray(testCase.status) ? testCase.status : [testCase.status]
      t.ok(statuses.includes(outcome.status), `status ${outcome.status} is one of ${statuses.join('/')}: ${outcome.message.slice(0, 200)}`)
      t.match(outcome.message, testCase.message, 'the message says what is wrong')
      t.notMatch(outcome.message, /Internal Server Error/)

      const health = await fetch(`${url}/api/health`)
      t.equal(health.status, 200, 'still serving')
      t.same(storedState(), before, 'stored events untouched')

      const next = await probe()
      t.equal(next.status, 201, 'a valid event is still accepted')
      t.equal(next.id, before.lastId + 1, 'with the next id: the refused input took none')
      const seen = await messagesUntil(next.id)
      t.same(seen, [next.id], 'and it is the next thing a client sees: nothing was broadcast')
    })
  }
})

t.test('no prototype was polluted', async t => {
  t.equal(({} as Record<string, unknown>).polluted, undefined)
  t.notOk(Object.hasOwn(Object.prototype, 'polluted'))
  t.equal(Object.getPrototypeOf({}), Object.prototype)
})

t.test(`a context nested exactly ${Limits.depth} levels deep (the payload counted) is stored as sent`, async t => {
  // payload (1) > context (2) > 29 more objects (31) > an array (32) holding scalars only.
  const context = JSON.parse('{"a":'.repeat(30) + '[1,"x",null,true]' + '}'.repeat(30)) as Record<string, unknown>
  const reply = await fetch(`${url}/api/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: event('error', { type: 'deep_but_fine', message: 'ok', context })
  })
  t.equal(reply.status, 201)
  const received = await watcher.next()
  t.same(received.payload.context, context)
})

t.test('in-process emit refuses what JSON cannot carry, without throwing anything but SPRINT_INVALID_EVENT', async t => {
  const cyclic: Record<string, unknown> = { name: 'loop' }
  cyclic.self = cyclic
  const contexts: Array<[string, unknown, RegExp]> = [
    ['a cyclic object', cyclic, /\/payload\/context(\/self)+ .*nested at most/],
    ['a bigint', { big: 10n }, /\/payload\/context\/big Expected a JSON value, got a bigint/],
    ['a function', { fn: () => 1 }, /\/payload\/context\/fn Expected a JSON value, got a function/],
    ['NaN', { n: Number.NaN }, /\/payload\/context\/n Expected a finite number/],
    ['a key with "/" and "~"', { 'a/b~c': Infinity }, /\/payload\/context\/a~1b~0c Expected a finite number/]
  ]
  const before = storedState()
  for (const [name, context, message] of contexts) {
    await t.rejects(app.events.emit('error', { type: 'x', message: 'y', context: context as Record<string, unknown> }),
      { code: 'SPRINT_INVALID_EVENT', statusCode: 400, message }, name)
  }
  t.same(storedState(), before, 'nothing stored')
})

t.test('the watcher saw no extra message', async t => {
  await waitFor(() => app.events.clientCount === 1)
  t.equal(watcher.pending, 0)
  t.equal(watcher.socket.readyState, WebSocket.OPEN)
  t.equal(app.events.clientCount, 1, 'only the watcher is left connected')
  // The POST helper never left a keep-alive socket the server could not close.
  await rawHttp(port, 'GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n').then(r => t.equal(r.status, 200))
})
