import t from 'tap'
import { createMetricsRegistry, readBrokerStatus, type MetricsSource } from '../../src/lib/metrics.ts'
import { COMMIT_SECONDS_BUCKETS, createStats, recordCommit, recordIngestRejection } from '../../src/lib/stats.ts'
import { parseMetrics } from '../helper.ts'

/** A stand-in for `app.events`: the registry reads nothing else. */
function fakeSource (broker?: unknown): MetricsSource & { broker?: unknown, clientsByKind: { plain: number, batched: number }, lastEventId: number } {
  return { stats: createStats(), clientsByKind: { plain: 0, batched: 0 }, lastEventId: 0, ...(broker === undefined ? {} : { broker }) }
}

t.test('every total is read at scrape time, not when the registry is built', async t => {
  const source = fakeSource()
  const registry = createMetricsRegistry(source)
  const before = parseMetrics(await registry.metrics())
  t.equal(before.get('sprint_events_emitted_total'), 0)
  t.equal(before.get('sprint_clients{kind="plain"}'), 0)

  const { stats } = source
  stats.eventsEmitted = 7
  stats.eventsDelivered = 70
  stats.framesWritten = 41
  stats.slowConsumerCloses = 2
  stats.resumeReplays = 3
  stats.resumeResets = 1
  recordIngestRejection(stats, 'SPRINT_INVALID_EVENT')
  recordIngestRejection(stats, 'SPRINT_INGEST_UNAUTHORIZED')
  recordIngestRejection(stats, 'SPRINT_INGEST_UNAUTHORIZED')
  source.clientsByKind = { plain: 5, batched: 4 }
  source.lastEventId = 7

  const after = parseMetrics(await registry.metrics())
  t.equal(after.get('sprint_events_emitted_total'), 7)
  t.equal(after.get('sprint_events_delivered_total'), 70)
  t.equal(after.get('sprint_frames_written_total'), 41)
  t.equal(after.get('sprint_slow_consumer_closes_total'), 2)
  t.equal(after.get('sprint_resumes_total{result="replayed"}'), 3)
  t.equal(after.get('sprint_resumes_total{result="reset"}'), 1)
  t.equal(after.get('sprint_ingest_rejections_total{code="SPRINT_INVALID_EVENT"}'), 1)
  t.equal(after.get('sprint_ingest_rejections_total{code="SPRINT_INGEST_UNAUTHORIZED"}'), 2)
  t.equal(after.get('sprint_clients{kind="plain"}'), 5)
  t.equal(after.get('sprint_clients{kind="batched"}'), 4)
  t.equal(after.get('sprint_last_event_id'), 7)
  // A second scrape reports the same totals (a counter is set, not added to, at each collect).
  t.same(parseMetrics(await registry.metrics()).get('sprint_events_delivered_total'), 70)
})

t.test('commit time is a Prometheus histogram: cumulative buckets, +Inf, sum and count, in text and JSON', async t => {
  const source = fakeSource()
  const registry = createMetricsRegistry(source)
  const first = COMMIT_SECONDS_BUCKETS[0]!
  const second = COMMIT_SECONDS_BUCKETS[1]!
  recordCommit(source.stats, first / 2)
  recordCommit(source.stats, second)
  recordCommit(source.stats, 1000)
  const text = await registry.metrics()
  t.match(text, /# TYPE sprint_commit_duration_seconds histogram/)
  const samples = parseMetrics(text)
  t.equal(samples.get(`sprint_commit_duration_seconds_bucket{le="${first}"}`), 1)
  t.equal(samples.get(`sprint_commit_duration_seconds_bucket{le="${second}"}`), 2, 'cumulative')
  t.equal(samples.get(`sprint_commit_duration_seconds_bucket{le="${COMMIT_SECONDS_BUCKETS.at(-1)!}"}`), 2)
  t.equal(samples.get('sprint_commit_duration_seconds_bucket{le="+Inf"}'), 3)
  t.equal(samples.get('sprint_commit_duration_seconds_count'), 3)
  t.equal(samples.get('sprint_commit_duration_seconds_sum'), first / 2 + second + 1000)

  const json = await registry.getMetricsAsJSON()
  const histogram = json.find(metric => metric.name === 'sprint_commit_duration_seconds')
  t.equal(histogram?.type, 'histogram')
  const count = histogram?.values.find(value => (value as { metricName?: string }).metricName === 'sprint_commit_duration_seconds_count')
  t.equal(count?.value, 3)
})

t.test('broker state and reader lag: samples only when the broadcaster has a broker', async t => {
  const source = fakeSource()
  const registry = createMetricsRegistry(source)
  const none = parseMetrics(await registry.metrics())
  t.notOk(none.has('sprint_broker_up'), 'no broker: no sample (not "down")')
  t.notOk(none.has('sprint_broker_reader_lag'))

  source.broker = { state: 'up', readerLag: 12 }
  const up = parseMetrics(await registry.metrics())
  t.equal(up.get('sprint_broker_up'), 1)
  t.equal(up.get('sprint_broker_reader_lag'), 12)

  source.broker = { state: 'down', readerLag: 40 }
  const down = parseMetrics(await registry.metrics())
  t.equal(down.get('sprint_broker_up'), 0)
  t.equal(down.get('sprint_broker_reader_lag'), 40)

  delete source.broker
  t.notOk(parseMetrics(await registry.metrics()).has('sprint_broker_up'), 'the sample goes when the broker does')
})

t.test('readBrokerStatus takes only the documented shape', async t => {
  t.same(readBrokerStatus({ broker: { state: 'up', readerLag: 3 } }), { state: 'up', readerLag: 3 })
  t.same(readBrokerStatus({ broker: { state: 'down' } }), { state: 'down', readerLag: 0 }, 'a missing lag reads as 0')
  t.same(readBrokerStatus({ broker: { state: 'up', readerLag: Number.NaN } }), { state: 'up', readerLag: 0 })
  t.equal(readBrokerStatus({}), undefined)
  t.equal(readBrokerStatus({ broker: undefined }), undefined)
  t.equal(readBrokerStatus({ broker: null }), undefined)
  t.equal(readBrokerStatus({ broker: 'up' }), undefined)
  t.equal(readBrokerStatus({ broker: { state: 'sideways', readerLag: 1 } }), undefined)
  const withGetter = { get broker () { return { state: 'up' as const, readerLag: 5 } } }
  t.same(readBrokerStatus(withGetter), { state: 'up', readerLag: 5 }, 'read through a getter, as the broadcaster exposes it')
})

t.test('several registries in one process: each has its own totals, all share the Node process metrics', async t => {
  const a = fakeSource()
  const b = fakeSource()
  const registryA = createMetricsRegistry(a)
  const registryB = createMetricsRegistry(b)
  a.stats.eventsEmitted = 1
  b.stats.eventsEmitted = 2
  const [samplesA, samplesB] = [parseMetrics(await registryA.metrics()), parseMetrics(await registryB.metrics())]
  t.equal(samplesA.get('sprint_events_emitted_total'), 1)
  t.equal(samplesB.get('sprint_events_emitted_total'), 2)
  for (const samples of [samplesA, samplesB]) {
    t.ok(samples.has('process_cpu_user_seconds_total'), 'process CPU')
    t.ok(samples.has('nodejs_heap_size_used_bytes'), 'heap')
    t.ok(samples.has('nodejs_eventloop_lag_seconds'), 'event-loop lag')
  }
  t.equal(registryA.contentType, 'text/plain; version=0.0.4; charset=utf-8')
})
