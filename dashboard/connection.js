// @ts-check
/**
 * The WebSocket link to the service: derives the URL from the page, asks for what it missed after a
 * drop (`?since=`), keeps a heartbeat, and reconnects with capped exponential backoff. What a frame
 * means is the event cursor's business (event-cursor.js); this module only carries the frames.
 */

/** @typedef {import('./event-cursor.js').EventCursor} EventCursor */

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
const PING_MESSAGE = JSON.stringify(/** @satisfies {import('./types.js').PingMessage} */ ({ type: 'ping' }))
/**
 * The close code for a link the page gave up on. The page cannot import the protocol module at run
 * time, so the number is repeated here, typed as the protocol's: a change there is a type error here.
 * @type {typeof import('../src/events/protocol.ts').CloseCode.CLIENT_HEARTBEAT_TIMEOUT}
 */
export const HEARTBEAT_TIMEOUT_CLOSE_CODE = 4000

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
 * @property {Pick<EventCursor, 'since' | 'connectionOpened' | 'receive'>} cursor reads every frame and gives the `since` to resume from
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
    const ws = new WebSocket(socketUrl(location, handlers.cursor.since))
    socket = ws
    handlers.cursor.connectionOpened()
    publish({ state: everConnected || attempt > 0 ? 'reconnecting' : 'connecting', attempt, retryAt: null })

    ws.addEventListener('message', (message) => {
      if (socket !== ws) return
      lastMessageAt = Date.now()
      if (typeof message.data !== 'string') return
      const { init } = handlers.cursor.receive(message.data)
      // Connected means the init arrived: the page shows the server's state, not only an open socket.
      if (init && current.state !== 'connected') {
        attempt = 0
        everConnected = true
        publish({ state: 'connected', attempt: 0, retryAt: null })
      }
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
        drop(HEARTBEAT_TIMEOUT_CLOSE_CODE, 'no message from the service for too long')
        try { ws.close(HEARTBEAT_TIMEOUT_CLOSE_CODE, 'heartbeat timeout') } catch {}
        return
      }
      if (ws.readyState === WebSocket.OPEN) ws.send(PING_MESSAGE)
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
