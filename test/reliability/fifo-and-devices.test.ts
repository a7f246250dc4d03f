import t from 'tap'
import { mkdir, rm, symlink, writeFile } from 'node:fs/promises'
import path from 'node:path'
import type { Envelope } from '../../src/events/schemas.ts'
import { listen, tempDir, validPayloads, waitFor } from '../helper.ts'
import { codeOf, getWithin, makeFifo, releaseFifo } from './hostile-files.ts'
import { MAX_DELIVERY_GAP_MS, startSteadyStream } from './steady-stream.ts'

/**
 * Issue #17, finding 2: a FIFO (or a link to a device) in the artifacts directory must not hang a
 * route, the threadpool, the watcher or shutdown. Each request gets a bound well above what a
 * healthy answer takes on a loaded machine; a blocked open() never answers at all.
 */
const ANSWER_WITHIN_MS = 5000

const sprint = (statuses: Record<string, string>): string =>
  ['development_status:', ...Object.entries(statuses).map(([key, status]) => `  ${key}: ${status}`), ''].join('\n')

async function service (t: Parameters<typeof listen>[0]) {
  const artifactsDir = path.join(await tempDir(t), 'artifacts')
  await mkdir(artifactsDir)
  await writeFile(path.join(artifactsDir, 'sprint-status.yaml'), sprint({ '1-1-a': 'backlog', '1-2-b': 'backlog' }))
  await writeFile(path.join(artifactsDir, '1-1-a.md'), '# A\n\n## Story\nStory a.\n')
  await writeFile(path.join(artifactsDir, '1-2-b.md'), '# B\n\n## Story\nStory b.\n')
  await writeFile(path.join(artifactsDir, 'orchestrator.md'), '# log\n')
  const served = await listen(t, { artifactsDir, watchSprintStatus: true })
  const statusEvents: Array<Envelope<'story:status'>> = []
  served.app.events.onEvent(envelope => { if (envelope.type === 'story:status') statusEvents.push(envelope) })
  const stream = await startSteadyStream(served.wsUrl, async sequence =>
    (await served.app.events.emit('command:progress', { ...validPayloads['command:progress'], message: `steady ${sequence}` })).id)
  return { ...served, artifactsDir, statusEvents, stream }
}

