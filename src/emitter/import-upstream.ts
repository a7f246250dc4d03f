/**
 * `import-upstream`: brings the history of the sprint runner's own dashboard database
 * (`sprint-runner.db`, written by its `db.py`) into this service.
 *
 * Each `batches` row becomes `batch:start` at `started_at` and, once ended, `batch:end` at
 * `ended_at`; each `events` row becomes its event, from `payload_json` or, where that is null (rows
 * written before the column existed, and the orchestrator's context rows), rebuilt from the row's
 * columns. Everything is appended in time order with the original timestamps and checked by the
 * same validation as any other producer's events: a row that still fails is reported and skipped.
 *
 * Two write paths, one at a time: the running service's ingest (`url`), so open dashboards see the
 * history arrive and one process owns the database; or the database file of a service that is not
 * running (`dbPath`), through the project's store, after making sure no service holds it.
 *
 * Idempotent: every imported event carries `upstream: { db, table, row }` in its payload (see
 * src/lib/upstream-imports.ts), and rows already in the target are skipped. A batch the target has
 * but did not get from an import was sent live (the Python emitter): its rows are left out rather
 * than stored twice.
 */
import Database from 'better-sqlite3'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import type { EventTypeName } from '../events/schemas.ts'
import { validateEventInput } from '../events/validate.ts'
import { LiveBatchRunningError, StoreInUseError, UpstreamDatabaseInvalidError, UpstreamImportsUnsupportedError } from '../errors.ts'
import { createStore } from '../lib/sqlite-store.ts'
import { readUpstreamImportState, upstreamKey, UPSTREAM_FIELD, type UpstreamImportState, type UpstreamMarker } from '../lib/upstream-imports.ts'
import { chunkEvents, createEventClient, EventClientError } from './client.ts'

/** The orchestrator stores `max_cycles` 999 for a batch run with `all` (its column is NOT NULL). */
const ALL_CYCLES = 999
/**
 * Earlier orchestrator versions wrote some `ended_at` values in seconds. A value below this is read as
 * seconds: as milliseconds it would be before March 1973, as seconds it is before 5138.
 */
const SECONDS_BELOW = 1e11
/** Events per transaction (`dbPath`) and at most per request (`url`): the unit of progress. */
const CHUNK = 1000

/** One event rebuilt from a source row. */
export interface UpstreamEvent {
  type: string
  /** The payload with its `upstream` marker. */
  payload: Record<string, unknown>
  timestamp: number
  source: UpstreamMarker
  /** The source batch: a batch row's id, an events row's `batch_id`. */
  batchId: number | null
}

/** A source row that did not become an event, and why. */
export interface SkippedRow {
  table: 'batches' | 'events'
  row: number
  type: string
  reason: string
}

/** Everything a source database holds, as events in append order. */
export interface UpstreamHistory {
  /** Identity of the source (`upstream.db` in each event): stable when the file is moved or copied. */
  identity: string
  events: UpstreamEvent[]
  skipped: SkippedRow[]
}

interface BatchRow {
  id: number
  started_at: number
  ended_at: number | null
  max_cycles: number | null
  cycles_completed: number | null
  status: string | null
}

interface EventRow {
  id: number
  batch_id: number | null
  timestamp: number
  event_type: string
  story_key: string | null
  command: string | null
  task_id: string | null
  status: string | null
  message: string | null
  payload_json: string | null
}

/** The sprint runner's columns this importer reads; older files may lack `payload_json`. */
const REQUIRED_COLUMNS = {
  batches: ['id', 'started_at', 'ended_at', 'max_cycles', 'cycles_completed', 'status'],
  events: ['id', 'batch_id', 'timestamp', 'event_type', 'story_key', 'command', 'task_id', 'status', 'message']
} as const

function toMilliseconds (value: number): number {
  return value < SECONDS_BELOW ? value * 1000 : value
}

/** Append order within a batch and millisecond: its start, its events, its end. */
const RANK = { start: 0, event: 1, end: 2 } as const

function describe (table: string, row: number, type: string): string {
  return `${table} row ${row} (${type})`
}

