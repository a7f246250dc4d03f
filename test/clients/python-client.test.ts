import t from 'tap'
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { once } from 'node:events'
import { writeFile } from 'node:fs/promises'
import { connect as netConnect, createServer, type AddressInfo } from 'node:net'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { connect, listen, tempDir, type TestContext } from '../helper.ts'
import { repoRoot } from '../e2e/server-process.ts'

/**
 * The Python emitter (clients/python/sprint_dashboard_client.py), run for real: each test starts the
 * service in this process and a `python3` script that imports the module, then checks what the
 * service stored (or a WebSocket client received). No fixed sleeps: the tests wait for the lines the
 * scripts print, the warnings the module logs, and the processes' exits.
 */

const clientDir = path.join(repoRoot, 'clients', 'python')

class PythonScript {
  readonly child: ChildProcessWithoutNullStreams
  readonly exited: Promise<number | string>
  stderr = ''
  private readonly lines: string[] = []
  private wake: (() => void) | null = null

  constructor (file: string, env: Record<string, string>) {
    const inherited = { ...process.env }
    delete inherited.SPRINT_URL
    delete inherited.SPRINT_INGEST_TOKEN
    this.child = spawn('python3', ['-u', file], {
      env: { ...inherited, PYTHONPATH: clientDir, PYTHONDONTWRITEBYTECODE: '1', ...env },
      stdio: 'pipe'
    })
    this.exited = once(this.child, 'exit').then(([code, signal]) => (code ?? signal) as number | string)
    createInterface({ input: this.child.stdout }).on('line', line => {
      this.lines.push(line)
      this.wake?.()
    })
    this.child.stderr.on('data', (chunk: Buffer) => {
      this.stderr += chunk.toString()
      this.wake?.()
    })
    this.exited.then(() => this.wake?.(), () => {})
  }

  private async until<T> (take: () => T | undefined, what: string, timeoutMs: number): Promise<T> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const value = take()
      if (value !== undefined) return value
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        // One last look: the line may have come with the exit.
        await new Promise(resolve => setImmediate(resolve))
        const last = take()
        if (last !== undefined) return last
        throw new Error(`python exited (${this.child.exitCode ?? this.child.signalCode}) before ${what}; stderr:\n${this.stderr}`)
      }
      const remaining = deadline - Date.now()
      if (remaining <= 0) throw new Error(`no ${what} within ${timeoutMs} ms; stderr:\n${this.stderr}`)
      await new Promise<void>(resolve => {
        const timer = setTimeout(resolve, remaining)
        this.wake = () => { clearTimeout(timer); resolve() }
      })
      this.wake = null
    }
  }

  /** The next line the script printed, parsed as JSON. */
  async json<T = any> (timeoutMs = 30_000): Promise<T> {
    const line = await this.until(() => this.lines.shift(), 'line on stdout', timeoutMs)
    return JSON.parse(line) as T
  }

  /** Resolves once stderr matches `pattern`. */
  async stderrMatching (pattern: RegExp, timeoutMs = 30_000): Promise<void> {
    await this.until(() => pattern.test(this.stderr) ? true : undefined, `stderr matching ${pattern}`, timeoutMs)
  }

  send (line: string): void {
    this.child.stdin.write(line + '\n')
  }
}

/** Writes `source` to a temp file and runs it; the process is killed in teardown if still running. */
async function runPython (t: TestContext, source: string, env: Record<string, string>): Promise<PythonScript> {
  const dir = await tempDir(t, 'python-client-')
  const file = path.join(dir, 'script.py')
  await writeFile(file, source)
  const script = new PythonScript(file, env)
  t.teardown(async () => {
    if (script.child.exitCode === null && script.child.signalCode === null) {
      script.child.kill('SIGKILL')
      await script.exited
    }
  })
  return script
}

/** A port nothing listens on (yet): the service is started on it later, or never. */
async function freePort (): Promise<number> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  server.close()
  await once(server, 'close')
  return port
}

function messageOf (envelope: { payload: unknown }): unknown {
  return (envelope.payload as { message?: unknown }).message
}

