import { cpus } from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import { spawnBenchChild, type BenchChild } from './child-process.ts'
import type { CollectResult, ConnectResult, ProgressResult } from './client-harness.ts'
import { mergeHistograms, summarise, type LatencySummary } from './latency-histogram.ts'
import { machineCpuBetween, sampleMachineCpu, type MachineCpu } from './machine-cpu.ts'
import { sampleTcp, tcpBetween, type TcpSample } from './tcp-stats.ts'
import type { EmitResult, EmitterKind, MeasureResult, MemoryResult } from './server-control.ts'

/**
 * A session is one server process under test plus the client processes
 * connected to it. The runner opens one per (server, N, batch) and measures
 * one or more emit windows on it.
 */

export type ServerKind = 'baseline' | 'service'

const SERVER_SCRIPTS: Record<ServerKind, string> = {
  baseline: './baseline-server.ts',
  service: './service-server.ts'
}

export interface SessionOptions {
  server: ServerKind
  clients: number
  /** Connect with `?batch=1` (several NDJSON envelopes per frame). */
  batch?: boolean
  /** Client processes the connections are spread over (1 or 2 on a 2-core machine). */
  clientProcesses?: number
  /** Handshakes in flight at once while the session connects. */
  connectConcurrency?: number
  /** Extra node flags for the server process, e.g. `--cpu-prof`. */
  serverNodeArgs?: string[]
  clientNodeArgs?: string[]
  serverEnv?: NodeJS.ProcessEnv
  /** How events reach the server: one per turn in-process (default), all due ones per turn, or POSTed from another process. */
  emitter?: EmitterKind
}

export interface WindowOptions {
  rate: number
  seconds: number
  /** How long to wait for stragglers once the emitter is done before counting them as lost. */
  drainTimeoutMs?: number
}

export interface WindowResult {
  server: ServerKind
  batch: boolean
  emitter: EmitterKind
  clients: number
  targetRate: number
  seconds: number
  achievedRate: number
  emitted: number
  shed: number
  expected: number
  delivered: number
  lost: number
  gaps: number
  duplicates: number
  closes: Record<string, number>
  /** Latency from emit to receipt, in ms. */
  latencyMs: LatencySummary
  /** Server CPU (user + system) over the window, divided by messages delivered. */
  serverCpuUsPerDelivered: number
  serverCpuPercent: number
  serverRssPeakMiB: number
  /** Server time spent inside the emit calls, per event (the rest of the fan-out happens after emit returns). */
  emitCallUsPerEvent: number
  emitCallCpuUsPerEvent: number
  /** How late the starved emitter ran against its schedule: p99 and max, ms. */
  scheduleLagP99Ms: number
  scheduleLagMaxMs: number
  eventLoopDelayMaxMs: number
  /** The server's event-loop delay over the window (10 ms resolution), p99. */
  eventLoopDelayP99Ms: number
  clientCpuPercent: number
  /** Messages per WebSocket frame seen by the clients (1 without batching). */
  eventsPerFrame: number
  /** From the end of emitting until the last expected message arrived (or the drain gave up). */
  drainMs: number
  negativeLatencies: number
  /** The whole machine over the window (both cores, all processes, softirq included). */
  machineCpu: MachineCpu | undefined
  /**
   * CPU used on this machine by anything but the server, the clients and softirq, in % of one core:
   * other jobs sharing the cores make a window slower, so it is reported next to the numbers.
   */
  otherLoadPercent: number | undefined
  /** Machine-wide TCP memory pressure and retransmits over the window and its drain (undefined off Linux). */
  tcp: TcpSample | undefined
}

export interface Session {
  readonly options: Required<Pick<SessionOptions, 'server' | 'clients' | 'batch'>>
  readonly server: BenchChild
  readonly url: string
  readonly fdLimits: number[]
  connect(count: number, concurrency: number): Promise<ConnectResult>
  /** Opens `count` raw WebSocket handshakes at once from one client process, times them to the last `init`, then drops them. */
  storm(count: number): Promise<ConnectResult>
  /** Resolves once the server tracks at most `count` clients (after clients went away), or after `timeoutMs`. */
  waitForServerClients(count: number, timeoutMs?: number): Promise<number>
  open(): Promise<number>
  serverMemory(): Promise<MemoryResult>
  measure(window: WindowOptions): Promise<WindowResult>
  holdIdle(ms: number): Promise<MeasureResult>
  closeClients(): Promise<void>
  close(): Promise<void>
}

