// @ts-check
/**
 * The live event log, newest first. Events are queued and written to the DOM once per animation
 * frame as one fragment, so a burst of hundreds of events per second costs one layout per frame;
 * the list never holds more than `maxRows` rows.
 */
import { renderContext } from './context-view.js'
import { h, setText } from './dom.js'
import { clockTime, duration, tokens } from './format.js'
import { statusTone } from './sprint-status.js'

/** @typedef {import('./types.js').Envelope} Envelope */

/** Upper bound on rows in the DOM: enough for an hour of context, small enough to filter instantly. */
export const MAX_ROWS = 2000

/** Rows written per animation frame; about 40 ms of work on a slow machine. */
const ROWS_PER_FRAME = 250

/**
 * Filterable kinds, in chip order. `progress` is apart from `command` because it is the noisy one;
 * `tasks` are the orchestrator's housekeeping (background tasks, artifact clean-up).
 */
export const KINDS = /** @type {const} */ (['batch', 'command', 'progress', 'status', 'error', 'context', 'tasks'])
/** @typedef {typeof KINDS[number] | 'other'} Kind */

const KIND_LABELS = { batch: 'Batch', command: 'Commands', progress: 'Progress', status: 'Status', error: 'Errors', context: 'Context', tasks: 'Tasks' }

/**
 * @param {string} type
 * @returns {Kind}
 */
export function eventKind (type) {
  if (type.startsWith('batch:') || type.startsWith('cycle:') || type.startsWith('orchestrator:')) return 'batch'
  if (type === 'command:progress') return 'progress'
  if (type.startsWith('command:')) return 'command'
  if (type === 'story:status') return 'status'
  if (type === 'error') return 'error'
  // Injection is the project context (and story files) handed to an agent.
  if (type.startsWith('context:') || type.startsWith('injection:')) return 'context'
  if (type.startsWith('background:') || type.startsWith('cleanup:')) return 'tasks'
  return 'other'
}

/**
 * Events the orchestrator sends when something went wrong without stopping the run: each raises a
 * warning toast and a highlighted log row. (`error` events keep their error toast.)
 */
export const WARNING_TYPES = new Set(['batch:warning', 'injection:warning', 'injection:empty', 'context:copy_failed',
  'context:error', 'background:error', 'cleanup:error', 'cleanup:file_error'])

/**
 * What a warning toast shows for an event of `WARNING_TYPES`: its message, and every other field
 * one click away. Null for any other event.
 * @param {Envelope} event
 * @returns {{ id: number, timestamp: number, type: string, message: string, context: Record<string, unknown> } | null}
 */
export function warningOf (event) {
  if (!WARNING_TYPES.has(event.type)) return null
  const { message, ...context } = /** @type {Record<string, unknown>} */ (event.payload)
  const text = describeEvent(event).text
  return { id: event.id, timestamp: event.timestamp, type: event.type, message: typeof message === 'string' && message !== '' ? message : text, context }
}

/**
 * @typedef {object} RowContent
 * @property {string} label short type tag
 * @property {string} story
 * @property {string} command
 * @property {string} task
 * @property {string} text status or message
 * @property {string[]} metrics formatted duration / tokens
 * @property {string} tone colour family of the row's status
 * @property {Record<string, unknown> | null} details error context, shown on demand
 */

/** @param {unknown} value */
const str = (value) => typeof value === 'string' ? value : (typeof value === 'number' ? String(value) : '')

/**
 * @param {number} count
 * @param {string} one
 * @param {string} [many]
 */
const plural = (count, one, many = `${one}s`) => `${count} ${count === 1 ? one : many}`

/** @param {number} bytes */
const kilobytes = (bytes) => `${Math.round(bytes / 1024).toLocaleString()} KB`

/**
 * A file path shortened to its last two parts: the log has one line per event.
 * @param {string} path
 */
const shortPath = (path) => path.split(/[\\/]/).filter(Boolean).slice(-2).join('/') || path

/** @param {string} text */
const withMessage = (text) => text ? ` · ${text}` : ''

/**
 * What one event says, as plain strings. Unknown event types still get a row (with their raw
 * payload), so a newer orchestrator never makes events silently disappear.
 * @param {Envelope} event
 * @returns {RowContent}
 */
