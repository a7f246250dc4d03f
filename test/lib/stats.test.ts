import t from 'tap'
import { COMMIT_SECONDS_BUCKETS, createStats, recordCommit, recordIngestRejection } from '../../src/lib/stats.ts'

t.test('fresh totals are zero, with one commit bucket per bound and one above them all', async t => {
  const stats = createStats()
  t.match(stats, { eventsEmitted: 0, eventsDelivered: 0, framesWritten: 0, slowConsumerCloses: 0, resumeReplays: 0, resumeResets: 0 })
  t.equal(stats.ingestRejections.size, 0)
  t.same(stats.commitTime, { buckets: new Array(COMMIT_SECONDS_BUCKETS.length + 1).fill(0), count: 0, sumSeconds: 0 })
  t.not(createStats().commitTime.buckets, stats.commitTime.buckets, 'each stats object has its own buckets')
})

t.test('recordCommit puts a duration in the first bucket whose bound holds it, counts and sums it', async t => {
  const stats = createStats()
  const first = COMMIT_SECONDS_BUCKETS[0]!
  const last = COMMIT_SECONDS_BUCKETS.at(-1)!
  recordCommit(stats, 0)
  recordCommit(stats, first) // a bound is inclusive, as Prometheus' `le` is
  recordCommit(stats, first * 1.5)
  recordCommit(stats, last + 1)
  const { buckets, count, sumSeconds } = stats.commitTime
  t.equal(buckets[0], 2, 'zero and the first bound itself')
  t.equal(buckets[1], 1, 'just above the first bound')
  t.equal(buckets.at(-1), 1, 'above every bound')
  t.equal(buckets.reduce((a, b) => a + b, 0), 4)
  t.equal(count, 4)
  t.equal(sumSeconds, 0 + first + first * 1.5 + last + 1)
})

t.test('recordIngestRejection counts by code, an error without one as UNKNOWN', async t => {
  const stats = createStats()
  recordIngestRejection(stats, 'SPRINT_INVALID_EVENT')
  recordIngestRejection(stats, 'SPRINT_INVALID_EVENT')
  recordIngestRejection(stats, 'FST_ERR_CTP_BODY_TOO_LARGE')
  recordIngestRejection(stats, undefined)
  recordIngestRejection(stats, '')
  t.same(Object.fromEntries(stats.ingestRejections), { SPRINT_INVALID_EVENT: 2, FST_ERR_CTP_BODY_TOO_LARGE: 1, UNKNOWN: 2 })
})
