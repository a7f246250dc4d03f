// @ts-check
/**
 * UI preferences (filters, folded epics, log filter text) kept in localStorage so a reload, or the
 * next morning's tab, opens the board the way the operator left it.
 */

/** @typedef {import('./types.js').UiState} UiState */

// Versioned so a future shape change can ignore old values instead of misreading them.
const STORAGE_KEY = 'sprint-dashboard:ui:v1'

/** @returns {UiState} */
function defaults () {
  return { logFilter: '', hiddenKinds: [], hiddenStatuses: [], collapsedEpics: [] }
}

/** @param {unknown} value */
const stringList = (value) => Array.isArray(value) ? value.filter((item) => typeof item === 'string') : []

/**
 * Reads the saved state; anything missing, corrupted or blocked (private mode, disabled storage)
 * falls back to defaults rather than breaking the page.
 * @returns {UiState}
 */
export function loadUiState () {
  const state = defaults()
  try {
    const raw = window.localStorage.getItem(STORAGE_KEY)
    if (!raw) return state
    const saved = JSON.parse(raw)
    if (typeof saved !== 'object' || saved === null) return state
    if (typeof saved.logFilter === 'string') state.logFilter = saved.logFilter
    state.hiddenKinds = stringList(saved.hiddenKinds)
    state.hiddenStatuses = stringList(saved.hiddenStatuses)
    state.collapsedEpics = stringList(saved.collapsedEpics)
  } catch {}
  return state
}

/**
 * Persists the state. Failures (quota, disabled storage) are ignored: losing a preference must never
 * stop the live view.
 * @param {UiState} state
 */
export function saveUiState (state) {
  try {
    window.localStorage.setItem(STORAGE_KEY, JSON.stringify(state))
  } catch {}
}

/**
 * Adds or removes one value of a list preference.
 * @param {string[]} list
 * @param {string} value
 * @param {boolean} present
 * @returns {string[]}
 */
export function toggled (list, value, present) {
  const without = list.filter((item) => item !== value)
  return present ? [...without, value] : without
}
