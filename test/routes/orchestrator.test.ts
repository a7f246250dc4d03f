import t from 'tap'
import { chmod, readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'
import type { Envelope, EventTypeName } from '../../src/events/schemas.ts'
import type { OrchestratorOptions } from '../../src/options.ts'
import { build, listen, tempDir, waitFor, type TestContext } from '../helper.ts'
import { isRunning, waitUntilGone } from '../fixtures/processes.ts'

const fakeOrchestrator = fileURLToPath(new URL('../fixtures/fake-orchestrator.mjs', import.meta.url))

async function request (url: string, method: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number, body: any, headers: Headers }> {
  const response = await fetch(url, {
    method,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body)
  })
  const text = await response.text()
  return { status: response.status, body: text === '' ? undefined : JSON.parse(text), headers: response.headers }
}

/** Resolves with the next event of `type` (that `matches`, if given); subscribe before the action that causes it. */
function nextEvent<T extends EventTypeName> (app: FastifyInstance, type: T, matches: (envelope: Envelope<T>) => boolean = () => true, timeoutMs = 10_000): Promise<Envelope<T>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { unsubscribe(); reject(new Error(`no ${type} within ${timeoutMs} ms`)) }, timeoutMs)
    const unsubscribe = app.events.onEvent(envelope => {
      if (envelope.type !== type || !matches(envelope as Envelope<T>)) return
      clearTimeout(timer)
      unsubscribe()
      resolve(envelope as Envelope<T>)
    })
  })
}

/** A listening service whose orchestrator is the fake one in `mode`, recording what it was started with. */
async function withFake (t: TestContext, mode: string, orchestrator: Partial<OrchestratorOptions> = {}, options: { ingestToken?: string } = {}) {
  const dir = await tempDir(t)
  const record = path.join(dir, 'record.json')
  const server = await listen(t, {
    ...options,
    orchestrator: {
      command: [process.execPath, fakeOrchestrator, mode, '{batch_size}'],
      env: { FAKE_ORCHESTRATOR_RECORD: record, FAKE_EXTRA: 'from options.env' },
      ...orchestrator
    }
  })
  const api = (route: string) => `${server.url}/api/orchestrator/${route}`
  return {
    ...server,
    record: async () => JSON.parse(await readFile(record, 'utf8')),
    start: (body: unknown = { batch_size: 2 }, headers?: Record<string, string>) => request(api('start'), 'POST', body, headers),
    stop: (headers?: Record<string, string>) => request(api('stop'), 'POST', undefined, headers),
    status: async () => (await request(api('status'), 'GET')).body,
    output: async (after = 0) => (await request(api(`output?after=${after}`), 'GET')).body,
    /** Resolves with the first output line matching `pattern`. */
    async outputLine (pattern: RegExp): Promise<string> {
      let found: string | undefined
      await waitFor(() => {
        found = server.app.orchestrator.output(0).lines.find(line => pattern.test(line.text))?.text
        return found !== undefined
      }, 10_000)
      return found!
    }
  }
}

t.test('no orchestrator configured: 501 on start, status says so, stop has nothing to stop', async t => {
  const { url } = await listen(t)
  const start = await request(`${url}/api/orchestrator/start`, 'POST', { batch_size: 2 })
  t.equal(start.status, 501)
  t.match(start.body, { code: 'SPRINT_ORCHESTRATOR_NOT_CONFIGURED', message: /SPRINT_ORCHESTRATOR_CMD/ })
  const status = await request(`${url}/api/orchestrator/status`, 'GET')
  t.match(status.body, { configured: false, status: 'idle', pid: null, last_exit: null, last_batch: null, current_stories: [] })
  const stop = await request(`${url}/api/orchestrator/stop`, 'POST')
  t.equal(stop.status, 409)
  t.equal(stop.body.code, 'SPRINT_ORCHESTRATOR_NOT_RUNNING')
})