export function describeEvent (event) {
  /** @type {RowContent} */
  const row = { label: event.type, story: '', command: '', task: '', text: '', metrics: [], tone: 'neutral', details: null }
  switch (event.type) {
    case 'batch:start': {
      const p = event.payload
      row.label = 'batch'
      const limit = p.max_cycles === null || p.batch_mode === 'all' ? 'all' : p.max_cycles
      row.text = `Batch #${p.batch_id} started · ${limit === 'all' ? 'until no story is left' : plural(limit, 'cycle')}`
      row.tone = 'active'
      break
    }
    case 'batch:warning': {
      const p = event.payload
      row.label = 'warning'
      row.text = `Batch #${p.batch_id}: ${p.message}${p.warning_type ? ` (${p.warning_type})` : ''}`
      row.tone = 'warn'
      break
    }
    case 'batch:end': {
      const p = event.payload
      row.label = 'batch'
      const after = p.cycles_completed === undefined ? '' : ` after ${plural(p.cycles_completed, 'cycle')}`
      row.text = p.status === 'all_done' ? `Batch #${p.batch_id} ended: all stories done${after}` : `Batch #${p.batch_id} ${p.status}${after}`
      row.tone = p.status === 'completed' || p.status === 'all_done' ? 'done' : (p.status === 'error' ? 'bad' : 'idle')
      break
    }
    case 'cycle:start': {
      const p = event.payload
      row.label = 'cycle'
      row.text = `Cycle ${p.cycle_number} started${p.story_keys.length ? ` · ${p.story_keys.join(', ')}` : ''}`
      row.tone = 'active'
      break
    }
    case 'cycle:end': {
      const p = event.payload
      row.label = 'cycle'
      const count = p.completed_stories.length
      row.text = `Cycle ${p.cycle_number} finished · ${count} stor${count === 1 ? 'y' : 'ies'} completed${count ? `: ${p.completed_stories.join(', ')}` : ''}`
      row.tone = 'done'
      break
    }
    case 'command:start': {
      const p = event.payload
      Object.assign(row, { label: 'start', story: p.story_key, command: p.command, task: p.task_id, text: `started${withMessage(p.message ?? '')}`, tone: 'active' })
      break
    }
    case 'command:progress': {
      const p = event.payload
      Object.assign(row, { label: 'progress', story: p.story_key, command: p.command, task: p.task_id, text: p.message })
      break
    }
    case 'command:end': {
      const p = event.payload
      Object.assign(row, { label: 'end', story: p.story_key, command: p.command, task: p.task_id, text: `${p.status}${withMessage(p.message ?? '')}`, tone: statusTone(p.status) })
      const metrics = p.metrics ?? {}
      if (typeof metrics.duration_ms === 'number') row.metrics.push(duration(metrics.duration_ms))
      if (typeof metrics.tokens === 'number') row.metrics.push(tokens(metrics.tokens))
      break
    }
    case 'story:status': {
      const p = event.payload
      Object.assign(row, { label: 'status', story: p.story_key, text: `${p.old_status ?? '—'} → ${p.new_status}`, tone: statusTone(p.new_status) })
      break
    }
    case 'error': {
      const p = event.payload
      /** @type {Record<string, unknown>} */
      const context = p.context ?? {}
      // Error context often names where it happened; surface that in the usual columns.
      Object.assign(row, {
        label: 'error',
        story: str(context.story_key),
        command: str(context.command),
        task: str(context.task_id),
        text: `${p.type}: ${p.message}`,
        tone: 'bad',
        details: p.context && Object.keys(p.context).length > 0 ? p.context : null
      })
      break
    }
    case 'context:create':
    case 'context:refresh':
    case 'context:complete': {
      const p = event.payload
      Object.assign(row, {
        label: 'context',
        task: p.task_id === undefined ? '' : String(p.task_id),
        text: `${event.type.slice('context:'.length)} · ${p.status}${p.message ? ` · ${p.message}` : ''}`,
        tone: statusTone(p.status)
      })
      break
    }
    case 'context:error': {
      const p = event.payload
      Object.assign(row, { label: 'context', task: String(p.task_id), text: `refresh failed: ${p.error}`, tone: 'warn' })
      break
    }
    case 'context:fresh':
      Object.assign(row, { label: 'context', text: `fresh${withMessage(event.payload.message)}`, tone: 'done' })
      break
    case 'context:copied': {
      const p = event.payload
      Object.assign(row, { label: 'context', text: `copied for this batch to ${shortPath(p.destination)}`, tone: 'done' })
      break
    }
    case 'context:copy_failed': {
      const p = event.payload
      Object.assign(row, { label: 'context', text: `not copied: ${p.reason}${withMessage(p.message)}`, tone: 'warn' })
      break
    }
    case 'injection:empty': {
      const p = event.payload
      Object.assign(row, { label: 'inject', command: p.command, text: `no files to inject${p.story_keys.length ? ` for ${p.story_keys.join(', ')}` : ''}`, tone: 'warn' })
      break
    }
    case 'injection:warning': {
      const p = event.payload
      Object.assign(row, { label: 'inject', command: p.command, text: `injected context is ${kilobytes(p.size_bytes)}, over the ${kilobytes(p.threshold_bytes)} warning threshold`, tone: 'warn' })
      break
    }
    case 'background:complete': {
      const p = event.payload
      Object.assign(row, { label: 'task', command: p.task_type, task: String(p.task_id), text: p.status, tone: statusTone(p.status) })
      break
    }
    case 'background:error': {
      const p = event.payload
      Object.assign(row, { label: 'task', command: p.task_type, task: p.task_id === undefined ? '' : String(p.task_id), text: `${p.status}: ${p.error}`, tone: 'warn' })
      break
    }
    case 'cleanup:complete': {
      const p = event.payload
      Object.assign(row, { label: 'cleanup', text: `${plural(p.files_moved, 'file')} archived${p.story_keys.length ? ` for ${p.story_keys.join(', ')}` : ''}`, tone: 'done' })
      break
    }
    case 'cleanup:error': {
      const p = event.payload
      Object.assign(row, { label: 'cleanup', text: `clean-up failed: ${p.error}${withMessage(p.message)}`, tone: 'warn' })
      break
    }
    case 'cleanup:file_moved': {
      const p = event.payload
      Object.assign(row, { label: 'cleanup', text: `archived ${p.file_name} to ${shortPath(p.destination)}`, tone: 'idle' })
      break
    }
    case 'cleanup:file_error': {
      const p = event.payload
      Object.assign(row, { label: 'cleanup', text: `could not archive ${shortPath(p.file)}: ${p.error}`, tone: 'warn' })
      break
    }
    case 'orchestrator:start': {
      const p = event.payload
      Object.assign(row, { label: 'orchestrator', text: `Orchestrator started (pid ${p.pid}) · ${p.batch_size === 'all' ? 'until no story is left' : plural(p.batch_size, 'cycle')}`, tone: 'active' })
      break
    }
    case 'orchestrator:stopping': {
      const p = event.payload
      Object.assign(row, { label: 'orchestrator', text: `Orchestrator (pid ${p.pid}) stopping on ${p.signal}`, tone: 'idle' })
      break
    }
    case 'orchestrator:exit': {
      const p = event.payload
      const how = p.signal === null ? `exited with code ${p.code ?? '?'}` : `ended by ${p.signal}`
      Object.assign(row, { label: 'orchestrator', text: `Orchestrator (pid ${p.pid}) ${how} after ${duration(p.duration_ms)}`, tone: p.code === 0 ? 'done' : (p.signal === null ? 'bad' : 'idle') })
      break
    }
    default: {
      const unknown = /** @type {{ type: string, payload: unknown }} */ (event)
      row.label = unknown.type
      row.text = JSON.stringify(unknown.payload).slice(0, 500)
    }
  }
  return row
}