/** "events row 17 (command:end): why", as the CLI prints a skipped row. */
export function describeSkippedRow (skipped: SkippedRow): string {
  return `${describe(skipped.table, skipped.row, skipped.type)} skipped: ${skipped.reason}`
}

/**
 * Reads a sprint runner database (read-only) into validated events in append order.
 * Throws `SPRINT_UPSTREAM_DB_INVALID` for a file without the sprint runner's tables.
 *
 * @example
 * const history = readUpstreamHistory('sprint-runner.db')
 * history.events.length // events ready to append; history.skipped lists the rows that failed
 */
export function readUpstreamHistory (file: string, now: number = Date.now()): UpstreamHistory {
  if (!existsSync(file)) throw new UpstreamDatabaseInvalidError(file, 'no such file')
  let db: Database.Database
  try {
    db = new Database(file, { readonly: true, fileMustExist: true })
  } catch (error) {
    throw new UpstreamDatabaseInvalidError(file, (error as Error).message)
  }
  try {
    const columnsOf = (table: string): Set<string> =>
      new Set(db.prepare<[], { name: string }>(`SELECT name FROM pragma_table_info('${table}')`).all().map(column => column.name))
    let columns: Record<'batches' | 'events', Set<string>>
    try {
      columns = { batches: columnsOf('batches'), events: columnsOf('events') }
    } catch (error) {
      throw new UpstreamDatabaseInvalidError(file, (error as Error).message)
    }
    for (const table of ['batches', 'events'] as const) {
      if (columns[table].size === 0) throw new UpstreamDatabaseInvalidError(file, `it has no "${table}" table`)
      const missing = REQUIRED_COLUMNS[table].filter(column => !columns[table].has(column))
      if (missing.length > 0) throw new UpstreamDatabaseInvalidError(file, `table "${table}" has no column ${missing.join(', ')}`)
    }

    const batches = db.prepare<[], BatchRow>('SELECT id, started_at, ended_at, max_cycles, cycles_completed, status FROM batches ORDER BY id').all()
    const payloadColumn = columns.events.has('payload_json') ? 'payload_json' : 'NULL AS payload_json'
    const rows = db.prepare<[], EventRow>(
      `SELECT id, batch_id, timestamp, event_type, story_key, command, task_id, status, message, ${payloadColumn} FROM events ORDER BY id`).all()
    const identity = identify(batches, rows)
    const contextRefreshTaskId = contextRefreshTaskFinder(db)

    const candidates: Array<UpstreamEvent & { rank: number }> = []
    const skipped: SkippedRow[] = []
    const add = (table: 'batches' | 'events', row: number, type: string, batchId: number | null, rank: number,
      timestamp: number, payload: Record<string, unknown> | string): void => {
      if (typeof payload === 'string') {
        skipped.push({ table, row, type, reason: payload })
        return
      }
      const source: UpstreamMarker = { db: identity, table, row }
      const marked = { ...payload, [UPSTREAM_FIELD]: source }
      // The ingest route's own check, timestamp included.
      const details = validateEventInput({ type, payload: marked, timestamp }, '', now)
      if (details.length > 0) {
        skipped.push({ table, row, type, reason: details.map(detail => `${detail.path} ${detail.message}`).join('; ') })
        return
      }
      candidates.push({ type, payload: marked, timestamp, source, batchId, rank })
    }

    for (const batch of batches) {
      const all = batch.max_cycles === null || batch.max_cycles === ALL_CYCLES
      add('batches', batch.id, 'batch:start', batch.id, RANK.start, toMilliseconds(batch.started_at), {
        batch_id: batch.id,
        max_cycles: all ? null : batch.max_cycles,
        batch_mode: all ? 'all' : 'fixed'
      })
      if (batch.ended_at !== null) {
        add('batches', batch.id, 'batch:end', batch.id, RANK.end, toMilliseconds(batch.ended_at), {
          batch_id: batch.id,
          cycles_completed: batch.cycles_completed ?? 0,
          status: batch.status ?? 'completed'
        })
      }
    }
    for (const row of rows) {
      const timestamp = toMilliseconds(row.timestamp)
      add('events', row.id, row.event_type, row.batch_id, RANK.event, timestamp,
        row.payload_json === null ? payloadFromColumns(row, contextRefreshTaskId) : parsePayload(row.payload_json))
    }
    // Within one millisecond a batch's end still comes before the next batch's start.
    candidates.sort((a, b) => a.timestamp - b.timestamp || (a.batchId ?? 0) - (b.batchId ?? 0) || a.rank - b.rank ||
      a.source.row - b.source.row)
    return { identity, events: candidates.map(({ rank: _rank, ...event }) => event), skipped }
  } finally {
    db.close()
  }
}

