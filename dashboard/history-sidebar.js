// @ts-check
/**
 * The history sidebar: batches newest first, each with its outcome, start, cycles, stories,
 * duration and cost; "Load more" pages further back; the first page is fetched again when a batch
 * starts or ends, so the list follows the live stream. Foldable to a narrow strip.
 */
import { h, setText } from './dom.js'
import { dateTime, dollars, duration, timer } from './format.js'
import { fetchBatches } from './history-api.js'

/** @typedef {import('../src/lib/history-schemas.ts').BatchSummary} BatchSummary */

export const PAGE_SIZE = 20

/** @param {string} status */
export function batchTone (status) {
  if (status === 'running') return 'active'
  if (status === 'completed' || status === 'all_done') return 'done'
  if (status === 'error') return 'bad'
  return 'idle'
}

/**
 * @typedef {object} SidebarOptions
 * @property {boolean} collapsed initial state
 * @property {(collapsed: boolean) => void} onCollapse
 * @property {(batchId: number) => void} onSelect
 * @property {() => number} now server-clock now, for running batches
 */

/**
 * @param {HTMLElement} root the empty `<aside>`
 * @param {SidebarOptions} options
 */
export function createHistorySidebar (root, options) {
  /** @type {Map<number, { summary: BatchSummary, item: HTMLLIElement }>} */
  const items = new Map()
  let total = 0
  /** @type {number | null} */
  let selected = null
  let loading = false

  const toggle = h('button', { className: 'history-toggle', attrs: { type: 'button', 'aria-controls': 'history-body' } })
  const count = h('span', { className: 'history-count muted mono' })
  const list = h('ol', { className: 'history-list', attrs: { 'aria-label': 'Batches, newest first' } })
  const empty = h('p', { className: 'empty', text: 'No batches yet.' })
  const error = h('p', { className: 'empty history-error' })
  error.hidden = true
  const more = h('button', { className: 'history-more', attrs: { type: 'button' }, text: 'Load more' })
  more.hidden = true
  const body = h('div', { className: 'history-body', attrs: { id: 'history-body' } }, list, empty, error, more)
  root.replaceChildren(
    h('header', { className: 'history-header' }, toggle, h('h2', { text: 'History' }), count),
    body)

  /** @param {boolean} collapsed */
  function setCollapsed (collapsed) {
    root.dataset.collapsed = String(collapsed)
    document.body.dataset.history = collapsed ? 'collapsed' : 'open'
    toggle.setAttribute('aria-expanded', String(!collapsed))
    toggle.title = collapsed ? 'Show the batch history' : 'Hide the batch history'
    toggle.setAttribute('aria-label', toggle.title)
    body.hidden = collapsed
  }
  setCollapsed(options.collapsed)
  toggle.addEventListener('click', () => {
    const collapsed = root.dataset.collapsed !== 'true'
    setCollapsed(collapsed)
    options.onCollapse(collapsed)
  })

  /** @param {BatchSummary} batch */
  function durationText (batch) {
    if (batch.duration_ms !== null) return duration(batch.duration_ms)
    return batch.status === 'running' ? timer(options.now() - batch.started_at) : '–'
  }

  /** @param {BatchSummary} batch */
  function render (batch) {
    const cycles = `${batch.cycles_completed}${batch.max_cycles === 'all' ? '' : `/${batch.max_cycles}`} cycle${batch.cycles_completed === 1 && batch.max_cycles === 'all' ? '' : 's'}`
    const button = h('button', { className: 'history-item-button', attrs: { type: 'button' } },
      h('span', { className: 'history-item-top' },
        h('span', { className: 'history-id mono', text: `#${batch.id}` }),
        h('span', { className: 'badge badge-small', data: { tone: batchTone(batch.status) }, text: batch.status.replace('_', ' ') }),
        h('span', { className: 'history-cost mono', title: 'Cost', text: dollars(batch.cost_usd) })),
      h('span', { className: 'history-item-when muted' },
        h('time', { text: dateTime(batch.started_at) }), ' · ',
        h('span', { className: 'history-duration mono', text: durationText(batch) })),
      h('span', { className: 'history-item-meta muted', text: `${cycles} · ${batch.story_count} stor${batch.story_count === 1 ? 'y' : 'ies'}` }))
    button.addEventListener('click', () => options.onSelect(batch.id))
    const item = h('li', { className: 'history-item', data: { batch: String(batch.id), status: batch.status } }, button)
    if (batch.id === selected) item.setAttribute('aria-current', 'page')
    return item
  }

  /**
   * Adds or replaces batches, keeping the list newest first.
   * @param {BatchSummary[]} batches
   */
  function upsert (batches) {
    for (const batch of batches) {
      const existing = items.get(batch.id)
      const item = render(batch)
      if (existing) existing.item.replaceWith(item)
      items.set(batch.id, { summary: batch, item })
    }
    const ordered = [...items.values()].sort((a, b) => b.summary.started_at - a.summary.started_at || b.summary.id - a.summary.id)
    // Re-appending moves nodes without rebuilding them; only out-of-place ones actually move.
    ordered.forEach(({ item }, index) => {
      if (list.children[index] !== item) list.insertBefore(item, list.children[index] ?? null)
    })
    renderFooter()
  }

  function renderFooter () {
    empty.hidden = items.size > 0 || loading
    more.hidden = items.size >= total
    setText(count, total ? String(total) : '')
    list.dataset.loaded = String(items.size)
  }

  /**
   * @param {number} offset
   * @param {number} limit
   */
  async function load (offset, limit) {
    loading = true
    try {
      const page = await fetchBatches(limit, offset)
      total = page.total
      error.hidden = true
      upsert(page.batches)
    } catch (err) {
      setText(error, `Could not load the history: ${err instanceof Error ? err.message : String(err)}`)
      error.hidden = false
    } finally {
      loading = false
      renderFooter()
    }
  }

  more.addEventListener('click', () => { load(items.size, PAGE_SIZE) })

  return {
    /** Fetches the newest page again (a batch started or ended) and merges it in. */
    refresh () {
      return load(0, PAGE_SIZE)
    },

    /** @param {number | null} batchId */
    setSelected (batchId) {
      selected = batchId
      for (const [id, { item }] of items) {
        if (id === batchId) item.setAttribute('aria-current', 'page')
        else item.removeAttribute('aria-current')
      }
    },

    /** Running batches' durations move with the clock. */
    tick () {
      for (const { summary, item } of items.values()) {
        if (summary.status !== 'running') continue
        const node = item.querySelector('.history-duration')
        if (node) setText(node, durationText(summary))
      }
    }
  }
}
