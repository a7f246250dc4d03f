import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import path from 'node:path'
import { repoRoot, startServer } from './server-process.ts'
import { closed, connect, tempDir } from '../helper.ts'

t.test('the standalone server serves /ws, sends init, and stops cleanly on SIGTERM', async t => {
  const dir = await tempDir(t)
  const server = await startServer({ SPRINT_DB: path.join(dir, 'sprint.db'), SPRINT_ARTIFACTS_DIR: dir })
  t.teardown(() => { server.child.kill('SIGKILL') })
  t.match(server.wsUrl, /^ws:\/\/127\.0\.0\.1:\d+\/ws$/, 'logs the bound address, not port 0')
  t.ok(server.logs.some(l => typeof l.msg === 'string' && l.msg.includes(server.wsUrl)), 'one line names both URLs')

  const { client, init } = await connect(t, server.wsUrl)
  t.same(init, { type: 'init', payload: { batch: null, events: [], resumed: false, reset: false } })
  const health = await (await fetch(`${server.url}/api/health`)).json()
  t.match(health, { status: 'ok', clients: 1, lastEventId: 0 })

  const closing = closed(client.socket)
  server.child.kill('SIGTERM')
  t.equal((await closing).code, 1001, 'clients are told the server is going away')
  t.equal(await server.exited, 0, 'exits 0')
})

t.test('SIGINT stops it too', async t => {
  const dir = await tempDir(t)
  const server = await startServer({ SPRINT_DB: path.join(dir, 'sprint.db'), SPRINT_ARTIFACTS_DIR: dir })
  t.teardown(() => { server.child.kill('SIGKILL') })
  server.child.kill('SIGINT')
  t.equal(await server.exited, 0)
})

t.test('a bad environment value is refused with the variable named', async t => {
  const dir = await tempDir(t)
  await t.rejects(startServer({ SPRINT_DB: path.join(dir, 'sprint.db'), SPRINT_HEARTBEAT_INTERVAL_MS: 'soon' }),
    /SPRINT_HEARTBEAT_INTERVAL_MS/)
})

t.test('binding beyond loopback without a token warns', async t => {
  const dir = await tempDir(t)
  const server = await startServer({ HOST: '0.0.0.0', SPRINT_DB: path.join(dir, 'sprint.db'), SPRINT_ARTIFACTS_DIR: dir })
  t.teardown(() => { server.child.kill('SIGKILL') })
  const warned = () => server.logs.some(l => l.level === 40 && /SPRINT_INGEST_TOKEN/.test(String(l.msg)))
  const deadline = Date.now() + 5000
  while (!warned() && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 20))
  t.ok(warned(), 'a warning names SPRINT_INGEST_TOKEN')
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 0)
})

t.test('on a terminal the log lines are for people, not JSON', async t => {
  // util-linux `script` gives the server a pseudo-terminal as stdout; stdout is a pipe in every other test.
  if (spawnSync('script', ['--version']).error !== undefined) {
    t.comment('skipped: needs util-linux script for a pseudo-terminal')
    return
  }
  const dir = await tempDir(t)
  const command = `${JSON.stringify(process.execPath)} --import tsx src/server.ts`
  const child = spawn('script', ['-qefc', command, '/dev/null'], {
    cwd: repoRoot,
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', SPRINT_DB: path.join(dir, 'sprint.db'), SPRINT_ARTIFACTS_DIR: dir },
    stdio: ['pipe', 'pipe', 'pipe']
  })
  const exited = once(child, 'exit')
  t.teardown(() => { child.kill('SIGKILL') })
  let output = ''
  const ready = await new Promise<string>((resolve, reject) => {
    const guard = setTimeout(() => reject(new Error(`no ready line within 20 s: ${output}`)), 20_000)
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString()
      const line = output.split(/\r?\n/).find(line => line.includes('sprint-dashboard ready'))
      if (line !== undefined) {
        clearTimeout(guard)
        resolve(line)
      }
    })
  })
  t.notMatch(ready, /^\s*\{/, 'not a JSON object')
  t.match(ready, /INFO.*sprint-dashboard ready: dashboard http:\/\/127\.0\.0\.1:\d+\/ websocket ws:\/\//, 'a level name and the message')
  // script hands the terminal's end to the server as SIGHUP/SIGTERM; it must go down with it.
  child.kill('SIGTERM')
  await exited
})
