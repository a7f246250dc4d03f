import type { Database } from 'better-sqlite3'
import { EventType, type Batch, type EventTypeName } from '../events/schemas.ts'
import type { Migration } from './migrations.ts'
import type { BatchDetail, BatchList, BatchStats, BatchSummary, CommandRun, StoryRun } from './history-schemas.ts'

/**
 * Batch history: per batch, each story's run and each command run, recorded from the events as
 * they are appended (in the append's transaction) and rebuilt from the stored events for batches
 * older than the tables. Everything here is keyed by batch, so reading one batch never scans another.
 */

export const historySchema = `
CREATE TABLE story_runs (
  id INTEGER PRIMARY KEY,
  batch_id INTEGER NOT NULL,
  story_key TEXT NOT NULL,
  epic TEXT NOT NULL,
  status TEXT NOT NULL,
  started_at INTEGER NOT NULL,
  ended_at INTEGER,
  -- Sums over the story's command runs, kept on each command:end so listing batches reads no command rows.
  tokens_in INTEGER NOT NULL DEFAULT 0,
  tokens_out INTEGER NOT NULL DEFAULT 0,
  cost_usd REAL NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX story_runs_batch ON story_runs(batch_id, story_key);
CREATE INDEX story_runs_open ON story_runs(batch_id) WHERE ended_at IS NULL;
CREATE TABLE command_runs (
  id INTEGER PRIMARY KEY,
  batch_id INTEGER NOT NULL,
  story_run_id INTEGER NOT NULL REFERENCES story_runs(id),
  command TEXT NOT NULL,
  task_id TEXT NOT NULL,
  status TEXT NOT NULL,
  started_at INTEGER NOT NULL,
  ended_at INTEGER,
  duration_ms INTEGER,
  tokens_in INTEGER NOT NULL DEFAULT 0,
  tokens_out INTEGER NOT NULL DEFAULT 0,
  cost_usd REAL NOT NULL DEFAULT 0,
  metrics TEXT
);
CREATE INDEX command_runs_batch ON command_runs(batch_id, id);
-- Only runs still waiting for their command:end: what an end or a batch's end looks up.
CREATE INDEX command_runs_open ON command_runs(story_run_id, command, task_id) WHERE ended_at IS NULL;
-- Newest first, for the listing's page.
CREATE INDEX IF NOT EXISTS batches_started ON batches(started_at, id);
`

/** Events read per step while rebuilding. */
const REPLAY_PAGE = 5000

/** The status a run gets when its batch ends before its command:end arrives. */
export const INTERRUPTED = 'interrupted'
/** A story's status until a story:status in the batch says otherwise. */
const DEFAULT_STORY_STATUS = 'in-progress'

/**
 * Command statuses that mean the run failed. The orchestrator sends free text (`success`, `failed`,
 * `end`, `error`, ...); the dashboard's `isFailedStatus` (dashboard/timeline.js) is the same test.
 */
export function isFailedStatus (status: string): boolean {
  return /^(fail(ed|ure)?|errou?r(ed)?|crash(ed)?|timed?[-_ ]?out|abort(ed)?|killed)$/i.test(status.trim())
}

/** `2a-1-usage-metering` → `2a`: the epic is the key up to its first dash. */
export function epicOf (storyKey: string): string {
  const dash = storyKey.indexOf('-')
  return dash <= 0 ? storyKey : storyKey.slice(0, dash)
}

const count = (value: unknown): number => typeof value === 'number' && Number.isFinite(value) && value > 0 ? value : 0

/**
 * Tokens and cost of one command run from its `command:end` metrics. Input counts `input_tokens`
 * plus the cache writes and reads (`cache_creation_input_tokens`, `cache_read_input_tokens`), output
 * counts `output_tokens`. A run that reports only a `tokens` total counts it as input (minus any
 * `output_tokens` it did report); cost is `total_cost_usd`.
 *
 * @example
 * tokenCounts({ input_tokens: 38, cache_read_input_tokens: 1000, output_tokens: 12, total_cost_usd: 0.01 })
 * // → { tokensIn: 1038, tokensOut: 12, costUsd: 0.01 }
 */