export async function openSession (options: SessionOptions): Promise<Session> {
  const batch = options.batch ?? false
  const emitter = options.emitter ?? 'turn'
  const processCount = Math.max(1, Math.min(options.clientProcesses ?? 1, options.clients || 1))
  // Started side by side: each child pays a tsx start-up of about a second.
  const started = await Promise.allSettled([
    spawnBenchChild(SERVER_SCRIPTS[options.server], [], { nodeArgs: ['--expose-gc', ...(options.serverNodeArgs ?? [])], env: options.serverEnv }),
    ...Array.from({ length: processCount }, () => spawnBenchChild('./client-harness.ts', [], { nodeArgs: options.clientNodeArgs })),
    ...(emitter === 'http' ? [spawnBenchChild('./http-emitter.ts')] : [])
  ])
  const children = started.flatMap((result) => result.status === 'fulfilled' ? [result.value] : [])
  const failure = started.find((result) => result.status === 'rejected')
  if (failure !== undefined) {
    await Promise.all(children.map((child) => child.close()))
    throw failure.reason
  }
  const [server, ...others] = children as [BenchChild, ...BenchChild[]]
  const httpEmitter = emitter === 'http' ? others.pop() : undefined
  const clientProcesses = others
  const url = `ws://127.0.0.1:${server.ready.port as number}/ws${batch ? '?batch=1' : ''}`
  const onEach = <T>(command: string, args?: unknown, timeoutMs?: number): Promise<T[]> =>
    Promise.all(clientProcesses.map((child) => child.request<T>(command, args, timeoutMs)))

  const connect = async (count: number, concurrency: number): Promise<ConnectResult> => {
    const shares = splitEvenly(count, clientProcesses.length)
    const results = await Promise.all(clientProcesses.map((child, i) => child.request<ConnectResult>('connect', {
      url,
      count: shares[i],
      concurrency: Math.max(1, Math.ceil(concurrency / clientProcesses.length))
    }, 300_000)))
    return {
      opened: sum(results.map((r) => r.opened)),
      failed: sum(results.map((r) => r.failed)),
      errors: results.flatMap((r) => r.errors).slice(0, 5),
      elapsedMs: Math.max(...results.map((r) => r.elapsedMs)),
      cpuUs: sum(results.map((r) => r.cpuUs))
    }
  }

  const storm = async (count: number): Promise<ConnectResult> => {
    const [first] = clientProcesses
    if (first === undefined) throw new Error('no client process')
    return first.request<ConnectResult>('storm', { port: server.ready.port, path: `/ws${batch ? '?batch=1' : ''}`, count }, 120_000)
  }

  const waitForServerClients = async (count: number, timeoutMs = 10_000): Promise<number> => {
    const deadline = performance.now() + timeoutMs
    while (true) {
      const now = await server.request<number>('clientCount')
      if (now <= count || performance.now() > deadline) return now
      await sleep(20)
    }
  }

  const open = async (): Promise<number> => sum((await onEach<ProgressResult>('progress')).map((p) => p.open))

  const session: Session = {
    options: { server: options.server, clients: options.clients, batch },
    server,
    url,
    fdLimits: [server.ready.fdLimit, ...clientProcesses.map((child) => child.ready.fdLimit)],
    connect,
    storm,
    waitForServerClients,
    open,
    serverMemory: () => server.request<MemoryResult>('memory'),

    async measure ({ rate, seconds, drainTimeoutMs = 30_000 }: WindowOptions): Promise<WindowResult> {
      const openAtStart = await open()
      await onEach('reset')
      await server.request('measureStart')
      const machineBefore = sampleMachineCpu()
      const tcpBefore = sampleTcp()
      const emit = httpEmitter === undefined
        ? await server.request<EmitResult>('emit', { rate, seconds, emitter }, seconds * 1000 + 120_000)
        : await httpEmitter.request<EmitResult>('emit', { rate, seconds, port: server.ready.port }, seconds * 1000 + 120_000)
      const emitEndedAt = performance.now()
      const expected = emit.emitted * openAtStart

      // Wait for every expected message, or until deliveries stop moving for a while, or the drain timeout.
      let delivered = 0
      let lastChangeAt = performance.now()
      while (true) {
        const now = sum((await onEach<ProgressResult>('progress')).map((p) => p.delivered))
        if (now !== delivered) { delivered = now; lastChangeAt = performance.now() }
        if (delivered >= expected) break
        if (performance.now() - lastChangeAt > 5_000 || performance.now() - emitEndedAt > drainTimeoutMs) break
        await sleep(50)
      }
      const drainMs = performance.now() - emitEndedAt
      const machineAfter = sampleMachineCpu()
      const tcp = tcpBetween(tcpBefore, sampleTcp())
      const measured = await server.request<MeasureResult>('measureStop')
      const collected = await onEach<CollectResult>('collect')
      const histogram = mergeHistograms(collected.map((c) => c.histogram))
      const deliveredTotal = sum(collected.map((c) => c.delivered))
      const cpuUs = measured.cpuUserUs + measured.cpuSystemUs
      const closes: Record<string, number> = {}
      for (const c of collected) for (const [code, count] of Object.entries(c.closes)) closes[code] = (closes[code] ?? 0) + count
      const frames = sum(collected.map((c) => c.framesReceived))
      const machineCpu = machineCpuBetween(machineBefore, machineAfter)
      const serverCpuPercent = 100 * cpuUs / 1000 / measured.elapsedMs
      const clientCpuPercent = 100 * sum(collected.map((c) => c.cpuUs)) / 1000 / measured.elapsedMs
      return {
        server: options.server,
        batch,
        emitter,
        clients: openAtStart,
        targetRate: rate,
        seconds,
        achievedRate: emit.achievedRate,
        emitted: emit.emitted,
        shed: emit.shed,
        expected,
        delivered: deliveredTotal,
        lost: Math.max(0, expected - deliveredTotal),
        gaps: sum(collected.map((c) => c.gaps)),
        duplicates: sum(collected.map((c) => c.duplicates)),
        closes,
        latencyMs: summarise(histogram),
        serverCpuUsPerDelivered: deliveredTotal === 0 ? 0 : cpuUs / deliveredTotal,
        serverCpuPercent,
        serverRssPeakMiB: measured.rssPeakBytes / 2 ** 20,
        emitCallUsPerEvent: emit.emitted === 0 ? 0 : emit.emitCallUs / emit.emitted,
        emitCallCpuUsPerEvent: emit.emitted === 0 ? 0 : emit.emitCallCpuUs / emit.emitted,
        scheduleLagP99Ms: emit.scheduleLagP99Ms,
        scheduleLagMaxMs: emit.scheduleLagMaxMs,
        eventLoopDelayMaxMs: measured.eventLoopDelayMaxMs,
        eventLoopDelayP99Ms: measured.eventLoopDelayP99Ms,
        clientCpuPercent,
        eventsPerFrame: frames === 0 ? 0 : deliveredTotal / frames,
        drainMs,
        negativeLatencies: sum(collected.map((c) => c.negativeLatencies)),
        machineCpu,
        otherLoadPercent: machineCpu === undefined
          ? undefined
          : Math.max(0, (100 - machineCpu.idlePercent - machineCpu.softirqPercent) * cpus().length - serverCpuPercent - clientCpuPercent),
        tcp
      }
    },

    async holdIdle (ms: number): Promise<MeasureResult> {
      await server.request('measureStart')
      await sleep(ms)
      return server.request<MeasureResult>('measureStop')
    },

    async closeClients (): Promise<void> {
      await onEach('closeAll', undefined, 60_000)
    },

    async close (): Promise<void> {
      await Promise.all([...clientProcesses, ...(httpEmitter === undefined ? [] : [httpEmitter])].map((child) => child.close()))
      await server.close()
    }
  }
  return session
}

/** Opens a session and connects all its clients; closes it again if they do not all get in. */
export async function openConnectedSession (options: SessionOptions): Promise<Session> {
  const session = await openSession(options)
  try {
    const result = await session.connect(options.clients, options.connectConcurrency ?? 500)
    if (result.failed > 0) throw new Error(`${result.failed} of ${options.clients} clients failed to connect to ${options.server}: ${result.errors.join('; ')}`)
  } catch (error) {
    await session.close()
    throw error
  }
  return session
}

function splitEvenly (total: number, parts: number): number[] {
  return Array.from({ length: parts }, (_, i) => Math.floor(total / parts) + (i < total % parts ? 1 : 0))
}

function sum (values: number[]): number {
  return values.reduce((a, b) => a + b, 0)
}
