// @ts-check
/**
 * The page's side of the `/ws` protocol (src/events/protocol.ts), without the DOM or the socket: it
 * splits frames into messages, keeps the cursor (the id of the last applied event, which is the
 * `since` of the next connection), and hands on each stored event exactly once and in id order.
 * Notices (`{ type, payload }` without an id) go to their own handler and never move the cursor,
 * so nothing the server sends unstored can make the page skip stored events.
 * Plain ES module, so the same code runs in the browser and under Node's tests.
 */

/** @typedef {import('./types.js').Envelope} Envelope */
/** @typedef {import('./types.js').InitPayload} InitPayload */
/** @typedef {import('./types.js').Notice} Notice */

/**
 * One message of a frame, classified.
 * @typedef {{ kind: 'event', event: Envelope }
 *   | { kind: 'init', init: InitPayload }
 *   | { kind: 'notice', notice: Notice }
 *   | { kind: 'pong' }
 *   | { kind: 'error', payload: unknown }
 *   | { kind: 'invalid', reason: string, line: string }} FrameMessage
 */

/**
 * What an init means for the view, once the cursor has applied it.
 * @typedef {object} AppliedInit
 * @property {boolean} resumed true: `events` continue the view, keep it; false (first connect, or the
 *   server could not continue our `since`): drop everything shown and draw from `events` alone
 * @property {boolean} reconnect an earlier connection had already delivered an init
 * @property {InitPayload['batch']} batch the batch row, authoritative over what the events suggest
 * @property {Envelope[]} events events not applied before, in id order
 * @property {string | undefined} error why the server refused our `since`, when it did
 */

/**
 * @typedef {object} EventCursorHandlers
 * @property {(init: AppliedInit) => void} onInit
 * @property {(events: Envelope[]) => void} onEvents live events not applied before, in id order
 * @property {(notice: Notice) => void} onNotice a transient message to show, never a resume point
 * @property {(message: string, detail?: unknown) => void} [onWarning] something the page ignored; console.warn by default
 */

/** @param {unknown} value @returns {value is Record<string, unknown>} */
const isRecord = (value) => typeof value === 'object' && value !== null && !Array.isArray(value)

/**
 * A stored event carries a positive integer id: the only thing that may become a resume point.
 * @param {Record<string, unknown>} message
 * @returns {message is Record<string, unknown> & Envelope}
 */
const isEnvelope = (message) => Number.isSafeInteger(message.id) && /** @type {number} */ (message.id) > 0 &&
  typeof message.type === 'string' && isRecord(message.payload) && typeof message.timestamp === 'number'

/**
 * Classifies one parsed JSON message.
 * @param {unknown} message
 * @param {string} line the text it came from, for warnings
 * @returns {FrameMessage}
 */
export function classifyMessage (message, line) {
  if (!isRecord(message)) return { kind: 'invalid', reason: 'not a JSON object', line }
  // Anything with an id claims to be a stored event; if it is not a well-formed one it is dropped
  // rather than shown as a notice, since a notice never has an id.
  if ('id' in message) {
    return isEnvelope(message) ? { kind: 'event', event: message } : { kind: 'invalid', reason: 'an event without a valid id', line }
  }
  if (message.type === 'init') {
    const payload = message.payload
    if (!isRecord(payload)) return { kind: 'invalid', reason: 'an init without a payload', line }
    return { kind: 'init', init: /** @type {InitPayload} */ (payload) }
  }
  if (message.type === 'pong') return { kind: 'pong' }
  // The answer to a client message the server did not understand (the orchestrator's `error` events have an id).
  if (message.type === 'error') return { kind: 'error', payload: message.payload }
  if (typeof message.type === 'string' && message.type !== '' && isRecord(message.payload)) {
    return { kind: 'notice', notice: { type: message.type, payload: message.payload } }
  }
  return { kind: 'invalid', reason: 'neither an event nor a notice', line }
}

/**
 * Splits a frame into its messages. A `?batch=1` connection may carry several JSON documents in
 * one frame, separated by `\n`; a line that does not parse is reported, not fatal.
 * @param {string} text
 * @returns {FrameMessage[]}
 */
export function parseFrame (text) {
  /** @type {FrameMessage[]} */
  const messages = []
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue
    let parsed
    try {
      parsed = JSON.parse(line)
    } catch {
      messages.push({ kind: 'invalid', reason: 'not JSON', line })
      continue
    }
    messages.push(classifyMessage(parsed, line))
  }
  return messages
}

