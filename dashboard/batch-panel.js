// @ts-check
/**
 * The batch panel (state, cycle progress, elapsed time) and the current operations: every
 * `command:start` still waiting for its `command:end`, each with a live timer.
 */
import { h, setText } from './dom.js'
import { clockTime, timer } from './format.js'

/** @typedef {import('./types.js').Envelope} Envelope */
/** @typedef {import('./types.js').Batch} Batch */

/**
 * @typedef {object} BatchElements
 * @property {HTMLElement} panel
 * @property {HTMLElement} id
 * @property {HTMLElement} state
 * @property {HTMLElement} elapsed
 * @property {HTMLElement} progress
 * @property {HTMLElement} progressFill
 * @property {HTMLElement} detail
 * @property {HTMLElement} cycles
 */

/** @type {Record<Exclude<Batch['status'], 'running'>, string>} */
const STATE_LABELS = { completed: 'Completed', all_done: 'All stories done', stopped: 'Stopped', error: 'Error' }

/**
 * @param {BatchElements} elements
 * @param {() => number} now server-clock now, so elapsed times do not drift with the browser's clock
 */
export function createBatchPanel (elements, now) {
  /** @type {Batch | null} */
  let batch = null
  // Number of the cycle that started last in this batch; the batch row only counts finished cycles.
  let startedCycle = 0

  function cycleInProgress () {
    if (!batch) return 0
    let cycle = Math.max(startedCycle, batch.cycles_completed + 1)
    if (batch.max_cycles !== 'all') cycle = Math.min(cycle, batch.max_cycles)
    return cycle
  }

  function render () {
    const state = batch ? batch.status : 'idle'
    elements.panel.dataset.state = state
    elements.progress.classList.toggle('indeterminate', batch?.status === 'running' && batch.max_cycles === 'all')
    if (!batch) {
      setText(elements.id, '')
      setText(elements.state, 'Idle')
      setText(elements.detail, 'No active batch')
      setText(elements.cycles, '–')
      setProgress(0)
      tick()
      return
    }
    setText(elements.id, `#${batch.id}`)
    // A batch without a cycle limit runs until no story is left: its cycles are counted, not measured against a total.
    const of = batch.max_cycles === 'all' ? '' : ` of ${batch.max_cycles}`
    const done = batch.cycles_completed
    setText(elements.cycles, batch.max_cycles === 'all' ? String(done) : `${done} / ${batch.max_cycles}`)
    const started = `Started ${clockTime(batch.started_at)}`
    if (batch.status === 'running') {
      setText(elements.state, `Running cycle ${cycleInProgress()}${of}`)
      setText(elements.detail, started)
    } else {
      setText(elements.state, STATE_LABELS[batch.status])
      setText(elements.detail, `${started}${batch.ended_at ? ` · ended ${clockTime(batch.ended_at)}` : ''}`)
    }
    if (batch.max_cycles === 'all') setProgress(batch.status === 'running' ? 0 : 1)
    else setProgress(Math.min(1, done / batch.max_cycles))
    tick()
  }

  /** @param {number} fraction */
  function setProgress (fraction) {
    elements.progressFill.style.width = `${(fraction * 100).toFixed(2)}%`
    elements.progress.setAttribute('aria-valuenow', fraction.toFixed(3))
  }

  function tick () {
    if (!batch) return setText(elements.elapsed, '')
    const end = batch.ended_at ?? (batch.status === 'running' ? now() : batch.started_at)
    setText(elements.elapsed, timer(end - batch.started_at))
  }

  return {
    /**
     * The service's batch row is the truth (init); events only move it forward between inits.
     * init carries only the running batch, so null next to a batch we saw finish means "that one is
     * over", and its outcome stays on screen rather than turning into Idle.
     * @param {Batch | null} next
     */
    setBatch (next) {
      if (!next && batch && batch.status !== 'running') return render()
      if (!next || next.id !== batch?.id) startedCycle = 0
      batch = next ? { ...next } : null
      render()
    },

    /** @param {Envelope} event */
    apply (event) {
      switch (event.type) {
        case 'batch:start': {
          const p = event.payload
          // As the store projects it: null, 'all' and mode "all" all mean no cycle limit.
          const limit = p.max_cycles === null || p.batch_mode === 'all' ? 'all' : p.max_cycles
          batch = {
            id: p.batch_id,
            started_at: event.timestamp,
            ended_at: null,
            max_cycles: limit,
            batch_mode: p.batch_mode ?? (limit === 'all' ? 'all' : 'fixed'),
            cycles_completed: 0,
            status: 'running'
          }
          startedCycle = 0
          break
        }
        case 'cycle:start':
          startedCycle = event.payload.cycle_number
          break
        case 'cycle:end':
          if (batch) batch.cycles_completed = Math.max(batch.cycles_completed, event.payload.cycle_number)
          break
        case 'batch:end':
          if (batch && batch.id === event.payload.batch_id) {
            batch.status = event.payload.status
            // The sprint runner's stop carries no count: the batch keeps the one it reached.
            if (event.payload.cycles_completed !== undefined) batch.cycles_completed = event.payload.cycles_completed
            batch.ended_at = event.timestamp
          }
          break
        default:
          return
      }
      render()
    },

    /** Short text for the tab title, so a background tab still tells the story. */
    summary () {
      if (!batch) return 'Idle'
      if (batch.status === 'running') return `Cycle ${cycleInProgress()}${batch.max_cycles === 'all' ? '' : `/${batch.max_cycles}`}`
      return STATE_LABELS[batch.status]
    },

    tick
  }
}

