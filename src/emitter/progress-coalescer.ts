import type { BridgeEvent } from './bridge-events.ts'

/** Default minimum spacing of progress events for one command: at most four a second. */
export const PROGRESS_INTERVAL_MS = 250

export interface ProgressCoalescerOptions {
  /** Minimum time between two progress events of the same story/command/task. */
  intervalMs?: number
  /** Receives every progress event that survives coalescing, in order. */
  emit: (event: Extract<BridgeEvent, { type: 'command:progress' }>) => void
  now?: () => number
  setTimer?: (callback: () => void, ms: number) => unknown
  clearTimer?: (timer: unknown) => void
}

interface CoalescerSlot {
  lastEmitAt: number
  pending: Extract<BridgeEvent, { type: 'command:progress' }> | null
  timer: unknown
}

/**
 * Rate-limits progress per story/command/task: the first event goes out at once, later ones within
 * `intervalMs` replace each other (latest wins) and the survivor goes out when the interval is over.
 * `flush()` sends every pending event immediately; call it before a lifecycle event and at the end of a
 * run so nothing from the end of the run is dropped and progress never arrives after its `command:end`.
 *
 * @example
 * const coalescer = createProgressCoalescer({ emit: (event) => queue.push(event) })
 * coalescer.push(progressEvent)
 * coalescer.flush()
 */
export function createProgressCoalescer (options: ProgressCoalescerOptions) {
  const intervalMs = options.intervalMs ?? PROGRESS_INTERVAL_MS
  const now = options.now ?? Date.now
  const setTimer = options.setTimer ?? ((callback: () => void, ms: number) => setTimeout(callback, ms))
  const clearTimer = options.clearTimer ?? ((timer: unknown) => clearTimeout(timer as NodeJS.Timeout))
  const slots = new Map<string, CoalescerSlot>()

  function send (slot: CoalescerSlot): void {
    if (slot.timer !== null) clearTimer(slot.timer)
    slot.timer = null
    const event = slot.pending
    slot.pending = null
    if (event === null) return
    slot.lastEmitAt = now()
    options.emit(event)
  }

  return {
    push (event: Extract<BridgeEvent, { type: 'command:progress' }>): void {
      const { story_key: storyKey, command, task_id: taskId } = event.payload
      const key = `${storyKey}\u0000${command}\u0000${taskId}`
      let slot = slots.get(key)
      if (slot === undefined) {
        slot = { lastEmitAt: -Infinity, pending: null, timer: null }
        slots.set(key, slot)
      }
      slot.pending = event
      const wait = slot.lastEmitAt + intervalMs - now()
      if (slot.timer !== null) return
      if (wait <= 0) {
        send(slot)
      } else {
        const target = slot
        slot.timer = setTimer(() => {
          target.timer = null
          send(target)
        }, wait)
      }
    },

    /** Sends every pending event now and cancels their timers. */
    flush (): void {
      for (const slot of slots.values()) send(slot)
    },

    /** Events waiting for their interval to end. */
    get pendingCount (): number {
      let count = 0
      for (const slot of slots.values()) if (slot.pending !== null) count++
      return count
    }
  }
}

export type ProgressCoalescer = ReturnType<typeof createProgressCoalescer>
