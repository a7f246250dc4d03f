// @ts-check
/**
 * Transient notices from the service (`{ type, payload }` without an id; see event-cursor.js). The
 * one the page knows is `status` with `broker: 'down' | 'up'`: while the event broker is down a
 * banner says so; stored events then resume through the cursor with no gap.
 */
import { h } from './dom.js'

/** @typedef {import('./types.js').Notice} Notice */
/** @typedef {import('./types.js').BrokerStatusNotice} BrokerStatusNotice */

/**
 * Creates the banner (hidden) at the end of `parent`; it floats under the top bar, so it takes no
 * place in the page's grid.
 * @param {HTMLElement} parent
 */
export function createNoticeBanner (parent) {
  const text = h('span', { className: 'notice-banner-text' })
  const banner = h('div', { className: 'notice-banner', attrs: { id: 'notice-banner', role: 'status' } },
    h('span', { className: 'notice-banner-icon', attrs: { 'aria-hidden': 'true' }, text: '⚠' }),
    text)
  banner.hidden = true
  parent.append(banner)

  return {
    /**
     * Shows what a notice says. Types this page does not know are ignored: notices are advisory,
     * and a newer server may send more of them.
     * @param {Notice} notice
     */
    show (notice) {
      if (notice.type !== 'status') return
      // Checked at run time all the same: the payload comes off the wire.
      const broker = /** @type {Partial<BrokerStatusNotice['payload']>} */ (notice.payload).broker
      if (broker === 'down') {
        text.textContent = 'The event broker is unreachable: new events wait until it is back. This page stays connected and will catch up.'
        banner.dataset.broker = 'down'
        banner.hidden = false
      } else if (broker === 'up') {
        banner.dataset.broker = 'up'
        banner.hidden = true
      }
    },

    /** Forgets the notices of a previous connection: the server repeats what still holds. */
    clear () {
      banner.hidden = true
      delete banner.dataset.broker
    }
  }
}
