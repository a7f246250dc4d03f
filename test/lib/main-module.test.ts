import t from 'tap'
import { symlink, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { isMainModule } from '../../src/lib/main-module.ts'
import { tempDir } from '../helper.ts'

t.test('the started script is the main module, also through a symlink (an installed bin)', async t => {
  const dir = await tempDir(t)
  const file = path.join(dir, 'cli.js')
  await writeFile(file, '')
  const link = path.join(dir, 'sprint-dashboard')
  await symlink(file, link)
  const argv = process.argv
  t.teardown(() => { process.argv = argv })
  const url = pathToFileURL(file).href

  process.argv = [argv[0]!, file]
  t.ok(isMainModule(url))
  process.argv = [argv[0]!, link]
  t.ok(isMainModule(url), 'through the link')
  t.notOk(isMainModule(pathToFileURL(path.join(dir, 'other.js')).href), 'another module is not')
  process.argv = [argv[0]!, path.join(dir, 'missing.js')]
  t.notOk(isMainModule(url), 'a script path that does not exist')
  process.argv = [argv[0]!]
  t.notOk(isMainModule(url), 'no script (node -e, the REPL)')
})
