import { fileURLToPath } from 'node:url'
import { constants as osConstants } from 'node:os'
import path from 'node:path'
import { InvalidOptionError } from './errors.ts'

/** How the service runs the orchestrator behind the dashboard's Start and Stop (see docs/orchestrator-control.md). */
export interface OrchestratorOptions {
  /**
   * The program and its arguments, run without a shell. `{batch_size}` in any argument becomes the
   * requested size (`2` or `all`), e.g. `['python3', 'orchestrator.py', '{batch_size}']`.
   */
  command: string[]
  /** Working directory of the orchestrator. Default the service's own. */
  cwd?: string
  /** Variables added to the environment the orchestrator inherits from the service. */
  env?: Record<string, string>
  /** Sent to the orchestrator by Stop: finish the current command, end the batch, exit 0. Default `SIGINT`. */
  stopSignal?: NodeJS.Signals
  /** After a forced stop (a second Stop), how long SIGTERM gets before SIGKILL goes to the process group. Default 10 s. */
  killAfterMs?: number
}

/** `orchestrator` after defaults. */
export interface ResolvedOrchestratorOptions {
  command: string[]
  cwd: string | undefined
  env: Record<string, string>
  stopSignal: NodeJS.Signals
  killAfterMs: number
}

/** Scale-out: several instances share one log of record on a Redis stream (see docs/scale-out.md). */
export interface RedisOptions {
  /** e.g. `redis://127.0.0.1:6379`. */
  url: string
  /** Prefix of the keys the instances share. Default `sprint-dashboard`. */
  key?: string
}

/** Options of the `sprintDashboard` plugin. Every one is optional; defaults are in `resolveOptions`. */
export interface SprintDashboardOptions {
  /** Route prefix, e.g. `/sprint` (fastify-plugin ignores Fastify's own `prefix`, so the plugin applies it itself). */
  prefix?: string
  /** SQLite file; `:memory:` for a throwaway store. Default `sprint-runner.db` in the working directory. */
  dbPath?: string
  /** Where the sprint's story files and data files live. Default `_bmad-output/implementation-artifacts`. */
  artifactsDir?: string
  /** The dashboard's static files. Default the `dashboard/` folder of this package. */
  dashboardDir?: string
  /** Data files served by name from the artifacts directory (then the dashboard directory), with their content types. */
  dataFiles?: Record<string, string>
  /** `Access-Control-Allow-Origin` for the read-only routes (@fastify/cors `origin`). Default `*`. */
  corsOrigin?: string | boolean | string[]
  /** Protocol ping period. Default 30 s. */
  heartbeatIntervalMs?: number
  /** A client that has not answered a ping within this time is terminated. Default 10 s. */
  heartbeatTimeoutMs?: number
  /** Events sent in `init` on a fresh connect. Default 50. */
  recentEvents?: number
  /** Events kept in the database; older ones are pruned in the background. Default 100,000. */
  retainEvents?: number
  /** The most events one resuming client is replayed; further behind gets `reset`. Default 10,000. */
  maxReplay?: number
  /** A socket with more unsent bytes than this is closed with 1013 `slow consumer`. Default 4 MiB. */
  maxBufferedBytes?: number
  /** Concurrent WebSocket connections; beyond it the upgrade gets 503. Default 10,000. */
  maxConnections?: number
  /** Extra browser origins allowed to open `/ws` and post events, or `'*'` for any (unsafe: any web page could read the stream). */
  allowedOrigins?: string[] | '*'
  /**
   * Host names (the `Host` header) besides `localhost`, `*.localhost` and IP addresses that `/ws` and
   * `POST /api/events` answer to; `.example.com` allows a domain and its subdomains, `'*'` any host
   * (unsafe: DNS rebinding). Needed when the dashboard is opened by a name, e.g. `dashboard.lan`.
   */
  allowedHosts?: string[] | '*'
  /** When set, `POST /api/events` requires `Authorization: Bearer <token>`. */
  ingestToken?: string
  /** Watch `sprint-status.yaml` and emit `story:status` for each change. Default false (the standalone server turns it on). */
  watchSprintStatus?: boolean
  /** The orchestrator the dashboard starts and stops. Without it the orchestrator routes answer 501. */
  orchestrator?: OrchestratorOptions
  /** Serve `GET /metrics` (Prometheus text format, see docs/metrics.md). Default false (the standalone server turns it on). */
  metrics?: boolean
  /** Redis for several instances behind one address. Without it, SQLite alone decides the order of events. */
  redis?: RedisOptions
}

/** Options after defaults: what the plugins read. */
export type ResolvedOptions = Required<Omit<SprintDashboardOptions, 'ingestToken' | 'prefix' | 'orchestrator' | 'redis'>> & {
  prefix: string
  ingestToken: string | undefined
  orchestrator: ResolvedOrchestratorOptions | null
  redis: Required<RedisOptions> | null
}

const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

export const defaultDataFiles: Record<string, string> = {
  'sprint-status.yaml': 'application/x-yaml; charset=utf-8',
  'orchestrator.md': 'text/markdown; charset=utf-8',
  'orchestrator.csv': 'text/csv; charset=utf-8'
}

function positiveInteger (name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new InvalidOptionError(name, `expected a positive integer, got ${String(value)}`)
  }
  return value
}