/**
 * A name for the source that survives moving and copying the file: its first batch (id and start
 * time to the millisecond), which the sprint runner never rewrites. Falls back to the first event.
 */
function identify (batches: BatchRow[], rows: EventRow[]): string {
  const first = batches[0] !== undefined ? `batches/${batches[0].id}/${batches[0].started_at}` : rows[0] !== undefined ? `events/${rows[0].id}/${rows[0].timestamp}` : 'empty'
  return createHash('sha256').update(`sprint-runner.db ${first}`).digest('hex').slice(0, 16)
}

function parsePayload (json: string): Record<string, unknown> | string {
  let payload: unknown
  try {
    payload = JSON.parse(json)
  } catch (error) {
    return `payload_json is not JSON (${(error as Error).message})`
  }
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) return 'payload_json is not a JSON object'
  return payload as Record<string, unknown>
}

/**
 * The orchestrator's `context:refresh` row lacks the background task id its event carries; the task
 * row is written just before it (same batch, type `project-context-refresh`), so the latest such task
 * spawned at or before the row's time is the one.
 */
function contextRefreshTaskFinder (db: Database.Database): (row: EventRow) => number | undefined {
  let statement: Database.Statement<[number | null, number], { id: number }> | undefined
  try {
    statement = db.prepare(
      `SELECT id FROM background_tasks WHERE batch_id IS ? AND task_type = 'project-context-refresh' AND spawned_at <= ?
       ORDER BY spawned_at DESC, id DESC LIMIT 1`)
  } catch {
    return () => undefined
  }
  return (row) => statement.get(row.batch_id, row.timestamp)?.id
}

/**
 * A payload rebuilt from an events row's columns, as the orchestrator emitted it alongside. The
 * orchestrator writes the two context rows as the work starts, with its own status words ("create",
 * "refresh") in the column, while the events it emits then say "starting" and "started".
 */
function payloadFromColumns (row: EventRow, contextRefreshTaskId: (row: EventRow) => number | undefined): Record<string, unknown> {
  const message = row.message ?? ''
  const command = { story_key: row.story_key, command: row.command, task_id: row.task_id, message }
  switch (row.event_type) {
    case 'command:start':
      return command
    case 'command:end':
      return { ...command, status: row.status }
    case 'context:create':
      return { status: 'starting', message }
    case 'context:refresh': {
      const taskId = contextRefreshTaskId(row)
      return { ...(taskId === undefined ? {} : { task_id: taskId }), status: 'started', message }
    }
    default:
      // No rule for this type: its columns as they are, for the validation to judge.
      return { ...command, status: row.status }
  }
}

/**
 * The rows of `history` a target with `state` does not have yet. Throws `SPRINT_LIVE_BATCH_RUNNING`
 * when there is something to import and the target is running a batch it got live: the store ends
 * every running batch when another starts, so the first imported `batch:start` would end it, and
 * the history's events would be filed under whichever batch was running when they were appended.
 */
export function planImport (history: UpstreamHistory, state: UpstreamImportState): {
  events: UpstreamEvent[]
  alreadyImported: number
  /** Source batches the target got live (not from an import): their rows are left out. */
  liveBatches: number[]
} {
  const imported = new Set(state.imported)
  const known = new Set(state.batches)
  const live = new Set<number>()
  for (const id of known) {
    if (!imported.has(upstreamKey('batches', id, 'batch:start'))) live.add(id)
  }
  const events: UpstreamEvent[] = []
  let alreadyImported = 0
  const liveSeen = new Set<number>()
  for (const event of history.events) {
    if (imported.has(upstreamKey(event.source.table, event.source.row, event.type))) {
      alreadyImported++
    } else if (event.batchId !== null && live.has(event.batchId)) {
      liveSeen.add(event.batchId)
    } else {
      events.push(event)
    }
  }
  if (events.length > 0 && state.running !== null && live.has(state.running)) throw new LiveBatchRunningError(state.running)
  return { events, alreadyImported, liveBatches: [...liveSeen].sort((a, b) => a - b) }
}

