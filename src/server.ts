/**
 * Standalone entry: `npx tsx src/server.ts` from a clone, `sprint-dashboard serve` from the package.
 * The only file that reads the environment (`process.env`, or the one `startServer` is given) and calls `listen`.
 *
 * Process managers should start it as `node --import tsx src/server.ts` (or
 * `node_modules/.bin/tsx src/server.ts`), from the package as `node_modules/.bin/sprint-dashboard serve`:
 * npx does not forward signals to its child.
 */
import { createRequire } from 'node:module'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import closeWithGrace from 'close-with-grace'
import sprintDashboard from './app.ts'
import { InvalidEnvironmentError } from './errors.ts'
import { isMainModule } from './lib/main-module.ts'
import { isLoopbackHost } from './lib/origin.ts'
import { isTsxCliChild, watchParentProcess } from './lib/parent-process.ts'
import type { SprintDashboardOptions } from './options.ts'

function integerFromEnv (env: NodeJS.ProcessEnv, name: string, fallback: number | undefined): number | undefined {
  const raw = env[name]
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!Number.isSafeInteger(value) || value < 0) throw new InvalidEnvironmentError(name, 'a non-negative integer', JSON.stringify(raw))
  return value
}

/** SPRINT_ORCHESTRATOR_CMD (a JSON array of argv strings), SPRINT_ORCHESTRATOR_CWD, SPRINT_ORCHESTRATOR_KILL_AFTER_MS. */
function orchestratorFromEnv (env: NodeJS.ProcessEnv): SprintDashboardOptions['orchestrator'] {
  const raw = env.SPRINT_ORCHESTRATOR_CMD
  if (raw === undefined || raw.trim() === '') return undefined
  let command: unknown
  try {
    command = JSON.parse(raw)
  } catch {
    command = undefined
  }
  if (!Array.isArray(command) || command.length === 0 || !command.every(arg => typeof arg === 'string')) {
    throw new InvalidEnvironmentError('SPRINT_ORCHESTRATOR_CMD', 'a JSON array of argv strings, e.g. ["python3","orchestrator.py","{batch_size}"]', JSON.stringify(raw))
  }
  return {
    command,
    cwd: env.SPRINT_ORCHESTRATOR_CWD || undefined,
    killAfterMs: integerFromEnv(env, 'SPRINT_ORCHESTRATOR_KILL_AFTER_MS', undefined)
  }
}

/**
 * Fastify's logger for the standalone server: JSON lines (what log collectors and the tests read),
 * or human-readable lines through pino-pretty when a person is watching the terminal.
 */