t.test('start: 202, argv and environment as configured, events, status; a second start is 409', async t => {
  const fake = await withFake(t, 'obedient')
  const started = nextEvent(fake.app, 'orchestrator:start')
  const reply = await fake.start({ batch_size: 2 })
  t.equal(reply.status, 202)
  t.match(reply.body, { status: 'started', batch_size: 2, pid: Number })
  t.match((await started).payload, { pid: reply.body.pid, batch_size: 2 })
  await fake.outputLine(/^ready 2$/)
  t.same(await fake.record(), {
    argv: ['obedient', '2'],
    pid: reply.body.pid,
    env: { SPRINT_BATCH_SIZE: '2', SPRINT_URL: fake.url, FAKE_EXTRA: 'from options.env' }
  }, '{batch_size} substituted; SPRINT_URL, SPRINT_BATCH_SIZE and options.env passed; no token when none is set')
  t.match(await fake.status(), { configured: true, status: 'running', pid: reply.body.pid, batch_size: 2, started_at: Number, batch_id: null })

  const again = await fake.start({ batch_size: 'all' })
  t.equal(again.status, 409)
  t.match(again.body, { code: 'SPRINT_ORCHESTRATOR_RUNNING', message: /already running/ })

  const output = await fake.output()
  t.same(output.lines.map((line: { n: number }) => line.n), output.lines.map((_line: unknown, index: number) => index + 1), 'lines come numbered from 1')
  t.equal(output.next, output.lines.length)
  t.ok(output.lines.some((line: any) => line.stream === 'stdout' && line.text === 'ready 2'))
  t.ok(output.lines.some((line: any) => line.stream === 'stderr' && line.text === 'a warning on stderr'))
  t.same((await fake.output(output.next)).lines, [], 'nothing after the last line')
})

t.test('stop: 202 stopping, the stop signal to the orchestrator, exit 0, then start works again', async t => {
  const fake = await withFake(t, 'obedient')
  const { body: { pid } } = await fake.start({ batch_size: 'all' })
  await fake.outputLine(/^ready all$/)
  t.equal((await fake.record()).env.SPRINT_BATCH_SIZE, 'all')
  const stopping = nextEvent(fake.app, 'orchestrator:stopping')
  const exited = nextEvent(fake.app, 'orchestrator:exit')
  const stop = await fake.stop()
  t.equal(stop.status, 202)
  t.same(stop.body, { status: 'stopping' })
  t.same((await stopping).payload, { pid, signal: 'SIGINT' })
  const exit = (await exited).payload
  t.match(exit, { pid, code: 0, signal: null, duration_ms: Number })
  await waitFor(() => fake.app.orchestrator.pid === null)
  t.match(await fake.status(), { status: 'idle', pid: null, last_exit: { code: 0, signal: null, at: Number, duration_ms: exit.duration_ms, stop_requested: true } })
  await fake.outputLine(/^SIGINT: finishing/)
  t.equal((await fake.stop()).status, 409, 'nothing left to stop')
  const restarted = await fake.start({ batch_size: 1 })
  t.equal(restarted.status, 202)
  t.not(restarted.body.pid, pid)
})

t.test('start while stopping: 409', async t => {
  const fake = await withFake(t, 'stubborn', { killAfterMs: 500 })
  await fake.start()
  await fake.outputLine(/^pids /)
  t.equal((await fake.stop()).body.status, 'stopping')
  const again = await fake.start()
  t.equal(again.status, 409)
  t.match(again.body, { code: 'SPRINT_ORCHESTRATOR_RUNNING', message: /stopping/ })
  t.equal((await fake.status()).status, 'stopping')
})

