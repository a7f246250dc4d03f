// @ts-check
/**
 * Entry point of the dashboard: wires the link (connection.js) and the event cursor (event-cursor.js,
 * which hands on each event once and in id order) to the panels.
 */
import { createBatchPanel, createOperations } from './batch-panel.js'
import { createConnection } from './connection.js'
import { byId, setText } from './dom.js'
import { createEventCursor } from './event-cursor.js'
import { createEventLog, warningOf } from './event-log.js'
import { age } from './format.js'
import { createHistory } from './history.js'
import { createNoticeBanner } from './notice-banner.js'
import { createContextIndicator } from './project-context.js'
import { fetchSprintStatus, fetchStoryDescriptions } from './sprint-status.js'
import { createStoryBoard } from './story-board.js'
import { createToasts } from './toasts.js'
import { loadUiState, saveUiState, toggled } from './ui-state.js'

/** @typedef {import('./types.js').Envelope} Envelope */
/** @typedef {import('./event-cursor.js').AppliedInit} AppliedInit */
/** @typedef {import('./connection.js').ConnectionState} ConnectionState */

// Errors replayed after a long disconnect arrive together; toasting more than a few buries the page.
const MAX_TOASTS_PER_BATCH = 4

const ui = loadUiState()
function persist () { saveUiState(ui) }

/** Timestamp (server clock) of the newest applied event, for the "last event" indicator. */
let lastEventTimestamp = 0
/**
 * Browser clock minus server clock, estimated as the smallest (arrival − timestamp) seen on live
 * events: timers then count from the server's timestamps even when the two clocks disagree.
 * @type {number | null}
 */
let clockOffset = null
const now = () => Date.now() - (clockOffset ?? 0)

/**
 * Latest `story:status` per key since the view was last rebuilt. The event stream is the live truth
 * and the file may lag it (or never be written by an emitter that only posts events), so every
 * reload of sprint-status.yaml is overlaid with these.
 * @type {Map<string, string>}
 */
const statusOverlay = new Map()

const logFilterInput = /** @type {HTMLInputElement} */ (byId('log-filter'))
const connectionButton = byId('connection')
const connectionLabel = byId('connection-label')
const connectionAction = byId('connection-action')
const lastEventNode = byId('last-event')
const projectName = byId('project-name')
const storiesStat = byId('stat-stories')
const errorsStat = byId('stat-errors')

const boardElement = byId('board')
const board = createStoryBoard({
  root: boardElement,
  empty: byId('board-empty'),
  filters: byId('status-filters'),
  summary: byId('board-summary'),
  getHiddenStatuses: () => ui.hiddenStatuses,
  getCollapsedEpics: () => ui.collapsedEpics,
  onStatusFilter (status, hidden) {
    ui.hiddenStatuses = toggled(ui.hiddenStatuses, status, hidden)
    persist()
    board.refreshFilters()
  },
  onEpicToggle (epic, collapsed) {
    ui.collapsedEpics = toggled(ui.collapsedEpics, epic, collapsed)
    persist()
  }
})

const log = createEventLog({
  list: /** @type {HTMLOListElement} */ (byId('log')),
  empty: byId('log-empty'),
  jump: /** @type {HTMLButtonElement} */ (byId('log-jump')),
  count: byId('log-count'),
  kindFilters: byId('kind-filters'),
  getFilter: () => ({ text: ui.logFilter, hiddenKinds: ui.hiddenKinds }),
  onKindFilter (kind, hidden) {
    ui.hiddenKinds = toggled(ui.hiddenKinds, kind, hidden)
    persist()
    log.applyFilter()
  },
  onStoryClick (storyKey) {
    setLogFilter(ui.logFilter === storyKey ? '' : storyKey)
  }
})

const batchPanel = createBatchPanel({
  panel: byId('batch'),
  id: byId('batch-id'),
  state: byId('batch-state'),
  elapsed: byId('batch-elapsed'),
  progress: byId('batch-progress'),
  progressFill: byId('batch-progress-fill'),
  detail: byId('batch-detail'),
  cycles: byId('stat-cycles')
}, now)