function isStringRecord (value: unknown): value is Record<string, string> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) &&
    Object.values(value).every(item => typeof item === 'string')
}

function resolveOrchestrator (options: OrchestratorOptions | undefined): ResolvedOrchestratorOptions | null {
  if (options === undefined) return null
  const { command, cwd, env, stopSignal } = options
  // spawn() refuses a NUL inside an argument only when called; refusing it here names the option instead.
  if (!Array.isArray(command) || command.length === 0 || !command.every(arg => typeof arg === 'string' && !arg.includes('\0')) || command[0] === '') {
    throw new InvalidOptionError('orchestrator.command', `expected a non-empty array of argv strings (program first), got ${JSON.stringify(command)}`)
  }
  if (cwd !== undefined && (typeof cwd !== 'string' || cwd === '')) {
    throw new InvalidOptionError('orchestrator.cwd', 'expected a directory path')
  }
  if (env !== undefined && !isStringRecord(env)) {
    throw new InvalidOptionError('orchestrator.env', 'expected an object of string values')
  }
  if (stopSignal !== undefined && !Object.hasOwn(osConstants.signals, stopSignal)) {
    throw new InvalidOptionError('orchestrator.stopSignal', `expected a signal name such as "SIGINT", got ${JSON.stringify(stopSignal)}`)
  }
  return {
    command: [...command],
    cwd: cwd === undefined ? undefined : path.resolve(cwd),
    env: { ...env },
    stopSignal: stopSignal ?? 'SIGINT',
    killAfterMs: positiveInteger('orchestrator.killAfterMs', options.killAfterMs, 10_000)
  }
}

function resolveRedis (options: RedisOptions | undefined): Required<RedisOptions> | null {
  if (options === undefined) return null
  let url: URL | null = null
  try {
    url = new URL(options.url)
  } catch {}
  if (url === null || (url.protocol !== 'redis:' && url.protocol !== 'rediss:')) {
    throw new InvalidOptionError('redis.url', `expected a redis:// or rediss:// URL, got ${JSON.stringify(options.url)}`)
  }
  const key = options.key ?? 'sprint-dashboard'
  if (typeof key !== 'string' || key === '') throw new InvalidOptionError('redis.key', 'expected a non-empty string')
  return { url: options.url, key }
}

/**
 * Applies defaults and checks every option once, at registration, so a bad
 * configuration fails at start-up rather than on the first request.
 */
export function resolveOptions (options: SprintDashboardOptions = {}): ResolvedOptions {
  const prefix = options.prefix ?? ''
  if (prefix !== '' && (!prefix.startsWith('/') || prefix.endsWith('/'))) {
    throw new InvalidOptionError('prefix', `expected "" or a path like "/sprint", got ${JSON.stringify(prefix)}`)
  }
  const allowedOrigins = options.allowedOrigins ?? []
  if (allowedOrigins !== '*' && !Array.isArray(allowedOrigins)) {
    throw new InvalidOptionError('allowedOrigins', 'expected a list of origins or "*"')
  }
  const allowedHosts = options.allowedHosts ?? []
  if (allowedHosts !== '*' && (!Array.isArray(allowedHosts) || allowedHosts.some(host => typeof host !== 'string' || host.trim() === ''))) {
    throw new InvalidOptionError('allowedHosts', 'expected a list of host names or "*"')
  }
  if (options.ingestToken !== undefined && (typeof options.ingestToken !== 'string' || options.ingestToken.length === 0)) {
    throw new InvalidOptionError('ingestToken', 'expected a non-empty string')
  }
  // A string such as "false" from a config file would otherwise turn the route on.
  if (options.metrics !== undefined && typeof options.metrics !== 'boolean') {
    throw new InvalidOptionError('metrics', `expected true or false, got ${JSON.stringify(options.metrics)}`)
  }
  return {
    prefix,
    dbPath: options.dbPath ?? 'sprint-runner.db',
    artifactsDir: path.resolve(options.artifactsDir ?? '_bmad-output/implementation-artifacts'),
    dashboardDir: path.resolve(options.dashboardDir ?? path.join(packageRoot, 'dashboard')),
    dataFiles: options.dataFiles ?? defaultDataFiles,
    corsOrigin: options.corsOrigin ?? '*',
    heartbeatIntervalMs: positiveInteger('heartbeatIntervalMs', options.heartbeatIntervalMs, 30_000),
    heartbeatTimeoutMs: positiveInteger('heartbeatTimeoutMs', options.heartbeatTimeoutMs, 10_000),
    recentEvents: positiveInteger('recentEvents', options.recentEvents, 50),
    retainEvents: positiveInteger('retainEvents', options.retainEvents, 100_000),
    maxReplay: positiveInteger('maxReplay', options.maxReplay, 10_000),
    maxBufferedBytes: positiveInteger('maxBufferedBytes', options.maxBufferedBytes, 4 * 1024 * 1024),
    maxConnections: positiveInteger('maxConnections', options.maxConnections, 10_000),
    allowedOrigins,
    allowedHosts,
    ingestToken: options.ingestToken,
    watchSprintStatus: options.watchSprintStatus ?? false,
    metrics: options.metrics ?? false,
    orchestrator: resolveOrchestrator(options.orchestrator),
    redis: resolveRedis(options.redis)
  }
}
