import type { Client } from './fan-out.ts'

/** The timer's period: each round's pings are spread over steps of this length. */
const HEARTBEAT_STEP_MS = 100

/** The clock and timer the heartbeat runs on; tests inject their own. */
export interface HeartbeatClock {
  now: () => number
  setInterval: (callback: () => void, ms: number) => unknown
  clearInterval: (timer: unknown) => void
}

const systemClock: HeartbeatClock = {
  now: Date.now,
  setInterval: (callback, ms) => setInterval(callback, ms),
  clearInterval: (timer) => { clearInterval(timer as NodeJS.Timeout) }
}

export interface HeartbeatOptions {
  /** A round pings every client once in this period. */
  intervalMs: number
  /** A client whose ping is unanswered this long is dead. */
  timeoutMs: number
  /** The clients of a new round. */
  clients: () => Client[]
  /** Whether a client is still tracked (a client dropped meanwhile is neither pinged nor killed). */
  isTracked: (client: Client) => boolean
  /** Called once for a client that missed its pong. */
  onDead: (client: Client) => void
  clock?: HeartbeatClock
}

/**
 * Protocol pings on one timer for every socket. A round's pings are spread
 * over the round in slices of at most HEARTBEAT_STEP_MS, so ten thousand
 * sockets cost many short pauses of the broadcast instead of one long stall.
 * Pings wait in `awaiting` in the order sent; each step declares dead the
 * clients whose ping is older than the timeout and still unanswered
 * (`client.lastPongAt` is set by the connection's pong handler).
 */
export function startHeartbeat (options: HeartbeatOptions): { stop: () => void } {
  const clock = options.clock ?? systemClock
  const stepMs = Math.min(HEARTBEAT_STEP_MS, options.intervalMs)
  const stepsPerRound = Math.max(1, Math.round(options.intervalMs / stepMs))
  let step = 0
  let round: Client[] = []
  let roundCursor = 0
  let sliceSize = 0
  let awaiting: Array<{ client: Client, sentAt: number }> = []
  let awaitingHead = 0

  const timer = clock.setInterval(() => {
    const now = clock.now()
    if (step++ % stepsPerRound === 0) {
      round = options.clients()
      roundCursor = 0
      sliceSize = Math.ceil(round.length / stepsPerRound)
    }
    for (const end = Math.min(round.length, roundCursor + sliceSize); roundCursor < end; roundCursor++) {
      const client = round[roundCursor]!
      if (!options.isTracked(client) || client.socket.readyState !== client.socket.OPEN) continue
      client.socket.ping()
      awaiting.push({ client, sentAt: now })
    }
    while (awaitingHead < awaiting.length && awaiting[awaitingHead]!.sentAt + options.timeoutMs <= now) {
      const { client, sentAt } = awaiting[awaitingHead++]!
      if (options.isTracked(client) && client.lastPongAt < sentAt) options.onDead(client)
    }
    if (awaitingHead > 0 && awaitingHead * 2 >= awaiting.length) {
      awaiting = awaiting.slice(awaitingHead)
      awaitingHead = 0
    }
  }, stepMs)

  return {
    stop () {
      clock.clearInterval(timer)
      round = []
      awaiting = []
    }
  }
}