t.test('bad batch sizes: 400 with the field path, nothing spawned', async t => {
  const fake = await withFake(t, 'obedient')
  const cases: Array<[string, unknown, string]> = [
    ['0', { batch_size: 0 }, '/batch_size'],
    ['-1', { batch_size: -1 }, '/batch_size'],
    ['1.5', { batch_size: 1.5 }, '/batch_size'],
    ['"10"', { batch_size: '10' }, '/batch_size'],
    ['"ALL; rm -rf /"', { batch_size: 'ALL; rm -rf /' }, '/batch_size'],
    ['1001', { batch_size: 1001 }, '/batch_size'],
    ['missing', {}, '/batch_size'],
    ['null', { batch_size: null }, '/batch_size'],
    ['"ALL"', { batch_size: 'ALL' }, '/batch_size'],
    ['an extra key', { batch_size: 2, command: 'sh' }, '/command'],
    ['an array', [2], '']
  ]
  for (const [name, body, detailPath] of cases) {
    const reply = await fake.start(body)
    t.equal(reply.status, 400, name)
    t.equal(reply.body.code, 'SPRINT_INVALID_BATCH_SIZE', name)
    t.ok(reply.body.details.some((detail: { path: string }) => detail.path === detailPath), `${name}: details name ${detailPath || 'the body'}`)
  }
  const noBody = await request(`${fake.url}/api/orchestrator/start`, 'POST')
  t.equal(noBody.status, 400, 'no body at all')
  t.equal(fake.app.orchestrator.pid, null)
  await t.rejects(fake.record(), { code: 'ENOENT' }, 'the orchestrator never ran')
})

t.test('spawn failures: 500 naming the command and the OS error', async t => {
  const dir = await tempDir(t)
  const notExecutable = path.join(dir, 'orchestrator.py')
  await writeFile(notExecutable, '#!/usr/bin/env python3\nprint("hi")\n')
  await chmod(notExecutable, 0o644)
  const missing = path.join(dir, 'no-such-orchestrator')
  for (const [command, osError] of [[missing, 'ENOENT'], [notExecutable, 'EACCES']] as const) {
    const { url, app } = await listen(t, { orchestrator: { command: [command, '{batch_size}'] } })
    const reply = await request(`${url}/api/orchestrator/start`, 'POST', { batch_size: 3 })
    t.equal(reply.status, 500, osError)
    t.equal(reply.body.code, 'SPRINT_ORCHESTRATOR_SPAWN_FAILED')
    t.match(reply.body.message, command, 'names the command')
    t.match(reply.body.message, osError, 'and the OS error')
    t.match(await (await fetch(`${url}/api/orchestrator/status`)).json(), { status: 'idle', pid: null })
    t.equal(app.orchestrator.pid, null)
  }
  const { url } = await listen(t, { orchestrator: { command: [process.execPath, fakeOrchestrator, 'obedient'], cwd: path.join(dir, 'gone') } })
  const reply = await request(`${url}/api/orchestrator/start`, 'POST', { batch_size: 3 })
  t.equal(reply.status, 500)
  t.match(reply.body.message, /working directory .*gone does not exist/)
})

t.test('stop escalation against an orchestrator that ignores SIGINT: SIGTERM, then SIGKILL to the group', async t => {
  const killAfterMs = 700
  const fake = await withFake(t, 'stubborn', { killAfterMs })
  await fake.start()
  const pids = (await fake.outputLine(/^pids /)).split(' ').slice(1).map(Number)
  t.equal(pids.length, 2)
  t.equal((await fake.stop()).body.status, 'stopping')
  await fake.outputLine(/ignoring SIGINT/)
  t.ok(pids.every(isRunning), 'SIGINT alone does not stop it')
  const exited = nextEvent(fake.app, 'orchestrator:exit')
  const stopping = nextEvent(fake.app, 'orchestrator:stopping')
  const forced = await fake.stop()
  const forcedAt = Date.now()
  t.equal(forced.status, 202)
  t.same(forced.body, { status: 'killing' })
  t.same((await stopping).payload, { pid: pids[0], signal: 'SIGTERM' })
  const gone = await waitUntilGone(pids, killAfterMs + 1000)
  t.ok(Date.now() - forcedAt >= killAfterMs - 50, `SIGKILL waited for killAfterMs (gone after ${gone} ms)`)
  t.match((await exited).payload, { pid: pids[0], code: null, signal: 'SIGKILL' })
  await waitFor(() => fake.app.orchestrator.pid === null)
  t.match(await fake.status(), { status: 'idle', last_exit: { signal: 'SIGKILL' } })
})

