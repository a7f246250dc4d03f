import { monitorEventLoopDelay, performance } from 'node:perf_hooks'
import { serveRequests } from './child-process.ts'

/**
 * The part of a benchmark server that is the same for the service and the
 * baseline: the paced emitter and the CPU/RSS/event-loop measurements, all
 * taken inside the server process so they count that process only.
 */

/** What a server under test must offer to the emitter. */
export interface BenchTarget {
  /** Port of the HTTP server; clients connect to ws://127.0.0.1:<port>/ws. */
  port: number
  /** Emits one `command:progress` event with this payload, the way the server under test emits events. */
  emitProgress(payload: ProgressPayload): void
  clientCount(): number
  close(): Promise<void>
}

export interface ProgressPayload {
  story_key: string
  command: string
  task_id: string
  /** Emit time as a decimal ms string (`performance.timeOrigin + performance.now()`); the clients subtract it from their receipt time. */
  message: string
}

/**
 * How the paced emitter hands events to the server: `turn` (the default) one
 * event per event-loop turn, as HTTP ingest and an orchestrator's callbacks
 * do; `burst` every event that fell due in one turn. `http` (events POSTed
 * from another process) lives in http-emitter.ts.
 */
export type InProcessEmitter = 'turn' | 'burst'
export type EmitterKind = InProcessEmitter | 'http'
export const EMITTERS: readonly EmitterKind[] = ['turn', 'burst', 'http']

export interface EmitRequest {
  /** Target events per second. */
  rate: number
  seconds: number
  emitter?: InProcessEmitter
}

export interface EmitResult {
  emitted: number
  /** Events that fell due while the event loop was stalled for longer than the catch-up window, and were not emitted. */
  shed: number
  achievedRate: number
  /** Time spent inside `emitProgress` calls, summed, in µs (for the service: validation, SQLite append and whatever broadcast work emit does synchronously). */
  emitCallUs: number
  /** CPU (user + system) spent inside those calls; far below `emitCallUs` means the process was waiting or descheduled. */
  emitCallCpuUs: number
  /** How late events were emitted against their schedule (the stall the latency, measured from emit, does not include). */
  scheduleLagP99Ms: number
  scheduleLagMaxMs: number
}

export interface MeasureResult {
  elapsedMs: number
  cpuUserUs: number
  cpuSystemUs: number
  rssPeakBytes: number
  rssBytes: number
  eventLoopDelayP99Ms: number
  eventLoopDelayMaxMs: number
}

export interface MemoryResult {
  rssBytes: number
  heapUsedBytes: number
  externalBytes: number
  gcExposed: boolean
}

/**
 * An event that could not be emitted within this long of its due time is shed
 * instead: a real emitter's queued requests would give up (or be over the
 * budget anyway), and the backlog of a saturated server stays bounded. Shorter
 * stalls are caught up in one burst when the loop comes back, which is what a
 * queue of HTTP requests does and what batching is for. A saturated server
 * shows up as an achieved rate below the target (the emitter lives in the
 * server process and is starved with it), and the lag is reported.
 */
export const CATCH_UP_MS = 500

/** Both servers listen with this accept backlog (the kernel caps it at somaxconn), so a connection storm meets the same queue. */
export const LISTEN_BACKLOG = 4096

export function progressPayload (): ProgressPayload {
  return {
    story_key: '2a-1-bench-fan-out',
    command: 'dev-story',
    task_id: 'bench-task',
    message: String(performance.timeOrigin + performance.now())
  }
}

/** The schedule both emitters keep, and what they count: emits, their cost and lag, shed events. */
function emitSchedule (target: BenchTarget, { rate, seconds }: EmitRequest) {
  const intervalMs = 1000 / rate
  const total = Math.max(1, Math.round(rate * seconds))
  const start = performance.now()
  let emitted = 0
  let shed = 0
  let emitCallMs = 0
  let emitCallCpuUs = 0
  let lastEmitStartedAt = start
  const lags: number[] = []
  const schedule = {
    total,
    start,
    intervalMs,
    /** Index of the next event to emit or shed. */
    next: 0,
    dueAt: (index: number): number => start + index * intervalMs,
    /** Sheds the next event if it is more than CATCH_UP_MS overdue; says whether it did. */
    shedIfLate (): boolean {
      if (performance.now() - schedule.dueAt(schedule.next) <= CATCH_UP_MS) return false
      shed++
      schedule.next++
      return true
    },
    emitNext (): void {
      const cpuBefore = process.cpuUsage()
      lastEmitStartedAt = performance.now()
      lags.push(lastEmitStartedAt - schedule.dueAt(schedule.next))
      target.emitProgress(progressPayload())
      emitCallMs += performance.now() - lastEmitStartedAt
      const cpu = process.cpuUsage(cpuBefore)
      emitCallCpuUs += cpu.user + cpu.system
      emitted++
      schedule.next++
    },
    result (): EmitResult {
      // Over the nominal window, or to the start of the last emit if that ran late (a slow last
      // fan-out is not a slower emitter).
      const elapsedSeconds = Math.max(seconds, (lastEmitStartedAt - start + intervalMs) / 1000)
      lags.sort((a, b) => a - b)
      return {
        emitted,
        shed,
        achievedRate: emitted / elapsedSeconds,
        emitCallUs: emitCallMs * 1000,
        emitCallCpuUs,
        scheduleLagP99Ms: lags[Math.floor(lags.length * 0.99)] ?? 0,
        scheduleLagMaxMs: lags[lags.length - 1] ?? 0
      }
    }
  }
  return schedule
}

