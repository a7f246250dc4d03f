import t from 'tap'
import Fastify from 'fastify'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import path from 'node:path'
import sprintDashboard from '../../src/app.ts'
import { repoRoot, startServer } from '../e2e/server-process.ts'
import { build, tempDir } from '../helper.ts'

/**
 * Issue #17, finding 6: two services on one database file ran side by side, each missing the other's
 * events. The second must refuse to start, naming the holder; the lock dies with its process.
 */

/** Runs src/server.ts until it exits; its output and exit code. */
async function runToExit (env: Record<string, string>): Promise<{ code: number | null, output: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: repoRoot,
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', SPRINT_WATCH: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout.on('data', chunk => { output += chunk })
  child.stderr.on('data', chunk => { output += chunk })
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
  const [code] = await once(child, 'exit') as [number | null]
  clearTimeout(timer)
  return { code, output }
}

t.test('a second service on the same database refuses to start, naming the first; once the first is killed, it starts', async t => {
  const dir = await tempDir(t)
  const env = { SPRINT_DB: path.join(dir, 'sprint.db'), SPRINT_ARTIFACTS_DIR: dir }
  const first = await startServer({ ...env, SPRINT_WATCH: '0' })
  t.teardown(() => { first.child.kill('SIGKILL') })

  const second = await runToExit(env)
  t.equal(second.code, 1, 'the second service exits 1')
  t.match(second.output, /SPRINT_DATABASE_LOCKED/)
  t.match(second.output, new RegExp(`in use by process ${first.child.pid}\\b`), 'the message names the holder\'s pid')
  t.match(second.output, /sprint\.db\.lock/, 'and the lock file')
  t.notMatch(second.output, /sprint-dashboard ready/, 'it never listened')

  // SIGKILL: no clean-up runs, the kernel drops the lock with the process.
  first.child.kill('SIGKILL')
  await first.exited
  const third = await startServer({ ...env, SPRINT_WATCH: '0' })
  t.teardown(() => { third.child.kill('SIGKILL') })
  t.pass('a service starts once the holder is gone')
  third.child.kill('SIGTERM')
  t.equal(await third.exited, 0)
})

t.test('two apps on one database in one process: the second registration fails; after close the file is free again', async t => {
  const { app, dbPath } = await build(t)
  const second = Fastify({ logger: false })
  t.teardown(() => second.close())
  await t.rejects(async () => { await second.register(sprintDashboard, { dbPath, artifactsDir: path.dirname(dbPath) }).ready() },
    { code: 'SPRINT_DATABASE_LOCKED', message: new RegExp(`this process \\(${process.pid}\\)`) })
  await app.close()
  const third = Fastify({ logger: false })
  t.teardown(() => third.close())
  await third.register(sprintDashboard, { dbPath, artifactsDir: path.dirname(dbPath) })
  await third.ready()
  t.pass('registered once the first app closed')
})
