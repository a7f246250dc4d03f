import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { once } from 'node:events'
import { WebSocket, type RawData } from 'ws'
import sprintDashboard from '../src/app.ts'
import type { SprintDashboardOptions } from '../src/options.ts'

/** The part of a tap `Test` the helpers use, so they work with any tap version's types. */
export interface TestContext {
  teardown: (fn: () => unknown) => void
}

/** A temporary directory removed when the test ends. */
export async function tempDir (t: TestContext, prefix = 'sprint-dashboard-'): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

/**
 * A dashboard directory with a page and an asset, and traps for traversal tests:
 * a dotfile inside, a secret beside it, and symlinks pointing out.
 */
export async function dashboardFixture (t: TestContext): Promise<{ root: string, dashboardDir: string, artifactsDir: string }> {
  const root = await tempDir(t)
  const dashboardDir = path.join(root, 'dashboard')
  const artifactsDir = path.join(root, 'artifacts')
  await mkdir(path.join(dashboardDir, 'lib'), { recursive: true })
  await mkdir(artifactsDir)
  await writeFile(path.join(dashboardDir, 'index.html'), '<!doctype html><title>dash</title>')
  await writeFile(path.join(dashboardDir, 'lib', 'app.js'), 'export {}')
  await writeFile(path.join(dashboardDir, '.env'), 'SECRET=1')
  await writeFile(path.join(root, 'secret.txt'), 'TOP SECRET')
  await symlink(path.join(root, 'secret.txt'), path.join(dashboardDir, 'link.txt'))
  await symlink(root, path.join(dashboardDir, 'up'))
  return { root, dashboardDir, artifactsDir }
}

export interface BuildResult {
  app: FastifyInstance
  dir: string
  dbPath: string
  artifactsDir: string
}

/**
 * A Fastify app with the plugin registered on a real SQLite file and an
 * artifacts directory in a temp dir; closed when the test ends.
 */
export async function build (t: TestContext, options: SprintDashboardOptions = {}): Promise<BuildResult> {
  const dir = await tempDir(t)
  const dbPath = options.dbPath ?? path.join(dir, 'events.db')
  const artifactsDir = options.artifactsDir ?? path.join(dir, 'artifacts')
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  await app.register(sprintDashboard, { ...options, dbPath, artifactsDir })
  await app.ready()
  return { app, dir, dbPath, artifactsDir }
}

export interface ListenResult extends BuildResult {
  url: string
  wsUrl: string
  port: number
}

/** `build`, then listen on 127.0.0.1 (port 0 unless `port` is given). */
export async function listen (t: TestContext, options: SprintDashboardOptions & { port?: number } = {}): Promise<ListenResult> {
  const { port: wanted = 0, ...pluginOptions } = options
  const built = await build(t, pluginOptions)
  await built.app.listen({ host: '127.0.0.1', port: wanted })
  const address = built.app.server.address()
  if (address === null || typeof address === 'string') throw new Error('server has no TCP address')
  const prefix = pluginOptions.prefix ?? ''
  return {
    ...built,
    port: address.port,
    url: `http://127.0.0.1:${address.port}${prefix}`,
    wsUrl: `ws://127.0.0.1:${address.port}${prefix}/ws`
  }
}

/**
 * A `ws` client that queues every message it receives, so a test can await
 * the next one (or the next that matches) without racing the socket.
 */
export class TestClient {
  readonly socket: WebSocket
  private readonly queue: unknown[] = []
  private waiter: (() => void) | null = null

  constructor (url: string, options: ConstructorParameters<typeof WebSocket>[2] = {}) {
    this.socket = new WebSocket(url, options)
    this.socket.on('message', (data: RawData) => {
      // A batched frame holds several envelopes separated by newlines.
      for (const line of data.toString().split('\n')) this.queue.push(JSON.parse(line))
      this.waiter?.()
    })
    this.socket.on('close', () => this.waiter?.())
  }

  /** Resolves with the next message; rejects if the socket closes first or `timeoutMs` passes. */
  async next<T = any> (timeoutMs = 5000): Promise<T> {
    const deadline = Date.now() + timeoutMs
    while (this.queue.length === 0) {
      if (this.socket.readyState === WebSocket.CLOSED) throw new Error('socket closed while waiting for a message')
      const remaining = deadline - Date.now()
      if (remaining <= 0) throw new Error(`no message within ${timeoutMs} ms`)
      await new Promise<void>(resolve => {
        const timer = setTimeout(resolve, remaining)
        this.waiter = () => { clearTimeout(timer); resolve() }
      })
      this.waiter = null
    }
    return this.queue.shift() as T
  }

  /** Collects the next `count` messages. */
  async take<T = any> (count: number, timeoutMs = 5000): Promise<T[]> {
    const messages: T[] = []
    for (let i = 0; i < count; i++) messages.push(await this.next<T>(timeoutMs))
    return messages
  }

  /** Messages received and not yet taken. */
  get pending (): number {
    return this.queue.length
  }

  async close (): Promise<void> {
    if (this.socket.readyState === WebSocket.CLOSED) return
    const closed = once(this.socket, 'close')
    this.socket.close()
    await closed
  }
}

