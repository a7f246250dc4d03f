import fp from 'fastify-plugin'
import type { FastifyBaseLogger, FastifyPluginAsync } from 'fastify'
import { existsSync } from 'node:fs'
import type { Batch, BatchSize, EventPayload, EventTypeName } from '../events/schemas.ts'
import { isEventType, validateEventInput } from '../events/validate.ts'
import { RequestLimits } from '../events/protocol.ts'
import {
  OrchestratorNotConfiguredError,
  OrchestratorNotRunningError,
  OrchestratorRunningError,
  OrchestratorSpawnFailedError
} from '../errors.ts'
import {
  createOutputBuffer,
  SpawnError,
  spawnOrchestrator,
  type OrchestratorProcess,
  type OutputLine,
  type OutputStream
} from '../lib/orchestrator-process.ts'
import type { SprintStore } from '../lib/sqlite-store.ts'
import type { ResolvedOrchestratorOptions } from '../options.ts'
import type { SprintEvents } from './events.ts'

/** Longest stdout line read as a possible NDJSON event: the ingest route's body limit, for the same events. */
const MAX_EVENT_LINE_BYTES = RequestLimits.ingestBodyBytes
/** On `app.close()`, how long the orchestrator gets to finish after the stop signal before its group is killed. */
const CLOSE_GRACE_MS = 8000
/** After SIGKILL, how long close waits for the exit to be reported. */
const KILL_WAIT_MS = 1000

/** A stdout line that is `{ "type", "payload" }` (and maybe `timestamp`) of a known event type, else null. */
function parseEventLine (text: string): { type: EventTypeName, payload: unknown, timestamp?: number } | null {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return null
  }
  if (typeof value !== 'object' || value === null || !('payload' in value)) return null
  const { type, payload, timestamp } = value as { type?: unknown, payload: unknown, timestamp?: unknown }
  if (!isEventType(type)) return null
  return typeof timestamp === 'number' ? { type, payload, timestamp } : { type, payload }
}

/** What the last orchestrator the service ran ended with. */
export interface LastExit {
  code: number | null
  signal: string | null
  /** ms since the epoch */
  at: number
  duration_ms: number
  /** It exited after a stop request: a death by the stop signal is then no failure. */
  stop_requested: boolean
}

/** `GET /api/orchestrator/status`. Batch fields come from the store, so they also describe an orchestrator this service did not start. */
export interface OrchestratorStatus {
  configured: boolean
  status: 'idle' | 'running' | 'stopping'
  pid: number | null
  batch_size: BatchSize | null
  started_at: number | null
  batch_id: number | null
  cycles_completed: number | null
  max_cycles: Batch['max_cycles'] | null
  current_stories: string[]
  last_exit: LastExit | null
  /** The newest batch, running or ended: what the dashboard reports once the orchestrator is gone. */
  last_batch: Batch | null
}

export type StopResult = { status: 'stopping' | 'killing' } | { status: 'cleaned', batch_id: number }

/** Who asked, for the log: every start and stop names its requester. */
export interface Requester {
  remoteAddress: string | undefined
}

interface Run {
  batchSize: BatchSize
  argv: string[]
  /** Null until the OS has started the process. */
  child: OrchestratorProcess | null
  /** Resolves once the spawn succeeded or failed. */
  spawned: Promise<void>
  startedAt: number
  stopRequested: boolean
  killing: boolean
  killTimer: NodeJS.Timeout | null
  /** Resolves once the run is over and its events are out. */
  finished: Promise<void>
}

export interface SupervisorDependencies {
  config: ResolvedOrchestratorOptions | null
  events: SprintEvents
  store: SprintStore
  log: FastifyBaseLogger
  ingestToken: string | undefined
}

/**
 * Supervises at most one orchestrator process: starts it with the requested batch size, stops it
 * (stop signal, then SIGTERM and SIGKILL to its process group), watches it exit, keeps its output,
 * and turns all of it into events:
 *
 * - `orchestrator:start`, `orchestrator:stopping`, `orchestrator:exit` from the service itself;
 * - stdout lines that are `{ "type", "payload" }` of a known event type are emitted as that event;
 * - a batch still `running` when the orchestrator exits is ended by the service, `stopped` after a stop
 *   request and `error` otherwise, so a dead orchestrator never leaves a batch running.
 */
