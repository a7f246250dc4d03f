import t from 'tap'
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { listen, tempDir, waitFor, type TestContext } from '../helper.ts'

/**
 * Hostile input to the orchestrator routes: a batch size is the one value a caller puts on the
 * orchestrator's command line, so nothing but an integer 1..1000 or "all" may ever reach it, and
 * only a caller the write guard admits may start or stop anything.
 */

const fakeOrchestrator = fileURLToPath(new URL('../fixtures/fake-orchestrator.mjs', import.meta.url))

async function setup (t: TestContext) {
  const dir = await tempDir(t)
  const record = path.join(dir, 'record.json')
  const server = await listen(t, {
    allowedOrigins: ['https://ops.example.com'],
    orchestrator: {
      command: [process.execPath, fakeOrchestrator, 'obedient', '{batch_size}', '--size={batch_size}'],
      env: { FAKE_ORCHESTRATOR_RECORD: record }
    }
  })
  const post = async (route: string, body: string | undefined, headers: Record<string, string> = {}) => {
    const response = await fetch(`${server.url}/api/orchestrator/${route}`, {
      method: 'POST',
      headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
      body
    })
    const text = await response.text()
    return { status: response.status, body: text === '' ? undefined : JSON.parse(text), headers: response.headers }
  }
  return { ...server, record, post }
}

t.test('batch sizes that try shell injection or absurd sizes never reach a spawned argv', async t => {
  const { app, record, post } = await setup(t)
  const hostile = [
    '"2; rm -rf /"', '"$(touch /tmp/pwned)"', '"`id`"', '"all && reboot"', '"all; rm -rf /"', '"2 | nc evil 1"',
    '"../../etc/passwd"', '"{batch_size}"', '"all\\n2"', '" 2"', '"2 "', '"1e3"', '"0x10"', '"Infinity"', '"NaN"',
    '1e308', '9007199254740993', '1000.5', '1001', '-0.5', '0', '-1', '2.0000001', 'true', 'null', '[2]', '["all"]',
    '{"$gt": 0}', '{"valueOf": 2}', '"' + 'a'.repeat(5000) + '"'
  ]
  for (const value of hostile) {
    const reply = await post('start', `{"batch_size": ${value}}`)
    t.ok(reply.status === 400 || reply.status === 413, `${value.slice(0, 40)}: ${reply.status}`)
  }
  for (const body of ['{"__proto__": {"batch_size": 2}}', '{"constructor": {"prototype": {"batch_size": 2}}}', '{"batch_size": 2, "argv": ["sh", "-c", "id"]}', 'not json']) {
    t.equal((await post('start', body)).status, 400, body)
  }
  t.notOk(existsSync(record), 'no orchestrator was ever spawned')
  t.equal(app.orchestrator.pid, null)

  // What a valid size does reach: exactly its decimal form, in place of the placeholder.
  t.equal((await post('start', '{"batch_size": 1000}')).status, 202)
  await waitFor(() => existsSync(record), 10_000)
  t.same(JSON.parse(await readFile(record, 'utf8')).argv, ['obedient', '1000', '--size=1000'])
})

t.test('start and stop from a cross-site page or a peer that is not loopback are refused', async t => {
  const { app, record, post, url } = await setup(t)
  for (const origin of ['https://evil.example', 'null', 'http://localhost.evil.example']) {
    for (const route of ['start', 'stop']) {
      const reply = await post(route, route === 'start' ? '{"batch_size": 2}' : undefined, { origin })
      t.equal(reply.status, 403, `${route} from ${origin}`)
      t.equal(reply.body.code, 'SPRINT_ORIGIN_NOT_ALLOWED')
      t.equal(reply.headers.get('access-control-allow-origin'), null)
    }
  }
  // The form a cross-site page can send without a preflight: refused by the guard before anything is parsed.
  const simple = await post('start', undefined, { origin: 'https://evil.example', 'content-type': 'text/plain' })
  t.equal(simple.status, 403)
  for (const route of ['start', 'stop']) {
    const remote = await app.inject({ method: 'POST', url: `/api/orchestrator/${route}`, payload: { batch_size: 2 }, remoteAddress: '192.0.2.10' })
    t.equal(remote.statusCode, 403, `${route} from a remote peer`)
    t.equal(remote.json().code, 'SPRINT_INGEST_NOT_LOOPBACK')
  }
  const preflight = await fetch(`${url}/api/orchestrator/start`, {
    method: 'OPTIONS',
    headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' }
  })
  t.equal(preflight.headers.get('access-control-allow-origin'), null, 'a cross-site preflight is not allowed')
  const output = await fetch(`${url}/api/orchestrator/output`, { headers: { origin: 'https://evil.example' } })
  t.equal(output.headers.get('access-control-allow-origin'), null, 'no other site may read the output')
  t.notOk(existsSync(record), 'nothing was spawned')

  t.equal((await post('start', '{"batch_size": 2}', { origin: 'https://ops.example.com' })).status, 202, 'an allowed origin may start')
  t.equal((await post('stop', undefined, { origin: url.replace(/\/$/, '') })).status, 202, 'and the dashboard itself may stop')
})
