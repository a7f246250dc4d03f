import t from 'tap'
import { mkdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { build } from '../helper.ts'

t.test('GET /story-descriptions.json reads the artifacts directory on each request', async t => {
  const { app, artifactsDir } = await build(t)
  const empty = await app.inject({ url: '/story-descriptions.json' })
  t.equal(empty.statusCode, 200)
  t.same(empty.json(), {}, 'missing directory: {}')
  await mkdir(artifactsDir, { recursive: true })
  await writeFile(path.join(artifactsDir, '1-1-setup.md'), '# Setup\n\n## Story\nAs a dev I set up.\n')
  const response = await app.inject({ url: '/story-descriptions.json' })
  t.same(response.json(), { '1-1-setup': 'As a dev I set up.' })
  t.match(response.headers['content-type'], /application\/json/)
})
