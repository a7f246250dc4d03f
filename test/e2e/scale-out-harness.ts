import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { WebSocket, type RawData } from 'ws'
import { repoRoot, startServer, type ServerProcess } from './server-process.ts'

/**
 * What the scale-out tests share: instances as real child processes on one Redis, dashboard-like
 * clients that follow the stream and reconnect elsewhere with `since`, paced HTTP producers, and the
 * Python emitter.
 */

/** Resolves once `condition()` (sync or async) holds, checking every 100 ms; rejects naming `what` after `timeoutMs`. */
export async function waitUntil (what: string, condition: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

async function stopAll (instances: readonly ServerProcess[]): Promise<void> {
  await Promise.all(instances.map(async instance => {
    if (instance.child.exitCode === null && instance.child.signalCode === null) {
      instance.child.kill('SIGTERM')
      await instance.exited
    }
  }))
}

/**
 * Starts `count` standalone servers on one Redis stream, each with its own SQLite file. When one fails to
 * start, those that did are stopped and the directory removed before the error is thrown.
 */
export async function startInstances (count: number, redisUrl: string, key: string): Promise<{ instances: ServerProcess[], cleanup: () => Promise<void> }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'sprint-scale-out-'))
  const started = await Promise.allSettled(Array.from({ length: count }, (_, index) => startServer({
    SPRINT_DB: path.join(dir, `instance-${index}.db`),
    SPRINT_ARTIFACTS_DIR: dir,
    SPRINT_WATCH: '0',
    SPRINT_REDIS_URL: redisUrl,
    SPRINT_REDIS_KEY: key,
    // The ready line the harness waits for is an info line.
    LOG_LEVEL: 'info'
  }, 30_000)))
  const instances = started.flatMap(result => result.status === 'fulfilled' ? [result.value] : [])
  const cleanup = async (): Promise<void> => {
    await stopAll(instances)
    rmSync(dir, { recursive: true, force: true })
  }
  const failure = started.find(result => result.status === 'rejected')
  if (failure !== undefined) {
    await cleanup()
    throw failure.reason
  }
  return { instances, cleanup }
}

/**
 * A page-like client: applies events in order, checks that each id follows the last, and when its
 * connection drops reconnects to another instance with `since` (as the dashboard and a load balancer do).
 */
export class FollowingClient {
  lastId = 0
  received = 0
  /** Ids that did not follow the previous one (a gap or a duplicate). */
  readonly violations: string[] = []
  resets = 0
  reconnects = 0
  notices: string[] = []
  /** id -> `producer:seq`, when `keepPayloads`. */
  readonly payloads = new Map<number, string>()
  private socket: WebSocket | null = null
  private stopped = false
  private urlIndex: number
  private initWaiter: (() => void) | null = null

  constructor (private readonly urls: () => string[], index: number, private readonly batched: boolean, private readonly keepPayloads = false) {
    this.urlIndex = index
  }

  /** Connects and resolves once `init` arrived. */
  async start (): Promise<void> {
    await new Promise<void>(resolve => {
      this.initWaiter = resolve
      this.open()
    })
  }

  private open (): void {
    if (this.stopped) return
    const urls = this.urls()
    const base = urls[this.urlIndex % urls.length]!
    const query = [this.batched ? 'batch=1' : '', this.lastId > 0 ? `since=${this.lastId}` : ''].filter(part => part !== '').join('&')
    const socket = new WebSocket(query === '' ? base : `${base}?${query}`)
    this.socket = socket
    socket.on('message', (data: RawData) => this.receive(data.toString()))
    socket.on('error', () => {})
    socket.on('close', () => {
      if (this.stopped || this.socket !== socket) return
      // Elsewhere next time: the instance may be gone.
      this.urlIndex++
      this.reconnects++
      setTimeout(() => this.open(), 50)
    })
  }