t.test('FIFOs in the artifacts directory: every route answers, the watcher lives on, a connected client keeps its stream', async t => {
  const { url, artifactsDir, statusEvents, stream } = await service(t)
  await makeFifo(t, path.join(artifactsDir, '1-3-fifo.md'))
  await makeFifo(t, path.join(artifactsDir, 'orchestrator.csv'))

  // More requests that would open a FIFO than libuv has threadpool threads (4), then the routes that
  // need the threadpool too: with blocking opens the later ones would never be answered.
  const fifoReaders = await Promise.all([
    ...Array.from({ length: 6 }, () => getWithin(`${url}/story-descriptions.json`, ANSWER_WITHIN_MS)),
    ...Array.from({ length: 4 }, () => getWithin(`${url}/orchestrator.csv`, ANSWER_WITHIN_MS))
  ])
  for (const response of fifoReaders.slice(0, 6)) {
    t.equal(response.status, 200, `story descriptions answered (${response.ms} ms)`)
    t.same(JSON.parse(response.body || '{}'), { '1-1-a': 'Story a.', '1-2-b': 'Story b.' }, 'the FIFO is skipped, the story files are read')
  }
  for (const response of fifoReaders.slice(6)) {
    t.equal(response.status, 500, `a data file that is a FIFO is refused (${response.ms} ms)`)
    t.equal(codeOf(response), 'SPRINT_FILE_NOT_REGULAR')
    t.match(response.body, /orchestrator\.csv.*FIFO/, 'the message names the file and what it is')
  }
  for (const route of ['/api/sprint-status', '/', '/orchestrator.md', '/api/health']) {
    const response = await getWithin(`${url}${route}`, ANSWER_WITHIN_MS)
    t.equal(response.status, 200, `${route} still answers (${response.ms} ms)`)
  }

  // sprint-status.yaml a FIFO for a while: the route refuses it, and the watcher reads the next real file.
  const statusFile = path.join(artifactsDir, 'sprint-status.yaml')
  await rm(statusFile)
  await makeFifo(t, statusFile)
  const refused = await getWithin(`${url}/api/sprint-status`, ANSWER_WITHIN_MS)
  t.equal(refused.status, 500, `GET /api/sprint-status on a FIFO is refused (${refused.ms} ms)`)
  t.equal(codeOf(refused), 'SPRINT_FILE_NOT_REGULAR')
  // Longer than the watcher's poll (500 ms) and debounce, so that it has looked at the FIFO.
  await new Promise(resolve => setTimeout(resolve, 1200))
  await releaseFifo(statusFile)
  await writeFile(statusFile, sprint({ '1-1-a': 'done', '1-2-b': 'backlog' }))
  await waitFor(() => statusEvents.some(e => e.payload.story_key === '1-1-a' && e.payload.new_status === 'done'), ANSWER_WITHIN_MS)
    .then(() => t.pass('the watcher reported the change made after the FIFO'), () => t.fail('the watcher died on the FIFO'))

  const result = await stream.stop()
  t.same(stream.reader.violations, [], 'the client\'s stream has no gap, duplicate or reordering')
  t.same(result.missing, [], 'every acknowledged event reached the client')
  t.ok(result.maxStallMs <= MAX_DELIVERY_GAP_MS,
    `no delivery gap over ${MAX_DELIVERY_GAP_MS} ms (longest ${result.maxStallMs} ms at ${result.maxStallEndedAtMs} ms; wall-clock ${result.maxGapMs} ms)`)
})

t.test('links to /dev/zero as sprint-status.yaml and as a data file are refused at once', async t => {
  const { url, artifactsDir, stream } = await service(t)
  const statusFile = path.join(artifactsDir, 'sprint-status.yaml')
  await rm(statusFile)
  await symlink('/dev/zero', statusFile)
  await symlink('/dev/zero', path.join(artifactsDir, 'orchestrator.csv'))
  for (const route of ['/api/sprint-status', '/sprint-status.yaml', '/orchestrator.csv']) {
    const response = await getWithin(`${url}${route}`, ANSWER_WITHIN_MS)
    t.equal(response.status, 500, `${route} refused (${response.ms} ms)`)
    t.equal(codeOf(response), 'SPRINT_FILE_NOT_REGULAR')
    t.match(response.body, /character device/)
    t.ok(response.ms < 2000, `without reading the device (${response.ms} ms)`)
  }
  // The watcher polls the link too (every 500 ms): it must not read the device either.
  await new Promise(resolve => setTimeout(resolve, 1200))
  const result = await stream.stop()
  t.same(stream.reader.violations, [])
  t.ok(result.maxStallMs <= MAX_DELIVERY_GAP_MS,
    `no delivery gap over ${MAX_DELIVERY_GAP_MS} ms (longest ${result.maxStallMs} ms at ${result.maxStallEndedAtMs} ms)`)
})

t.test('shutdown finishes within its grace while sprint-status.yaml is a FIFO the watcher has looked at', async t => {
  const { app, artifactsDir, stream } = await service(t)
  await stream.stop()
  const statusFile = path.join(artifactsDir, 'sprint-status.yaml')
  await rm(statusFile)
  await makeFifo(t, statusFile)
  await new Promise(resolve => setTimeout(resolve, 1200))
  const started = performance.now()
  const closed = await Promise.race([
    app.close().then(() => 'closed'),
    new Promise(resolve => setTimeout(resolve, 5000, 'still closing'))
  ])
  t.equal(closed, 'closed', `app.close() finished (${Math.round(performance.now() - started)} ms)`)
})
