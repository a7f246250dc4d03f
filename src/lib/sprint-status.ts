import yaml from 'js-yaml'
import { Limits, type StoryStatus } from '../events/schemas.ts'

/**
 * Reading `sprint-status.yaml`: parse, pick out the story statuses, and diff two versions into
 * `story:status` payloads. Pure, so the watcher plugin only deals with files and timers.
 */

/** The file name the sprint runner writes in the artifacts directory. */
export const SPRINT_STATUS_FILE = 'sprint-status.yaml'

/** The parsed file: `development_status` plus whatever else the sprint runner writes (kept as is). */
export interface SprintStatusDocument {
  development_status?: Record<string, unknown>
  [key: string]: unknown
}

/** Story key → status, in file order. */
export type StoryStatuses = ReadonlyMap<string, string>

/** A sprint-status file that is not YAML, or not shaped like one; `line`/`column` are 1-based when known. */
export class SprintStatusParseError extends Error {
  readonly line: number | undefined
  readonly column: number | undefined

  constructor (message: string, position: { line?: number, column?: number } = {}) {
    super(message)
    this.name = 'SprintStatusParseError'
    this.line = position.line
    this.column = position.column
  }
}

function isMapping (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date)
}

/**
 * The YAML core schema (so dates stay strings and the result is plain JSON) plus merge keys (`<<`),
 * which YAML 1.1 files such as sprint-status.yaml use and which js-yaml defines outside the core
 * schema: without them `<<` would be kept as a literal key. The worker in sprint-status-parser.ts
 * builds the same schema.
 */
export const sprintStatusSchema = yaml.CORE_SCHEMA.extend({
  // js-yaml exports its types as `types`; @types/js-yaml does not declare it.
  implicit: [(yaml as unknown as { types: { merge: yaml.Type } }).types.merge]
})

/** A js-yaml syntax error as a SprintStatusParseError with 1-based line and column. */
export function yamlSyntaxError (reason: string, mark: { line?: number, column?: number } | undefined): SprintStatusParseError {
  const position: { line?: number, column?: number } = {}
  if (typeof mark?.line === 'number') position.line = mark.line + 1
  if (typeof mark?.column === 'number') position.column = mark.column + 1
  return new SprintStatusParseError(`${SPRINT_STATUS_FILE}: ${reason}${position.line === undefined ? '' : ` (line ${position.line}, column ${position.column})`}`, position)
}

/**
 * Checks the shape of a loaded document: it must be a mapping (or empty), and
 * `development_status`, when present, a mapping too.
 * @throws {SprintStatusParseError}
 */
export function checkSprintStatusDocument (document: unknown): SprintStatusDocument {
  if (document === undefined || document === null) return {}
  if (!isMapping(document)) throw new SprintStatusParseError(`${SPRINT_STATUS_FILE}: the document must be a mapping, found ${Array.isArray(document) ? 'a list' : typeof document}`)
  const developmentStatus = document.development_status
  if (developmentStatus !== undefined && developmentStatus !== null && !isMapping(developmentStatus)) {
    throw new SprintStatusParseError(`${SPRINT_STATUS_FILE}: development_status must be a mapping of story key to status`)
  }
  return document as SprintStatusDocument
}

/**
 * Parses the file text on the calling thread. Comments and unknown top-level keys are fine; the
 * document must be a mapping and `development_status`, when present, a mapping too. Merge keys
 * (`<<`) are merged. For files from disk use `createSprintStatusParser`, which bounds the time and
 * the expansion (aliases) and parses large files off the event loop.
 *
 * @example
 * parseSprintStatus('development_status:\n  1-1-login: done\n') // → { development_status: { '1-1-login': 'done' } }
 * @throws {SprintStatusParseError} with the line and column of a YAML syntax error
 */
export function parseSprintStatus (text: string): SprintStatusDocument {
  let document: unknown
  try {
    document = yaml.load(text, { schema: sprintStatusSchema, filename: SPRINT_STATUS_FILE })
  } catch (error) {
    if (error instanceof yaml.YAMLException) throw yamlSyntaxError(error.reason, error.mark as { line?: number, column?: number } | undefined)
    throw error
  }
  return checkSprintStatusDocument(document)
}

/**
 * The last version of the file that parsed, shared by everything that reads the file (the route reads
 * it per request, the watcher on every change), so that an edit in progress, which does not parse for a
 * moment, leaves the last good state readable.
 *
 * It keeps the parser's JSON text, which is what the route sends, so serving it costs no serialising.
 *
 * @example
 * const lastGood = createLastGoodSprintStatus()
 * lastGood.remember(snapshot.json)
 * lastGood.json // the last good file as JSON text, or null while no version ever parsed
 */
export function createLastGoodSprintStatus () {
  let json: string | null = null
  return {
    remember (parsedJson: string): void {
      json = parsedJson
    },
    get json (): string | null {
      return json
    }
  }
}
export type LastGoodSprintStatus = ReturnType<typeof createLastGoodSprintStatus>

/** Entries of `development_status` that are not stories: epic rows and retrospectives. */
export function isStoryKey (key: string): boolean {
  return !key.startsWith('epic-') && !key.endsWith('-retrospective')
}

/**
 * Story statuses of a parsed file, in file order. Scalar statuses become strings; empty, null,
 * nested or over-long entries are skipped because no valid `story:status` event could carry them.
 */
export function extractStoryStatuses (document: SprintStatusDocument): Map<string, string> {
  const statuses = new Map<string, string>()
  const developmentStatus = document.development_status
  if (!isMapping(developmentStatus)) return statuses
  for (const [key, value] of Object.entries(developmentStatus)) {
    if (!isStoryKey(key) || key.length === 0 || key.length > Limits.key) continue
    if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') continue
    const status = String(value).trim()
    if (status.length === 0 || status.length > Limits.key) continue
    statuses.set(key, status)
  }
  return statuses
}

/**
 * The `story:status` payloads that lead from `previous` to `next`, in `next`'s order: one per story
 * whose status changed, `old_status: null` for a story that is new. Stories that disappeared give
 * nothing (there is no status to report).
 *
 * @example
 * diffStoryStatuses(new Map([['1-1', 'backlog']]), new Map([['1-1', 'done'], ['1-2', 'backlog']]))
 * // → [{ story_key: '1-1', old_status: 'backlog', new_status: 'done' }, { story_key: '1-2', old_status: null, new_status: 'backlog' }]
 */
export function diffStoryStatuses (previous: StoryStatuses, next: StoryStatuses): StoryStatus[] {
  const changes: StoryStatus[] = []
  for (const [storyKey, newStatus] of next) {
    const oldStatus = previous.get(storyKey) ?? null
    if (oldStatus !== newStatus) changes.push({ story_key: storyKey, old_status: oldStatus, new_status: newStatus })
  }
  return changes
}
