// @ts-check
/**
 * The past-batch view: stat cards, the batch's timeline, its stories (sortable by duration or
 * cost), its event log paged from the service, a CSV download and the way back to the live view.
 * A batch that is still running keeps moving: live events grow its timeline and refresh its numbers.
 */
import { h, setText } from './dom.js'
import { renderEventRow } from './event-log.js'
import { clockTime, dateTime, dollars, duration, timer, tokenCount } from './format.js'
import { commandsCsvUrl, fetchBatch, fetchBatchEvents } from './history-api.js'
import { batchTone } from './history-sidebar.js'
import { modelFromDetail } from './batch-model.js'
import { statusTone } from './sprint-status.js'
import { createTimeline } from './timeline.js'

/** @typedef {import('./types.js').Envelope} Envelope */
/** @typedef {import('./history-state.js').HistoryState} HistoryState */
/** @typedef {import('../src/lib/history-schemas.ts').BatchDetail} BatchDetail */
/** @typedef {import('../src/lib/history-schemas.ts').StoryRun} StoryRun */

/** Events per page of the batch's log. */
export const LOG_PAGE = 500
/** How far a reload may page to get back to where the log was scrolled. */
const MAX_RESTORE_EVENTS = 20 * LOG_PAGE
/** Numbers of a running batch are fetched again at most this often while its events arrive. */
const REFRESH_MS = 1000

/**
 * @typedef {object} BatchViewOptions
 * @property {() => number} now
 * @property {HistoryState} state shared with the controller, which persists it
 * @property {() => void} onStateChange
 * @property {() => void} onBack
 */

/**
 * @param {HTMLElement} root the empty `#batch-view` section
 * @param {BatchViewOptions} options
 */
