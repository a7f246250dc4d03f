import type { SprintStore } from './sqlite-store.ts'

/** Events deleted per step; each step is its own turn, so a large backlog never blocks the loop. */
const PRUNE_CHUNK = 5000

/**
 * Keeps the store to its newest `retainEvents` events: after every `retainEvents / 10` new ids (at most
 * 1,000), deletes what is beyond, in small steps off the emit path. `onPruned` runs after each step.
 */
export function createPruner (store: SprintStore, retainEvents: number, onPruned: () => void) {
  const every = Math.max(1, Math.min(1000, Math.floor(retainEvents / 10)))
  let checkedAt = 0
  let running = false
  let timer: NodeJS.Immediate | null = null

  const step = (): void => {
    const oldest = store.getOldestEventId()
    const cutoff = store.getLastEventId() - retainEvents
    if (oldest === null || oldest > cutoff) {
      running = false
      timer = null
      return
    }
    store.deleteEventsUpTo(Math.min(cutoff, oldest + PRUNE_CHUNK - 1))
    onPruned()
    timer = setImmediate(step)
  }

  return {
    /** Called with the newest id after events were stored. */
    schedule (lastId: number): void {
      if (running || lastId - checkedAt < every) return
      checkedAt = lastId
      running = true
      timer = setImmediate(step)
    },

    stop (): void {
      if (timer !== null) clearImmediate(timer)
      timer = null
    }
  }
}
