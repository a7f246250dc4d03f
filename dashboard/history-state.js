// @ts-check
/**
 * What the history views remember across a reload. The selected batch lives in the URL
 * (`#batch=12`), so a link to it can be shared and the back button moves between batches; the
 * rest (sidebar folded, timeline open, story table sort, where the batch's log was scrolled to)
 * lives in localStorage, next to the live view's filters (ui-state.js).
 */

// Versioned like ui-state.js, so a later shape change ignores old values instead of misreading them.
const STORAGE_KEY = 'sprint-dashboard:history:v1'

/** Story table columns that can be sorted. */
export const SORT_KEYS = /** @type {const} */ (['started', 'duration', 'cost'])

/**
 * @typedef {object} HistoryState
 * @property {boolean} sidebarCollapsed
 * @property {boolean} timelineOpen the live view's timeline panel
 * @property {{ key: typeof SORT_KEYS[number], dir: 'asc' | 'desc' }} sort
 * @property {{ batch: number, top: number, loaded: number } | null} logScroll the past batch's log: scroll offset and events loaded
 */

/** @returns {HistoryState} */
function defaults () {
  return { sidebarCollapsed: false, timelineOpen: true, sort: { key: 'started', dir: 'asc' }, logScroll: null }
}

/** @param {unknown} value */
const whole = (value) => typeof value === 'number' && Number.isSafeInteger(value) && value >= 0

/**
 * The saved state; anything missing or malformed falls back to its default.
 * @returns {HistoryState}
 */
export function loadHistoryState () {
  const state = defaults()
  try {
    const saved = JSON.parse(window.localStorage.getItem(STORAGE_KEY) ?? 'null')
    if (typeof saved !== 'object' || saved === null) return state
    if (typeof saved.sidebarCollapsed === 'boolean') state.sidebarCollapsed = saved.sidebarCollapsed
    if (typeof saved.timelineOpen === 'boolean') state.timelineOpen = saved.timelineOpen
    const sort = saved.sort
    if (sort && SORT_KEYS.includes(sort.key) && (sort.dir === 'asc' || sort.dir === 'desc')) state.sort = { key: sort.key, dir: sort.dir }
    const scroll = saved.logScroll
    if (scroll && whole(scroll.batch) && whole(scroll.top) && whole(scroll.loaded)) state.logScroll = { batch: scroll.batch, top: scroll.top, loaded: scroll.loaded }
  } catch {}
  return state
}

/**
 * Saves the state; a full or disabled storage is ignored, as in ui-state.js.
 * @param {HistoryState} state
 */
export function saveHistoryState (state) {
  try {
    window.localStorage.setItem(STORAGE_KEY, JSON.stringify(state))
  } catch {}
}

/**
 * The batch the URL selects (`#batch=12`), or null for the live view.
 * @param {string} hash `location.hash`
 * @returns {number | null}
 */
export function batchFromHash (hash) {
  const match = /^#?batch=(\d{1,15})$/.exec(hash)
  return match ? Number(match[1]) : null
}
