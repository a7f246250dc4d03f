import t from 'tap'
import { mkdir, rename, writeFile } from 'node:fs/promises'
import path from 'node:path'
import type { Envelope } from '../../src/events/schemas.ts'
import { FileLimits } from '../../src/events/protocol.ts'
import { listen, tempDir, validPayloads, waitFor } from '../helper.ts'
import { StreamReader } from './stream-reader.ts'
import { MAX_DELIVERY_GAP_MS, startSteadyStream } from './steady-stream.ts'

/**
 * Issue #17, finding 4: one rewrite of a large sprint-status.yaml emitted one story:status per story
 * in one turn (2 s of stall, every dashboard closed as a slow consumer, the retention window filled).
 */
const STORIES = 20_000

function sprintStatusWith (status: string): string {
  const lines = ['project: demo', 'development_status:']
  for (let i = 0; i < STORIES; i++) lines.push(`  ${Math.floor(i / 100) + 1}-${i % 100}-story-${i}: ${status}`)
  return `${lines.join('\n')}\n`
}

t.test(`a rewrite changing ${STORIES} stories: ${FileLimits.statusEventsPerChange} story:status events and one summary, ` +
  'no client closed, no delivery gap over 100 ms', async t => {
  const artifactsDir = path.join(await tempDir(t), 'artifacts')
  await mkdir(artifactsDir)
  const statusFile = path.join(artifactsDir, 'sprint-status.yaml')
  await writeFile(statusFile, sprintStatusWith('backlog'))
  const rewrite = sprintStatusWith('done')
  const { app, wsUrl } = await listen(t, { artifactsDir, watchSprintStatus: true })
  const watcherEvents: Envelope[] = []
  app.events.onEvent(envelope => {
    if (envelope.type === 'story:status' || (envelope.type === 'error' && envelope.payload.type.startsWith('sprint_status'))) watcherEvents.push(envelope)
  })
  const dashboards = Array.from({ length: 5 }, () => new StreamReader(wsUrl))
  t.teardown(() => { for (const reader of dashboards) reader.socket.terminate() })
  await Promise.all(dashboards.map(reader => reader.opened))
  const stream = await startSteadyStream(wsUrl, async sequence =>
    (await app.events.emit('command:progress', { ...validPayloads['command:progress'], message: `steady ${sequence}` })).id)

  const temporary = `${statusFile}.tmp`
  await writeFile(temporary, rewrite)
  await rename(temporary, statusFile)
  const summarised = (): boolean => watcherEvents.some(e => e.type === 'error' && e.payload.type === 'sprint_status_bulk_change')
  await waitFor(() => summarised() || watcherEvents.length >= STORIES, 20_000).catch(() => {})
  // A moment more for anything that would follow the summary.
  await new Promise(resolve => setTimeout(resolve, 500))

  const statusEvents = watcherEvents.filter(e => e.type === 'story:status')
  t.equal(statusEvents.length, FileLimits.statusEventsPerChange, `${statusEvents.length} story:status events`)
  const summaries = watcherEvents.filter(e => e.type === 'error')
  t.equal(summaries.length, 1, 'one summary')
  t.match(summaries[0]?.payload, {
    type: 'sprint_status_bulk_change',
    message: /FileLimits\.statusEventsPerChange/,
    context: { changed: STORIES, sent: FileLimits.statusEventsPerChange, omitted: STORIES - FileLimits.statusEventsPerChange }
  })
  const result = await stream.stop()
  await waitFor(() => dashboards.every(reader => reader.lastId >= Math.max(...result.acknowledged)), 10_000)
  for (const reader of dashboards) {
    t.equal(reader.closeCode, null, 'a dashboard that reads is not closed as a slow consumer')
    t.same(reader.violations, [])
  }
  t.same(result.missing, [], 'every acknowledged event reached the client')
  t.ok(result.maxStallMs <= MAX_DELIVERY_GAP_MS,
    `no delivery gap over ${MAX_DELIVERY_GAP_MS} ms (longest ${result.maxStallMs} ms at ${result.maxStallEndedAtMs} ms; wall-clock ${result.maxGapMs} ms)`)
})
