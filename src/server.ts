/**
 * Standalone entry: `npx tsx src/server.ts`. The only file that reads
 * `process.env` and calls `listen`.
 *
 * Process managers should start it as `node --import tsx src/server.ts` (or
 * `node_modules/.bin/tsx src/server.ts`): npx does not forward signals to its child.
 */
import Fastify from 'fastify'
import closeWithGrace from 'close-with-grace'
import sprintDashboard from './app.ts'
import type { SprintDashboardOptions } from './options.ts'
import { isTsxCliChild, watchParentProcess } from './lib/parent-process.ts'

function integerFromEnv (name: string, fallback: number | undefined): number | undefined {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!Number.isSafeInteger(value) || value < 0) {
    console.error(`sprint-dashboard: environment variable ${name} must be a non-negative integer, got ${JSON.stringify(raw)}`)
    process.exit(1)
  }
  return value
}

const loopback = new Set(['127.0.0.1', 'localhost', '::1'])
const host = process.env.HOST ?? '127.0.0.1'
const port = integerFromEnv('PORT', 8080)!

// Names the dashboard is opened by, besides localhost and IP addresses (DNS rebinding guard); a HOST
// that is a name, and not a loopback one, is one of them.
const allowedHosts = (process.env.SPRINT_ALLOWED_HOSTS ?? '').split(',').map(name => name.trim()).filter(name => name !== '')
if (!loopback.has(host) && !allowedHosts.includes(host)) allowedHosts.push(host)

const options: SprintDashboardOptions = {
  dbPath: process.env.SPRINT_DB ?? 'sprint-runner.db',
  allowedHosts,
  artifactsDir: process.env.SPRINT_ARTIFACTS_DIR,
  ingestToken: process.env.SPRINT_INGEST_TOKEN || undefined,
  heartbeatIntervalMs: integerFromEnv('SPRINT_HEARTBEAT_INTERVAL_MS', undefined),
  heartbeatTimeoutMs: integerFromEnv('SPRINT_HEARTBEAT_TIMEOUT_MS', undefined),
  watchSprintStatus: process.env.SPRINT_WATCH !== '0'
}

const app = Fastify({ logger: { level: process.env.LOG_LEVEL ?? 'info' } })
try {
  // A refusal at start-up (the database held by another service, a bad option) is one clear log line and exit 1.
  await app.register(sprintDashboard, options)
} catch (err) {
  app.log.error({ err }, `could not start: ${(err as Error).message}`)
  process.exit(1)
}

const grace = closeWithGrace({ delay: 10_000 }, async ({ signal, err }) => {
  if (err !== undefined) app.log.error({ err }, 'shutting down after an error')
  else app.log.info({ signal }, 'shutting down')
  await app.close()
})
// Under the tsx CLI, a signal it does not relay ends it alone: stop with it rather than run on orphaned.
if (isTsxCliChild()) {
  watchParentProcess(() => {
    app.log.warn('the tsx process that started this server is gone; shutting down')
    grace.close()
  })
}

try {
  await app.listen({ host, port })
} catch (err) {
  app.log.error({ err }, 'could not start')
  process.exit(1)
}

const address = app.server.address()
const bound = typeof address === 'object' && address !== null
  ? `${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`
  : `${host}:${port}`
app.log.info({ dashboard: `http://${bound}/`, websocket: `ws://${bound}/ws` },
  `sprint-dashboard ready: dashboard http://${bound}/ websocket ws://${bound}/ws`)
if (!loopback.has(host) && options.ingestToken === undefined) {
  app.log.warn(`listening on ${host}, which other machines may reach, without SPRINT_INGEST_TOKEN: ` +
    'anyone who can reach this port can read the event stream; set SPRINT_INGEST_TOKEN and firewall the port')
}
