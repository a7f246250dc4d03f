import Database from 'better-sqlite3'
import type { Batch, CommandMetrics, EventPayload, EventTypeName, Envelope } from '../events/schemas.ts'
import { EventType } from '../events/schemas.ts'
import { createHistory, historyMigration, isRecorded } from './history.ts'
import { migrate, type Migration } from './migrations.ts'
import { IdempotencyConflictError } from '../errors.ts'

/** A row of the `events` table as stored: the payload stays JSON text so replays need no parse/stringify round trip. */
export interface EventRow {
  id: number
  type: string
  payload: string
  timestamp: number
  /** Set on what `appendEvents` returns for an event whose idempotency key was already stored: this is the stored one. */
  duplicate?: true
  /** With `duplicate`: the stored event under that key is another one (type or payload differ); see `appendEvents`. */
  conflict?: true
}

export interface StoryRow {
  key: string
  epic: string | null
  status: string
  updated_at: number
}

export interface CommandRow {
  id: number
  story_key: string
  command: string
  task_id: string
  status: string
  started_at: number
  ended_at: number | null
  metrics: CommandMetrics | null
}

export interface BackgroundTaskRow {
  id: number
  batch_id: number | null
  task_type: string
  status: string
  started_at: number
  ended_at: number | null
  details: string | null
}

interface BatchDbRow extends Omit<Batch, 'max_cycles' | 'batch_mode'> {
  max_cycles: number | null
  batch_mode: Batch['batch_mode'] | null
}

/**
 * The batches table. `status` is checked, so a new batch outcome means a new table: see
 * `migrateBatchesTable`, which brings a database made before `all_done` and `batch_mode` up to this.
 */
const batchesTable = `
CREATE TABLE IF NOT EXISTS batches (
  id INTEGER PRIMARY KEY,
  started_at INTEGER NOT NULL,
  ended_at INTEGER,
  max_cycles INTEGER, -- NULL means no limit ("all")
  cycles_completed INTEGER NOT NULL DEFAULT 0,
  status TEXT NOT NULL CHECK (status IN ('running', 'completed', 'all_done', 'stopped', 'error')),
  batch_mode TEXT CHECK (batch_mode IN ('fixed', 'all')) -- as the producer sent it; NULL when it did not
);
`

const schema = `${batchesTable}
CREATE INDEX IF NOT EXISTS batches_status ON batches(status);
CREATE TABLE IF NOT EXISTS stories (
  key TEXT PRIMARY KEY,
  epic TEXT,
  status TEXT NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  story_key TEXT NOT NULL,
  command TEXT NOT NULL,
  task_id TEXT NOT NULL,
  status TEXT NOT NULL,
  started_at INTEGER NOT NULL,
  ended_at INTEGER,
  metrics TEXT
);
CREATE INDEX IF NOT EXISTS commands_story ON commands(story_key, command, task_id);
CREATE TABLE IF NOT EXISTS background_tasks (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  batch_id INTEGER,
  task_type TEXT NOT NULL,
  status TEXT NOT NULL,
  started_at INTEGER NOT NULL,
  ended_at INTEGER,
  details TEXT
);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  type TEXT NOT NULL,
  payload TEXT NOT NULL,
  timestamp INTEGER NOT NULL,
  batch_id INTEGER
);
-- Recent-first reads walk the rowid (id) backwards; this index serves reads by batch.
CREATE INDEX IF NOT EXISTS events_batch ON events(batch_id, id);
`

/** An event read from the log of record (scale-out): its id and timestamp were given there. */
export interface LoggedEventToAppend {
  id: number
  type: EventTypeName
  payload: unknown
  payloadJson: string
  timestamp: number
}

/** A validated event on its way into the store; `timestamp` when the producer gave one. */
export interface EventToAppend {
  type: EventTypeName
  payload: unknown
  payloadJson: string
  timestamp?: number | undefined
  /** The producer's name for the event: one already stored under it is not stored again. */
  idempotencyKey?: string | undefined
}

