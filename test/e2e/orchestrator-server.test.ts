import t from 'tap'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { startServer } from './server-process.ts'
import { tempDir } from '../helper.ts'
import { isRunning, waitUntilGone } from '../fixtures/processes.ts'

/** The standalone server with SPRINT_ORCHESTRATOR_*: configured from the environment, and no orphan on SIGTERM. */

const fakeOrchestrator = fileURLToPath(new URL('../fixtures/fake-orchestrator.mjs', import.meta.url))

t.test('SIGTERM to the server stops the orchestrator and every process of its group', async t => {
  const dir = await tempDir(t)
  const server = await startServer({
    SPRINT_DB: path.join(dir, 'sprint.db'),
    SPRINT_ARTIFACTS_DIR: dir,
    SPRINT_ORCHESTRATOR_CMD: JSON.stringify([process.execPath, fakeOrchestrator, 'stubborn', '{batch_size}']),
    SPRINT_ORCHESTRATOR_CWD: dir,
    SPRINT_ORCHESTRATOR_KILL_AFTER_MS: '1500'
  })
  t.teardown(() => { server.child.kill('SIGKILL') })
  const started = await fetch(`${server.url}/api/orchestrator/start`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"batch_size":"all"}'
  })
  t.equal(started.status, 202)
  let pids: number[] = []
  const deadline = Date.now() + 10_000
  while (pids.length === 0 && Date.now() < deadline) {
    const { lines } = await (await fetch(`${server.url}/api/orchestrator/output`)).json() as { lines: Array<{ text: string }> }
    const line = lines.find(l => l.text.startsWith('pids '))
    if (line !== undefined) pids = line.text.split(' ').slice(1).map(Number)
    else await new Promise(resolve => setTimeout(resolve, 50))
  }
  t.equal(pids.length, 2, 'the orchestrator and its own child run')
  t.ok(pids.every(isRunning))
  const stopAt = Date.now()
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 0, 'the server exits 0')
  t.ok(Date.now() - stopAt < 10_000, `within 10 s (${Date.now() - stopAt} ms)`)
  await waitUntilGone(pids, 500)
  t.ok(server.logs.some(l => l.msg === 'the orchestrator did not stop in time; killing its process group'), 'the kill is logged')
  t.ok(server.logs.some(l => l.msg === 'orchestrator started' && l.remoteAddress !== undefined), 'the start is logged with who asked')
})

t.test('a SPRINT_ORCHESTRATOR_CMD that is not a JSON array of strings is refused', async t => {
  const dir = await tempDir(t)
  await t.rejects(startServer({ SPRINT_DB: path.join(dir, 'sprint.db'), SPRINT_ORCHESTRATOR_CMD: 'python3 orchestrator.py {batch_size}' }),
    /SPRINT_ORCHESTRATOR_CMD must be a JSON array/)
})
