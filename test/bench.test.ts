import { test } from 'tap'
import { openConnectedSession, type ServerKind } from '../bench/session.ts'
import { formatReport, type BenchReport } from '../bench/report.ts'
import type { EmitterKind } from '../bench/server-control.ts'
import { readCounter, tcpBetween } from '../bench/tcp-stats.ts'
import { parseDecimal, readProgress } from '../bench/progress-reader.ts'

// A smoke test of the fan-out benchmark (`npm run bench`): the harness runs
// for a moment with a few clients against each server and must account for
// every event. It checks that the numbers exist and add up, never how fast
// they are: timing belongs to the benchmark's output, not to a test.

const variants: Array<{ server: ServerKind, batch: boolean, emitter: EmitterKind }> = [
  { server: 'baseline', batch: false, emitter: 'turn' },
  { server: 'service', batch: false, emitter: 'turn' },
  { server: 'service', batch: true, emitter: 'turn' },
  { server: 'service', batch: true, emitter: 'burst' },
  { server: 'baseline', batch: false, emitter: 'http' },
  { server: 'service', batch: true, emitter: 'http' }
]

for (const { server, batch, emitter } of variants) {
  test(`bench harness against the ${server}${batch ? ' with ?batch=1' : ''}, ${emitter} emitter`, async (t) => {
    const clients = 5
    const session = await openConnectedSession({ server, batch, clients, connectConcurrency: clients, emitter })
    t.teardown(() => session.close())

    const storm = await session.storm(clients)
    t.equal(storm.opened, clients, 'every raw handshake of the storm got its init')
    t.equal(storm.failed, 0)
    t.ok(storm.elapsedMs > 0, 'the storm is timed')

    const window = await session.measure({ rate: 200, seconds: 0.5 })
    t.equal(window.clients, clients, 'every client was connected when the window started')
    t.equal(window.emitter, emitter)
    t.ok(window.emitted > 0, 'the emitter emitted')
    t.equal(window.expected, window.emitted * clients)
    t.equal(window.delivered, window.expected, 'every event reached every client')
    t.equal(window.lost, 0)
    t.equal(window.gaps, 0, 'ids are consecutive on every connection')
    t.equal(window.duplicates, 0)
    t.same(window.closes, {}, 'no client was closed')
    for (const key of ['p50', 'p99', 'p999', 'max'] as const) {
      t.ok(Number.isFinite(window.latencyMs[key]) && window.latencyMs[key] > 0, `latency ${key} is a positive number`)
    }
    t.ok(window.latencyMs.p50 <= window.latencyMs.p99 && window.latencyMs.p99 <= window.latencyMs.max, 'percentiles are ordered')
    t.ok(window.serverCpuUsPerDelivered > 0, 'server CPU per message is measured')
    t.ok(window.serverRssPeakMiB > 0, 'server RSS is measured')
    t.ok(window.eventsPerFrame >= 1, 'every frame carries at least one event')
    t.ok(Number.isFinite(window.eventLoopDelayP99Ms) && window.eventLoopDelayP99Ms > 0, 'loop lag p99 is measured')
    if (!batch) t.equal(window.eventsPerFrame, 1, 'plain clients get one event per frame')

    const report: BenchReport = {
      startedAt: new Date().toISOString(),
      durationS: 1,
      command: 'test',
      machine: { cpus: 2, model: 'test', memoryGiB: 1, node: process.version, platform: process.platform },
      config: { seconds: 0.5 },
      fdLimit: { wanted: 65536, got: session.fdLimits },
      emitCost: undefined,
      storms: [],
      connections: [],
      windows: [{ phase: 'matrix', ...window }],
      searches: [],
      notes: []
    }
    t.match(formatReport(report), new RegExp(`\\| ${server}${batch ? '\\+batch' : ''} +\\| +${clients} \\|`), 'the table has a row for the window')
    t.notMatch(formatReport(report), /median per cell/, 'one round needs no medians')

    // Two rounds of the cell: one row of medians, the p99 between the rounds' and its range beside it.
    const slower = { ...window, latencyMs: { ...window.latencyMs, p99: window.latencyMs.p99 * 3 } }
    const twoRounds = formatReport({ ...report, windows: [{ phase: 'matrix', ...window }, { phase: 'matrix', ...slower }] })
    const row = twoRounds.split('median per cell')[1]?.split('\n').find((line) => line.startsWith(`| ${server}${batch ? '+batch' : ''} `))
    const cells = row?.split('|').map((cell) => cell.trim())
    t.equal(cells?.[4], '2', 'the medians row counts both rounds')
    t.ok(Math.abs(Number(cells?.[8]) - window.latencyMs.p99 * 2) <= 0.006, 'p99 is the median of the rounds')
    t.equal(cells?.[9], `${window.latencyMs.p99.toFixed(1)}–${(window.latencyMs.p99 * 3).toFixed(1)}`, 'and its range is beside it')
  })
}