/** Where the history goes: a running service, or the database file of one that is not running. */
export type ImportTarget = { url: string, token?: string | undefined } | { dbPath: string }

export interface ImportOptions {
  /** The sprint runner's database (`sprint-runner.db`). */
  source: string
  target: ImportTarget
  /** Called after each chunk with the events written so far and the total to write. */
  onProgress?: (done: number, total: number) => void
  /** Called for each row that is not imported because it failed validation. */
  onSkip?: (row: SkippedRow) => void
  /** The clock for the "not in the future" rule; tests pin it. */
  now?: number
}

export interface ImportResult {
  /** Events appended by this run. */
  imported: number
  /** Source batches those events belong to. */
  batches: number
  /** Rows that failed validation (each also passed to `onSkip`). */
  skipped: SkippedRow[]
  /** Events of earlier imports found in the target and not written again. */
  alreadyImported: number
  /** Source batches left out because the target got them live. */
  liveBatches: number[]
}

/** The one-line summary the CLI prints. */
export function describeImportResult (result: ImportResult): string {
  const notes = [
    ...(result.alreadyImported > 0 ? [`${result.alreadyImported} already imported`] : []),
    ...(result.liveBatches.length > 0 ? [`batch${result.liveBatches.length > 1 ? 'es' : ''} ${result.liveBatches.join(', ')} already in the service`] : [])
  ]
  return `imported ${result.imported} events in ${result.batches} batches, skipped ${result.skipped.length}` +
    (notes.length > 0 ? ` (${notes.join('; ')})` : '')
}

/**
 * Imports a sprint runner database into a service, through its ingest or into its stopped database.
 *
 * @example
 * const result = await importUpstream({ source: 'sprint-runner.db', target: { url: 'http://127.0.0.1:8080' } })
 * console.log(describeImportResult(result)) // imported 1234 events in 12 batches, skipped 0
 */
export async function importUpstream (options: ImportOptions): Promise<ImportResult> {
  const history = readUpstreamHistory(options.source, options.now)
  const skipped = [...history.skipped]
  for (const row of history.skipped) options.onSkip?.(row)
  const skip = (row: SkippedRow): void => {
    skipped.push(row)
    options.onSkip?.(row)
  }
  const written = 'dbPath' in options.target
    ? importIntoFile(history, options.target.dbPath, options.onProgress)
    : await importThroughService(history, options.target, skip, options.onProgress)
  const batches = new Set(written.events.flatMap(event => event.batchId === null ? [] : [event.batchId]))
  return {
    imported: written.events.length,
    batches: batches.size,
    skipped,
    alreadyImported: written.plan.alreadyImported,
    liveBatches: written.plan.liveBatches
  }
}

interface Written {
  events: UpstreamEvent[]
  plan: ReturnType<typeof planImport>
}

/**
 * Throws `SPRINT_STORE_IN_USE` when a process has the database open. Every connection to a WAL
 * database (the store always uses WAL) holds a shared lock on the file for as long as it is open,
 * idle or not; a connection in exclusive locking mode must upgrade that to an exclusive lock before it
 * reads, which fails at once (busy timeout 0) while anyone else holds the file. `BEGIN EXCLUSIVE`
 * alone would not do: in WAL mode it only takes the write lock, which an idle service does not hold.
 */
export function assertStoreNotHeld (dbPath: string): void {
  if (!existsSync(dbPath)) return
  const probe = new Database(dbPath, { fileMustExist: true, timeout: 0 })
  try {
    probe.pragma('locking_mode = EXCLUSIVE')
    probe.exec('BEGIN EXCLUSIVE; COMMIT')
  } catch (error) {
    const code = (error as { code?: unknown }).code
    if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') throw new StoreInUseError(dbPath)
    throw error
  } finally {
    probe.close()
  }
}

