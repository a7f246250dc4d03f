// @ts-check
/**
 * The orchestrator controls in the header: batch size (or All), Start, Stop / Force stop, a status
 * line, and a collapsible panel tailing the orchestrator's output. Self-contained: it talks to the
 * orchestrator routes only (`./api/orchestrator/*`, relative so a prefix works) and polls the status,
 * so the rest of the page does not need to know it exists.
 */
import { byId, h, setText } from './dom.js'

/**
 * `GET /api/orchestrator/status`, as src/plugins/orchestrator.ts answers it.
 * @typedef {object} OrchestratorStatus
 * @property {boolean} configured
 * @property {'idle' | 'running' | 'stopping'} status
 * @property {number | null} pid
 * @property {number | 'all' | null} batch_size
 * @property {number | null} batch_id
 * @property {number | null} cycles_completed
 * @property {number | 'all' | null} max_cycles
 * @property {string[]} current_stories
 * @property {{ code: number | null, signal: string | null, at: number, duration_ms: number, stop_requested: boolean } | null} last_exit
 * @property {import('./types.js').Batch | null} last_batch
 */

/** @typedef {{ n: number, stream: 'stdout' | 'stderr', text: string, at: number }} OutputLine */

const PREFS_KEY = 'sprint-dashboard:orchestrator:v1'
const TOKEN_KEY = 'sprint-dashboard:token'
const MAX_BATCH_SIZE = 1000
/** Lines the output panel keeps, as many as the service does. */
const MAX_OUTPUT_LINES = 1000
const POLL_ACTIVE_MS = 1000
const POLL_IDLE_MS = 3000
const NOT_CONFIGURED = 'No orchestrator is configured: start the service with SPRINT_ORCHESTRATOR_CMD (or the plugin option "orchestrator")'

const container = byId('orchestrator')
const sizeInput = /** @type {HTMLInputElement} */ (byId('orch-batch-size'))
const allInput = /** @type {HTMLInputElement} */ (byId('orch-all'))
const startButton = /** @type {HTMLButtonElement} */ (byId('orch-start'))
const stopButton = /** @type {HTMLButtonElement} */ (byId('orch-stop'))
const statusLine = byId('orch-status')
const errorLine = byId('orch-error')
const outputPanel = /** @type {HTMLDetailsElement} */ (byId('orch-output'))
const outputLines = byId('orch-output-lines')

/** @type {OrchestratorStatus | null} */
let status = null
/** What the operator just asked for, shown until the status confirms it. @type {'starting' | 'stopping' | null} */
let pending = null
let busy = false

// ── Preferences ──────────────────────────────────────────────────────────

function loadPrefs () {
  try {
    const saved = JSON.parse(window.localStorage.getItem(PREFS_KEY) ?? 'null')
    if (typeof saved?.batchSize === 'number' && Number.isInteger(saved.batchSize) && saved.batchSize >= 1 && saved.batchSize <= MAX_BATCH_SIZE) {
      sizeInput.value = String(saved.batchSize)
    }
    allInput.checked = saved?.all === true
  } catch {}
}

function savePrefs () {
  try {
    const batchSize = Number(sizeInput.value)
    window.localStorage.setItem(PREFS_KEY, JSON.stringify({ batchSize: Number.isInteger(batchSize) ? batchSize : 2, all: allInput.checked }))
  } catch {}
}

// ── Requests ─────────────────────────────────────────────────────────────

/**
 * A request to the orchestrator routes with the token the operator gave, if any. A 401 asks for the
 * token once, keeps it for this tab (sessionStorage) and retries; a token that is refused is forgotten.
 * @param {string} path relative to `./api/orchestrator/`
 * @param {RequestInit} [init]
 */
async function api (path, init = {}) {
  const send = () => {
    const headers = new Headers(init.headers)
    const token = readToken()
    if (token) headers.set('authorization', `Bearer ${token}`)
    return fetch(`./api/orchestrator/${path}`, { ...init, headers })
  }
  let response = await send()
  if (response.status !== 401) return response
  const hadToken = readToken() !== null
  forgetToken()
  const token = window.prompt(hadToken
    ? 'The service refused the token. Enter the ingest token (SPRINT_INGEST_TOKEN) to start and stop the orchestrator:'
    : 'This service needs its ingest token (SPRINT_INGEST_TOKEN) to start and stop the orchestrator:')
  if (!token) return response
  try { window.sessionStorage.setItem(TOKEN_KEY, token.trim()) } catch {}
  response = await send()
  if (response.status === 401) forgetToken()
  return response
}

