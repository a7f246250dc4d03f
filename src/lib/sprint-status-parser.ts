import { Worker } from 'node:worker_threads'
import { createRequire } from 'node:module'
import { FileTimeoutError, FileTooLargeError } from '../errors.ts'
import { FileLimits } from '../events/protocol.ts'
import { Limits, type StoryStatus } from '../events/schemas.ts'
import {
  diffStoryStatuses,
  extractStoryStatuses,
  parseSprintStatus,
  SPRINT_STATUS_FILE,
  SprintStatusParseError,
  yamlSyntaxError
} from './sprint-status.ts'

/**
 * Story statuses in file order, encoded as the JSON text of `[key, status]` pairs. A large file's
 * statuses stay encoded on the event loop: only the worker decodes them (to diff two versions), so
 * the main thread never walks tens of thousands of entries.
 */
export type EncodedStatuses = string

/** A parsed sprint-status.yaml. */
export interface ParsedSprintStatus {
  /** The document as JSON text: what GET /api/sprint-status sends. */
  json: string
  statuses: EncodedStatuses
  /** How many stories `statuses` holds. */
  stories: number
}

/** The `story:status` changes between two versions: the first `limit` of them, and how many there are in all. */
export interface StatusDiff {
  changes: StoryStatus[]
  changed: number
}

type WorkerRequest =
  | { id: number, op: 'parse', text: string }
  | { id: number, op: 'diff', previous: EncodedStatuses, next: EncodedStatuses, limit: number }

/** A request before it is given its id (Omit distributed over the union). */
type NewRequest = WorkerRequest extends infer R ? R extends WorkerRequest ? Omit<R, 'id'> : never : never

type WorkerReply =
  | { id: number, parsed: ParsedSprintStatus }
  | { id: number, diff: StatusDiff }
  | { id: number, expanded: true }
  | { id: number, syntax: { reason: string, line?: number, column?: number } }
  | { id: number, shape: string }
  | { id: number, failure: string }

