import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { copyFile } from 'node:fs/promises'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import { PassThrough, Readable } from 'node:stream'
import { runCli } from '../../src/emitter/cli.ts'
import { assertStoreNotHeld, readUpstreamHistory } from '../../src/emitter/import-upstream.ts'
import { createStore } from '../../src/lib/sqlite-store.ts'
import { build, connect, listen, tempDir, type TestContext } from '../helper.ts'
import { buildUpstreamDb, endUpstreamBatch, fixtureExpectations, insertUpstreamEvents, T0 } from '../fixtures/upstream-db.ts'

interface RunResult {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs `node --import tsx src/emitter/cli.ts ...args` as a child process, as an operator would. */
async function cli (args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  const inherited: NodeJS.ProcessEnv = { ...process.env, ...env }
  if (env.SPRINT_URL === undefined) delete inherited.SPRINT_URL
  if (env.SPRINT_INGEST_TOKEN === undefined) delete inherited.SPRINT_INGEST_TOKEN
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/emitter/cli.ts', ...args], { env: inherited, stdio: 'pipe' })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  child.stdin.end()
  // A guard against a hung CLI, not a wait: the test goes on as soon as the process exits.
  const guard = setTimeout(() => child.kill('SIGKILL'), 60_000)
  const [code] = await once(child, 'close') as [number | null]
  clearTimeout(guard)
  return { code, stdout, stderr }
}

/** `runCli` in this process with captured output: the same code path as `cli`, without the cost of a process. */
async function cliInProcess (args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  let stdout = ''
  let stderr = ''
  const out = new PassThrough().on('data', (chunk: Buffer) => { stdout += chunk.toString() })
  const err = new PassThrough().on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  const code = await runCli(args, { stdin: Readable.from([]), stdout: out, stderr: err, env })
  return { code, stdout, stderr }
}

/** Exit code 0; the CLI's stderr in the message only when it is not. */
function exitedCleanly (t: Test, result: RunResult): void {
  t.equal(result.code, 0, result.code === 0 ? 'exit code 0' : `exit code ${result.code}: ${result.stderr}`)
}

async function fixture (t: TestContext): Promise<string> {
  const file = path.join(await tempDir(t, 'upstream-'), 'sprint-runner.db')
  buildUpstreamDb(file)
  return file
}

/** The batch rows a store holds after importing the fixture. */
const importedBatches = [
  { id: 1, started_at: T0, ended_at: T0 + 600_000, max_cycles: 2, cycles_completed: 2, status: 'completed', batch_mode: 'fixed' },
  { id: 2, started_at: T0 + 1_000_000, ended_at: T0 + 1_500_000, max_cycles: 'all', cycles_completed: 1, status: 'stopped', batch_mode: 'all' },
  { id: 3, started_at: T0 + 2_000_000, ended_at: null, max_cycles: 3, cycles_completed: 0, status: 'running', batch_mode: 'fixed' }
]

t.test('reads the sprint runner database into events in time order, rebuilding rows without payload_json', async (t) => {
  const file = await fixture(t)
  const history = readUpstreamHistory(file)
  const events = history.events.map(({ type, payload, timestamp }) => {
    const { upstream, ...rest } = payload as { upstream: { table: string, row: number } }
    return { type, at: timestamp - T0, from: `${upstream.table}/${upstream.row}`, payload: rest }
  })
  t.same(events, [
    { type: 'batch:start', at: 0, from: 'batches/1', payload: { batch_id: 1, max_cycles: 2, batch_mode: 'fixed' } },
    { type: 'context:create', at: 1000, from: 'events/1', payload: { status: 'starting', message: 'Creating project context (blocking)' } },
    { type: 'command:start', at: 2000, from: 'events/2', payload: { story_key: '2a-1', command: 'sprint-create-story', task_id: 'setup', message: '' } },
    { type: 'command:end', at: 60_000, from: 'events/3', payload: { story_key: '2a-1', command: 'sprint-create-story', task_id: 'setup', message: 'Story created', status: 'end' } },
    { type: 'command:start', at: 70_000, from: 'events/4', payload: { story_key: '2a-1', command: 'sprint-dev-story', task_id: 'implement', message: '' } },
    { type: 'command:end', at: 300_000, from: 'events/5', payload: { story_key: '2a-1', command: 'sprint-dev-story', task_id: 'implement', message: 'Done', status: 'success' } },
    { type: 'batch:end', at: 600_000, from: 'batches/1', payload: { batch_id: 1, cycles_completed: 2, status: 'completed' } },
    { type: 'batch:start', at: 1_000_000, from: 'batches/2', payload: { batch_id: 2, max_cycles: null, batch_mode: 'all' } },
    { type: 'context:refresh', at: 1_000_600, from: 'events/8', payload: { task_id: 1, status: 'started', message: 'Starting background context refresh' } },
    { type: 'command:start', at: 1_100_000, from: 'events/9', payload: { story_key: '2b-1', command: 'sprint-dev-story', task_id: 'implement', message: 'go', attempt: 2 } },
    { type: 'batch:end', at: 1_500_000, from: 'batches/2', payload: { batch_id: 2, cycles_completed: 1, status: 'stopped' } },
    { type: 'batch:start', at: 2_000_000, from: 'batches/3', payload: { batch_id: 3, max_cycles: 3, batch_mode: 'fixed' } },
    { type: 'command:start', at: 2_000_100, from: 'events/10', payload: { story_key: '2c-1', command: 'sprint-create-story', task_id: 'setup', message: '' } }
  ])
  t.same(history.skipped.map(row => [row.table, row.row]), fixtureExpectations.skippedRows.map(row => ['events', row]))
  t.match(history.skipped[0]!.reason, /payload_json is not JSON/)
  t.match(history.skipped[1]!.reason, /Unknown event type "mystery:event"/)

  // The identity follows the content, not the path: a copy is the same source.
  const copy = path.join(await tempDir(t), 'moved.db')
  await copyFile(file, copy)
  t.equal(readUpstreamHistory(copy).identity, history.identity)
  t.match(history.events[0]!.payload, { upstream: { db: history.identity } })
})

t.test('a file that is not a sprint runner database is refused with the reason', async (t) => {
  const dir = await tempDir(t)
  const serviceDb = path.join(dir, 'service.db')
  createStore(serviceDb).close()
  t.throws(() => readUpstreamHistory(serviceDb), { code: 'SPRINT_UPSTREAM_DB_INVALID', message: /table "events" has no column .*event_type/ })
  t.throws(() => readUpstreamHistory(path.join(dir, 'missing.db')), { code: 'SPRINT_UPSTREAM_DB_INVALID', message: /no such file/ })
  const result = await cliInProcess(['import-upstream', serviceDb, '--db', path.join(dir, 'other.db')])
  t.equal(result.code, 1)
  t.match(result.stderr, /is not a sprint runner database/)
})

t.test('--url: imports through the running service, with original times, and a second run imports nothing', async (t) => {
  const file = await fixture(t)
  const { app, url, wsUrl } = await listen(t)
  const { client } = await connect(t, wsUrl)

  const first = await cli(['import-upstream', file, '--url', url])
  exitedCleanly(t, first)
  t.equal(first.stdout, `imported ${fixtureExpectations.imported} events in 3 batches, skipped 2\n`)
  t.match(first.stderr, /events row 6 \(command:start\) skipped: payload_json is not JSON/)
  t.match(first.stderr, /events row 7 \(mystery:event\) skipped: .*Unknown event type/)
  t.notMatch(first.stderr, /\r/, 'no progress line when stderr is not a terminal')

  // Open dashboards see the history arrive, in time order with the original timestamps.
  const received = await client.take(fixtureExpectations.imported, 10_000)
  t.same(received.map(envelope => envelope.timestamp - T0),
    [0, 1000, 2000, 60_000, 70_000, 300_000, 600_000, 1_000_000, 1_000_600, 1_100_000, 1_500_000, 2_000_000, 2_000_100])
  t.same(received.map(envelope => envelope.type).slice(0, 3), ['batch:start', 'context:create', 'command:start'])
  t.same(app.sprintStore.listBatches().reverse(), importedBatches, 'the batch state follows')
  t.match(app.sprintStore.listCommands('2a-1'), [
    { command: 'sprint-create-story', status: 'end', started_at: T0 + 2000, ended_at: T0 + 60_000 },
    { command: 'sprint-dev-story', status: 'success', started_at: T0 + 70_000, ended_at: T0 + 300_000 }
  ])

  const second = await cli(['import-upstream', file, '--url', url])
  exitedCleanly(t, second)
  t.equal(second.stdout, `imported 0 events in 0 batches, skipped 2 (${fixtureExpectations.imported} already imported)\n`)
  t.equal(app.sprintStore.countEvents(), fixtureExpectations.imported, 'nothing stored twice')

  // The sprint runner goes on: batch 3 ends and logs more; the next import brings only that.
  insertUpstreamEvents(file, [{ id: 11, batch_id: 3, timestamp: T0 + 2_100_000, event_type: 'command:end', story_key: '2c-1', command: 'sprint-create-story', task_id: 'setup', status: 'end', message: 'ok', payload: null }])
  endUpstreamBatch(file, 3, T0 + 2_200_000, 1, 'completed')
  const third = await cli(['import-upstream', file], { SPRINT_URL: url })
  exitedCleanly(t, third)
  t.equal(third.stdout, `imported 2 events in 1 batches, skipped 2 (${fixtureExpectations.imported} already imported)\n`)
  t.match(app.sprintStore.getBatch(3), { status: 'completed', ended_at: T0 + 2_200_000, cycles_completed: 1 })
  t.equal(app.sprintStore.getActiveBatch(), null)
})

t.test('--url with an ingest token', async (t) => {
  const file = await fixture(t)
  const { app, url } = await listen(t, { ingestToken: 'tok' })
  const refused = await cliInProcess(['import-upstream', file, '--url', url])
  t.equal(refused.code, 1)
  t.match(refused.stderr, /401/)
  const accepted = await cliInProcess(['import-upstream', file, '--url', url], { SPRINT_INGEST_TOKEN: 'tok' })
  exitedCleanly(t, accepted)
  t.equal(app.sprintStore.countEvents(), fixtureExpectations.imported)
})

t.test('a batch the service got live is not imported again, and is not ended by the import', async (t) => {
  const file = await fixture(t)
  const { app, url } = await listen(t)
  // Batch 3 was sent live by the orchestrator (the Python emitter) after the switch.
  await app.events.emit('batch:start', { batch_id: 3, max_cycles: 3 })
  app.events.flush()
  const whileRunning = await cliInProcess(['import-upstream', file, '--url', url])
  t.equal(whileRunning.code, 1)
  t.match(whileRunning.stderr, /Batch 3 is running in the service: .*import when no batch is running/)
  t.equal(app.sprintStore.countEvents(), 1, 'nothing imported')
  t.match(app.sprintStore.getActiveBatch(), { id: 3, status: 'running' })

  await app.events.emit('batch:end', { batch_id: 3, cycles_completed: 1, status: 'completed' })
  app.events.flush()
  const result = await cliInProcess(['import-upstream', file, '--url', url])
  exitedCleanly(t, result)
  t.equal(result.stdout, `imported ${fixtureExpectations.imported - 2} events in 2 batches, skipped 2 (batch 3 already in the service)\n`)
  t.equal(app.sprintStore.countEvents(), 2 + fixtureExpectations.imported - 2)
  t.match(app.sprintStore.getBatch(3), { status: 'completed', cycles_completed: 1 }, 'the live batch keeps its own state')
})

t.test('--db: straight into the file of a stopped service, idempotent, and the service starts on it', async (t) => {
  const file = await fixture(t)
  const dbPath = path.join(await tempDir(t), 'events.db')
  createStore(dbPath).close() // a service ran here once

  const first = await cli(['import-upstream', file, '--db', dbPath])
  exitedCleanly(t, first)
  t.equal(first.stdout, `imported ${fixtureExpectations.imported} events in 3 batches, skipped 2\n`)
  const second = await cli(['import-upstream', file, '--db', dbPath])
  exitedCleanly(t, second)
  t.equal(second.stdout, `imported 0 events in 0 batches, skipped 2 (${fixtureExpectations.imported} already imported)\n`)

  const { app, wsUrl } = await listen(t, { dbPath })
  t.equal(app.sprintStore.countEvents(), fixtureExpectations.imported)
  t.same(app.sprintStore.listBatches().reverse(), importedBatches)
  const { init } = await connect(t, wsUrl)
  t.match(init.payload.batch, { id: 3, status: 'running' }, 'the dashboard opens on the batch the history left running')
  t.same(init.payload.events.map((envelope: { timestamp: number }) => envelope.timestamp - T0).slice(0, 3), [0, 1000, 2000])
})

t.test('--db refuses a file a running service holds, and says what to do', async (t) => {
  const file = await fixture(t)
  const { dbPath, app } = await build(t)
  // The service is idle: no transaction open, only its connection.
  const refused = await cli(['import-upstream', file, '--db', dbPath])
  t.equal(refused.code, 1)
  t.match(refused.stderr, /is open in a running service; import through it with --url/)
  t.equal(app.sprintStore.countEvents(), 0, 'nothing written')
  t.throws(() => assertStoreNotHeld(dbPath), { code: 'SPRINT_STORE_IN_USE' }, 'also from within the same process')

  await app.close()
  assertStoreNotHeld(dbPath)
  const accepted = await cli(['import-upstream', file, '--db', dbPath])
  exitedCleanly(t, accepted)
})

t.test('usage errors', async (t) => {
  const file = await fixture(t)
  const none = await cliInProcess(['import-upstream'])
  t.equal(none.code, 2)
  t.match(none.stderr, /needs the path of the sprint runner database/)
  const both = await cliInProcess(['import-upstream', file, '--db', 'x.db', '--url', 'http://127.0.0.1:1'])
  t.equal(both.code, 2)
  t.match(both.stderr, /not both/)
})

t.test('on a terminal, progress is shown on stderr and the summary on stdout', async (t) => {
  const file = await fixture(t)
  const dbPath = path.join(await tempDir(t), 'events.db')
  let stdout = ''
  let stderr = ''
  const out = new PassThrough().on('data', (chunk: Buffer) => { stdout += chunk.toString() })
  const err = Object.assign(new PassThrough().on('data', (chunk: Buffer) => { stderr += chunk.toString() }), { isTTY: true })
  const code = await runCli(['import-upstream', file, '--db', dbPath], { stdin: Readable.from([]), stdout: out, stderr: err, env: {} })
  t.equal(code, 0)
  t.match(stderr, `\rimport-upstream: ${fixtureExpectations.imported}/${fixtureExpectations.imported} events\n`)
  t.equal(stdout, `imported ${fixtureExpectations.imported} events in 3 batches, skipped 2\n`)
})

/** A stand-in service on a real socket, for answers the real one does not give. */
async function fakeService (t: TestContext, handler: (request: IncomingMessage, body: string, response: ServerResponse) => void): Promise<string> {
  const server = createServer((request, response) => {
    let body = ''
    request.on('data', (chunk: Buffer) => { body += chunk.toString() })
    request.on('end', () => handler(request, body, response))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => new Promise(resolve => server.close(resolve)))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

t.test('--url against a service without the import route says so', async (t) => {
  const file = await fixture(t)
  const url = await fakeService(t, (_request, _body, response) => {
    response.statusCode = 404
    response.end('{"statusCode":404,"error":"Not Found","message":"Route GET:/api/upstream-imports not found"}')
  })
  const result = await cliInProcess(['import-upstream', file, '--url', url])
  t.equal(result.code, 1)
  t.match(result.stderr, /has no GET \/api\/upstream-imports \(an older version\); update it, or stop it and import with --db/)
})

t.test('--url: events the service refuses are reported with its message, the rest are sent again', async (t) => {
  const file = await fixture(t)
  const posted: Array<Array<{ type: string, timestamp: number }>> = []
  const url = await fakeService(t, (request, body, response) => {
    response.setHeader('content-type', 'application/json')
    if (request.method === 'GET') {
      response.end(JSON.stringify({ imported: [], batches: [], running: null }))
      return
    }
    const events = JSON.parse(body) as Array<{ type: string, timestamp: number }>
    posted.push(events)
    const bad = events.findIndex(event => event.type === 'context:refresh')
    if (bad !== -1) {
      // A service of another version with a stricter rule for one type.
      response.statusCode = 400
      response.end(JSON.stringify({ statusCode: 400, code: 'SPRINT_INVALID_EVENT', error: 'Bad Request', message: 'Invalid event', details: [{ path: `/${bad}/payload/message`, message: 'Unexpected property' }] }))
      return
    }
    response.statusCode = 201
    response.end(JSON.stringify({ events: events.map((event, index) => ({ id: index + 1, type: event.type, payload: {}, timestamp: event.timestamp })) }))
  })
  const result = await cliInProcess(['import-upstream', file, '--url', url])
  exitedCleanly(t, result)
  t.equal(result.stdout, `imported ${fixtureExpectations.imported - 1} events in 3 batches, skipped 3\n`)
  t.match(result.stderr, /events row 8 \(context:refresh\) skipped: refused by the service: \/payload\/message Unexpected property/)
  t.equal(posted.length, 2, 'one request refused, then the same events without the refused one')
  t.equal(posted[1]!.length, posted[0]!.length - 1)
  t.same(posted[1]!.map(event => event.timestamp - T0), [0, 1000, 2000, 60_000, 70_000, 300_000, 600_000, 1_000_000, 1_100_000, 1_500_000, 2_000_000, 2_000_100],
    'each event carries its original time')
})