export function createOrchestratorSupervisor (deps: SupervisorDependencies) {
  const { config, events, store, log } = deps
  const output = createOutputBuffer()
  let run: Run | null = null
  let lastExit: LastExit | null = null
  let closing = false

  /** Emits one event; a failure is logged, never thrown into process handling. */
  async function emit<T extends EventTypeName> (type: T, payload: EventPayload<T>): Promise<void> {
    try {
      await events.emit(type, payload)
    } catch (err) {
      log.error({ err, type }, 'could not emit an orchestrator event')
    }
  }

  function addOutput (stream: OutputStream, text: string, pid: number): void {
    output.push(stream, text)
    log.debug({ pid, stream, line: text }, 'orchestrator output')
  }

  /** An orchestrator may report by printing NDJSON events instead of posting them; anything else is output. */
  function onStdoutLine (text: string, pid: number): void {
    const input = text.startsWith('{') ? parseEventLine(text) : null
    if (input !== null) {
      // Checked here, synchronously, so that an invalid event stays in the output where it was printed.
      const details = validateEventInput(input)
      if (details.length === 0) {
        events.emit(input.type, input.payload as never, input.timestamp === undefined ? {} : { timestamp: input.timestamp })
          .catch(err => log.error({ err, pid }, 'could not store an event the orchestrator printed'))
        return
      }
      log.warn({ pid, type: input.type, details }, 'orchestrator printed an invalid event')
    }
    addOutput('stdout', text, pid)
  }

  function childEnv (batchSize: BatchSize, serviceUrl: string): NodeJS.ProcessEnv {
    // The child inherits the service's environment, as spawn does by default; the configured
    // variables come on top, and the contract variables last so configuration cannot shadow them.
    const env: NodeJS.ProcessEnv = { ...process.env, ...config!.env, SPRINT_BATCH_SIZE: String(batchSize), SPRINT_URL: serviceUrl }
    if (deps.ingestToken !== undefined) env.SPRINT_INGEST_TOKEN = deps.ingestToken
    return env
  }

  /** Records the exit, ends a batch the orchestrator left running, and frees the slot for the next start. */
  async function finish (current: Run, child: OrchestratorProcess): Promise<void> {
    const exit = await child.exited
    if (current.killTimer !== null) clearTimeout(current.killTimer)
    lastExit = { code: exit.code, signal: exit.signal, at: exit.at, duration_ms: exit.durationMs, stop_requested: current.stopRequested }
    const level = exit.code === 0 || current.stopRequested ? 'info' : 'warn'
    log[level]({ pid: child.pid, code: exit.code, signal: exit.signal, durationMs: exit.durationMs }, 'orchestrator exited')
    await emit('orchestrator:exit', { pid: child.pid, code: exit.code, signal: exit.signal, duration_ms: exit.durationMs })
    const batch = store.getActiveBatch()
    if (batch !== null) {
      const status = current.stopRequested ? 'stopped' : 'error'
      log.warn({ batchId: batch.id, status }, 'the orchestrator exited with its batch still running; ending the batch')
      await emit('batch:end', { batch_id: batch.id, cycles_completed: batch.cycles_completed, status })
    }
    if (run === current) run = null
    process.off('exit', killOnHostExit)
  }

  /** Last resort when the host process exits without closing the app: the group must not outlive it. */
  function killOnHostExit (): void {
    run?.child?.signal('SIGKILL', 'group')
  }

  function escalate (current: Run, child: OrchestratorProcess): void {
    current.killing = true
    child.signal('SIGTERM', 'group')
    current.killTimer = setTimeout(() => child.signal('SIGKILL', 'group'), config!.killAfterMs)
  }

  return {
    get configured (): boolean {
      return config !== null
    },

    /**
     * Starts the orchestrator with `batchSize`. Throws 501 when none is configured, 409 while one runs
     * (or a batch is left running in the store), 500 when the program could not be started.
     *
     * @example
     * await app.orchestrator.start(2, 'http://127.0.0.1:8080', { remoteAddress: '127.0.0.1' }) // { status: 'started', batch_size: 2, pid: 4242 }
     */
    async start (batchSize: BatchSize, serviceUrl: string, requester: Requester): Promise<{ status: 'started', batch_size: BatchSize, pid: number }> {
      if (config === null) throw new OrchestratorNotConfiguredError()
      if (closing) throw new OrchestratorRunningError('The service is shutting down')
      if (run !== null) {
        throw new OrchestratorRunningError(run.stopRequested
          ? `The orchestrator (pid ${run.child?.pid ?? '?'}) is stopping; start again once it has exited`
          : `The orchestrator is already running (pid ${run.child?.pid ?? '?'}, batch size ${run.batchSize})`)
      }
      const stale = store.getActiveBatch()
      if (stale !== null) {
        throw new OrchestratorRunningError(`Batch ${stale.id} is still running, started by an orchestrator this service is not running; ` +
          'stop it first (POST /api/orchestrator/stop ends it as stopped)')
      }
      const size = String(batchSize)
      const argv = config.command.map(arg => arg.replaceAll('{batch_size}', size))
      let resolveFinished!: () => void
      let resolveSpawned!: () => void
      const current: Run = {
        batchSize,
        argv,
        child: null,
        spawned: new Promise(resolve => { resolveSpawned = resolve }),
        startedAt: Date.now(),
        stopRequested: false,
        killing: false,
        killTimer: null,
        finished: new Promise(resolve => { resolveFinished = resolve })
      }
      // Taken before the first await, so two concurrent starts cannot both spawn.
      run = current
      let child: OrchestratorProcess
      try {
        child = await spawnOrchestrator({
          argv,
          cwd: config.cwd,
          env: childEnv(batchSize, serviceUrl),
          maxStdoutLineBytes: MAX_EVENT_LINE_BYTES,
          onStdoutLine: text => onStdoutLine(text, current.child?.pid ?? 0),
          onStderrLine: text => addOutput('stderr', text, current.child?.pid ?? 0)
        })
      } catch (error) {
        run = null
        resolveSpawned()
        resolveFinished()
        const reason = error instanceof SpawnError && error.code === 'ENOENT' && config.cwd !== undefined && !existsSync(config.cwd)
          ? `working directory ${config.cwd} does not exist (${error.message})`
          : (error as Error).message
        log.error({ err: error, argv, cwd: config.cwd, remoteAddress: requester.remoteAddress }, 'orchestrator could not be started')
        throw new OrchestratorSpawnFailedError(JSON.stringify(argv), reason)
      }
      current.child = child
      current.startedAt = child.startedAt
      resolveSpawned()
      process.on('exit', killOnHostExit)
      log.info({ pid: child.pid, argv, cwd: config.cwd, batchSize, remoteAddress: requester.remoteAddress }, 'orchestrator started')
      await emit('orchestrator:start', { pid: child.pid, batch_size: batchSize })
      finish(current, child).finally(resolveFinished).catch(err => log.error({ err }, 'orchestrator exit handling failed'))
      return { status: 'started', batch_size: batchSize, pid: child.pid }
    },

    /**
     * Stop, in steps: the first call sends `stopSignal` to the orchestrator (finish the current command,
     * end the batch, exit); the next sends SIGTERM to its process group and SIGKILL after `killAfterMs`;
     * a third sends SIGKILL at once. With nothing running but a batch left `running` in the store (a
     * crashed or external orchestrator), ends that batch as `stopped`. Throws 409 when there is nothing to stop.
     */
    async stop (requester: Requester): Promise<StopResult> {
      const current = run
      if (current !== null && current.child === null) {
        // Still spawning (a few milliseconds): stop what comes out of it.
        await current.spawned
        return await this.stop(requester)
      }
      if (current !== null && current.child !== null) {
        const child = current.child
        if (!current.stopRequested) {
          current.stopRequested = true
          const signal = config!.stopSignal
          // To the orchestrator alone: a signal to the group would interrupt the agent command it is
          // to finish. Escalation (below) goes to the group.
          child.signal(signal, 'leader')
          log.info({ pid: child.pid, argv: current.argv, signal, remoteAddress: requester.remoteAddress }, 'orchestrator stop requested')
          await emit('orchestrator:stopping', { pid: child.pid, signal })
          return { status: 'stopping' }
        }
        if (!current.killing) {
          escalate(current, child)
          log.warn({ pid: child.pid, argv: current.argv, killAfterMs: config!.killAfterMs, remoteAddress: requester.remoteAddress }, 'orchestrator force stop: SIGTERM to its process group')
          await emit('orchestrator:stopping', { pid: child.pid, signal: 'SIGTERM' })
          return { status: 'killing' }
        }
        log.warn({ pid: child.pid, argv: current.argv, remoteAddress: requester.remoteAddress }, 'orchestrator force stop again: SIGKILL to its process group')
        child.signal('SIGKILL', 'group')
        return { status: 'killing' }
      }
      const batch = store.getActiveBatch()
      if (batch === null) throw new OrchestratorNotRunningError()
      log.info({ batchId: batch.id, remoteAddress: requester.remoteAddress }, 'ending a batch left running with no orchestrator running')
      await emit('batch:end', { batch_id: batch.id, cycles_completed: batch.cycles_completed, status: 'stopped' })
      return { status: 'cleaned', batch_id: batch.id }
    },

    status (): OrchestratorStatus {
      const batch = store.getActiveBatch()
      const current = run
      return {
        configured: config !== null,
        status: current !== null ? (current.stopRequested ? 'stopping' : 'running') : batch !== null ? 'running' : 'idle',
        pid: current?.child?.pid ?? null,
        batch_size: current?.batchSize ?? null,
        started_at: current?.startedAt ?? batch?.started_at ?? null,
        batch_id: batch?.id ?? null,
        cycles_completed: batch?.cycles_completed ?? null,
        max_cycles: batch?.max_cycles ?? null,
        current_stories: batch === null ? [] : store.getCurrentCycleStories(batch.id),
        last_exit: lastExit,
        last_batch: store.listBatches(1)[0] ?? null
      }
    },

    /** The kept output lines after line `after`; see `createOutputBuffer`. */
    output (after: number): { lines: OutputLine[], next: number } {
      return output.after(after)
    },

    /** Pid of the running orchestrator, or null. */
    get pid (): number | null {
      return run?.child?.pid ?? null
    },

    /**
     * Stops a running orchestrator for shutdown: the stop signal, then SIGKILL to its group after
     * `killAfterMs` (at most 8 s), so that close finishes within 10 s and leaves no process behind.
     */
    async close (): Promise<void> {
      closing = true
      const current = run
      if (current === null) return
      await current.spawned
      const child = current.child
      if (child === null) return
      if (!current.stopRequested) {
        current.stopRequested = true
        child.signal(config!.stopSignal, 'leader')
        log.info({ pid: child.pid, signal: config!.stopSignal }, 'stopping the orchestrator: the service is shutting down')
        await emit('orchestrator:stopping', { pid: child.pid, signal: config!.stopSignal })
      }
      const grace = Math.min(config!.killAfterMs, CLOSE_GRACE_MS)
      let timer: NodeJS.Timeout | undefined
      const timedOut = await Promise.race([
        current.finished.then(() => false),
        new Promise<boolean>(resolve => { timer = setTimeout(resolve, grace, true) })
      ])
      clearTimeout(timer)
      if (!timedOut) return
      log.warn({ pid: child.pid, graceMs: grace }, 'the orchestrator did not stop in time; killing its process group')
      child.signal('SIGKILL', 'group')
      await Promise.race([current.finished, new Promise(resolve => { timer = setTimeout(resolve, KILL_WAIT_MS) })])
      clearTimeout(timer)
    }
  }
}