// CommonJS, evaluated in the worker, so that it runs the same under tsx, tap and plain node (as the
// checkpointer's worker does); js-yaml's resolved path comes from the main thread. A TypeScript module
// cannot be loaded there, so this mirrors, in plain JavaScript, `sprintStatusSchema`,
// `checkSprintStatusDocument`, `extractStoryStatuses` and `diffStoryStatuses` from sprint-status.ts;
// test/lib/sprint-status-parser.test.ts checks that both give the same results.
// JSON.stringify's replacer counts what it writes and stops at the limit: YAML aliases let a few
// hundred bytes stand for an unbounded tree, which only expands when it is serialised.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads')
const yaml = require(workerData.jsYaml)
const schema = yaml.CORE_SCHEMA.extend({ implicit: [yaml.types.merge] })
const { keyLimit, filename } = workerData
const EXPANDED = Symbol('expanded')
const isMapping = (value) => typeof value === 'object' && value !== null && !Array.isArray(value)
function shapeError (document) {
  if (document === undefined || document === null) return null
  if (!isMapping(document)) return 'the document must be a mapping, found ' + (Array.isArray(document) ? 'a list' : typeof document)
  const statuses = document.development_status
  if (statuses !== undefined && statuses !== null && !isMapping(statuses)) return 'development_status must be a mapping of story key to status'
  return null
}
function statusesOf (document) {
  const pairs = []
  const statuses = isMapping(document) ? document.development_status : undefined
  if (!isMapping(statuses)) return pairs
  for (const [key, value] of Object.entries(statuses)) {
    if (key.startsWith('epic-') || key.endsWith('-retrospective') || key.length === 0 || key.length > keyLimit) continue
    if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') continue
    const status = String(value).trim()
    if (status.length === 0 || status.length > keyLimit) continue
    pairs.push([key, status])
  }
  return pairs
}
function parse (id, text) {
  const document = yaml.load(text, { schema, filename })
  const shape = shapeError(document)
  if (shape !== null) return { id, shape }
  let budget = workerData.maxJsonBytes
  const json = document === undefined || document === null ? '{}' : JSON.stringify(document, function (key, value) {
    budget -= key.length + (typeof value === 'string' ? value.length : 0) + 4
    if (budget < 0) throw EXPANDED
    return value
  })
  const pairs = statusesOf(document)
  return { id, parsed: { json, statuses: JSON.stringify(pairs), stories: pairs.length } }
}
function diff (id, previous, next, limit) {
  const before = new Map(JSON.parse(previous))
  const changes = []
  let changed = 0
  for (const [key, status] of JSON.parse(next)) {
    const old = before.has(key) ? before.get(key) : null
    if (old === status) continue
    changed++
    if (changes.length < limit) changes.push({ story_key: key, old_status: old, new_status: status })
  }
  return { id, diff: { changes, changed } }
}
parentPort.on('message', (request) => {
  try {
    parentPort.postMessage(request.op === 'parse' ? parse(request.id, request.text) : diff(request.id, request.previous, request.next, request.limit))
  } catch (error) {
    if (error === EXPANDED) parentPort.postMessage({ id: request.id, expanded: true })
    else if (error instanceof yaml.YAMLException) {
      const mark = error.mark || {}
      parentPort.postMessage({ id: request.id, syntax: { reason: error.reason, line: mark.line, column: mark.column } })
    } else parentPort.postMessage({ id: request.id, failure: String((error && error.message) || error) })
  }
})
`

function expandedError (): Error {
  return new FileTooLargeError(SPRINT_STATUS_FILE,
    `it expands to more than ${FileLimits.sprintStatusExpandedBytes} bytes of JSON through YAML aliases (FileLimits.sprintStatusExpandedBytes)`)
}

interface Job {
  request: WorkerRequest
  resolve: (reply: WorkerReply) => void
  reject: (error: Error) => void
}

export interface SprintStatusParserOptions {
  /** Texts up to this size without aliases are handled on the calling thread. Default `FileLimits.sprintStatusInlineParseBytes`. */
  inlineBytes?: number
}

/**
 * Parses sprint-status.yaml texts and diffs their story statuses without ever stalling the event
 * loop: small texts without aliases on the calling thread (a few ms), others in one worker thread
 * (started when first needed), one job at a time, each within `FileLimits.sprintStatusParseMs` (a
 * job still running then is stopped by ending the worker) and within
 * `FileLimits.sprintStatusExpandedBytes` of JSON. `close()` ends the worker.
 *
 * @example
 * const parser = createSprintStatusParser()
 * const { json, statuses } = await parser.parse(text)
 * const { changes, changed } = await parser.diff(previousStatuses, statuses, 200)
 * await parser.close()
 */
export function createSprintStatusParser (options: SprintStatusParserOptions = {}) {
  const inlineBytes = options.inlineBytes ?? FileLimits.sprintStatusInlineParseBytes
  let worker: Worker | null = null
  let current: Job | null = null
  let currentTimer: NodeJS.Timeout | null = null
  const queue: Job[] = []
  let nextId = 1
  let closed = false

  function settleCurrent (): Job | null {
    const job = current
    current = null
    if (currentTimer !== null) clearTimeout(currentTimer)
    currentTimer = null
    worker?.unref()
    return job
  }

  function startWorker (): Worker {
    const started = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: {
        jsYaml: createRequire(import.meta.url).resolve('js-yaml'),
        filename: SPRINT_STATUS_FILE,
        keyLimit: Limits.key,
        maxJsonBytes: FileLimits.sprintStatusExpandedBytes
      }
    })
    started.on('message', (reply: WorkerReply) => {
      if (current === null || reply.id !== current.request.id) return
      settleCurrent()!.resolve(reply)
      runNext()
    })
    const onGone = (error: Error): void => {
      if (worker !== started) return
      worker = null
      settleCurrent()?.reject(error)
      runNext()
    }
    started.on('error', onGone)
    started.on('exit', code => onGone(new Error(`the sprint-status parser thread exited (${code})`)))
    return started
  }

  function runNext (): void {
    if (closed || current !== null) return
    const job = queue.shift()
    if (job === undefined) return
    worker ??= startWorker()
    // Held only while a job runs: an idle parser never keeps the process alive.
    worker.ref()
    current = job
    currentTimer = setTimeout(() => {
      if (current !== job) return
      settleCurrent()
      const stopping = worker
      worker = null
      stopping?.terminate().catch(() => {})
      job.reject(new FileTimeoutError(SPRINT_STATUS_FILE, `not parsed within ${FileLimits.sprintStatusParseMs} ms (FileLimits.sprintStatusParseMs)`))
      runNext()
    }, FileLimits.sprintStatusParseMs)
    worker.postMessage(job.request)
  }

  async function inWorker (request: NewRequest): Promise<WorkerReply> {
    if (closed) throw new Error('the sprint-status parser is closed')
    return await new Promise<WorkerReply>((resolve, reject) => {
      queue.push({ request: { ...request, id: nextId++ } as WorkerRequest, resolve, reject })
      runNext()
    })
  }

  function failure (reply: WorkerReply): Error {
    if ('expanded' in reply) return expandedError()
    if ('syntax' in reply) {
      const { reason, line, column } = reply.syntax
      return yamlSyntaxError(reason, { ...(line === undefined ? {} : { line }), ...(column === undefined ? {} : { column }) })
    }
    if ('shape' in reply) return new SprintStatusParseError(`${SPRINT_STATUS_FILE}: ${reply.shape}`)
    if ('failure' in reply) return new SprintStatusParseError(`${SPRINT_STATUS_FILE}: ${reply.failure}`)
    return new Error('unexpected reply from the sprint-status parser thread')
  }

  return {
    /**
     * Parses a sprint-status.yaml text into its JSON and story statuses.
     * @throws {SprintStatusParseError} a syntax error or a document of the wrong shape
     * @throws SPRINT_FILE_TOO_LARGE when it expands beyond `FileLimits.sprintStatusExpandedBytes`
     * @throws SPRINT_FILE_TIMEOUT when the parse takes longer than `FileLimits.sprintStatusParseMs`
     */
    async parse (text: string): Promise<ParsedSprintStatus> {
      // Without aliases (`*name`) a small text cannot expand: the parse and its JSON take a few ms here.
      if (text.length <= inlineBytes && !text.includes('*')) {
        const document = parseSprintStatus(text)
        const statuses = [...extractStoryStatuses(document)]
        return { json: JSON.stringify(document), statuses: JSON.stringify(statuses), stories: statuses.length }
      }
      const reply = await inWorker({ op: 'parse', text })
      if ('parsed' in reply) return reply.parsed
      throw failure(reply)
    },

    /** The `story:status` changes from `previous` to `next` (see `diffStoryStatuses`): the first `limit`, and the count. */
    async diff (previous: EncodedStatuses, next: EncodedStatuses, limit: number): Promise<StatusDiff> {
      if (previous.length + next.length <= inlineBytes) {
        const changes = diffStoryStatuses(new Map(JSON.parse(previous) as Array<[string, string]>), new Map(JSON.parse(next) as Array<[string, string]>))
        return { changes: changes.slice(0, limit), changed: changes.length }
      }
      const reply = await inWorker({ op: 'diff', previous, next, limit })
      if ('diff' in reply) return reply.diff
      throw failure(reply)
    },

    /** Ends the worker; jobs waiting or running are rejected. */
    async close (): Promise<void> {
      closed = true
      const error = new Error('the sprint-status parser is closed')
      settleCurrent()?.reject(error)
      for (const job of queue.splice(0)) job.reject(error)
      const stopping = worker
      worker = null
      await stopping?.terminate()
    }
  }
}

export type SprintStatusParser = ReturnType<typeof createSprintStatusParser>
