// @ts-check
/**
 * The project-context indicator in the batch panel: whether the agents of this batch get the
 * project context, driven by the orchestrator's context events (created, refreshed in the
 * background, fresh, copied for the batch, or unavailable).
 */
import { setText } from './dom.js'
import { statusTone } from './sprint-status.js'

/** @typedef {import('./types.js').Envelope} Envelope */

/**
 * @typedef {object} ContextState
 * @property {string} label
 * @property {'done' | 'active' | 'bad' | 'neutral'} tone
 * @property {string} detail tooltip: what the last context event said
 */

/**
 * What a context event says about the project context, or null when the event is not about it.
 * `context:create` / `refresh` / `complete` carry a free status: its tone says whether the step is
 * under way, done or failed.
 * @param {Envelope} event
 * @returns {ContextState | null}
 */
export function contextStateOf (event) {
  /**
   * @param {string} status
   * @param {[string, string, string]} labels under way, done, failed
   * @param {string} detail
   * @returns {ContextState}
   */
  const byStatus = (status, [running, done, failed], detail) => {
    const tone = statusTone(status)
    if (tone === 'done') return { label: done, tone: 'done', detail }
    if (tone === 'bad') return { label: failed, tone: 'bad', detail }
    return { label: running, tone: 'active', detail }
  }
  switch (event.type) {
    case 'context:create':
      return byStatus(event.payload.status, ['Creating…', 'Created', 'Creation failed'], event.payload.message ?? `create: ${event.payload.status}`)
    case 'context:refresh':
      return byStatus(event.payload.status, ['Refreshing…', 'Refreshed', 'Refresh failed'], event.payload.message ?? `refresh: ${event.payload.status}`)
    case 'context:complete':
      return byStatus(event.payload.status, ['Refreshing…', 'Refreshed', 'Refresh failed'], event.payload.message ?? `complete: ${event.payload.status}`)
    case 'context:error':
      return { label: 'Refresh failed', tone: 'bad', detail: event.payload.error }
    case 'context:fresh':
      return { label: 'Fresh', tone: 'done', detail: event.payload.message }
    case 'context:copied':
      return { label: 'Ready', tone: 'done', detail: event.payload.message }
    case 'context:copy_failed':
      return { label: 'Unavailable', tone: 'bad', detail: `${event.payload.message} (${event.payload.reason})` }
    case 'batch:warning':
      return event.payload.warning_type === 'context_unavailable' ? { label: 'Unavailable', tone: 'bad', detail: event.payload.message } : null
    default:
      return null
  }
}

/**
 * @param {HTMLElement} element
 */
export function createContextIndicator (element) {
  function clear () {
    setText(element, '–')
    element.dataset.tone = 'neutral'
    element.title = 'No project-context event yet'
  }
  clear()
  return {
    /** @param {Envelope} event */
    apply (event) {
      const state = contextStateOf(event)
      if (!state) return
      setText(element, state.label)
      element.dataset.tone = state.tone
      element.title = state.detail
    },
    clear
  }
}
