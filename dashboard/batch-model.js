// @ts-check
/**
 * One batch's story lanes and command runs, as the timeline draws them: loaded from
 * `GET /api/batches/:id` and then moved forward by live events, with the same rules the service
 * records them by (src/lib/history.ts), so a live timeline and the same batch reloaded agree.
 */

/** @typedef {import('./types.js').Envelope} Envelope */
/** @typedef {import('../src/lib/history-schemas.ts').BatchDetail} BatchDetail */

/**
 * @typedef {object} Run
 * @property {string} command
 * @property {string} task_id
 * @property {string} status
 * @property {boolean} failed
 * @property {number} started_at
 * @property {number | null} ended_at
 * @property {number} tokens_in
 * @property {number} tokens_out
 * @property {number} cost_usd
 */

/**
 * @typedef {object} Lane
 * @property {string} key story key
 * @property {string} status
 * @property {boolean} failed
 * @property {Run[]} runs in start order
 */

/** The status a run gets when its batch ends first; see INTERRUPTED in src/lib/history.ts. */
const INTERRUPTED = 'interrupted'

/**
 * Command statuses that mean failure; the same test as `isFailedStatus` in src/lib/history.ts.
 * @param {string} status
 */
export function isFailedStatus (status) {
  return /^(fail(ed|ure)?|errou?r(ed)?|crash(ed)?|timed?[-_ ]?out|abort(ed)?|killed)$/i.test(status.trim())
}

/** @param {unknown} value */
const count = (value) => typeof value === 'number' && Number.isFinite(value) && value > 0 ? value : 0

/**
 * Tokens and cost of a run from its metrics; the same split as `tokenCounts` in src/lib/history.ts.
 * @param {Record<string, unknown> | null | undefined} metrics
 */
export function tokenCounts (metrics) {
  if (!metrics) return { tokensIn: 0, tokensOut: 0, costUsd: 0 }
  const split = ['input_tokens', 'cache_creation_input_tokens', 'cache_read_input_tokens'].filter((key) => typeof metrics[key] === 'number')
  const tokensOut = Math.round(count(metrics.output_tokens))
  const tokensIn = split.length > 0
    ? Math.round(split.reduce((sum, key) => sum + count(metrics[key]), 0))
    : Math.max(0, Math.round(count(metrics.tokens)) - tokensOut)
  return { tokensIn, tokensOut, costUsd: count(metrics.total_cost_usd) }
}

/**
 * @param {{ id: number, started_at: number, ended_at: number | null, status: string }} batch
 */
export function createBatchModel (batch) {
  /** @type {Map<string, Lane>} */
  const lanes = new Map()
  const model = {
    batchId: batch.id,
    startedAt: batch.started_at,
    /** @type {number | null} */
    endedAt: batch.ended_at,
    status: batch.status,
    lanes,
    /** Bumped whenever a lane or a run is added: the timeline rebuilds its elements then, else only moves them. */
    version: 0,

    /** @param {string} key */
    lane (key) {
      let lane = lanes.get(key)
      if (!lane) {
        lane = { key, status: 'in-progress', failed: false, runs: [] }
        lanes.set(key, lane)
        model.version++
      }
      return lane
    },

    /**
     * Moves the model forward by one live event of this batch. Returns whether anything changed.
     * @param {Envelope} event
     */
    apply (event) {
      switch (event.type) {
        case 'batch:end': {
          if (event.payload.batch_id !== model.batchId) return false
          model.endedAt = event.timestamp
          model.status = event.payload.status
          for (const lane of lanes.values()) {
            for (const run of lane.runs) {
              if (run.ended_at === null) Object.assign(run, { ended_at: event.timestamp, status: INTERRUPTED })
            }
          }
          model.version++
          return true
        }
        case 'cycle:start':
          for (const key of event.payload.story_keys) model.lane(key)
          return true
        case 'command:start': {
          const lane = model.lane(event.payload.story_key)
          lane.runs.push({ command: event.payload.command, task_id: event.payload.task_id, status: 'running', failed: false, started_at: event.timestamp, ended_at: null, tokens_in: 0, tokens_out: 0, cost_usd: 0 })
          model.version++
          return true
        }
        case 'command:end': {
          const p = event.payload
          const lane = model.lane(p.story_key)
          let run = [...lane.runs].reverse().find((r) => r.ended_at === null && r.command === p.command && r.task_id === p.task_id)
          if (!run) {
            // An end without its start is a run of no length, as the service records it.
            run = { command: p.command, task_id: p.task_id, status: 'running', failed: false, started_at: event.timestamp, ended_at: null, tokens_in: 0, tokens_out: 0, cost_usd: 0 }
            lane.runs.push(run)
            model.version++
          }
          const usage = tokenCounts(/** @type {Record<string, unknown> | undefined} */ (p.metrics))
          Object.assign(run, { status: p.status, failed: isFailedStatus(p.status), ended_at: event.timestamp, tokens_in: usage.tokensIn, tokens_out: usage.tokensOut, cost_usd: usage.costUsd })
          updateFailed(lane)
          return true
        }
        case 'story:status': {
          const lane = lanes.get(event.payload.story_key)
          if (!lane) return false
          lane.status = event.payload.new_status
          updateFailed(lane)
          return true
        }
        default:
          return false
      }
    }
  }
  return model
}

/** @typedef {ReturnType<typeof createBatchModel>} BatchModel */

/** @param {Lane} lane */
function updateFailed (lane) {
  const last = lane.runs.reduce((/** @type {Run | undefined} */ latest, run) => !latest || run.started_at >= latest.started_at ? run : latest, undefined)
  lane.failed = lane.status === 'blocked' || last?.failed === true
}

/**
 * The model of a batch as the service returned it.
 * @param {BatchDetail} detail
 */
export function modelFromDetail (detail) {
  const model = createBatchModel(detail.batch)
  for (const story of detail.stories) {
    const lane = model.lane(story.story_key)
    lane.status = story.status
    lane.failed = story.failed
    lane.runs = story.commands.map((run) => ({
      command: run.command,
      task_id: run.task_id,
      status: run.status,
      failed: run.failed,
      started_at: run.started_at,
      ended_at: run.ended_at,
      tokens_in: run.tokens_in,
      tokens_out: run.tokens_out,
      cost_usd: run.cost_usd
    }))
  }
  return model
}
