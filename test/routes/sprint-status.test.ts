import t from 'tap'
import { mkdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { listen } from '../helper.ts'

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