export function createBatchView (root, options) {
  const { state } = options
  const back = h('button', { className: 'back-to-live', attrs: { type: 'button' }, text: '← Back to live' })
  const title = h('h2', { className: 'batch-view-title' })
  const status = h('span', { className: 'badge' })
  const when = h('span', { className: 'batch-view-when muted' })
  const csv = h('a', { className: 'csv-link', attrs: { download: '' }, text: 'Download CSV' })
  const problem = h('p', { className: 'empty batch-view-error' })
  problem.hidden = true

  const dd = () => h('dd', { className: 'mono' })
  const stats = { done: dd(), failed: dd(), 'in-progress': dd(), commands: dd(), duration: dd(), 'tokens-in': dd(), 'tokens-out': dd(), cost: dd() }
  /** @param {keyof typeof stats} key @param {string} label @param {string} [tone] */
  const card = (key, label, tone) =>
    h('div', { className: 'stat-card', data: { stat: key, ...(tone ? { tone } : {}) } }, h('dt', { text: label }), stats[key])
  const cards = h('dl', { className: 'stat-cards' },
    card('done', 'Stories done', 'done'), card('failed', 'Failed', 'bad'), card('in-progress', 'Unfinished', 'active'),
    card('commands', 'Commands'), card('duration', 'Duration'), card('tokens-in', 'Tokens in'), card('tokens-out', 'Tokens out'), card('cost', 'Cost'))

  const timelineRoot = h('div')
  const timeline = createTimeline(timelineRoot, { now: options.now, label: 'Timeline of the selected batch' })

  const sortButtons = /** @type {Record<string, HTMLButtonElement>} */ ({})
  /** @param {'started' | 'duration' | 'cost'} key @param {string} label */
  const sortable = (key, label) => {
    const button = h('button', { className: 'sort', attrs: { type: 'button' }, data: { sort: key }, text: label })
    button.addEventListener('click', () => {
      const dir = state.sort.key === key ? (state.sort.dir === 'asc' ? 'desc' : 'asc') : (key === 'started' ? 'asc' : 'desc')
      state.sort = { key, dir }
      options.onStateChange()
      renderStories()
    })
    sortButtons[key] = button
    return h('th', { attrs: { scope: 'col' }, className: key === 'started' ? '' : 'num' }, button)
  }
  const tbody = h('tbody')
  const table = h('table', { className: 'story-table' },
    h('thead', {}, h('tr', {},
      h('th', { attrs: { scope: 'col' }, text: 'Story' }),
      h('th', { attrs: { scope: 'col' }, text: 'Status' }),
      sortable('started', 'Started'),
      sortable('duration', 'Duration'),
      h('th', { attrs: { scope: 'col' }, className: 'num', text: 'Runs' }),
      h('th', { attrs: { scope: 'col' }, className: 'num', text: 'Tokens in / out' }),
      sortable('cost', 'Cost'))),
    tbody)

  const logList = h('ol', { className: 'log-scroll history-log', attrs: { 'aria-label': 'Events of the batch, oldest first' } })
  const logCount = h('span', { className: 'muted' })
  const logMore = h('button', { className: 'history-more', attrs: { type: 'button' }, text: 'Load more events' })
  logMore.hidden = true
  const logEmpty = h('p', { className: 'empty', text: 'No stored events for this batch (they may have been pruned).' })
  logEmpty.hidden = true

  root.replaceChildren(
    h('header', { className: 'batch-view-header' }, back, title, status, when, h('span', { className: 'spacer' }), csv),
    problem,
    cards,
    h('section', { className: 'panel timeline-panel', attrs: { 'aria-label': 'Timeline' } },
      h('header', { className: 'panel-header' }, h('h2', { text: 'Timeline' })), timelineRoot),
    h('div', { className: 'batch-view-columns' },
      h('section', { className: 'panel stories-panel', attrs: { 'aria-label': 'Stories of the batch' } },
        h('header', { className: 'panel-header' }, h('h2', { text: 'Stories' })), h('div', { className: 'table-scroll' }, table)),
      h('section', { className: 'panel log history-log-panel', attrs: { 'aria-label': 'Event log of the batch' } },
        h('header', { className: 'panel-header' }, h('h2', { text: 'Event log' }), logCount),
        h('div', { className: 'log-frame' }, logList, logEmpty, logMore))))

  back.addEventListener('click', () => options.onBack())

  /** @type {number | null} */
  let batchId = null
  /** @type {BatchDetail | null} */
  let detail = null
  /** Bumped per show(): answers for an earlier selection are dropped. */
  let generation = 0
  /** @type {number | null} cursor of the next log page; null when the last one is loaded */
  let logNext = null
  let logLoaded = 0
  let logLoading = false
  /** The last page is in: live events of the batch may be added at the end. */
  let logComplete = false
  /** @type {ReturnType<typeof setTimeout> | null} */
  let refreshTimer = null
  let restoring = false
  /**
   * Live events of the batch since its numbers were last fetched: a fetch answers as of its
   * `last_event_id`, and the events after that are laid over it again.
   * @type {Envelope[]}
   */
  let recent = []

  function renderHeader () {
    if (!detail) return
    const batch = detail.batch
    setText(title, `Batch #${batch.id}`)
    setText(status, batch.status.replace('_', ' '))
    status.dataset.tone = batchTone(batch.status)
    const cycles = `${batch.cycles_completed}${batch.max_cycles === 'all' ? '' : ` / ${batch.max_cycles}`} cycles`
    setText(when, `${dateTime(batch.started_at)}${batch.ended_at ? ` → ${clockTime(batch.ended_at)}` : ' · running'} · ${cycles}`)
    csv.setAttribute('href', commandsCsvUrl(batch.id))
    const s = detail.stats
    setText(stats.done, String(s.stories_done))
    setText(stats.failed, String(s.stories_failed))
    setText(stats['in-progress'], String(s.stories_in_progress))
    setText(stats.commands, s.command_count.toLocaleString())
    setText(stats.duration, s.duration_ms === null ? timer(options.now() - batch.started_at) : duration(s.duration_ms))
    setText(stats['tokens-in'], tokenCount(s.tokens_in))
    setText(stats['tokens-out'], tokenCount(s.tokens_out))
    setText(stats.cost, dollars(s.cost_usd))
  }

  /** @param {StoryRun} story */
  const storyDuration = (story) => story.duration_ms ?? (options.now() - story.started_at)

  function renderStories () {
    for (const [key, button] of Object.entries(sortButtons)) {
      const th = /** @type {HTMLElement} */ (button.parentElement)
      if (key === state.sort.key) th.setAttribute('aria-sort', state.sort.dir === 'asc' ? 'ascending' : 'descending')
      else th.removeAttribute('aria-sort')
    }
    if (!detail) return tbody.replaceChildren()
    const sign = state.sort.dir === 'asc' ? 1 : -1
    /** @type {(story: StoryRun) => number} */
    const value = state.sort.key === 'duration' ? storyDuration : state.sort.key === 'cost' ? (story) => story.cost_usd : (story) => story.started_at
    const stories = [...detail.stories].sort((a, b) => sign * (value(a) - value(b)) || a.started_at - b.started_at)
    tbody.replaceChildren(...stories.map((story) => h('tr', { data: { story: story.story_key }, className: story.failed ? 'failed' : '' },
      h('td', { className: 'mono story-key', title: story.story_key, text: story.story_key }),
      h('td', {}, h('span', { className: 'badge badge-small', data: { tone: story.failed ? 'bad' : statusTone(story.status) }, text: story.failed && story.status !== 'blocked' ? `${story.status} · failed` : story.status })),
      h('td', { className: 'mono', text: clockTime(story.started_at) }),
      h('td', { className: 'mono num', text: story.duration_ms === null ? `${timer(storyDuration(story))}…` : duration(story.duration_ms) }),
      h('td', { className: 'mono num', text: String(story.commands.length) }),
      h('td', { className: 'mono num', text: `${tokenCount(story.tokens_in)} / ${tokenCount(story.tokens_out)}` }),
      h('td', { className: 'mono num', text: dollars(story.cost_usd) }))))
  }

  /** @param {Envelope} event */
  function logRow (event) {
    return renderEventRow(event).row
  }

  /** @param {number} id @param {number} mine */
  async function loadLogPage (id, mine) {
    if (logLoading) return
    logLoading = true
    try {
      const page = await fetchBatchEvents(id, logNext ?? 0, LOG_PAGE)
      if (mine !== generation) return
      logList.append(...page.events.map((event) => logRow(/** @type {Envelope} */ (event))))
      logLoaded += page.events.length
      logNext = page.next
      logComplete = page.next === null
    } finally {
      logLoading = false
    }
    logMore.hidden = logNext === null
    logEmpty.hidden = logLoaded > 0
    setText(logCount, `${logLoaded.toLocaleString()} event${logLoaded === 1 ? '' : 's'}${logNext === null ? '' : ' so far'}`)
    logList.dataset.loaded = String(logLoaded)
  }

  logMore.addEventListener('click', () => {
    if (batchId !== null) loadLogPage(batchId, generation).then(saveScroll)
  })

  function saveScroll () {
    if (batchId === null || restoring) return
    state.logScroll = { batch: batchId, top: Math.round(logList.scrollTop), loaded: logLoaded }
    options.onStateChange()
  }
  let scrollQueued = false
  logList.addEventListener('scroll', () => {
    if (scrollQueued) return
    scrollQueued = true
    window.requestAnimationFrame(() => {
      scrollQueued = false
      saveScroll()
    })
  })

  /** @param {number} id @param {number} mine */
  async function loadDetail (id, mine) {
    const next = await fetchBatch(id)
    if (mine !== generation) return false
    detail = next
    renderHeader()
    renderStories()
    const model = modelFromDetail(next)
    recent = recent.filter((event) => event.id > next.last_event_id)
    for (const event of recent) model.apply(event)
    timeline.setModel(model, { live: next.batch.status === 'running', emptyText: 'No command runs in this batch.' })
    return true
  }

  return {
    /** The batch on screen, or null. */
    get batchId () { return batchId },

    /**
     * Shows a batch: its numbers first, then its log, scrolled back to where it was if this is the
     * batch the operator was reading before the reload.
     * @param {number} id
     */
    async show (id) {
      const mine = ++generation
      batchId = id
      detail = null
      recent = []
      logNext = null
      logLoaded = 0
      logComplete = false
      logList.replaceChildren()
      logMore.hidden = true
      logEmpty.hidden = true
      problem.hidden = true
      root.dataset.state = 'loading'
      root.dataset.batch = String(id)
      setText(title, `Batch #${id}`)
      try {
        if (!await loadDetail(id, mine)) return
        const saved = state.logScroll?.batch === id ? state.logScroll : null
        restoring = saved !== null
        await loadLogPage(id, mine)
        const wanted = saved ? Math.min(saved.loaded, MAX_RESTORE_EVENTS) : 0
        for (let pages = 1; logNext !== null && logLoaded < wanted && pages * LOG_PAGE < MAX_RESTORE_EVENTS + LOG_PAGE; pages++) {
          await loadLogPage(id, mine)
          if (mine !== generation) return
        }
        if (mine !== generation) return
        if (saved) logList.scrollTop = saved.top
        restoring = false
        root.dataset.state = 'ready'
      } catch (err) {
        if (mine !== generation) return
        restoring = false
        setText(problem, `Could not load batch #${id}: ${err instanceof Error ? err.message : String(err)}`)
        problem.hidden = false
        root.dataset.state = 'error'
      }
    },

    hide () {
      generation++
      batchId = null
      detail = null
      timeline.setModel(null)
      if (refreshTimer !== null) clearTimeout(refreshTimer)
      refreshTimer = null
    },

    /**
     * A live event of the batch on screen (the controller only passes those): the timeline moves at
     * once, the numbers follow with the next fetch, and the log grows if it is read to its end.
     * @param {Envelope} event
     */
    applyLive (event) {
      if (batchId === null) return
      recent.push(event)
      if (!detail) return
      if (timeline.model?.apply(event)) timeline.render()
      // Events replayed by a reconnect's snapshot are older than the log's last row and are skipped.
      if (logComplete && event.id > Number(logList.lastElementChild instanceof window.HTMLElement ? logList.lastElementChild.dataset.id : 0)) {
        logList.append(logRow(event))
        logLoaded++
        setText(logCount, `${logLoaded.toLocaleString()} events`)
      }
      if (refreshTimer !== null) return
      const id = batchId
      const mine = generation
      refreshTimer = setTimeout(() => {
        refreshTimer = null
        if (mine === generation) loadDetail(id, mine).catch(() => {})
      }, REFRESH_MS)
    },

    tick () {
      if (!detail || detail.batch.status !== 'running') return
      timeline.tick()
      renderHeader()
    }
  }
}