export type OrchestratorSupervisor = ReturnType<typeof createOrchestratorSupervisor>

declare module 'fastify' {
  interface FastifyInstance {
    /** The orchestrator supervisor: `start`, `stop`, `status`, `output`. */
    orchestrator: OrchestratorSupervisor
  }
}

export interface OrchestratorPluginOptions {
  orchestrator: ResolvedOrchestratorOptions | null
  ingestToken: string | undefined
}

/**
 * Decorates the parent with `orchestrator` (the supervisor); on close, stops a running orchestrator
 * and its process group. Registered after the events plugin, so its onClose runs first and the exit
 * is still recorded.
 */
const orchestratorPlugin: FastifyPluginAsync<OrchestratorPluginOptions> = async function orchestratorPlugin (fastify, options) {
  const supervisor = createOrchestratorSupervisor({
    config: options.orchestrator,
    events: fastify.events,
    store: fastify.sprintStore,
    log: fastify.log,
    ingestToken: options.ingestToken
  })
  fastify.decorate('orchestrator', supervisor)
  fastify.addHook('onClose', async () => {
    await supervisor.close()
  })
}

export default fp(orchestratorPlugin, {
  name: 'sprint-orchestrator',
  fastify: '5.x',
  dependencies: ['sprint-store', 'sprint-events']
})
