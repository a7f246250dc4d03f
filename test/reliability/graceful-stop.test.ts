import t from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import net from 'node:net'
import path from 'node:path'
import { existsSync } from 'node:fs'
import Database from 'better-sqlite3'
import type { WebSocket } from 'ws'
import sprintDashboard from '../../src/app.ts'
import { startServer } from '../e2e/server-process.ts'
import { closed, connect, tempDir, validPayloads, waitFor, type TestContext } from '../helper.ts'
import { postEvents, progressEvent, StreamReader } from './stream-reader.ts'

const CLIENTS = 1000
const IN_FLIGHT = 5
const EXIT_WITHIN_MS = 5000

// Node would crash the run on an unhandled rejection anyway; collecting them
// makes the failure name the test it happened in.
const unhandled: unknown[] = []
process.on('unhandledRejection', reason => { unhandled.push(reason) })

/** A POST whose headers and first half of the body are sent now, and the rest on `finish()`. */
function startSlowPost (port: number, body: string): { finish: () => Promise<{ status: number, body: string }> } {
  const socket = net.connect(port, '127.0.0.1')
  const split = Math.floor(body.length / 2)
  socket.write(`POST /api/events HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body.slice(0, split)}`)
  const chunks: Buffer[] = []
  socket.on('data', chunk => chunks.push(chunk))
  socket.on('error', () => { /* judged by the response, below */ })
  const ended = new Promise<void>(resolve => socket.on('close', () => resolve()))
  return {
    async finish () {
      socket.write(body.slice(split))
      await ended // keep-alive: the server must end the connection itself for shutdown to finish
      const text = Buffer.concat(chunks).toString()
      return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), body: text.slice(text.indexOf('\r\n\r\n') + 4) }
    }
  }
}

