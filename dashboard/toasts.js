// @ts-check
/**
 * Error and warning toasts: the message at a glance, the `context` one click away. A toast stays
 * while the operator is reading it (hovered or expanded) and otherwise leaves by itself.
 */
import { renderContext } from './context-view.js'
import { h } from './dom.js'
import { clockTime } from './format.js'

const LIFETIME_MS = 20_000
const MAX_TOASTS = 4

/**
 * @param {HTMLElement} container
 */
export function createToasts (container) {
  /**
   * @param {'error' | 'warning'} level
   * @param {{ id: number, timestamp: number, type: string, message: string, context?: Record<string, unknown> }} error
   */
  function show (level, error) {
    const hasContext = error.context !== undefined && Object.keys(error.context).length > 0
    const details = h('div', { className: 'toast-details' }, error.context && hasContext ? renderContext(error.context) : null)
    details.hidden = true
    const toggle = h('button', { className: 'toast-button', attrs: { type: 'button', 'aria-expanded': 'false' }, text: 'Details' })
    const actions = h('div', { className: 'toast-actions' }, toggle)
    actions.hidden = !hasContext
    const close = h('button', { className: 'toast-close', attrs: { type: 'button', 'aria-label': 'Dismiss' }, text: '×' })
    const toast = h('div', { className: 'toast', data: { id: String(error.id), level }, attrs: { role: level === 'error' ? 'alert' : 'status' } },
      h('div', { className: 'toast-head' },
        h('span', { className: 'toast-icon', attrs: { 'aria-hidden': 'true' }, text: '!' }),
        h('span', { className: 'toast-type mono', text: error.type }),
        h('time', { className: 'toast-time mono', text: clockTime(error.timestamp) }),
        close),
      h('p', { className: 'toast-message', text: error.message }),
      actions,
      details)

    let timer = setTimeout(dismiss, LIFETIME_MS)
    let pinned = false
    function dismiss () {
      clearTimeout(timer)
      toast.classList.add('leaving')
      // Removal waits for the exit animation, but never depends on it finishing.
      setTimeout(() => toast.remove(), 200)
    }
    toggle.addEventListener('click', () => {
      details.hidden = !details.hidden
      toggle.setAttribute('aria-expanded', String(!details.hidden))
      toggle.textContent = details.hidden ? 'Details' : 'Hide details'
      pinned = true
      clearTimeout(timer)
    })
    close.addEventListener('click', dismiss)
    toast.addEventListener('pointerenter', () => clearTimeout(timer))
    toast.addEventListener('pointerleave', () => {
      if (!pinned) timer = setTimeout(dismiss, LIFETIME_MS / 2)
    })

    container.prepend(toast)
    // A storm of errors must not bury the screen: keep the newest few.
    const toasts = container.querySelectorAll('.toast:not(.leaving)')
    for (let index = MAX_TOASTS; index < toasts.length; index++) toasts[index]?.remove()
  }

  return {
    /**
     * An `error` event.
     * @param {{ id: number, timestamp: number, type: string, message: string, context?: Record<string, unknown> }} error
     */
    showError (error) { show('error', error) },

    /**
     * Something went wrong without stopping the run (see `WARNING_TYPES` in event-log.js).
     * @param {{ id: number, timestamp: number, type: string, message: string, context?: Record<string, unknown> }} warning
     */
    showWarning (warning) { show('warning', warning) }
  }
}
