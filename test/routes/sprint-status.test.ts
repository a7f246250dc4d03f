import t from 'tap'
import { mkdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { connect, listen, tempDir } from '../helper.ts'

t.test('GET /api/sprint-status serves the whole parsed file', async (t) => {
  const { url, artifactsDir } = await listen(t)
  await mkdir(artifactsDir, { recursive: true })
  await writeFile(path.join(artifactsDir, 'sprint-status.yaml'), [
    '# comments are fine',
    'generated: 2025-11-26',
    'project: demo',
    'story_location: stories',
    'development_status:',
    '  epic-1: in-progress',
    '  1-1-login: done  # trailing comment',
    '  epic-1-retrospective: optional',
    ''
  ].join('\n'))
  const response = await fetch(`${url}/api/sprint-status`)
  t.equal(response.status, 200)
  t.match(response.headers.get('content-type'), /^application\/json/)
  t.equal(response.headers.get('access-control-allow-origin'), '*', 'read-only, so the permissive CORS applies')
  t.same(await response.json(), {
    generated: '2025-11-26',
    project: 'demo',
    story_location: 'stories',
    development_status: { 'epic-1': 'in-progress', '1-1-login': 'done', 'epic-1-retrospective': 'optional' }
  }, 'every key, epics included, dates as strings')
})

t.test('404 when the file is absent, 500 when it does not parse', async (t) => {
  const { url, artifactsDir } = await listen(t)
  const absent = await fetch(`${url}/api/sprint-status`)
  t.equal(absent.status, 404)
  t.match(await absent.json(), { statusCode: 404, code: 'SPRINT_STATUS_NOT_FOUND' })

  await mkdir(artifactsDir, { recursive: true })
  await writeFile(path.join(artifactsDir, 'sprint-status.yaml'), 'development_status: [\n')
  const broken = await fetch(`${url}/api/sprint-status`)
  t.equal(broken.status, 500)
  const body = await broken.json()
  t.match(body, { statusCode: 500, code: 'SPRINT_STATUS_INVALID' })
  t.notMatch(body.message, /^Internal Server Error$/, 'the operator is told why the file does not parse')
})

t.test('under a prefix', async (t) => {
  const { url, artifactsDir } = await listen(t, { prefix: '/sprint' })
  await mkdir(artifactsDir, { recursive: true })
  await writeFile(path.join(artifactsDir, 'sprint-status.yaml'), 'development_status:\n  1-1: done\n')
  const response = await fetch(`${url}/api/sprint-status`)
  t.same(await response.json(), { development_status: { '1-1': 'done' } })
})

t.test('while the file does not parse, the last good version is served with the parse error in a header', async (t) => {
  const { url, artifactsDir } = await listen(t)
  await mkdir(artifactsDir, { recursive: true })
  const file = path.join(artifactsDir, 'sprint-status.yaml')
  await writeFile(file, 'project: demo\ndevelopment_status:\n  1-1-login: done\n')
  const good = await fetch(`${url}/api/sprint-status`)
  t.equal(good.status, 200)
  t.equal(good.headers.get('x-sprint-status-error'), null)

  // Half-way through an edit: an unclosed flow sequence.
  await writeFile(file, 'project: demo\ndevelopment_status:\n  1-1-login: done\n  1-2-logout: [in-\n')
  const broken = await fetch(`${url}/api/sprint-status`)
  t.equal(broken.status, 200)
  t.same(await broken.json(), { project: 'demo', development_status: { '1-1-login': 'done' } }, 'the last good state')
  t.match(broken.headers.get('x-sprint-status-error'), /^sprint-status\.yaml: .*\(line \d+, column \d+\)$/, 'and why the current file is not served')

  await writeFile(file, '')
  const empty = await fetch(`${url}/api/sprint-status`)
  t.equal(empty.status, 200)
  t.same(await empty.json(), { project: 'demo', development_status: { '1-1-login': 'done' } }, 'an emptied file is one being rewritten')
  t.equal(empty.headers.get('x-sprint-status-error'), 'sprint-status.yaml is empty')

  await writeFile(file, 'project: demo\ndevelopment_status:\n  1-1-login: done\n  1-2-logout: in-progress\n')
  const fixed = await fetch(`${url}/api/sprint-status`)
  t.equal(fixed.status, 200)
  t.equal(fixed.headers.get('x-sprint-status-error'), null)
  t.same(await fixed.json(), { project: 'demo', development_status: { '1-1-login': 'done', '1-2-logout': 'in-progress' } })

  await writeFile(file, '- a list\n- is not a sprint\n')
  const notMapping = await fetch(`${url}/api/sprint-status`)
  t.equal(notMapping.status, 200)
  t.equal((await notMapping.json()).development_status['1-2-logout'], 'in-progress', 'the newest good version, not the first')
  t.match(notMapping.headers.get('x-sprint-status-error'), /must be a mapping/)
})

t.test('the version present at start-up counts as good, though no request read it', async (t) => {
  const dir = await tempDir(t)
  const artifactsDir = path.join(dir, 'artifacts')
  await mkdir(artifactsDir)
  await writeFile(path.join(artifactsDir, 'sprint-status.yaml'), 'development_status:\n  1-1: done\n')
  const { url } = await listen(t, { artifactsDir })
  await writeFile(path.join(artifactsDir, 'sprint-status.yaml'), 'development_status: [\n')
  const response = await fetch(`${url}/api/sprint-status`)
  t.equal(response.status, 200)
  t.same(await response.json(), { development_status: { '1-1': 'done' } })
  t.ok(response.headers.get('x-sprint-status-error'))
})

t.test('a version only the watcher saw is served; the watcher still reports the broken file once', async (t) => {
  const { app, url, wsUrl, artifactsDir } = await listen(t, { watchSprintStatus: true })
  await mkdir(artifactsDir, { recursive: true })
  const file = path.join(artifactsDir, 'sprint-status.yaml')
  const { client } = await connect(t, wsUrl)
  // Absent at start-up; the watcher reads the first good version (its stories arrive as story:status).
  await writeFile(file, 'development_status:\n  2a-1: in-progress\n')
  t.match(await client.next(), { type: 'story:status', payload: { story_key: '2a-1', new_status: 'in-progress' } })

  await writeFile(file, 'development_status:\n  2a-1: done\n  bad: [\n')
  const error = await client.next()
  t.match(error, { type: 'error', payload: { type: 'sprint_status_parse' } })
  for (let i = 0; i < 2; i++) {
    const response = await fetch(`${url}/api/sprint-status`)
    t.equal(response.status, 200)
    t.same(await response.json(), { development_status: { '2a-1': 'in-progress' } }, 'what the watcher saw last')
    t.equal(response.headers.get('x-sprint-status-error'), error.payload.message, 'the same message as the error event')
  }
  const marker = app.events.emit('context:fresh', { message: 'marker' })
  t.same(await client.next(), marker, 'requests emit no error event of their own: the next event is the marker')
})

t.test('with no good version ever: 500 SPRINT_STATUS_INVALID, as before', async (t) => {
  const dir = await tempDir(t)
  const artifactsDir = path.join(dir, 'artifacts')
  await mkdir(artifactsDir)
  await writeFile(path.join(artifactsDir, 'sprint-status.yaml'), 'development_status: [\n')
  const { url } = await listen(t, { artifactsDir, watchSprintStatus: true })
  const response = await fetch(`${url}/api/sprint-status`)
  t.equal(response.status, 500)
  t.match(await response.json(), { code: 'SPRINT_STATUS_INVALID', message: /sprint-status\.yaml: / })
  t.equal(response.headers.get('x-sprint-status-error'), null)
})