t.test(`SIGTERM with ${CLIENTS} clients and ${IN_FLIGHT} ingest requests in flight: ` +
  `requests answered, every socket closed 1001, database closed, exit 0 within ${EXIT_WITHIN_MS / 1000} s`, async t => {
  const dir = await tempDir(t)
  const dbPath = path.join(dir, 'sprint.db')
  const env = { SPRINT_DB: dbPath, SPRINT_ARTIFACTS_DIR: dir, SPRINT_WATCH: '0' }
  const server = await startServer(env)
  t.teardown(() => { server.child.kill('SIGKILL') })
  let stderr = ''
  server.child.stderr!.on('data', chunk => { stderr += chunk })
  const port = Number(new URL(server.url).port)

  const readers: StreamReader[] = []
  t.teardown(() => { for (const reader of readers) reader.socket.terminate() })
  for (let i = 0; i < CLIENTS; i += 100) {
    const group = Array.from({ length: 100 }, () => new StreamReader(server.wsUrl, { batched: i % 200 === 0 }))
    readers.push(...group)
    await Promise.all(group.map(reader => reader.opened))
  }
  const before = await postEvents(server.url, Array.from({ length: 10 }, (_, i) => progressEvent(i)))
  await waitFor(() => readers.every(reader => reader.lastId === before.at(-1)), 20_000)

  // Requests the server has started on (logged "incoming request") but whose bodies are still coming.
  const incoming = (): number => server.logs.filter(line => line.msg === 'incoming request').length
  const incomingBefore = incoming()
  const slowPosts = Array.from({ length: IN_FLIGHT }, (_, i) =>
    startSlowPost(port, JSON.stringify({ type: 'command:progress', payload: { ...validPayloads['command:progress'], message: `in flight ${i}` } })))
  await waitFor(() => incoming() === incomingBefore + IN_FLIGHT, 10_000)

  const signalledAt = Date.now()
  server.child.kill('SIGTERM')
  await waitFor(() => server.logs.some(line => line.msg === 'shutting down'), 5000)

  // Stops accepting: a new request is refused (503 while closing, or no listener at all).
  const late = await fetch(`${server.url}/api/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(progressEvent(999))
  }).then(response => response.status, () => 'refused')
  t.not(late, 201, `a request arriving after SIGTERM is not taken (${late})`)

  const answers = await Promise.all(slowPosts.map(post => post.finish()))
  const inFlightIds: number[] = []
  for (const [index, answer] of answers.entries()) {
    t.equal(answer.status, 201, `in-flight request ${index} answered 201`)
    const envelope = (JSON.parse(answer.body) as { events: Array<{ id: number, payload: { message: string } }> }).events[0]!
    t.equal(envelope.payload.message, `in flight ${index}`)
    inFlightIds.push(envelope.id)
  }

  const codes = await Promise.all(readers.map(reader => reader.closed.then(({ code }) => code)))
  const not1001 = codes.filter(code => code !== 1001)
  t.same(not1001, [], `all ${CLIENTS} clients got close 1001`)
  t.equal(await server.exited, 0, 'exit code 0')
  const elapsed = Date.now() - signalledAt
  t.ok(elapsed < EXIT_WITHIN_MS, `exited ${elapsed} ms after SIGTERM`)
  t.notOk(server.logs.some(line => Number(line.level) >= 50), 'nothing logged at error level')
  t.notMatch(stderr, /Unhandled|Error/, 'nothing on stderr')

  // SQLite removes the WAL file when the last connection closes cleanly; after a crash it stays.
  t.notOk(existsSync(`${dbPath}-wal`), 'the database was closed (WAL checkpointed and removed)')
  const db = new Database(dbPath, { readonly: true })
  t.teardown(() => db.close())
  t.equal(db.pragma('integrity_check', { simple: true }), 'ok')
  const stored = db.prepare('SELECT id, payload FROM events WHERE id IN (' + inFlightIds.map(() => '?').join(',') + ')').all(...inFlightIds) as Array<{ id: number, payload: string }>
  t.equal(stored.length, IN_FLIGHT, 'the in-flight events are stored')
  db.close()

  // A client that was cut off resumes after the restart and gets the events answered during the stop.
  const restarted = await startServer(env)
  t.teardown(() => { restarted.child.kill('SIGKILL') })
  const resumed = new StreamReader(restarted.wsUrl, { since: readers[0]!.lastId })
  t.teardown(() => resumed.socket.terminate())
  await resumed.opened
  t.same(resumed.violations, [])
  t.equal(resumed.lastId, Math.max(...inFlightIds), 'the resumed client has everything up to the last in-flight event')
  restarted.child.kill('SIGTERM')
  t.equal(await restarted.exited, 0)
})

/** The plugin on a Fastify whose log lines are kept, listening on 127.0.0.1. */
async function serveWithLogs (t: TestContext): Promise<{ app: FastifyInstance, wsUrl: string, logs: Array<Record<string, unknown>> }> {
  const dir = await tempDir(t)
  const logs: Array<Record<string, unknown>> = []
  const app = Fastify({ logger: { level: 'info', stream: { write: (line: string) => { logs.push(JSON.parse(line) as Record<string, unknown>) } } } })
  t.teardown(() => app.close())
  await app.register(sprintDashboard, { dbPath: path.join(dir, 'events.db'), artifactsDir: dir })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address() as net.AddressInfo
  return { app, wsUrl: `ws://127.0.0.1:${address.port}/ws`, logs }
}

t.test('an onEvent listener that throws stops neither the emitter, the other listeners nor the broadcast', async t => {
  const { app, wsUrl, logs } = await serveWithLogs(t)
  const { client } = await connect(t, wsUrl)
  const seenAfter: number[] = []
  app.events.onEvent(() => { throw new Error('listener bug') })
  app.events.onEvent(envelope => { seenAfter.push(envelope.id) })
  const first = await app.events.emit('error', { type: 'x', message: 'one' })
  const many = await app.events.emitMany([{ type: 'error', payload: { type: 'x', message: 'two' } }, { type: 'error', payload: { type: 'x', message: 'three' } }])
  t.same(seenAfter, [first.id, ...many.map(e => e.id)], 'the next listener still sees every event')
  t.same((await client.take(3)).map(e => e.id), [first.id, ...many.map(e => e.id)], 'and so do clients')
  t.equal(logs.filter(line => line.msg === 'event listener threw').length, 3, 'each failure is logged')
})

t.test('an unexpected error in a socket\'s handler closes that socket with 1011, is logged, and the others carry on', async t => {
  const { app, wsUrl, logs } = await serveWithLogs(t)
  const serverSockets: WebSocket[] = []
  const connectSocket = app.events.connect.bind(app.events)
  app.events.connect = (socket, request) => {
    serverSockets.push(socket)
    connectSocket(socket, request)
  }
  const victim = await connect(t, wsUrl)
  const bystander = await connect(t, wsUrl)
  // Fault injection: the victim's server-side socket fails when it answers a ping.
  const serverSide = serverSockets[0]!
  const send = serverSide.send.bind(serverSide)
  serverSide.send = ((data: unknown, ...rest: unknown[]) => {
    if (data === '{"type":"pong"}') throw new Error('injected send failure')
    return (send as (...args: unknown[]) => void)(data, ...rest)
  }) as typeof serverSide.send
  const victimClosed = closed(victim.client.socket)
  victim.client.socket.send('{"type":"ping"}')
  const { code, reason } = await victimClosed
  t.equal(code, 1011)
  t.equal(reason, 'internal error')
  t.ok(logs.some(line => line.msg === 'WebSocket message handler failed' && line.level === 50), 'logged at error level')
  const sent = await app.events.emit('error', { type: 'x', message: 'still serving' })
  t.equal((await bystander.client.next()).id, sent.id, 'the other client keeps receiving')
  await waitFor(() => app.events.clientCount === 1)
})

t.test('a failure while connecting a socket closes it with 1011 and the next connection works', async t => {
  const { app, wsUrl, logs } = await serveWithLogs(t)
  const getActiveBatch = app.sprintStore.getActiveBatch
  let failures = 1
  app.sprintStore.getActiveBatch = () => {
    if (failures-- > 0) throw new Error('injected store failure')
    return getActiveBatch()
  }
  const failed = new StreamReader(wsUrl)
  t.teardown(() => failed.socket.terminate())
  const { code } = await failed.closed
  t.equal(code, 1011, 'closed with 1011, not dropped')
  t.ok(logs.some(line => Number(line.level) === 50 && /connect/i.test(String(line.msg))), 'logged at error level')
  const { init } = await connect(t, wsUrl)
  t.equal(init.type, 'init', 'the next client connects normally')
  t.equal(app.events.clientCount, 1)
})

t.test('no unhandled promise rejection anywhere in this file', async t => {
  t.same(unhandled, [])
})