  private receive (text: string): void {
    for (const line of text.split('\n')) {
      // Events start with their id; reading it without a parse keeps 300 clients cheap.
      const match = /^\{"id":(\d+),/.exec(line)
      if (match !== null) {
        this.apply(Number(match[1]), line)
        continue
      }
      const message = JSON.parse(line) as { type: string, payload: { events?: Array<{ id: number }>, reset?: boolean, broker?: string } }
      if (message.type === 'init') {
        if (message.payload.reset === true) this.resets++
        for (const event of message.payload.events ?? []) {
          if (this.lastId > 0 || this.received > 0) this.apply(event.id, JSON.stringify(event))
        }
        this.initWaiter?.()
        this.initWaiter = null
      } else if (message.type === 'status') {
        this.notices.push(String(message.payload.broker))
      }
    }
  }

  private apply (id: number, line: string): void {
    if (id !== this.lastId + 1 && this.violations.length < 10) this.violations.push(`${id} after ${this.lastId}`)
    if (id > this.lastId) this.lastId = id
    this.received++
    if (this.keepPayloads) {
      const { payload } = JSON.parse(line) as { payload: { story_key: string, message: string } }
      this.payloads.set(id, `${payload.story_key}:${payload.message}`)
    }
  }

  stop (): void {
    this.stopped = true
    this.socket?.terminate()
  }
}

/**
 * Posts single events at `rate` per second to `url()` (read per request: a producer moves to another
 * instance when its own is gone) until stopped; records what was acknowledged and what was refused.
 */
export function startProducer (name: string, url: () => string, rate: number) {
  const acknowledged = new Map<number, number>()
  const refused = new Map<number, number>()
  const failed: string[] = []
  let sent = 0
  let stopped = false
  const inFlight = new Set<Promise<void>>()
  const started = Date.now()
  const agent = { keepalive: true }
  const timer = setInterval(() => {
    const due = Math.floor((Date.now() - started) * rate / 1000)
    if (stopped) return
    while (sent < due) {
      const seq = ++sent
      const request = fetch(`${url()}/api/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'command:progress', payload: { story_key: name, command: 'dev-story', task_id: 'load', message: String(seq) } }),
        ...agent
      }).then(async response => {
        const body = await response.json() as { events?: Array<{ id: number }>, code?: string }
        if (response.status === 201) acknowledged.set(seq, body.events![0]!.id)
        else refused.set(seq, response.status)
      }).catch((error: unknown) => {
        // No answer, or one cut off (its instance was killed mid-response): a network failure either way.
        failed.push(String((error as Error).cause ?? error))
      })
      inFlight.add(request)
      request.finally(() => inFlight.delete(request)).catch(() => {})
    }
  }, 5)
  return {
    acknowledged,
    refused,
    failed,
    get sent () { return sent },
    async stop () {
      stopped = true
      clearInterval(timer)
      await Promise.all(inFlight)
    }
  }
}

/**
 * The Python emitter (clients/python) emitting `count` events at `rate` per second to `url`, then
 * flushing; `done` resolves with its counters.
 */
export async function startPythonEmitter (dir: string, url: string, name: string, count: number, rate: number) {
  const script = path.join(dir, 'python-producer.py')
  await writeFile(script, `
import json, sys, time
from sprint_dashboard_client import Emitter
emitter = Emitter(${JSON.stringify(url)}, token=None, max_queue=100000)
start = time.monotonic()
for seq in range(1, ${count} + 1):
    wait = start + seq / ${rate} - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    emitter.emit_event("command:progress", {"story_key": ${JSON.stringify(name)}, "command": "dev-story", "task_id": "load", "message": str(seq)})
ok = emitter.flush(60.0)
print(json.dumps({"flushed": ok, "delivered": emitter.delivered, "refused": emitter.refused, "dropped": emitter.dropped}))
`)
  const child = spawn('python3', ['-u', script], {
    env: { ...process.env, PYTHONPATH: path.join(repoRoot, 'clients', 'python'), PYTHONDONTWRITEBYTECODE: '1' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  // 'close', not 'exit': the process can exit before its stdout is read to the end.
  const done = once(child, 'close').then(([code]) => {
    if (code !== 0) throw new Error(`python producer exited ${code}: ${stderr}`)
    return JSON.parse(stdout.trim().split('\n').at(-1)!) as { flushed: boolean, delivered: number, refused: number, dropped: number }
  })
  done.catch(() => {})
  return { done, child, get stderr () { return stderr } }
}

/** A temporary directory, removed by the returned function. */
export function scratchDir (): { dir: string, remove: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), 'sprint-scale-out-'))
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) }
}

/** The newest event id an instance applied, from GET /api/health. */
export async function lastEventId (url: string): Promise<number> {
  const response = await fetch(`${url}/api/health`)
  return (await response.json() as { lastEventId: number }).lastEventId
}