function readToken () {
  try { return window.sessionStorage.getItem(TOKEN_KEY) } catch { return null }
}

function forgetToken () {
  try { window.sessionStorage.removeItem(TOKEN_KEY) } catch {}
}

/** @param {Response} response */
async function errorMessage (response) {
  try {
    const body = await response.json()
    if (typeof body?.message === 'string') return body.message
  } catch {}
  return `HTTP ${response.status}`
}

// ── Rendering ────────────────────────────────────────────────────────────

/** @param {number} count */
const cycles = (count) => `${count} cycle${count === 1 ? '' : 's'}`

/**
 * The status line. While the orchestrator runs: its cycle. Once it is gone: how its batch ended.
 * @param {OrchestratorStatus} s
 */
function describeStatus (s, asked = pending) {
  if (s.status === 'stopping' || (asked === 'stopping' && s.status !== 'idle')) return 'Stopping…'
  if (s.status === 'running') {
    if (s.batch_id === null) return 'Starting…'
    const limit = typeof s.max_cycles === 'number' ? s.max_cycles : null
    const cycle = Math.max(1, (s.cycles_completed ?? 0) + 1)
    return limit === null ? `Running cycle ${cycle}` : `Running cycle ${Math.min(cycle, limit)}/${limit}`
  }
  if (asked === 'starting') return 'Starting…'
  const exit = s.last_exit
  const batch = s.last_batch
  // The newest batch belongs to the last run unless it started before that run did.
  const batchOfLastRun = batch !== null && (exit === null || batch.started_at >= exit.at - exit.duration_ms - 1000)
  // Ending by a signal after a stop request (Force stop, or a stop before it could handle SIGINT) is what was asked for.
  const failure = exit !== null && (exit.code !== null ? exit.code !== 0 : exit.signal !== null && !exit.stop_requested)
  const exitText = exit === null ? '' : exit.code !== null ? `exit ${exit.code}` : `${exit.signal}`
  if (batchOfLastRun && batch) {
    if (batch.status === 'stopped') return `Stopped after ${cycles(batch.cycles_completed)}`
    if (batch.status === 'all_done') return 'All stories done'
    if (batch.status === 'error') return exit !== null ? `Error (${exitText})` : 'Error'
    if (batch.status === 'running') return 'Idle'
  }
  if (failure) return `Error (${exitText})`
  return 'Idle'
}

/** Why a control is disabled, for its tooltip. @param {OrchestratorStatus | null} s */
function reasons (s) {
  if (s === null) return { start: 'Waiting for the service…', stop: 'Waiting for the service…' }
  if (!s.configured) return { start: NOT_CONFIGURED, stop: NOT_CONFIGURED }
  const active = s.status !== 'idle' || pending === 'starting'
  return {
    start: active ? (s.status === 'stopping' || pending === 'stopping' ? 'The orchestrator is stopping' : 'The orchestrator is already running') : '',
    stop: active ? '' : 'Nothing is running'
  }
}

function render () {
  const s = status
  const why = reasons(s)
  const stopping = s !== null && (s.status === 'stopping' || (pending === 'stopping' && s.status !== 'idle'))
  const state = s === null ? 'unknown' : !s.configured ? 'unconfigured' : stopping ? 'stopping' : (s.status === 'running' || pending === 'starting') ? 'running' : 'idle'
  container.dataset.state = state
  if (s !== null) setText(statusLine, describeStatus(s))
  const text = statusLine.textContent ?? ''
  statusLine.dataset.tone = text.startsWith('Error') ? 'bad' : state === 'running' ? 'active' : state === 'stopping' ? 'review' : text === 'All stories done' ? 'done' : 'idle'

  startButton.disabled = busy || why.start !== ''
  startButton.title = why.start || 'Start the orchestrator with this batch size'
  stopButton.disabled = busy || why.stop !== ''
  setText(stopButton, stopping ? 'Force stop' : 'Stop')
  stopButton.title = why.stop || (stopping
    ? 'Force stop: SIGTERM to the orchestrator and its agents, SIGKILL if they do not exit'
    : 'Stop after the command in progress')
  // A disabled button shows no tooltip in some browsers: the wrapper carries it too.
  const buttons = /** @type {HTMLElement} */ (startButton.parentElement)
  buttons.title = [why.start, why.stop].filter(Boolean)[0] ?? ''

  const locked = state === 'running' || state === 'stopping' || state === 'unconfigured'
  allInput.disabled = locked
  sizeInput.disabled = locked || allInput.checked
}

/** @param {string} message */
function showError (message) {
  setText(errorLine, message)
  errorLine.hidden = message === ''
  errorLine.title = message
}

