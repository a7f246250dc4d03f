import { Type, type Static } from '@sinclair/typebox'
import { BatchSchema, EnvelopeSchema } from '../events/schemas.ts'

/**
 * The shapes of batch history as the routes send them and the dashboard reads them. Pure TypeBox
 * (no SQLite), so the page's JSDoc types can import it. Times are integer ms since the epoch, like
 * envelope timestamps; `duration_ms` is `ended_at - started_at`, null while something still runs.
 */

const Nullable = <T extends ReturnType<typeof Type.Integer>>(schema: T) => Type.Union([schema, Type.Null()])
const Ms = Type.Integer({ description: 'ms since the epoch' })
const Count = Type.Integer({ minimum: 0 })

/** Tokens and dollars, summed over command runs; see `tokenCounts` in history.ts for what counts where. */
const Usage = {
  tokens_in: Type.Integer({ minimum: 0, description: 'input tokens, cache reads and writes included' }),
  tokens_out: Type.Integer({ minimum: 0, description: 'output tokens' }),
  cost_usd: Type.Number({ minimum: 0, description: 'sum of metrics.total_cost_usd' })
}

/** A batch row with what the history adds to it, as `GET /api/batches` lists it. */
export const BatchSummarySchema = Type.Composite([BatchSchema, Type.Object({
  story_count: Count,
  duration_ms: Nullable(Type.Integer()),
  ...Usage
})])
export type BatchSummary = Static<typeof BatchSummarySchema>

export const BatchListSchema = Type.Object({
  batches: Type.Array(BatchSummarySchema, { description: 'newest first' }),
  total: Count
})
export type BatchList = Static<typeof BatchListSchema>

/** One command run: a `command:start` and its `command:end`, in one batch, for one story. */
export const CommandRunSchema = Type.Object({
  command: Type.String(),
  task_id: Type.String(),
  status: Type.String({ description: '"running" until its command:end; "interrupted" when the batch ended first' }),
  failed: Type.Boolean({ description: 'its status is a failure (failed, error, ...)' }),
  started_at: Ms,
  ended_at: Nullable(Ms),
  duration_ms: Nullable(Type.Integer()),
  ...Usage,
  metrics: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()], { description: 'command:end metrics as sent' })
})
export type CommandRun = Static<typeof CommandRunSchema>

/** One story's run in one batch: a story worked on in two batches has a run in each. */
export const StoryRunSchema = Type.Object({
  story_key: Type.String(),
  epic: Type.String({ description: 'the key up to its first dash: 2a-1-foo → 2a' }),
  status: Type.String({ description: 'its last story:status in the batch; "in-progress" when none came' }),
  failed: Type.Boolean({ description: 'ended blocked, or its last command run failed' }),
  started_at: Ms,
  ended_at: Nullable(Ms),
  duration_ms: Nullable(Type.Integer()),
  ...Usage,
  commands: Type.Array(CommandRunSchema, { description: 'in the order they started' })
})
export type StoryRun = Static<typeof StoryRunSchema>

export const BatchStatsSchema = Type.Object({
  stories_done: Count,
  stories_failed: Count,
  stories_in_progress: Count,
  command_count: Count,
  duration_ms: Nullable(Type.Integer()),
  ...Usage
})
export type BatchStats = Static<typeof BatchStatsSchema>

export const BatchDetailSchema = Type.Object({
  batch: BatchSummarySchema,
  stories: Type.Array(StoryRunSchema, { description: 'in the order they started' }),
  stats: BatchStatsSchema,
  last_event_id: Type.Integer({ minimum: 0, description: 'the newest event this answer reflects; later events are not in it' })
})
export type BatchDetail = Static<typeof BatchDetailSchema>

export const BatchEventsSchema = Type.Object({
  events: Type.Array(EnvelopeSchema, { description: 'the batch\'s events in id order' }),
  next: Type.Union([Type.Integer(), Type.Null()], { description: 'pass as `after` for the next page; null on the last one' })
})
export type BatchEvents = Static<typeof BatchEventsSchema>
