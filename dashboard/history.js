// @ts-check
/**
 * Batch history on the page: the sidebar, the past-batch view, the live batch's timeline, and which
 * of the two views is shown (the URL's `#batch=12`, so links can be shared and Back works). app.js
 * hands it the init and every event it applies; everything else happens here.
 */
import { byId, h, setText } from './dom.js'
import { createBatchModel, modelFromDetail } from './batch-model.js'
import { createBatchView } from './batch-view.js'
import { fetchBatch } from './history-api.js'
import { createHistorySidebar } from './history-sidebar.js'
import { batchFromHash, loadHistoryState, saveHistoryState } from './history-state.js'
import { createTimeline } from './timeline.js'

/** @typedef {import('./types.js').Envelope} Envelope */
/** @typedef {import('./types.js').InitPayload} InitPayload */
/** @typedef {import('./batch-model.js').BatchModel} BatchModel */

/** The sidebar's totals follow command ends at most this often; starts and ends of batches at once. */
const SIDEBAR_REFRESH_MS = 5000

/**
 * @param {{ now: () => number }} options server-clock now
 */
export function createHistory (options) {
  const state = loadHistoryState()
  const persist = () => saveHistoryState(state)

  const sidebar = createHistorySidebar(byId('history'), {
    collapsed: state.sidebarCollapsed,
    now: options.now,
    onCollapse (collapsed) {
      state.sidebarCollapsed = collapsed
      persist()
    },
    onSelect (batchId) {
      if (batchFromHash(window.location.hash) !== batchId) window.location.hash = `batch=${batchId}`
    }
  })

  const batchViewRoot = byId('batch-view')
  const batchView = createBatchView(batchViewRoot, {
    now: options.now,
    state,
    onStateChange: persist,
    onBack () {
      // A new history entry, so Back returns to the batch that was open.
      window.history.pushState(null, '', window.location.pathname + window.location.search)
      applyRoute()
    }
  })

  // The live view's timeline panel, foldable; its state is remembered.
  const livePanel = byId('live-timeline')
  const liveToggle = h('button', { className: 'panel-toggle', attrs: { type: 'button', 'aria-controls': 'live-timeline-body' } },
    h('span', { className: 'chevron', attrs: { 'aria-hidden': 'true' } }), h('h2', { text: 'Timeline' }))
  const liveLabel = h('span', { className: 'muted mono live-timeline-batch' })
  const liveBody = h('div', { className: 'timeline-body', attrs: { id: 'live-timeline-body' } })
  livePanel.replaceChildren(h('header', { className: 'panel-header' }, liveToggle, liveLabel), liveBody)
  const liveTimeline = createTimeline(liveBody, { now: options.now, label: 'Timeline of the live batch' })
  /** @param {boolean} open */
  function setTimelineOpen (open) {
    livePanel.dataset.open = String(open)
    liveToggle.setAttribute('aria-expanded', String(open))
    liveBody.hidden = !open
  }
  setTimelineOpen(state.timelineOpen)
  liveToggle.addEventListener('click', () => {
    state.timelineOpen = livePanel.dataset.open !== 'true'
    persist()
    setTimelineOpen(state.timelineOpen)
    if (state.timelineOpen) liveTimeline.render()
  })

  /** @type {BatchModel | null} */
  let live = null
  /** Live events that arrived while the live batch's runs were being fetched; laid over the answer. */
  /** @type {Envelope[] | null} */
  let pending = null
  let loadGeneration = 0
  let renderQueued = false

  /** @param {BatchModel | null} model */
  function showLive (model) {
    live = model
    setText(liveLabel, model ? `#${model.batchId}` : '')
    liveTimeline.setModel(model, { live: true, emptyText: model ? 'No command runs yet.' : 'No batch running. Past batches are in the history.' })
  }

  /**
   * Loads the runs of the running batch, then applies the events that came in meanwhile.
   * @param {NonNullable<InitPayload['batch']>} batch
   */
  async function loadLive (batch) {
    const mine = ++loadGeneration
    pending = []
    /** @type {BatchModel} */
    let model
    let asOf = 0
    try {
      const detail = await fetchBatch(batch.id)
      model = modelFromDetail(detail)
      asOf = detail.last_event_id
    } catch {
      // The history answered nothing (an older service, a hiccup): draw what the live events show.
      model = createBatchModel(batch)
    }
    if (mine !== loadGeneration) return
    for (const event of pending ?? []) if (event.id > asOf) model.apply(event)
    pending = null
    showLive(model)
  }

  function queueRender () {
    if (renderQueued) return
    renderQueued = true
    window.requestAnimationFrame(() => {
      renderQueued = false
      if (!liveBody.hidden) liveTimeline.render()
    })
  }

  /** @type {ReturnType<typeof setTimeout> | null} */
  let sidebarTimer = null
  /** @param {number} delay */
  function refreshSidebar (delay) {
    if (sidebarTimer !== null) {
      if (delay > 0) return
      clearTimeout(sidebarTimer)
    }
    sidebarTimer = setTimeout(() => {
      sidebarTimer = null
      sidebar.refresh()
    }, delay)
  }

  /** Shows the view the URL asks for. */
  function applyRoute () {
    const batchId = batchFromHash(window.location.hash)
    document.body.dataset.view = batchId === null ? 'live' : 'batch'
    batchViewRoot.hidden = batchId === null
    sidebar.setSelected(batchId)
    if (batchId === null) {
      batchView.hide()
      if (!liveBody.hidden) liveTimeline.render()
    } else if (batchView.batchId !== batchId) {
      batchView.show(batchId)
    }
  }
  window.addEventListener('hashchange', applyRoute)
  window.addEventListener('popstate', applyRoute)
  applyRoute()
  sidebar.refresh()

  return {
    /**
     * A connection's first message. A fresh snapshot reloads the live batch's runs; a resume keeps
     * the model and lets the missed events move it on.
     * @param {Pick<InitPayload, 'batch' | 'resumed'>} init
     */
    applyInit (init) {
      if (init.batch && init.batch.status === 'running') {
        if (!init.resumed || live?.batchId !== init.batch.id) loadLive(init.batch)
      } else if (!init.resumed) {
        loadGeneration++
        pending = null
        if (!live || live.endedAt === null) showLive(null)
      }
      refreshSidebar(0)
    },

    /**
     * Events in id order, each once (app.js guarantees both).
     * @param {Envelope[]} events
     */
    applyEvents (events) {
      let changed = false
      for (const event of events) {
        if (event.type === 'batch:start') {
          loadGeneration++
          pending = null
          showLive(createBatchModel({ id: event.payload.batch_id, started_at: event.timestamp, ended_at: null, status: 'running' }))
          refreshSidebar(0)
        } else if (pending) {
          pending.push(event)
        } else if (live?.apply(event)) {
          changed = true
        }
        if (event.type === 'batch:end') refreshSidebar(0)
        else if (event.type === 'cycle:end' || event.type === 'command:end') refreshSidebar(SIDEBAR_REFRESH_MS)
        // The batch on screen may be the running one: it moves too.
        const shown = batchView.batchId
        if (shown !== null && (event.type === 'batch:end' ? event.payload.batch_id === shown : live?.batchId === shown)) batchView.applyLive(event)
      }
      if (changed) queueRender()
    },

    /** Once a second. */
    tick () {
      if (!liveBody.hidden && document.body.dataset.view !== 'batch') liveTimeline.tick()
      batchView.tick()
      sidebar.tick()
    }
  }
}