const operations = createOperations({
  list: /** @type {HTMLUListElement} */ (byId('operations')),
  empty: byId('operations-empty'),
  count: byId('operations-count')
}, now)

const toasts = createToasts(byId('toasts'))
const contextIndicator = createContextIndicator(byId('stat-context'))

// Batch history: sidebar, past-batch view, timelines. It sees the same init and events as the panels.
const batchHistory = createHistory({ now })

/** @param {string} text */
function setLogFilter (text) {
  ui.logFilter = text
  if (logFilterInput.value !== text) logFilterInput.value = text
  persist()
  log.applyFilter()
}

let sprintLoad = 0
/** (Re)loads the board from the sprint files, then lays the statuses from events over it. Never rejects. */
async function loadBoard () {
  const load = ++sprintLoad
  try {
    const [status, descriptions] = await Promise.all([fetchSprintStatus(), fetchStoryDescriptions()])
    if (load !== sprintLoad) return
    board.setDescriptions(descriptions)
    if (!status) {
      board.setEntries([])
      board.showMessage('No sprint-status.yaml in the artifacts directory yet.')
    } else {
      setText(projectName, status.project)
      board.setEntries(status.entries)
    }
    for (const [key, status] of statusOverlay) board.setStatus(key, status)
    // A visible marker of completed loads, for tests and for anyone debugging a stale board.
    boardElement.dataset.loads = String(load)
    updateHeader()
  } catch (error) {
    if (load !== sprintLoad) return
    board.showMessage(`Could not load the sprint status: ${error instanceof Error ? error.message : String(error)}`)
  }
}

/**
 * Applies events the cursor has not handed on before, in id order.
 * @param {Envelope[]} fresh
 * @param {{ live: boolean }} how live: new to the operator (toasts, highlights); false for a snapshot
 */
function applyEvents (fresh, how) {
  let reloadBoard = false
  for (const event of fresh) {
    lastEventTimestamp = Math.max(lastEventTimestamp, event.timestamp)
    batchPanel.apply(event)
    operations.apply(event)
    contextIndicator.apply(event)
    if (event.type === 'story:status') {
      statusOverlay.set(event.payload.story_key, event.payload.new_status)
      board.setStatus(event.payload.story_key, event.payload.new_status, { flash: how.live })
    }
    // One edit changed more stories than the service sends events for (FileLimits.statusEventsPerChange):
    // the rest are only in the file, so the board is reloaded from it.
    if (event.type === 'error' && event.payload.type === 'sprint_status_bulk_change') reloadBoard = true
  }
  if (reloadBoard) loadBoard()
  if (fresh.length === 0) return
  batchHistory.applyEvents(fresh)
  log.append(fresh)
  if (how.live) {
    const alerts = fresh.filter((event) => event.type === 'error' || warningOf(event) !== null)
    for (const event of alerts.slice(-MAX_TOASTS_PER_BATCH)) {
      if (event.type === 'error') toasts.showError({ id: event.id, timestamp: event.timestamp, ...event.payload })
      else {
        const warning = warningOf(event)
        if (warning) toasts.showWarning(warning)
      }
    }
  }
  document.body.dataset.lastEventId = String(cursor.lastAppliedId)
  updateHeader()
}

