import t from 'tap'
import path from 'node:path'
import { once } from 'node:events'
import type { WebSocket } from 'ws'
import { startServer } from '../e2e/server-process.ts'
import { listen, tempDir, waitFor } from '../helper.ts'
import { MiB, readRss, trackRss } from './wire.ts'
import { postEvents, progressEvent, StreamReader } from './stream-reader.ts'

const EVENTS = 20_000
const EVENT_BYTES = 4096
/**
 * Events per POST, about 100 KiB: bodies this size stay in V8's young generation, so the RSS measured is
 * the service's and not megabyte-sized request strings waiting in large-object space for a full GC
 * (with 800 KiB requests that alone adds 70 MiB of RSS, stalled client or not).
 */
const PER_REQUEST = 25
const READERS = 20
const RSS_BOUND = 64 * MiB

t.test(`a client that stops reading while ${EVENTS} events of ${EVENT_BYTES} B (≈${Math.round(EVENTS * EVENT_BYTES / MiB)} MiB) ` +
  `are emitted is closed 1013 "slow consumer", the server's RSS grows by less than ${RSS_BOUND / MiB} MiB, ` +
  `and ${READERS} readers get every event in order`, async t => {
  // The server runs as its own process (default maxBufferedBytes, 4 MiB) so that its RSS is its own.
  // The stream is larger than the RSS bound: buffering it for the stalled client would break the bound.
  const dir = await tempDir(t)
  const server = await startServer({ SPRINT_DB: path.join(dir, 'sprint.db'), SPRINT_ARTIFACTS_DIR: dir, SPRINT_WATCH: '0' })
  t.teardown(() => { server.child.kill('SIGKILL') })
  const pid = server.child.pid!

  const readers = Array.from({ length: READERS }, () => new StreamReader(server.wsUrl))
  const stalled = new StreamReader(server.wsUrl)
  t.teardown(() => { for (const reader of [...readers, stalled]) reader.socket.terminate() })
  await Promise.all([...readers, stalled].map(reader => reader.opened))
  stalled.pauseReading()

  const health = async (): Promise<{ clients: number }> => await (await fetch(`${server.url}/api/health`)).json() as { clients: number }
  t.equal((await health()).clients, READERS + 1)

  const rssAtStart = await readRss(pid)
  const rss = trackRss(pid)
  let stalledDroppedAfter: number | null = null
  let lastId = 0
  let previousBatchLastId = 0
  for (let sent = 0; sent < EVENTS; sent += PER_REQUEST) {
    const batch = Array.from({ length: PER_REQUEST }, (_, i) => progressEvent(sent + i + 1, EVENT_BYTES))
    const ids = await postEvents(server.url, batch)
    lastId = ids.at(-1)!
    // Well-behaved readers keep up: at most two requests' worth is ever in flight to them.
    const target = previousBatchLastId
    await waitFor(() => readers.every(reader => reader.lastId >= target), 30_000)
    previousBatchLastId = lastId
    if (stalledDroppedAfter === null && (await health()).clients === READERS) {
      stalledDroppedAfter = lastId
      // Reading again at once (well within the 5 s grace) drains what the server had
      // already queued, and then the close frame it put behind it.
      stalled.resumeReading()
    }
  }
  await waitFor(() => readers.every(reader => reader.lastId === lastId), 30_000)
  const peak = await rss.stop()
  const rssAtEnd = await readRss(pid)

  t.equal(lastId, EVENTS, 'every event was stored')
  t.ok(stalledDroppedAfter !== null && stalledDroppedAfter < EVENTS, `the stalled client was dropped while events were still flowing (after id ${stalledDroppedAfter})`)
  const { code, reason } = await stalled.closed
  t.equal(code, 1013, 'closed with 1013')
  t.equal(reason, 'slow consumer')
  t.same(stalled.violations, [], 'what it did receive was a gap-free prefix of the stream')
  t.ok(stalled.lastId > 0 && stalled.lastId < EVENTS, `it received ids 1..${stalled.lastId} before the close frame`)
  t.ok(server.logs.some(line => line.msg === 'closing slow WebSocket consumer'), 'the server logged it')

  for (const [index, reader] of readers.entries()) {
    t.same(reader.violations, [], `reader ${index}: no gap, duplicate or reordering`)
    t.equal(reader.received, EVENTS, `reader ${index}: received all ${EVENTS}`)
    t.equal(reader.closeCode, null, `reader ${index}: still connected`)
  }
  const growth = peak - rssAtStart
  t.comment(`server RSS: start ${(rssAtStart / MiB).toFixed(1)} MiB, peak ${(peak / MiB).toFixed(1)} MiB, end ${(rssAtEnd / MiB).toFixed(1)} MiB`)
  t.ok(growth < RSS_BOUND, `RSS grew by ${(growth / MiB).toFixed(1)} MiB (bound ${RSS_BOUND / MiB} MiB)`)
  t.equal((await health()).clients, READERS)
})

t.test('a slow consumer that never reads again is destroyed 5 s after its close frame', async t => {
  const { app, wsUrl } = await listen(t, { maxBufferedBytes: 64 * 1024 })
  // The server side of each connection, caught on its way into the broadcaster.
  const serverSockets: WebSocket[] = []
  const connect = app.events.connect.bind(app.events)
  app.events.connect = (socket, request) => {
    serverSockets.push(socket)
    connect(socket, request)
  }
  const stalled = new StreamReader(wsUrl)
  t.teardown(() => stalled.socket.terminate())
  await stalled.opened
  stalled.pauseReading()
  const serverSide = serverSockets[0]!
  const serverClosed = once(serverSide, 'close')

  // Emit until the broadcaster gives up on it, yielding between bursts so the kernel buffers fill as they would.
  for (let sent = 0; app.events.clientCount > 0; sent++) {
    if (sent > 50_000) throw new Error('never detected as slow')
    app.events.emit('command:progress', progressEvent(sent, EVENT_BYTES).payload as never)
    if (sent % 100 === 0) await new Promise(resolve => setImmediate(resolve))
  }
  const closedAt = Date.now()
  t.equal(serverSide.readyState, serverSide.CLOSING, 'the close frame is queued; the socket is closing')
  await serverClosed
  const elapsed = Date.now() - closedAt
  t.ok(elapsed >= 4900 && elapsed < 8000, `destroyed ${elapsed} ms after the close (grace 5 s)`)
  t.equal(app.events.clientCount, 0)
})
