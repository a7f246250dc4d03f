// @ts-check
/**
 * Loads the sprint's stories from the service (`GET /api/sprint-status`, the one sprint-status.yaml
 * parser there is: a file the service refuses is reported, never drawn). Also groups keys into epics.
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

/** @typedef {import('../src/routes/sprint-status.ts').SprintStatusReply} SprintStatusReply */
/** @typedef {import('../src/errors.ts').ErrorReply} ErrorReply */

/**
 * The board's view of the endpoint's body. A file without `development_status` (a sprint not
 * planned yet) has no entries.
 * @param {SprintStatusReply & { project?: unknown }} body every other top-level key of the file is kept too
 * @returns {SprintStatus}
 */
function fromReply (body) {
  const map = body.development_status ?? {}
  /** @type {Array<[string, string]>} */
  const entries = Object.entries(map).map(([key, value]) => [key, value === null || value === undefined ? '' : String(value)])
  return { project: typeof body.project === 'string' ? body.project : '', entries }
}

/**
 * Why the service refused, in its own words when it sent them.
 * @param {Response} response
 */
async function refusal (response) {
  try {
    const body = /** @type {Partial<ErrorReply>} */ (await response.json())
    if (typeof body.message === 'string' && body.message !== '') return body.message
  } catch {}
  return `GET api/sprint-status: HTTP ${response.status}`
}

/**
 * Fetches the sprint status relative to the page. Returns null when there is no file yet (a sprint
 * that has not been planned), so the board can say so; rejects with the service's reason otherwise.
 * @returns {Promise<SprintStatus | null>}
 */
export async function fetchSprintStatus () {
  const response = await fetch('./api/sprint-status', { cache: 'no-store', headers: { accept: 'application/json' } })
  if (response.status === 404) return null
  if (!response.ok) throw new Error(await refusal(response))
  return fromReply(/** @type {SprintStatusReply} */ (await response.json()))
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
