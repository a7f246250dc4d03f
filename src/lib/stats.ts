/**
 * The service's own running totals, kept as plain numbers so that counting on the hot path (a write
 * to every client) costs an addition and nothing else. They are counted whether or not `GET /metrics`
 * is on; src/lib/metrics.ts reads them when Prometheus scrapes.
 */

/** Upper bounds (seconds) of the commit-time buckets: a commit on a fast disk takes well under a millisecond, a stalled one seconds. */
export const COMMIT_SECONDS_BUCKETS: readonly number[] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]

/** A histogram in plain numbers: how many observations fell in each bucket (not cumulative), their count and sum. */
export interface DurationHistogram {
  /** `buckets[i]` counts observations at most `COMMIT_SECONDS_BUCKETS[i]` and above the bound before; the last slot those above every bound. */
  buckets: number[]
  count: number
  sumSeconds: number
}

/** What the WebSocket fan-out counts (src/lib/fan-out.ts). */
export interface FanOutStats {
  /** Events written to client sockets, counted once per client: one event sent to 10 clients is 10. */
  eventsDelivered: number
  /** WebSocket frames the fan-out wrote: one per event to plain clients, one per write to batched ones, one per notice. */
  framesWritten: number
  /** Clients closed with 1013 because their unsent bytes passed `maxBufferedBytes`. */
  slowConsumerCloses: number
}

export interface SprintStats extends FanOutStats {
  /** Events stored and published (after their commit). */
  eventsEmitted: number
  /** Connections with `since` that were replayed what they missed. */
  resumeReplays: number
  /** Connections with `since` that got `reset: true` (too far behind, pruned, another database, or a bad `since`). */
  resumeResets: number
  /** `POST /api/events` requests refused, by error code (`SPRINT_INVALID_EVENT`, `FST_ERR_CTP_BODY_TOO_LARGE`, ...). */
  ingestRejections: Map<string, number>
  /** Time to make events durable: a turn's COMMIT, or the whole transaction of an `emitMany`. */
  commitTime: DurationHistogram
}

/** Fresh totals, all zero. */
export function createStats (): SprintStats {
  return {
    eventsEmitted: 0,
    eventsDelivered: 0,
    framesWritten: 0,
    slowConsumerCloses: 0,
    resumeReplays: 0,
    resumeResets: 0,
    ingestRejections: new Map(),
    commitTime: { buckets: new Array<number>(COMMIT_SECONDS_BUCKETS.length + 1).fill(0), count: 0, sumSeconds: 0 }
  }
}

/** Adds one commit's duration to `stats.commitTime`. */
export function recordCommit (stats: SprintStats, seconds: number): void {
  const histogram = stats.commitTime
  let index = 0
  while (index < COMMIT_SECONDS_BUCKETS.length && seconds > COMMIT_SECONDS_BUCKETS[index]!) index++
  histogram.buckets[index]!++
  histogram.count++
  histogram.sumSeconds += seconds
}

/** Counts one refused ingest request under its error code (`UNKNOWN` for an error without one). */
export function recordIngestRejection (stats: SprintStats, code: string | undefined): void {
  const key = code === undefined || code === '' ? 'UNKNOWN' : code
  stats.ingestRejections.set(key, (stats.ingestRejections.get(key) ?? 0) + 1)
}