export function tokenCounts (metrics: Record<string, unknown> | null | undefined): { tokensIn: number, tokensOut: number, costUsd: number } {
  if (metrics === null || metrics === undefined) return { tokensIn: 0, tokensOut: 0, costUsd: 0 }
  const split = ['input_tokens', 'cache_creation_input_tokens', 'cache_read_input_tokens'].filter(key => typeof metrics[key] === 'number')
  const tokensOut = Math.round(count(metrics.output_tokens))
  const tokensIn = split.length > 0
    ? Math.round(split.reduce((sum, key) => sum + count(metrics[key]), 0))
    : Math.max(0, Math.round(count(metrics.tokens)) - tokensOut)
  return { tokensIn, tokensOut, costUsd: count(metrics.total_cost_usd) }
}

/** Dollars summed from floats: rounded to a millionth so 0.1 + 0.2 reads 0.3. */
const dollars = (value: number): number => Math.round(value * 1e6) / 1e6

interface StoryRunRow {
  id: number
  story_key: string
  epic: string
  status: string
  started_at: number
  ended_at: number | null
  tokens_in: number
  tokens_out: number
  cost_usd: number
}

/** story_run_id, command, task_id, status, started_at, ended_at, duration_ms, tokens_in, tokens_out, cost_usd, metrics */
type CommandRunTuple = [number, string, string, string, number, number | null, number | null, number, number, number, string | null]

/** A command run with its story, as the CSV export lists them. */
export interface CommandRunExport extends Omit<CommandRun, 'metrics' | 'failed'> {
  story_key: string
  epic: string
}

/** A batch row as the store reads it from SQLite; `toBatch` turns it into the wire shape. */
type BatchDbRow = Record<string, unknown> & { id: number, started_at: number, ended_at: number | null }

interface SummaryDbRow {
  h_story_count: number
  h_tokens_in: number
  h_tokens_out: number
  h_cost_usd: number
}

/** Payload fields the recorder reads; the events were validated before they got here. */
interface RecordedPayload {
  batch_id?: number
  story_key?: string
  story_keys?: string[]
  command?: string
  task_id?: string
  status?: string
  new_status?: string
  metrics?: Record<string, unknown>
}

const recordedTypes = new Set<string>([EventType.BATCH_START, EventType.BATCH_END, EventType.CYCLE_START,
  EventType.COMMAND_START, EventType.COMMAND_END, EventType.STORY_STATUS])

/** Whether `record` does anything for an event of this type. */
export function isRecorded (type: string): boolean {
  return recordedTypes.has(type)
}

/**
 * The recorder and the queries over the history tables, on an open connection whose schema is
 * current. `toBatch` is the store's own reading of a `batches` row, so the history never has its
 * own idea of what a batch row holds.
 *
 * @example
 * const history = createHistory(db, toBatch)
 * history.record('command:start', { story_key: '2a-1', command: 'dev-story', task_id: 'implement' }, Date.now(), 7)
 * history.getBatchDetail(7, lastEventId)?.stories[0]?.commands // [{ command: 'dev-story', status: 'running', ... }]
 */
