// @ts-check
/**
 * Error `context` for humans: one line per key, string values shown as written (a stack trace keeps
 * its line breaks instead of turning into `\n`), anything else as indented JSON. Text only.
 */
import { h } from './dom.js'

/**
 * @param {Record<string, unknown>} context
 * @returns {HTMLDListElement}
 */
export function renderContext (context) {
  const list = h('dl', { className: 'context' })
  for (const [key, value] of Object.entries(context)) {
    const text = typeof value === 'string' ? value : JSON.stringify(value, null, 2) ?? String(value)
    list.append(h('dt', { text: key }), h('dd', { text }))
  }
  return list
}
