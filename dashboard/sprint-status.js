// @ts-check
/**
 * Loads the sprint's stories: the JSON endpoint when the service has it, otherwise the raw
 * sprint-status.yaml read with a parser that understands exactly the part the board needs
 * (`development_status:`, a flat map of key → status). Also groups keys into epics.
 */

/**
 * @typedef {object} SprintStatus
 * @property {string} project project name from the file, '' when absent
 * @property {Array<[string, string]>} entries development_status in file order
 */

/**
 * @typedef {object} Epic
 * @property {string} id e.g. `2a`
 * @property {string | null} status status of the `epic-2a` entry
 * @property {string | null} retrospective status of the `epic-2a-retrospective` entry
 * @property {Array<{ key: string, status: string }>} stories
 */

/**
 * Strips a YAML scalar of its quotes and trailing comment. Enough for the generated file; anything
 * fancier (anchors, multi-line values) never appears in development_status.
 * @param {string} raw
 */
function scalar (raw) {
  const text = raw.trim()
  const quote = text[0]
  if (quote === '"' || quote === "'") {
    const end = text.indexOf(quote, 1)
    if (end > 0) return text.slice(1, end)
  }
  const comment = text.search(/\s#/)
  return (comment >= 0 ? text.slice(0, comment) : text).trim()
}

/**
 * Reads `project:` and the `development_status:` map out of sprint-status.yaml.
 * @param {string} yaml
 * @returns {SprintStatus}
 */
export function parseSprintStatusYaml (yaml) {
  /** @type {Array<[string, string]>} */
  const entries = []
  let project = ''
  let inStatus = false
  for (const line of yaml.split(/\r?\n/)) {
    if (line.trim() === '' || line.trimStart().startsWith('#')) continue
    const indented = /^\s/.test(line)
    const match = /^\s*("[^"]*"|'[^']*'|[^:#]+?)\s*:(.*)$/.exec(line)
    if (!indented) {
      inStatus = match?.[1] === 'development_status'
      if (match && match[1] === 'project') project = scalar(match[2] ?? '')
      continue
    }
    if (!inStatus || !match) continue
    const key = scalar(match[1] ?? '')
    const status = scalar(match[2] ?? '')
    if (key !== '') entries.push([key, status])
  }
  return { project, entries }
}

/**
 * Accepts the JSON endpoint's body if it carries the map we need.
 * @param {unknown} body
 * @returns {SprintStatus | null}
 */
function fromJson (body) {
  if (typeof body !== 'object' || body === null) return null
  const record = /** @type {Record<string, unknown>} */ (body)
  const map = record.development_status
  if (typeof map !== 'object' || map === null || Array.isArray(map)) return null
  /** @type {Array<[string, string]>} */
  const entries = Object.entries(map).map(([key, value]) => [key, value === null || value === undefined ? '' : String(value)])
  return { project: typeof record.project === 'string' ? record.project : '', entries }
}

/**
 * Fetches the sprint status relative to the page. Returns null when neither source exists yet
 * (a sprint that has not been planned), so the board can say so instead of failing.
 * @returns {Promise<SprintStatus | null>}
 */
export async function fetchSprintStatus () {
  try {
    const response = await fetch('./api/sprint-status', { cache: 'no-store', headers: { accept: 'application/json' } })
    if (response.ok) {
      const parsed = fromJson(await response.json())
      if (parsed) return parsed
    }
  } catch {}
  const response = await fetch('./sprint-status.yaml', { cache: 'no-store' })
  if (response.status === 404) return null
  if (!response.ok) throw new Error(`sprint-status.yaml: HTTP ${response.status}`)
  return parseSprintStatusYaml(await response.text())
}

/**
 * Fetches `{ story_key: description }`; an absent or broken file only means no descriptions.
 * @returns {Promise<Record<string, string>>}
 */
export async function fetchStoryDescriptions () {
  try {
    const response = await fetch('./story-descriptions.json', { cache: 'no-store' })
    if (!response.ok) return {}
    const body = await response.json()
    if (typeof body !== 'object' || body === null) return {}
    /** @type {Record<string, string>} */
    const descriptions = {}
    for (const [key, value] of Object.entries(body)) if (typeof value === 'string') descriptions[key] = value
    return descriptions
  } catch {
    return {}
  }
}

/**
 * The epic a key belongs to: `2a-1-foo` → `2a`, `epic-2a` → `2a`, `epic-2a-retrospective` → `2a`.
 * @param {string} key
 */
export function epicOf (key) {
  const rest = key.startsWith('epic-') ? key.slice(5) : key
  return rest.split('-')[0] ?? rest
}

/** @param {string} key */
export const isEpicEntry = (key) => /^epic-[^-]+$/.test(key)
/** @param {string} key */
export const isRetrospective = (key) => key.endsWith('-retrospective')

/**
 * Groups development_status into epics, in file order. Epic and retrospective entries become
 * properties of their epic, not stories.
 * @param {Array<[string, string]>} entries
 * @returns {Epic[]}
 */
export function groupByEpic (entries) {
  /** @type {Map<string, Epic>} */
  const epics = new Map()
  /** @param {string} id */
  const epic = (id) => {
    let found = epics.get(id)
    if (!found) {
      found = { id, status: null, retrospective: null, stories: [] }
      epics.set(id, found)
    }
    return found
  }
  for (const [key, status] of entries) {
    if (isEpicEntry(key)) epic(epicOf(key)).status = status
    else if (isRetrospective(key)) epic(epicOf(key)).retrospective = status
    else epic(epicOf(key)).stories.push({ key, status })
  }
  return [...epics.values()]
}

/**
 * Splits `2a-1-event-store` into its number (`2a-1`) and a readable title (`Event store`).
 * @param {string} key
 */
export function storyLabel (key) {
  const match = /^([^-]+-[^-]+)-(.+)$/.exec(key)
  if (!match) return { number: '', title: key }
  const words = (match[2] ?? '').replace(/-/g, ' ')
  return { number: match[1] ?? '', title: words.charAt(0).toUpperCase() + words.slice(1) }
}

/**
 * Colour family of a status. Statuses are free text from the orchestrator, so unknown ones get a
 * neutral tone instead of an error.
 * @param {string | null | undefined} status
 * @returns {'done' | 'active' | 'review' | 'ready' | 'idle' | 'bad' | 'neutral'}
 */
export function statusTone (status) {
  const value = (status ?? '').toLowerCase()
  if (/^(done|completed?|closed|merged|passed|success(ful)?)$/.test(value)) return 'done'
  if (/(fail|error|block|reject|abort)/.test(value)) return 'bad'
  if (/review/.test(value)) return 'review'
  // Before "active": `ready-for-dev` is waiting, not being developed.
  if (/(ready|draft|context|approved|todo|planned)/.test(value)) return 'ready'
  if (/(progress|running|in-dev|develop|active|working|started)/.test(value)) return 'active'
  if (/(backlog|optional|pending|deferred|skipped|new)/.test(value)) return 'idle'
  return 'neutral'
}