/** Payloads of the shapes the sprint runner's orchestrator sends, by index. */
const PYTHON_EVENTS = `
def event(i):
    if i == 0:
        return "batch:start", {"batch_id": 7, "max_cycles": None, "batch_mode": "all"}
    if i == 1:
        return "cycle:start", {"cycle_number": 1, "story_keys": ["2a-1"]}
    if i == 2:
        return "command:start", {"story_key": "2a-1", "command": "dev-story", "task_id": "implement", "message": ""}
    return "command:progress", {"story_key": "2a-1", "command": "dev-story", "task_id": "implement", "message": "step %d" % i}
`

function expectedEvent (i: number): { type: string, payload: Record<string, unknown> } {
  if (i === 0) return { type: 'batch:start', payload: { batch_id: 7, max_cycles: null, batch_mode: 'all' } }
  if (i === 1) return { type: 'cycle:start', payload: { cycle_number: 1, story_keys: ['2a-1'] } }
  if (i === 2) return { type: 'command:start', payload: { story_key: '2a-1', command: 'dev-story', task_id: 'implement', message: '' } }
  return { type: 'command:progress', payload: { story_key: '2a-1', command: 'dev-story', task_id: 'implement', message: `step ${i}` } }
}

t.test('events arrive in order, as sent, stamped with the time of the call', async (t) => {
  const { url, wsUrl } = await listen(t)
  const { client } = await connect(t, wsUrl)
  const count = 1203 // more than two requests' worth (500 per request)
  const script = await runPython(t, `
import json, time
import sprint_dashboard_client as client
${PYTHON_EVENTS}
before = int(time.time() * 1000)
for i in range(${count}):
    client.emit_event(*event(i))
after = int(time.time() * 1000)
print(json.dumps({"before": before, "after": after, "flushed": client.flush(timeout=30)}))
`, { SPRINT_URL: url })
  const result = await script.json()
  t.equal(result.flushed, true, 'flush() says everything was delivered')
  t.equal(await script.exited, 0)

  const received = await client.take(count, 30_000)
  t.same(received.map(envelope => ({ type: envelope.type, payload: envelope.payload })),
    Array.from({ length: count }, (_, i) => expectedEvent(i)), 'every event, in emit order, with its payload exactly as sent')
  t.ok(received.every((envelope, i) => i === 0 || envelope.id > received[i - 1].id), 'ids increase')
  t.ok(received.every(envelope => envelope.timestamp >= result.before && envelope.timestamp <= result.after),
    'each timestamp is the time of its emit_event call')
  t.equal(script.stderr, '', 'nothing logged')
})

t.test('the service started after the script: events wait, retried in order, with their original times', async (t) => {
  const port = await freePort()
  const script = await runPython(t, `
import json, time
import sprint_dashboard_client as client
${PYTHON_EVENTS}
for i in range(50):
    client.emit_event(*event(i))
print(json.dumps({"emitted_at": int(time.time() * 1000)}))
print(json.dumps({"flushed": client.flush(timeout=60)}))
`, { SPRINT_URL: `http://127.0.0.1:${port}` })
  const { emitted_at: emittedAt } = await script.json()
  // The module says once that the service is down and that it keeps retrying.
  await script.stderrMatching(/not reachable.*retrying/)
  const startedAt = Date.now()
  const { app } = await listen(t, { port })
  t.same(await script.json(), { flushed: true })
  t.equal(await script.exited, 0)
  const stored = app.sprintStore.getEventsAfter(0, 1000)
  t.same(stored.map(envelope => ({ type: envelope.type, payload: envelope.payload })),
    Array.from({ length: 50 }, (_, i) => expectedEvent(i)), 'all 50, in order')
  t.ok(stored.every(envelope => envelope.timestamp <= emittedAt && envelope.timestamp < startedAt),
    'stamped when emitted, before the service even started')
  t.match(script.stderr, /reachable again/)
})

