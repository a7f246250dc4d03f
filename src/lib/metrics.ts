import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import { COMMIT_SECONDS_BUCKETS, type DurationHistogram, type SprintStats } from './stats.ts'
import type { BrokerStatus } from './log-sync.ts'

/** What the metrics read from the broadcaster (`app.events`); every read happens at scrape time. */
export interface MetricsSource {
  readonly stats: SprintStats
  readonly clientsByKind: { plain: number, batched: number }
  readonly lastEventId: number
}

/**
 * `source.broker` when it has the shape of a `BrokerStatus`, else undefined: without a broker (SQLite
 * alone) the broadcaster has no such member, and the metrics must not assume one.
 */
export function readBrokerStatus (source: object): BrokerStatus | undefined {
  const broker: unknown = (source as { broker?: unknown }).broker
  if (typeof broker !== 'object' || broker === null) return undefined
  const { state, readerLag } = broker as { state?: unknown, readerLag?: unknown }
  if (state !== 'up' && state !== 'down') return undefined
  return { state, readerLag: typeof readerLag === 'number' && Number.isFinite(readerLag) ? readerLag : 0 }
}

/**
 * The Node process metrics (CPU, memory, event-loop lag, GC, handles), one registry for the whole
 * process: they describe the process, not an app, and prom-client refuses to register them twice in one
 * registry, so several apps in one process share this one and merge it into their own at build time.
 */
let processRegistry: Registry | undefined
function getProcessRegistry (): Registry {
  if (processRegistry === undefined) {
    processRegistry = new Registry()
    collectDefaultMetrics({ register: processRegistry })
  }
  return processRegistry
}

/**
 * A Prometheus histogram whose buckets, count and sum are read from a `DurationHistogram` kept in plain
 * numbers (src/lib/stats.ts), so observing costs the service no prom-client call. prom-client has no
 * public way to set a histogram's values; it builds both its text and its JSON output from
 * `getForPromString`, so that is the one method replaced (test/lib/metrics.test.ts checks both outputs).
 */
class CountedHistogram extends Histogram {
  readonly #name: string
  readonly #help: string
  readonly #source: DurationHistogram

  constructor (name: string, help: string, source: DurationHistogram) {
    super({ name, help, buckets: [...COMMIT_SECONDS_BUCKETS], registers: [] })
    this.#name = name
    this.#help = help
    this.#source = source
  }

  async getForPromString (): Promise<{ name: string, help: string, type: 'histogram', values: HistogramValue[], aggregator: 'sum' }> {
    const { buckets, count, sumSeconds } = this.#source
    const bucketName = `${this.#name}_bucket`
    const values: HistogramValue[] = []
    let cumulative = 0
    COMMIT_SECONDS_BUCKETS.forEach((bound, index) => {
      cumulative += buckets[index]!
      values.push({ labels: { le: bound }, sharedLabels: {}, value: cumulative, metricName: bucketName })
    })
    values.push(
      { labels: { le: '+Inf' }, sharedLabels: {}, value: count, metricName: bucketName },
      { labels: {}, sharedLabels: {}, value: sumSeconds, metricName: `${this.#name}_sum` },
      { labels: {}, sharedLabels: {}, value: count, metricName: `${this.#name}_count` }
    )
    return { name: this.#name, help: this.#help, type: 'histogram', values, aggregator: 'sum' }
  }
}

interface HistogramValue {
  labels: Record<string, string | number>
  sharedLabels: Record<string, string | number>
  value: number
  metricName: string
}

/**
 * One app's registry: the service's own metrics (prefix `sprint_`), read from `source` at each scrape,
 * merged with the process-wide Node metrics. Every metric is listed in docs/metrics.md.
 *
 * @example
 * const registry = createMetricsRegistry(app.events)
 * reply.type(registry.contentType).send(await registry.metrics())
 */
export function createMetricsRegistry (source: MetricsSource): Registry {
  const registry = new Registry()
  const registers = [registry]
  const { stats } = source

  /** A counter whose value is one of the service's running totals. */
  const total = (name: string, help: string, read: () => number): void => {
    // eslint-disable-next-line no-new -- registered in `registers`; prom-client keeps it
    new Counter({
      name,
      help,
      registers,
      collect () {
        this.reset()
        this.inc(read())
      }
    })
  }

  // eslint-disable-next-line no-new -- registered in `registers`
  new Gauge({
    name: 'sprint_clients',
    help: 'Connected WebSocket clients by kind: plain (one event per frame) or batched (?batch=1)',
    labelNames: ['kind'],
    registers,
    collect () {
      const { plain, batched } = source.clientsByKind
      this.set({ kind: 'plain' }, plain)
      this.set({ kind: 'batched' }, batched)
    }
  })
  total('sprint_events_emitted_total', 'Events stored and published', () => stats.eventsEmitted)
  total('sprint_events_delivered_total', 'Events written to client sockets, once per client', () => stats.eventsDelivered)
  total('sprint_frames_written_total', 'WebSocket frames written by the fan-out (events and notices)', () => stats.framesWritten)
  total('sprint_slow_consumer_closes_total', 'Clients closed with 1013 for having too many unsent bytes', () => stats.slowConsumerCloses)
  // eslint-disable-next-line no-new -- registered in `registers`
  new Counter({
    name: 'sprint_resumes_total',
    help: 'Connections with ?since= by result: replayed (sent what they missed) or reset (sent a fresh snapshot)',
    labelNames: ['result'],
    registers,
    collect () {
      this.reset()
      this.inc({ result: 'replayed' }, stats.resumeReplays)
      this.inc({ result: 'reset' }, stats.resumeResets)
    }
  })
  // eslint-disable-next-line no-new -- registered in `registers`
  new Counter({
    name: 'sprint_ingest_rejections_total',
    help: 'POST /api/events requests refused, by error code',
    labelNames: ['code'],
    registers,
    collect () {
      this.reset()
      for (const [code, count] of stats.ingestRejections) this.inc({ code }, count)
    }
  })
  registry.registerMetric(new CountedHistogram('sprint_commit_duration_seconds',
    'Time to make events durable: a turn\'s SQLite COMMIT, or the whole transaction of an emitMany',
    stats.commitTime))
  // eslint-disable-next-line no-new -- registered in `registers`
  new Gauge({
    name: 'sprint_last_event_id',
    help: 'Id of the newest stored event (0 when none)',
    registers,
    collect () {
      this.set(source.lastEventId)
    }
  })
  // Without a broker these two have no sample: "no broker" is not "broker down".
  // eslint-disable-next-line no-new -- registered in `registers`
  new Gauge({
    name: 'sprint_broker_up',
    help: '1 while the log broker (Redis) is reachable, 0 while it is not; no sample without a broker',
    registers,
    collect () {
      const broker = readBrokerStatus(source)
      if (broker === undefined) this.remove({})
      else this.set(broker.state === 'up' ? 1 : 0)
    }
  })
  // eslint-disable-next-line no-new -- registered in `registers`
  new Gauge({
    name: 'sprint_broker_reader_lag',
    help: 'Events in the broker\'s stream not yet applied by this instance (newest stream id minus last applied); no sample without a broker',
    registers,
    collect () {
      const broker = readBrokerStatus(source)
      if (broker === undefined) this.remove({})
      else this.set(broker.readerLag)
    }
  })

  return Registry.merge([getProcessRegistry(), registry])
}