/** Opens a client and waits for its `init` message. */
export async function connect (t: TestContext, url: string, options?: ConstructorParameters<typeof WebSocket>[2]): Promise<{ client: TestClient, init: any }> {
  const client = new TestClient(url, options)
  t.teardown(() => client.socket.terminate())
  const init = await client.next()
  return { client, init }
}

/** Resolves with the close code and reason of a socket. */
export async function closed (socket: WebSocket): Promise<{ code: number, reason: string }> {
  if (socket.readyState === WebSocket.CLOSED) throw new Error('socket already closed')
  const [code, reason] = await once(socket, 'close') as [number, Buffer]
  return { code, reason: reason.toString() }
}

/** Resolves with the HTTP status of a refused upgrade. */
export async function refusedUpgrade (url: string, options?: ConstructorParameters<typeof WebSocket>[2]): Promise<number> {
  const socket = new WebSocket(url, options)
  return await new Promise<number>((resolve, reject) => {
    socket.on('unexpected-response', (_request, response) => {
      resolve(response.statusCode ?? 0)
      socket.terminate()
    })
    socket.on('open', () => {
      socket.terminate()
      reject(new Error('upgrade was accepted'))
    })
    socket.on('error', () => { /* the unexpected-response or open handler settles */ })
  })
}

/** A logger that drops everything, for lib modules that take one (as `app.log` is passed to them). */
export const silentLog: FastifyBaseLogger = {
  level: 'silent',
  fatal () {},
  error () {},
  warn () {},
  info () {},
  debug () {},
  trace () {},
  silent () {},
  child () { return silentLog }
}

/** Resolves once `condition()` holds, checking after every turn of the event loop; rejects after `timeoutMs`. */
export async function waitFor (condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`)
    await new Promise(resolve => setTimeout(resolve, 1))
  }
}

/** Valid payloads, one per event type, for tests that need "any valid event". */
export const validPayloads = {
  'batch:start': { batch_id: 1, max_cycles: 2 },
  'batch:end': { batch_id: 1, cycles_completed: 2, status: 'completed' },
  'cycle:start': { cycle_number: 1, story_keys: ['2a-1'] },
  'cycle:end': { cycle_number: 1, completed_stories: ['2a-1'] },
  'command:start': { story_key: '2a-1', command: 'dev-story', task_id: 'implement' },
  'command:progress': { story_key: '2a-1', command: 'dev-story', task_id: 'implement', message: 'Edit src/a.ts' },
  'command:end': { story_key: '2a-1', command: 'dev-story', task_id: 'implement', status: 'success', metrics: { duration_ms: 1200, tokens: 3400 } },
  'story:status': { story_key: '2a-1', old_status: null, new_status: 'in-progress' },
  error: { type: 'agent_crash', message: 'boom', context: { exit_code: 1 } },
  'context:create': { status: 'started', task_id: 7 },
  'context:refresh': { status: 'running', message: 'refreshing' },
  'context:complete': { status: 'done', task_id: 'ctx-1', message: 'ok' },
  'batch:warning': { batch_id: 1, message: 'Project context not available - proceeding without context', warning_type: 'context_unavailable' },
  'context:error': { task_id: 7, status: 'error', error: 'generate-project-context exited with 1' },
  'context:fresh': { message: 'Project context is fresh, skipping regeneration' },
  'context:copied': { source: '/repo/project-context.md', destination: '/repo/sprint-project-context.md', message: 'Project context copied for sprint batch' },
  'context:copy_failed': { source: '/repo/project-context.md', reason: 'Source file does not exist', message: 'project-context.md not found' },
  'injection:empty': { command: 'sprint-dev-story', story_keys: ['2a-1'], message: 'No files matched for injection' },
  'injection:warning': { command: 'sprint-commit', size_bytes: 120_000, threshold_bytes: 102_400, message: 'Injection size (120000 bytes) exceeds warning threshold' },
  'background:complete': { task_id: 3, task_type: 'sprint-story-review-chain', status: 'completed' },
  'background:error': { task_type: 'project-context-refresh', status: 'error', error: 'spawn claude ENOENT' },
  'cleanup:complete': { files_moved: 2, story_keys: ['2a-1'], message: 'Cleanup complete: 2 files archived' },
  'cleanup:error': { error: 'EACCES: permission denied', message: 'Cannot proceed with cleanup' },
  'cleanup:file_moved': { source: '/repo/impl/2a-1.md', destination: '/repo/archive/2a-1.md', file_name: '2a-1.md' },
  'cleanup:file_error': { file: '/repo/impl/2a-1.md', error: 'EBUSY', message: 'Failed to move 2a-1.md' },
  'orchestrator:start': { pid: 4242, batch_size: 2 },
  'orchestrator:stopping': { pid: 4242, signal: 'SIGTERM' },
  'orchestrator:exit': { pid: 4242, code: null, signal: 'SIGTERM', duration_ms: 1500 }
} as const

/**
 * The samples of a Prometheus text exposition, keyed as written (`name` or `name{label="value",...}`),
 * e.g. `metrics.get('sprint_clients{kind="plain"}')`.
 */
export function parseMetrics (text: string): Map<string, number> {
  const samples = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const space = line.lastIndexOf(' ')
    samples.set(line.slice(0, space), Number(line.slice(space + 1)))
  }
  return samples
}