t.test('an answer lost after the service stored the events: the retry is not stored twice', async (t) => {
  const { app, port } = await listen(t)
  // A proxy that lets the first request through to the service and then drops its answer (201 and all),
  // as a network that fails at the worst moment would; later requests pass both ways.
  const lostAnswers: string[] = []
  const proxy = createServer(downstream => {
    const upstream = netConnect(port, '127.0.0.1')
    downstream.on('error', () => {})
    upstream.on('error', () => {})
    downstream.pipe(upstream)
    if (lostAnswers.length === 0) {
      upstream.once('data', (chunk: Buffer) => {
        lostAnswers.push(chunk.toString('latin1').split('\r\n')[0]!)
        downstream.destroy()
        upstream.destroy()
      })
    } else {
      upstream.pipe(downstream)
    }
  })
  proxy.listen(0, '127.0.0.1')
  await once(proxy, 'listening')
  t.teardown(() => new Promise<void>(resolve => { proxy.close(() => resolve()) }))
  const proxyPort = (proxy.address() as AddressInfo).port

  const script = await runPython(t, `
import json
import sprint_dashboard_client as client
${PYTHON_EVENTS}
for i in range(20):
    client.emit_event(*event(i))
print(json.dumps({"flushed": client.flush(timeout=30)}))
`, { SPRINT_URL: `http://127.0.0.1:${proxyPort}` })
  t.same(await script.json(), { flushed: true })
  t.equal(await script.exited, 0)
  t.same(lostAnswers, ['HTTP/1.1 201 Created'], 'the first request was stored and its answer lost')
  const stored = app.sprintStore.getEventsAfter(0, 1000)
  t.same(stored.map(envelope => ({ type: envelope.type, payload: envelope.payload })),
    Array.from({ length: 20 }, (_, i) => expectedEvent(i)), 'every event once, in order')
})

t.test('a 4xx does not block the events after it: in an array, only the bad event is dropped', async (t) => {
  const port = await freePort()
  const script = await runPython(t, `
import json, sys
import sprint_dashboard_client as client
emitter = client.Emitter("http://127.0.0.1:${port}", None, 1000)
def progress(i):
    emitter.emit_event("command:progress", {"story_key": "2a-1", "command": "dev-story", "task_id": "implement", "message": "m%d" % i})
# Queued while the service is down, so that they go as one array once it is up.
for i in range(3):
    progress(i)
emitter.emit_event("no:such:type", {"x": 1})
for i in range(3, 6):
    progress(i)
print(json.dumps({"queued": emitter.pending}))
sys.stdin.readline()
first = emitter.flush(60)
# The service up: a single bad event, then a good one.
emitter.emit_event("batch:start", {"batch_id": "seven", "max_cycles": 2})
progress(6)
second = emitter.flush(30)
progress(7)
third = emitter.flush(30)
print(json.dumps({"first": first, "second": second, "third": third, "delivered": emitter.delivered, "refused": emitter.refused}))
`, {})
  t.same(await script.json(), { queued: 7 })
  await script.stderrMatching(/retrying/)
  const { app } = await listen(t, { port })
  script.send('go')
  const result = await script.json()
  t.same(result, { first: false, second: false, third: true, delivered: 8, refused: 2 },
    'flush() reports the refusals, then a clean stretch')
  t.equal(await script.exited, 0)
  const stored = app.sprintStore.getEventsAfter(0, 100)
  t.same(stored.map(messageOf), ['m0', 'm1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7'], 'every good event, in order')
  t.match(script.stderr, /refused a no:such:type event \(400\): SPRINT_INVALID_EVENT: .*Unknown event type "no:such:type"/,
    'the refused event is logged with the service\'s message')
  t.match(script.stderr, /refused a batch:start event \(400\): SPRINT_INVALID_EVENT: .*\/payload\/batch_id/)
})

t.test('the queue bound holds while the service is stopped: the oldest are dropped and counted', async (t) => {
  const port = await freePort()
  const script = await runPython(t, `
import json, sys
import sprint_dashboard_client as client
emitter = client.Emitter("http://127.0.0.1:${port}", max_queue=100)
for i in range(1000):
    emitter.emit_event("command:progress", {"story_key": "2a-1", "command": "dev-story", "task_id": "implement", "message": str(i)})
print(json.dumps({"pending": emitter.pending, "dropped": emitter.dropped}))
sys.stdin.readline()
flushed = emitter.flush(60)
print(json.dumps({"flushed": flushed, "delivered": emitter.delivered, "dropped": emitter.dropped}))
`, {})
  t.same(await script.json(), { pending: 100, dropped: 900 }, 'never more than max_queue events held')
  t.equal(script.stderr.match(/queue full/g)?.length, 1, 'one warning, not one per dropped event')
  t.match(script.stderr, /queue full \(100 events waiting for http:\/\/127\.0\.0\.1:\d+\/api\/events\); dropped the oldest, 1 dropped so far/)
  const { app } = await listen(t, { port })
  script.send('go')
  t.same(await script.json(), { flushed: false, delivered: 100, dropped: 900 }, 'flush() says events were lost')
  t.equal(await script.exited, 0)
  t.same(app.sprintStore.getEventsAfter(0, 1000).map(messageOf),
    Array.from({ length: 100 }, (_, i) => String(900 + i)), 'the newest 100 arrive, in order')
  t.match(script.stderr, /900 dropped so far/, 'the count is reported at exit')
})

