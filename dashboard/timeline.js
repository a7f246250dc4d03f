// @ts-check
/**
 * The Gantt timeline of one batch: a lane per story, a bar per command run on a shared clock axis,
 * coloured by command, failed runs marked, running ones growing with the clock. Plain SVG drawn by
 * hand: the page's CSP allows no inline style and no CDN, and a few hundred rects need no library.
 * Elements are built when lanes or runs are added and only moved (x, width) on every tick, so a live
 * batch costs one attribute pass per second.
 */
import { h, setText } from './dom.js'
import { clockTime, dollars, duration, tokenCount } from './format.js'

/** @typedef {import('./batch-model.js').BatchModel} BatchModel */
/** @typedef {import('./batch-model.js').Run} Run */
/** @typedef {import('./batch-model.js').Lane} Lane */

const SVG = 'http://www.w3.org/2000/svg'
const LABEL_WIDTH = 176
const LANE_HEIGHT = 20
const BAR_HEIGHT = 12
const AXIS_HEIGHT = 22
const RIGHT_PAD = 14
/** A run of a few ms still gets a visible sliver. */
const MIN_BAR_PX = 2
/** Axis steps to choose from, smallest first; the first leaving ~90 px between ticks wins. */
const TICK_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400].map((s) => s * 1000)
const MIN_TICK_PX = 90
const PALETTE_SIZE = 8
/** The orchestrator's usual commands keep one colour each across batches; others are hashed into the palette. */
const KNOWN_COMMANDS = ['create-story', 'story-context', 'dev-story', 'code-review', 'story-done', 'validate-story', 'retrospective', 'correct-course']

/**
 * Palette slot of a command: stable across batches and reloads.
 * @param {string} command
 */
export function commandColour (command) {
  const known = KNOWN_COMMANDS.indexOf(command)
  if (known >= 0) return known % PALETTE_SIZE
  let hash = 0
  for (let i = 0; i < command.length; i++) hash = (hash * 31 + command.charCodeAt(i)) >>> 0
  return hash % PALETTE_SIZE
}

/**
 * @param {string} tag
 * @param {Record<string, string | number>} [attrs]
 * @returns {SVGElement}
 */
function svg (tag, attrs = {}) {
  const element = /** @type {SVGElement} */ (document.createElementNS(SVG, tag))
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, String(value))
  return element
}

/**
 * @param {string} text
 * @param {number} max characters
 */
const truncate = (text, max) => text.length <= max ? text : `${text.slice(0, Math.max(1, max - 1))}…`

/**
 * @typedef {object} TimelineOptions
 * @property {() => number} now server-clock now, for running bars
 * @property {string} [label] accessible name of the chart
 */

/**
 * @param {HTMLElement} root an empty element the timeline fills
 * @param {TimelineOptions} options
 */
