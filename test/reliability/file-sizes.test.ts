import t from 'tap'
import { mkdir, truncate, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { FileLimits } from '../../src/events/protocol.ts'
import { startServer } from '../e2e/server-process.ts'
import { tempDir } from '../helper.ts'
import { codeOf, getWithin } from './hostile-files.ts'
import { postEvents, progressEvent } from './stream-reader.ts'
import { MAX_DELIVERY_GAP_MS, startSteadyStream } from './steady-stream.ts'

/**
 * Issue #17, finding 3 (and the merge keys of finding 8): what the service reads is capped, with
 * errors that name the limit, and no file stalls delivery for more than 100 ms, whether it is too
 * large, expands through aliases, is large but valid, or is one of 20,000 story files. The service
 * runs as its own process (with the sprint-status watcher), so that what is measured is its event
 * loop, not this test's.
 */
const ANSWER_WITHIN_MS = 10_000

function sprintStatusWith (stories: number, status: string): string {
  const lines = ['project: demo', 'development_status:']
  for (let i = 0; i < stories; i++) lines.push(`  ${Math.floor(i / 100) + 1}-${i % 100}-story-number-${i}: ${status}`)
  return `${lines.join('\n')}\n`
}

/** A few hundred bytes of YAML whose JSON would be 10^9 strings long ("billion laughs"). */
function aliasBomb (): string {
  const lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
  for (let level = 1; level <= 9; level++) {
    lines.push(`a${level}: &a${level} [${Array.from({ length: 10 }, () => `*a${level - 1}`).join(',')}]`)
  }
  lines.push('development_status:', '  1-1-a: done')
  return `${lines.join('\n')}\n`
}

t.test('oversized, expanding and large files: refused with the limit named, or served, without stalling delivery', async t => {
  const artifactsDir = path.join(await tempDir(t), 'artifacts')
  await mkdir(artifactsDir)
  const statusFile = path.join(artifactsDir, 'sprint-status.yaml')
  await writeFile(statusFile, sprintStatusWith(3, 'backlog'))
  // 20,000 story files, written before the stream starts so that writing them is not measured.
  for (let i = 0; i < 20_000; i += 500) {
    await Promise.all(Array.from({ length: 500 }, (_, j) =>
      writeFile(path.join(artifactsDir, `${i + j + 1}-1-story.md`), `# Story ${i + j + 1}\n\n## Story\nAs a user I want story ${i + j + 1}.\n`)))
  }
  // Texts built before the stream starts: building them is the test's work, on the same event loop.
  const oversized = sprintStatusWith(60_000, 'backlog')
  const large = sprintStatusWith(20_000, 'backlog')
  /** Bodies checked after the stream stopped, for the same reason. */
  const bodies: Array<{ what: string, holds: () => boolean }> = []
  const server = await startServer({ SPRINT_DB: path.join(artifactsDir, '..', 'sprint.db'), SPRINT_ARTIFACTS_DIR: artifactsDir })
  t.teardown(() => { server.child.kill('SIGKILL') })
  const { url, wsUrl } = server
  const stream = await startSteadyStream(wsUrl, async sequence => (await postEvents(url, [progressEvent(sequence)]))[0]!,
    { serverPid: server.child.pid! })

  await t.test('a sprint-status.yaml over FileLimits.sprintStatusBytes: 413 naming the limit', async t => {
    await writeFile(statusFile, oversized)
    const response = await getWithin(`${url}/api/sprint-status`, ANSWER_WITHIN_MS)
    t.equal(response.status, 413, `answered in ${response.ms} ms`)
    t.equal(codeOf(response), 'SPRINT_FILE_TOO_LARGE')
    t.match(response.body, /FileLimits\.sprintStatusBytes/)
  })

  await t.test('a few hundred bytes of aliases expanding to 10^9 strings: 413 naming the limit', async t => {
    const bomb = aliasBomb()
    t.ok(bomb.length < 1000, `${bomb.length} bytes`)
    await writeFile(statusFile, bomb)
    const response = await getWithin(`${url}/api/sprint-status`, ANSWER_WITHIN_MS)
    t.equal(response.status, 413, `answered in ${response.ms} ms`)
    t.equal(codeOf(response), 'SPRINT_FILE_TOO_LARGE')
    t.match(response.body, /FileLimits\.sprintStatusExpandedBytes/)
    const again = await getWithin(`${url}/api/sprint-status`, ANSWER_WITHIN_MS)
    t.equal(again.status, 413, `the same file again: the cached answer (${again.ms} ms)`)
  })

  await t.test('a large valid file (20,000 stories) is served, parsed off the event loop', async t => {
    await writeFile(statusFile, large)
    t.ok(large.length < FileLimits.sprintStatusBytes, 'under the size limit')
    const response = await getWithin(`${url}/api/sprint-status`, ANSWER_WITHIN_MS)
    t.equal(response.status, 200, `answered in ${response.ms} ms`)
    bodies.push({ what: 'every story served', holds: () => Object.keys((JSON.parse(response.body) as { development_status: object }).development_status).length === 20_000 })
    const again = await getWithin(`${url}/api/sprint-status`, ANSWER_WITHIN_MS)
    t.equal(again.status, 200, `again, unchanged (${again.ms} ms)`)
    t.equal(again.body, response.body)
  })

  await t.test('merge keys (<<) are merged, not kept as a literal key', async t => {
    await writeFile(statusFile, [
      'defaults: &defaults',
      '  1-1-a: backlog',
      '  1-2-b: backlog',
      'development_status:',
      '  <<: *defaults',
      '  1-2-b: done',
      ''
    ].join('\n'))
    const response = await getWithin(`${url}/api/sprint-status`, ANSWER_WITHIN_MS)
    t.equal(response.status, 200)
    t.same((JSON.parse(response.body) as { development_status: object }).development_status, { '1-1-a': 'backlog', '1-2-b': 'done' })
  })

  await t.test('20,000 story files: the first FileLimits.storyFiles are described, and the answer says so', async t => {
    const response = await getWithin(`${url}/story-descriptions.json`, ANSWER_WITHIN_MS)
    t.equal(response.status, 200, `answered in ${response.ms} ms`)
    bodies.push({ what: 'FileLimits.storyFiles descriptions', holds: () => Object.keys(JSON.parse(response.body || '{}') as object).length === FileLimits.storyFiles })
    t.match(response.headers.get('x-sprint-story-files-truncated'), /20000 story files.*FileLimits\.storyFiles/)
    const again = await getWithin(`${url}/story-descriptions.json`, ANSWER_WITHIN_MS)
    t.equal(again.body, response.body, `again, from the cache (${again.ms} ms)`)
  })

  await t.test('a data file over FileLimits.dataFileBytes: 413 naming the limit', async t => {
    const file = path.join(artifactsDir, 'orchestrator.md')
    await writeFile(file, '')
    await truncate(file, FileLimits.dataFileBytes + 1)
    const response = await getWithin(`${url}/orchestrator.md`, ANSWER_WITHIN_MS)
    t.equal(response.status, 413, `answered in ${response.ms} ms`)
    t.equal(codeOf(response), 'SPRINT_FILE_TOO_LARGE')
    t.match(response.body, /FileLimits\.dataFileBytes/)
  })

  const result = await stream.stop()
  for (const body of bodies) t.ok(body.holds(), body.what)
  t.same(stream.reader.violations, [], 'the client\'s stream has no gap, duplicate or reordering')
  t.same(result.missing, [], 'every acknowledged event reached the client')
  t.ok(result.maxStallMs <= MAX_DELIVERY_GAP_MS,
    `no delivery gap over ${MAX_DELIVERY_GAP_MS} ms (longest ${result.maxStallMs} ms at ${result.maxStallEndedAtMs} ms; wall-clock ${result.maxGapMs} ms)`)
})
