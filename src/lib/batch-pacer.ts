/**
 * When the fan-out writes to `?batch=1` clients: at once, or after holding the
 * pending events briefly so one frame carries several. The decision follows
 * load as the fan-out measures it, not the shape of the emitter's bursts:
 *
 * - how long a batched write round takes (`writeMs`, an EWMA),
 * - how often events arrive (`arrivalMs`, an EWMA of the time per event, so a
 *   burst of k events in one call counts as k arrivals),
 * - how late the pacer's own hold timers fire (`lagMs`, an EWMA of event-loop
 *   lag; measured only while holding, so an idle process runs no timer at all).
 *
 * Writing every event on its own would spend `writeMs / arrivalMs` of the
 * loop on batched writes. Below `MAX_WRITE_SHARE` (and with the loop on time)
 * nothing is held, so at light load a batched client gets each event as soon
 * as a plain one. Above it, events are held for `HOLD_PER_WRITE` write rounds:
 * a round then starts at most every (1 + HOLD_PER_WRITE) × writeMs, which
 * keeps batched writes near that share of the loop whatever the rate, and the
 * events of the hold share one frame (the cost of a round is mostly per
 * socket, not per byte). A lagging loop holds at least as long as it lags.
 */

/**
 * Above this share of the loop spent writing one event per frame, events are held. Write rounds are
 * timed on the wall clock, which on shared cores counts time the process was descheduled: a lower
 * share would hold events at light load, and (through HOLD_PER_WRITE) hold them longer.
 */
export const MAX_WRITE_SHARE = 1 / 2
/** A hold lasts this many write rounds: (1 / MAX_WRITE_SHARE − 1), so held rounds take about MAX_WRITE_SHARE of the loop. */
export const HOLD_PER_WRITE = 1 / MAX_WRITE_SHARE - 1
/**
 * Timer lag above this means the loop is far behind: hold even if writes look cheap. Well above the
 * lag other processes on shared cores cause (tens of ms), where holding would only add latency.
 */
export const BUSY_LAG_MS = 50
/** No event is held longer than this, whatever the load (the latency budget is 500 ms). */
export const MAX_HOLD_MS = 100
/** With this many events held, they are written at once: frames and memory stay bounded. */
export const MAX_HELD_EVENTS = 1000
/** Weight of the newest sample in each EWMA: a few rounds, so the pacer follows a change of load within a few events. */
const EWMA_WEIGHT = 0.2
/** An idle gap counts as at most this: after one, the next few events find the pacer idle, not frozen. */
const MAX_ARRIVAL_SAMPLE_MS = 1000
/** Lag is only sampled while holding; a sample older than this no longer says the loop is busy. */
const LAG_MEMORY_MS = 1000

export interface BatchPacerOptions {
  /** Milliseconds, monotonic; `performance.now` unless a test injects its own. */
  now?: () => number
}

/** The load the pacer has seen; for tests and diagnostics. */
export interface BatchPacerLoad {
  writeMs: number
  arrivalMs: number
  lagMs: number
}

const ewma = (average: number, sample: number): number => average + EWMA_WEIGHT * (sample - average)

/**
 * Decides how long the fan-out holds batched clients' events.
 *
 * @example
 * const pacer = createBatchPacer()
 * pacer.arrived(1)
 * const hold = pacer.holdMs(pending.length) // 0: write now
 */
export function createBatchPacer (options: BatchPacerOptions = {}) {
  const now = options.now ?? (() => performance.now())
  let writeMs = 0
  // Starts idle: the first events of a process are written at once.
  let arrivalMs = MAX_ARRIVAL_SAMPLE_MS
  let lagMs = 0
  let lastLagAt = Number.NEGATIVE_INFINITY
  let lastArrivalAt: number | undefined

  return {
    now,

    /** Records `count` events handed to the fan-out now. */
    arrived (count: number): void {
      if (count <= 0) return
      const at = now()
      if (lastArrivalAt !== undefined) {
        const gap = Math.min(MAX_ARRIVAL_SAMPLE_MS, Math.max(0, at - lastArrivalAt))
        // k events in one call: the gap shared among them, so a burst weighs as its rate, not as k samples.
        arrivalMs = ewma(arrivalMs, gap / count)
      }
      lastArrivalAt = at
    },

    /** Records one batched write round that took `ms`. */
    wrote (ms: number): void {
      writeMs = ewma(writeMs, Math.max(0, ms))
    },

    /** Records that a hold timer fired `ms` after it was due. */
    lagged (ms: number): void {
      lastLagAt = now()
      lagMs = ewma(lagMs, Math.max(0, ms))
    },

    /** How long to hold what is pending before the next batched write; 0 means write now. */
    holdMs (pending: number): number {
      if (pending >= MAX_HELD_EVENTS) return 0
      const lag = now() - lastLagAt > LAG_MEMORY_MS ? 0 : lagMs
      const busy = writeMs > MAX_WRITE_SHARE * arrivalMs || lag > BUSY_LAG_MS
      if (!busy) return 0
      return Math.min(MAX_HOLD_MS, Math.max(HOLD_PER_WRITE * writeMs, lag))
    },

    get load (): BatchPacerLoad {
      return { writeMs, arrivalMs, lagMs }
    }
  }
}

export type BatchPacer = ReturnType<typeof createBatchPacer>