/** The `burst` emitter: `rate` events per second for `seconds` on a fixed schedule (no drift), every event due at a tick emitted in that one turn. */
export function emitPaced (target: BenchTarget, request: EmitRequest): Promise<EmitResult> {
  const schedule = emitSchedule(target, request)
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      try {
        // Only what is due now: events falling due during this tick wait for the next one, so I/O and the
        // service's end-of-tick flush run in between, as they would between incoming requests.
        const dueNow = Math.min(schedule.total, Math.floor((performance.now() - schedule.start) / schedule.intervalMs) + 1)
        while (schedule.next < dueNow) {
          if (!schedule.shedIfLate()) schedule.emitNext()
        }
        if (schedule.next >= schedule.total) return resolve(schedule.result())
        setTimeout(tick, Math.max(0, schedule.dueAt(schedule.next) - performance.now()))
      } catch (error) {
        reject(error)
      }
    }
    tick()
  })
}

/**
 * Emits `rate` events per second for `seconds`, exactly one event per event-loop turn: each event has its
 * own timer (or, when the loop is behind schedule, its own `setImmediate`), so whatever the server does
 * at the end of a turn runs between any two events, as between two HTTP requests. Events more than
 * CATCH_UP_MS overdue are shed.
 */
export function emitOnePerTurn (target: BenchTarget, request: EmitRequest): Promise<EmitResult> {
  const schedule = emitSchedule(target, request)
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      try {
        // Shed what is too late, then emit at most one event this turn.
        while (schedule.next < schedule.total && schedule.shedIfLate()) continue
        if (schedule.next < schedule.total && performance.now() >= schedule.dueAt(schedule.next)) schedule.emitNext()
        if (schedule.next >= schedule.total) return resolve(schedule.result())
        const wait = schedule.dueAt(schedule.next) - performance.now()
        if (wait > 0) setTimeout(tick, wait)
        else setImmediate(tick)
      } catch (error) {
        reject(error)
      }
    }
    tick()
  })
}

/** Answers the runner's requests for one server under test, then reports ready. */
export function controlServer (target: BenchTarget, extra: Record<string, unknown> = {}): void {
  let window: { startedAt: number, cpu: NodeJS.CpuUsage, rssPeak: number, sampler: NodeJS.Timeout, delay: ReturnType<typeof monitorEventLoopDelay> } | undefined

  serveRequests({
    emit: (request: EmitRequest) => request.emitter === 'burst' ? emitPaced(target, request) : emitOnePerTurn(target, request),
    clientCount: () => target.clientCount(),
    memory: (): MemoryResult => {
      const gc = (globalThis as { gc?: () => void }).gc
      if (gc !== undefined) { gc(); gc() }
      const usage = process.memoryUsage()
      return { rssBytes: usage.rss, heapUsedBytes: usage.heapUsed, externalBytes: usage.external, gcExposed: gc !== undefined }
    },
    measureStart: () => {
      if (window !== undefined) clearInterval(window.sampler)
      const delay = monitorEventLoopDelay({ resolution: 10 })
      delay.enable()
      const state = {
        startedAt: performance.now(),
        cpu: process.cpuUsage(),
        rssPeak: process.memoryUsage.rss(),
        // Sampled rather than read from VmHWM, which is the peak over the whole process lifetime, not this window.
        sampler: setInterval(() => { state.rssPeak = Math.max(state.rssPeak, process.memoryUsage.rss()) }, 50),
        delay
      }
      window = state
    },
    measureStop: (): MeasureResult => {
      if (window === undefined) throw new Error('measureStop without measureStart')
      const { startedAt, cpu, sampler, delay } = window
      clearInterval(sampler)
      delay.disable()
      const used = process.cpuUsage(cpu)
      const rss = process.memoryUsage.rss()
      const result = {
        elapsedMs: performance.now() - startedAt,
        cpuUserUs: used.user,
        cpuSystemUs: used.system,
        rssPeakBytes: Math.max(window.rssPeak, rss),
        rssBytes: rss,
        eventLoopDelayP99Ms: delay.percentile(99) / 1e6,
        eventLoopDelayMaxMs: delay.max / 1e6
      }
      window = undefined
      return result
    }
  }, { port: target.port, ...extra }, async () => {
    if (window !== undefined) clearInterval(window.sampler)
    await target.close()
  })
}