t.test('a third stop kills the group at once', async t => {
  const fake = await withFake(t, 'stubborn', { killAfterMs: 60_000 })
  await fake.start()
  const pids = (await fake.outputLine(/^pids /)).split(' ').slice(1).map(Number)
  await fake.stop()
  t.equal((await fake.stop()).body.status, 'killing')
  t.equal((await fake.stop()).body.status, 'killing')
  await waitUntilGone(pids, 2000)
})

t.test('NDJSON events on stdout are ingested; other lines are output; a batch left running is ended as stopped', async t => {
  const fake = await withFake(t, 'report')
  const cycle = nextEvent(fake.app, 'cycle:start')
  const { body: { pid } } = await fake.start({ batch_size: 2 })
  t.same((await cycle).payload, { cycle_number: 1, story_keys: ['1-1-login', '1-2-logout'] })
  await fake.outputLine(/^reported$/)
  t.match(await fake.status(), { status: 'running', pid, batch_id: 7, cycles_completed: 0, max_cycles: 2, current_stories: ['1-1-login', '1-2-logout'] })
  const texts = (await fake.output()).lines.map((line: { text: string }) => line.text)
  t.same(texts, ['{"progress": "not an event"}', '{"type":"cycle:end","payload":{"cycle_number":"one"}}', 'reported'],
    'a JSON line that is no event, and an invalid event, stay output; valid events do not')
  t.notOk(fake.app.sprintStore.getRecentEvents(50).some(envelope => envelope.type === 'cycle:end'), 'the invalid event was not stored')

  const ended = nextEvent(fake.app, 'batch:end')
  const exited = nextEvent(fake.app, 'orchestrator:exit')
  await fake.stop()
  t.match((await exited).payload, { code: 0 })
  t.same((await ended).payload, { batch_id: 7, cycles_completed: 0, status: 'stopped' }, 'ended by the service, as stopped after a stop request')
  t.match(fake.app.sprintStore.getBatch(7), { status: 'stopped' })
})

t.test('a crash: exit 1, the batch ended as error, the exit in the status', async t => {
  const fake = await withFake(t, 'crash')
  const ended = nextEvent(fake.app, 'batch:end')
  const exited = nextEvent(fake.app, 'orchestrator:exit')
  await fake.start({ batch_size: 'all' })
  t.match((await exited).payload, { code: 1, signal: null })
  t.same((await ended).payload, { batch_id: 9, cycles_completed: 0, status: 'error' })
  await waitFor(() => fake.app.orchestrator.pid === null)
  t.match(await fake.status(), { status: 'idle', last_exit: { code: 1, stop_requested: false }, last_batch: { id: 9, status: 'error', max_cycles: 'all' } })
  t.ok((await fake.output()).lines.some((line: any) => line.stream === 'stderr' && /Traceback/.test(line.text)))
})

t.test('a batch left running with nothing running: stop answers 200 cleaned, and start is refused until then', async t => {
  const fake = await withFake(t, 'obedient')
  fake.app.events.emit('batch:start', { batch_id: 41, max_cycles: 3 })
  fake.app.events.emit('cycle:end', { cycle_number: 1, completed_stories: ['1-1'] })
  t.match(await fake.status(), { status: 'running', pid: null, batch_id: 41, cycles_completed: 1, max_cycles: 3 },
    'the status of an orchestrator this service did not start, from the store')
  const refused = await fake.start()
  t.equal(refused.status, 409)
  t.match(refused.body.message, /Batch 41 is still running/)
  const ended = nextEvent(fake.app, 'batch:end')
  const stop = await fake.stop()
  t.equal(stop.status, 200)
  t.same(stop.body, { status: 'cleaned', batch_id: 41 })
  t.same((await ended).payload, { batch_id: 41, cycles_completed: 1, status: 'stopped' })
  t.match(await fake.status(), { status: 'idle', batch_id: null, last_batch: { id: 41, status: 'stopped' } })
  t.equal((await fake.stop()).status, 409)
  t.equal((await fake.start()).status, 202)
})