export function createHistory (db: Database, toBatch: (row: BatchDbRow) => Batch) {
  const statements = {
    findStoryRun: db.prepare<[number, string], { id: number, status: string, ended_at: number | null }>(
      'SELECT id, status, ended_at FROM story_runs WHERE batch_id = ? AND story_key = ?'),
    insertStoryRun: db.prepare<[number, string, string, string, number]>(
      'INSERT INTO story_runs (batch_id, story_key, epic, status, started_at) VALUES (?, ?, ?, ?, ?)'),
    reopenStoryRun: db.prepare<[number]>('UPDATE story_runs SET ended_at = NULL WHERE id = ?'),
    setStoryStatus: db.prepare<[string, number | null, number]>('UPDATE story_runs SET status = ?, ended_at = ? WHERE id = ?'),
    addStoryUsage: db.prepare<[number, number, number, number]>(
      'UPDATE story_runs SET tokens_in = tokens_in + ?, tokens_out = tokens_out + ?, cost_usd = cost_usd + ? WHERE id = ?'),
    endStoryRunsOf: db.prepare<[number, number]>('UPDATE story_runs SET ended_at = ? WHERE batch_id = ? AND ended_at IS NULL'),
    insertCommandRun: db.prepare<[number, number, string, string, string, number]>(
      'INSERT INTO command_runs (batch_id, story_run_id, command, task_id, status, started_at) VALUES (?, ?, ?, ?, ?, ?)'),
    openCommandRun: db.prepare<[number, string, string], { id: number, started_at: number }>(
      `SELECT id, started_at FROM command_runs WHERE story_run_id = ? AND command = ? AND task_id = ? AND ended_at IS NULL
       ORDER BY id DESC LIMIT 1`),
    endCommandRun: db.prepare<[string, number, number, number, number, number, string | null, number]>(
      `UPDATE command_runs SET status = ?, ended_at = ?, duration_ms = ?, tokens_in = ?, tokens_out = ?, cost_usd = ?, metrics = ?
       WHERE id = ?`),
    interruptRunsOf: db.prepare<[string, number, number, number]>(
      'UPDATE command_runs SET status = ?, ended_at = ?, duration_ms = ? - started_at WHERE batch_id = ? AND ended_at IS NULL'),
    openBatchesExcept: db.prepare<[number, number], { batch_id: number }>(
      `SELECT batch_id FROM story_runs WHERE ended_at IS NULL AND batch_id != ?
       UNION SELECT batch_id FROM command_runs WHERE ended_at IS NULL AND batch_id != ?`),
    listPage: db.prepare<[number, number], BatchDbRow & SummaryDbRow>(
      `SELECT page.*, count(s.id) AS h_story_count, coalesce(sum(s.tokens_in), 0) AS h_tokens_in,
              coalesce(sum(s.tokens_out), 0) AS h_tokens_out, coalesce(sum(s.cost_usd), 0) AS h_cost_usd
       FROM (SELECT * FROM batches ORDER BY started_at DESC, id DESC LIMIT ? OFFSET ?) AS page
       LEFT JOIN story_runs s ON s.batch_id = page.id
       GROUP BY page.id
       ORDER BY page.started_at DESC, page.id DESC`),
    countBatches: db.prepare<[], { n: number }>('SELECT count(*) AS n FROM batches'),
    batchSummary: db.prepare<[number], BatchDbRow & SummaryDbRow>(
      `SELECT b.*, count(s.id) AS h_story_count, coalesce(sum(s.tokens_in), 0) AS h_tokens_in,
              coalesce(sum(s.tokens_out), 0) AS h_tokens_out, coalesce(sum(s.cost_usd), 0) AS h_cost_usd
       FROM batches b LEFT JOIN story_runs s ON s.batch_id = b.id
       WHERE b.id = ? GROUP BY b.id`),
    storyRunsOf: db.prepare<[number], StoryRunRow>(
      `SELECT id, story_key, epic, status, started_at, ended_at, tokens_in, tokens_out, cost_usd
       FROM story_runs WHERE batch_id = ? ORDER BY started_at, id`),
    // Raw rows (arrays): for a batch of 2,000 runs, building them as objects cost more than the query.
    commandRunsOf: db.prepare<[number], CommandRunTuple>(
      `SELECT story_run_id, command, task_id, status, started_at, ended_at, duration_ms, tokens_in, tokens_out, cost_usd, metrics
       FROM command_runs WHERE batch_id = ? ORDER BY id`).raw(),
    exportRunsOf: db.prepare<[number], CommandRunExport>(
      `SELECT s.story_key, s.epic, c.command, c.task_id, c.status, c.started_at, c.ended_at, c.duration_ms,
              c.tokens_in, c.tokens_out, c.cost_usd
       FROM command_runs c JOIN story_runs s ON s.id = c.story_run_id
       WHERE c.batch_id = ? ORDER BY c.started_at, c.id`),
    batchEvents: db.prepare<[number, number, number], { id: number, type: string, payload: string, timestamp: number }>(
      'SELECT id, type, payload, timestamp FROM events WHERE batch_id = ? AND id > ? ORDER BY id LIMIT ?'),
    replayable: db.prepare<[number, number], { id: number, type: string, payload: string, timestamp: number, batch_id: number }>(
      `SELECT id, type, payload, timestamp, batch_id FROM events
       WHERE id > ? AND batch_id IS NOT NULL AND type IN ('batch:start', 'batch:end', 'cycle:start', 'command:start', 'command:end', 'story:status')
       ORDER BY id LIMIT ?`)
  }

  /** The story's run in the batch, started now if it has none; a run that ended unfinished is reopened. */
  function storyRun (batchId: number, storyKey: string, timestamp: number): number {
    const found = statements.findStoryRun.get(batchId, storyKey)
    if (found === undefined) {
      return Number(statements.insertStoryRun.run(batchId, storyKey, epicOf(storyKey), DEFAULT_STORY_STATUS, timestamp).lastInsertRowid)
    }
    // Work on it again after its batch was ended and restarted: it is running once more, unless it was finished for good.
    if (found.ended_at !== null && found.status !== 'done' && found.status !== 'blocked') statements.reopenStoryRun.run(found.id)
    return found.id
  }

  /** Closes what is still open in a batch: its command runs as interrupted, its story runs at `timestamp`. */
  function endBatch (batchId: number, timestamp: number): void {
    statements.interruptRunsOf.run(INTERRUPTED, timestamp, timestamp, batchId)
    statements.endStoryRunsOf.run(timestamp, batchId)
  }

  function endCommand (payload: RecordedPayload, timestamp: number, batchId: number): void {
    const storyRunId = storyRun(batchId, payload.story_key!, timestamp)
    const open = statements.openCommandRun.get(storyRunId, payload.command!, payload.task_id!)
    // An end without its start (a log that only reports ends, a start from before the batch) still
    // counts, as a run of no length, so its tokens and cost are not lost.
    const runId = open?.id ?? Number(statements.insertCommandRun.run(batchId, storyRunId, payload.command!, payload.task_id!, 'running', timestamp).lastInsertRowid)
    const startedAt = open?.started_at ?? timestamp
    const metrics = payload.metrics ?? null
    const usage = tokenCounts(metrics)
    statements.endCommandRun.run(payload.status!, timestamp, timestamp - startedAt, usage.tokensIn, usage.tokensOut, usage.costUsd,
      metrics === null ? null : JSON.stringify(metrics), runId)
    if (usage.tokensIn > 0 || usage.tokensOut > 0 || usage.costUsd > 0) {
      statements.addStoryUsage.run(usage.tokensIn, usage.tokensOut, usage.costUsd, storyRunId)
    }
  }

  /**
   * Records one appended event. `batchId` is the batch the store filed the event under (the one
   * a batch:start opens, else the running one); events outside any batch are not history.
   */
  function record (type: EventTypeName | string, payload: unknown, timestamp: number, batchId: number | null): void {
    if (batchId === null) return
    const p = payload as RecordedPayload
    switch (type) {
      case EventType.BATCH_START:
        // The store stops every other running batch here; their runs stop with them.
        for (const { batch_id: other } of statements.openBatchesExcept.all(p.batch_id!, p.batch_id!)) endBatch(other, timestamp)
        break
      case EventType.BATCH_END:
        endBatch(p.batch_id!, timestamp)
        break
      case EventType.CYCLE_START:
        for (const key of p.story_keys ?? []) storyRun(batchId, key, timestamp)
        break
      case EventType.COMMAND_START:
        statements.insertCommandRun.run(batchId, storyRun(batchId, p.story_key!, timestamp), p.command!, p.task_id!, 'running', timestamp)
        break
      case EventType.COMMAND_END:
        endCommand(p, timestamp, batchId)
        break
      case EventType.STORY_STATUS: {
        // A status change of a story that has not started in this batch (the sprint file edited by hand) is not a run.
        const found = statements.findStoryRun.get(batchId, p.story_key!)
        if (found === undefined) break
        const finished = p.new_status === 'done' || p.new_status === 'blocked'
        statements.setStoryStatus.run(p.new_status!, finished ? (found.ended_at ?? timestamp) : null, found.id)
        break
      }
    }
  }

  function summary (row: BatchDbRow & SummaryDbRow): BatchSummary {
    const { h_story_count: storyCount, h_tokens_in: tokensIn, h_tokens_out: tokensOut, h_cost_usd: costUsd, ...batchRow } = row
    return {
      ...toBatch(batchRow as BatchDbRow),
      story_count: storyCount,
      duration_ms: row.ended_at === null ? null : row.ended_at - row.started_at,
      tokens_in: tokensIn,
      tokens_out: tokensOut,
      cost_usd: dollars(costUsd)
    }
  }

  const rebuildInTransaction = db.transaction((): number => {
    db.exec('DELETE FROM command_runs; DELETE FROM story_runs')
    let replayed = 0
    let after = 0
    // In pages rather than with iterate(): the connection cannot write while a statement is being read.
    for (let page = statements.replayable.all(after, REPLAY_PAGE); page.length > 0; page = statements.replayable.all(after, REPLAY_PAGE)) {
      for (const row of page) record(row.type, JSON.parse(row.payload), row.timestamp, row.batch_id)
      replayed += page.length
      after = page.at(-1)!.id
    }
    return replayed
  })

  return {
    record,

    /**
     * Rebuilds the history of every batch from the stored events, replacing what the tables held, in
     * one transaction (a savepoint when called inside one, as the migration that creates the tables
     * does for batches that predate them). Events
     * pruned before that are gone, so such a batch's history starts with its oldest kept event.
     */
    rebuildFromEvents (): number {
      return rebuildInTransaction()
    },

    /** One page of batches, newest first, with their totals. */
    listBatches (limit: number, offset: number): BatchList {
      return {
        batches: statements.listPage.all(limit, offset).map(summary),
        total: statements.countBatches.get()?.n ?? 0
      }
    },

    /**
     * A batch with its story runs, their command runs and the batch's stats; null for an unknown id.
     * `lastEventId` is the store's newest event id, returned so a live reader knows which events the
     * answer already holds.
     */
    getBatchDetail (id: number, lastEventId: number): BatchDetail | null {
      const row = statements.batchSummary.get(id)
      if (row === undefined) return null
      const batch = summary(row)
      const stories = new Map<number, StoryRun>()
      for (const run of statements.storyRunsOf.all(id)) {
        stories.set(run.id, {
          story_key: run.story_key,
          epic: run.epic,
          status: run.status,
          failed: run.status === 'blocked',
          started_at: run.started_at,
          ended_at: run.ended_at,
          duration_ms: run.ended_at === null ? null : run.ended_at - run.started_at,
          tokens_in: run.tokens_in,
          tokens_out: run.tokens_out,
          cost_usd: dollars(run.cost_usd),
          commands: []
        })
      }
      let commandCount = 0
      for (const [storyRunId, command, taskId, status, startedAt, endedAt, durationMs, tokensIn, tokensOut, costUsd, metrics] of statements.commandRunsOf.all(id)) {
        const story = stories.get(storyRunId)
        if (story === undefined) continue
        commandCount++
        story.commands.push({
          command,
          task_id: taskId,
          status,
          failed: isFailedStatus(status),
          started_at: startedAt,
          ended_at: endedAt,
          duration_ms: durationMs,
          tokens_in: tokensIn,
          tokens_out: tokensOut,
          cost_usd: dollars(costUsd),
          metrics: metrics === null ? null : JSON.parse(metrics) as Record<string, unknown>
        })
      }
      const stats: BatchStats = {
        stories_done: 0,
        stories_failed: 0,
        stories_in_progress: 0,
        command_count: commandCount,
        duration_ms: batch.duration_ms,
        tokens_in: batch.tokens_in,
        tokens_out: batch.tokens_out,
        cost_usd: batch.cost_usd
      }
      for (const story of stories.values()) {
        // Runs are in id order, which is start order; the last one started decides.
        const last = story.commands.reduce<CommandRun | undefined>((latest, run) =>
          latest === undefined || run.started_at >= latest.started_at ? run : latest, undefined)
        story.failed ||= last?.failed === true
        if (story.failed) stats.stories_failed++
        else if (story.status === 'done') stats.stories_done++
        else stats.stories_in_progress++
      }
      return { batch, stories: [...stories.values()], stats, last_event_id: lastEventId }
    },

    /** True when the batch exists (the routes answer 404 otherwise). */
    hasBatch (id: number): boolean {
      return statements.batchSummary.get(id) !== undefined
    },

    /** Up to `limit` of the batch's stored events with an id above `after`, and the cursor of the next page. */
    getBatchEvents (id: number, after: number, limit: number): { rows: Array<{ id: number, type: string, payload: string, timestamp: number }>, next: number | null } {
      // One more than asked tells whether another page exists without a count.
      const rows = statements.batchEvents.all(id, after, limit + 1)
      const more = rows.length > limit
      if (more) rows.length = limit
      return { rows, next: more ? rows.at(-1)!.id : null }
    },

    /** Every command run of a batch with its story, in start order, for the CSV export. */
    listCommandRuns (id: number): CommandRunExport[] {
      return statements.exportRunsOf.all(id).map(run => ({ ...run, cost_usd: dollars(run.cost_usd) }))
    }
  }
}

export type History = ReturnType<typeof createHistory>

/**
 * The migration that adds the history tables and fills them from the events already stored, so
 * batches run before the upgrade have their history too.
 */
export function historyMigration (version: number, toBatch: (row: BatchDbRow) => Batch): Migration {
  return {
    version,
    name: 'story_runs and command_runs, rebuilt from the stored events',
    up (db) {
      db.exec(historySchema)
      createHistory(db, toBatch).rebuildFromEvents()
    }
  }
}