/**
 * The events of `events` above `afterId`, in id order, each id once. Ids at or below the cursor are
 * duplicates (a resume overlapping a live frame, a resend after a reconnect) or arrived out of order;
 * either way they were already applied or their place has passed.
 * @param {readonly Envelope[]} events
 * @param {number} afterId
 * @returns {Envelope[]}
 */
export function eventsAfter (events, afterId) {
  const ordered = events.length > 1 ? [...events].sort((a, b) => a.id - b.id) : events
  /** @type {Envelope[]} */
  const fresh = []
  let last = afterId
  for (const event of ordered) {
    if (event.id <= last) continue
    last = event.id
    fresh.push(event)
  }
  return fresh
}

/**
 * Creates the cursor of one page. The connection calls `connectionOpened()` for each new socket and
 * `receive(text)` for each of its text frames, and asks `since` for the URL of the next one.
 * @param {EventCursorHandlers} handlers
 * @example
 * const cursor = createEventCursor({ onInit: drawSnapshot, onEvents: appendRows, onNotice: showBanner })
 * cursor.connectionOpened()
 * cursor.receive('{"type":"init","payload":{"batch":null,"events":[],"resumed":false,"reset":false}}')
 * cursor.since // null until an event has been applied
 */
export function createEventCursor (handlers) {
  const warn = handlers.onWarning ?? ((message, detail) => console.warn(`dashboard: ${message}`, detail))
  /** Id of the last event handed on; 0 before any. */
  let lastId = 0
  /** Some connection has delivered an init, so the page shows something worth resuming. */
  let initialised = false
  /** The current connection has not sent its init yet: its events cannot be placed until then. */
  let awaitingInit = true

  /** @param {Envelope[]} events */
  function applyLive (events) {
    const fresh = eventsAfter(events, lastId)
    if (fresh.length === 0) return
    lastId = /** @type {Envelope} */ (fresh.at(-1)).id
    handlers.onEvents(fresh)
  }

  /** @param {InitPayload} init */
  function applyInit (init) {
    // `resumed` on a first connect cannot be true (no `since` was sent); treat it as a snapshot.
    const resumed = init.resumed === true && initialised
    const reconnect = initialised
    if (!resumed) lastId = 0
    const events = eventsAfter(Array.isArray(init.events) ? init.events.filter(event => isRecord(event) && isEnvelope(event)) : [], lastId)
    if (events.length > 0) lastId = /** @type {Envelope} */ (events.at(-1)).id
    initialised = true
    awaitingInit = false
    handlers.onInit({ resumed, reconnect, batch: init.batch ?? null, events, error: init.error })
  }

  return {
    /** The `since` for the next connection: the last applied id, or null before anything was applied. */
    get since () { return initialised && lastId > 0 ? lastId : null },

    /** Id of the last event handed on (0 before any), for the page's indicators. */
    get lastAppliedId () { return lastId },

    /** A new socket is opening: until its init arrives, its events have no place. */
    connectionOpened () {
      awaitingInit = true
    },

    /**
     * Applies one text frame. Events are handed on per frame (one render for a burst), but never
     * across an init or a notice, so everything reaches the page in the order the server sent it.
     * @param {string} text
     * @returns {{ init: boolean }} whether the frame carried this connection's init
     */
    receive (text) {
      let sawInit = false
      /** @type {Envelope[]} */
      let pending = []
      const flush = () => {
        if (pending.length > 0) applyLive(pending)
        pending = []
      }
      for (const message of parseFrame(text)) {
        switch (message.kind) {
          case 'event':
            // The server sends init first; an event before it (or a stale one) is replayed by the init anyway.
            if (!awaitingInit) pending.push(message.event)
            break
          case 'init':
            flush()
            applyInit(message.init)
            sawInit = true
            break
          case 'notice':
            flush()
            handlers.onNotice(message.notice)
            break
          case 'error':
            warn('the service rejected a message', message.payload)
            break
          case 'invalid':
            warn(`ignoring a message that is ${message.reason}`, message.line.slice(0, 200))
            break
          case 'pong':
            break
        }
      }
      flush()
      return { init: sawInit }
    }
  }
}

/** @typedef {ReturnType<typeof createEventCursor>} EventCursor */
