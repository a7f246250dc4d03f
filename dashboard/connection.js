// @ts-check
/**
 * The WebSocket link to the service: derives the URL from the page, asks for what it missed after a
 * drop (`?since=`), splits NDJSON frames, keeps a heartbeat, and reconnects with capped exponential
 * backoff. It knows nothing about the view; the app decides what an init or an event means.
 */

/** @typedef {import('./types.js').Envelope} Envelope */
/** @typedef {import('./types.js').InitPayload} InitPayload */

/**
 * @typedef {'connecting' | 'connected' | 'reconnecting' | 'disconnected'} ConnectionStateName
 * connecting: first attempt in flight; reconnecting: a later attempt in flight;
 * disconnected: waiting for the backoff timer (or for the operator to click retry).
 */

/**
 * @typedef {object} ConnectionState
 * @property {ConnectionStateName} state
 * @property {number} attempt consecutive failed attempts so far (0 once connected)
 * @property {number | null} retryAt when the next attempt starts (ms epoch), while disconnected
 * @property {number | null} closeCode code of the last close, for the tooltip
 * @property {string} closeReason
 */

export const BACKOFF_BASE_MS = 1000
export const BACKOFF_MAX_MS = 30_000
// The service answers `{"type":"ping"}` with a pong; silence for longer than this means the TCP
// connection died without a close (laptop sleep, proxy timeout), which the browser may not notice for minutes.
const PING_INTERVAL_MS = 20_000
const SILENCE_LIMIT_MS = 45_000

/**
 * Backoff before attempt `attempt` (1-based): 1 s doubling to 30 s, with "equal jitter" (half fixed,
 * half random) so a restarted server is not hit by every open dashboard in the same millisecond.
 * @param {number} attempt
 * @param {() => number} [random]
 */
export function backoffDelay (attempt, random = Math.random) {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.max(0, attempt - 1))
  return ceiling / 2 + random() * (ceiling / 2)
}

/**
 * The WebSocket URL next to the page: `https://host/sprint/` → `wss://host/sprint/ws`.
 * Works under any prefix because it is resolved against the page, never against the host root.
 * @param {Location | URL} location
 * @param {number | null} since last applied event id, to resume from
 */
export function socketUrl (location, since) {
  const url = new URL('ws', location.href)
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:'
  url.hash = ''
  url.search = ''
  // batch=1: the server may pack several events in one frame, which keeps bursts cheap for both sides.
  url.searchParams.set('batch', '1')
  if (since !== null && since > 0) url.searchParams.set('since', String(since))
  return url.toString()
}

/**
 * @typedef {object} ConnectionHandlers
 * @property {() => number | null} getSince id of the last applied event, or null before the first init
 * @property {(init: InitPayload) => void} onInit
 * @property {(events: Envelope[]) => void} onEvents envelopes of one frame, in the order received
 * @property {(state: ConnectionState) => void} onState
 */

/**
 * Opens and keeps open the link to the service.
 * @param {ConnectionHandlers} handlers
 * @param {{ location?: Location }} [options]
 */
export function createConnection (handlers, options = {}) {
  const location = options.location ?? window.location
  /** @type {WebSocket | null} */
  let socket = null
  let attempt = 0
  let everConnected = false
  /** @type {ReturnType<typeof setTimeout> | null} */
  let retryTimer = null
  /** @type {ReturnType<typeof setInterval> | null} */
  let heartbeatTimer = null
  let lastMessageAt = 0
  /** @type {ConnectionState} */
  let current = { state: 'connecting', attempt: 0, retryAt: null, closeCode: null, closeReason: '' }

  /** @param {Partial<ConnectionState>} patch */
  function publish (patch) {
    current = { ...current, ...patch }
    handlers.onState(current)
  }

  function open () {
    clearRetry()
    const ws = new WebSocket(socketUrl(location, handlers.getSince()))
    socket = ws
    let initialised = false
    publish({ state: everConnected || attempt > 0 ? 'reconnecting' : 'connecting', attempt, retryAt: null })

    ws.addEventListener('message', (message) => {
      if (socket !== ws) return
      lastMessageAt = Date.now()
      if (typeof message.data !== 'string') return
      /** @type {Envelope[]} */
      const events = []
      // With batch=1 a frame may carry several JSON documents separated by "\n".
      for (const line of message.data.split('\n')) {
        if (line.trim() === '') continue
        let parsed
        try {
          parsed = JSON.parse(line)
        } catch {
          console.warn('dashboard: ignoring a frame line that is not JSON', line.slice(0, 200))
          continue
        }
        if (parsed === null || typeof parsed !== 'object') continue
        // Orchestrator events (including the `error` event) carry a numeric id; control messages never do.
        if (typeof parsed.id === 'number') {
          events.push(parsed)
        } else if (parsed.type === 'init') {
          if (events.length > 0) handlers.onEvents(events.splice(0))
          initialised = true
          attempt = 0
          everConnected = true
          publish({ state: 'connected', attempt: 0, retryAt: null })
          handlers.onInit(parsed.payload)
        } else if (parsed.type === 'error') {
          console.warn('dashboard: the service rejected a message', parsed.payload)
        }
      }
      // Events before the init of this connection cannot be placed; the init carries them anyway.
      if (events.length > 0 && initialised) handlers.onEvents(events)
    })

    ws.addEventListener('open', () => {
      if (socket !== ws) return
      lastMessageAt = Date.now()
      startHeartbeat(ws)
    })

    ws.addEventListener('close', (event) => {
      if (socket !== ws) return
      drop(event.code, event.reason)
    })
    // An error is always followed by a close, which is where reconnecting is decided.
  }

  /** @param {WebSocket} ws */
  function startHeartbeat (ws) {
    stopHeartbeat()
    heartbeatTimer = setInterval(() => {
      if (Date.now() - lastMessageAt > SILENCE_LIMIT_MS) {
        // Do not wait for the close handshake of a dead link: forget it and reconnect now.
        drop(4000, 'no message from the service for too long')
        try { ws.close(4000, 'heartbeat timeout') } catch {}
        return
      }
      if (ws.readyState === WebSocket.OPEN) ws.send('{"type":"ping"}')
    }, PING_INTERVAL_MS)
  }

  function stopHeartbeat () {
    if (heartbeatTimer !== null) clearInterval(heartbeatTimer)
    heartbeatTimer = null
  }

  function clearRetry () {
    if (retryTimer !== null) clearTimeout(retryTimer)
    retryTimer = null
  }

  /**
   * @param {number} code
   * @param {string} reason
   */
  function drop (code, reason) {
    socket = null
    stopHeartbeat()
    attempt += 1
    const delay = backoffDelay(attempt)
    publish({ state: 'disconnected', attempt, retryAt: Date.now() + delay, closeCode: code, closeReason: reason })
    clearRetry()
    retryTimer = setTimeout(open, delay)
  }

  // The network coming back is a better signal than any timer.
  window.addEventListener('online', () => { if (socket === null) open() })

  open()

  return {
    /** Skips the backoff wait (the operator clicked retry). No-op while a socket is open or opening. */
    retryNow () {
      if (socket === null) open()
    },
    get state () { return current }
  }
}