/** @param {AppliedInit} init */
function applyInit (init) {
  batchHistory.applyInit(init)
  clockOffset = null
  notices.clear()
  if (!init.resumed) {
    // Fresh connect or reset: the snapshot is the whole truth, so forget the old view entirely.
    log.clear()
    operations.clear()
    contextIndicator.clear()
    statusOverlay.clear()
    lastEventTimestamp = 0
  }
  // Reload the board after a reconnect: sprint-status.yaml may have changed while we were away.
  if (init.reconnect) loadBoard()
  if (init.error) console.warn('dashboard: the service reported a problem with the resume:', init.error)
  // Events the operator missed while disconnected are news (toasts); a snapshot is history.
  applyEvents(init.events, { live: init.resumed })
  // The batch row sent with init is authoritative over whatever the events suggested.
  batchPanel.setBatch(init.batch)
  if (init.batch && init.batch.status !== 'running') operations.clear()
  document.body.dataset.lastEventId = String(cursor.lastAppliedId)
  updateHeader()
}

/** @param {Envelope[]} events */
function applyLive (events) {
  const arrival = Date.now()
  for (const event of events) {
    const offset = arrival - event.timestamp
    if (clockOffset === null || offset < clockOffset) clockOffset = offset
  }
  applyEvents(events, { live: true })
}

/** @type {ConnectionState} */
let connectionState = { state: 'connecting', attempt: 0, retryAt: null, closeCode: null, closeReason: '' }

function renderConnection () {
  const { state, attempt, retryAt, closeCode, closeReason } = connectionState
  connectionButton.dataset.state = state
  let label = 'Connecting…'
  if (state === 'connected') label = 'Connected'
  else if (state === 'reconnecting') label = `Reconnecting (attempt ${attempt})`
  else if (state === 'disconnected') {
    const seconds = retryAt === null ? 0 : Math.max(0, Math.ceil((retryAt - Date.now()) / 1000))
    label = `Disconnected · retry in ${seconds} s`
  }
  setText(connectionLabel, label)
  connectionAction.hidden = state !== 'disconnected'
  connectionButton.title = state === 'disconnected'
    ? `Connection closed${closeCode ? ` (${closeCode}${closeReason ? `: ${closeReason}` : ''})` : ''}. Click to retry now.`
    : (state === 'connected' ? 'Live: receiving events' : 'Opening the live connection')
}

function updateHeader () {
  const stories = board.counts()
  setText(storiesStat, stories.total ? `${stories.done} / ${stories.total}` : '–')
  const errors = log.count('error')
  setText(errorsStat, errors.toLocaleString())
  errorsStat.dataset.count = String(errors)
  setText(lastEventNode, lastEventTimestamp > 0 ? `Last event ${age(now() - lastEventTimestamp)}` : 'No events yet')
  const running = operations.names()
  const prefix = connectionState.state === 'connected' ? '' : '⚠ '
  const title = `${prefix}${batchPanel.summary()}${running.length ? ` · ${running[0]}${running.length > 1 ? ` +${running.length - 1}` : ''}` : ''} — Sprint dashboard`
  if (document.title !== title) document.title = title
}

const notices = createNoticeBanner(document.body)

const cursor = createEventCursor({
  onInit: applyInit,
  onEvents: applyLive,
  onNotice: notices.show
})

const connection = createConnection({
  cursor,
  onState (state) {
    connectionState = state
    renderConnection()
    updateHeader()
  }
})

connectionButton.addEventListener('click', () => connection.retryNow())

logFilterInput.value = ui.logFilter
logFilterInput.addEventListener('input', () => setLogFilter(logFilterInput.value))
logFilterInput.addEventListener('keydown', (event) => {
  if (event.key === 'Escape') setLogFilter('')
})
// "/" jumps to the log filter, as in most log viewers, unless the operator is already typing.
document.addEventListener('keydown', (event) => {
  const target = /** @type {HTMLElement | null} */ (event.target)
  if (event.key === '/' && target?.tagName !== 'INPUT' && target?.tagName !== 'TEXTAREA') {
    event.preventDefault()
    logFilterInput.focus()
    logFilterInput.select()
  }
})

// One timer for every clock on the page.
setInterval(() => {
  batchPanel.tick()
  operations.tick()
  batchHistory.tick()
  if (connectionState.state === 'disconnected') renderConnection()
  updateHeader()
}, 1000)

log.applyFilter()
loadBoard()
