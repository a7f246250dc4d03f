// @ts-check
/**
 * The story board: stories grouped by epic with a coloured status badge each. Built once per
 * sprint-status load; a `story:status` event then changes one badge in place.
 */
import { h, setText } from './dom.js'
import { epicOf, groupByEpic, isEpicEntry, isRetrospective, statusTone, storyLabel } from './sprint-status.js'

/** @typedef {import('./sprint-status.js').Epic} Epic */

/**
 * @typedef {object} StoryBoardOptions
 * @property {HTMLElement} root scroll container the epics go into
 * @property {HTMLElement} empty placeholder shown when there are no stories
 * @property {HTMLElement} filters container for the status filter chips
 * @property {HTMLElement} summary one-line count in the panel header
 * @property {() => string[]} getHiddenStatuses
 * @property {() => string[]} getCollapsedEpics
 * @property {(status: string, hidden: boolean) => void} onStatusFilter
 * @property {(epic: string, collapsed: boolean) => void} onEpicToggle
 */

/**
 * @typedef {object} StoryView
 * @property {HTMLLIElement} card
 * @property {HTMLSpanElement} badge
 * @property {HTMLParagraphElement} description
 * @property {string} status
 * @property {string} epic
 */

/**
 * @typedef {object} EpicView
 * @property {HTMLElement} section
 * @property {HTMLOListElement} list
 * @property {HTMLSpanElement} progressText
 * @property {HTMLElement} progressFill
 * @property {HTMLSpanElement} statusBadge
 * @property {HTMLSpanElement} retroBadge
 */

/**
 * @param {StoryBoardOptions} options
 */
