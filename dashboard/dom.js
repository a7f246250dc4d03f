// @ts-check
/**
 * The only way the dashboard builds DOM. Children that are strings become text nodes, so text that
 * arrives in events (story keys, agent messages, error context) can never be parsed as HTML.
 */

/**
 * @typedef {object} ElementOptions
 * @property {string} [className]
 * @property {Record<string, string>} [data] `data-*` attributes
 * @property {Record<string, string>} [attrs] other attributes (never `style`: the page runs under a strict CSP)
 * @property {string} [title] tooltip text, set as a property
 * @property {string} [text] text content
 */

/**
 * Creates an element with text-only content.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {ElementOptions} [options]
 * @param {...(Node | string | null | undefined | false)} children
 * @returns {HTMLElementTagNameMap[K]}
 * @example h('span', { className: 'badge', data: { tone: 'done' } }, 'done')
 */
export function h (tag, options = {}, ...children) {
  const element = document.createElement(tag)
  if (options.className) element.className = options.className
  if (options.title !== undefined) element.title = options.title
  if (options.data) Object.assign(element.dataset, options.data)
  if (options.attrs) for (const [name, value] of Object.entries(options.attrs)) element.setAttribute(name, value)
  if (options.text !== undefined) element.textContent = options.text
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue
    element.append(child)
  }
  return element
}

/**
 * Looks up an element the page cannot work without; a missing one is a bug in index.html.
 * @template {HTMLElement} [E=HTMLElement]
 * @param {string} id
 * @returns {E}
 */
export function byId (id) {
  const element = document.getElementById(id)
  if (!element) throw new Error(`dashboard: #${id} is missing from index.html`)
  return /** @type {E} */ (element)
}

/**
 * Sets text only when it changed: the once-a-second timers touch many nodes and unchanged
 * writes would still invalidate layout.
 * @param {Node} node
 * @param {string} text
 */
export function setText (node, text) {
  if (node.textContent !== text) node.textContent = text
}
