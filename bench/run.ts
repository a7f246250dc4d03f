import { mkdirSync, writeFileSync } from 'node:fs'
import { cpus, totalmem } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { spawnBenchChild, WANTED_FD_LIMIT } from './child-process.ts'
import { openSession, type ServerKind, type Session, type WindowResult } from './session.ts'
import { formatReport, median, type BenchReport, type ConnectionRow, type ReportedWindow, type SearchResult, type StormRow } from './report.ts'
import type { EmitCostResult } from './emit-cost.ts'
import { EMITTERS, type EmitterKind, type MeasureResult } from './server-control.ts'

/**
 * `npm run bench` — the fan-out benchmark of issue 6: the real service against
 * a bare `ws` baseline, same client harness, one after the other (A/B),
 * loopback only, every step bounded in time. See bench/README.md.
 */

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    seconds: { type: 'string' },
    clients: { type: 'string' },
    rates: { type: 'string' },
    repeat: { type: 'string' },
    'client-procs': { type: 'string' },
    servers: { type: 'string' },
    'no-search': { type: 'boolean', default: false },
    'no-batch': { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    emitter: { type: 'string', default: 'turn' },
    help: { type: 'boolean', default: false }
  }
})

if (flags.help) {
  console.log(`usage: npm run bench -- [--quick] [--seconds S] [--clients 100,1000] [--rates 20,200]
       [--repeat K] [--client-procs 1|2] [--servers service,baseline] [--no-batch] [--no-search] [--profile]
       [--emitter turn|burst|http]   how events reach the server (default turn: one per event-loop turn)`)
  process.exit(0)
}
if (!(EMITTERS as readonly string[]).includes(flags.emitter)) {
  console.error(`--emitter must be one of ${EMITTERS.join(', ')}, not ${flags.emitter}`)
  process.exit(1)
}

const quick = flags.quick
const list = (value: string | undefined, fallback: number[]): number[] => value === undefined ? fallback : value.split(',').map(Number)
const config = {
  quick,
  seconds: Number(flags.seconds ?? (quick ? 2 : 10)),
  clients: list(flags.clients, quick ? [100, 1000] : [100, 1000, 5000, 10000]),
  rates: list(flags.rates, [20, 200]),
  repeat: Number(flags.repeat ?? 1),
  // Two: with batching the server spends less per event than a client does to read it, and one client
  // process (one core at most) would then be what the window measures.
  clientProcesses: Number(flags['client-procs'] ?? 2),
  servers: (flags.servers ?? 'service,baseline').split(',') as ServerKind[],
  /** One event per turn by default: what HTTP ingest and an orchestrator's callbacks produce (issue 16). */
  emitter: flags.emitter as EmitterKind,
  batch: !flags['no-batch'],
  search: !flags['no-search'],
  /** The search at 10,000 clients: rates tried (doubling, then bisecting) and window length. */
  searchClients: 10_000,
  /** From 4 ev/s: 4 → 128 is six doublings, leaving the full run three steps to bisect. */
  searchSteps: quick ? 2 : 9,
  searchStartRate: 4,
  searchSeconds: quick ? 2 : 10,
  searchMinEvents: quick ? 4 : 10,
  searchMaxSeconds: 30,
  /**
   * The service's heartbeat in matrix and search sessions. Variants of one N are up together, so a ping
   * round over 10,000 idle sockets in a neighbour would land in another's window; the heartbeat gets a
   * session of its own instead (1 s rounds, idle hold, then a window at 2 ev/s).
   */
  matrixHeartbeatMs: 600_000,
  heartbeatWindowRate: 2,
  /** Idle hold after connecting (CPU and loop delay with no events); the service's heartbeat session holds longer. */
  idleHoldMs: quick ? 0 : 2000,
  idleClients: 10_000,
  stormClients: 1_000,
  emitCostEvents: 100_000,
  /** The seed's budget from event to every dashboard. */
  latencyBudgetMs: 500,
  /** A cell is re-measured at an equal rate when the baseline achieved less than this share of the target… */
  equalRateBelow: 0.95,
  /** …at this share of what the baseline achieved (just below its saturation), if that is at least equalRateMin ev/s. */
  equalRateShare: 0.9,
  equalRateMin: 1
}