t.test('exit flushes: a short-lived script delivers what it emitted without calling flush()', async (t) => {
  const { app, url } = await listen(t)
  const script = await runPython(t, `
import sprint_dashboard_client as client
for i in range(300):
    client.emit_event("command:progress", {"story_key": "2a-1", "command": "dev-story", "task_id": "implement", "message": str(i)})
`, { SPRINT_URL: url })
  t.equal(await script.exited, 0)
  t.same(app.sprintStore.getEventsAfter(0, 1000).map(messageOf),
    Array.from({ length: 300 }, (_, i) => String(i)), 'all stored by the time the process is gone')
})

t.test('exit waits at most 5 s for a service that is down', async (t) => {
  const port = await freePort()
  const script = await runPython(t, `
import json, time
import sprint_dashboard_client as client
client.emit_event("cycle:start", {"cycle_number": 1, "story_keys": []})
print(json.dumps({"ending_at": int(time.time() * 1000)}))
`, { SPRINT_URL: `http://127.0.0.1:${port}` })
  // Measured from the end of the script, so that the interpreter's start-up does not count.
  const { ending_at: endingAt } = await script.json()
  t.equal(await script.exited, 0)
  const elapsed = Date.now() - endingAt
  t.ok(elapsed >= 4500 && elapsed < 7500, `exited ${elapsed} ms after its last statement: it tried, then gave up`)
  t.match(script.stderr, /exiting with 1 event\(s\) not delivered/)
})

t.test('emit_event never raises, and the bearer token comes from SPRINT_INGEST_TOKEN', async (t) => {
  const { app, url } = await listen(t, { ingestToken: 's3cret' })
  const script = await runPython(t, `
import json, math
import sprint_dashboard_client as client
client.emit_event("error", {"type": "x", "message": object()})     # not JSON
client.emit_event("error", {"type": "x", "message": math.nan})     # not JSON either
client.emit_event("cycle:start", {"cycle_number": 1, "story_keys": ["2a-1"]})
wrong = client.Emitter("${url}", token="wrong")
wrong.emit_event("cycle:start", {"cycle_number": 2, "story_keys": []})
try:
    client.Emitter("not a url")
    explicit = "accepted"
except ValueError:
    explicit = "ValueError"
print(json.dumps({"flushed": client.flush(10), "wrong": wrong.flush(10), "refused": wrong.refused, "explicit": explicit}))
`, { SPRINT_URL: url, SPRINT_INGEST_TOKEN: 's3cret' })
  t.same(await script.json(), { flushed: true, wrong: false, refused: 1, explicit: 'ValueError' })
  t.equal(await script.exited, 0)
  t.same(app.sprintStore.getEventsAfter(0, 10).map(envelope => envelope.type), ['cycle:start'])
  t.match(script.stderr, /error event not sent: its payload is not JSON/)
  t.match(script.stderr, /refused a cycle:start event \(401\): SPRINT_INGEST_UNAUTHORIZED/)

  // A bad SPRINT_URL is reported, not raised into the caller.
  const bad = await runPython(t, `
import sprint_dashboard_client as client
client.emit_event("cycle:start", {"cycle_number": 1, "story_keys": []})
print("{}")
`, { SPRINT_URL: 'nonsense' })
  t.same(await bad.json(), {})
  t.equal(await bad.exited, 0)
  t.match(bad.stderr, /cycle:start event not sent: .*not an http\(s\) URL/)
})
