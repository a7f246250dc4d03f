import t from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createServer } from 'node:net'
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { createInterface } from 'node:readline'
import path from 'node:path'
import { PassThrough, Readable } from 'node:stream'
import { runCli } from '../../src/emitter/cli.ts'
import { runExec } from '../../src/emitter/exec.ts'
import { createEventClient } from '../../src/emitter/client.ts'
import { connect, listen, tempDir, type TestClient } from '../helper.ts'
import { devStoryMetrics, readFixtureLines } from '../fixtures/fake-agent.ts'

interface RunResult {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs `node --import tsx src/emitter/cli.ts ...args` as a child process, the way an orchestrator would. */
async function cli (args: string[], options: { stdin?: string, env?: Record<string, string> } = {}): Promise<RunResult> {
  const env: NodeJS.ProcessEnv = { ...process.env, ...options.env }
  if (options.env?.SPRINT_URL === undefined) delete env.SPRINT_URL
  if (options.env?.SPRINT_INGEST_TOKEN === undefined) delete env.SPRINT_INGEST_TOKEN
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/emitter/cli.ts', ...args], { env, stdio: 'pipe' })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  child.stdin.end(options.stdin ?? '')
  // A guard against a hung CLI, not a wait: the test continues as soon as the process exits.
  const guard = setTimeout(() => child.kill('SIGKILL'), 60_000)
  const [code] = await once(child, 'close') as [number | null]
  clearTimeout(guard)
  return { code, stdout, stderr }
}

/** `runCli` in this process with captured output, for cases that never reach the network. */
async function cliInProcess (args: string[], stdin = ''): Promise<RunResult> {
  const capture = () => {
    const stream = new PassThrough()
    let text = ''
    stream.on('data', (chunk: Buffer) => { text += chunk.toString() })
    return { stream, text: () => text }
  }
  const stdout = capture()
  const stderr = capture()
  const code = await runCli(args, { stdin: Readable.from(stdin === '' ? [] : [Buffer.from(stdin)]), stdout: stdout.stream, stderr: stderr.stream, env: {} })
  return { code, stdout: stdout.text(), stderr: stderr.text() }
}

/** Receives envelopes until one matches `last`. */
async function receiveUntil (client: TestClient, last: (envelope: any) => boolean): Promise<any[]> {
  const received: any[] = []
  for (;;) {
    const envelope = await client.next(30_000)
    received.push(envelope)
    if (last(envelope)) return received
  }
}

const fakeAgent = ['node', '--import', 'tsx', 'test/fixtures/fake-agent.ts']

// Most cases start real processes (the CLI, and for exec the agent too); on a loaded machine their
// start-up, not the code under test, dominates, so this file gets more than the default 120 s.
t.setTimeout(300_000)

t.test('emit <type> --json prints the stored id', async (t) => {
  const { url, wsUrl } = await listen(t)
  const { client } = await connect(t, wsUrl)
  const result = await cli(['emit', 'batch:start', '--json', '{"batch_id":7,"max_cycles":2}', '--url', url])
  t.equal(result.code, 0, result.stderr)
  const envelope = await client.next()
  t.match(envelope, { type: 'batch:start', payload: { batch_id: 7, max_cycles: 2 } })
  t.equal(result.stdout, `${envelope.id}\n`)
})

t.test('emit: the service\'s validation message and a non-zero exit on bad input', async (t) => {
  const { app, url } = await listen(t)
  const result = await cli(['emit', 'batch:start', '--json', '{"batch_id":"seven","max_cycles":2}', '--url', url])
  t.equal(result.code, 1)
  t.equal(result.stdout, '')
  t.match(result.stderr, 'SPRINT_INVALID_EVENT')
  t.match(result.stderr, '/payload/batch_id: Expected integer')

  const unknown = await cli(['emit', 'batch:begin', '--json', '{}', '--url', url])
  t.equal(unknown.code, 1)
  t.match(unknown.stderr, /Unknown event type "batch:begin"/)

  const notJson = await cliInProcess(['emit', 'batch:start', '--json', '{batch_id:1}', '--url', url])
  t.equal(notJson.code, 1)
  t.match(notJson.stderr, '--json: not JSON')
  t.equal(app.events.lastEventId, 0, 'nothing was stored')
})

t.test('usage errors exit with 2', async (t) => {
  const spawned = await cli([])
  t.equal(spawned.code, 2)
  t.match(spawned.stderr, 'Usage:')
  const help = await cli(['--help'])
  t.equal(help.code, 0)
  t.match(help.stdout, 'sprint-dashboard exec --story')

  // The rest in-process: the same runCli the entry point calls, without a process start per case.
  for (const args of [['emit'], ['emit', 'batch:start'], ['emit', 'batch:start', '--jsn', '{}'], ['frobnicate'],
    ['emit', '--file', 'a.ndjson', '--json', '{}'], ['log-csv', 'extra'],
    ['exec', '--story', '1-1', '--command', 'dev-story'], ['exec', '--command', 'dev-story', '--', 'true'],
    ['exec', '--story', '1-1', '--', 'true'], ['exec', '--story', '1-1', '--command', 'x', 'true'],
    ['emit', 'x', '--json', '{}', '--url', 'not a url'], ['serve', 'extra'], ['serve', '--url', 'http://127.0.0.1:1'], ['serve', '--port', 'eighty']]) {
    const result = await cliInProcess(args)
    t.equal(result.code, 2, `cli.ts ${args.join(' ')}`)
    t.match(result.stderr, 'Usage:')
  }
})

t.test('serve runs the standalone service, the options over the environment, until SIGTERM', async (t) => {
  const dir = await tempDir(t)
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/emitter/cli.ts', 'serve', '--host', '127.0.0.1', '--port', '0', '--db', path.join(dir, 'served.db')], {
    env: { ...process.env, PORT: '1', SPRINT_DB: path.join(dir, 'not-this.db'), SPRINT_ARTIFACTS_DIR: dir, SPRINT_WATCH: '0', LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const exited = once(child, 'exit')
  t.teardown(() => { child.kill('SIGKILL') })
  const ready = await new Promise<{ dashboard: string }>((resolve, reject) => {
    let stderr = ''
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
    const guard = setTimeout(() => reject(new Error(`not ready within 30 s; stderr: ${stderr}`)), 30_000)
    createInterface({ input: child.stdout }).on('line', (line) => {
      let entry: { dashboard?: unknown }
      try { entry = JSON.parse(line) } catch { return }
      if (typeof entry.dashboard === 'string') {
        clearTimeout(guard)
        resolve(entry as { dashboard: string })
      }
    })
  })
  t.match(ready.dashboard, /^http:\/\/127\.0\.0\.1:\d+\/$/, '--port 0 won over PORT=1')
  const health = await (await fetch(new URL('api/health', ready.dashboard))).json()
  t.match(health, { status: 'ok' })
  t.ok(existsSync(path.join(dir, 'served.db')) && !existsSync(path.join(dir, 'not-this.db')), '--db won over SPRINT_DB')
  child.kill('SIGTERM')
  t.same(await exited, [0, null], 'stops cleanly on SIGTERM')
})

t.test('serve: a bad variable is refused by name before anything starts', async (t) => {
  const stderr = new PassThrough()
  let text = ''
  stderr.on('data', (chunk: Buffer) => { text += chunk.toString() })
  const code = await runCli(['serve'], { stdin: Readable.from([]), stdout: new PassThrough(), stderr, env: { PORT: 'eighty' } })
  t.equal(code, 1)
  t.match(text, 'serve: Environment variable PORT must be a non-negative integer, got "eighty"')
})

t.test('emit --file posts every line; SPRINT_URL and SPRINT_INGEST_TOKEN from the environment', async (t) => {
  const { url, wsUrl } = await listen(t, { ingestToken: 'file-token' })
  const dir = await tempDir(t)
  const file = path.join(dir, 'events.ndjson')
  const events = [
    { type: 'batch:start', payload: { batch_id: 1, max_cycles: 1 } },
    { type: 'cycle:start', payload: { cycle_number: 1, story_keys: ['1-1'] } },
    { type: 'cycle:end', payload: { cycle_number: 1, completed_stories: ['1-1'] } }
  ]
  await writeFile(file, events.map((event) => JSON.stringify(event)).join('\n') + '\n\n')

  const unauthorized = await cli(['emit', '--file', file], { env: { SPRINT_URL: url } })
  t.equal(unauthorized.code, 1)
  t.match(unauthorized.stderr, 'SPRINT_INGEST_UNAUTHORIZED')

  const { client } = await connect(t, wsUrl)
  const result = await cli(['emit', '--file', file], { env: { SPRINT_URL: url, SPRINT_INGEST_TOKEN: 'file-token' } })
  t.equal(result.code, 0, result.stderr)
  const received = await client.take(3)
  t.same(received.map((envelope) => envelope.type), events.map((event) => event.type))
  t.equal(result.stdout, received.map((envelope) => `${envelope.id}\n`).join(''))

  const fromStdin = await cli(['emit', '--file', '-', '--url', url, '--token', 'file-token'], { stdin: JSON.stringify(events[0]) })
  t.equal(fromStdin.code, 0, fromStdin.stderr)
  t.equal((await client.next()).type, 'batch:start')
})

t.test('emit --file with a broken line sends nothing', async (t) => {
  const { app, url } = await listen(t)
  const result = await cliInProcess(['emit', '--file', '-', '--url', url],
    '{"type":"batch:start","payload":{"batch_id":1,"max_cycles":1}}\n{"type": oops}\n')
  t.equal(result.code, 1)
  t.match(result.stderr, 'stdin:2: not JSON')
  t.equal(app.events.lastEventId, 0)
  const missing = await cliInProcess(['emit', '--file', path.join(await tempDir(t), 'nope.ndjson'), '--url', url])
  t.equal(missing.code, 1)
  t.match(missing.stderr, 'ENOENT')
})

t.test('log-csv turns task-log lines into command:start / command:end, skipping malformed lines with a warning', async (t) => {
  const { url, wsUrl } = await listen(t)
  const { client } = await connect(t, wsUrl)
  const input = [
    'timestamp,epicID,storyID,command,task-id,status,message',
    '1732630000,2a,2a-1,dev-story,implement,start,"Implementing the parser, step 1"',
    'this is not a task-log line',
    '1732630001,2a,2a-1,dev-story,implement',
    '',
    '1732630002,2a,2a-1,dev-story,tests,start,',
    '2025-11-26T10:00:03Z,2a,2a-1,dev-story,tests,failed,"1 failing"',
    '1732630004,2a,2a-1,dev-story,implement,success,"Done"'
  ].join('\n') + '\n'
  const result = await cli(['log-csv', '--url', url], { stdin: input })
  t.equal(result.code, 0, result.stderr)
  t.match(result.stderr, /line 3 skipped: expected 7 fields/)
  t.match(result.stderr, /line 4 skipped: expected 7 fields, got 5/)
  t.notMatch(result.stderr, /line 1 /, 'the header is skipped silently')
  t.equal(result.stderr.trim().split('\n').length, 2)
  const received = await client.take(7)
  const ids = { story_key: '2a-1', command: 'dev-story' }
  t.same(received.map((envelope) => ({ type: envelope.type, payload: envelope.payload })), [
    { type: 'command:start', payload: { ...ids, task_id: 'implement' } },
    { type: 'command:progress', payload: { ...ids, task_id: 'implement', message: 'Implementing the parser, step 1' } },
    { type: 'command:start', payload: { ...ids, task_id: 'tests' } },
    { type: 'command:progress', payload: { ...ids, task_id: 'tests', message: '1 failing' } },
    { type: 'command:end', payload: { ...ids, task_id: 'tests', status: 'failed' } },
    { type: 'command:progress', payload: { ...ids, task_id: 'implement', message: 'Done' } },
    { type: 'command:end', payload: { ...ids, task_id: 'implement', status: 'success' } }
  ])
})

t.test('log-csv exits non-zero with the message when the service refuses', async (t) => {
  const { url } = await listen(t, { ingestToken: 'x' })
  const result = await cli(['log-csv', '--url', url], { stdin: '1732630000,2a,2a-1,dev-story,implement,start,"go"\n' })
  t.equal(result.code, 1)
  t.match(result.stderr, 'SPRINT_INGEST_UNAUTHORIZED')
})

t.test('exec bridges a successful agent run', async (t) => {
  const { url, wsUrl } = await listen(t)
  const { client } = await connect(t, wsUrl)
  const vars = { story_key: '2a-1', epic: '2a', command: 'dev-story' }
  const result = await cli(['exec', '--story', '2a-1', '--command', 'dev-story', '--url', url, '--',
    ...fakeAgent, 'dev-story', '--delay-ms', '0', '--var', 'story_key=2a-1', '--var', 'epic=2a', '--var', 'command=dev-story'])
  t.equal(result.code, 0, result.stderr)
  t.equal(result.stdout, readFixtureLines('dev-story', vars).join('\n') + '\n', 'the agent output passes through unchanged')
  t.equal(result.stderr, '')

  const received = await receiveUntil(client, (envelope) => envelope.type === 'command:end' && envelope.payload.task_id === 'dev-story')
  const own = { story_key: '2a-1', command: 'dev-story', task_id: 'dev-story' }
  t.same(received[0].payload, own, 'command:start comes first')
  t.equal(received[0].type, 'command:start')
  t.same(received.filter((envelope) => envelope.type !== 'command:progress').map((envelope) => `${envelope.type} ${envelope.payload.task_id} ${envelope.payload.status ?? ''}`.trim()), [
    'command:start dev-story',
    'command:start tests',
    'command:end tests success',
    'command:start implement',
    'command:end implement success',
    'command:end dev-story success'
  ], 'task-log lines in tool results become their own tasks')

  const ownProgress = received.filter((envelope) => envelope.type === 'command:progress' && envelope.payload.task_id === 'dev-story')
  t.ok(ownProgress.length >= 1)
  t.ok(ownProgress.length < 12, `a burst of 17 progress lines was coalesced to ${ownProgress.length}`)
  t.equal(ownProgress.at(-1).payload.message, 'Implementation complete: 3 tests pass. Story 2a-1 is ready for review.',
    'the last progress line of the run is never dropped')
  const end = received.at(-1)
  t.same(end.payload, {
    ...own,
    status: 'success',
    metrics: { ...devStoryMetrics, exit_code: 0 }
  })
})

t.test('exec: a failing agent, malformed output, the exit code passed through', async (t) => {
  const { url, wsUrl } = await listen(t)
  const { client } = await connect(t, wsUrl)
  const result = await cli(['exec', '--story', '2a-2', '--command', 'dev-story', '--task-id', 'implement-all', '--url', url, '--',
    ...fakeAgent, 'error-run', '--delay-ms', '1', '--exit-code', '3', '--var', 'story_key=2a-2', '--var', 'epic=2a', '--var', 'command=dev-story'])
  t.equal(result.code, 3, 'the agent\'s exit code')
  t.match(result.stderr, 'exec: skipped 3 malformed line(s) of agent output')
  const received = await receiveUntil(client, (envelope) => envelope.type === 'command:end' && envelope.payload.task_id === 'implement-all')
  t.match(received.at(-1).payload, { story_key: '2a-2', task_id: 'implement-all', status: 'error', metrics: { exit_code: 3, num_turns: 5 } })
  t.ok(received.some((envelope) => envelope.type === 'command:end' && envelope.payload.task_id === 'implement' && envelope.payload.status === 'failed'))
  const messages = received.filter((envelope) => envelope.type === 'command:progress').map((envelope) => envelope.payload.message)
  t.ok(messages.includes('Agent error: Could not build: typescript is not installed.'), 'the error result is shown last')
})

t.test('exec: an is_error result fails the command even with exit code 0', async (t) => {
  const { url, wsUrl } = await listen(t)
  const { client } = await connect(t, wsUrl)
  const result = await cli(['exec', '--story', '2a-2', '--command', 'dev-story', '--url', url, '--', ...fakeAgent, 'error-run', '--delay-ms', '0'])
  t.equal(result.code, 0)
  const received = await receiveUntil(client, (envelope) => envelope.type === 'command:end' && envelope.payload.task_id === 'dev-story')
  t.match(received.at(-1).payload, { status: 'error', metrics: { exit_code: 0 } })
})

t.test('exec: a command that does not exist', async (t) => {
  const { url, wsUrl } = await listen(t)
  const { client } = await connect(t, wsUrl)
  const result = await cli(['exec', '--story', '1-1', '--command', 'dev-story', '--url', url, '--', 'definitely-not-an-agent-binary', '-p'])
  t.equal(result.code, 127)
  const received = await client.take(3)
  t.same(received.map((envelope) => envelope.type), ['command:start', 'command:progress', 'command:end'])
  t.match(received[1].payload.message, /^Could not start definitely-not-an-agent-binary: /)
  t.match(received[2].payload, { status: 'error', metrics: { exit_code: 127 } })
})

t.test('exec: SIGTERM is forwarded to the agent and reported as its exit', async (t) => {
  const { url, wsUrl } = await listen(t)
  const { client } = await connect(t, wsUrl)
  // An agent that says hello and then works until it is stopped.
  const agent = 'process.stdout.write(JSON.stringify({ type: "system", subtype: "init", model: "m" }) + "\\n"); setInterval(() => {}, 1000)'
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/emitter/cli.ts', 'exec', '--story', '1-1', '--command', 'dev-story', '--url', url, '--',
    process.execPath, '-e', agent], { stdio: ['ignore', 'ignore', 'pipe'] })
  const guard = setTimeout(() => child.kill('SIGKILL'), 60_000)
  t.teardown(() => clearTimeout(guard))
  const exited = once(child, 'exit') as Promise<[number | null, string | null]>
  await receiveUntil(client, (envelope) => envelope.type === 'command:progress' && envelope.payload.message === 'Agent session started (m)')
  child.kill('SIGTERM')
  const [code, signal] = await exited
  t.equal(signal, null, 'exec itself was not killed: it waited for the agent')
  t.equal(code, 143, '128 + SIGTERM, as a shell reports it')
  const [end] = await receiveUntil(client, (envelope) => envelope.type === 'command:end')
  t.match(end.payload, { story_key: '1-1', task_id: 'dev-story', status: 'error', metrics: { exit_code: 143 } })
})

t.test('exec: an unreachable service never changes the agent\'s result', async (t) => {
  // A port that was free a moment ago: nothing listens there.
  const probe = createServer()
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
  const { port } = probe.address() as { port: number }
  await new Promise<void>((resolve) => probe.close(() => resolve()))
  const stderr = new PassThrough()
  let warnings = ''
  stderr.on('data', (chunk: Buffer) => { warnings += chunk.toString() })
  const stdout = new PassThrough()
  let output = ''
  stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const code = await runExec({
    client: createEventClient({ url: `http://127.0.0.1:${port}`, retries: 0 }),
    storyKey: '1-1',
    command: 'code-review',
    taskId: 'code-review',
    argv: [...fakeAgent, 'code-review', '--delay-ms', '0', '--exit-code', '4'],
    stdout,
    stderr
  })
  t.equal(code, 4, 'the agent\'s exit code')
  t.equal(output.trim().split('\n').length, readFixtureLines('code-review').length, 'its output passed through')
  t.equal(warnings.trim().split('\n').length, 1, `one warning, not one per request: ${warnings}`)
  t.match(warnings, /^exec: could not post events: .*ECONNREFUSED/)
})