export function createStoryBoard (options) {
  /** @type {Map<string, StoryView>} */
  const stories = new Map()
  /** @type {Map<string, EpicView>} */
  const epics = new Map()
  /** @type {Record<string, string>} */
  let descriptions = {}

  /**
   * @param {string} status
   * @param {string} [className]
   */
  function badge (status, className = 'badge') {
    return h('span', { className, data: { tone: statusTone(status) }, text: status || 'unknown' })
  }

  /**
   * @param {string} id
   * @param {string | null} status
   * @param {string | null} retrospective
   */
  function addEpic (id, status, retrospective) {
    const collapsed = options.getCollapsedEpics().includes(id)
    const statusBadge = badge(status ?? '', 'badge badge-small')
    statusBadge.hidden = status === null
    const retroBadge = badge(retrospective ?? '', 'badge badge-small badge-outline')
    retroBadge.title = 'Retrospective'
    retroBadge.hidden = retrospective === null
    const progressText = h('span', { className: 'epic-count mono' })
    const progressFill = h('div', { className: 'epic-meter-fill' })
    const toggle = h('button', {
      className: 'epic-toggle',
      attrs: { type: 'button', 'aria-expanded': String(!collapsed) }
    },
    h('span', { className: 'chevron', attrs: { 'aria-hidden': 'true' } }),
    h('span', { className: 'epic-title', text: `Epic ${id}` }),
    statusBadge,
    retroBadge,
    h('span', { className: 'epic-spacer' }),
    progressText,
    h('span', { className: 'epic-meter', attrs: { 'aria-hidden': 'true' } }, progressFill))
    const list = h('ol', { className: 'story-list' })
    const section = h('section', { className: 'epic', data: { epic: id } }, toggle, list)
    section.classList.toggle('collapsed', collapsed)
    toggle.addEventListener('click', () => {
      const nowCollapsed = !section.classList.contains('collapsed')
      section.classList.toggle('collapsed', nowCollapsed)
      toggle.setAttribute('aria-expanded', String(!nowCollapsed))
      options.onEpicToggle(id, nowCollapsed)
    })
    options.root.append(section)
    /** @type {EpicView} */
    const view = { section, list, progressText, progressFill, statusBadge, retroBadge }
    epics.set(id, view)
    return view
  }

  /**
   * @param {string} key
   * @param {string} status
   */
  function addStory (key, status) {
    const epicId = epicOf(key)
    const epic = epics.get(epicId) ?? addEpic(epicId, null, null)
    const { number, title } = storyLabel(key)
    const storyBadge = badge(status)
    const description = h('p', { className: 'story-description' })
    const head = h('button', { className: 'story-head', attrs: { type: 'button', 'aria-expanded': 'false' } },
      h('span', { className: 'story-number mono', text: number }),
      h('span', { className: 'story-title', text: title }),
      storyBadge)
    const card = h('li', { className: 'story', data: { key, status, tone: statusTone(status) } }, head, description)
    head.addEventListener('click', () => {
      const expanded = card.classList.toggle('expanded')
      head.setAttribute('aria-expanded', String(expanded))
    })
    epic.list.append(card)
    /** @type {StoryView} */
    const view = { card, badge: storyBadge, description, status, epic: epicId }
    stories.set(key, view)
    describe(key, view)
    return view
  }

  /**
   * @param {string} key
   * @param {StoryView} view
   */
  function describe (key, view) {
    const text = descriptions[key] ?? ''
    // The tooltip is the hover affordance; the expanded card shows the same text in full.
    view.card.title = text ? `${key}\n\n${text}` : key
    setText(view.description, text || 'No description for this story.')
    view.description.classList.toggle('muted', !text)
  }

  /** Recounts per-epic progress, the summary line and the filter chips. Cheap: one pass over stories. */
  function refreshCounts () {
    /** @type {Map<string, number>} */
    const byStatus = new Map()
    /** @type {Map<string, { done: number, total: number }>} */
    const byEpic = new Map()
    for (const view of stories.values()) {
      byStatus.set(view.status, (byStatus.get(view.status) ?? 0) + 1)
      const counts = byEpic.get(view.epic) ?? { done: 0, total: 0 }
      counts.total += 1
      if (statusTone(view.status) === 'done') counts.done += 1
      byEpic.set(view.epic, counts)
    }
    for (const [id, view] of epics) {
      const counts = byEpic.get(id) ?? { done: 0, total: 0 }
      setText(view.progressText, `${counts.done}/${counts.total}`)
      view.progressFill.style.width = `${counts.total ? (100 * counts.done) / counts.total : 0}%`
    }
    const done = [...stories.values()].filter((view) => statusTone(view.status) === 'done').length
    setText(options.summary, stories.size ? `${done} of ${stories.size} done` : '')
    renderFilterChips(byStatus)
    applyStatusFilter()
  }

  let countsScheduled = false
  /** A burst of status changes recounts once per frame, not once per event. */
  function scheduleCounts () {
    if (countsScheduled) return
    countsScheduled = true
    window.requestAnimationFrame(() => {
      countsScheduled = false
      refreshCounts()
    })
  }

  /** @param {Map<string, number>} byStatus */
  function renderFilterChips (byStatus) {
    const hidden = options.getHiddenStatuses()
    // Hidden statuses stay listed even at zero so a filter can always be switched back off.
    const names = new Set([...byStatus.keys(), ...hidden])
    /** @type {HTMLButtonElement[]} */
    const chips = []
    for (const status of [...names].sort(byTone)) {
      const off = hidden.includes(status)
      const chip = h('button', {
        className: 'chip',
        data: { tone: statusTone(status), status },
        attrs: { type: 'button', 'aria-pressed': String(!off) }
      }, h('span', { className: 'chip-dot', attrs: { 'aria-hidden': 'true' } }), status || 'unknown', h('span', { className: 'chip-count', text: String(byStatus.get(status) ?? 0) }))
      chip.addEventListener('click', () => options.onStatusFilter(status, !off))
      chips.push(chip)
    }
    options.filters.replaceChildren(...chips)
  }

  function applyStatusFilter () {
    const hidden = new Set(options.getHiddenStatuses())
    for (const view of stories.values()) view.card.hidden = hidden.has(view.status)
  }

  return {
    /**
     * Replaces the board with a fresh sprint-status load.
     * @param {Array<[string, string]>} entries
     */
    setEntries (entries) {
      stories.clear()
      epics.clear()
      options.root.replaceChildren()
      for (const epic of groupByEpic(entries)) {
        addEpic(epic.id, epic.status, epic.retrospective)
        for (const story of epic.stories) addStory(story.key, story.status)
      }
      options.empty.hidden = stories.size > 0
      setText(options.empty, 'No stories in sprint-status.yaml yet.')
      if (stories.size === 0) options.root.append(options.empty)
      refreshCounts()
    },

    /** @param {string} message shown instead of the board (no sprint file, fetch failure) */
    showMessage (message) {
      if (stories.size > 0) return
      setText(options.empty, message)
      options.empty.hidden = false
      if (!options.empty.isConnected) options.root.append(options.empty)
    },

    /** @param {Record<string, string>} next */
    setDescriptions (next) {
      descriptions = next
      for (const [key, view] of stories) describe(key, view)
    },

    /**
     * Applies a `story:status` change in place. A key the file did not list (a story created
     * mid-sprint) gets a card in its epic rather than being dropped.
     * @param {string} key
     * @param {string} status
     * @param {{ flash?: boolean }} [how]
     */
    setStatus (key, status, how = {}) {
      if (isEpicEntry(key) || isRetrospective(key)) {
        const epic = epics.get(epicOf(key)) ?? addEpic(epicOf(key), null, null)
        const target = isEpicEntry(key) ? epic.statusBadge : epic.retroBadge
        setText(target, status)
        target.dataset.tone = statusTone(status)
        target.hidden = false
        return
      }
      options.empty.hidden = true
      const view = stories.get(key) ?? addStory(key, status)
      if (view.status !== status) {
        view.status = status
        setText(view.badge, status)
        view.badge.dataset.tone = statusTone(status)
        view.card.dataset.status = status
        view.card.dataset.tone = statusTone(status)
      }
      if (how.flash) {
        // Remove and re-add on the next frame so the highlight restarts even if it is still running.
        const card = view.card
        card.classList.remove('flash')
        window.requestAnimationFrame(() => card.classList.add('flash'))
      }
      scheduleCounts()
    },

    /** Stories done and in total, for the batch panel. */
    counts () {
      let done = 0
      for (const view of stories.values()) if (statusTone(view.status) === 'done') done++
      return { done, total: stories.size }
    },

    /** Re-reads the persisted filters (after a chip click). */
    refreshFilters () {
      refreshCounts()
    }
  }
}

const toneOrder = ['active', 'review', 'bad', 'ready', 'idle', 'neutral', 'done']
/**
 * @param {string} a
 * @param {string} b
 */
function byTone (a, b) {
  return toneOrder.indexOf(statusTone(a)) - toneOrder.indexOf(statusTone(b)) || a.localeCompare(b)
}
