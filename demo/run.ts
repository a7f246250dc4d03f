/**
 * `npm run demo`: a live sprint in the browser within seconds, run from the dashboard.
 *
 * Starts the service on a temporary copy of demo/sprint/ with demo/orchestrator.ts as its
 * orchestrator, the way a real one integrates: the service starts and stops it (Start and Stop on the
 * dashboard, or POST /api/orchestrator/start|stop), it posts its events over HTTP with the typed
 * client, runs each agent command through the exec bridge (here around the fake agent replaying
 * recorded stream-json), and moves stories by editing sprint-status.yaml, which the service's watcher
 * turns into `story:status`. Its state is that file, so Start after Stop continues where it stopped.
 *
 *   npm run demo                       start one batch of 2 cycles, keep the dashboard up (Ctrl+C stops)
 *   npm run demo -- --no-autostart     leave starting to the Start button
 *   npm run demo -- --once             exit when the first batch's orchestrator has exited
 *   npm run demo -- --port 9000 --delay-ms 40 --batch-size all
 */
import Fastify, { type FastifyInstance } from 'fastify'
import { once } from 'node:events'
import { cp, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import sprintDashboard from '../src/app.ts'
import type { Envelope } from '../src/events/schemas.ts'
import { parseBatchSize } from './orchestrator.ts'

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
export const demoSprintDir = path.join(repoRoot, 'demo', 'sprint')
export const demoOrchestratorPath = path.join(repoRoot, 'demo', 'orchestrator.ts')

export interface DemoServer {
  app: FastifyInstance
  /** Base URL of the service (the dashboard is at `${url}/`). */
  url: string
  artifactsDir: string
  close: () => Promise<void>
}

export interface DemoServerOptions {
  port?: number
  host?: string
  logLevel?: string
  /** Delay between the fake agent's output lines. Default 120 ms. */
  agentDelayMs?: number
}

/**
 * Starts the service with a fresh temporary copy of the demo sprint and the demo orchestrator
 * configured. `port` 0 picks a free one; a busy port falls back to a free one.
 */
export async function startDemoServer (options: DemoServerOptions = {}): Promise<DemoServer> {
  const dir = await mkdtemp(path.join(tmpdir(), 'sprint-demo-'))
  const artifactsDir = path.join(dir, 'artifacts')
  await cp(demoSprintDir, artifactsDir, { recursive: true })
  const app = Fastify({ logger: { level: options.logLevel ?? 'warn' } })
  await app.register(sprintDashboard, {
    dbPath: path.join(dir, 'sprint-runner.db'),
    artifactsDir,
    watchSprintStatus: true,
    orchestrator: {
      // Run from the repository so that `--import tsx` resolves; the sprint it works on is artifactsDir.
      command: [process.execPath, '--import', 'tsx', demoOrchestratorPath, '{batch_size}',
        '--artifacts-dir', artifactsDir, '--delay-ms', String(options.agentDelayMs ?? 120)],
      cwd: repoRoot
    }
  })
  const host = options.host ?? '127.0.0.1'
  try {
    await app.listen({ host, port: options.port ?? 0 })
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw error
    await app.listen({ host, port: 0 })
  }
  const { port } = app.server.address() as { port: number }
  return {
    app,
    url: `http://${host}:${port}`,
    artifactsDir,
    close: async () => {
      await app.close()
      await rm(dir, { recursive: true, force: true })
    }
  }
}

/** One line per batch, cycle and orchestrator event, for the terminal. */
function describe (envelope: Envelope): string | null {
  switch (envelope.type) {
    case 'orchestrator:start': return `orchestrator started (pid ${envelope.payload.pid}, batch size ${envelope.payload.batch_size})`
    case 'orchestrator:stopping': return `orchestrator asked to stop (${envelope.payload.signal})`
    case 'orchestrator:exit': return `orchestrator exited (${envelope.payload.signal ?? `code ${envelope.payload.code}`})`
    case 'batch:start': return `batch ${envelope.payload.batch_id} started`
    case 'batch:end': return `batch ${envelope.payload.batch_id} ${envelope.payload.status}` +
      (envelope.payload.cycles_completed === undefined ? '' : ` after ${envelope.payload.cycles_completed} cycle(s)`)
    case 'cycle:start': return `  cycle ${envelope.payload.cycle_number}: ${envelope.payload.story_keys.join(', ')}`
    default: return null
  }
}

async function main (): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: process.env.PORT ?? '8080' },
      'delay-ms': { type: 'string', default: '120' },
      'batch-size': { type: 'string', default: '2' },
      'no-autostart': { type: 'boolean', default: false },
      once: { type: 'boolean', default: false },
      // Kept so that old command lines still work: staying up is now the default.
      keep: { type: 'boolean', default: false }
    }
  })
  const batchSize = parseBatchSize(values['batch-size'])
  if (batchSize === null) throw new Error(`--batch-size: expected 1..1000 or all, got ${values['batch-size']}`)
  if (values.once && values['no-autostart']) throw new Error('--once needs the batch it starts: drop --no-autostart')
  const server = await startDemoServer({ port: Number(values.port), agentDelayMs: Number(values['delay-ms']) })
  const log = (line: string): void => { process.stdout.write(`${line}\n`) }
  const exited = new Promise<Envelope<'orchestrator:exit'>>(resolve => {
    server.app.events.onEvent((envelope) => {
      const line = describe(envelope)
      if (line !== null) log(line)
      if (envelope.type === 'orchestrator:exit') resolve(envelope)
    })
  })
  log(`sprint-dashboard demo: open ${server.url}/ in a browser`)
  log(`  (artifacts in ${server.artifactsDir}; the orchestrator: demo/orchestrator.ts, started from the dashboard)`)
  if (!values['no-autostart']) {
    const response = await fetch(`${server.url}/api/orchestrator/start`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ batch_size: batchSize })
    })
    if (response.status !== 202) {
      await server.close()
      throw new Error(`could not start the orchestrator: ${response.status} ${await response.text()}`)
    }
  }
  if (values.once) {
    const exit = await exited
    await server.close()
    process.exitCode = exit.payload.code ?? 1
    return
  }
  log('Start and Stop are on the dashboard; Ctrl+C stops the demo')
  await Promise.race([once(process, 'SIGINT'), once(process, 'SIGTERM')])
  await server.close()
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main()
}