/** Two significant digits: the rates of the search and of the equal-rate windows. */
const roundRate = (rate: number): number => Number(rate.toPrecision(2))

const stamp = new Date().toISOString().replace(/[:.]/g, '-')
const resultsDir = fileURLToPath(new URL('./results/', import.meta.url))
const profileDir = path.join(resultsDir, `profiles-${stamp}`)
let sessionCount = 0
/** With --profile every process writes a .cpuprofile under profiles-<stamp>/<n>-<variant>-<N>/{server,clients}/. */
function profileArgs (name: string, role: 'server' | 'clients' | 'emit-cost'): string[] {
  return flags.profile ? ['--cpu-prof', `--cpu-prof-dir=${path.join(profileDir, name, role)}`] : []
}

/** The variants measured for each N, in this order (A/B alternating per N). */
function variants (): Array<{ server: ServerKind, batch: boolean }> {
  const out: Array<{ server: ServerKind, batch: boolean }> = []
  for (const server of config.servers) {
    out.push({ server, batch: false })
    if (server === 'service' && config.batch) out.push({ server, batch: true })
  }
  return out
}

function log (line: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}\n`)
}

const windows: ReportedWindow[] = []
const connections: ConnectionRow[] = []
const searches: SearchResult[] = []
const storms: StormRow[] = []
const notes: string[] = []
const fdLimits = new Set<number>()
let emitCost: EmitCostResult | undefined

function describe (w: WindowResult): string {
  return `${w.server}${w.batch ? '+batch' : ''} N=${w.clients} R=${w.targetRate}: ${w.achievedRate.toFixed(1)} ev/s, ` +
    `${w.delivered}/${w.expected} delivered, p99 ${w.latencyMs.p99.toFixed(1)} ms, ${w.serverCpuUsPerDelivered.toFixed(2)} µs/msg`
}

/** Opens a session, measures connecting (storm, idle RSS) and returns it with all clients in. */
async function openMeasuredSession (server: ServerKind, batch: boolean, clients: number, serverEnv: NodeJS.ProcessEnv = {}, idleHoldMs = config.idleHoldMs): Promise<Session> {
  const name = `${String(++sessionCount).padStart(2, '0')}-${server}${batch ? '-batch' : ''}-${clients}`
  const session = await openSession({
    server,
    batch,
    clients,
    clientProcesses: config.clientProcesses,
    serverNodeArgs: profileArgs(name, 'server'),
    clientNodeArgs: profileArgs(name, 'clients'),
    serverEnv,
    emitter: config.emitter
  })
  for (const limit of session.fdLimits) fdLimits.add(limit)
  try {
    // Warm the server's connect path (JIT, lazily loaded modules) so the storm measures steady state, not start-up.
    await session.connect(10, 10)
    await session.closeClients()
    await session.waitForServerClients(0)
    if (clients === config.stormClients) {
      const result = await session.storm(config.stormClients)
      storms.push({ server, batch, clients: config.stormClients, ms: result.elapsedMs, failed: result.failed, clientCpuMs: result.cpuUs / 1000, errors: result.errors })
      log(`${server}${batch ? '+batch' : ''}: storm of ${config.stormClients} handshakes to init in ${result.elapsedMs.toFixed(0)} ms`)
      await session.waitForServerClients(0)
    }
    const before = await session.serverMemory()
    // Up to 1,000 at once is the connection storm; beyond that, 500 handshakes in flight keep the accept queue from overflowing.
    const concurrency = clients <= config.stormClients ? clients : 500
    await session.server.request('measureStart')
    const connected = await session.connect(clients, concurrency)
    const serverDuringConnect = await session.server.request<MeasureResult>('measureStop')
    if (connected.failed > 0) throw new Error(`${connected.failed} of ${clients} clients failed to connect to ${server}: ${connected.errors.join('; ')}`)
    const after = await session.serverMemory()
    // One unmeasured second of events first, so the first window does not pay for JIT warm-up of the send path
    // (and the idle hold after it does not count the tail of the connect work).
    await session.measure({ rate: Math.min(20, Math.max(1, Math.round(20_000 / clients))), seconds: quick ? 0.5 : 1 })
    const idle = idleHoldMs > 0 ? await session.holdIdle(idleHoldMs) : undefined
    connections.push({
      server,
      batch,
      clients,
      concurrency,
      connectMs: connected.elapsedMs,
      connectServerCpuMs: (serverDuringConnect.cpuUserUs + serverDuringConnect.cpuSystemUs) / 1000,
      connectClientCpuMs: connected.cpuUs / 1000,
      rssBeforeMiB: before.rssBytes / 2 ** 20,
      rssAfterMiB: after.rssBytes / 2 ** 20,
      rssPerConnectionKiB: (after.rssBytes - before.rssBytes) / 1024 / clients,
      heapPerConnectionKiB: (after.heapUsedBytes - before.heapUsedBytes) / 1024 / clients,
      idleCpuPercent: idle === undefined ? Number.NaN : 100 * (idle.cpuUserUs + idle.cpuSystemUs) / 1000 / idle.elapsedMs,
      idleEventLoopDelayMaxMs: idle?.eventLoopDelayMaxMs ?? Number.NaN,
      heartbeatIntervalMs: serverEnv.BENCH_HEARTBEAT_INTERVAL_MS === undefined ? undefined : Number(serverEnv.BENCH_HEARTBEAT_INTERVAL_MS)
    })
    log(`${server}${batch ? '+batch' : ''}: ${clients} clients in ${connected.elapsedMs.toFixed(0)} ms, ` +
      `${((after.rssBytes - before.rssBytes) / 1024 / clients).toFixed(1)} KiB RSS each`)
    return session
  } catch (error) {
    await session.close()
    throw error
  }
}

function matrixEnv (server: ServerKind): NodeJS.ProcessEnv {
  return server === 'service' ? { BENCH_HEARTBEAT_INTERVAL_MS: String(config.matrixHeartbeatMs) } : {}
}

/** Reconnects clients a previous window lost (e.g. closed as slow consumers), so every window starts with N. */
async function topUp (session: Session): Promise<void> {
  const open = await session.open()
  if (open < session.options.clients) {
    notes.push(`${session.options.server}${session.options.batch ? '+batch' : ''} N=${session.options.clients}: reconnected ${session.options.clients - open} clients between windows`)
    await session.connect(session.options.clients - open, 500)
  }
}

const underPressure = (w: WindowResult): boolean => (w.tcp?.memoryPressures ?? 0) > 0

/**
 * After a window the clients did not finish reading, the rest of its backlog is still in flight (often in
 * kernel buffers under TCP memory pressure, stalled by retransmit backoff) and would land in the next window
 * as stray deliveries and stalls. Fresh connections start the next window clean.
 */
async function replaceConnections (session: Session, w: WindowResult): Promise<void> {
  const { server, batch, clients } = session.options
  const unread = w.expected - w.delivered
  const why = [
    ...(unread > 0 ? [`${unread} messages not read by the end of the drain`] : []),
    ...(underPressure(w) ? [`kernel TCP memory pressure ×${w.tcp?.memoryPressures}`] : [])
  ]
  const retransmits = w.tcp === undefined ? '' : ` (${w.tcp.retransmits} segments retransmitted)`
  notes.push(`${server}${batch ? '+batch' : ''} N=${clients} R=${w.targetRate}: ${why.join(', ')}${retransmits}; its connections were replaced before the next window`)
  await session.closeClients()
  const left = await session.waitForServerClients(0, 60_000)
  if (left > 0) throw new Error(`${server}: ${left} of the replaced connections still open on the server after 60 s`)
  const result = await session.connect(clients, 500)
  if (result.failed > 0) throw new Error(`${result.failed} of ${clients} clients failed to reconnect to ${server}: ${result.errors.join('; ')}`)
}

async function measure (session: Session, rate: number, seconds: number, phase: ReportedWindow['phase']): Promise<WindowResult> {
  await topUp(session)
  const result = await session.measure({ rate, seconds, drainTimeoutMs: Math.max(10_000, seconds * 1000) })
  windows.push({ phase, ...result })
  log(describe(result) + (underPressure(result) ? `, TCP memory pressure ×${result.tcp?.memoryPressures}` : ''))
  if (result.delivered < result.expected || underPressure(result)) await replaceConnections(session, result)
  return result
}

function passes (w: WindowResult): boolean {
  return w.lost === 0 && w.gaps === 0 && w.duplicates === 0 && w.latencyMs.p99 < config.latencyBudgetMs && w.achievedRate >= 0.95 * w.targetRate
}

/**
 * The highest rate that keeps p99 under the budget with no loss, for each session: double (or halve) from
 * 4 ev/s until the verdict flips, then bisect. The sessions take turns trial by trial, so load from other
 * jobs on the machine falls on both sides alike. Each trial lasts long enough for a few events even at a
 * fraction of 1 ev/s.
 */
async function searchRates (sessions: Session[]): Promise<SearchResult[]> {
  const states = sessions.map((session) => ({
    session,
    tried: [] as SearchResult['tried'],
    low: 0,
    high: Number.POSITIVE_INFINITY,
    rate: config.searchStartRate,
    done: false
  }))
  for (let step = 0; step < config.searchSteps && states.some((s) => !s.done); step++) {
    for (const state of states.filter((s) => !s.done)) {
      const { rate } = state
      const seconds = Math.max(config.searchSeconds, Math.min(config.searchMaxSeconds, config.searchMinEvents / rate))
      const w = await measure(state.session, rate, seconds, 'search')
      const pass = passes(w)
      state.tried.push({ rate, p99: w.latencyMs.p99, achieved: w.achievedRate, lost: w.lost, pass })
      if (pass) state.low = rate
      else state.high = rate
      if (!Number.isFinite(state.high)) state.rate = rate * 2
      else if (state.low === 0) state.rate = rate / 2
      else state.rate = roundRate((state.low + state.high) / 2)
      state.done = state.rate < 0.25 || state.rate === state.low || state.rate === state.high ||
        (state.low > 0 && Number.isFinite(state.high) && (state.high - state.low) / state.high < 0.15)
    }
  }
  return states.map(({ session, tried, low }) => ({
    server: session.options.server,
    batch: session.options.batch,
    clients: session.options.clients,
    seconds: config.searchSeconds,
    maxRate: low,
    tried
  }))
}

async function measureEmitCost (): Promise<EmitCostResult> {
  const child = await spawnBenchChild('./emit-cost.ts', [], { nodeArgs: ['--expose-gc', ...profileArgs('00-emit-cost', 'emit-cost')] })
  try {
    return await child.request<EmitCostResult>('measure', { events: config.emitCostEvents }, 300_000)
  } finally {
    await child.close()
  }
}

async function main (): Promise<void> {
  const startedAt = new Date()
  log(`${quick ? 'quick' : 'full'} run: N ∈ {${config.clients.join(', ')}} × R ∈ {${config.rates.join(', ')}}, ${config.seconds} s windows, ${config.emitter} emitter, ` +
    `${config.clientProcesses} client process(es), ${cpus().length} cores`)

  if (config.servers.includes('service')) {
    emitCost = await measureEmitCost()
    log(`emit with no clients: ${emitCost.usPerEvent.toFixed(2)} µs/event over ${emitCost.events} events`)
  }

  const needsSearch = (server: ServerKind, batch: boolean): boolean =>
    config.search && ((server === 'baseline') || (server === 'service' && (batch || !config.batch)))

  // All variants of one N are up at once and take turns window by window (A/B/A/B), so other jobs on the
  // shared cores slow both sides alike; the idle ones cost nearly nothing meanwhile.
  const runVariants = async (clients: number, work: (sessions: Session[]) => Promise<void>): Promise<void> => {
    const sessions: Session[] = []
    try {
      for (const { server, batch } of variants()) sessions.push(await openMeasuredSession(server, batch, clients, matrixEnv(server)))
      await work(sessions)
    } finally {
      await Promise.all(sessions.map((session) => session.close()))
    }
  }
  const searched = (sessions: Session[]): Session[] => sessions.filter((s) => needsSearch(s.options.server, s.options.batch))

  for (const clients of config.clients) {
    await runVariants(clients, async (sessions) => {
      const equalRates = new Set<number>()
      for (const rate of config.rates) {
        const cell: WindowResult[] = []
        for (let round = 0; round < config.repeat; round++) {
          for (const session of sessions) cell.push(await measure(session, rate, config.seconds, 'matrix'))
        }
        // Where the baseline fell behind the target, its emitter shed what it could not send while the
        // service sent everything, so the cell compares different loads. Measure both again at a rate the
        // baseline sustains: 90 % of what it achieved, the same for every variant.
        const baselineRate = median(cell.filter((w) => w.server === 'baseline').map((w) => w.achievedRate))
        if (!(baselineRate < config.equalRateBelow * rate)) continue
        const equal = roundRate(config.equalRateShare * baselineRate)
        if (equal < config.equalRateMin || equalRates.has(equal)) continue
        equalRates.add(equal)
        for (let round = 0; round < config.repeat; round++) {
          for (const session of sessions) await measure(session, equal, config.seconds, 'equal-rate')
        }
      }
      if (clients === config.searchClients && config.search) searches.push(...await searchRates(searched(sessions)))
    })
  }

  // The quick run has no 10,000-client cells in its matrix, so its rate search gets sessions of its own.
  if (config.search && !config.clients.includes(config.searchClients)) {
    const sessions: Session[] = []
    try {
      for (const { server, batch } of variants().filter((v) => needsSearch(v.server, v.batch))) {
        sessions.push(await openMeasuredSession(server, batch, config.searchClients, matrixEnv(server)))
      }
      searches.push(...await searchRates(sessions))
    } finally {
      await Promise.all(sessions.map((session) => session.close()))
    }
  }

  // 10,000 idle connections with a 1 s heartbeat on the service: the idle hold then spans three ticks,
  // and its loop delay shows how long one tick over every socket holds up everything else.
  if (!quick && config.servers.includes('service') && config.clients.includes(config.idleClients)) {
    const session = await openMeasuredSession('service', config.batch, config.idleClients, { BENCH_HEARTBEAT_INTERVAL_MS: '1000' }, 3500)
    try {
      await measure(session, config.heartbeatWindowRate, quick ? 3 : 6, 'heartbeat')
    } finally {
      await session.close()
    }
  }

  const report: BenchReport = {
    startedAt: startedAt.toISOString(),
    durationS: (Date.now() - startedAt.getTime()) / 1000,
    command: `npm run bench --${process.argv.slice(2).map((a) => ` ${a}`).join('')}`,
    machine: { cpus: cpus().length, model: cpus()[0]?.model ?? 'unknown', memoryGiB: totalmem() / 2 ** 30, node: process.version, platform: process.platform },
    config,
    fdLimit: { wanted: WANTED_FD_LIMIT, got: [...fdLimits] },
    emitCost,
    storms,
    connections,
    windows,
    searches,
    notes
  }
  mkdirSync(resultsDir, { recursive: true })
  const file = path.join(resultsDir, `${stamp}.json`)
  writeFileSync(file, JSON.stringify(report, null, 2) + '\n')
  console.log(formatReport(report))
  console.log(`\nresults: ${path.relative(process.cwd(), file)}`)
  if (flags.profile) console.log(`profiles: ${path.relative(process.cwd(), profileDir)}`)
}

main().catch((error) => {
  console.error(error)
  process.exitCode = 1
})
