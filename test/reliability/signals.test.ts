import t from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import net from 'node:net'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { repoRoot, startServer } from '../e2e/server-process.ts'
import { tempDir, waitFor } from '../helper.ts'
import { progressEvent } from './stream-reader.ts'

/**
 * Issue #17, finding 8: SIGTERM while a 1,000-event POST is still being received must answer it and
 * exit 0 as soon as it is done (it waited out the 10 s grace and exited 1); any terminating signal to
 * `node_modules/.bin/tsx src/server.ts` must stop the server (SIGHUP left it running, orphaned).
 */

function isAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

t.test('SIGTERM with a 1,000-event POST half received: answered 201, then exit 0 without waiting out the grace', async t => {
  const dir = await tempDir(t)
  const server = await startServer({ SPRINT_DB: path.join(dir, 'sprint.db'), SPRINT_ARTIFACTS_DIR: dir, SPRINT_WATCH: '0' })
  t.teardown(() => { server.child.kill('SIGKILL') })
  const port = Number(new URL(server.url).port)
  const body = JSON.stringify(Array.from({ length: 1000 }, (_, i) => progressEvent(i, 100)))
  const socket = net.connect(port, '127.0.0.1')
  const chunks: Buffer[] = []
  socket.on('data', chunk => chunks.push(chunk))
  socket.on('error', () => { /* judged by what arrived */ })
  const socketClosed = once(socket, 'close')
  const incoming = (): number => server.logs.filter(line => line.msg === 'incoming request').length
  const before = incoming()
  socket.write(`POST /api/events HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body.slice(0, body.length / 2)}`)
  await waitFor(() => incoming() > before, 10_000)

  server.child.kill('SIGTERM')
  await waitFor(() => server.logs.some(line => line.msg === 'shutting down'), 10_000)
  const finishedAt = Date.now()
  socket.write(body.slice(body.length / 2))
  const code = await server.exited
  const exitedAfter = Date.now() - finishedAt
  await socketClosed
  const response = Buffer.concat(chunks).toString()
  t.match(response, /^HTTP\/1\.1 201 /, 'the request in flight is answered 201')
  t.match(response, /\r\nconnection: close\r\n/i, 'with Connection: close, as the server is stopping')
  t.equal(JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4)).events.length, 1000)
  t.equal(code, 0, 'exit 0')
  t.ok(exitedAfter < 5000, `exited ${exitedAfter} ms after the request was complete, well within the 10 s grace`)
})

type Tap = Parameters<Parameters<typeof t.test>[0]>[0]

/** Starts the standalone server the README's process-manager way, through the tsx CLI; the wrapper and the server's pid. */
async function startUnderTsxCli (t: Tap) {
  const dir = await tempDir(t)
  const wrapper = spawn(path.join(repoRoot, 'node_modules/.bin/tsx'), ['src/server.ts'], {
    cwd: repoRoot,
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', SPRINT_DB: path.join(dir, 'sprint.db'), SPRINT_ARTIFACTS_DIR: dir, SPRINT_WATCH: '0' },
    stdio: ['ignore', 'pipe', 'inherit']
  })
  const logs: Array<Record<string, unknown>> = []
  createInterface({ input: wrapper.stdout! }).on('line', line => {
    try { logs.push(JSON.parse(line)) } catch { /* not a log line */ }
  })
  const wrapperExited = once(wrapper, 'exit')
  t.teardown(() => { wrapper.kill('SIGKILL') })
  await waitFor(() => logs.some(line => typeof line.websocket === 'string'), 30_000)
  const ready = logs.find(line => typeof line.websocket === 'string')!
  const serverPid = ready.pid as number
  // The server is the wrapper's child, not ours: ended by its pid if the test fails.
  t.teardown(() => { if (isAlive(serverPid)) process.kill(serverPid, 'SIGKILL') })
  t.not(serverPid, wrapper.pid, 'the server runs in a child of the tsx CLI')
  return { wrapper, wrapperExited, serverPid, port: Number(new URL(ready.dashboard as string).port), logs }
}

for (const signal of ['SIGHUP', 'SIGQUIT', 'SIGKILL'] as const) {
  t.test(`${signal} to node_modules/.bin/tsx src/server.ts stops the server too: no orphan holding the port`, async t => {
    const { wrapper, wrapperExited, serverPid, port, logs } = await startUnderTsxCli(t)
    wrapper.kill(signal)
    await wrapperExited
    await waitFor(() => !isAlive(serverPid), 15_000).catch(() => {})
    t.notOk(isAlive(serverPid), `the server (pid ${serverPid}) has exited`)
    if (signal !== 'SIGKILL') t.ok(logs.some(line => line.msg === 'shutting down'), 'after shutting down cleanly')
    const refused = await new Promise<boolean>(resolve => {
      const probe = net.connect(port, '127.0.0.1', () => { probe.destroy(); resolve(false) })
      probe.on('error', () => resolve(true))
    })
    t.ok(refused, 'the port is free')
  })
}
