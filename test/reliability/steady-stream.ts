import { readFileSync } from 'node:fs'
import { StreamReader } from './stream-reader.ts'

/** The producer's rate in the "done when": 20 events per second, one every 50 ms. */
export const STEADY_RATE_PER_SECOND = 20
/** The longest a connected client may go without an event while a hostile condition holds. */
export const MAX_DELIVERY_GAP_MS = 100

/**
 * How long a process's main thread has waited, runnable, for a CPU (Linux schedstat: the second
 * field, in ns). The machine the tests run on is shared: a gap at the client made only of waiting
 * for a CPU is other processes' load, not a stall the service caused. 0 where schedstat is missing.
 */
function mainThreadRunDelayMs (pid: number): number {
  try {
    return Number(readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ')[1]) / 1e6
  } catch {
    return 0
  }
}

export interface SteadyStreamResult {
  /** Ids the producer's emits resolved to (acknowledged), in order. */
  acknowledged: number[]
  /** Emits that were refused (storage failures), with the error code. */
  refused: string[]
  /** Ids the client received after the stream started, in order (other producers' events included). */
  received: number[]
  /** Acknowledged ids the client never received: must be empty. */
  missing: number[]
  /** The longest time between two consecutive events at the client, in ms of wall-clock time. */
  maxGapMs: number
  /**
   * The longest gap less the time the service's (and the client's) main thread spent runnable but
   * waiting for a CPU (other processes' load): how long delivery stalled because of what the service did.
   */
  maxStallMs: number
  /** When the longest stall ended, ms after the start: helps to tell what the test was doing then. */
  maxStallEndedAtMs: number
}

export interface SteadyStream {
  readonly reader: StreamReader
  /** Stops producing, waits until the client has every acknowledged event (or `timeoutMs`), and reports. */
  stop: (timeoutMs?: number) => Promise<SteadyStreamResult>
}

/**
 * A producer emitting one event every 50 ms and a connected client timing their arrival: the
 * measurement behind "a connected client keeps receiving the events of a 20 ev/s producer with no
 * gap longer than 100 ms" while a hostile condition holds. `emit` is the producer's one call (in
 * process `app.events.emit`, or a POST); it resolves with the stored id or rejects.
 *
 * The producer sends at a steady rate whatever the event loop does: a tick that comes late sends at
 * once, so a gap at the client measures how long delivery stalled, not how the producer was paced.
 */
export async function startSteadyStream (wsUrl: string, emit: (sequence: number) => Promise<number>,
  options: { serverPid?: number } = {}): Promise<SteadyStream> {
  // The client runs here; the service here too, or in `serverPid`. A gap less the longer of the two
  // threads' waits for a CPU is what the service's own work made of it.
  const pids = [...new Set([process.pid, options.serverPid ?? process.pid])]
  const reader = new StreamReader(wsUrl)
  await reader.opened
  const acknowledged: number[] = []
  const refused: string[] = []
  const received: number[] = []
  let lastArrival: { at: number, runDelays: number[] } | null = null
  let maxGapMs = 0
  let maxStallMs = 0
  let maxStallEndedAtMs = 0
  const startedAt = performance.now()
  reader.onEvent = (id) => {
    const now = { at: performance.now(), runDelays: pids.map(mainThreadRunDelayMs) }
    received.push(id)
    if (lastArrival !== null) {
      const gap = now.at - lastArrival.at
      const previous = lastArrival.runDelays
      const stall = gap - Math.max(...now.runDelays.map((delay, i) => delay - previous[i]!))
      maxGapMs = Math.max(maxGapMs, gap)
      if (stall > maxStallMs) {
        maxStallMs = stall
        maxStallEndedAtMs = now.at - startedAt
      }
    }
    lastArrival = now
  }
  let sequence = 0
  const inFlight = new Set<Promise<void>>()
  const produce = (): void => {
    const sent = emit(++sequence).then(id => { acknowledged.push(id) }, (err: { code?: string, message?: string }) => {
      refused.push(err.code ?? err.message ?? String(err))
    })
    inFlight.add(sent)
    sent.finally(() => inFlight.delete(sent)).catch(() => {})
  }
  produce()
  const timer = setInterval(produce, 1000 / STEADY_RATE_PER_SECOND)

  return {
    reader,
    async stop (timeoutMs = 10_000) {
      clearInterval(timer)
      await Promise.all(inFlight)
      const deadline = Date.now() + timeoutMs
      const last = acknowledged.length === 0 ? 0 : Math.max(...acknowledged)
      while (reader.lastId < last && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 5))
      reader.onEvent = null
      reader.socket.terminate()
      const receivedIds = new Set(received)
      return {
        acknowledged: [...acknowledged].sort((a, b) => a - b),
        refused,
        received,
        missing: acknowledged.filter(id => !receivedIds.has(id)),
        maxGapMs: Math.round(maxGapMs),
        maxStallMs: Math.round(maxStallMs),
        maxStallEndedAtMs: Math.round(maxStallEndedAtMs)
      }
    }
  }
}