t.test('app.close() stops the orchestrator and leaves no process of its group behind', async t => {
  const fake = await withFake(t, 'stubborn', { killAfterMs: 1000 })
  await fake.start()
  const pids = (await fake.outputLine(/^pids /)).split(' ').slice(1).map(Number)
  const exited = nextEvent(fake.app, 'orchestrator:exit')
  const closing = Date.now()
  await fake.app.close()
  t.ok(Date.now() - closing < 10_000, `closed in ${Date.now() - closing} ms`)
  t.same(pids.filter(isRunning), [], 'every pid of the group is gone')
  t.match((await exited).payload, { signal: 'SIGKILL' })
})

t.test('app.close() lets an obedient orchestrator stop by itself', async t => {
  const fake = await withFake(t, 'obedient')
  const { body: { pid } } = await fake.start()
  await fake.outputLine(/^ready/)
  const exited = nextEvent(fake.app, 'orchestrator:exit')
  await fake.app.close()
  t.match((await exited).payload, { pid, code: 0, signal: null })
  t.notOk(isRunning(pid))
})

t.test('with a token: the child gets it, start and stop need it', async t => {
  const fake = await withFake(t, 'obedient', {}, { ingestToken: 'orchestrator-token' })
  const refused = await fake.start()
  t.equal(refused.status, 401)
  t.equal(refused.body.code, 'SPRINT_INGEST_UNAUTHORIZED')
  t.match(refused.body.message, 'POST /api/orchestrator/start')
  t.equal((await fake.stop()).status, 401)
  const auth = { authorization: 'Bearer orchestrator-token' }
  t.equal((await fake.start({ batch_size: 2 }, auth)).status, 202)
  await fake.outputLine(/^ready/)
  t.equal((await fake.record()).env.SPRINT_INGEST_TOKEN, 'orchestrator-token')
  t.equal((await fake.stop(auth)).status, 202)
})

t.test('under a prefix, SPRINT_URL includes it', async t => {
  const dir = await tempDir(t)
  const record = path.join(dir, 'record.json')
  const { url, app } = await listen(t, {
    prefix: '/sprint',
    orchestrator: { command: [process.execPath, fakeOrchestrator, 'obedient', '{batch_size}'], env: { FAKE_ORCHESTRATOR_RECORD: record } }
  })
  const reply = await request(`${url}/api/orchestrator/start`, 'POST', { batch_size: 5 })
  t.equal(reply.status, 202)
  await waitFor(() => app.orchestrator.output(0).lines.length > 0, 10_000)
  t.match(JSON.parse(await readFile(record, 'utf8')).env.SPRINT_URL, /^http:\/\/127\.0\.0\.1:\d+\/sprint$/)
})

t.test('options are checked at registration', async t => {
  const cases: Array<[OrchestratorOptions, RegExp]> = [
    [{ command: [] }, /orchestrator\.command/],
    [{ command: 'python3 orchestrator.py' as never }, /orchestrator\.command/],
    [{ command: ['', 'x'] }, /orchestrator\.command/],
    [{ command: ['node', 'a\0b'] }, /orchestrator\.command/],
    [{ command: ['node'], stopSignal: 'SIGNOPE' as never }, /orchestrator\.stopSignal/],
    [{ command: ['node'], killAfterMs: 0 }, /orchestrator\.killAfterMs/],
    [{ command: ['node'], env: { A: 1 } as never }, /orchestrator\.env/],
    [{ command: ['node'], cwd: '' }, /orchestrator\.cwd/]
  ]
  for (const [orchestrator, message] of cases) {
    await t.rejects(build(t, { orchestrator }), { code: 'SPRINT_INVALID_OPTION', message })
  }
})