// ── Status polling ───────────────────────────────────────────────────────

/** @type {ReturnType<typeof setTimeout> | null} */
let pollTimer = null

async function refresh () {
  if (pollTimer !== null) clearTimeout(pollTimer)
  pollTimer = null
  try {
    const response = await fetch('./api/orchestrator/status', { cache: 'no-store' })
    if (response.ok) {
      status = /** @type {OrchestratorStatus} */ (await response.json())
      // The status has caught up with what was asked: stop showing the request itself.
      if (pending === 'starting' && status.status !== 'idle') pending = null
      if (pending === 'stopping' && status.status === 'idle') pending = null
      container.dataset.loaded = 'true'
    }
  } catch {
    // The connection indicator reports an unreachable service; the next poll tries again.
  }
  render()
  const active = status !== null && (status.status !== 'idle' || pending !== null)
  pollTimer = setTimeout(refresh, active ? POLL_ACTIVE_MS : POLL_IDLE_MS)
}

// ── Actions ──────────────────────────────────────────────────────────────

async function start () {
  /** @type {number | 'all'} */
  let batchSize = 'all'
  if (!allInput.checked) {
    batchSize = Number(sizeInput.value)
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > MAX_BATCH_SIZE) {
      sizeInput.setCustomValidity(`A whole number of cycles from 1 to ${MAX_BATCH_SIZE}, or All`)
      sizeInput.reportValidity()
      return
    }
  }
  sizeInput.setCustomValidity('')
  savePrefs()
  showError('')
  pending = 'starting'
  busy = true
  render()
  try {
    const response = await api('start', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ batch_size: batchSize })
    })
    if (response.status !== 202) {
      pending = null
      showError(`Start failed: ${await errorMessage(response)}`)
    }
  } catch (error) {
    pending = null
    showError(`Start failed: ${error instanceof Error ? error.message : String(error)}`)
  } finally {
    busy = false
  }
  await refresh()
}

async function stop () {
  showError('')
  const wasStopping = container.dataset.state === 'stopping'
  if (!wasStopping) pending = 'stopping'
  busy = true
  render()
  try {
    const response = await api('stop', { method: 'POST' })
    if (response.status !== 200 && response.status !== 202) {
      if (!wasStopping) pending = null
      showError(`${wasStopping ? 'Force stop' : 'Stop'} failed: ${await errorMessage(response)}`)
    }
  } catch (error) {
    if (!wasStopping) pending = null
    showError(`Stop failed: ${error instanceof Error ? error.message : String(error)}`)
  } finally {
    busy = false
  }
  await refresh()
}

// ── Output panel ─────────────────────────────────────────────────────────

let outputAfter = 0
/** @type {ReturnType<typeof setTimeout> | null} */
let outputTimer = null

async function tailOutput () {
  outputTimer = null
  if (!outputPanel.open) return
  try {
    const response = await fetch(`./api/orchestrator/output?after=${outputAfter}`, { cache: 'no-store' })
    if (response.ok) {
      const { lines, next } = /** @type {{ lines: OutputLine[], next: number }} */ (await response.json())
      // A service restarted since the last look numbers from 1 again: start the panel over.
      if (next < outputAfter) outputLines.replaceChildren()
      appendOutput(lines)
      outputAfter = next
    }
  } catch {}
  if (outputPanel.open) outputTimer = setTimeout(tailOutput, POLL_ACTIVE_MS)
}

/** @param {OutputLine[]} lines */
function appendOutput (lines) {
  if (lines.length === 0) return
  const atBottom = outputLines.scrollTop + outputLines.clientHeight >= outputLines.scrollHeight - 4
  outputLines.append(...lines.map((line) => h('span', {
    className: 'orch-line',
    data: { stream: line.stream, n: String(line.n) },
    title: new Date(line.at).toLocaleTimeString()
  }, line.text, '\n')))
  while (outputLines.childElementCount > MAX_OUTPUT_LINES) outputLines.firstElementChild?.remove()
  if (atBottom) outputLines.scrollTop = outputLines.scrollHeight
}

// ── Wiring ───────────────────────────────────────────────────────────────

loadPrefs()
allInput.addEventListener('change', () => {
  savePrefs()
  render()
})
sizeInput.addEventListener('input', () => sizeInput.setCustomValidity(''))
sizeInput.addEventListener('change', savePrefs)
startButton.addEventListener('click', () => { start() })
stopButton.addEventListener('click', () => { stop() })
outputPanel.addEventListener('toggle', () => {
  if (outputPanel.open && outputTimer === null) tailOutput()
})
render()
refresh()