/**
 * @typedef {object} EventLogOptions
 * @property {HTMLOListElement} list the scrolling list
 * @property {HTMLElement} empty placeholder while there are no rows
 * @property {HTMLButtonElement} jump "new events" button shown when the operator scrolled away
 * @property {HTMLElement} count header counter
 * @property {HTMLElement} kindFilters container for the kind chips
 * @property {() => { text: string, hiddenKinds: string[] }} getFilter
 * @property {(kind: string, hidden: boolean) => void} onKindFilter
 * @property {(storyKey: string) => void} onStoryClick
 * @property {number} [maxRows]
 */

/**
 * One event as a log row: time, label, story, command, task and text with its metrics; an error's
 * context folds open under the row. Shared by the live log and a past batch's log.
 * @param {Envelope} event
 * @returns {{ row: HTMLLIElement, content: ReturnType<typeof describeEvent> }}
 */
export function renderEventRow (event) {
  const content = describeEvent(event)
  const text = h('span', { className: 'cell-text', title: [content.text, ...content.metrics].join(' · ') })
  /** @type {HTMLDetailsElement | null} */
  let details = null
  if (content.details !== null) {
    details = h('details', { className: 'error-details' },
      h('summary', { text: content.text }),
      renderContext(content.details))
    text.append(details)
  } else {
    text.append(content.text)
  }
  for (const metric of content.metrics) text.append(h('span', { className: 'metric', text: metric }))
  const row = h('li', {
    className: 'row',
    data: { kind: eventKind(event.type), type: event.type, id: String(event.id), tone: content.tone, ...(WARNING_TYPES.has(event.type) ? { level: 'warning' } : {}) },
    title: `#${event.id} · ${event.type}`
  },
  h('time', { className: 'cell-time', text: clockTime(event.timestamp) }),
  h('span', { className: 'cell-label', text: content.label }),
  h('span', { className: 'cell-story', text: content.story }),
  h('span', { className: 'cell-command', text: content.command }),
  h('span', { className: 'cell-task', text: content.task }),
  text)
  // An opened error takes the full width of the row below its columns; a narrow column would
  // wrap a stack trace into a ribbon.
  if (details) details.addEventListener('toggle', () => row.classList.toggle('open', details.open))
  return { row, content }
}