function importIntoFile (history: UpstreamHistory, dbPath: string, onProgress: ImportOptions['onProgress']): Written {
  assertStoreNotHeld(dbPath)
  // A service started between the check and this open would not be seen; the window is the few
  // milliseconds of one open, and the service would then read what was committed before its start.
  const store = createStore(dbPath)
  try {
    const plan = planImport(history, readUpstreamImportState(store.db, history.identity))
    // One transaction per chunk: an interrupted import keeps whole chunks, and the next run completes it.
    const append = store.db.transaction((events: UpstreamEvent[]) => {
      for (const event of events) store.appendEvent(event.type as EventTypeName, event.payload, JSON.stringify(event.payload), event.timestamp)
    })
    for (let start = 0; start < plan.events.length; start += CHUNK) {
      append(plan.events.slice(start, start + CHUNK))
      onProgress?.(Math.min(start + CHUNK, plan.events.length), plan.events.length)
    }
    return { events: plan.events, plan }
  } finally {
    store.close()
  }
}

async function readServiceState (url: string, token: string | undefined, identity: string): Promise<UpstreamImportState> {
  const endpoint = new URL('api/upstream-imports', url.endsWith('/') ? url : url + '/')
  endpoint.searchParams.set('db', identity)
  let response: Response
  try {
    response = await fetch(endpoint, { headers: token === undefined || token === '' ? {} : { authorization: `Bearer ${token}` } })
  } catch (error) {
    const cause = (error as { cause?: { code?: unknown } }).cause
    throw new Error(`Could not reach the sprint dashboard at ${endpoint.origin}: ${typeof cause?.code === 'string' ? cause.code : String(error)}`, { cause: error })
  }
  const text = await response.text()
  if (response.status === 404) throw new UpstreamImportsUnsupportedError(url)
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    body = undefined
  }
  if (!response.ok) {
    const message = typeof (body as { message?: unknown } | undefined)?.message === 'string' ? (body as { message: string }).message : text.slice(0, 200)
    throw new Error(`${endpoint.href} answered ${response.status}: ${message}`)
  }
  const state = body as Partial<UpstreamImportState> | undefined
  if (!Array.isArray(state?.imported) || !Array.isArray(state.batches) || state.running === undefined) throw new Error(`${endpoint.href} answered with an unexpected body`)
  return state as UpstreamImportState
}

/** The event index a 400's detail path points at (`/3/payload/status` → 3). */
function indexOf (path: string): number | undefined {
  const match = /^\/(\d+)(?:\/|$)/.exec(path)
  return match === null ? undefined : Number(match[1])
}

async function importThroughService (history: UpstreamHistory, target: { url: string, token?: string | undefined },
  skip: (row: SkippedRow) => void, onProgress: ImportOptions['onProgress']): Promise<Written> {
  const plan = planImport(history, await readServiceState(target.url, target.token, history.identity))
  const client = createEventClient({ url: target.url, token: target.token })
  const written: UpstreamEvent[] = []
  let done = 0
  for (const chunk of chunkEvents(plan.events, CHUNK)) {
    let pending = chunk
    while (pending.length > 0) {
      try {
        // Each event carries its own `timestamp`: the service stores it as the envelope's time.
        await client.emitUnchecked(pending.map(event => ({ type: event.type, payload: event.payload, timestamp: event.timestamp })))
        written.push(...pending)
        break
      } catch (error) {
        // The service validates again (it may be a newer or older version than this importer): the
        // events it names are reported and skipped, the rest of the request is sent again.
        if (!(error instanceof EventClientError) || error.statusCode !== 400) throw error
        const rejected = new Map<number, string[]>()
        for (const detail of error.details) {
          const index = indexOf(detail.path)
          if (index === undefined || index >= pending.length) continue
          rejected.set(index, [...(rejected.get(index) ?? []), `${detail.path.replace(/^\/\d+/, '')} ${detail.message}`])
        }
        if (rejected.size === 0) throw error
        for (const [index, reasons] of rejected) {
          const event = pending[index]!
          skip({ table: event.source.table, row: event.source.row, type: event.type, reason: `refused by the service: ${reasons.join('; ')}` })
        }
        pending = pending.filter((_event, index) => !rejected.has(index))
      }
    }
    done += chunk.length
    onProgress?.(done, plan.events.length)
  }
  return { events: written, plan }
}