export function loggerOptions (level: string, prettyPrint: boolean): FastifyServerOptions['logger'] {
  if (!prettyPrint) return { level }
  // Resolved here rather than by pino, which looks for the target from fastify's own folder.
  const target = createRequire(import.meta.url).resolve('pino-pretty')
  // The ready line's URL fields repeat its message: a terminal shows the message alone.
  return { level, transport: { target, options: { translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,dashboard,websocket' } } }
}

/**
 * Builds the service from `env` (HOST, PORT, SPRINT_DB, SPRINT_ARTIFACTS_DIR, SPRINT_INGEST_TOKEN,
 * SPRINT_HEARTBEAT_INTERVAL_MS, SPRINT_HEARTBEAT_TIMEOUT_MS, SPRINT_WATCH, SPRINT_METRICS, SPRINT_ALLOWED_HOSTS, SPRINT_ORCHESTRATOR_*,
 * SPRINT_REDIS_URL, SPRINT_REDIS_KEY,
 * LOG_LEVEL), listens, and
 * closes it gracefully on SIGINT/SIGTERM. Resolves with the listening instance; rejects, with nothing
 * left open, on a bad variable or when the port cannot be bound.
 *
 * @example
 * const app = await startServer({ ...process.env, PORT: '0' })
 */
export async function startServer (env: NodeJS.ProcessEnv = process.env): Promise<FastifyInstance> {
  const host = env.HOST ?? '127.0.0.1'
  const port = integerFromEnv(env, 'PORT', 8080)!
  // Names the dashboard is opened by, besides localhost and IP addresses (DNS rebinding guard); a HOST
  // that is a name, and not a loopback one, is one of them.
  const allowedHosts = (env.SPRINT_ALLOWED_HOSTS ?? '').split(',').map(name => name.trim()).filter(name => name !== '')
  if (!isLoopbackHost(host) && !allowedHosts.includes(host)) allowedHosts.push(host)
  const options: SprintDashboardOptions = {
    dbPath: env.SPRINT_DB ?? 'sprint-runner.db',
    allowedHosts,
    artifactsDir: env.SPRINT_ARTIFACTS_DIR,
    ingestToken: env.SPRINT_INGEST_TOKEN || undefined,
    heartbeatIntervalMs: integerFromEnv(env, 'SPRINT_HEARTBEAT_INTERVAL_MS', undefined),
    heartbeatTimeoutMs: integerFromEnv(env, 'SPRINT_HEARTBEAT_TIMEOUT_MS', undefined),
    watchSprintStatus: env.SPRINT_WATCH !== '0',
    metrics: env.SPRINT_METRICS !== '0',
    orchestrator: orchestratorFromEnv(env),
    redis: env.SPRINT_REDIS_URL ? { url: env.SPRINT_REDIS_URL, key: env.SPRINT_REDIS_KEY || undefined } : undefined
  }

  const app = Fastify({ logger: loggerOptions(env.LOG_LEVEL ?? 'info', process.stdout.isTTY === true) })
  // Installed first, so that a signal during start-up closes the server too; removed when the app closes
  // (by a signal, a failed start or the caller), so that nothing of it outlives the app. The delay is
  // longer than app.close() takes at most (a running orchestrator gets 8 s, then its group is killed),
  // so the orchestrator, in its own process group, is never left behind by a forced exit.
  const graceful = closeWithGrace({ delay: 12_000 }, async ({ signal, err }) => {
    if (err !== undefined) app.log.error({ err }, 'shutting down after an error')
    else app.log.info({ signal }, 'shutting down')
    await app.close()
  })
  app.addHook('onClose', async () => graceful.uninstall())
  // Under the tsx CLI, a signal it does not relay (SIGHUP, SIGQUIT, SIGKILL) ends it alone: stop with it
  // rather than run on orphaned, holding the port and the database.
  if (isTsxCliChild()) {
    const stopWatching = watchParentProcess(() => {
      app.log.warn('the tsx process that started this server is gone; shutting down')
      graceful.close()
    })
    app.addHook('onClose', async () => stopWatching())
  }
  try {
    await app.register(sprintDashboard, options)
    await app.listen({ host, port })
  } catch (err) {
    app.log.error({ err }, 'could not start')
    await app.close()
    throw err
  }

  const address = app.server.address()
  const bound = typeof address === 'object' && address !== null
    ? `${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`
    : `${host}:${port}`
  app.log.info({ dashboard: `http://${bound}/`, websocket: `ws://${bound}/ws` },
    `sprint-dashboard ready: dashboard http://${bound}/ websocket ws://${bound}/ws`)
  if (!isLoopbackHost(host) && options.ingestToken === undefined) {
    app.log.warn(`listening on ${host}, which other machines may reach, without SPRINT_INGEST_TOKEN: ` +
      'anyone who can reach this port can read the event stream; set SPRINT_INGEST_TOKEN and firewall the port')
  }
  return app
}

if (isMainModule(import.meta.url)) {
  try {
    await startServer()
  } catch (error) {
    // A listen failure was logged by the server already; a bad variable is said here, once.
    if (error instanceof InvalidEnvironmentError) console.error(`sprint-dashboard: ${error.message}`)
    process.exit(1)
  }
}