function toBatch (row: BatchDbRow | undefined): Batch | null {
  if (row === undefined) return null
  return {
    ...row,
    max_cycles: row.max_cycles ?? 'all',
    // Producers before `batch_mode` (and rows from before the column) said it with max_cycles alone.
    batch_mode: row.batch_mode ?? (row.max_cycles === null ? 'all' : 'fixed')
  }
}

/**
 * Brings the batches table of a database made before `all_done` and `batch_mode` up to
 * `batchesTable`. SQLite cannot change a CHECK constraint in place, so the table is rebuilt (rows
 * kept), with the index that went with the old one. A table that already has `all_done` is left
 * alone: files written between that change and schema versions have it at version 0.
 */
export function migrateBatchesTable (db: Database.Database): void {
  const table = db.prepare<[], { sql: string }>("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'batches'").get()
  if (table === undefined || table.sql.includes("'all_done'")) return
  db.exec('ALTER TABLE batches RENAME TO batches_before_all_done')
  db.exec(batchesTable)
  db.exec(`INSERT INTO batches (id, started_at, ended_at, max_cycles, cycles_completed, status)
    SELECT id, started_at, ended_at, max_cycles, cycles_completed, status FROM batches_before_all_done`)
  db.exec('DROP TABLE batches_before_all_done')
  db.exec('CREATE INDEX IF NOT EXISTS batches_status ON batches(status)')
}

/**
 * The schema, step by step (see migrations.ts), each run once, in order, in the one transaction of
 * `migrate`. Step 1 is the schema as the releases before schema versions created it, with IF NOT
 * EXISTS so that it is a no-op on their files; every later change is a new step at the end, never
 * an edit of an earlier one.
 */
const migrations: Migration[] = [
  { version: 1, name: 'events, batches, stories, commands, background tasks', up: db => db.exec(schema) },
  { version: 2, name: 'batches: all_done status and batch_mode column', up: migrateBatchesTable },
  historyMigration(3, row => toBatch(row as unknown as BatchDbRow)!),
  {
    version: 4,
    name: 'events.idempotency_key',
    // Kept as long as the event: a producer's retry within the retained events is recognised.
    up: db => db.exec(`ALTER TABLE events ADD COLUMN idempotency_key TEXT;
      CREATE UNIQUE INDEX events_idempotency_key ON events(idempotency_key) WHERE idempotency_key IS NOT NULL`)
  }
]

function toEnvelope (row: EventRow): Envelope {
  return { id: row.id, type: row.type, payload: JSON.parse(row.payload), timestamp: row.timestamp } as Envelope
}

/**
 * The SQLite store: one better-sqlite3 connection in WAL mode with prepared
 * statements. Events are appended here and the batch, story and command
 * tables are projected from them in the same transaction.
 *
 * @example
 * const store = createStore(':memory:')
 * store.appendEvent('batch:start', { batch_id: 1, max_cycles: 2 }, JSON.stringify({ batch_id: 1, max_cycles: 2 }), Date.now())
 * store.getActiveBatch() // { id: 1, status: 'running', ... }
 * store.close()
 */