test('TCP counters are read by name from the /proc/net header and value lines, and differenced', async (t) => {
  const netstat = 'TcpExt: SyncookiesSent TCPMemoryPressures PruneCalled\nTcpExt: 0 7 12\nIpExt: InNoRoutes TCPMemoryPressures\nIpExt: 3 99\n'
  t.equal(readCounter(netstat, 'TcpExt', 'TCPMemoryPressures'), 7, 'the value under the name, in its own group')
  t.equal(readCounter(netstat, 'TcpExt', 'Missing'), undefined)
  t.equal(readCounter('Tcp: RetransSegs\nTcp: x\n', 'Tcp', 'RetransSegs'), undefined, 'a value that is not a number')
  t.same(tcpBetween({ memoryPressures: 4, retransmits: 100 }, { memoryPressures: 6, retransmits: 150 }), { memoryPressures: 2, retransmits: 50 })
  t.equal(tcpBetween(undefined, { memoryPressures: 6, retransmits: 150 }), undefined, 'no delta without both samples')
})

test('the client harness reads id and emit time by position exactly as JSON.parse would, and declines other shapes', async (t) => {
  const envelope = (id: number, message: string): string => JSON.stringify({
    id, type: 'command:progress', payload: { story_key: '2a-1', command: 'dev-story', task_id: 't', message }, timestamp: 1
  })
  const lines = [envelope(1, '1764213412345.123'), envelope(987654, '1764213412345'), envelope(42, '0.5'), envelope(7, '1764213412345.1235')]
  const text = lines.join('\n')
  let start = 0
  for (const line of lines) {
    const parsed = JSON.parse(line)
    const read = readProgress(text, start, start + line.length)
    t.equal(read?.id, parsed.id, `id of ${parsed.id}`)
    t.ok(Math.abs((read?.emittedAt ?? Number.NaN) - Number(parsed.payload.message)) < 1e-6, `emit time of ${parsed.id} within a nanosecond`)
    start += line.length + 1
  }
  const declined = [
    JSON.stringify({ type: 'init', payload: {} }),
    JSON.stringify({ id: 3, type: 'command:start', payload: { message: '1' }, timestamp: 1 }),
    envelope(4, 'not a number'),
    envelope(5, '1.'),
    envelope(6, '-1'),
    '{"id":x,"type":"command:progress","payload":{"message":"1"}}'
  ]
  for (const line of declined) t.equal(readProgress(line, 0, line.length), undefined, `declines ${line.slice(0, 50)}`)
  t.equal(readProgress(lines[0]!, 0, 40), undefined, 'a message key past the end of the line is not read')
  t.ok(Number.isNaN(parseDecimal('12a', 0, 3)) && Number.isNaN(parseDecimal('', 0, 0)) && Number.isNaN(parseDecimal('.5', 0, 2)))
})