/**
 * @param {EventLogOptions} options
 */
export function createEventLog (options) {
  const maxRows = options.maxRows ?? MAX_ROWS
  const { list } = options
  /** @type {Envelope[]} */
  let pending = []
  let scheduled = false
  let rowCount = 0
  let total = 0
  let unseen = 0
  // Following = pinned to the newest row (top). Scrolling away stops autoscroll until the operator comes back.
  let following = true
  /** Lower-cased text of each row, for the filter; a WeakMap so trimmed rows take their text with them. */
  /** @type {WeakMap<Element, string>} */
  const searchText = new WeakMap()
  /** @type {Record<string, number>} */
  const kindCounts = {}
  /** @type {Map<string, HTMLSpanElement>} */
  const kindCountNodes = new Map()

  for (const kind of KINDS) {
    const countNode = h('span', { className: 'chip-count', text: '0' })
    kindCountNodes.set(kind, countNode)
    const chip = h('button', { className: 'chip', data: { kind }, attrs: { type: 'button', 'aria-pressed': 'true' } },
      h('span', { className: 'chip-dot', attrs: { 'aria-hidden': 'true' } }), KIND_LABELS[kind], countNode)
    chip.addEventListener('click', () => options.onKindFilter(kind, chip.getAttribute('aria-pressed') === 'true'))
    options.kindFilters.append(chip)
  }

  list.addEventListener('scroll', () => {
    following = list.scrollTop <= 4
    if (following) {
      unseen = 0
      options.jump.hidden = true
    }
  }, { passive: true })

  options.jump.addEventListener('click', () => {
    list.scrollTop = 0
    following = true
    unseen = 0
    options.jump.hidden = true
  })

  list.addEventListener('click', (event) => {
    const target = /** @type {Element | null} */ (event.target)
    const story = target?.closest('.cell-story')
    if (story?.textContent) options.onStoryClick(story.textContent)
  })

  /**
   * @param {Element} row
   * @param {{ text: string, hiddenKinds: Set<string> }} filter
   */
  function matches (row, filter) {
    if (filter.hiddenKinds.has(/** @type {HTMLElement} */ (row).dataset.kind ?? '')) return false
    return filter.text === '' || (searchText.get(row) ?? '').includes(filter.text)
  }

  function currentFilter () {
    const { text, hiddenKinds } = options.getFilter()
    return { text: text.trim().toLowerCase(), hiddenKinds: new Set(hiddenKinds) }
  }

  /**
   * @param {Envelope} event
   * @param {{ text: string, hiddenKinds: Set<string> }} filter
   */
  function buildRow (event, filter) {
    const { row, content } = renderEventRow(event)
    searchText.set(row, [event.type, content.story, content.command, content.task, content.text, ...content.metrics, content.details ? JSON.stringify(content.details) : ''].join(' ').toLowerCase())
    row.hidden = !matches(row, filter)
    return row
  }

  function flush () {
    scheduled = false
    if (pending.length > maxRows) pending = pending.slice(-maxRows)
    if (pending.length === 0) return
    // A big backlog (a resume, a burst) is written over several frames so the page never freezes;
    // the oldest go first so the newest still end up on top.
    const batch = pending.splice(0, ROWS_PER_FRAME)
    if (pending.length > 0) schedule()
    const filter = currentFilter()
    const fragment = document.createDocumentFragment()
    let visible = 0
    for (let index = batch.length - 1; index >= 0; index--) {
      const row = buildRow(/** @type {Envelope} */ (batch[index]), filter)
      if (!row.hidden) visible++
      fragment.append(row)
    }
    const anchor = following ? null : list.firstElementChild
    const anchorTop = anchor instanceof window.HTMLElement ? anchor.offsetTop : 0
    list.prepend(fragment)
    rowCount += batch.length
    // Trim the oldest rows (at the bottom) so the DOM stays bounded however long the page is open.
    while (rowCount > maxRows && list.lastElementChild) {
      list.lastElementChild.remove()
      rowCount--
    }
    // Following needs nothing: new rows go in above the top of a list scrolled to 0, and touching
    // scrollTop there would force a synchronous layout of the whole batch.
    if (!following) {
      // Keep what the operator is reading still: shift by exactly the height of the new rows.
      if (anchor instanceof window.HTMLElement && anchor.isConnected) list.scrollTop += anchor.offsetTop - anchorTop
      unseen += visible
      if (unseen > 0) {
        setText(options.jump, `↑ ${unseen.toLocaleString()} new event${unseen === 1 ? '' : 's'}`)
        options.jump.hidden = false
      }
    }
    options.empty.hidden = rowCount > 0
    renderCounts()
  }

  function schedule () {
    if (scheduled) return
    scheduled = true
    window.requestAnimationFrame(flush)
  }

  function renderCounts () {
    const shown = rowCount < total ? ` · newest ${rowCount.toLocaleString()} kept` : ''
    setText(options.count, total ? `${total.toLocaleString()} event${total === 1 ? '' : 's'}${shown}` : '')
    for (const [kind, node] of kindCountNodes) setText(node, (kindCounts[kind] ?? 0).toLocaleString())
  }

  return {
    /**
     * Queues events (oldest first) for the next frame.
     * @param {Envelope[]} events
     */
    append (events) {
      for (const event of events) {
        const kind = eventKind(event.type)
        kindCounts[kind] = (kindCounts[kind] ?? 0) + 1
        pending.push(event)
      }
      total += events.length
      // A hidden tab gets no animation frames; cap the queue there instead of growing it for hours.
      if (pending.length > 2 * maxRows) pending = pending.slice(-maxRows)
      schedule()
    },

    /** Empties the log (the service sent a reset: the view is rebuilt from its snapshot). */
    clear () {
      pending = []
      list.replaceChildren()
      rowCount = 0
      total = 0
      unseen = 0
      for (const kind of Object.keys(kindCounts)) kindCounts[kind] = 0
      following = true
      options.jump.hidden = true
      options.empty.hidden = false
      renderCounts()
    },

    /**
     * Events of one kind seen since the last reset (trimmed rows included).
     * @param {string} kind
     */
    count (kind) {
      return kindCounts[kind] ?? 0
    },

    /** Re-applies the text and kind filters to every row; at most `maxRows` string checks. */
    applyFilter () {
      const filter = currentFilter()
      for (const row of list.children) {
        const hide = !matches(row, filter)
        if (/** @type {HTMLElement} */ (row).hidden !== hide) /** @type {HTMLElement} */ (row).hidden = hide
      }
      for (const chip of options.kindFilters.querySelectorAll('.chip')) {
        const kind = /** @type {HTMLElement} */ (chip).dataset.kind ?? ''
        chip.setAttribute('aria-pressed', String(!filter.hiddenKinds.has(kind)))
      }
    }
  }
}