/**
 * @typedef {object} Operation
 * @property {string} story
 * @property {string} command
 * @property {string} task
 * @property {number} startedAt server ms
 * @property {boolean} startSeen false when only progress was seen (the start is older than the snapshot)
 * @property {HTMLLIElement} element
 * @property {HTMLElement} timer
 * @property {HTMLElement} message
 */

/**
 * @typedef {object} OperationsElements
 * @property {HTMLUListElement} list
 * @property {HTMLElement} empty
 * @property {HTMLElement} count
 */

/**
 * @param {OperationsElements} elements
 * @param {() => number} now
 */
export function createOperations (elements, now) {
  /** @type {Map<string, Operation>} */
  const running = new Map()

  /**
   * @param {{ story_key: string, command: string, task_id: string }} payload
   */
  const keyOf = (payload) => JSON.stringify([payload.story_key, payload.command, payload.task_id])

  /**
   * @param {{ story_key: string, command: string, task_id: string }} payload
   * @param {number} startedAt
   * @param {boolean} startSeen
   */
  function add (payload, startedAt, startSeen) {
    const timerNode = h('span', { className: 'operation-timer mono' })
    const message = h('span', { className: 'operation-message' })
    const element = h('li', { className: 'operation', data: { story: payload.story_key, task: payload.task_id } },
      h('span', { className: 'operation-pulse', attrs: { 'aria-hidden': 'true' } }),
      h('span', { className: 'operation-main' },
        h('span', { className: 'operation-title' },
          h('span', { className: 'operation-story mono', text: payload.story_key }),
          ' ',
          h('span', { className: 'operation-command', text: payload.command }),
          ' ',
          h('span', { className: 'operation-task mono', text: `(${payload.task_id})` })),
        message),
      timerNode)
    /** @type {Operation} */
    const operation = { story: payload.story_key, command: payload.command, task: payload.task_id, startedAt, startSeen, element, timer: timerNode, message }
    running.set(keyOf(payload), operation)
    elements.list.append(element)
    updateTimer(operation)
    return operation
  }

  /** @param {Operation} operation */
  function updateTimer (operation) {
    setText(operation.timer, `${operation.startSeen ? '' : '≥ '}${timer(now() - operation.startedAt)}`)
  }

  function renderCount () {
    setText(elements.count, String(running.size))
    elements.count.dataset.active = String(running.size > 0)
    elements.empty.hidden = running.size > 0
  }

  function clear () {
    running.clear()
    elements.list.replaceChildren()
    renderCount()
  }

  return {
    /** @param {Envelope} event */
    apply (event) {
      switch (event.type) {
        case 'command:start': {
          const existing = running.get(keyOf(event.payload))
          if (existing) existing.element.remove()
          add(event.payload, event.timestamp, true)
          break
        }
        case 'command:progress': {
          const operation = running.get(keyOf(event.payload)) ?? add(event.payload, event.timestamp, false)
          setText(operation.message, event.payload.message)
          operation.message.title = event.payload.message
          break
        }
        case 'command:end': {
          const key = keyOf(event.payload)
          running.get(key)?.element.remove()
          running.delete(key)
          break
        }
        case 'batch:end':
          // Nothing can still be running once the batch is over; drop leftovers whose end we never saw.
          clear()
          break
        default:
          return
      }
      renderCount()
    },

    clear,

    /** Titles for the tab: what is running now. */
    names () {
      return [...running.values()].map((operation) => `${operation.story} ${operation.command}`)
    },

    tick () {
      for (const operation of running.values()) updateTimer(operation)
    }
  }
}