export function createStore (dbPath: string) {
  const db = new Database(dbPath)
  db.pragma('journal_mode = WAL')
  // NORMAL in WAL mode: a power loss can drop the last commits, a process crash cannot. See docs/durability.md.
  db.pragma('synchronous = NORMAL')
  db.pragma('busy_timeout = 5000')
  const migration = migrate(db, migrations)
  const history = createHistory(db, row => toBatch(row as unknown as BatchDbRow)!)

  const statements = {
    insertEvent: db.prepare<[number, string, string, number, number | null, string | null]>(
      'INSERT INTO events (id, type, payload, timestamp, batch_id, idempotency_key) VALUES (?, ?, ?, ?, ?, ?)'),
    eventByKey: db.prepare<[string], EventRow>('SELECT id, type, payload, timestamp FROM events WHERE idempotency_key = ?'),
    recentEvents: db.prepare<[number], EventRow>(
      'SELECT id, type, payload, timestamp FROM (SELECT id, type, payload, timestamp FROM events ORDER BY id DESC LIMIT ?) ORDER BY id ASC'),
    eventsAfter: db.prepare<[number, number], EventRow>(
      'SELECT id, type, payload, timestamp FROM events WHERE id > ? ORDER BY id ASC LIMIT ?'),
    lastEventId: db.prepare<[], { id: number | null }>('SELECT max(id) AS id FROM events'),
    lastAssignedId: db.prepare<[], { seq: number }>("SELECT seq FROM sqlite_sequence WHERE name = 'events'"),
    raiseAssignedId: db.prepare<[number]>("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'events'"),
    insertAssignedId: db.prepare<[number]>("INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)"),
    oldestEventId: db.prepare<[], { id: number | null }>('SELECT min(id) AS id FROM events'),
    countEvents: db.prepare<[], { n: number }>('SELECT count(*) AS n FROM events'),
    deleteEventsUpTo: db.prepare<[number]>('DELETE FROM events WHERE id <= ?'),
    activeBatch: db.prepare<[], BatchDbRow>(
      "SELECT * FROM batches WHERE status = 'running' ORDER BY started_at DESC, id DESC LIMIT 1"),
    batchById: db.prepare<[number], BatchDbRow>('SELECT * FROM batches WHERE id = ?'),
    listBatches: db.prepare<[number], BatchDbRow>('SELECT * FROM batches ORDER BY started_at DESC, id DESC LIMIT ?'),
    lastCycleEvent: db.prepare<[number], { type: string, payload: string }>(
      "SELECT type, payload FROM events WHERE batch_id = ? AND type IN ('cycle:start', 'cycle:end') ORDER BY id DESC LIMIT 1"),
    stopOtherBatches: db.prepare<[number, number]>(
      "UPDATE batches SET status = 'stopped', ended_at = ? WHERE status = 'running' AND id != ?"),
    startBatch: db.prepare<[number, number, number | null, string | null]>(
      `INSERT INTO batches (id, started_at, max_cycles, cycles_completed, status, batch_mode) VALUES (?, ?, ?, 0, 'running', ?)
       ON CONFLICT(id) DO UPDATE SET status = 'running', ended_at = NULL, max_cycles = excluded.max_cycles, batch_mode = excluded.batch_mode`),
    advanceCycles: db.prepare<[number, number]>(
      'UPDATE batches SET cycles_completed = max(cycles_completed, ?) WHERE id = ?'),
    // A batch:end without cycles_completed (the sprint runner's stop) keeps the count the batch reached.
    endBatch: db.prepare<{ id: number, at: number, cycles: number | null, status: string }>(
      `INSERT INTO batches (id, started_at, ended_at, max_cycles, cycles_completed, status) VALUES (@id, @at, @at, NULL, coalesce(@cycles, 0), @status)
       ON CONFLICT(id) DO UPDATE SET status = excluded.status, ended_at = excluded.ended_at,
         cycles_completed = coalesce(@cycles, batches.cycles_completed)`),
    upsertStory: db.prepare<[string, string | null, string, number]>(
      `INSERT INTO stories (key, epic, status, updated_at) VALUES (?, ?, ?, ?)
       ON CONFLICT(key) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at, epic = coalesce(excluded.epic, stories.epic)`),
    getStory: db.prepare<[string], StoryRow>('SELECT * FROM stories WHERE key = ?'),
    listStories: db.prepare<[], StoryRow>('SELECT * FROM stories ORDER BY key'),
    startCommand: db.prepare<[string, string, string, number]>(
      "INSERT INTO commands (story_key, command, task_id, status, started_at) VALUES (?, ?, ?, 'running', ?)"),
    endCommand: db.prepare<[string, number, string | null, string, string, string]>(
      `UPDATE commands SET status = ?, ended_at = ?, metrics = ?
       WHERE id = (SELECT id FROM commands WHERE story_key = ? AND command = ? AND task_id = ? AND ended_at IS NULL ORDER BY id DESC LIMIT 1)`),
    listCommands: db.prepare<[string], Omit<CommandRow, 'metrics'> & { metrics: string | null }>(
      'SELECT * FROM commands WHERE story_key = ? ORDER BY id'),
    insertTask: db.prepare<[number | null, string, string, number, string | null]>(
      'INSERT INTO background_tasks (batch_id, task_type, status, started_at, details) VALUES (?, ?, ?, ?, ?)'),
    updateTask: db.prepare<[string, number | null, string | null, number]>(
      'UPDATE background_tasks SET status = ?, ended_at = ?, details = coalesce(?, details) WHERE id = ?'),
    listTasks: db.prepare<[], BackgroundTaskRow>('SELECT * FROM background_tasks ORDER BY id')
  }

  // The batch every new event is filed under; cached because it changes only on batch events.
  let activeBatchId: number | null = statements.activeBatch.get()?.id ?? null

  /**
   * The highest id this store has handed out, committed or not. A failed commit rolls back
   * AUTOINCREMENT's counter with the rows, so SQLite would give the same ids again; ids are assigned
   * here instead, above every id ever handed out, so that an id is never reused, even by a later event
   * after a rolled-back one (ids then skip numbers; they are only ever increasing).
   */
  let lastIssuedId = statements.lastAssignedId.get()?.seq ?? statements.lastEventId.get()?.id ?? 0

  /** Keeps the batch/story/command tables in step with the event just appended. */
  function project (type: EventTypeName, payload: unknown, timestamp: number): void {
    switch (type) {
      case EventType.BATCH_START: {
        const p = payload as EventPayload<'batch:start'>
        statements.stopOtherBatches.run(timestamp, p.batch_id)
        // null (the sprint runner's "all" mode) and 'all' both mean no cycle limit, and so does mode
        // "all": the sprint runner then runs until no story is left, whatever max_cycles says.
        const maxCycles = p.max_cycles === 'all' || p.max_cycles === null || p.batch_mode === 'all' ? null : p.max_cycles
        statements.startBatch.run(p.batch_id, timestamp, maxCycles, p.batch_mode ?? null)
        activeBatchId = p.batch_id
        break
      }
      case EventType.CYCLE_END: {
        const p = payload as EventPayload<'cycle:end'>
        if (activeBatchId !== null) statements.advanceCycles.run(p.cycle_number, activeBatchId)
        break
      }
      case EventType.BATCH_END: {
        const p = payload as EventPayload<'batch:end'>
        statements.endBatch.run({ id: p.batch_id, at: timestamp, cycles: p.cycles_completed ?? null, status: p.status })
        if (activeBatchId === p.batch_id) activeBatchId = statements.activeBatch.get()?.id ?? null
        break
      }
      case EventType.STORY_STATUS: {
        const p = payload as EventPayload<'story:status'>
        statements.upsertStory.run(p.story_key, null, p.new_status, timestamp)
        break
      }
      case EventType.COMMAND_START: {
        const p = payload as EventPayload<'command:start'>
        statements.startCommand.run(p.story_key, p.command, p.task_id, timestamp)
        break
      }
      case EventType.COMMAND_END: {
        const p = payload as EventPayload<'command:end'>
        statements.endCommand.run(p.status, timestamp, p.metrics === undefined ? null : JSON.stringify(p.metrics),
          p.story_key, p.command, p.task_id)
        break
      }
    }
  }

  function appendOne (type: EventTypeName, payload: unknown, payloadJson: string, timestamp: number, givenId?: number, idempotencyKey?: string): EventRow {
    // A batch:start belongs to the batch it opens, not to the one it replaces.
    const batchId = type === EventType.BATCH_START ? (payload as EventPayload<'batch:start'>).batch_id : activeBatchId
    const id = givenId ?? ++lastIssuedId
    if (id > lastIssuedId) lastIssuedId = id
    statements.insertEvent.run(id, type, payloadJson, timestamp, batchId, idempotencyKey ?? null)
    project(type, payload, timestamp)
    history.record(type, payload, timestamp, batchId)
    return { id, type, payload: payloadJson, timestamp }
  }

  const appendMany = db.transaction((events: readonly EventToAppend[], timestamp: number, markConflicts: boolean) => {
    // Keys stored by this very call count too: a retry can share a group commit with the first attempt.
    const stored = new Map<string, EventRow>()
    return events.map((e): EventRow => {
      const key = e.idempotencyKey
      if (key === undefined) return appendOne(e.type, e.payload, e.payloadJson, e.timestamp ?? timestamp)
      const prior = stored.get(key) ?? statements.eventByKey.get(key)
      if (prior !== undefined) {
        // A retry sends the same event; the same key on another one is the producer's mistake, not a retry.
        if (prior.type === e.type && prior.payload === e.payloadJson) {
          return { id: prior.id, type: prior.type, payload: prior.payload, timestamp: prior.timestamp, duplicate: true }
        }
        if (!markConflicts) throw new IdempotencyConflictError(key, prior.id)
        return { id: prior.id, type: prior.type, payload: prior.payload, timestamp: prior.timestamp, duplicate: true, conflict: true }
      }
      const row = appendOne(e.type, e.payload, e.payloadJson, e.timestamp ?? timestamp, undefined, key)
      stored.set(key, row)
      return row
    })
  })

  const appendLogged = db.transaction((events: readonly LoggedEventToAppend[]) =>
    events.map(e => appendOne(e.type, e.payload, e.payloadJson, e.timestamp, e.id)))

  // Projection and append commit together or not at all.
  const appendInTransaction = db.transaction(appendOne)
  const projectedTypes = new Set<string>([EventType.BATCH_START, EventType.BATCH_END, EventType.CYCLE_END,
    EventType.STORY_STATUS, EventType.COMMAND_START, EventType.COMMAND_END])

  return {
    // Written as a type so the emitted .d.ts can name it: better-sqlite3's interface lives in a namespace it does not export.
    db: db as Database.Database,

    /** What opening the file migrated (`applied` is empty when it was current). */
    migration,

    /** Batch history: per-batch story runs and command runs, and the queries the history routes answer from. */
    history,

    /**
     * Appends one validated event and updates the projections; returns the stored row with its id.
     * The payload is passed both as the object (for projections) and as its JSON (stored and broadcast as is).
     */
    appendEvent (type: EventTypeName, payload: unknown, payloadJson: string, timestamp: number): EventRow {
      // A lone INSERT is already atomic; the explicit transaction is only needed when a projection writes too.
      return projectedTypes.has(type) || isRecorded(type)
        ? appendInTransaction(type, payload, payloadJson, timestamp)
        : appendOne(type, payload, payloadJson, timestamp)
    },

    /**
     * Appends validated events in one transaction: all are stored or none. Each is stamped with its own
     * `timestamp` (when the producer said it happened) or, without one, with `timestamp`. An event whose
     * `idempotencyKey` is already stored with the same type and payload is not stored again: its row is the
     * stored one, marked `duplicate`. A key stored for another event throws `SPRINT_IDEMPOTENCY_CONFLICT`
     * (nothing stored) or, with `markConflicts` (a group of independent events), comes back marked `conflict`.
     */
    appendEvents (events: readonly EventToAppend[], timestamp: number, options: { markConflicts?: boolean } = {}): EventRow[] {
      return appendMany(events, timestamp, options.markConflicts === true)
    },

    /**
     * Scale-out: applies events read from the Redis stream under the ids the stream gave them, in one
     * transaction with their projections. Ids must be above every id stored; they may skip (a new epoch).
     */
    appendLoggedEvents (events: readonly LoggedEventToAppend[]): EventRow[] {
      return appendLogged(events)
    },

    /**
     * Scale-out: counts the ids up to `id` as given, without events, so that `getLastEventId` says `id`
     * (a log that starts again above a gap: no `since` from before it is taken as resumable).
     */
    skipIdsTo (id: number): void {
      if (id <= (statements.lastAssignedId.get()?.seq ?? statements.lastEventId.get()?.id ?? 0)) return
      if (statements.raiseAssignedId.run(id).changes === 0) statements.insertAssignedId.run(id)
      lastIssuedId = Math.max(lastIssuedId, id)
    },

    /** The running batch, or null. */
    getActiveBatch (): Batch | null {
      return activeBatchId === null ? null : toBatch(statements.batchById.get(activeBatchId))
    },

    getBatch (id: number): Batch | null {
      return toBatch(statements.batchById.get(id))
    },

    listBatches (limit = 50): Batch[] {
      return statements.listBatches.all(limit).map(row => toBatch(row)!)
    },

    /**
     * The stories of the batch's cycle in progress: those of its last `cycle:start`, or none when its
     * last cycle event is a `cycle:end` (between cycles) or it has none yet.
     */
    getCurrentCycleStories (batchId: number): string[] {
      const row = statements.lastCycleEvent.get(batchId)
      if (row === undefined || row.type !== EventType.CYCLE_START) return []
      return (JSON.parse(row.payload) as EventPayload<'cycle:start'>).story_keys
    },

    /** The last `limit` events, oldest first. */
    getRecentEvents (limit: number): Envelope[] {
      return statements.recentEvents.all(limit).map(toEnvelope)
    },

    /** The last `limit` events as stored rows, oldest first. */
    getRecentEventRows (limit: number): EventRow[] {
      return statements.recentEvents.all(limit)
    },

    /** Up to `limit` events with an id greater than `id`, oldest first. */
    getEventRowsAfter (id: number, limit: number): EventRow[] {
      return statements.eventsAfter.all(id, limit)
    },

    getEventsAfter (id: number, limit: number): Envelope[] {
      return statements.eventsAfter.all(id, limit).map(toEnvelope)
    },

    /**
     * The highest id ever given out, 0 when none was. Read from AUTOINCREMENT's
     * counter rather than max(id) so that it never goes back after pruning.
     */
    getLastEventId (): number {
      return statements.lastAssignedId.get()?.seq ?? statements.lastEventId.get()?.id ?? 0
    },

    /** The smallest id still stored, or null when the table is empty. */
    getOldestEventId (): number | null {
      return statements.oldestEventId.get()?.id ?? null
    },

    countEvents (): number {
      return statements.countEvents.get()?.n ?? 0
    },

    /** Deletes events with an id up to and including `id`; returns how many went. */
    deleteEventsUpTo (id: number): number {
      return statements.deleteEventsUpTo.run(id).changes
    },

    upsertStory (key: string, status: string, epic: string | null = null): void {
      statements.upsertStory.run(key, epic, status, Date.now())
    },

    getStory (key: string): StoryRow | null {
      return statements.getStory.get(key) ?? null
    },

    listStories (): StoryRow[] {
      return statements.listStories.all()
    },

    listCommands (storyKey: string): CommandRow[] {
      return statements.listCommands.all(storyKey).map(row => ({
        ...row,
        metrics: row.metrics === null ? null : JSON.parse(row.metrics) as CommandMetrics
      }))
    },

    createBackgroundTask (taskType: string, details: string | null = null, status = 'running'): number {
      return Number(statements.insertTask.run(activeBatchId, taskType, status, Date.now(), details).lastInsertRowid)
    },

    updateBackgroundTask (id: number, status: string, details: string | null = null): void {
      const ended = status === 'running' ? null : Date.now()
      statements.updateTask.run(status, ended, details, id)
    },

    listBackgroundTasks (): BackgroundTaskRow[] {
      return statements.listTasks.all()
    },

    close (): void {
      if (!db.open) return
      if (db.inTransaction) db.exec('COMMIT')
      db.close()
    }
  }
}

/** The store's API, as decorated on Fastify as `sprintStore`. */
export type SprintStore = ReturnType<typeof createStore>