export function createTimeline (root, options) {
  root.classList.add('timeline')
  const legend = h('ul', { className: 'timeline-legend', attrs: { 'aria-label': 'Commands' } })
  const axis = /** @type {SVGSVGElement} */ (svg('svg', { class: 'timeline-axis', height: AXIS_HEIGHT, 'aria-hidden': 'true' }))
  const chart = /** @type {SVGSVGElement} */ (svg('svg', { class: 'timeline-chart', role: 'img', 'aria-label': options.label ?? 'Timeline of command runs per story' }))
  const scroll = h('div', { className: 'timeline-scroll' })
  scroll.append(chart)
  const tooltip = h('div', { className: 'timeline-tooltip', attrs: { role: 'tooltip' } })
  tooltip.hidden = true
  const empty = h('p', { className: 'empty timeline-empty', text: 'No command runs yet.' })
  root.replaceChildren(legend, axis, scroll, empty, tooltip)

  const laneGroup = svg('g', { class: 'lanes' })
  const barGroup = svg('g', { class: 'bars' })
  const nowLine = svg('line', { class: 'now-line', y1: 0 })
  chart.append(laneGroup, barGroup, nowLine)

  /** @type {BatchModel | null} */
  let model = null
  let live = false
  let builtVersion = -1
  /** @type {BatchModel | null} */
  let builtModel = null
  /** @type {Array<{ rect: SVGElement, mark: SVGElement | null, run: Run, lane: Lane }>} */
  let bars = []
  let width = 0
  /** @type {{ run: Run, lane: Lane } | null} */
  let hovered = null

  /** The shown time span: the batch's start to its end, or to now while it runs live. */
  function domain () {
    if (!model) return { from: 0, to: 1 }
    let from = model.startedAt
    let to = model.endedAt ?? (live ? options.now() : from)
    for (const { run } of bars) {
      from = Math.min(from, run.started_at)
      to = Math.max(to, run.ended_at ?? run.started_at)
    }
    return { from, to: Math.max(to, from + 1000) }
  }

  function build () {
    const started = performance.now()
    laneGroup.replaceChildren()
    barGroup.replaceChildren()
    bars = []
    const lanes = model ? [...model.lanes.values()] : []
    const commands = new Set()
    const maxLabel = Math.floor((LABEL_WIDTH - 14) / 7)
    lanes.forEach((lane, index) => {
      const y = index * LANE_HEIGHT
      laneGroup.append(svg('rect', { class: `lane-bg${index % 2 ? ' odd' : ''}`, x: 0, y, width: '100%', height: LANE_HEIGHT }))
      const label = svg('text', { class: `lane-label${lane.failed ? ' failed' : lane.status === 'done' ? ' done' : ''}`, x: 8, y: y + LANE_HEIGHT / 2, 'data-story': lane.key })
      label.textContent = truncate(lane.key, maxLabel)
      if (label.textContent !== lane.key) label.append(Object.assign(svg('title'), { textContent: lane.key }))
      laneGroup.append(label)
      lane.runs.forEach((run) => {
        commands.add(run.command)
        const rect = svg('rect', {
          class: barClass(run),
          y: y + (LANE_HEIGHT - BAR_HEIGHT) / 2,
          height: BAR_HEIGHT,
          rx: 2,
          'data-story': lane.key,
          'data-command': run.command,
          'data-task': run.task_id
        })
        const mark = run.failed ? svg('rect', { class: 'fail-mark', y: y + 2, height: LANE_HEIGHT - 4, width: 3 }) : null
        barGroup.append(rect)
        if (mark) barGroup.append(mark)
        bars.push({ rect, mark, run, lane })
      })
    })
    const height = Math.max(LANE_HEIGHT, lanes.length * LANE_HEIGHT)
    chart.setAttribute('height', String(height))
    nowLine.setAttribute('y2', String(height))
    legend.replaceChildren(...[...commands].sort().map((command) =>
      h('li', { className: 'legend-item', data: { command } },
        h('span', { className: `legend-swatch c${commandColour(command)}` }), command)))
    empty.hidden = bars.length > 0 || lanes.length > 0
    scroll.hidden = lanes.length === 0
    axis.toggleAttribute('hidden', lanes.length === 0)
    builtVersion = model?.version ?? -1
    builtModel = model
    layout()
    // How long the last full draw took, for the browser test's budget and for anyone profiling.
    root.dataset.renderMs = (performance.now() - started).toFixed(1)
  }

  /** @param {Run} run */
  function barClass (run) {
    return `bar c${commandColour(run.command)}${run.failed ? ' failed' : ''}${run.ended_at === null ? ' running' : ''}`
  }

  /** Positions every bar, the axis and the now line for the current width and time span. */
  function layout () {
    width = scroll.clientWidth || root.clientWidth
    if (width <= 0 || !model) return
    chart.setAttribute('width', String(width))
    axis.setAttribute('width', String(width))
    const { from, to } = domain()
    const plot = Math.max(10, width - LABEL_WIDTH - RIGHT_PAD)
    const x = (/** @type {number} */ t) => LABEL_WIDTH + ((t - from) / (to - from)) * plot
    const end = model.endedAt ?? (live ? options.now() : to)
    for (const bar of bars) {
      const left = x(bar.run.started_at)
      const right = x(bar.run.ended_at ?? Math.max(end, bar.run.started_at))
      bar.rect.setAttribute('x', left.toFixed(1))
      bar.rect.setAttribute('width', Math.max(MIN_BAR_PX, right - left).toFixed(1))
      const cls = barClass(bar.run)
      if (bar.rect.getAttribute('class') !== cls) bar.rect.setAttribute('class', cls)
      if (bar.mark) bar.mark.setAttribute('x', (Math.max(left + MIN_BAR_PX, right) - 1.5).toFixed(1))
    }
    const showNow = live && model.endedAt === null
    nowLine.toggleAttribute('hidden', !showNow)
    if (showNow) {
      const nx = x(options.now()).toFixed(1)
      nowLine.setAttribute('x1', nx)
      nowLine.setAttribute('x2', nx)
    }
    drawAxis(from, to, plot, x)
    if (hovered) showTooltip(hovered.run, hovered.lane, null)
  }

  /**
   * @param {number} from
   * @param {number} to
   * @param {number} plot
   * @param {(t: number) => number} x
   */
  function drawAxis (from, to, plot, x) {
    const span = to - from
    const step = TICK_STEPS.find((candidate) => (span / candidate) * MIN_TICK_PX <= plot) ?? /** @type {number} */ (TICK_STEPS.at(-1))
    // Ticks on whole steps of the local clock (09:00, 09:05), not of the batch's start.
    const offset = new Date(from).getTimezoneOffset() * 60_000
    const first = Math.ceil((from - offset) / step) * step + offset
    const ticks = []
    for (let t = first; t <= to; t += step) {
      const tx = x(t)
      const text = svg('text', { class: 'tick-label', x: tx.toFixed(1), y: AXIS_HEIGHT - 7 })
      text.textContent = step < 60_000 ? clockTime(t) : clockTime(t).slice(0, 5)
      ticks.push(svg('line', { class: 'tick', x1: tx.toFixed(1), x2: tx.toFixed(1), y1: AXIS_HEIGHT - 4, y2: AXIS_HEIGHT }), text)
    }
    axis.replaceChildren(svg('line', { class: 'axis-line', x1: LABEL_WIDTH, x2: LABEL_WIDTH + plot, y1: AXIS_HEIGHT - 0.5, y2: AXIS_HEIGHT - 0.5 }), ...ticks)
  }

  /**
   * @param {Run} run
   * @param {Lane} lane
   * @param {MouseEvent | null} event where the pointer is; null keeps the tooltip where it is
   */
  function showTooltip (run, lane, event) {
    const end = run.ended_at ?? options.now()
    const usage = run.tokens_in || run.tokens_out ? `${tokenCount(run.tokens_in)} in · ${tokenCount(run.tokens_out)} out` : '–'
    tooltip.replaceChildren(
      h('div', { className: 'tooltip-title' }, h('strong', { text: run.command }), ' ', h('span', { className: 'muted mono', text: run.task_id })),
      h('div', { className: 'mono muted', text: lane.key }),
      h('dl', {},
        h('dt', { text: 'Status' }), h('dd', { className: run.failed ? 'bad' : '', text: run.status }),
        h('dt', { text: 'Duration' }), h('dd', { className: 'mono', text: `${duration(end - run.started_at)}${run.ended_at === null ? ' so far' : ''}` }),
        h('dt', { text: 'Started' }), h('dd', { className: 'mono', text: clockTime(run.started_at) }),
        h('dt', { text: 'Tokens' }), h('dd', { className: 'mono', text: usage }),
        h('dt', { text: 'Cost' }), h('dd', { className: 'mono', text: dollars(run.cost_usd) })))
    tooltip.hidden = false
    if (event) {
      const box = root.getBoundingClientRect()
      // CSSOM, not a style attribute: the CSP allows the former only.
      const left = Math.min(event.clientX - box.left + 14, box.width - tooltip.offsetWidth - 4)
      tooltip.style.left = `${Math.max(4, left)}px`
      tooltip.style.top = `${event.clientY - box.top + 16}px`
    }
  }

  chart.addEventListener('mousemove', (event) => {
    const target = /** @type {Element} */ (event.target)
    const bar = target.classList?.contains('bar') ? bars.find((b) => b.rect === target) : undefined
    if (!bar) {
      hovered = null
      tooltip.hidden = true
      return
    }
    hovered = { run: bar.run, lane: bar.lane }
    showTooltip(bar.run, bar.lane, event)
  })
  chart.addEventListener('mouseleave', () => {
    hovered = null
    tooltip.hidden = true
  })

  // Width changes (window, sidebar folded, panel opened) re-lay the bars; nothing is rebuilt.
  const resize = new window.ResizeObserver(() => {
    if ((scroll.clientWidth || root.clientWidth) !== width) render()
  })
  resize.observe(root)

  /** Builds if lanes or runs were added since the last draw, else only lays out. */
  function render () {
    if (model !== builtModel || (model?.version ?? -1) !== builtVersion) build()
    else layout()
  }

  return {
    /**
     * Shows a batch. `live` lets running bars grow with the clock.
     * @param {BatchModel | null} next
     * @param {{ live?: boolean, emptyText?: string }} [how]
     */
    setModel (next, how = {}) {
      model = next
      live = how.live === true
      hovered = null
      tooltip.hidden = true
      setText(empty, how.emptyText ?? 'No command runs yet.')
      build()
    },

    /** Draws what changed in the model since the last call. */
    render,

    /** Once a second: running bars and the axis move with the clock. */
    tick () {
      if (model && live && model.endedAt === null) layout()
    },

    get model () { return model }
  }
}
